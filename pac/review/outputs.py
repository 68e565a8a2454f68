"""Where the review commands find a run's outputs when they are not told.

A flow run (`make run`) writes under ``runs/flow/<id>/{pretrain,eval,rlft,figures}``; the
stand-alone commands (`pac train`, `pac eval`, `pac rlft`) write to ``train.out_dir``,
``eval.out_dir`` and ``rlft.out_dir``. `pac figures` and `pac eval` use whichever of the two
was written last, and say which.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pac.config import PACConfig

#: Where the flow keeps each run's output folders (pac.pipeline.run_workspace_overrides).
FLOW_ROOT = Path("runs/flow")


@dataclass(frozen=True)
class OutputDirs:
    """The training, evaluation and RLFT folders to read, and where they came from."""

    train: Path
    eval: Path
    rlft: Path
    origin: str  # "given", "params" (the config's out_dirs) or "flow run <id>"


def newest_flow_run(root: str | Path = FLOW_ROOT) -> Path | None:
    """The flow run folder under `root` written last (by the newest file in it), or None."""
    runs = [p for p in Path(root).glob("*") if p.is_dir()]
    return max(runs, key=_last_write) if runs else None


def _last_write(folder: Path) -> float:
    """The newest modification time of `folder` and the files directly in its sub-folders."""
    times = [folder.stat().st_mtime]
    times += [p.stat().st_mtime for sub in folder.iterdir() if sub.is_dir()
              for p in sub.iterdir()]
    return max(times)


def _inputs(train: Path, eval_dir: Path, rlft: Path) -> list[Path]:
    """The files the figures are drawn from (those that exist)."""
    from pac.rlft.rounds import STATE_FILE

    files = [train / "mlflow_run.json", eval_dir / "results.csv", rlft / STATE_FILE]
    return [f for f in files if f.is_file()]


def output_dirs(cfg: PACConfig, train: str | Path | None = None,
                eval_dir: str | Path | None = None, rlft: str | Path | None = None,
                root: str | Path = FLOW_ROOT) -> OutputDirs:
    """The folders to review: those given (the others from the config); with none given, the
    config's out_dirs or the newest flow run's, whichever holds the newer outputs."""
    params = OutputDirs(Path(train or cfg.train.out_dir), Path(eval_dir or cfg.eval.out_dir),
                        Path(rlft or cfg.rlft.out_dir), "given" if train or eval_dir or rlft
                        else "params")
    flow = newest_flow_run(root)
    if params.origin == "given" or flow is None:
        return params
    theirs = _inputs(flow / "pretrain", flow / "eval", flow / "rlft")
    ours = _inputs(params.train, params.eval, params.rlft)
    if theirs and (not ours or max(f.stat().st_mtime for f in theirs)
                   > max(f.stat().st_mtime for f in ours)):
        return OutputDirs(flow / "pretrain", flow / "eval", flow / "rlft", f"flow run {flow.name}")
    return params


def looked_in(dirs: OutputDirs) -> str:
    """One line naming the folders searched, for a message that says what to pass."""
    return (f"looked in {dirs.train}, {dirs.eval} and {dirs.rlft} ({dirs.origin}) and for the"
            f" newest flow run under {FLOW_ROOT}/")


def champion_policy(run_dir: Path) -> Path | None:
    """The inference checkpoint a flow run handed over: its RLFT champion round's policy, else
    its pretrained policy; None when the folder holds neither."""
    from pac.rlft.rounds import STATE_FILE, RoundRow, champion_row

    state = run_dir / "rlft" / STATE_FILE
    if state.is_file():
        best = champion_row([RoundRow(**r) for r in json.loads(state.read_text())["rows"]])
        if best is not None and Path(best.policy).is_dir():
            return Path(best.policy)
    policy = run_dir / "pretrain" / "policy"
    return policy if policy.is_dir() else None
