"""One validated source of settings for the PAC pipeline.

`params/*.yaml` -> :func:`load_config` -> :class:`PACConfig`. The same object feeds the `pac`
CLI, `flows/pac_flow.py` and the `dvc.yaml` stages. Every value is checked *before* any compute:
an unknown key, a wrong type or an out-of-range value raises :class:`ConfigError` naming the key
and what is allowed.

A params file may start with ``extends: other.yaml`` (path relative to the file) and then only
lists what differs; command-line overrides use dotted keys: ``loss.alpha=1.0``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pac.tasks import (
    BUILTIN_TASKS,
    OGBENCH_ENVS,
    SUBOPTIMAL,
    TASKS,
    WEAK_TASKS,
    TaskSpec,
    ogbench_spec,
    success_text,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PARAMS = REPO_ROOT / "params" / "default.yaml"


class ConfigError(ValueError):
    """A params file or override is invalid; the message names the key and the allowed values."""


# --- Table 4 (scales) and Table 5 (fixed hyper-parameters) --------------------------------------

#: Table 4: latent width D_Z, self-attention blocks M, widening factor W (plus the paper's count),
#: N_Z = 32 latents at every paper scale. "tiny" is the laptop scale, not the paper's: small
#: enough to train the default in minutes on 2 CPU cores (BENCHMARKS.md, "Choosing the laptop
#: default: model, budget, reacher's input and expert").
def _scale(d_z: int, num_blocks: int, widening: int, paper_params: int,
           num_latents: int = 32) -> dict[str, int]:
    return {"d_z": d_z, "num_blocks": num_blocks, "widening": widening,
            "num_latents": num_latents, "paper_params": paper_params}


SCALES: dict[str, dict[str, int]] = {
    "tiny": _scale(64, 2, 1, 0, num_latents=16),
    "XXS": _scale(768, 4, 1, 32_000_000),
    "XS": _scale(1024, 8, 1, 73_000_000),
    "S": _scale(1280, 10, 2, 164_000_000),
    "M": _scale(1536, 12, 4, 391_000_000),
    "L": _scale(2048, 18, 4, 988_000_000),
    # The model card's 15.7B policy+value network (seed 000), built from the same recipe.
    "card15B": _scale(6144, 32, 4, 15_700_000_000),
}

#: what phi^P gives the Perceiver (model.proprio_tokens, pac.model.encoders.ProprioEncoder)
ProprioTokens = Literal["scalar", "joint", "both"]
Variant = Literal["pac", "bc", "bc_q", "filtered_bc", "alpha_pac", "pac_v"]
Precision = Literal["fp32", "bf16"]
#: train.precision: auto = bf16 where this machine runs it faster (pac.train.ds_config)
TrainPrecision = Literal["auto", "fp32", "bf16"]
Decode = Literal["argmax", "mean", "sample", "q_rerank"]  # App. B.3 categorical policy -> action
PROPRIO_TOKENS: tuple[str, ...] = typing.get_args(ProprioTokens)
VARIANTS: tuple[str, ...] = typing.get_args(Variant)
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
TRAIN_PRECISIONS: tuple[str, ...] = typing.get_args(TrainPrecision)
DECODES: tuple[str, ...] = typing.get_args(Decode)
_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # a declared embodiment or task
_EXPONENT = re.compile(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+")  # 3e-4, 1.5E+2


@dataclass
class ModelConfig:
    """Architecture (App. B, Tables 4-5). Input-format sizes are the padded maxima over tasks."""

    scale: str = "tiny"
    d_z: int = 64  # D_Z, latent width (Table 4)
    num_blocks: int = 2  # M, latent self-attention blocks (Table 4)
    widening: int = 1  # W, MLP hidden = W * width (Table 4)
    num_heads: int = 4
    num_latents: int = 16  # N_Z (Table 4: 32; the tiny scale's 16)
    d_i: int = 64  # D_I, token embedding size (Table 5: 256)
    d_o: int = 0  # N_O / D_O, decoder query width; 0 means "same as d_z"
    decoder_widening: int = 0  # MLP widening of the policy/V decoder blocks (0 = no MLP)
    #: MLP widening of the Q decoder block (Perceiver IO's decoder block has one): the MLP is
    #: where the state summary and the action query interact; without it Q stays action-blind
    q_decoder_widening: int = 1
    num_gains: int = 8  # N_G, multi-scale normaliser gains 1e-4 ... 1e3 (eq. 15)
    #: phi^P's tokens: scalar (App. B.2: N_G per scalar) | joint (one, an MLP over all) | both
    proprio_tokens: ProprioTokens = "scalar"
    num_action_bins: int = 101  # N_B
    num_value_bins: int = 101  # N_Q
    # Input format (Table 5: 223, 5, 3, 50, 38, 32000, 80x80).
    num_proprio: int = 8  # N^P
    num_images: int = 0  # N^V
    num_goal_images: int = 0  # N_tau^V
    num_text_tokens: int = 50  # N_tau^L
    num_actions: int = 2  # N^A
    vocab_size: int = 64  # N_T
    image_size: int = 80
    resnet_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    value_head: bool = False  # PAC+V: a V decoder (learned query) instead of using Q (eq. 14)
    #: false = pixels only: proprioception is masked (not zeroed and visible) in training and
    #: serving; the policy acts from its cameras (and the instruction)
    proprio_input: bool = True

    @property
    def decoder_width(self) -> int:
        return self.d_o or self.d_z


@dataclass
class LossConfig:
    """The offline actor-critic objective (eq. 11, eq. 14) and its variants (App. C.5)."""

    variant: Variant = "pac"
    alpha: float = 0.75  # BC weight; 1 - alpha weighs policy improvement
    beta: float = 38.0  # Q (TD) loss scale
    eta: float = 0.02  # temperature of exp(Q / eta)
    gamma: float = 0.95
    num_action_samples: int = 10  # N samples a' ~ pi_theta'
    target_update_period: int = 100  # f_theta'
    value_min: float = 0.0  # support of the categorical Q / V distribution
    value_max: float = 20.0  # >= max reward / (1 - gamma)
    #: alpha over training (§4.3: BC first, then RL): [[from_update, alpha], ...]; empty = constant
    alpha_schedule: list[list[float]] = field(default_factory=list)
    #: false: the Q head reads a detached z_M, so only the policy terms train the shared encoder
    #: (the paper shares it; a choice it leaves open for small models)
    critic_encoder_grad: bool = True
    #: > 0: eq. 11's eta of each batch = eta_relative x its mean std of Q over the N samples (a
    #: temperature that follows the scale of Q differences); 0: loss.eta as given
    eta_relative: float = 0.0


@dataclass
class GroupConfig:
    """A dataset group of the mixture (Table 6 row): tasks, behaviour quality, weight lambda."""

    name: str = "expert"
    tasks: list[str] = field(default_factory=lambda: ["point_mass.easy"])
    quality: float = 1.0  # behaviour quality in [0, 1]: 1 = scripted expert, 0 = `suboptimal`
    #: what the behaviour does when it is not the expert: "random" (sticky uniform actions: the
    #: data's mode stays the expert's) | "weak" (the task's weak controller, pac.envs.weak_action:
    #: below quality 0.5 the data's mode is sub-optimal)
    suboptimal: str = "random"
    #: std of the per-step Gaussian added to the driving controller's action (expert or weak),
    #: executed and recorded, like the exploration noise of an RL agent's replay (App. C.3's data
    #: come from MPO agents). None: 0.1 below quality 1, none at quality 1 (pac.envs.EXPERT_NOISE)
    action_noise: float | None = None
    episodes_per_task: int = 10
    weight: float = 1.0  # lambda (App. C.4)
    alpha: float | None = None  # alpha-PAC: per-group alpha / beta (App. C.5); None = loss.alpha
    beta: float | None = None
    source: Literal["sim", "real", "rollout"] = "sim"


@dataclass
class DataConfig:
    """Episode generation, tokenizer and trajectory sampling (App. C.3-C.4)."""

    root: str = "data"
    groups: list[GroupConfig] = field(default_factory=lambda: [GroupConfig()])
    episode_steps: int = 100  # control steps per generated episode
    render: bool = False  # store 80x80 camera images (needs offscreen MuJoCo: MUJOCO_GL=egl)
    cameras: int = 1
    seed: int = 0
    generate_workers: int = 2
    # T: §4.1's trajectories of length five; the card preset 32 (64 windows = 2048 steps). The
    # laptop default's 2: 80 x 2 has the compute of 32 x 5 with 80 independent states per update
    # (BENCHMARKS.md, "Independent states per update: windows of 2 steps").
    trajectory_length: int = 2
    sampler_workers: int = 0
    #: modality dropout (App. D.2.4): each trajectory of a training batch independently loses
    #: its proprioception, its images or its instruction (masked) with these probabilities; one
    #: that would lose every input it has keeps them all
    drop_proprio: float = 0.0
    drop_images: float = 0.0
    drop_text: float = 0.0
    tokenizer_vocab: int = 64  # SentencePiece vocabulary (N_T); capped by the corpus
    tokenizer_type: Literal["bpe", "unigram"] = "bpe"
    success_only: bool = False  # FilteredBC: sample successful episodes only


@dataclass
class TrainConfig:
    """Optimiser and schedule (Table 12 / model card), DeepSpeed and checkpoints."""

    steps: int = 3000
    global_batch: int = 80  # trajectories per update (paper: 512; card preset: 64 of length 32)
    micro_batch: int = 0  # per-rank micro batch; 0 = global_batch / world_size
    lr_init: float = 1e-5
    lr_peak: float = 1e-3
    lr_end: float = 1e-4
    warmup_steps: int = 0  # linear warm-up; 0 uses warmup_fraction
    warmup_fraction: float = 0.05  # model card: 5% of steps
    decay_steps: int = 0  # cosine to lr_end over this many steps after warm-up; 0 = until `steps`
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    weight_decay: float = 1e-3
    grad_clip: float = 1.0
    zero_stage: int = 0
    #: auto (bf16 where it is faster: GPUs with bf16, CPUs with native bf16 matmuls measured
    #: faster than fp32; fp32 elsewhere) | fp32 | bf16; fp32 master weights and Adam states
    precision: TrainPrecision = "auto"
    offload_optimizer: bool = False
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: gloo on CPU, nccl on GPU
    checkpoint_every: int = 500
    log_every: int = 25
    #: evaluate the online weights every this many updates (and at the end) on the training
    #: tasks and eval.held_out_tasks: the return-vs-updates curve; 0 = off; a run shorter than
    #: this is not evaluated (pac.train.periodic_eval, docs/scaling.md)
    eval_every: int = 1000
    eval_episodes: int = 3  # episodes per task of each evaluation during training
    #: intra-op threads on CPU: 0 = auto, the cores other processes leave free when the run
    #: starts (pac.train.threads, BENCHMARKS.md "Training on a busy machine"); N = N
    threads: int = 0
    seed: int = 0
    out_dir: str = "runs/pretrain"
    launcher: Literal["local", "deepspeed", "torchrun", "metaflow"] = "local"


@dataclass
class EvalConfig:
    """Simulation evaluation (Tables 1, 7, 13): episodes per task, decoding, statistics."""

    episodes_per_task: int = 10
    workers: int = 2
    decode: Decode = "argmax"
    num_candidates: int = 10  # K actions for q_rerank
    #: inference arithmetic: fp32, or bf16 autocast (the paper's precision; AMX-BF16 CPUs and
    #: GPUs run it faster, actions agree with fp32 up to near-ties; BENCHMARKS.md, "Simulation
    #: evaluation")
    precision: Precision = "fp32"
    #: control steps per evaluated episode; 0 = from the data: each task runs over the episode
    #: length of the data the policy was trained on (the checkpoint's horizons.json), else
    #: data.episode_steps (docs/rollout_format.md, "Control rate and horizon")
    max_steps: int = 0
    #: review GIFs a task (160x160): the first success, then the first failure, then further
    #: episodes in order (pac.evaluation.videos.choose_episodes); 0 = no videos, no rendering
    videos_per_task: int = 2
    held_out_tasks: list[str] = field(default_factory=list)
    seed: int = 1000
    out_dir: str = "runs/eval"
    #: expert reference return per task (% of expert); tasks not listed are measured with the
    #: scripted expert when one exists, else their % of expert is N/A
    expert_returns: dict[str, float] = field(default_factory=dict)
    #: offline evaluation of tasks without a simulator (pac.evaluation.offline): every k-th
    #: episode of such a task in each store group (store order, the k-th, 2k-th, ...) is held
    #: out of training by the sampler and evaluated instead; 0 = nothing held out
    offline_holdout: int = 10
    #: the flow also trains a BC arm (loss.variant=bc, same data, budget and seed) and evaluates
    #: it beside PAC; the review compares them and BC is handed over only when it beats PAC
    #: beyond noise (pac.review.arms)
    bc_baseline: bool = False


@dataclass
class RLFTConfig:
    """RL fine-tuning rounds (§4.3, Tables 2-3)."""

    rounds: int = 1
    tasks: list[str] = field(default_factory=lambda: ["point_mass.easy"])
    episodes_per_task: int = 10
    finetune_steps: int = 100
    #: fine-tuning learning rate, constant over the rlft.finetune_steps updates; None = the
    #: pretraining schedule again (train.lr_init -> lr_peak -> lr_end). 1e-4 is the default's
    #: train.lr_end: restarting at lr_peak forgets the pretrained policy (BENCHMARKS.md, "The
    #: fine-tuning learning rate (`rlft.lr`)")
    lr: float | None = 1e-4
    weight: float = 1.0  # lambda of the rollout group
    #: how the collecting policy picks actions on the robot: argmax (the deployed policy: the
    #: paper collects its evaluation trials) | sample (a ~ pi, explores) | q_rerank
    decode: Decode = "argmax"
    #: the rollouts' BC/RL trade-off and TD scale (eq. 11): fine-tuning runs a `pac` objective as
    #: alpha-PAC so that they apply (bc_q / filtered_bc / pac_v keep one alpha, beta for all)
    alpha: float = 0.75
    beta: float = 38.0
    landing_dir: str = "data/landing"
    out_dir: str = "runs/rlft"


@dataclass
class TrackingConfig:
    """MLflow: MLFLOW_TRACKING_URI wins over `uri`; artefacts go under `artifact_dir`."""

    uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_dir: str = "mlruns/artifacts"
    experiment: str = "pac"
    registered_model: str = "pac-policy"


#: The model families of the scaling sweep (§4.1): the loss settings each one trains with.
#: PAC is eq. 11 with alpha 0.75, BC+Q the same critic with the BC policy (alpha 1, App. C.5).
FAMILIES: dict[str, dict[str, Any]] = {
    "pac": {"loss.variant": "pac", "loss.alpha": 0.75},
    "bc_q": {"loss.variant": "bc_q", "loss.alpha": 1.0},
}


@dataclass
class ScalingSizeConfig:
    """One model size of the scaling ladder: a name and the settings that make it (dotted
    keys, e.g. ``model.d_z: 128``, ``train.steps: 1000``), applied over the params file."""

    name: str = "tiny"
    set: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScalingConfig:
    """The scaling sweep of `flows/scaling_flow.py` (§4.1, App. E.1): family x size x seed."""

    families: list[str] = field(default_factory=lambda: ["pac", "bc_q"])
    sizes: list[ScalingSizeConfig] = field(default_factory=lambda: [ScalingSizeConfig()])
    seeds: list[int] = field(default_factory=lambda: [0])
    #: evaluations during each member's training (App. E.1: six checkpoints a run):
    #: train.eval_every = train.steps // evaluations (the last update is always evaluated)
    evaluations: int = 6
    out_dir: str = "runs/scaling"


@dataclass
class EmbodimentConfig:
    """A robot: what it observes and what it does (``embodiments.<name>``, docs/data.md).

    Sizes are given as a count or as names (both: they must agree). Action ranges are in the
    robot's own units, one value per dimension (one value: every dimension); the policy's bins
    cover them through an affine map (:func:`pac.tasks.to_unit`).
    """

    state_size: int = 0  # N^P of the robot's state vector (or state_names)
    state_names: list[str] = field(default_factory=list)
    action_size: int = 0  # N^A (or action_names)
    action_names: list[str] = field(default_factory=list)
    action_low: list[float] = field(default_factory=list)
    action_high: list[float] = field(default_factory=list)
    fps: float = 0.0  # control rate in Hz (LeRobot's fps); needed for tasks without simulator
    cameras: list[str] = field(default_factory=list)  # camera names (documentation)
    angle_dims: list[int] = field(default_factory=list)  # unbounded joint angles: (sin, cos)


@dataclass
class SimulatorConfig:
    """How to build a task's environment: a built-in dm_control task and its action repeat,
    or an OGBench env and one of its evaluation tasks (pac.tasks.OGBENCH_ENVS)."""

    dm_control: str = ""  # a built-in task name, e.g. reacher.easy
    action_repeat: int = 0  # physics steps per action; 0 = the built-in task's
    ogbench: str = ""  # an OGBench env, e.g. cube-single-v0
    task_id: int = 0  # its evaluation task, 1 ... 5


@dataclass
class TaskConfig:
    """A task (``tasks.<name>``): an instruction, its embodiment and optionally a simulator.

    Without a simulator a task is a robot's data: its success is ``success_reward`` on the final
    ``success_window`` fraction of steps (default: reward >= 1 on the final step). With one, its
    sizes, ranges and success definition are the simulated built-in's unless given.
    """

    instruction: str = ""  # the model's language input; "" = the task's name
    embodiment: str = ""  # a name of ``embodiments`` (optional with a simulator)
    simulator: SimulatorConfig | None = None
    success_reward: float | None = None
    success_window: float | None = None


@dataclass
class PACConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    rlft: RLFTConfig = field(default_factory=RLFTConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    embodiments: dict[str, EmbodimentConfig] = field(default_factory=dict)
    tasks: dict[str, TaskConfig] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Flattened ``section.key`` view (lists of groups become ``data.groups.NAME.key``)."""
        out: dict[str, Any] = {}
        for section, values in self.to_dict().items():
            for key, value in values.items():
                if section == "data" and key == "groups":
                    for g in value:
                        for gk, gv in g.items():
                            if gk != "name":
                                out[f"data.groups.{g['name']}.{gk}"] = gv
                elif section in ("embodiments", "tasks"):
                    for vk, vv in value.items():
                        out[f"{section}.{key}.{vk}"] = vv
                else:
                    out[f"{section}.{key}"] = value
        return out


# --- loading -------------------------------------------------------------------------------------


def _check_type(key: str, value: Any, hint: Any) -> Any:
    """Coerce `value` to the annotated type or raise a ConfigError naming `key`."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_type(key, value, inner[0])
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(hint, value, key)
    if origin is dict and dataclasses.is_dataclass(args[1]):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of names, got {value!r}")
        for name in value:
            if not isinstance(name, str) or not name:
                raise ConfigError(f"{key}: names must be non-empty strings, got {name!r}")
        return {n: _check_type(f"{key}.{n}", v if v is not None else {}, args[1])
                for n, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_check_type(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_check_type(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 3e-4 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    return value


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown key {where}{unknown[0]!s}; allowed keys here: {', '.join(sorted(names))}"
        )
    kwargs = {
        k: _check_type(f"{prefix}.{k}" if prefix else k, v, hints[k]) for k, v in values.items()
    }
    return cls(**kwargs)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def read_params(path: str | Path) -> dict[str, Any]:
    """Read a params YAML file, resolving ``extends:`` chains; returns the raw merged mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    parent = raw.pop("extends", None)
    if parent is not None:
        raw = _deep_merge(read_params(path.parent / parent), raw)
    return raw


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. loss.alpha=1.0")
    key, value = text.split("=", 1)
    try:
        return key.strip().split("."), yaml.safe_load(value)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"override {text!r}: the value is not valid YAML"
                          f" ({getattr(exc, 'problem', None) or exc}{where})") from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a raw params mapping."""
    raw = _deep_merge({}, raw)
    for text in overrides:
        parts, value = _parse_override(text)
        node = raw
        for p in parts[:-1]:
            if isinstance(node.get(p), list):
                raise ConfigError(f"override {text!r}: cannot index into a list; edit the file")
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {p} is not a section")
        node[parts[-1]] = value
    return raw


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> PACConfig:
    """Load, merge, type-check and validate a params file (default: `params/default.yaml`)."""
    raw = read_params(path or DEFAULT_PARAMS)
    raw = apply_overrides(raw, list(overrides or []))
    cfg = _build(PACConfig, raw)
    resolve_scale(cfg, explicit=raw.get("model", {}))
    resolve_variant(cfg, explicit=raw.get("data", {}))
    validate(cfg)
    return cfg


def config_from_dict(values: dict[str, Any]) -> PACConfig:
    """A resolved config saved as :meth:`PACConfig.to_dict` (a flow's `config` artefact, a
    checkpoint's config.yaml), type-checked and validated again."""
    cfg = _build(PACConfig, values)
    validate(cfg)
    return cfg


def resolve_variant(cfg: PACConfig, explicit: dict[str, Any] | None = None) -> None:
    """What a loss variant implies for the data: FilteredBC (App. C.5) is BC on the successful
    episodes only, so ``loss.variant=filtered_bc`` sets ``data.success_only`` unless the params
    say otherwise (and saying ``false`` is an error: that would be plain BC)."""
    if cfg.loss.variant != "filtered_bc":
        return
    if "success_only" in (explicit or {}) and not cfg.data.success_only:
        raise ConfigError(
            "data.success_only=false with loss.variant=filtered_bc: FilteredBC trains on the"
            " successful episodes only; for BC on all data use loss.variant=bc"
        )
    cfg.data.success_only = True


def resolve_scale(cfg: PACConfig, explicit: dict[str, Any] | None = None) -> None:
    """Fill D_Z, M, W, N_Z from Table 4 for `model.scale` unless the params file sets them."""
    if cfg.model.scale not in SCALES:
        raise ConfigError(
            f"model.scale: unknown scale {cfg.model.scale!r}; allowed: {', '.join(SCALES)}"
        )
    explicit = explicit or {}
    for key in ("d_z", "num_blocks", "widening", "num_latents"):
        if key not in explicit:
            setattr(cfg.model, key, SCALES[cfg.model.scale][key])


def _range(key: str, value: float, lo: float | None, hi: float | None, what: str = "") -> None:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise ConfigError(f"{key}={value!r} is outside the allowed range [{lo_s}, {hi_s}]{what}")


def _choice(key: str, value: str, allowed: tuple[str, ...] | list[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")


def _known_task(key: str, task: str, known: dict[str, TaskSpec]) -> None:
    if task not in known:
        raise ConfigError(f"{key}: unknown task {task!r}; known tasks: {', '.join(sorted(known))}"
                          " (a robot's tasks are declared under tasks:, docs/data.md)")


def _sizes(key: str, size: int, names: list[str], what: str) -> int:
    """N from ``<what>_size`` and/or ``<what>_names`` (they must agree)."""
    if names and size and size != len(names):
        raise ConfigError(f"{key}.{what}_size={size} but {what}_names lists {len(names)} names")
    n = size or len(names)
    if n < 1:
        raise ConfigError(f"{key}: give {what}_size (>= 1) or {what}_names")
    return n


def _bounds(key: str, emb: EmbodimentConfig, n: int) -> tuple[tuple[float, ...], ...]:
    """Per-dimension (low, high) of an embodiment, each given once per dimension or once."""
    out = []
    for field_name in ("action_low", "action_high"):
        values = getattr(emb, field_name)
        if len(values) not in (1, n):
            raise ConfigError(f"{key}.{field_name}: expected {n} values (one per action) or one,"
                              f" got {len(values)}")
        out.append(tuple(values) * (n if len(values) == 1 else 1))
    bad = [i for i, (a, b) in enumerate(zip(*out)) if not a < b]
    if bad:
        raise ConfigError(f"{key}: action_low must be below action_high in every dimension;"
                          f" dimension {bad[0]} has [{out[0][bad[0]]:g}, {out[1][bad[0]]:g}]")
    return out[0], out[1]


def declared_tasks(cfg: PACConfig) -> dict[str, TaskSpec]:
    """The task specs the params declare (``embodiments:``, ``tasks:``), validated field by field.

    A task without simulator takes everything from its embodiment; a task with a dm_control
    simulator is that built-in task under a new name, instruction and action repeat (its control
    rate is dm_control's timestep x the repeat); a task with an OGBench simulator is one of that
    env's evaluation tasks. Declared tasks have no weak controller.
    """
    out: dict[str, TaskSpec] = {}
    for section, names in (("embodiments", cfg.embodiments), ("tasks", cfg.tasks)):
        for name in names:
            if not _NAME.fullmatch(name):
                raise ConfigError(f"{section}: the name {name!r} must be made of letters, digits,"
                                  " '_', '.' and '-' (it names store folders and runs)")
    for name, emb in cfg.embodiments.items():
        key = f"embodiments.{name}"
        n_p = _sizes(key, emb.state_size, emb.state_names, "state")
        n_a = _sizes(key, emb.action_size, emb.action_names, "action")
        if emb.action_low or emb.action_high:
            _bounds(key, emb, n_a)
        if emb.fps < 0:
            raise ConfigError(f"{key}.fps={emb.fps!r} is outside the allowed range (0, inf)")
        bad = [i for i in emb.angle_dims if not 0 <= i < n_p]
        if bad or len(set(emb.angle_dims)) != len(emb.angle_dims):
            raise ConfigError(f"{key}.angle_dims: distinct state indices in [0, {n_p}) needed,"
                              f" got {emb.angle_dims}")
    for name, task in cfg.tasks.items():
        key = f"tasks.{name}"
        if name in BUILTIN_TASKS:
            raise ConfigError(f"{key}: {name!r} is a built-in task; declare it under another name")
        if task.success_window is not None:
            _range(f"{key}.success_window", task.success_window, 0.0, 1.0)
        if task.instruction and (not task.instruction.strip()
                                 or not task.instruction.isprintable()):
            raise ConfigError(f"{key}.instruction: one line of printable text, got"
                              f" {task.instruction!r:.80}")
        emb = cfg.embodiments.get(task.embodiment) if task.embodiment else None
        if task.embodiment and emb is None:
            raise ConfigError(f"{key}.embodiment: unknown embodiment {task.embodiment!r};"
                              f" declared: {', '.join(sorted(cfg.embodiments)) or 'none'}")
        common = {"instruction": task.instruction or name, "embodiment": task.embodiment}
        if task.simulator is None:
            if emb is None:
                raise ConfigError(f"{key}.embodiment: a task without simulator needs an"
                                  " embodiment (its sizes, action ranges and fps)")
            ekey = f"embodiments.{task.embodiment}"
            if not emb.fps > 0:
                raise ConfigError(f"{ekey}.fps: the control rate (Hz) is needed by task {name}")
            n_p = _sizes(ekey, emb.state_size, emb.state_names, "state")
            n_a = _sizes(ekey, emb.action_size, emb.action_names, "action")
            if not (emb.action_low and emb.action_high):
                raise ConfigError(f"{ekey}: action_low and action_high (the physical range of"
                                  f" every action dimension) are needed by task {name}")
            low, high = _bounds(ekey, emb, n_a)
            reward = 1.0 if task.success_reward is None else task.success_reward
            window = 0.0 if task.success_window is None else task.success_window
            out[name] = TaskSpec(
                name, task.embodiment, name, n_p, n_a, low, high,
                success=success_text(reward, window), success_reward=reward,
                success_window=window, angle_dims=tuple(emb.angle_dims), simulator="",
                fps=emb.fps, action_names=tuple(emb.action_names),
                state_names=tuple(emb.state_names), cameras=tuple(emb.cameras), **common,
            )
            continue
        sim, skey = task.simulator, f"{key}.simulator"
        if sim.ogbench:
            out[name] = _ogbench_task(name, task, emb, common)
            continue
        base = BUILTIN_TASKS.get(sim.dm_control)
        if base is None:
            raise ConfigError(f"{skey}.dm_control: {sim.dm_control!r} is not a built-in"
                              f" dm_control task; known: {', '.join(sorted(BUILTIN_TASKS))}")
        _range(f"{skey}.action_repeat", sim.action_repeat, 0, None)
        if emb is not None:
            ekey = f"embodiments.{task.embodiment}"
            sizes = _simulator_sizes(ekey, emb, f"the simulator {sim.dm_control}", name,
                                     (base.num_proprio, base.num_actions))
            if (emb.action_low or emb.action_high) and _bounds(ekey, emb, sizes[1]) != (
                    base.action_low, base.action_high):
                raise ConfigError(f"{ekey}: the action range differs from the simulator"
                                  f" {sim.dm_control}'s (task {name})")
        reward = base.success_reward if task.success_reward is None else task.success_reward
        window = base.success_window if task.success_window is None else task.success_window
        out[name] = dataclasses.replace(
            base, name=name, action_repeat=sim.action_repeat or base.action_repeat,
            success=success_text(reward, window), success_reward=reward, success_window=window,
            weak_gain=0.0, **common,
        )
    return out


def _simulator_sizes(ekey: str, emb: EmbodimentConfig, simulator: str, task: str,
                     expected: tuple[int, int]) -> tuple[int, int]:
    """The embodiment's (state, action) sizes, which must be the simulator's."""
    sizes = (_sizes(ekey, emb.state_size, emb.state_names, "state"),
             _sizes(ekey, emb.action_size, emb.action_names, "action"))
    if sizes != expected:
        raise ConfigError(f"{ekey}: state/action sizes {sizes[0]}/{sizes[1]} differ from"
                          f" {simulator}'s {expected[0]}/{expected[1]} (task {task})")
    return sizes


def _ogbench_task(name: str, task: TaskConfig, emb: EmbodimentConfig | None,
                  common: dict[str, str]) -> TaskSpec:
    """A task simulated by an OGBench env's single-task evaluation env (its sizes, 20 Hz,
    episode length and success from :data:`pac.tasks.OGBENCH_ENVS`)."""
    sim, key = task.simulator, f"tasks.{name}.simulator"
    if sim.dm_control or sim.action_repeat:
        raise ConfigError(f"{key}: give either dm_control (and action_repeat) or ogbench")
    env = OGBENCH_ENVS.get(sim.ogbench)
    if env is None:
        raise ConfigError(f"{key}.ogbench: {sim.ogbench!r} is not a known OGBench env; known:"
                          f" {', '.join(OGBENCH_ENVS)}")
    _range(f"{key}.task_id", sim.task_id, 1, env.num_tasks)
    if emb is not None:
        _simulator_sizes(f"embodiments.{task.embodiment}", emb, sim.ogbench, name,
                         (env.num_proprio, env.num_actions))
    spec = ogbench_spec(name, sim.ogbench, sim.task_id, **common)
    reward = spec.success_reward if task.success_reward is None else task.success_reward
    window = spec.success_window if task.success_window is None else task.success_window
    if (reward, window) == (spec.success_reward, spec.success_window):
        return spec
    return dataclasses.replace(spec, success=success_text(reward, window),
                               success_reward=reward, success_window=window)


def validate(cfg: PACConfig) -> None:
    """Range and consistency checks (raise ConfigError naming the key and the allowed range).

    The params' declared tasks are checked first and then registered with :data:`pac.tasks.TASKS`
    (the resolver every module asks), so any process that validates these params knows them.
    """
    m, lo, d, t, e, r = cfg.model, cfg.loss, cfg.data, cfg.train, cfg.eval, cfg.rlft
    declared = declared_tasks(cfg)
    TASKS.declare(declared)
    known = {**BUILTIN_TASKS, **declared}
    _choice("model.scale", m.scale, list(SCALES))
    _choice("model.proprio_tokens", m.proprio_tokens, PROPRIO_TOKENS)
    for key in ("d_z", "num_blocks", "widening", "num_heads", "num_latents", "d_i",
                "num_gains", "num_action_bins", "num_value_bins", "num_proprio",
                "num_actions", "vocab_size", "image_size"):
        _range(f"model.{key}", getattr(m, key), 1, None)
    for key in ("num_images", "num_goal_images", "num_text_tokens", "d_o", "decoder_widening",
                "q_decoder_widening"):
        _range(f"model.{key}", getattr(m, key), 0, None)
    if m.d_z % m.num_heads or m.decoder_width % m.num_heads:
        raise ConfigError(f"model.num_heads={m.num_heads} must divide d_z={m.d_z} and d_o")
    if m.image_size % 8:
        raise ConfigError(f"model.image_size={m.image_size} must be a multiple of 8 (ResNet /8)")

    _choice("loss.variant", lo.variant, VARIANTS)
    _range("loss.alpha", lo.alpha, 0.0, 1.0)
    _range("loss.beta", lo.beta, 0.0, None)
    if lo.eta <= 0:
        raise ConfigError(f"loss.eta={lo.eta!r} is outside the allowed range (0, inf)")
    _range("loss.gamma", lo.gamma, 0.0, 1.0)
    _range("loss.eta_relative", lo.eta_relative, 0.0, None)
    _range("loss.num_action_samples", lo.num_action_samples, 1, None)
    _range("loss.target_update_period", lo.target_update_period, 1, None)
    if lo.value_max <= lo.value_min:
        raise ConfigError("loss.value_max must be greater than loss.value_min")
    for i, step_alpha in enumerate(lo.alpha_schedule):
        if len(step_alpha) != 2:
            raise ConfigError(f"loss.alpha_schedule[{i}]: expected [from_update, alpha]")
        _range(f"loss.alpha_schedule[{i}] update", step_alpha[0], 0, None)
        _range(f"loss.alpha_schedule[{i}] alpha", step_alpha[1], 0.0, 1.0)
    if lo.variant in ("bc", "bc_q", "filtered_bc") and lo.alpha != 1.0:
        raise ConfigError(f"loss.alpha must be 1.0 for variant {lo.variant} (got {lo.alpha})")
    if lo.variant in ("bc", "filtered_bc") and lo.beta != 0.0:
        raise ConfigError(f"loss.beta must be 0 for variant filtered_bc (got {lo.beta})")
    if lo.alpha_schedule and lo.variant == "alpha_pac":
        raise ConfigError(
            "loss.alpha_schedule with loss.variant=alpha_pac: the schedule would replace every"
            " group's own alpha; use one of the two"
        )
    if lo.variant == "pac_v" and not m.value_head:
        raise ConfigError("loss.variant=pac_v needs model.value_head=true (eq. 14); the preset"
                          " params/presets/pac_v.yaml sets it with App. C.5's alpha, beta, eta")

    _range("data.episode_steps", d.episode_steps, 2, None)
    _range("data.trajectory_length", d.trajectory_length, 2, None)
    _range("data.generate_workers", d.generate_workers, 1, None)
    _range("data.sampler_workers", d.sampler_workers, 0, None)
    _range("data.tokenizer_vocab", d.tokenizer_vocab, 8, None)
    _range("data.cameras", d.cameras, 1, None)
    _choice("data.tokenizer_type", d.tokenizer_type, ("bpe", "unigram"))
    if not d.groups:
        raise ConfigError("data.groups: at least one dataset group is needed")
    names = [g.name for g in d.groups]
    if len(set(names)) != len(names):
        raise ConfigError(f"data.groups: group names must be unique, got {names}")
    for g in d.groups:
        key = f"data.groups.{g.name}"
        if not g.tasks:
            raise ConfigError(f"{key}.tasks: at least one task is needed")
        for task in g.tasks:
            _known_task(f"{key}.tasks", task, known)
        _range(f"{key}.quality", g.quality, 0.0, 1.0)
        _choice(f"{key}.suboptimal", g.suboptimal, SUBOPTIMAL)
        if g.suboptimal == "weak":
            weakless = [t for t in g.tasks if t not in WEAK_TASKS]
            if weakless:
                raise ConfigError(f"{key}.suboptimal=weak: task(s) {', '.join(weakless)} have no"
                                  f" weak controller; tasks with one: {', '.join(WEAK_TASKS)}")
        if g.action_noise is not None:
            _range(f"{key}.action_noise", g.action_noise, 0.0, None)
        _range(f"{key}.episodes_per_task", g.episodes_per_task, 1, None)
        if g.weight <= 0:
            raise ConfigError(f"{key}.weight={g.weight!r} is outside the allowed range (0, inf)")
        if g.alpha is not None:
            _range(f"{key}.alpha", g.alpha, 0.0, 1.0)
        if g.beta is not None:
            _range(f"{key}.beta", g.beta, 0.0, None)
        _choice(f"{key}.source", g.source, ("sim", "real", "rollout"))
        if group_alpha_beta(cfg, g) != (lo.alpha, lo.beta) and lo.variant != "alpha_pac":
            hint = " (the rollouts group: rlft.alpha, rlft.beta)" if g.source == "rollout" else ""
            raise ConfigError(
                f"{key}: alpha={g.alpha}, beta={g.beta}{hint} apply only with"
                f" loss.variant=alpha_pac (one alpha, beta per group, App. C.5); loss.variant="
                f"{lo.variant} uses loss.alpha={lo.alpha}, loss.beta={lo.beta} for every group"
            )
    for g in d.groups:
        for task in g.tasks:
            spec = known[task]
            if spec.num_proprio > m.num_proprio or spec.num_actions > m.num_actions:
                raise ConfigError(
                    f"data.groups.{g.name}: task {task} needs num_proprio>={spec.num_proprio} and"
                    f" num_actions>={spec.num_actions}; model has {m.num_proprio}/{m.num_actions}"
                )
    if not m.proprio_input and m.num_images < 1:
        raise ConfigError("model.proprio_input=false (pixels only) needs model.num_images >= 1")
    for key in ("drop_proprio", "drop_images", "drop_text"):
        _range(f"data.{key}", getattr(d, key), 0.0, 1.0)
    if d.render and m.num_images < d.cameras:
        raise ConfigError(f"data.render with {d.cameras} camera(s) needs model.num_images>=that")

    for key in ("steps", "global_batch", "checkpoint_every", "log_every"):
        _range(f"train.{key}", getattr(t, key), 1, None)
    for key in ("micro_batch", "warmup_steps", "decay_steps"):
        _range(f"train.{key}", getattr(t, key), 0, None)
    _range("train.warmup_fraction", t.warmup_fraction, 0.0, 1.0)
    for key in ("lr_init", "lr_peak", "lr_end"):
        _range(f"train.{key}", getattr(t, key), 0.0, 1.0)
    _range("train.adam_beta1", t.adam_beta1, 0.0, 1.0)
    _range("train.adam_beta2", t.adam_beta2, 0.0, 1.0)
    _range("train.weight_decay", t.weight_decay, 0.0, None)
    _range("train.grad_clip", t.grad_clip, 0.0, None)
    _range("train.eval_every", t.eval_every, 0, None)
    _range("train.threads", t.threads, 0, None)
    _range("train.eval_episodes", t.eval_episodes, 1, None)
    if t.zero_stage not in (0, 1, 2, 3):
        raise ConfigError(f"train.zero_stage={t.zero_stage!r}: DeepSpeed ZeRO stages are 0-3")
    _choice("train.precision", t.precision, TRAIN_PRECISIONS)
    _choice("train.backend", t.backend, ("auto", "gloo", "nccl"))
    _choice("train.launcher", t.launcher, ("local", "deepspeed", "torchrun", "metaflow"))

    _range("eval.episodes_per_task", e.episodes_per_task, 1, None)
    _range("eval.workers", e.workers, 1, None)
    _choice("eval.decode", e.decode, DECODES)
    _range("eval.num_candidates", e.num_candidates, 1, None)
    _choice("eval.precision", e.precision, PRECISIONS)
    _range("eval.max_steps", e.max_steps, 0, None)
    _range("eval.videos_per_task", e.videos_per_task, 0, None)
    _range("eval.offline_holdout", e.offline_holdout, 0, None)
    if e.offline_holdout == 1:
        raise ConfigError("eval.offline_holdout: 1 would hold out every episode; use 0 (none)"
                          " or k >= 2 (every k-th)")
    for task in e.held_out_tasks:
        _known_task("eval.held_out_tasks", task, known)
    if not isinstance(e.expert_returns, dict):
        raise ConfigError(f"eval.expert_returns: expected task: return, got {e.expert_returns!r}")
    for task, ret in e.expert_returns.items():
        _known_task("eval.expert_returns", task, known)
        if isinstance(ret, bool) or not isinstance(ret, (int, float)) or not math.isfinite(ret):
            raise ConfigError(f"eval.expert_returns.{task}: expected a finite number, got {ret!r}")

    _range("rlft.rounds", r.rounds, 0, None)
    for task in r.tasks:
        _known_task("rlft.tasks", task, known)
    _range("rlft.episodes_per_task", r.episodes_per_task, 1, None)
    _range("rlft.finetune_steps", r.finetune_steps, 1, None)
    if r.lr is not None:
        _range("rlft.lr", r.lr, 0.0, 1.0)
    _range("rlft.alpha", r.alpha, 0.0, 1.0)
    _range("rlft.beta", r.beta, 0.0, None)
    _choice("rlft.decode", r.decode, DECODES)
    if r.weight <= 0:
        raise ConfigError(f"rlft.weight={r.weight!r} is outside the allowed range (0, inf)")
    validate_scaling(cfg.scaling)


#: Settings a scaling size may not make: the sweep sets them per member.
SWEEP_KEYS = ("loss.variant", "loss.alpha", "train.seed", "train.eval_every", "train.out_dir")


def validate_scaling(s: ScalingConfig) -> None:
    """The sweep's own checks; each size's settings are checked as a whole config by
    :func:`pac.scaling.sweep.members` (unknown keys, ranges)."""
    if not s.families:
        raise ConfigError("scaling.families: at least one family is needed")
    for family in s.families:
        _choice("scaling.families", family, list(FAMILIES))
    if len(set(s.families)) != len(s.families):
        raise ConfigError(f"scaling.families: families must be unique, got {s.families}")
    if not s.sizes:
        raise ConfigError("scaling.sizes: at least one model size is needed")
    names = [z.name for z in s.sizes]
    if len(set(names)) != len(names) or not all(re.fullmatch(r"[A-Za-z0-9_.]+", n)
                                                for n in names):
        raise ConfigError(f"scaling.sizes: names must be unique and made of letters, digits,"
                          f" '_' and '.', got {names}")
    for z in s.sizes:
        if not isinstance(z.set, dict):
            raise ConfigError(f"scaling.sizes.{z.name}.set: expected KEY: VALUE, got {z.set!r}")
        taken = sorted(set(z.set) & set(SWEEP_KEYS))
        if taken:
            raise ConfigError(f"scaling.sizes.{z.name}.set: {taken[0]} is set by the sweep per"
                              " member (scaling.families, scaling.seeds), not per size")
    if not s.seeds or len(set(s.seeds)) != len(s.seeds):
        raise ConfigError(f"scaling.seeds: at least one seed, each once, got {s.seeds}")
    _range("scaling.evaluations", s.evaluations, 5, None,
           " (the return profile, eq. 18, has 4 parameters)")


def group_alpha_beta(cfg: PACConfig, group: GroupConfig) -> tuple[float, float]:
    """alpha, beta used for a group: its own (alpha-PAC, App. C.5) or the global loss values."""
    alpha = group.alpha if group.alpha is not None else cfg.loss.alpha
    beta = group.beta if group.beta is not None else cfg.loss.beta
    return alpha, beta


def save_config(cfg: PACConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically: temp file + rename)."""
    from pac.io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(cfg.to_dict(), sort_keys=False))
