"""The laptop Table 1: offline RL against behaviour cloning on low-quality data (§4.2, Table 1).

For each task, one low-quality dataset is generated with the project's own graded behaviour
policy (``--quality``, default 0.42: about 28% success, the CHEF:sim analogue of Table 6). With
``--suboptimal random`` (the default) the rest is sticky uniform noise, so the data's mode is the
expert's and BC's argmax filters the noise out; with ``--suboptimal weak`` a fraction
``--quality`` of the episodes is driven by the noisy expert and the rest by the task's timid
controller (``pac.envs.weak_action``: 20-30% of expert alone), the data's mode. Every
arm trains on exactly the same episodes, with the same number of updates, batch and seeds, and
is evaluated with one protocol (``pac.evaluation``: % of expert return with standard-error 95%
intervals, success with Wilson intervals, on the same fixed episode seeds):

* ``bc``           alpha = 1, beta = 0: behaviour cloning on all data;
* ``filtered_bc``  bc on the successful episodes only (App. C.5);
* ``bc_q``         alpha = 1, beta = 38: BC plus a Q-function the policy never uses;
* ``pac``          alpha = 0.75, beta = 38 (eq. 11);
* ``alpha_pac``    the low-quality group at alpha = 0, beta = 1900 (App. C.5's CHEF values);
* ``pac_v``        eq. 14 at App. C.5's alpha = 0, beta = 38, eta = 1e-4 (presets/pac_v.yaml).

Public peers (d3rlpy's TD3+BC and IQL on the same transitions, in the benchmark's own
environment) run from ``benchmarks/peers_d3rlpy.py`` on the same ``<out>/data``.

Every arm trains the same small Perceiver (``BENCH_MODEL``: D_Z 64, 2 latent blocks, 16 latents,
about 7 updates/s for BC on one core of the 2-core reference laptop; written out so the table
does not move with the defaults, it is the ``tiny`` scale of params/default.yaml since this table
chose it) and PAC arms use eta = 0.02 (``BENCH_ETA``, also the default's): on point_mass and
cartpole with this data the spread of Q over the 10 samples is 0.2-0.4, so eta = 0.1 leaves the
weights near uniform (ESS 7.7 of 10) while eta = 0.02 gives ESS 5-6 (measured, BENCHMARKS.md).
The target network is refreshed every ``BENCH_TARGET_PERIOD`` = 10 updates (the paper keeps
f_theta' = 100 over runs of millions of updates; 1,500 updates at 100 are 15 Bellman
iterations, fewer than the 1 / (1 - gamma) = 20-step horizon). Measured on the weak-controller
data (point_mass.easy + cartpole.balance, quality 0.3, one seed, argmax): PAC 60.0% of expert
at period 100, 60.2 at 25, 77.1 at 10 (point_mass.easy 22.8 / 21.7 / 55.3; BC 22.7), and the
critic ranked the expert's action above the data's in 53 / 61 / 59% of point_mass states.
The critic needs more than the default 1,500 updates on the weak-controller data: on
point_mass.easy (quality 0.3, three seeds) PAC went from 23.9-47.0% of expert at 1,500 updates to
41.5-85.3% at 6,000 (``--updates 6000``; pooled 67.8 against BC's 29.0), with Q ranking the
expert's action above the data's in 70-77% of states instead of 57% (``probe_critic.py``;
BENCHMARKS.md); at 10,000 updates 68.7-79.5% (pooled 73.3 against BC's 32.3). At dm_control's
own rate (dataset B, gamma 0.99, support [0, 100]) a value bin of Table 5's 101 is 1.0 wide
against a true per-step advantage of 0.02: with ``--set model.num_value_bins=401`` PAC reached
49.3% of expert against 33.3 with 101 bins and BC's 22.4 (three seeds, 3,000 updates).
Arms run ``--jobs`` at a time, one thread each. Per arm, intervals pool every evaluation episode
of every seed (% of expert: mean +- 1.96 SE; success: Wilson).

The critic's diagnostics are printed next to each PAC arm: the spread of Q over the N sampled
actions, the weights' effective sample size (N = uniform) and entropy (ln N = uniform).

    python benchmarks/bench_offline.py --out runs/bench_offline            # the full table
    python benchmarks/bench_offline.py --out runs/bench_offline --decodes argmax sample
        # each policy also as a sampled policy: BC sampled reproduces the data's quality
    python benchmarks/bench_offline.py --out runs/T1weak --suboptimal weak --quality 0.3 \
        --decodes argmax sample                       # data whose mode is the weak controller
    python benchmarks/bench_offline.py --out runs/T1native --suboptimal weak --quality 0.3 \
        --tasks point_mass.easy_native --episode-steps 1000 \
        --set loss.gamma=0.99 --set loss.value_max=100 \
        --set model.num_value_bins=401 --updates 3000       # dm_control's rate and episodes
    python benchmarks/bench_offline.py --out runs/T10 --suboptimal weak --quality 0.3 \
        --tasks point_mass.easy --arms bc pac --updates 10000  # the updates the critic needs
    python benchmarks/bench_offline.py --quick --out /tmp/bench_offline    # a 2-minute smoke run

Data from outside the project (``--store``): a data folder that ``pac ingest`` (and ``pac
tokenizer train``) wrote, e.g. benchmarks/heldout_sac_replay.py's replay buffer; every arm trains
on its group ``--group`` (tasks: the store's), nothing is generated. With ``--project-defaults``
the arms keep params/default.yaml's batch and target period (what a new user gets) instead of
the Table 1 values written out above; tasks without a scripted expert are scored by mean return
(and % of expert when ``--set eval.expert_returns={task: R}`` names a reference).

    python benchmarks/bench_offline.py --out runs/heldout/sac_arms \
        --store runs/heldout/sac_replay/data --group sac_replay --project-defaults \
        --updates 3000 --seeds 1 --eval-episodes 20 --jobs 1 --arms pac bc filtered_bc bc_q
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from pac.tasks import SUBOPTIMAL  # imports no simulator

ARMS = {
    "bc": ["loss.variant=bc", "loss.alpha=1.0", "loss.beta=0.0"],
    "filtered_bc": ["loss.variant=filtered_bc", "loss.alpha=1.0", "loss.beta=0.0"],
    "bc_q": ["loss.variant=bc_q", "loss.alpha=1.0"],
    "pac": ["loss.variant=pac"],
    "alpha_pac": ["loss.variant=alpha_pac"],
    "pac_v": ["loss.variant=pac_v", "loss.alpha=0.0", "loss.beta=38.0", "loss.eta=1e-4",
              "model.value_head=true"],
}
DIAGNOSTICS = ("q_spread", "weight_ess", "weight_entropy", "mean_q")
BENCH_MODEL = ["model.d_z=64", "model.num_blocks=2", "model.num_latents=16", "model.widening=1"]
BENCH_ETA = 0.02
# The batch of every Table 1 run: 32 windows of 5 steps (the laptop default then; it moved to
# 80 x 2 later, BENCHMARKS.md "Independent states per update"), written out like BENCH_MODEL.
BENCH_BATCH = ["data.trajectory_length=5", "train.global_batch=32"]
BENCH_TARGET_PERIOD = 10


def group_override(args: argparse.Namespace, arm: str) -> str:
    alpha_beta = ", alpha: 0.0, beta: 1900.0" if arm == "alpha_pac" else ""
    if args.store is not None:  # ingested data: the store's group as it is
        return (f"data.groups=[{{name: {args.group}, tasks: [{', '.join(args.tasks)}],"
                f" source: rollout{alpha_beta}}}]")
    noise = "" if args.action_noise is None else f", action_noise: {args.action_noise}"
    return (f"data.groups=[{{name: low_quality, tasks: [{', '.join(args.tasks)}],"
            f" quality: {args.quality}, suboptimal: {args.suboptimal},"
            f" episodes_per_task: {args.episodes}{noise}{alpha_beta}}}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for data, runs and results")
    ap.add_argument("--tasks", nargs="+", default=["point_mass.easy", "cartpole.balance"])
    ap.add_argument("--quality", type=float, default=0.42)
    ap.add_argument("--suboptimal", default="random", choices=SUBOPTIMAL,
                    help="the behaviour when not the expert: sticky uniform random actions (the"
                         " data's mode stays the expert's) or the task's weak controller")
    ap.add_argument("--episodes", type=int, default=60, help="episodes per task")
    ap.add_argument("--action-noise", type=float, default=None,
                    help="std of the per-step Gaussian on the behaviour's actions"
                         " (data.groups[].action_noise; default: 0.1 below quality 1, else 0)")
    ap.add_argument("--episode-steps", type=int, default=100)
    ap.add_argument("--updates", type=int, default=1500)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--eval-episodes", type=int, default=30, help="per task and seed")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra params for every arm, e.g. loss.target_update_period=25")
    ap.add_argument("--decodes", nargs="+", default=["argmax"],
                    choices=["argmax", "mean", "sample"],
                    help="evaluate every arm with each decoding of its policy (eval.decode)")
    ap.add_argument("--jobs", type=int, default=2, help="arms trained side by side")
    ap.add_argument("--quick", action="store_true", help="tiny budget: a smoke run")
    ap.add_argument("--store", type=Path, default=None,
                    help="a data folder written by `pac ingest` + `pac tokenizer train`:"
                         " train on it instead of generating (--tasks: the group's)")
    ap.add_argument("--group", default="rollouts", help="with --store: the store group")
    ap.add_argument("--project-defaults", action="store_true",
                    help="keep params/default.yaml's batch and target period (not Table 1's)")
    args = ap.parse_args()
    if args.quick:
        args.episodes, args.updates, args.seeds, args.eval_episodes = 6, 20, 1, 2
        args.episode_steps = 30

    from pac.config import load_config
    from pac.data import TaskTokenizer, store_root, tokenizer_path
    from pac.data.generate import generate_group

    out = args.out.resolve()
    data = out / "data"
    if args.store is not None:
        data = store_data(args)
    table1 = [] if args.project_defaults else [
        *BENCH_MODEL, *BENCH_BATCH, f"loss.eta={BENCH_ETA}",
        f"loss.target_update_period={BENCH_TARGET_PERIOD}"]
    base = [
        *table1,
        f"data.episode_steps={args.episode_steps}",
        f"eval.episodes_per_task={args.eval_episodes}", "eval.videos_per_task=0",
        "eval.workers=1", f"train.steps={args.updates}",
        f"train.checkpoint_every={args.updates}", f"train.log_every={max(1, args.updates // 20)}",
        f"tracking.uri=sqlite:///{out / 'mlflow.db'}", f"tracking.artifact_dir={out / 'mlruns'}",
        *args.set,
    ]
    group = group_override(args, "bc")
    cfg = load_config(overrides=[*base, group])
    if args.store is None and not (data / ".complete").exists():
        print(f"generating {len(args.tasks)} x {args.episodes} episodes, quality {args.quality},"
              f" suboptimal {args.suboptimal}")
        generate_group(cfg, "low_quality", store_root(data), workers=1, progress=False)
        TaskTokenizer.train(tokenizer_path(data), cfg.data.tokenizer_vocab,
                            cfg.data.tokenizer_type, num_tokens=cfg.model.num_text_tokens)
        (data / ".complete").write_text("")

    jobs = [(arm, seed) for seed in range(args.seeds) for arm in args.arms]
    work = [(out, data, args, base, arm, seed) for arm, seed in jobs]
    if args.jobs > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.jobs, maxtasksperchild=1) as pool:
            results = [r for rows in pool.starmap(run_arm, work, chunksize=1) for r in rows]
    else:
        results = [r for w in work for r in run_arm(*w)]
    done = out / "results.json"  # rows of earlier invocations on the same --out are kept
    earlier = json.loads(done.read_text()) if done.exists() else []
    fresh = {(r["arm"], r["seed"], r["decode"]) for r in results}
    results += [r for r in earlier
                if (r["arm"], r["seed"], r.get("decode", "argmax")) not in fresh]
    done.write_text(json.dumps(results, indent=1, default=float))
    given = cfg.eval.expert_returns
    print(data_table(data, args.tasks, out, given))
    for decode in dict.fromkeys(r.get("decode", "argmax") for r in results):
        rows = [r for r in results if r.get("decode", "argmax") == decode]
        print(f"decode: {decode}")
        print(arm_table(rows, [a for a in ARMS if any(r["arm"] == a for r in rows)], out, given))


def store_data(args: argparse.Namespace) -> Path:
    """The ingested data folder of --store, checked; --tasks become the group's tasks."""
    from pac.data import store_root, tokenizer_path
    from pac.data.store import EpisodeStore

    data = args.store.resolve()
    tasks = sorted({s.task for s in EpisodeStore(store_root(data)).shards
                    if s.group == args.group})
    if not tasks:
        raise SystemExit(f"error: --store {data}: no episodes in group {args.group!r}"
                         " (run `pac ingest LANDING --group NAME --data-root DIR`)")
    if not tokenizer_path(data).exists():
        raise SystemExit(f"error: --store {data}: no tokenizer (run `pac tokenizer train"
                         f" --root {data}`)")
    args.tasks = tasks
    return data


def run_arm(out: Path, data: Path, args: argparse.Namespace, base: list[str], arm: str,
            seed: int) -> list[dict]:
    """Train (or reuse) one arm with one seed and evaluate it once per decoding in
    ``args.decodes`` (the same fixed episode seeds); one row of results.json per decoding."""
    import torch

    from pac.config import load_config
    from pac.evaluation.evaluator import evaluate
    from pac.train import train

    torch.set_num_threads(1)  # arms run side by side, one core each
    run = out / "runs" / f"{arm}-seed{seed}"
    overrides = [*base, group_override(args, arm),
                 *ARMS[arm], f"train.seed={seed}", f"train.out_dir={run}",
                 f"tracking.uri=sqlite:///{run / 'mlflow.db'}"]  # one store per concurrent arm
    run.mkdir(parents=True, exist_ok=True)
    arm_cfg = load_config(overrides=overrides)
    start = time.perf_counter()
    reused = (run / "policy").is_dir()
    if not reused:
        metrics = train(arm_cfg, data_root=data).metrics
        train_s = time.perf_counter() - start
    else:  # a finished run is reused: its update time from its own measured rate
        metrics = json.loads((run / "metrics.json").read_text())
        train_s = args.updates / metrics.get("steps_per_s", math.nan)
    diag = {k: metrics.get(k, math.nan) for k in DIAGNOSTICS}
    rows = []
    for decode in args.decodes:
        start = time.perf_counter()
        eval_dir = run / ("eval" if decode == "argmax" else f"eval-{decode}")
        cfg = load_config(overrides=[*overrides, f"eval.decode={decode}"])
        if reused and (eval_dir / "results.csv").is_file():  # its evaluation is reused too
            import pandas as pd

            result_rows = pd.read_csv(eval_dir / "results.csv").to_dict("records")
        else:
            result_rows = evaluate(cfg, run / "policy", args.tasks, out_dir=eval_dir,
                                   track=False).rows
        overall = next(r for r in result_rows if r["level"] == "all")
        tasks = {r["name"]: r["pct_expert"] for r in result_rows if r["level"] == "task"}
        rows.append({"arm": arm, "seed": seed, "decode": decode, "train_s": round(train_s, 1),
                     "eval_s": round(time.perf_counter() - start, 1),
                     "updates_per_s": metrics.get("steps_per_s", math.nan),
                     **overall, **diag, "tasks": tasks, "eval_dir": str(eval_dir)})
        print(f"{arm:12s} seed {seed} {decode:7s}: return {overall['mean_return']:.1f},"
              f" {overall['pct_expert']:6.1f}% of expert"
              f" [{overall['pct_expert_low']:.1f}, {overall['pct_expert_high']:.1f}],"
              f" success {overall['success_rate']:.1f}%, train {train_s:.0f} s,"
              f" q_spread {diag['q_spread']:.3f}, ESS {diag['weight_ess']:.2f}", flush=True)
    return rows


def _references(out: Path, given: dict[str, float] | None = None
                ) -> dict[str, tuple[float | None, float]]:
    """task -> (expert, random) reference returns, from the evaluation's own cache (expert None
    for a task without a scripted expert) unless `given` (``eval.expert_returns``) names one."""
    refs: dict[str, tuple[float | None, float]] = {}
    for path in sorted((out / "runs").glob("*/eval/references.json")):
        for key, ref in json.loads(path.read_text()).items():
            task = key.split("|")[0]
            refs[task] = ((given or {}).get(task, ref["expert"]), ref["random"])
    return refs


def data_table(data: Path, tasks: list[str], out: Path,
               given: dict[str, float] | None = None) -> str:
    """The dataset's own quality (Table 6's columns): success and % of expert of its episodes."""
    from pac.data.store import EpisodeStore
    from pac.evaluation.stats import mean_ci, percent_of_expert, wilson_interval

    episodes = EpisodeStore(data / "episodes").episodes
    refs = _references(out, given)
    lines = ["| data: task | episodes | mean return [95% CI] | % of expert [95% CI] |"
             " success % [Wilson 95%] |", "|---|---:|---:|---:|---:|"]
    for task in tasks:
        ep = episodes[episodes["task"] == task]
        pct = "n/a"
        if refs.get(task, (None, 0.0))[0] is not None:
            m, lo, hi = mean_ci(percent_of_expert(ep["return"], *refs[task]))
            pct = f"{m:.1f} [{lo:.1f}, {hi:.1f}]"
        m, lo, hi = mean_ci(ep["return"].to_numpy(float))
        k, n = int(ep["success"].sum()), len(ep)
        s_lo, s_hi = wilson_interval(k, n)
        lines.append(f"| {task} | {n} | {m:.1f} [{lo:.1f}, {hi:.1f}] | {pct} |"
                     f" {100 * k / n:.1f} [{100 * s_lo:.1f}, {100 * s_hi:.1f}] |")
    return "\n".join(lines) + "\n"


def arm_table(results: list[dict], arms: list[str], out: Path,
              given: dict[str, float] | None = None) -> str:
    """Per arm: every evaluation episode of every seed pooled (SE interval, Wilson interval);
    % of expert over the tasks with an expert reference, mean return over all."""
    import pandas as pd

    from pac.evaluation.stats import mean_ci, percent_of_expert, wilson_interval

    refs = _references(out, given)
    tasks = sorted(refs)
    scored = [t for t in tasks if refs[t][0] is not None]
    head = ("| arm | seeds | % of expert [95% CI] | mean return [95% CI] | "
            + " | ".join(f"{t} %" for t in scored))
    lines = [head + " | success % [Wilson 95%] | Q spread | ESS | updates/s | train s / seed |",
             "|---|---:|---:|---:|" + "---:|" * len(scored) + "---:|---:|---:|---:|---:|"]
    for arm in arms:
        rows = [r for r in results if r["arm"] == arm]
        if not rows:
            continue
        eps = pd.concat([pd.read_csv(Path(r["eval_dir"]) / "episodes.csv") for r in rows])
        pct = "n/a"
        if scored:
            m, lo, hi = mean_ci(pd.concat([
                pd.Series(percent_of_expert(g["return"], *refs[t]))
                for t, g in eps.groupby("task") if t in scored]))
            pct = f"{m:.1f} [{lo:.1f}, {hi:.1f}]"
        r_m, r_lo, r_hi = mean_ci(eps["return"].to_numpy(float))
        per_task = [f"{sum(r['tasks'][t] for r in rows) / len(rows):.1f}" for t in scored]
        k, n = int(eps["success"].sum()), len(eps)
        s_lo, s_hi = wilson_interval(k, n)
        diag = [sum(r[key] for r in rows) / len(rows) for key in ("q_spread", "weight_ess")]
        ups = sum(r["updates_per_s"] for r in rows) / len(rows)
        secs = sum(r["train_s"] for r in rows) / len(rows)
        lines.append(f"| {arm} | {len(rows)} | {pct} | {r_m:.1f} [{r_lo:.1f}, {r_hi:.1f}] | "
                     + "".join(f"{v} | " for v in per_task)
                     + f"{100 * k / n:.1f} [{100 * s_lo:.1f}, {100 * s_hi:.1f}]"
                     f" | {diag[0]:.3f} | {diag[1]:.2f} | {ups:.1f} | {secs:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
