"""Simulation evaluation of a PAC policy: the paper's tables (Tables 1, 7, 13, 18).

``evaluate(cfg, checkpoint_dir)`` runs ``eval.episodes_per_task`` dm_control episodes per task in
worker processes (each loads the checkpoint once) and reports, per task, per domain and over all
tasks: mean return, % of expert return with a standard-error 95% CI, and the success rate with a
Wilson score interval (alpha_W = 0.05, :mod:`pac.evaluation.stats`). Held-out ("unseen") tasks,
``eval.held_out_tasks``, are reported in their own section.

% of expert follows Reed et al. (2022), the paper's footnote 3:
``100 (R - R_random) / (R_expert - R_random)``. R_expert is ``eval.expert_returns[task]`` when
given, else measured with the scripted expert behaviour policy through this same harness;
R_random is measured with the uniform random policy. Reference episodes use their own seeds
(independent of the evaluated episodes) and are cached in ``references.json``.

Horizon: each task runs over the episode length of the data the policy was trained on
(:func:`eval_horizons`: ``eval.max_steps`` when set, else the checkpoint's ``horizons.json``,
else ``data.episode_steps``); its references run over the same horizon (part of their cache
key), and the tables, ``metrics.json`` and the MLflow params record it.

Outputs in ``out_dir``: ``results.csv``, ``results.md`` (paper layout), ``metrics.json`` (for
``dvc metrics show``), ``episodes.csv``, ``references.json`` and ``videos/*.gif``: per task a
success and a failure episode (``eval.videos_per_task``), replayed and rendered at 160x160 after
the evaluation; under a parent MLflow run also ``mlflow_run.json``, the runs it opened, which a
rerun into the folder continues. The same seed gives the same tables (episodes are seeded by
task and index, never by worker; every worker and the in-process path run torch on one thread).

This module runs the episodes and writes the outputs; the rows and tables are
:mod:`pac.evaluation.tables`, the videos :mod:`pac.evaluation.videos`, the episode loop and the
policies :mod:`pac.evaluation.rollout`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pac.config import PACConfig
from pac.evaluation.tables import (
    METRIC_KEYS,
    _ci,
    _csv,
    _finite,
    horizon_label,
    markdown_table,
    metrics_dict,
    rounded,
    summarise_results,
)
from pac.evaluation.videos import VIDEO_SIZE, _write_gif, choose_episodes, video_label, video_name
from pac.io import atomic_write_text
from pac.tasks import TASKS

POLICIES = ("checkpoint", "expert", "random")
REFERENCE_SEED_OFFSET = 7_919  # reference episodes never share seeds with evaluated ones


@dataclass(frozen=True)
class PolicySpec:
    """What acts in the episodes: the network of a checkpoint or a scripted reference policy."""

    kind: str  # checkpoint | expert | random
    checkpoint_dir: str | None = None
    decode: str = "argmax"
    num_candidates: int = 10
    precision: str = "fp32"


@dataclass(frozen=True)
class Job:
    policy: PolicySpec
    task: str
    episode: int
    seed: int
    max_steps: int
    video: str | None = None  # replay with rendering, write the episode's gif in this folder


@dataclass
class EvalResult:
    out_dir: Path
    rows: list[dict[str, Any]]  # one per task / domain / section, as in results.csv
    metrics: dict[str, Any]  # metrics.json
    videos: list[Path] = field(default_factory=list)
    inference_hz: float = math.nan  # policy steps per second at batch 1 (network only)
    episodes_per_s: float = math.nan
    mlflow_run_id: str | None = None

    @property
    def table(self) -> str:
        return (self.out_dir / "results.md").read_text()


def eval_horizons(
    cfg: PACConfig, tasks: list[str], recorded: dict[str, int] | None = None
) -> dict[str, tuple[int, str]]:
    """{task: (control steps per evaluated episode, where that number comes from)}.

    ``eval.max_steps`` > 0 overrides every task ("eval.max_steps"); else a task whose simulator
    fixes its episode length (an OGBench env's time limit, ``TaskSpec.episode_steps``) has that
    ("simulator"); else a task's horizon is `recorded[task]`: the longest episode of that task
    in the store the policy was trained on (a checkpoint's ``horizons.json``,
    :func:`pac.checkpoint.load_checkpoint_horizons`) ("data"); else (scripted policies,
    held-out tasks the data lacks, checkpoints without the file) ``data.episode_steps``
    ("data.episode_steps"). A policy trained on 1000-step
    recordings is thus scored over 1000 steps, not over the 100 of the generated data.
    ``eval.expert_returns`` are taken as given: they must be returns at the horizon in use.
    """
    if cfg.eval.max_steps:
        return {t: (cfg.eval.max_steps, "eval.max_steps") for t in tasks}
    recorded = recorded or {}
    own = {t: TASKS[t].episode_steps for t in tasks if t in TASKS and TASKS[t].episode_steps}
    return {t: (own[t], "simulator") if t in own else (recorded[t], "data") if t in recorded
            else (cfg.data.episode_steps, "data.episode_steps") for t in tasks}


def episode_seed(base: int, task: str, episode: int) -> int:
    """A seed fixed by (base seed, task, episode index) alone: workers never change it."""
    return (base * 1_000_003 + zlib.crc32(task.encode()) * 1_009 + episode) % (2**31 - 1)


# --- worker side ----------------------------------------------------------------------------------

_SERVERS: dict[PolicySpec, tuple[tuple[int, int], Any]] = {}  # per process: spec -> (stamp, server)
_ENVS: dict[tuple[str, int], Any] = {}  # per process: one environment per (task, steps)


def _init_worker(declared: dict | None = None) -> None:
    """One thread per worker; a spawned worker also learns the params' declared tasks."""
    import torch

    torch.set_num_threads(1)  # batch-1 inference: one thread per worker, no oversubscription
    if declared:
        TASKS.declare(declared)


def _policy(spec: PolicySpec, task: str, seed: int):
    from pac.checkpoint import WEIGHTS
    from pac.evaluation.rollout import PolicyServer, expert_policy, random_policy

    if spec.kind == "expert":
        return expert_policy(task, seed), None
    if spec.kind == "random":
        return random_policy(task, seed), None
    weights = os.stat(Path(spec.checkpoint_dir) / WEIGHTS)
    stamp = (weights.st_mtime_ns, weights.st_size)  # a rewritten checkpoint is loaded again
    if spec not in _SERVERS or _SERVERS[spec][0] != stamp:
        server = PolicyServer.load(spec.checkpoint_dir, spec.decode, spec.num_candidates,
                                   precision=spec.precision)
        _SERVERS[spec] = (stamp, server)
    server = _SERVERS[spec][1]
    return server.policy(task, seed), server


def release_checkpoint(checkpoint_dir: str | Path) -> None:
    """Forget this process's loaded networks of `checkpoint_dir` (an in-process evaluation of a
    checkpoint that is deleted afterwards, e.g. during training, frees its model)."""
    for spec in [s for s in _SERVERS if s.checkpoint_dir == str(checkpoint_dir)]:
        del _SERVERS[spec]


def episode_env(task: str, seed: int, max_steps: int) -> Any:
    """The environment of `task` seeded with `seed`: compiled once per process, then re-seeded.

    Re-seeding the task's RandomState before ``reset()`` gives the same episode as
    ``make_env(task, seed, max_steps)`` (tested) without recompiling the MJCF model (~0.1 s).
    """
    from pac.envs import make_env

    key = (task, max_steps)
    if key not in _ENVS:
        _ENVS[key] = make_env(task, seed, max_steps)
    env = _ENVS[key]
    env.task.random.seed(seed)
    return env


def _run_job(job: Job) -> dict[str, Any]:
    """One episode (in a worker process or in-process): its numbers and optional video."""
    from pac.evaluation.rollout import run_episode

    policy, server = _policy(job.policy, job.task, job.seed)
    env = episode_env(job.task, job.seed, job.max_steps)
    start = len(server.latencies) if server else 0
    ep = run_episode(env, policy, job.task, job.max_steps, record_frames=job.video is not None,
                     frame_size=VIDEO_SIZE)
    if job.video is not None:
        label = video_label(job.task, job.episode, ep.total_return, ep.success)
        name = video_name(job.task, job.episode, ep.total_return, ep.success)
        _write_gif(Path(job.video) / name, ep.frames, label)
    return {
        "task": job.task,
        "episode": job.episode,
        "seed": job.seed,
        "return": ep.total_return,
        "success": ep.success,
        "steps": ep.length,
        "horizon": job.max_steps,
        "latencies": server.latencies[start:] if server else [],
    }


class Runner:
    """Runs episode jobs in `workers` spawned processes (1: in this process), results in order.

    One pool serves every call (references, then the evaluated policy), so workers start and
    load the checkpoint once. Use as a context manager.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = None

    def __enter__(self) -> Runner:
        import torch

        if self.workers > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            ctx = mp.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.workers, ctx, _init_worker,
                                             (TASKS.declared,))
        else:
            self._threads = torch.get_num_threads()
            _init_worker()
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        else:
            torch.set_num_threads(self._threads)

    def __call__(self, jobs: list[Job], desc: str = "") -> list[dict[str, Any]]:
        """Results in job order; with `desc`, one progress line per ~10 s of episodes."""
        from pac.progress import progress

        bar = progress(len(jobs), desc=desc, unit="episode", enabled=bool(desc))
        results = []
        for result in (map(_run_job, jobs) if self._pool is None
                       else self._pool.map(_run_job, jobs)):
            results.append(result)
            bar.update(1)
        bar.close()
        return results


# --- references -----------------------------------------------------------------------------------


def _reference_key(task: str, episodes: int, max_steps: int, seed: int) -> str:
    import pac.envs

    code = hashlib.sha256(Path(pac.envs.__file__).read_bytes()).hexdigest()[:12]
    return f"{task}|episodes={episodes}|steps={max_steps}|seed={seed}|envs={code}"


def _read_cache(path: Path) -> dict[str, Any]:
    """The references cache; an unreadable one is only a cache: it is rebuilt, not trusted."""
    try:
        stored = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    if not isinstance(stored, dict):
        return {}
    ok = all(isinstance(v, dict) and isinstance(v.get("random"), float) for v in stored.values())
    return stored if ok else {}


def reference_returns(
    tasks: list[str],
    episodes: int,
    max_steps: int | dict[str, int],
    seed: int,
    run: Runner,
    cache: Path,
    given: dict[str, float] | None = None,
) -> dict[str, dict[str, Any]]:
    """{task: {"random": R_random, "expert": R_expert or None, "expert_source": ...}}.

    R_random: the uniform random policy; R_expert: `given` (params) or the scripted expert, both
    measured through this harness over `episodes` episodes of `max_steps` steps (one number, or
    one per task: the evaluated policy's horizon) with their own seeds, cached in `cache`
    (keyed by task, episodes, steps, seed and the pac.envs source: each horizon has its own).
    """
    given = given or {}
    steps = max_steps if isinstance(max_steps, dict) else dict.fromkeys(tasks, max_steps)
    stored = _read_cache(cache)
    ref_seed = seed + REFERENCE_SEED_OFFSET
    keys = {t: _reference_key(t, episodes, steps[t], ref_seed) for t in tasks}
    jobs = [
        Job(PolicySpec(kind), task, i, episode_seed(ref_seed, task, i), steps[task])
        for task in tasks
        if keys[task] not in stored
        for kind in ("random", "expert")
        if kind == "random" or TASKS[task].scripted_expert
        for i in range(episodes)
    ]
    results = run(jobs) if jobs else []
    for task in dict.fromkeys(j.task for j in jobs):
        mean = {}
        for kind in ("random", "expert"):
            rs = [
                r["return"]
                for j, r in zip(jobs, results)
                if j.task == task and j.policy.kind == kind
            ]
            mean[kind] = float(np.mean(rs)) if rs else None
        source = "scripted expert" if mean["expert"] is not None else None
        stored[keys[task]] = {**mean, "expert_source": source}
    if jobs:
        atomic_write_text(cache, json.dumps(stored, indent=2, sort_keys=True))
    out = {t: dict(stored[keys[t]]) for t in tasks}
    for task in tasks:
        if task in given:
            out[task].update(expert=float(given[task]), expert_source="params")
    return out


# --- the entry point ------------------------------------------------------------------------------


def default_tasks(cfg: PACConfig) -> list[str]:
    """The training tasks of `cfg` (every data group, in order) then eval.held_out_tasks."""
    tasks = [t for g in cfg.data.groups for t in g.tasks] + list(cfg.eval.held_out_tasks)
    return list(dict.fromkeys(tasks))


def split_by_simulator(tasks: list[str]) -> tuple[list[str], list[str]]:
    """(tasks rolled out in their simulator, tasks without one: evaluated offline on held-out
    episodes, :mod:`pac.evaluation.offline`); unknown names go with the first (and fail there
    with the known tasks named)."""
    offline = [t for t in tasks if t in TASKS and not TASKS[t].simulator]
    return [t for t in tasks if t not in offline], offline


def _check_tasks(tasks: list[str], model_cfg: Any | None) -> None:
    for task in tasks:
        spec = TASKS.resolve(task)
        if not spec.simulator:
            raise ValueError(f"task {task} has no simulator (a robot's data, embodiment"
                             f" {spec.embodiment}): it cannot be rolled out; `pac eval`"
                             " evaluates it offline on held-out episodes"
                             " (pac.evaluation.offline)")
        if model_cfg is not None and (
            spec.num_features > model_cfg.num_proprio or spec.num_actions > model_cfg.num_actions
        ):
            raise ValueError(
                f"task {task} needs num_proprio>={spec.num_features} and num_actions>="
                f"{spec.num_actions}; the checkpoint's model has {model_cfg.num_proprio}/"
                f"{model_cfg.num_actions}"
            )


def evaluate(
    cfg: PACConfig,
    checkpoint_dir: str | Path | None = None,
    tasks: list[str] | None = None,
    *,
    policy: str = "checkpoint",
    out_dir: str | Path | None = None,
    track: bool = True,
    tracking_parent_run: str | None = None,
    source: str | None = None,
    run_name: str | None = None,
) -> EvalResult:
    """Evaluate a checkpoint (or the scripted `expert` / `random` policy) on `tasks`.

    Settings come from ``cfg.eval`` (episodes, workers, decode, seed, videos, held-out tasks);
    the model and its training tasks from the checkpoint, the horizon per task from
    :func:`eval_horizons`. Everything is checked before the first episode runs. `source`
    names where the checkpoint came from (e.g. an MLflow URI) in the MLflow params; default:
    `checkpoint_dir`. `run_name` names the MLflow run (default ``eval-<domain>``).
    """
    from pac.checkpoint import TOKENIZER, load_checkpoint_config, load_checkpoint_horizons

    e = cfg.eval
    if policy not in POLICIES:
        raise ValueError(f"policy {policy!r} is not one of {', '.join(POLICIES)}")
    ckpt_cfg = None
    if policy == "checkpoint":
        if checkpoint_dir is None:
            raise ValueError("policy=checkpoint needs checkpoint_dir (an inference checkpoint)")
        ckpt_cfg = load_checkpoint_config(checkpoint_dir)  # raises if it is not a checkpoint
        if not (Path(checkpoint_dir) / TOKENIZER).is_file():
            raise FileNotFoundError(f"{checkpoint_dir}: the checkpoint has no {TOKENIZER}")
    if tasks is None:
        tasks = default_tasks(ckpt_cfg or cfg)
        tasks += [t for t in e.held_out_tasks if t not in tasks]
    tasks = list(dict.fromkeys(tasks))
    if not tasks:
        raise ValueError("no tasks to evaluate")
    _check_tasks(tasks, ckpt_cfg.model if ckpt_cfg else None)
    if policy == "expert":
        missing = [t for t in tasks if not TASKS[t].scripted_expert]
        if missing:
            raise ValueError(f"no scripted expert for {missing}")
    chosen = eval_horizons(
        cfg, tasks, load_checkpoint_horizons(checkpoint_dir) if policy == "checkpoint" else None
    )
    max_steps = {t: n for t, (n, _) in chosen.items()}
    out = Path(out_dir or e.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if e.videos_per_task or (ckpt_cfg and ckpt_cfg.model.num_images):
        _check_rendering()

    spec = PolicySpec(
        policy, str(checkpoint_dir) if policy == "checkpoint" else None, e.decode,
        e.num_candidates, e.precision,
    )
    videos_dir = out / "videos"  # always present (a DVC output), possibly empty
    videos_dir.mkdir(exist_ok=True)
    for stale in videos_dir.glob("*.gif"):  # videos of an earlier evaluation in this folder
        stale.unlink()
    jobs = [
        Job(spec, task, i, episode_seed(e.seed, task, i), max_steps[task])
        for task in tasks
        for i in range(e.episodes_per_task)
    ]
    with Runner(e.workers) as run:
        refs = reference_returns(
            tasks, e.episodes_per_task, max_steps, e.seed, run, out / "references.json",
            e.expert_returns,
        )
        start = time.perf_counter()
        results = run(jobs, desc=f"pac eval {','.join(tasks)}")
        wall = time.perf_counter() - start
        # Videos: replay only the chosen episodes (same seed, same episode) with rendering.
        replays = [Job(spec, r["task"], r["episode"], r["seed"], max_steps[r["task"]],
                       str(videos_dir))
                   for r in choose_episodes(results, e.videos_per_task)]
        if replays:
            run(replays, desc="pac eval videos")

    latencies = [x for r in results for x in r["latencies"]]
    timing = {
        "episodes_per_s": len(jobs) / wall,
        "env_steps_per_s": sum(r["steps"] for r in results) / wall,
        "inference_hz": len(latencies) / float(np.sum(latencies)) if latencies else math.nan,
        "inference_ms_p50": 1e3 * float(np.median(latencies)) if latencies else math.nan,
        "inference_calls": float(len(latencies)),
        "workers": float(e.workers),
    }
    title = f"{policy} {Path(checkpoint_dir).name}" if policy == "checkpoint" else policy
    rows, metrics = _write_outputs(cfg, out, title, results, refs, timing)
    result = EvalResult(
        out_dir=out,
        rows=rows,
        metrics=metrics,
        videos=sorted(videos_dir.glob("*.gif")),
        inference_hz=timing["inference_hz"],
        episodes_per_s=timing["episodes_per_s"],
    )
    if track:
        source = source or spec.checkpoint_dir or ""
        result.mlflow_run_id = _log_to_mlflow(
            cfg, result, spec, source, tracking_parent_run,
            ",".join(sorted({src for _, src in chosen.values()})), run_name,
        )
    return result


def _write_outputs(
    cfg: PACConfig,
    out: Path,
    title: str,
    results: list[dict[str, Any]],
    refs: dict[str, dict[str, Any]],
    timing: dict[str, float],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """results.md / results.csv / metrics.json / episodes.csv for `results` (atomic writes)."""
    e = cfg.eval
    rows = summarise_results(results, refs, e.held_out_tasks)
    metrics = metrics_dict(rows, timing)
    horizons = {r["task"]: int(r["horizon"]) for r in results}
    metrics["horizon"] = dict(sorted(horizons.items()))
    header = (
        f"## PAC evaluation: {title} ({e.episodes_per_task} episodes per task,"
        f" horizon {horizon_label(horizons)} steps, decode={e.decode}, {e.precision},"
        f" seed={e.seed})"
    )
    atomic_write_text(out / "results.md", markdown_table(rows, header))
    atomic_write_text(out / "results.csv", _csv(rows))
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    episode_rows = [{k: v for k, v in r.items() if k != "latencies"} for r in results]
    atomic_write_text(out / "episodes.csv", _csv(episode_rows))
    return rows, metrics


def merge_evaluations(
    eval_dirs: Iterable[str | Path], out_dir: str | Path, cfg: PACConfig
) -> EvalResult:
    """One table from several evaluate() folders over disjoint tasks (e.g. one per domain,
    run in parallel by the flow): episodes are pooled again, so domain and "all" rows carry the
    same statistics as a single evaluation would."""
    results: list[dict[str, Any]] = []
    refs: dict[str, dict[str, Any]] = {}
    videos: list[Path] = []
    calls = latency = episodes = seconds = 0.0
    for folder in map(Path, eval_dirs):
        for name in ("episodes.csv", "results.csv", "metrics.json"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder}: not an evaluation folder (no {name})")
        with open(folder / "results.csv") as fh:
            for row in csv.DictReader(fh):
                if row["level"] != "task":
                    continue
                if row["name"] in refs:
                    raise ValueError(f"task {row['name']} is in more than one evaluation folder")
                expert = float(row["expert_return"])
                refs[row["name"]] = {
                    "expert": None if math.isnan(expert) else expert,
                    "random": float(row["random_return"]),
                }
        with open(folder / "episodes.csv") as fh:
            these = [
                {"task": r["task"], "episode": int(r["episode"]), "seed": int(r["seed"]),
                 "return": float(r["return"]), "success": r["success"] == "True",
                 "steps": int(r["steps"]), "horizon": int(r["horizon"])}
                for r in csv.DictReader(fh)
            ]
        results += these
        t = json.loads((folder / "metrics.json").read_text())["timing"]
        episodes, seconds = episodes + len(these), seconds + len(these) / t["episodes_per_s"]
        if t.get("inference_hz"):  # null for scripted policies
            calls += t["inference_calls"]
            latency += t["inference_calls"] / t["inference_hz"]
        videos += sorted((folder / "videos").glob("*.gif"))
    if not results:
        raise ValueError("no evaluation folders to merge")
    timing = {
        "episodes_per_s": episodes / seconds,  # per evaluation (the folders may run in parallel)
        "inference_hz": calls / latency if latency else math.nan,
        "inference_calls": calls,
    }
    out = Path(out_dir)
    rows, metrics = _write_outputs(cfg, out, "merged", results, refs, timing)
    return EvalResult(out, rows, metrics, videos, timing["inference_hz"], timing["episodes_per_s"])


def _check_rendering() -> None:
    """Fail before any episode when videos or image inputs are asked for but cannot render."""
    from pac.envs import make_env, render

    render(make_env("point_mass.easy", 0, 2), size=8)


def _flatten(d: dict[str, Any], prefix: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}/{k}"))
        elif v is not None:
            out[f"{prefix}/{k}"] = float(v)
    return out


def _row_metrics(row: dict[str, Any]) -> dict[str, float]:
    """A table row under plain keys (success_rate, success_low, ..., pct_expert, episodes): the
    same keys on every evaluation run, so MLflow charts and tables compare tasks and rounds."""
    return {k: float(row[k]) for k in METRIC_KEYS if _finite(row[k]) is not None}


def _row_tags(row: dict[str, Any]) -> dict[str, str]:
    """The intervals as readable run tags (a runs table shows them next to the metrics)."""
    return {"pac.success": _ci(row["success_rate"], row["success_low"], row["success_high"]),
            "pac.pct_expert": _ci(row["pct_expert"], row["pct_expert_low"],
                                  row["pct_expert_high"]),
            "pac.episodes": str(row["episodes"])}


def log_videos(cfg: PACConfig, run_id: str, videos: Iterable[Path],
               path: str = "evaluation/videos") -> list[str]:
    """Log review videos (e.g. every domain's, merged) to an existing MLflow run, such as the
    flow's parent run, under `path`; returns the artifact paths. The file names carry task,
    episode, outcome and return (:func:`pac.evaluation.videos.video_name`)."""
    from pac.tracking import Tracker

    tracker = Tracker(cfg, "", run_id=run_id)
    logged = []
    for video in videos:
        tracker.log_artifact(video, path)
        logged.append(f"{path}/{Path(video).name}")
    return logged


#: The MLflow runs an evaluation folder's evaluation opened, by name, with their parent run:
#: an evaluation rerun into the same folder under the same parent (a resumed flow step, a
#: resumed RLFT round) continues them by id instead of opening second ones.
EVAL_RUN_FILE = "mlflow_run.json"


def _claimed_runs(out: Path, parent: str | None) -> dict[str, Any]:
    """The record of `out` when it belongs to `parent`, else an empty one for `parent`
    (no parent: a new evaluation, never a continuation)."""
    state: dict[str, Any] = {"parent": parent, "runs": {}}
    path = out / EVAL_RUN_FILE
    if parent is None or not path.is_file():
        return state
    try:
        recorded = json.loads(path.read_text())
    except ValueError:
        return state
    return recorded if recorded.get("parent") == parent else state


def _claim_run(cfg: PACConfig, out: Path, state: dict[str, Any], name: str, parent: str | None,
               tags: dict[str, str]):
    """(tracker, continued): the recorded run `name` reopened by id, or a new one recorded in
    `out`/mlflow_run.json at once. A RUNNING `name` child of `parent` besides it (one a killed
    attempt opened and had not yet recorded) is ended KILLED, tagged pac.continued_in.
    An evaluation without a parent run (state["parent"] None) records and claims nothing."""
    from pac.tracking import Tracker, end_stale_runs

    run_id = state["runs"].get(name)
    tracker = Tracker(cfg, name, parent_run_id=parent, run_id=run_id, tags=tags)
    if state["parent"] is None:
        return tracker, False
    if run_id:
        tracker.set_tags(tags)
    else:
        state["runs"][name] = tracker.run_id
        atomic_write_text(out / EVAL_RUN_FILE, json.dumps(state, indent=1))
    end_stale_runs(cfg, parent, name, tracker.run_id)
    return tracker, run_id is not None


def _log_to_mlflow(
    cfg: PACConfig, result: EvalResult, spec: PolicySpec, source: str, parent: str | None,
    horizon_source: str, run_name: str | None = None,
) -> str | None:
    """One MLflow run ``eval-<domain>`` (its "all" row under plain metric keys, its tables and
    videos) and, when it covers several tasks, one nested run ``eval-<task>`` per task. The
    horizon used is a param of both (``eval.horizon``, ``eval.horizon_source``).

    Under a parent run the runs are recorded in ``mlflow_run.json`` as soon as they exist, and
    a rerun into the same folder under the same parent continues them by id (params and
    metrics already logged are kept): a kill while they are logged, then a resume, leaves one
    FINISHED run of each name (:func:`_claim_run`)."""
    tasks = [r for r in result.rows if r["level"] == "task"]
    domains = sorted({TASKS[r["name"]].domain for r in tasks})
    name = run_name or (f"eval-{domains[0]}" if len(domains) == 1 else "eval-all")
    every = next(r for r in result.rows if r["level"] == "all")
    tags = {"pac.stage": "evaluate", "pac.domain": ",".join(domains),
            "pac.tasks": ",".join(r["name"] for r in tasks), "pac.policy": spec.kind}
    state = _claimed_runs(result.out_dir, parent)
    tracker, again = _claim_run(cfg, result.out_dir, state, name, parent,
                                tags | _row_tags(every))
    tracker.log_params(
        {k: v for k, v in cfg.flat().items() if k.startswith("eval.")}
        | {"eval.policy": spec.kind, "eval.checkpoint": source,
           "eval.horizon": horizon_label(result.metrics["horizon"]),
           "eval.horizon_source": horizon_source}
    )
    tracker.log_metrics(rounded(_row_metrics(every)
                                | _flatten(result.metrics["timing"], "timing")),
                        step=0, only_new=again)
    for name in ("results.md", "results.csv", "metrics.json", "episodes.csv", "references.json"):
        tracker.log_artifact(result.out_dir / name, "eval")
    for video in result.videos:
        tracker.log_artifact(video, "eval/videos")
    if len(tasks) > 1:
        for row in tasks:
            task_run, again = _claim_run(
                cfg, result.out_dir, state, f"eval-{row['name']}", tracker.run_id, {
                    "pac.stage": "evaluate", "pac.domain": TASKS[row["name"]].domain,
                    "pac.task": row["name"], "pac.section": row["section"]} | _row_tags(row))
            task_run.log_params({"eval.horizon": str(row["horizon"])})
            task_run.log_metrics(rounded(_row_metrics(row)), step=0, only_new=again)
            task_run.finish()
    tracker.finish()
    return tracker.run_id
