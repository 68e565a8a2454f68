"""A Markdown model card per registered policy, filled from the run that produced it.

The fields follow the model-card excerpt that describes the 15.7B PAC-style policy: parameter
count, hardware and GPU count, training duration, optimiser and schedule, data, evaluation,
licence and year — here every value comes from the run itself, nothing is typed by hand. It
also says how to load and call the policy (the exact input sizes per task) and its limits.
"""

from __future__ import annotations

import datetime as _dt
import platform
from dataclasses import dataclass, field
from pathlib import Path

from pac.config import PACConfig, group_alpha_beta
from pac.envs import action_noise_std
from pac.io import atomic_write_text


@dataclass
class ModelCardFacts:
    """What a run measured; everything else on the card is read from the config."""

    name: str
    params: int
    wall_clock_s: float  # the whole flow run (data, training, evaluation, RLFT)
    train_seconds: float | None = None  # the pretraining run alone (its MLflow run's duration)
    precision: str = ""  # the arithmetic training used (train.precision with auto resolved)
    registered_model: str = "pac-policy"
    #: per-task results of this version: task -> success cell (rate, low, high, episodes)
    task_success: dict[str, dict[str, float]] = field(default_factory=dict)
    champion_rule: str = ""  # how this version was chosen (pac.review.champion)
    hardware: str = ""
    gpu_count: int = 0
    world_size: int = 1
    data_version: dict[str, str] = field(default_factory=dict)
    eval_markdown: str = ""  # this version's own evaluation table
    rlft_markdown: str = ""
    arms_markdown: str = ""  # eval.bc_baseline: PAC beside BC and which was handed over
    #: headline rows of this version's evaluation, e.g. {"success % [Wilson 95%]": "40.0 [..]"}
    headline: dict[str, str] = field(default_factory=dict)
    eval_title: str = "Evaluation (simulation)"
    mlflow_run_id: str = ""
    metaflow_pathspec: str = ""
    licence: str = "Apache-2.0"
    year: int = field(default_factory=lambda: _dt.date.today().year)


def detect_hardware() -> tuple[str, int]:
    """(description, GPU count) of this machine, e.g. ("NVIDIA A100-SXM4-80GB", 8)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0), torch.cuda.device_count()
    cpu = platform.processor() or platform.machine()
    import os

    return f"CPU ({cpu}, {os.cpu_count()} cores)", 0


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _precision(configured: str, used: str) -> str:
    """What training computed in, and what was asked for when that differs (`auto`)."""
    if not used or used == configured:
        return configured
    return f"{used} (train.precision: {configured})"


def usage_markdown(cfg: PACConfig, registered_model: str) -> list[str]:
    """How to load and call the registered policy, with each task's exact input size."""
    from pac.tasks import TASKS

    tasks = sorted({t for g in cfg.data.groups for t in g.tasks if t in TASKS})
    first = TASKS[tasks[0]] if tasks else None
    example = (f'[{{"instruction": "{first.name}", "proprio": [0.0] * {first.num_proprio}}}]'
               if first else "[...]")
    lines = [
        "## How to use", "",
        "```python",
        "import mlflow",
        "",
        f'mlflow.set_tracking_uri("{cfg.tracking.uri}")  # the store of the run',
        f'policy = mlflow.pyfunc.load_model("models:/{registered_model}@champion")',
        f"actions = policy.predict({example})",
        "# one list of actions per row, each in [-1, 1] (greedy: the most likely bin)",
        "```", "",
        "Load the `@champion` alias, not the newest version: a version of a later RLFT round",
        "that did not beat the champion beyond noise is registered too.", "",
        "| task (instruction) | proprio length (inputs) | actions (outputs) |",
        "|---|---|---|",
    ]
    lines += [f"| {t} | {TASKS[t].num_proprio} | {TASKS[t].num_actions} |" for t in tasks]
    return lines


def limitations_markdown(cfg: PACConfig, facts: ModelCardFacts) -> list[str]:
    """What the policy was not shown to do."""
    lines = ["## Limitations", "",
             "- Trained and evaluated in simulation only (dm_control, proprioception"
             f"{'' if cfg.data.render else ' without images'}); never run on a robot."]
    if facts.task_success:
        episodes = sum(int(c["episodes"]) for c in facts.task_success.values())
        lines.append(f"- Evaluated on {episodes} episodes in all: the intervals above are that"
                     " wide.")
        worst = min(facts.task_success, key=lambda t: facts.task_success[t]["rate"])
        cell = facts.task_success[worst]
        lines.append(f"- Weakest task: {worst}, {cell['rate']:.1f} % success"
                     f" [{cell['low']:.1f}, {cell['high']:.1f}] over"
                     f" {int(cell['episodes'])} episodes.")
    lines.append("- Acts only on the tasks and input sizes listed under How to use.")
    return lines


def render_model_card(cfg: PACConfig, facts: ModelCardFacts) -> str:
    """The card as Markdown."""
    t, lo, T = cfg.train, cfg.loss, cfg.data.trajectory_length
    gpus = f"{facts.gpu_count} x {facts.hardware}" if facts.gpu_count else facts.hardware
    warmup = t.warmup_steps or f"{t.warmup_fraction:.0%} of steps"
    data_version = ", ".join(f"{k}: {v}" for k, v in facts.data_version.items())
    lines = [
        f"# Model card: {facts.name}",
        "",
        "PAC (Perceiver-Actor-Critic) policy and distributional Q-function trained with the",
        "offline KL-regularised actor-critic objective (Springenberg et al., 2024, eq. 11).",
        "",
        "| field | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in facts.headline.items()),
        f"| load | `mlflow.pyfunc.load_model(\"models:/{facts.registered_model}@champion\")` |",
        *([f"| chosen by | {facts.champion_rule} |"] if facts.champion_rule else []),
        f"| parameters (policy + value) | {facts.params:,} ({facts.params / 1e6:.2f}M) |",
        f"| scale | {cfg.model.scale} (D_Z={cfg.model.d_z}, M={cfg.model.num_blocks},"
        f" W={cfg.model.widening}) |",
        f"| hardware | {gpus} |",
        f"| GPU count | {facts.gpu_count} |",
        f"| world size (processes) | {facts.world_size} |",
        f"| DeepSpeed | ZeRO stage {t.zero_stage}, {_precision(t.precision, facts.precision)} |",
        f"| training duration (pretraining run, wall clock) |"
        f" {'-' if facts.train_seconds is None else _duration(facts.train_seconds)} |",
        f"| flow run (data, training, evaluation, RLFT; wall clock) |"
        f" {_duration(facts.wall_clock_s)} |",
        f"| optimiser | AdamW lr {t.lr_init:g} -> {t.lr_peak:g} -> {t.lr_end:g}, warm-up {warmup},"
        f" cosine; betas ({t.adam_beta1}, {t.adam_beta2}), wd {t.weight_decay:g} |",
        f"| batch | {t.global_batch} trajectories x {T} steps = {t.global_batch * T} time steps"
        f" ({t.global_batch * (T - 1)} transitions at loss positions 0..T-2) |",
        f"| gradient clipping | {t.grad_clip} |",
        f"| updates | {t.steps} |",
        f"| objective | {lo.variant} (alpha={lo.alpha}, beta={lo.beta}, eta={lo.eta},"
        f" gamma={lo.gamma}) |",
        f"| data version | {data_version or '-'} |",
        f"| MLflow run | {facts.mlflow_run_id or '-'} |",
        f"| Metaflow run | {facts.metaflow_pathspec or '-'} |",
        f"| licence | {facts.licence} |",
        f"| year | {facts.year} |",
        "",
        "## Data mixture (App. C.4) and alpha/beta per group (App. C.5)",
        "",
        "| group | tasks | quality | when not the expert | action noise | lambda | alpha | beta |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for g in cfg.data.groups:
        alpha, beta = group_alpha_beta(cfg, g)
        # quality only describes generated data: other sources have no behaviour to name
        sim = g.source == "sim"
        behaviour = g.suboptimal if sim and g.quality < 1.0 else "-"
        noise = f"{action_noise_std(g.quality, g.action_noise):g}" if sim else "-"
        lines.append(f"| {g.name} | {', '.join(g.tasks)} | {g.quality} | {behaviour} | {noise} |"
                     f" {g.weight} | {alpha} | {beta} |")
    if facts.eval_markdown:
        lines += ["", f"## {facts.eval_title}", "", facts.eval_markdown.strip()]
    if facts.arms_markdown:
        lines += ["", facts.arms_markdown.strip()]
    lines += ["", *usage_markdown(cfg, facts.registered_model), "",
              *limitations_markdown(cfg, facts)]
    if facts.rlft_markdown:
        lines += ["", "## RL fine-tuning rounds (§4.3)", "", facts.rlft_markdown.strip()]
    return "\n".join(lines) + "\n"


def write_model_card(cfg: PACConfig, facts: ModelCardFacts, path: str | Path) -> Path:
    return atomic_write_text(Path(path), render_model_card(cfg, facts))
