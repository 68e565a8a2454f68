"""RL fine-tuning and self-improvement rounds (§4.3, Tables 2-3, App. F.2).

The loop of Lampe et al. (2023) that the paper follows on the real robot:

    round 0: evaluate the pretrained policy
    round k = 1..R:
        collect E episodes per task with the current policy on the robot -> landing folder
        ingest them (source = rollout, round k) into the store's `rollouts` group; all earlier
            data stays in the mixture, the group is weighted by lambda = rlft.weight and trained
            with its own alpha, beta (rlft.alpha, rlft.beta: alpha-PAC, App. C.5)
        fine-tune rlft.finetune_steps updates from the previous round's checkpoint
        evaluate; record a row: episodes added, success with Wilson CI per task and overall

The "robot" is a :class:`pac.rlft.robot.RobotClient`. :class:`pac.rlft.robot.SimRobot` stands in
for one with dm_control; a real robot implements the same one method and plugs in unchanged.
Either way the policy side is :class:`pac.evaluation.rollout.PolicyServer` (the model loaded
once, batch 1), the code a robot would call.

Outputs in ``rlft.out_dir``: ``rounds/round_<k>/`` (landing folder, fine-tuning run,
evaluation), ``rounds.csv`` and ``rounds.md`` (Table 3 layout), ``metrics.json`` (for
``dvc metrics show``) and ``rounds.json`` (the state a ``--resume`` continues from; written
as soon as the ``rlft`` MLflow run exists, so a run killed in its first round continues that
run). Each round records its finished stages in ``rounds/round_<k>/stages.json`` (its MLflow
run, then ``collected``, ``ingested``, ``finetuned``, each written atomically when the stage is
done): a resumed round continues its MLflow run and skips every recorded stage, so rollouts
ingested before a kill are neither collected nor ingested again (ingestion is idempotent by
content hash besides), and a finished fine-tuning is not rerun; an interrupted fine-tuning
continues from its newest checkpoint.
MLflow: one ``rlft`` run with one nested run per round (the fine-tuning and evaluation runs nest
under their round). Every round's policy is registered as a version of
``tracking.registered_model`` (round 0: the pretrained policy), tagged with its own evaluation
(success % with Wilson interval, % of expert with its CI), the data version, the git commit and
the flow run. The alias ``champion`` sits on the best-evaluated policy *of this run*: it moves
to a round only when that round's success beats the current champion's beyond sampling noise
(:mod:`pac.review.champion`: one-sided two-proportion test), so a tie or a lead inside the
noise keeps the earlier, less fine-tuned policy; the rule and its numbers are version tags.
Runs are compared only with themselves: another run's champion may have been evaluated on
other tasks, episodes or seeds.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pac.config import ConfigError, GroupConfig, PACConfig
from pac.evaluation.stats import wilson_interval
from pac.io import atomic_write_text
from pac.rlft.ingest import ROLLOUT_GROUP, ingest
from pac.rlft.robot import RobotClient, collect, sim_robot

CHAMPION = "champion"
STATE_FILE = "rounds.json"
#: A round's finished stages (in its round folder).
STAGES_FILE = "stages.json"


# --- one round's config --------------------------------------------------------------------------


def rollout_group(cfg: PACConfig) -> GroupConfig:
    """The mixture's group of self-generated data (lambda, alpha, beta from rlft.*)."""
    r = cfg.rlft
    return GroupConfig(
        name=ROLLOUT_GROUP, tasks=list(r.tasks), quality=0.0,
        episodes_per_task=r.episodes_per_task, weight=r.weight, alpha=r.alpha, beta=r.beta,
        source="rollout",
    )


def round_dir(out_dir: Path, round_k: int) -> Path:
    """The working folder of round k: landing/, train/ (fine-tuning run), eval/."""
    return Path(out_dir) / "rounds" / f"round_{round_k}"


def finetune_config(cfg: PACConfig, round_k: int, out_dir: Path) -> PACConfig:
    """`cfg` with the rollouts group added to the mixture and a short fine-tuning schedule:
    a constant learning rate ``rlft.lr`` (None: the pretraining schedule over the fine-tuning
    updates).

    The rollouts train with their own alpha, beta (rlft.alpha, rlft.beta): the loss runs as
    alpha-PAC (Table 2, "alpha-PAC (RLFT)"), where every other group keeps its own values or
    loss.alpha, loss.beta, so a `pac` objective is unchanged for the pretraining groups.
    """
    from pac.config import validate

    ft = copy.deepcopy(cfg)
    ft.data.groups = [g for g in ft.data.groups if g.name != ROLLOUT_GROUP] + [rollout_group(cfg)]
    if ft.loss.variant == "pac":
        ft.loss.variant = "alpha_pac"
    ft.train.steps = cfg.rlft.finetune_steps
    ft.train.checkpoint_every = cfg.rlft.finetune_steps
    ft.train.log_every = min(cfg.train.log_every, cfg.rlft.finetune_steps)
    ft.train.warmup_steps = 0  # warm-up: train.warmup_fraction of the fine-tuning updates
    ft.train.decay_steps = 0
    if cfg.rlft.lr is not None:  # a constant rate (rlft.lr), not the pretraining schedule
        ft.train.lr_init = ft.train.lr_peak = ft.train.lr_end = cfg.rlft.lr
    ft.train.out_dir = str(round_dir(out_dir, round_k) / "train")
    ft.train.seed = cfg.train.seed + round_k
    validate(ft)
    return ft


# --- the table -----------------------------------------------------------------------------------


@dataclass
class RoundRow:
    """One row of the Table-3-style round table."""

    round: int
    episodes_added: int  # this round's rollouts (round 0: the pretraining episodes)
    rollout_episodes: int  # all rollouts in the mixture after this round
    collected_success: float  # success rate of the collected rollouts (nan for round 0)
    tasks: dict[str, dict[str, float]]  # task -> successes, episodes, rate, low, high (percent)
    overall: dict[str, float]
    policy: str
    mean_return: float = math.nan  # over every evaluation episode
    champion: bool = False  # this round became the champion when it was evaluated
    run_id: str | None = None
    data_version: dict[str, Any] = field(default_factory=dict)
    pct_expert: dict[str, float] = field(default_factory=dict)  # rate, low, high (percent)
    eval_dir: str = ""  # the round's evaluation folder (results.md is its table)
    model_uri: str | None = None
    model_version: str | None = None
    #: tasks without a simulator -> their offline scores on held-out episodes (episodes, steps,
    #: log_lik per step, q_pearson; pac.evaluation.offline)
    offline: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return "PAC (pretrained)" if self.round == 0 else f"RLFT #{self.round}"


#: the success cell of a policy evaluated on no simulated episode (offline only)
NO_EPISODES = {"successes": 0, "episodes": 0, "rate": math.nan, "low": math.nan,
               "high": math.nan}


def success_cell(successes: int, episodes: int) -> dict[str, float]:
    if episodes == 0:
        return dict(NO_EPISODES)
    low, high = wilson_interval(successes, episodes)
    return {"successes": successes, "episodes": episodes, "rate": 100.0 * successes / episodes,
            "low": 100.0 * low, "high": 100.0 * high}


def format_cell(cell: dict[str, float]) -> str:
    """'rate [low, high]' in percent, as in the paper's tables ('N/A' without episodes)."""
    if cell.get("episodes", 1) == 0:
        return "N/A"
    return f"{cell['rate']:.1f} [{cell['low']:.1f}, {cell['high']:.1f}]"


def table_markdown(rows: list[RoundRow], cfg: PACConfig) -> str:
    tasks = list(rows[0].tasks) if rows else []
    head = ["Iteration", "Episodes", *tasks, "All", "Mean return"]
    lines = [
        "## PAC self-improvement rounds (Table 3 layout)",
        "",
        f"Success % with Wilson score intervals (alpha_W = 0.05), {cfg.eval.episodes_per_task}"
        f" evaluation episodes per task (decode={cfg.eval.decode}); each round adds"
        f" {cfg.rlft.episodes_per_task} rollouts per task (decode={cfg.rlft.decode}) and"
        " fine-tunes"
        f" {cfg.rlft.finetune_steps} updates (lambda={cfg.rlft.weight:g},"
        f" alpha={cfg.rlft.alpha:g}, beta={cfg.rlft.beta:g}). * = registry champion.",
        "",
        "| " + " | ".join(head) + " |",
        "|---|---:|" + "---:|" * (len(tasks) + 2),
    ]
    for r in rows:
        episodes = f"{r.episodes_added}" if r.round == 0 else f"+ {r.episodes_added}"
        cells = [format_cell(r.tasks[t]) for t in tasks] + [format_cell(r.overall),
                                                           f"{r.mean_return:.1f}"]
        lines.append(f"| {r.label}{' *' if r.champion else ''} | {episodes} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_csv(rows: list[RoundRow]) -> str:
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    tasks = list(rows[0].tasks) if rows else []
    cols = [f"{name}_{k}" for name in [*tasks, "all"] for k in ("success", "low", "high", "n")]
    out.writerow(["round", "iteration", "episodes_added", "rollout_episodes",
                  "collected_success", *cols, "mean_return", "champion", "policy"])
    for r in rows:
        cells = []
        for cell in [*(r.tasks[t] for t in tasks), r.overall]:
            cells += [f"{cell['rate']:.2f}", f"{cell['low']:.2f}", f"{cell['high']:.2f}",
                      int(cell["episodes"])]
        collected = "" if math.isnan(r.collected_success) else f"{100 * r.collected_success:.2f}"
        out.writerow([r.round, r.label, r.episodes_added, r.rollout_episodes, collected, *cells,
                      f"{r.mean_return:.3f}", int(r.champion), r.policy])
    return buf.getvalue()


def _write_tables(out_dir: Path, rows: list[RoundRow], cfg: PACConfig, run_id: str | None):
    atomic_write_text(out_dir / "rounds.csv", table_csv(rows))
    atomic_write_text(out_dir / "rounds.md", table_markdown(rows, cfg))
    metrics = {f"round_{r.round}": {"success": r.overall["rate"], "low": r.overall["low"],
                                    "high": r.overall["high"], "mean_return": r.mean_return,
                                    "episodes_added": r.episodes_added}
               for r in rows}  # for `dvc metrics show`
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=1))
    _write_state(out_dir, rows, run_id)


def _write_state(out_dir: Path, rows: list[RoundRow], run_id: str | None) -> None:
    state = {"mlflow_run_id": run_id, "rows": [dict(r.__dict__) for r in rows]}
    atomic_write_text(out_dir / STATE_FILE, json.dumps(state, indent=1, default=str))


def load_stages(work: Path) -> dict[str, Any]:
    """The finished stages of the round in `work` (empty for a round not begun)."""
    path = Path(work) / STAGES_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _mark(work: Path, stages: dict[str, Any], stage: str, value: Any) -> None:
    """Record `stage` as done (atomically: a kill leaves the old record or the new one)."""
    stages[stage] = value
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(work / STAGES_FILE, json.dumps(stages, indent=1, default=str))


def _load_state(out_dir: Path) -> tuple[list[RoundRow], str | None]:
    """The completed rounds and the MLflow run of an earlier run (nothing when there is none)."""
    path = out_dir / STATE_FILE
    if not path.is_file():
        return [], None
    state = json.loads(path.read_text())
    return [RoundRow(**r) for r in state["rows"]], state.get("mlflow_run_id")


# --- the loop ------------------------------------------------------------------------------------


@dataclass
class RLFTResult:
    out_dir: Path
    rows: list[RoundRow]
    policy: Path  # the last round's inference checkpoint
    run_id: str | None

    @property
    def table(self) -> str:
        return (self.out_dir / "rounds.md").read_text()

    @property
    def champion(self) -> RoundRow | None:
        """The best-evaluated round of the run (the one holding the `champion` alias)."""
        return champion_row(self.rows)


def champion_row(rows: list[RoundRow]) -> RoundRow | None:
    """The round that holds the alias: the last one that beat every round before it."""
    marked = [r for r in rows if r.champion]
    return marked[-1] if marked else None


def evaluate_success(cfg: PACConfig, policy: Path, out: Path, track: bool, parent: str | None):
    """Evaluate `policy` on rlft.tasks: (per-task cells, overall cell, mean return, % of expert
    cell of all tasks: rate, low, high)."""
    from pac.evaluation.evaluator import evaluate

    result = evaluate(cfg, policy, list(cfg.rlft.tasks), out_dir=out, track=track,
                      tracking_parent_run=parent)
    rows = {r["name"]: r for r in result.rows if r["level"] == "task"}
    tasks = {t: success_cell(int(rows[t]["successes"]), int(rows[t]["episodes"]))
             for t in cfg.rlft.tasks}
    episodes = sum(int(c["episodes"]) for c in tasks.values())
    overall = success_cell(sum(int(c["successes"]) for c in tasks.values()), episodes)
    mean_return = sum(rows[t]["mean_return"] * tasks[t]["episodes"] for t in tasks) / episodes
    every = next(r for r in result.rows if r["level"] == "all" and r["section"] == "train")
    pct = {"rate": every["pct_expert"], "low": every["pct_expert_low"],
           "high": every["pct_expert_high"]}
    return tasks, overall, mean_return, pct


def _check_start(cfg: PACConfig, checkpoint: Path, data_root: Path, resume: bool) -> None:
    """Everything that can be wrong, before the first episode."""
    from pac.checkpoint import TOKENIZER, load_checkpoint_config
    from pac.data import EpisodeStore, store_root

    ckpt_cfg = load_checkpoint_config(checkpoint)
    if ckpt_cfg.model != cfg.model:
        raise ConfigError(
            f"the checkpoint {checkpoint} was trained with another model config than the params;"
            " fine-tune with the params the checkpoint was trained with"
        )
    if not (checkpoint / TOKENIZER).is_file():
        raise ConfigError(f"the checkpoint {checkpoint} has no {TOKENIZER}")
    for task in cfg.rlft.tasks:
        from pac.tasks import TASKS

        spec = TASKS[task]
        if spec.num_features > cfg.model.num_proprio or spec.num_actions > cfg.model.num_actions:
            raise ConfigError(f"rlft.tasks: {task} does not fit the model's input sizes")
    store = EpisodeStore(store_root(data_root))
    if not store.shards:
        raise ConfigError(f"the store {store.root} is empty: RLFT keeps the pretraining data")
    if ROLLOUT_GROUP in store.groups and not resume:
        raise ConfigError(
            f"the store {store.root} already holds a {ROLLOUT_GROUP!r} group from an earlier RLFT"
            f" run: pass --resume to continue it, or remove {store.root / ROLLOUT_GROUP}"
        )
    finetune_config(cfg, 1, Path(cfg.rlft.out_dir))  # validates the fine-tuning params


def rlft(
    cfg: PACConfig,
    checkpoint: str | Path,
    rounds: int | None = None,
    *,
    data_root: str | Path | None = None,
    robot: RobotClient | None = None,
    decode: str | None = None,
    resume: bool = False,
    fresh: bool = False,
    track: bool = True,
    tracking_parent_run: str | None = None,
    checkpoint_model_uri: str | None = None,
    version_tags: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> RLFTResult:
    """Run `rounds` (default rlft.rounds) self-improvement rounds from `checkpoint`.

    resume: continue the run in rlft.out_dir after its last completed round.
    fresh: set an earlier run aside first (its out_dir and the store's rollouts group are
        renamed with a time stamp, nothing is deleted) and start again from round 0.
    checkpoint_model_uri: the MLflow model already logged for `checkpoint` (e.g. by its
        training run): round 0 registers it instead of logging the same weights again.
    version_tags: extra tags on every registered version (e.g. the flow run).
    """
    from pac.data import EpisodeStore, dataset_version, store_root
    from pac.evaluation.rollout import PolicyServer

    rounds = cfg.rlft.rounds if rounds is None else rounds
    if rounds < 0:
        raise ConfigError(f"rounds must be >= 0, got {rounds}")
    checkpoint = Path(checkpoint)
    data_root = Path(data_root or cfg.data.root)
    out_dir = Path(cfg.rlft.out_dir)
    if fresh and not resume:
        _set_aside(out_dir, data_root, log)
    rows, run_id = _load_state(out_dir) if resume else ([], None)
    if not resume and (out_dir / STATE_FILE).exists():
        raise ConfigError(f"{out_dir} holds an earlier RLFT run: pass --resume or another"
                          " rlft.out_dir")
    _check_start(cfg, checkpoint, data_root, resume)
    robot = robot or sim_robot(cfg, checkpoint, list(cfg.rlft.tasks))
    if decode is not None:  # the table and MLflow params then show what collected
        cfg = copy.deepcopy(cfg)
        cfg.rlft.decode = decode
    decode = cfg.rlft.decode

    tracker = _tracker(cfg, "rlft", tracking_parent_run, track, run_id)
    if not rows:  # from here on a kill leaves a run that --resume continues
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_state(out_dir, rows, tracker.run_id)
    tracker.log_params(cfg.flat() | {"rlft.checkpoint": str(checkpoint), "rlft.rounds": rounds,
                                     "rlft.robot": robot.name})
    policy = Path(rows[-1].policy) if rows else checkpoint
    try:
        for k in range(len(rows), rounds + 1):
            start = time.perf_counter()
            work = round_dir(out_dir, k)
            stages = load_stages(work) if resume else {}
            run = _tracker(cfg, f"rlft-round-{k}", tracker.run_id, track, stages.get("run"))
            if "run" not in stages:
                _mark(work, stages, "run", run.run_id)
            run.set_tags({"pac.stage": "rlft", "pac.round": k})
            added, collected = 0, math.nan
            model_uri = None
            if k == 0:  # Table 3's first row: the size of the pretraining mixture
                eps = EpisodeStore(store_root(data_root)).episodes
                added = int(eps["group"].isin([g.name for g in cfg.data.groups]).sum())
                model_uri = checkpoint_model_uri
            else:
                landing = work / "landing"
                # a resumed round may have its rollouts: recorded, or already in the store
                if "collected" not in stages and not _round_episodes(data_root, k)[0]:
                    server = PolicyServer.load(policy, decode, cfg.eval.num_candidates,
                                               precision=cfg.eval.precision)
                    got = collect(server, robot, list(cfg.rlft.tasks),
                                  cfg.rlft.episodes_per_task, landing, k, cfg.data.seed)
                    log(f"round {k}: collected {len(got.files)} episodes, success"
                        f" {100 * got.success_rate:.1f}%, policy {got.policy_hz:.0f} Hz")
                    _mark(work, stages, "collected", len(got.files))
                if "ingested" not in stages:
                    report = ingest(landing, data_root, group=ROLLOUT_GROUP, round_k=k)
                    if report.rejected:
                        log(f"round {k}: {len(report.rejected)} rollout(s) rejected:"
                            f" {report.rejected}")
                    from pac.rlft.ingest import log_ingest

                    log_ingest(run, report)
                    _mark(work, stages, "ingested", {"batch": report.batch,
                                                     "accepted": len(report.accepted),
                                                     "rejected": len(report.rejected)})
                added, successes = _round_episodes(data_root, k)
                collected = successes / added if added else math.nan
                done = stages.get("finetuned")
                if done and Path(done["policy"]).is_dir():
                    policy, model_uri = Path(done["policy"]), done["model_uri"]
                else:
                    from pac.train.trainer import train

                    ft = finetune_config(cfg, k, out_dir)
                    # resume: the same round's interrupted fine-tuning (and its MLflow run)
                    result = train(ft, resume=resume, init_from=policy, data_root=data_root,
                                   tracking_parent_run=run.run_id)
                    policy = result.policy_dir
                    model_uri = (f"runs:/{result.run_id}/policy_model" if result.run_id
                                 else None)
                    if track and result.run_id:  # one a killed attempt opened, unrecorded
                        from pac.tracking import end_stale_runs

                        end_stale_runs(cfg, run.run_id, f"finetune-{cfg.model.scale}",
                                       result.run_id)
                    _mark(work, stages, "finetuned", {"policy": str(policy),
                                                      "model_uri": model_uri})
            tasks, overall, mean_return, pct = evaluate_success(cfg, policy, work / "eval", track,
                                                                run.run_id)
            rollouts = EpisodeStore(store_root(data_root)).episodes
            row = RoundRow(
                round=k, episodes_added=added,
                rollout_episodes=int((rollouts["group"] == ROLLOUT_GROUP).sum()),
                collected_success=collected, tasks=tasks, overall=overall, policy=str(policy),
                mean_return=mean_return, run_id=run.run_id, data_version=dataset_version(data_root),
                pct_expert=pct, eval_dir=str(work / "eval"), model_uri=model_uri,
            )
            if track:
                row.champion = _update_champion(cfg, run, policy, model_uri, row, rows,
                                                version_tags)
            else:
                row.champion = beats_all(row, rows).replaces
            rows.append(row)
            _write_tables(out_dir, rows, cfg, tracker.run_id)
            _log_round(run, row, time.perf_counter() - start)
            tracker.log_metrics(round_metrics(row), step=k)  # the rounds as one chart
            run.finish()
            log(f"round {k}: success {format_cell(overall)}"
                + (" (new champion)" if row.champion else ""))
        tracker.log_metrics({"rounds": len(rows) - 1}, step=len(rows) - 1)
        for name in ("rounds.csv", "rounds.md"):
            tracker.log_artifact(out_dir / name)
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish()
    return RLFTResult(out_dir, rows, Path(policy), tracker.run_id)


def _set_aside(out_dir: Path, data_root: Path, log: Callable[[str], None]) -> None:
    """Rename an earlier run's out_dir and rollouts group out of the way (the store skips
    group folders starting with '_')."""
    from pac.data import store_root

    stamp = time.strftime("%Y%m%dT%H%M%S")
    group = store_root(data_root) / ROLLOUT_GROUP
    for old, new in ((out_dir, out_dir.with_name(f"{out_dir.name}.{stamp}")),
                     (group, group.with_name(f"_{ROLLOUT_GROUP}.{stamp}"))):
        if old.exists():
            old.rename(new)
            log(f"rlft: set the earlier {old} aside as {new}")


def _round_episodes(data_root: Path, round_k: int) -> tuple[int, int]:
    """(episodes, successes) of round `round_k` in the store's rollouts group."""
    from pac.data import EpisodeStore, store_root

    eps = EpisodeStore(store_root(data_root)).episodes
    eps = eps[(eps["group"] == ROLLOUT_GROUP) & (eps["round"] == round_k)]
    return len(eps), int(eps["success"].sum())


def _tracker(cfg: PACConfig, name: str, parent: str | None, enabled: bool,
             run_id: str | None = None):
    from pac.tracking import Tracker

    return Tracker(cfg, name, parent_run_id=parent, run_id=run_id, tags={"pac.stage": "rlft"},
                   enabled=enabled)


def round_metrics(row: RoundRow) -> dict[str, float]:
    """A round's headline numbers under keys shared by every round (charts across rounds)."""
    metrics = {"success_rate": row.overall["rate"], "success_low": row.overall["low"],
               "success_high": row.overall["high"], "mean_return": row.mean_return,
               "champion": float(row.champion)}
    if row.pct_expert:
        metrics |= {"pct_expert": row.pct_expert["rate"], "pct_expert_low": row.pct_expert["low"],
                    "pct_expert_high": row.pct_expert["high"]}
    return metrics


def _log_round(run, row: RoundRow, seconds: float) -> None:
    """The round's run: its headline numbers (the same keys in every round; per-task numbers
    are on the nested evaluation runs) and its data version (the ingest is logged when it is
    done)."""
    metrics = round_metrics(row) | {
        "episodes_added": row.episodes_added, "rollout_episodes": row.rollout_episodes,
        "round_seconds": seconds,
    }
    if not math.isnan(row.collected_success):
        metrics["collected_success_rate"] = 100 * row.collected_success
    run.log_metrics(metrics, step=row.round)
    run.set_tags({"pac.success": format_cell(row.overall),
                  "pac.pct_expert": format_pct(row.pct_expert)})
    run.log_params({"policy": row.policy} | {f"data_version.{k}": v
                                             for k, v in row.data_version.items()})
    run.log_datasets(row.data_version)


def format_pct(cell: dict[str, float]) -> str:
    """'% of expert [low, high]' (N/A without an expert reference)."""
    if not cell or cell.get("rate") is None or math.isnan(cell["rate"]):
        return "N/A"
    return format_cell(cell)


def beats_all(row: RoundRow, earlier: list[RoundRow]):
    """Whether `row` replaces the champion among the `earlier` rounds, by the rule of
    :mod:`pac.review.champion` (a :class:`~pac.review.champion.ChampionDecision`)."""
    from pac.review.champion import decide

    best = champion_row(earlier)
    cell = (int(row.overall["successes"]), int(row.overall["episodes"]))
    if best is None:
        return decide(cell, set(row.tasks))
    name = f"v{best.model_version}" if best.model_version else best.label
    return decide(cell, set(row.tasks),
                  (int(best.overall["successes"]), int(best.overall["episodes"])),
                  set(best.tasks), name)


def version_tags_of(row: RoundRow) -> dict[str, Any]:
    """The registry tags of a round's version: what it scored, on which data, from which code."""
    tags: dict[str, Any] = {
        "success_rate": f"{row.overall['rate']:.4f}",
        "success": f"{format_cell(row.overall)} ({int(row.overall['successes'])}/"
                   f"{int(row.overall['episodes'])} episodes, Wilson 95%)",
        "success_low": f"{row.overall['low']:.4f}", "success_high": f"{row.overall['high']:.4f}",
        "pct_expert": format_pct(row.pct_expert) + " (SE 95% CI)",
        "eval_tasks": ",".join(sorted(row.tasks)),
        "eval_episodes": int(row.overall["episodes"]), "rlft_round": row.round,
        "mean_return": f"{row.mean_return:.3f}",
    }
    if not row.overall.get("episodes"):
        tags["success"] = "N/A (no simulated task: evaluated offline)"
    for task, cell in row.offline.items():
        tags[f"offline.{task}"] = (f"log-lik/step {cell['log_lik']:.3f}, Q-return pearson"
                                   f" {cell['q_pearson']:.3f} ({int(cell['episodes'])} held-out"
                                   " episodes)")
    fingerprint = row.data_version.get("episodes_fingerprint")
    if fingerprint:
        tags["data_version"] = str(fingerprint)
    for key, value in row.data_version.items():
        if key not in ("dvc_lock", "episodes_fingerprint") and value:
            tags[f"data_version.{key}"] = value
    return tags


def _update_champion(cfg: PACConfig, run, policy: Path, model_uri: str | None,
                     row: RoundRow, earlier: list[RoundRow],
                     extra_tags: dict[str, Any] | None = None) -> bool:
    """Register the round's model; move `champion` to it if it beats the champion beyond
    noise (:func:`beats_all`)."""
    from pac.tracking import register_policy, set_model_alias

    if model_uri is None:  # no training run logged this checkpoint: log it with its round
        model_uri = run.log_policy(policy)
    row.model_uri = model_uri
    tags = version_tags_of(row) | {"pac.round_run": run.run_id} | dict(extra_tags or {})
    decision = beats_all(row, earlier)
    version = register_policy(cfg, model_uri, tags | decision.tags())
    row.model_version = version
    beats = decision.replaces
    if beats:
        set_model_alias(cfg, CHAMPION, version)
    run.set_tags({"pac.champion": str(beats).lower(), "pac.model_version": version})
    return beats
