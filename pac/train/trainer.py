"""`train(cfg)`: offline actor-critic pretraining of PAC on a DeepSpeed engine (§3.2, App. C.5).

One update, top to bottom:

1. the sampler gives this rank its share of the global batch for update `step` (a pure function
   of seed, step, rank and world size, so a resumed run sees exactly the same data);
2. the share is split into micro-batches; each one is a forward of model + loss (eq. 11 or
   eq. 14) against the target network theta' and a backward; DeepSpeed accumulates, all-reduces,
   clips to norm 1.0 and takes the AdamW step with the Table 12 learning rate;
3. every f_theta' updates theta' <- theta (gathered under ZeRO-3);
4. every `train.log_every` updates the losses, lr, grad norm, mean Q, alpha, samples/s, steps/s
   and MFU go to MLflow (the per-update metrics are summed on the device and read once per
   logging window, not once per update); every `train.checkpoint_every` updates (and at the
   end) a checkpoint is written that `resume=True` continues from exactly;
5. every `train.eval_every` updates (and at the end, when on and <= train.steps) rank 0
   evaluates theta on the training and held-out tasks and logs the normalised return
   against updates and FLOPs (:mod:`pac.train.periodic_eval`; training's random streams
   are left as they were).

At the end the online weights, fp32 as the optimiser holds them (the weights periodic evaluation
scores and a resume restores), are exported as a plain inference checkpoint (safetensors) for
evaluation and RLFT, and logged to MLflow with the resolved config and the final checkpoint.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pac.config import ConfigError, PACConfig, TrainConfig, save_config
from pac.io import atomic_write_text
from pac.train import checkpoints
from pac.train.ds_config import (
    batch_layout,
    deepspeed_config,
    effective_precision,
    precision_dtype,
)
from pac.train.engine import device_type, world_from_env
from pac.train.schedule import learning_rate, lr_factor

RUN_FILE = "mlflow_run.json"
METRICS_FILE = "metrics.json"
POLICY_DIR = "policy"


@dataclass
class TrainResult:
    out_dir: Path
    checkpoint: Path  # the final training checkpoint folder (DeepSpeed state + theta' + RNG)
    policy_dir: Path  # the inference checkpoint (model.safetensors + config.yaml + tokenizer)
    run_id: str | None  # MLflow run (None on ranks other than 0)
    metrics: dict[str, float]  # the last logged metrics
    history: list[dict[str, float]] = field(default_factory=list)  # every logged step
    start_step: int = 0  # 0, or the step a resumed run continued from
    precision: str = "fp32"  # the arithmetic the run used (train.precision with auto resolved)


# --- checks before any compute -------------------------------------------------------------------


def check_data(root: Path) -> dict[str, str]:
    """The dataset version of the data under `root` (DVC hashes of its outputs, when it is
    DVC-tracked, and the episode store's fingerprint); a clear error if there is none."""
    from pac.data import EpisodeStore, dataset_version, store_root, tokenizer_path

    for path, what in ((store_root(root), "episodes"), (tokenizer_path(root), "tokenizer")):
        if not path.exists():
            raise ConfigError(
                f"missing {what} data: {path} does not exist; create it first"
                f" (`dvc repro`, or `pac data generate` and `pac tokenizer train`)"
            )
    from pac.data.store import StoreError

    try:  # every shard file against the sha256 in its manifest: corrupt data is never trained on
        store = EpisodeStore(store_root(root), verify=True)
    except StoreError as exc:
        raise StoreError(f"refusing to train: {exc}") from exc
    from pac.data.tokenizer import check_model

    try:  # the tokenizer's bytes against the sha256 recorded when it was trained
        check_model(tokenizer_path(root))
    except ValueError as exc:
        raise StoreError(f"refusing to train: {exc}") from exc
    if not store.shards:
        raise ConfigError(
            f"missing data version: the episode store {store_root(root)} holds no episodes,"
            " so there is no data to version or train on (`dvc repro` or `pac data generate`)"
        )
    return {k: str(v) for k, v in dataset_version(root).items()}


def check_init_from(init_from: Path, cfg: PACConfig) -> dict[str, torch.Tensor]:
    """Weights of an inference checkpoint whose architecture equals `cfg.model`."""
    from safetensors.torch import load_file

    from pac.checkpoint import WEIGHTS, load_checkpoint_config

    init_cfg = load_checkpoint_config(init_from)
    if init_cfg.model != cfg.model:
        diff = [
            f"{k}: {getattr(init_cfg.model, k)!r} != {getattr(cfg.model, k)!r}"
            for k in vars(cfg.model)
            if getattr(init_cfg.model, k) != getattr(cfg.model, k)
        ]
        raise ConfigError(f"init_from {init_from}: model differs from params: {'; '.join(diff)}")
    weights = init_from / WEIGHTS
    if not weights.is_file():
        raise ConfigError(f"init_from {init_from}: missing {WEIGHTS}")
    return load_file(str(weights))


# --- helpers -------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def grad_norm(params: list[torch.Tensor]) -> torch.Tensor | float:
    """Global L2 norm of the (all-reduced, unclipped) gradients, as a 0-d device tensor (no
    sync: the trainer reads it with the other metrics once per logging window)."""
    grads = [p.grad.detach().norm() for p in params if p.grad is not None]
    return torch.stack(grads).norm() if grads else 0.0


def read_metrics(sums: dict[str, torch.Tensor | float], steps: int) -> dict[str, float]:
    """A logging window's per-update means as floats: the sums stacked and read in one sync."""
    keys = list(sums)
    device = next((v.device for v in sums.values() if isinstance(v, torch.Tensor)), None)
    stacked = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64, device=device)
                           for k in keys])
    return {k: v / steps for k, v in zip(keys, stacked.tolist(), strict=True)}


def split(batch, micro: int) -> list:
    """A rank's share of the batch as consecutive micro-batches of `micro` trajectories."""
    return [batch.index(slice(i, i + micro)) for i in range(0, batch.batch_size, micro)]


def mean_across_ranks(
    values: dict[str, float], world_size: int, device: torch.device
) -> dict[str, float]:
    """Metrics averaged over the ranks (one all-reduce), so they describe the global batch."""
    if world_size == 1:
        return values
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / world_size for k, v in zip(keys, t.tolist())}


def run_precision(t: TrainConfig, device: torch.device, run_state: dict, world_size: int,
                  width: int = 1024) -> str:
    """The run's arithmetic: `train.precision` with `auto` resolved by rank 0 and broadcast (a
    measurement on each rank could differ); a resumed `auto` run keeps the precision it started
    with, so a measurement cannot flip between the halves of a run and break its exact resume.
    `width` is the model's D_Z: `auto` measures bf16 at the size the model multiplies."""
    resumed = run_state.get("precision") if t.precision == "auto" else None
    precision = resumed or effective_precision(t, device.type, width)
    if world_size > 1:
        import torch.distributed as dist

        chosen = [precision]
        dist.broadcast_object_list(chosen, src=0)
        precision = chosen[0]
    return precision


# --- the loop ------------------------------------------------------------------------------------


def train(
    cfg: PACConfig,
    resume: bool = False,
    init_from: str | Path | None = None,
    data_root: str | Path | None = None,
    tracking_parent_run: str | None = None,
    run_name: str | None = None,
) -> TrainResult:
    """Pretrain (or fine-tune from `init_from`) PAC with `cfg`; see the module docstring.

    `run_name` names the MLflow run (default ``pretrain-<scale>`` or ``finetune-<scale>``)."""
    # 1. Everything that can be wrong is checked before the first import of DeepSpeed.
    rank, _, world_size = world_from_env()
    layout = batch_layout(cfg.train, world_size)
    deepspeed_config(cfg.train, world_size, device_type(), "fp32")  # checks only: no measuring
    lr_factor(cfg.train)
    root = Path(data_root or cfg.data.root)
    version = check_data(root)
    init_weights = check_init_from(Path(init_from), cfg) if init_from else None
    out_dir = Path(cfg.train.out_dir)
    ckpt_root = out_dir / "checkpoints"
    if not resume and checkpoints.find_latest(ckpt_root).path is not None:
        raise ConfigError(
            f"train.out_dir={out_dir} already holds checkpoints: pass --resume to continue"
            " that run, or choose another train.out_dir"
        )

    import torch.distributed as dist

    from pac.data import (
        EpisodeStore,
        TaskTokenizer,
        TrajectorySampler,
        make_dataloader,
        store_root,
        task_horizons,
        tokenizer_path,
    )
    from pac.model import PerceiverActorCritic
    from pac.train.determinism import environment, restore_torch_functions
    from pac.train.engine import PACObjective, build_engine, init_distributed
    from pac.train.plan import measure_matmul_peak, parameter_counts, training_flops_per_update
    from pac.train.target import (
        copy_master_weights,
        is_target_update,
        make_target,
        refresh_target,
    )
    from pac.train.threads import training_threads

    device = init_distributed(cfg.train.backend)
    t = cfg.train
    restore_torch_functions()  # nothing an earlier run in this process patched
    run_file = out_dir / RUN_FILE
    run_state = json.loads(run_file.read_text()) if resume and run_file.is_file() else {}
    precision = run_precision(t, device, run_state, world_size, cfg.model.d_z)
    threads = training_threads(t.threads, world_size, device.type == "cpu",
                               run_state.get("threads"))
    torch.set_num_threads(threads)  # before any op: the run's reduction order
    run_env = environment(world_size, precision, device.type)

    # 2. Model, engine and theta'. The same seed on every rank: identical initial weights. The
    # model is built whole and partitioned by deepspeed.initialize (not inside zero.Init, which
    # would skip the model's own re-initialisation of already partitioned sub-modules).
    seed_everything(t.seed)
    model = PerceiverActorCritic(cfg.model)
    if init_weights is not None:
        model.load_state_dict(init_weights)
    generator = torch.Generator(device=device).manual_seed(t.seed + 1 + 1000 * rank)
    engine = build_engine(PACObjective(model, cfg, generator, precision), cfg, world_size)
    target = make_target(lambda: PerceiverActorCritic(cfg.model), device,
                         precision_dtype(precision))
    refresh_target(engine.module.model, target)  # theta'_0 = theta_0

    # 3. Resume: newest complete checkpoint; incomplete or corrupt ones are quarantined.
    found = checkpoints.find_latest(ckpt_root) if resume else None
    start = found.step if found is not None and found.path is not None else 0
    dist.barrier()
    if rank == 0 and found is not None and found.rejected:
        moved = checkpoints.quarantine(ckpt_root, found.rejected)
        for (path, reason), dest in zip(found.rejected, moved):
            print(f"pac train: checkpoint {path.name} is not usable ({reason}); quarantined"
                  f" -> {dest} (reason in {dest.name}.reason.txt)")
    dist.barrier()

    # 4. Tracking (rank 0): the same MLflow run continues on resume.
    from pac.tracking import Tracker, git_commit

    run_id = run_state.get("run_id")
    stage = "finetune" if init_from else "pretrain"
    tracker = Tracker(
        cfg, run_name=run_name or f"{stage}-{cfg.model.scale}", parent_run_id=tracking_parent_run,
        run_id=run_id, tags={"pac.stage": stage}, enabled=rank == 0,
    )
    total_params, _ = parameter_counts(cfg.model)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_file, json.dumps({"run_id": tracker.run_id, "precision": precision,
                                                "threads": threads}))
        save_config(cfg, out_dir / "config.yaml")
        tracker.log_params(
            cfg.flat()
            | {f"data_version.{k}": v for k, v in version.items()}
            | {
                "scale": cfg.model.scale,
                "num_params": total_params,
                "zero_stage": t.zero_stage,
                "world_size": world_size,
                "micro_batch": layout.micro_batch,
                "grad_accumulation": layout.accumulation,
                "precision": precision,
                "threads": threads,
                "device": device.type,
                "git_commit": git_commit(),
                "init_from": str(init_from or ""),
            }
        )
        tracker.log_artifact(out_dir / "config.yaml")
        if run_id is None:  # a resumed run has its dataset inputs already
            tracker.log_datasets(version)
        if start:  # the continued run says where it picked up
            tracker.set_tags({"pac.resumed_from_update": start})

    # 5. Data: this rank's share of every update from `start` on.
    tokenizer = tokenizer_path(root)
    sampler = TrajectorySampler(
        cfg, EpisodeStore(store_root(root)),
        TaskTokenizer.load(tokenizer, cfg.model.num_text_tokens), seed=cfg.data.seed,
    )
    batches = make_dataloader(sampler, layout.per_rank, start, rank, world_size,
                              cfg.data.sampler_workers)

    # 6. Resume the state (engine, theta', the loss's generator, RNGs) and train.
    if start:
        checkpoints.load(engine, found, target, rank, generator, run_env)
        if rank == 0:
            print(f"pac train: resuming from {found.path} (update {start})")
    flops_per_update = training_flops_per_update(cfg)  # App. E.2, for MFU
    # MFU against the measured matmul peak of the precision in use (bf16 runs: the bf16 peak)
    peak = (measure_matmul_peak(device.type, dtype=precision_dtype(precision)) * world_size
            if rank == 0 else 0.0)
    params = [p for p in engine.module.parameters() if p.requires_grad]
    history: list[dict[str, float]] = []
    sums: dict[str, torch.Tensor | float] = {}  # on the device until the window is logged
    last = {}
    window_start, window_steps = time.perf_counter(), 0
    ckpt = None
    from pac.train import periodic_eval

    points_file = out_dir / periodic_eval.POINTS_FILE
    points = [r for r in periodic_eval.read_points(points_file) if int(r["step"]) <= start]
    horizons = task_horizons(sampler.store, (g.name for g in cfg.data.groups))

    def evaluate_point(done: int) -> float:
        """Evaluate theta after `done` updates (rank 0; every rank gathers under ZeRO-3), add
        the point to eval_points.csv and MLflow; returns the seconds it took."""
        evaluating = time.perf_counter()
        with periodic_eval.preserved_rng(device):
            copy = (make_target(lambda: PerceiverActorCritic(cfg.model),
                                torch.device("cpu"), torch.float32) if rank == 0 else None)
            copy_master_weights(engine, copy)  # every rank takes part in the gathering
            if rank == 0:
                scores = periodic_eval.evaluate_now(cfg, copy, out_dir, done, tokenizer,
                                                    horizons)
                point = periodic_eval.point_row(cfg, out_dir.name, total_params, done,
                                                done * flops_per_update, scores)
                tracker.log_metrics(periodic_eval.mlflow_metrics(point), step=done)
                points.append(point)
                periodic_eval.write_points(points_file, points)
            del copy
        dist.barrier()
        return time.perf_counter() - evaluating

    # A run killed between a checkpoint and the evaluation of the same update resumes from
    # that checkpoint without the point: it is evaluated first (rank 0 decides for all ranks).
    missing = [bool(start and periodic_eval.is_point(start, t.eval_every, t.steps)
                    and not any(int(r["step"]) == start for r in points))]
    if world_size > 1:
        dist.broadcast_object_list(missing, src=0)

    from pac.progress import progress

    bar = progress(t.steps, start, "pac train", "update", enabled=rank == 0)
    try:
        if missing[0]:
            evaluate_point(start)
        for step, batch in zip(range(start, t.steps), batches):
            engine.train()
            micro_batches = split(batch.to(device), layout.micro_batch)
            for i, micro in enumerate(micro_batches):
                loss, terms = engine(micro, target, step)
                engine.backward(loss)
                if i == len(micro_batches) - 1 and t.zero_stage == 0:
                    gnorm = grad_norm(params)  # ZeRO-0: after the all-reduce, before clipping
                engine.step()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v / len(micro_batches)
            if t.zero_stage > 0:
                gnorm = float(engine.get_global_grad_norm())
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + gnorm
            window_steps += 1
            if is_target_update(step, cfg.loss.target_update_period):
                refresh_target(engine.module.model, target)

            done = step + 1
            if done % t.log_every == 0 or done == t.steps:
                metrics = mean_across_ranks(read_metrics(sums, window_steps), world_size, device)
                elapsed = time.perf_counter() - window_start
                steps_per_s = window_steps / elapsed
                metrics |= {
                    "lr": learning_rate(step, t),
                    "steps_per_s": steps_per_s,
                    "samples_per_s": steps_per_s * t.global_batch,
                    "mfu": flops_per_update * steps_per_s / peak if peak else 0.0,
                }
                if not all(math.isfinite(v) for v in metrics.values()):
                    raise FloatingPointError(f"non-finite metrics at update {done}: {metrics}")
                tracker.log_metrics(metrics, step=done)
                history.append({"step": done, **metrics})
                last = metrics
                bar.set_postfix(loss=f"{metrics['loss/total']:.4f}", lr=f"{metrics['lr']:.2e}")
                sums, window_start, window_steps = {}, time.perf_counter(), 0
            bar.update(1)
            if done % t.checkpoint_every == 0 or done == t.steps:
                saving = time.perf_counter()
                ckpt = checkpoints.save(engine, ckpt_root, done, target, rank, generator,
                                        run_env)
                window_start += time.perf_counter() - saving  # samples/s: training time only
            if periodic_eval.is_point(done, t.eval_every, t.steps):
                window_start += evaluate_point(done)
    except KeyboardInterrupt:
        tracker.finish("KILLED")
        raise
    except BaseException:
        tracker.finish("FAILED")
        raise
    finally:
        bar.close()

    # 7. Export: theta (gathered) as a plain inference checkpoint + MLflow artefacts.
    from pac.checkpoint import save_inference_checkpoint

    if ckpt is None:  # resumed a run that had already finished
        ckpt = checkpoints.find_latest(ckpt_root).path
    policy_dir = out_dir / POLICY_DIR
    del target
    final = (make_target(lambda: PerceiverActorCritic(cfg.model), torch.device("cpu"),
                         torch.float32) if rank == 0 else None)
    copy_master_weights(engine, final)  # fp32 theta: the weights periodic evaluation scores
    if rank == 0:
        save_inference_checkpoint(final, cfg, policy_dir, tokenizer, horizons)
        atomic_write_text(out_dir / METRICS_FILE, json.dumps(last, indent=1, sort_keys=True))
        tracker.log_artifact(out_dir / METRICS_FILE)
        tracker.log_artifacts(ckpt, f"checkpoints/{ckpt.name}")
        tracker.log_policy(policy_dir)
        tracker.finish()
    dist.barrier()
    return TrainResult(out_dir, ckpt, policy_dir, tracker.run_id, last, history, start, precision)
