"""Step functions of the PAC pipeline, shared by `flows/pac_flow.py` and tests.

Each Metaflow step calls one function here (or one room's function directly); nothing in this
module knows about Metaflow. Paths are relative to the working directory, the repository root.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pac.config import DEFAULT_PARAMS, PACConfig, load_config, save_config

#: Stages of dvc.yaml that build the training data (App. C.3-C.4).
DATA_STAGES = ("generate", "tokenizer")
#: @retry of the flows' steps whose rerun continues or repeats their work without duplicating
#: it: immediately, as the failures it is for (a killed or preempted process) do not wait.
SAFE_RETRY = {"times": 2, "minutes_between_retries": 0}


@dataclass
class Settings:
    """What a flow run was asked for: a params file plus overrides (validated at `start`)."""

    params: str
    overrides: list[str]

    def config(self) -> PACConfig:
        return load_config(self.params, self.overrides)


def frozen_settings(cfg: PACConfig, folder: str | Path) -> Settings:
    """`cfg` written as a params file in `folder`, for the `pac` commands a step starts: they
    then run with the settings `start` validated, not the params file as it is now."""
    path = Path(folder) / "params.yaml"
    save_config(cfg, path)
    return Settings(str(path), [])


def flow_overrides(
    text: str, scale: str = "", alpha: float | None = None, beta: float | None = None,
    rounds: int | None = None,
) -> list[str]:
    """Turn the flow's parameters into `--set` style overrides (';'-separated KEY=VALUE).

    None means "as in the params file"; any given value, negative ones included, becomes an
    override, so the params validation rejects it with its one-line message."""
    out = [s.strip() for s in (text or "").replace("\n", ";").split(";") if s.strip()]
    if scale:
        out.append(f"model.scale={scale}")
    for key, value in (("loss.alpha", alpha), ("loss.beta", beta), ("rlft.rounds", rounds)):
        if value is not None:
            out.append(f"{key}={value}")
    return out


#: The flow's own options (`python flows/pac_flow.py run --OPTION VALUE`) that reach params.
FLOW_OPTIONS = {"--params-file": str, "--set": str, "--scale": str, "--alpha": float,
                "--beta": float, "--rounds": int}


def check_flow_argv(argv: list[str], default_params: str | Path = DEFAULT_PARAMS,
                    check: Any = None) -> str | None:
    """The one-line problem with a `run` command line's params, or None when they are valid.

    Called before Metaflow parses the command line, so a bad value prints one line (as the
    `pac` CLI does) instead of a traceback from inside the `start` task. `default_params` is
    the flow's `--params-file` default; `check(params, overrides)`, when given, is a further
    check that raises ConfigError (the scaling flow: every sweep member's config).
    """
    import argparse

    from pac.config import ConfigError

    if "run" not in argv:
        return None
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    for option in FLOW_OPTIONS:
        parser.add_argument(option, dest=option[2:].replace("-", "_"), default=None)
    try:
        args, _ = parser.parse_known_args(argv[argv.index("run") + 1:])
    except argparse.ArgumentError as exc:
        return str(exc)
    values = {}
    for option, kind in FLOW_OPTIONS.items():
        raw = getattr(args, option[2:].replace("-", "_"))
        try:
            values[option] = None if raw is None else kind(raw)
        except ValueError:
            return f"{option} {raw!r} is not a valid {kind.__name__}"
    overrides = flow_overrides(values["--set"] or "", values["--scale"] or "",
                               values["--alpha"], values["--beta"], values["--rounds"])
    try:
        params = values["--params-file"] or default_params
        load_config(params, overrides)
        if check is not None:
            check(params, overrides)
    except ConfigError as exc:
        return str(exc)
    except (OSError, ValueError) as exc:  # e.g. a params file that does not exist
        return str(exc)
    return None


def resolved_flow_values(cfg: PACConfig, params_file: str, overrides: list[str]
                         ) -> dict[str, Any]:
    """What the flow's parameters resolved to (shown on the `start` card instead of defaults)."""
    return {
        "params file": params_file, "overrides": "; ".join(overrides) or "-",
        "model.scale": cfg.model.scale, "loss.alpha": cfg.loss.alpha, "loss.beta": cfg.loss.beta,
        "loss.variant": cfg.loss.variant, "rlft.rounds": cfg.rlft.rounds,
        "train.steps": cfg.train.steps, "eval.episodes_per_task": cfg.eval.episodes_per_task,
    }


#: The checkout's flow lock: the local flow run that may write the shared outputs (the DVC data,
#: the episode store, the MLflow store's model registry) right now.
FLOW_LOCK = Path("runs/flow.lock")


#: The holder read from a lock file that does not parse.
UNREADABLE = "unreadable"


class FlowRunning(RuntimeError):
    """Another flow run holds the checkout's flow lock (the message is one line)."""


def read_flow_lock(path: str | Path = FLOW_LOCK) -> dict[str, Any] | None:
    """The lock's holder ({"run", "pid", "host", "since"}), or None when there is no lock.

    The lock is written atomically, so a file that does not parse was not written by the
    pipeline; it is reported as a holder nobody can check (run "unknown")."""
    import json

    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
        return {"run": str(holder["run"]), "pid": int(holder["pid"]),
                "host": str(holder["host"]), "since": str(holder.get("since", "?"))}
    except (ValueError, KeyError, TypeError):
        return {"run": UNREADABLE, "pid": -1, "host": "unknown", "since": "?"}


def lock_holder_alive(holder: dict[str, Any]) -> bool:
    """Whether the holder's process may still run: its PID exists on this host, or the lock
    was taken on another host (whose processes cannot be checked from here)."""
    import socket

    if holder["host"] != socket.gethostname() or holder["pid"] <= 0:
        return True
    try:
        os.kill(holder["pid"], 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def hold_flow_lock(
    run: str, pid: int, origins: tuple[str | None, ...] = (), path: str | Path = FLOW_LOCK,
) -> None:
    """Make flow run `run` (``Flow/<run id>``, its Metaflow runtime process `pid`) the holder of
    the checkout's flow lock, or raise FlowRunning naming the run that holds it.

    Called by every local step of the flow: `start` takes the lock (a second flow run started
    in the same checkout is refused there, before it writes anything); a later step finds it
    its own. A lock is taken over when it is stale (its PID is dead on this host) or held by
    one of `origins` (the runs a `resume` continues: the killed run's lock never blocks its
    resume, even when its PID has been reused). A lock of a live process on another host blocks
    until it is removed by hand. The lock file is created atomically (hard link of a complete
    temp file: of two runs starting at once exactly one creates it) and read back after a
    take-over, so that of two runs taking over one stale lock at once one is refused."""
    import json
    import socket

    from pac.io import atomic_write_text

    path = Path(path)
    mine = json.dumps({"run": run, "pid": pid, "host": socket.gethostname(),
                       "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    for _ in range(3):
        holder = read_flow_lock(path)
        if holder is None:
            try:
                atomic_write_text(path, mine, exclusive=True)
            except FileExistsError:  # another run created it in between: look again
                continue
        elif holder["run"] == run and holder["pid"] == pid:
            return
        elif holder["run"] in {run, *origins} or not lock_holder_alive(holder):
            atomic_write_text(path, mine)
        elif holder["run"] == UNREADABLE:
            raise FlowRunning(f"{path} is not a flow lock the pipeline wrote: remove it if no"
                              " flow run is running in this checkout")
        else:
            raise FlowRunning(
                f"flow run {holder['run']} is running in this checkout (pid {holder['pid']} on"
                f" {holder['host']}, since {holder['since']}): wait for it to end, or remove"
                f" {path} if that process is gone")
        got = read_flow_lock(path)
        if got is not None and got["run"] == run and got["pid"] == pid:
            return
    raise FlowRunning(f"{path} keeps changing: another flow run is starting in this checkout")


def release_flow_lock(runs: tuple[str | None, ...], path: str | Path = FLOW_LOCK) -> bool:
    """Remove the flow lock when one of `runs` holds it (a finished run and its origins);
    a lock another run took since is left alone. Returns whether it was removed."""
    holder = read_flow_lock(path)
    if holder is None or holder["run"] not in runs:
        return False
    Path(path).unlink(missing_ok=True)
    return True


#: Output folders a flow run keeps to itself (so a second run never meets the first's state).
RUN_OUTPUTS = ("train.out_dir", "eval.out_dir", "rlft.out_dir")


def run_workspace_overrides(
    overrides: list[str], run_id: str, root: str = "runs/flow"
) -> list[str]:
    """Per-run output folders ``runs/flow/<run_id>/{pretrain,eval,rlft}`` unless set explicitly."""
    given = {o.split("=", 1)[0].strip() for o in overrides}
    names = {"train.out_dir": "pretrain", "eval.out_dir": "eval", "rlft.out_dir": "rlft"}
    extra = [f"{key}={root}/{run_id}/{names[key]}" for key in RUN_OUTPUTS if key not in given]
    return extra + list(overrides)


def _pac_command() -> list[str]:
    return [sys.executable, "-m", "pac.cli"]


def _env_with_venv() -> dict[str, str]:
    """The environment with this interpreter's bin/ first on PATH (DVC stages call `pac`)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def uses_dvc_pipeline(settings: Settings) -> bool:
    """`dvc repro` builds the data when the run uses params/default.yaml's data settings."""
    same_file = Path(settings.params).resolve() == DEFAULT_PARAMS.resolve() or (
        Path(settings.params).resolve() == (Path.cwd() / "params" / "default.yaml").resolve()
    )
    return same_file and not any(o.startswith("data.") for o in settings.overrides)


def version_data(settings: Settings, cfg: PACConfig | None = None) -> dict[str, Any]:
    """Build (or confirm up to date) the training data and return its version.

    With the default data settings this is `dvc repro generate tokenizer` (a no-op when the
    outputs are current; DVC reads the params file itself); with other data settings the same
    `pac data` commands run directly, on `cfg` (default: `settings.config()`), for the groups
    the simulator generates (`source: sim`; ingested groups are already in the store).
    Returns `pac.data.dataset_version` (the DVC hashes and the store fingerprint).
    """
    from pac.data import dataset_version

    cfg = cfg or settings.config()
    env = _env_with_venv()
    if uses_dvc_pipeline(settings):
        subprocess.run(["dvc", "repro", *DATA_STAGES], check=True, env=env)
        return dataset_version(cfg.data.root)
    with tempfile.TemporaryDirectory() as tmp:
        params = ["--params", frozen_settings(cfg, tmp).params]
        base = [*_pac_command()]
        for group in cfg.data.groups:
            if group.source != "sim":  # a robot's episodes come from `pac ingest`, not here
                continue
            subprocess.run([*base, "data", "generate", *params, "--group", group.name,
                            "--quiet"], check=True, env=env)
        subprocess.run([*base, "tokenizer", "train", *params], check=True, env=env)
    return dataset_version(cfg.data.root)


def data_step(settings: Settings, parent_run_id: str,
              cfg: PACConfig | None = None) -> dict[str, Any]:
    """A flow's `data` step: :func:`version_data`, then the version as the parent run's params
    and dataset inputs. Returns the version."""
    from pac.tracking import Tracker

    cfg = cfg or settings.config()
    version = version_data(settings, cfg)
    parent = Tracker(cfg, "", run_id=parent_run_id)
    parent.log_params({f"data_version.{k}": v for k, v in version.items()})
    parent.log_datasets(version)
    return version


#: The file in train.out_dir naming the flow run whose pretraining the folder holds.
FLOW_RUN_FILE = "flow_run.json"


def claim_train_dir(out_dir: str | Path, flow_run: str) -> None:
    """Make `out_dir` the pretraining folder of flow run `flow_run` (the run whose `start`
    made the settings: a resumed run keeps its origin's id), so that a retried or resumed
    `pretrain` continues from the checkpoints there (`train(resume=True)`).

    A folder of another flow run, or one with checkpoints and no owner (e.g. an earlier
    `pac train` at an explicit train.out_dir), is refused with a one-line ConfigError: it is
    never continued by mistake. The claim is written atomically before any training."""
    import json

    from pac.config import ConfigError
    from pac.io import atomic_write_text
    from pac.train import checkpoints

    out_dir = Path(out_dir)
    marker = out_dir / FLOW_RUN_FILE
    if marker.is_file():
        owner = json.loads(marker.read_text()).get("flow_run")
        if owner != flow_run:
            raise ConfigError(f"train.out_dir={out_dir} holds the pretraining of flow run"
                              f" {owner}, not {flow_run}: choose another train.out_dir")
        return
    if checkpoints.find_latest(out_dir / "checkpoints").path is not None:
        raise ConfigError(f"train.out_dir={out_dir} already holds checkpoints of another run:"
                          " choose another train.out_dir")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json.dumps({"flow_run": flow_run}))


def pretrain(cfg: PACConfig, flow_run: str, parent_run_id: str | None,
             run_name: str | None = None):
    """The flow's local `pretrain` step: `train(cfg)` that a retry or a `resume` of the same
    flow run continues from the newest complete checkpoint in train.out_dir, bit-identical to
    an uninterrupted run under the conditions of docs/faults_and_resume.md, "Exact resume".

    The MLflow run of a killed attempt is continued by id (the trainer's `mlflow_run.json`),
    so the flow keeps one `pretrain-<scale>` run; one that a killed attempt opened without
    recording it is ended KILLED and tagged `pac.continued_in` (:func:`end_stale_runs`).
    `run_name` names the MLflow run (default ``pretrain-<scale>``; the scaling sweep gives each
    member its own, so that one member never ends another's run)."""
    from pac.tracking import end_stale_runs
    from pac.train import train

    run_name = run_name or f"pretrain-{cfg.model.scale}"
    claim_train_dir(cfg.train.out_dir, flow_run)
    result = train(cfg, resume=True, tracking_parent_run=parent_run_id, run_name=run_name)
    if parent_run_id and result.run_id:
        end_stale_runs(cfg, parent_run_id, run_name, result.run_id)
    return result


def bc_arm_config(cfg: PACConfig) -> PACConfig:
    """The flow's BC arm (``eval.bc_baseline``): PAC's settings with ``loss.variant=bc`` (alpha
    1 and beta 0 everywhere: the BC term of eq. 11 alone) and its own train and eval folders;
    the same data, budget, seed and evaluation."""
    from pac.config import config_from_dict
    from pac.review.arms import BC_ARM

    values = cfg.to_dict()
    values["loss"] |= {"variant": "bc", "alpha": 1.0, "beta": 0.0, "alpha_schedule": []}
    for group in values["data"]["groups"]:
        group["alpha"] = group["beta"] = None
    values["train"]["out_dir"] = f"{cfg.train.out_dir}-{BC_ARM}"
    values["eval"]["out_dir"] = str(Path(cfg.eval.out_dir) / BC_ARM)
    return config_from_dict(values)


def distributed_train_command(
    settings: Settings,
    num_nodes: int,
    node_rank: int,
    main_addr: str,
    nproc_per_node: int,
    parent_run_id: str | None,
    port: int = 29533,
) -> list[str]:
    """The torchrun command one node of a Metaflow `@parallel` step runs (multi-node ZeRO);
    with `--resume`, so a resumed flow run continues from the checkpoints of its killed attempt
    (the folder is claimed by :func:`claim_train_dir` in `pretrain_launch`)."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", str(num_nodes), "--node_rank", str(node_rank),
        "--nproc_per_node", str(nproc_per_node),
        "--master_addr", main_addr, "--master_port", str(port),
        "-m", "pac.cli", "train", "--params", settings.params, "--resume",
    ]
    for o in settings.overrides:
        cmd += ["--set", o]
    if parent_run_id:
        cmd += ["--parent-run-id", parent_run_id]
    return cmd


def run_distributed_node(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, env=_env_with_venv())


def _eval_all_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The "all training tasks" row of an evaluation table."""
    return next((r for r in rows if r.get("level") == "all" and r.get("section") == "train"),
                None)


def offline_scores(offline_dirs: list[str | Path]) -> dict[str, dict[str, float]]:
    """task -> its offline headline (episodes, steps, log_lik per step, q_pearson) from the
    ``metrics.json`` of each offline evaluation folder (pac.evaluation.offline)."""
    out: dict[str, dict[str, float]] = {}
    for folder in offline_dirs:
        metrics = json.loads((Path(folder) / "metrics.json").read_text())
        for task, m in metrics["tasks"].items():
            out[task] = {k: float("nan") if m[k] is None else float(m[k])
                         for k in ("episodes", "steps", "log_lik", "q_pearson")}
    return out


def round_row_from_evaluation(eval_rows: list[dict[str, Any]], policy: str | Path,
                              data_version: dict[str, Any],
                              offline: dict[str, dict[str, float]] | None = None):
    """The pretrained policy's evaluation (all training tasks) as an RLFT round-0 row, so a
    run without RLFT rounds registers its policy with the same tags and card as a round.
    A run whose tasks have no simulator has no rollouts: its row has no success cells, only
    the `offline` scores of its held-out episodes."""
    from pac.rlft.rounds import RoundRow, success_cell

    tasks = {r["name"]: success_cell(int(r["successes"]), int(r["episodes"]))
             for r in eval_rows if r.get("level") == "task" and r.get("section") == "train"}
    every = _eval_all_row(eval_rows)
    if every is None and not offline:
        raise ValueError("the evaluation has no 'all' row of training tasks")
    return RoundRow(
        round=0, episodes_added=0, rollout_episodes=0, collected_success=float("nan"),
        tasks=tasks, policy=str(policy), champion=True, data_version=dict(data_version),
        overall=success_cell(*(0, 0) if every is None
                             else (int(every["successes"]), int(every["episodes"]))),
        mean_return=float("nan") if every is None else float(every["mean_return"]),
        pct_expert={} if every is None else {
            "rate": every["pct_expert"], "low": every["pct_expert_low"],
            "high": every["pct_expert_high"]},
        offline=dict(offline or {}),
    )


def headline(row) -> dict[str, str]:
    """The card's and the dashboard's headline cells of one evaluated policy (a RoundRow): its
    result over every task and episode it was evaluated on."""
    from pac.rlft.rounds import format_pct

    out = {}
    if row.tasks:
        out = {
            "success % [Wilson 95%], all evaluated tasks": success_text(row),
            "% of expert [SE 95% CI], all evaluated tasks": format_pct(row.pct_expert),
            "evaluated on": f"{', '.join(sorted(row.tasks))} ({int(row.overall['episodes'])}"
                            " episodes)",
        }
    if row.offline:
        out["evaluated offline on (no simulator)"] = (
            f"{', '.join(sorted(row.offline))} ("
            f"{sum(int(c['episodes']) for c in row.offline.values())} held-out episodes)")
        out["action log-likelihood per step (nats), held-out"] = "; ".join(
            f"{t} {c['log_lik']:.3f}" for t, c in sorted(row.offline.items()))
        out["Q vs Monte-Carlo return (Pearson), held-out"] = "; ".join(
            f"{t} {c['q_pearson']:.3f}" for t, c in sorted(row.offline.items()))
    out["selected as"] = ("pretrained policy (round 0)" if row.round == 0
                          else f"RLFT round {row.round}") + ", the run's champion"
    return out


def success_text(row) -> str:
    """'rate [low, high] (s/n episodes)' of a RoundRow's overall cell."""
    from pac.rlft.rounds import format_cell

    return (f"{format_cell(row.overall)} ({int(row.overall['successes'])}"
            f"/{int(row.overall['episodes'])} episodes)")


def all_task_row(champion, eval_rows: list[dict[str, Any]]):
    """The handed-over policy's widest evaluation: the pretrained policy (round 0) was evaluated
    on every task of the flow's evaluation, so its headline is that one; an RLFT round's policy
    was evaluated on rlft.tasks only, so its headline is its own evaluation."""
    if champion.round != 0 or _eval_all_row(eval_rows) is None:
        return champion
    row = round_row_from_evaluation(eval_rows, champion.policy, champion.data_version)
    for key in ("run_id", "model_uri", "model_version", "eval_dir"):
        setattr(row, key, getattr(champion, key))
    return row


def _run_link(exp_id: str, run_id: str | None, name: str) -> str:
    return f"[{name}](#/experiments/{exp_id}/runs/{run_id})" if run_id else name


def dashboard_markdown(
    cfg: PACConfig, champion, version: str | None, exp_id: str, rows: list, eval_table: str,
    children: dict[str, str | None], figures: dict[str, Path], wall_clock_s: float,
    run_id: str = "", arms_markdown: str = "",
) -> str:
    """The parent run's description: the handed-over policy, the rounds, where to look next."""
    cells = headline(champion)
    lines = [
        f"## PAC flow: {cfg.tracking.registered_model} v{version} is the champion",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in cells.items()),
        f"| load | `models:/{cfg.tracking.registered_model}@champion` (v{version}) |",
        f"| wall clock | {wall_clock_s / 60:.1f} min |",
        "",
    ]
    if champion.tasks:
        from pac.rlft.rounds import format_cell

        lines += ["| task | success % [Wilson 95%] | episodes |", "|---|---|---|"]
        lines += [f"| {t} | {format_cell(c)} | {int(c['episodes'])} |"
                  for t, c in sorted(champion.tasks.items())]
        lines.append("")
    if rows:
        lines += ["### Rounds (success % [Wilson 95%])", "", "| round | success | champion |",
                  "|---|---|---|"]
        from pac.rlft.rounds import format_cell

        for r in rows:
            mark = "**yes**" if r.round == champion.round else ""
            lines.append(f"| {r.label} | {format_cell(r.overall)} | {mark} |")
        lines.append("")
    if arms_markdown:
        lines += [arms_markdown.strip().replace("## ", "### ", 1), ""]
    if children:
        lines += ["### Child runs", "",
                  " · ".join(_run_link(exp_id, rid, name) for name, rid in children.items()), ""]
    if figures:
        lines += ["### Figures (artefacts)", "",
                  ", ".join(f"[figures/{p.name}](#/experiments/{exp_id}/runs/{run_id}"
                            f"/artifacts/figures/{p.name})" for p in figures.values()), ""]
    if eval_table:
        lines += ["### Pretrained policy, all tasks", "", eval_table.strip(), ""]
    return "\n".join(lines)


def _metric_cells(prefix: str, row) -> dict[str, float]:
    if not row.overall.get("episodes"):  # evaluated offline only: no success to log
        return {}
    out = {f"{prefix}success_rate": row.overall["rate"], f"{prefix}success_low": row.overall["low"],
           f"{prefix}success_high": row.overall["high"],
           f"{prefix}episodes": row.overall["episodes"]}
    for key, name in (("rate", "pct_expert"), ("low", "pct_expert_low"),
                      ("high", "pct_expert_high")):
        value = (row.pct_expert or {}).get(key)
        if value is not None:
            out[f"{prefix}{name}"] = float(value)
    return out


def finish(
    cfg: PACConfig,
    *,
    policy_dir: str | Path,
    mlflow_run_id: str,
    started: float,
    data_version: dict[str, Any],
    eval_table: str = "",
    eval_rows: list[dict[str, Any]] | None = None,
    offline_dirs: list[str] | None = None,
    arms: dict[str, Any] | None = None,
    rlft_table: str = "",
    rlft_rows: list[dict[str, Any]] | None = None,
    train_history: list[dict[str, float]] | None = None,
    policy_model_uri: str | None = None,
    metaflow_pathspec: str = "",
    children: dict[str, str | None] | None = None,
    out_dir: str | Path = "runs",
    figures_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Hand over the best-evaluated policy of the run and make the parent run its dashboard.

    The handed-over version is the RLFT champion (every round was registered by
    :func:`pac.rlft.rounds.rlft`, the alias sits on the best); without RLFT rounds the pretrained
    policy is registered here with its evaluation. Its model card shows *its own* evaluation.
    The parent run gets the headline metrics, the per-round success, tags, a generated
    description, the evaluation tables and the figures, then is closed. `arms` (the flow's
    ``eval.bc_baseline`` comparison: markdown, tags, BC's rows) goes to the card and the review.
    """
    from pac.checkpoint import load_inference_checkpoint
    from pac.evaluation.tables import rounded
    from pac.plots import write_figures
    from pac.review.model_card import ModelCardFacts, detect_hardware, write_model_card
    from pac.rlft.rounds import CHAMPION, RoundRow, champion_row, round_metrics, version_tags_of
    from pac.tracking import (
        Tracker,
        model_version,
        register_policy,
        set_model_alias,
        set_model_description,
        set_version_tags,
    )

    rows = [RoundRow(**r) for r in (rlft_rows or [])]
    tracker = Tracker(cfg, "", run_id=mlflow_run_id)
    flow_tags = {"pac.flow_run": mlflow_run_id, "metaflow.pathspec": metaflow_pathspec}
    champion = champion_row(rows)
    if champion is not None and champion.model_version:
        version = champion.model_version
        head = all_task_row(champion, eval_rows or [])
        if head is champion:
            own_table = (Path(champion.eval_dir) / "results.md").read_text()
            title = (f"Evaluation of this version ({champion.label}, rlft.tasks:"
                     f" {', '.join(sorted(champion.tasks))})")
        else:
            own_table, title = eval_table, "Evaluation of this version (pretrained, all tasks)"
    else:  # no RLFT rounds: the pretrained policy, evaluated on every task, is handed over
        champion = round_row_from_evaluation(eval_rows or [], policy_dir, data_version,
                                             offline_scores(offline_dirs or []))
        uri = policy_model_uri or tracker.log_policy(policy_dir)
        version = register_policy(cfg, uri, version_tags_of(champion) | flow_tags)
        set_model_alias(cfg, CHAMPION, version)
        champion.model_version = version
        head = champion
        own_table, title = eval_table, "Evaluation of this version (pretrained, all tasks)"
        if not champion.tasks:
            title = "Evaluation of this version (pretrained, offline on held-out episodes)"
    # The version carries the headline: its result over all tasks it was evaluated on (the
    # round's own, narrower evaluation stays on the round's run, and as round_eval.* here).
    before = model_version(cfg, version)["tags"]
    moved = {f"round_eval.{k}": before[k] for k in ("success", "eval_tasks")
             if head is not champion and k in before}
    arms = arms or {}
    set_version_tags(cfg, version, version_tags_of(head) | moved | arms.get("tags", {}))
    model, _, _ = load_inference_checkpoint(champion.policy)
    hardware, gpus = detect_hardware()
    wall = time.time() - started
    train_seconds, precision = _training_facts(cfg)
    decision = before.get("pac.champion_decision", "")
    facts = ModelCardFacts(
        name=f"{cfg.tracking.registered_model} v{version}",
        params=sum(p.numel() for p in model.parameters()),
        wall_clock_s=wall,
        train_seconds=train_seconds,
        precision=precision,
        registered_model=cfg.tracking.registered_model,
        task_success=head.tasks,
        champion_rule=(f"{before['pac.champion_rule']}; {decision}"
                       if decision and "pac.champion_rule" in before else ""),
        hardware=hardware,
        gpu_count=gpus,
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        data_version={k: str(v) for k, v in champion.data_version.items()
                      if v is not None and k != "dvc_lock"},
        eval_markdown=own_table,
        eval_title=title,
        rlft_markdown=rlft_table,
        headline=headline(head),
        mlflow_run_id=mlflow_run_id,
        metaflow_pathspec=metaflow_pathspec,
    )
    facts.arms_markdown = arms.get("markdown", "")
    handed_bc = arms.get("tags", {}).get("pac.handed_over_arm") == "BC"
    card = write_model_card(bc_arm_config(cfg) if handed_bc else cfg, facts,
                            Path(out_dir) / "model_card.md")
    set_model_description(cfg, version, card.read_text())

    # The parent run as the dashboard.
    from pac.plots import PLOT_DATA

    drawn_in = Path(figures_dir or Path(cfg.rlft.out_dir).parent / "figures")
    figures = write_figures(
        drawn_in, with_eval_curves(cfg, train_history or [], (children or {}).get("pretrain")),
        eval_rows or [], [dataclasses.asdict(r) for r in rows],
        champion.round if rows else None)
    for path in figures.values():
        tracker.log_artifact(path, "figures")
    latest = Path(out_dir) / "figures"  # what `dvc plots show` renders: the newest figures
    data = [drawn_in / name for name in PLOT_DATA.values() if (drawn_in / name).is_file()]
    for path in [*figures.values(), *data]:
        if path.parent.resolve() != latest.resolve():
            latest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, latest / path.name)
    tracker.log_artifact(card)
    if eval_rows:  # replaces the table evaluate_join logged (log_table overwrites)
        tracker.log_table(eval_rows, "evaluation/results_table.json")
    if rows:
        tracker.log_table([{"round": r.round, "iteration": r.label,
                            "success": r.overall["rate"], "success_low": r.overall["low"],
                            "success_high": r.overall["high"],
                            "pct_expert": r.pct_expert.get("rate"),
                            "episodes_added": r.episodes_added, "mean_return": r.mean_return,
                            "model_version": r.model_version,
                            "champion": r.round == champion.round} for r in rows],
                          "rlft/rounds_table.json")
    pretrained = _eval_all_row(eval_rows or [])
    metrics = _metric_cells("", head) | {
        "champion_version": float(version), "champion_round": float(champion.round),
        "wall_clock_s": wall,
    }
    if pretrained is not None:
        metrics |= {f"pretrained_{k}": float(pretrained[k]) for k in (
            "success_rate", "success_low", "success_high", "pct_expert", "pct_expert_low",
            "pct_expert_high")}
    bc_all = _eval_all_row(arms.get("bc_rows", []))
    if bc_all is not None:
        metrics |= {f"bc_{k}": float(bc_all[k]) for k in (
            "success_rate", "success_low", "success_high", "pct_expert", "pct_expert_low",
            "pct_expert_high") if bc_all.get(k) is not None}
    tracker.log_metrics(rounded(metrics), step=0)  # first: the UI lists metrics in logging order
    for r in rows:
        tracker.log_metrics(rounded({f"round_{k}": v for k, v in round_metrics(r).items()
                                     if k != "champion"}), step=r.round)
    from pac.rlft.rounds import format_cell, format_pct

    tracker.set_tags({"pac.champion_version": version, "pac.champion_round": champion.round,
                      "pac.success": success_text(head),
                      "pac.pct_expert": format_pct(head.pct_expert),
                      "pac.eval_tasks": ",".join(sorted(head.tasks)),
                      "pac.eval_episodes": int(head.overall["episodes"])}
                     | arms.get("tags", {}))
    exp_id = tracker.client.get_run(mlflow_run_id).info.experiment_id
    tracker.set_description(dashboard_markdown(
        cfg, head, version, exp_id, rows, eval_table, children or {}, figures, wall,
        mlflow_run_id, arms.get("markdown", "")))
    tracker.finish()
    registered = model_version(cfg, version)
    text = (f"PAC flow finished in {wall / 60:.1f} min: {cfg.tracking.registered_model}"
            f" v{version} ({champion.label}, success {format_cell(head.overall)} over"
            f" {int(head.overall['episodes'])} episodes of {len(head.tasks)} task(s),"
            f" {facts.params:,} parameters) holds @{CHAMPION}; model card {card},"
            f" MLflow run {mlflow_run_id}")
    return {"model_card": str(card), "registered_version": version, "text": text,
            "champion_round": champion.round, "champion_policy": champion.policy,
            "version_tags": registered["tags"], "figures": {k: str(v) for k, v in figures.items()}}


def _training_facts(cfg: PACConfig) -> tuple[float | None, str]:
    """(seconds, precision) of the pretraining run in train.out_dir (its ``mlflow_run.json``:
    the run id and the precision `auto` resolved to); (None, "") when it is not there."""
    import json

    from pac.tracking import client

    run_file = Path(cfg.train.out_dir) / "mlflow_run.json"
    if not run_file.is_file():
        return None, ""
    saved = json.loads(run_file.read_text())
    seconds = None
    if saved.get("run_id"):
        info = client(cfg).get_run(saved["run_id"]).info
        if info.end_time and info.start_time:
            seconds = (info.end_time - info.start_time) / 1000
    return seconds, str(saved.get("precision") or "")


def read_results_csv(path: str | Path) -> list[dict[str, Any]]:
    """An evaluation's results.csv as rows with numbers (the layout `pac.evaluation` writes)."""
    import csv

    text_columns = ("section", "level", "name", "horizon")  # horizon: "100" or "100-1000"
    with open(path) as fh:
        return [{k: (v if k in text_columns else float(v)) for k, v in r.items()}
                for r in csv.DictReader(fh)]


#: Training metrics the learning-curve figure draws (eq. 11 terms, alpha/beta for shares, and
#: the evaluation during training when it was on).
CURVE_KEYS = ("loss/total", "loss/policy_improvement", "loss/bc", "loss/q", "alpha", "beta",
              "eval/return_norm", "eval/success")


def training_history(cfg: PACConfig, train_dir: str | Path) -> list[dict[str, float]]:
    """The logged learning curves of the training run in `train_dir` (its MLflow run), one
    dict per logged update; empty when the folder has no run or the store is unreachable."""
    import json

    from pac.tracking import metric_history

    run_file = Path(train_dir) / "mlflow_run.json"
    if not run_file.is_file():
        return []
    run_id = json.loads(run_file.read_text()).get("run_id")
    steps: dict[int, dict[str, float]] = {}
    for key in CURVE_KEYS:
        for step, value in metric_history(cfg, run_id, key):
            steps.setdefault(step, {"step": step})[key] = value
    return [steps[s] for s in sorted(steps)]


def with_eval_curves(cfg: PACConfig, history: list[dict[str, float]], run_id: str | None
                     ) -> list[dict[str, float]]:
    """`history` (the trainer's logged losses) with the training run's evaluation-during-training
    points (``eval/*`` in MLflow, logged at their update) merged in by step."""
    from pac.tracking import metric_history

    if not run_id:
        return history
    steps = {int(h["step"]): dict(h) for h in history if "step" in h}
    for key in CURVE_KEYS:
        if key.startswith("eval/"):
            for step, value in metric_history(cfg, run_id, key):
                steps.setdefault(step, {"step": step})[key] = value
    return [steps[s] for s in sorted(steps)] if steps else history


def output_figures(cfg: PACConfig, out_dir: str | Path, train_dir: str | Path | None = None,
                   eval_dir: str | Path | None = None, rlft_dir: str | Path | None = None
                   ) -> dict[str, Path]:
    """The figures of the pipeline's output folders (what the DVC `figures` stage draws):
    learning curves of train.out_dir's run, success of eval.out_dir, the rounds of rlft.out_dir
    with the champion marked. A figure whose input is missing is left out."""
    import json

    from pac.plots import write_figures
    from pac.rlft.rounds import STATE_FILE, RoundRow, champion_row

    train_dir = Path(train_dir or cfg.train.out_dir)
    results = Path(eval_dir or cfg.eval.out_dir) / "results.csv"
    state = Path(rlft_dir or cfg.rlft.out_dir) / STATE_FILE
    rows = json.loads(state.read_text())["rows"] if state.is_file() else []
    best = champion_row([RoundRow(**r) for r in rows])
    return write_figures(out_dir, training_history(cfg, train_dir),
                         read_results_csv(results) if results.is_file() else [], rows,
                         best.round if best else None)
