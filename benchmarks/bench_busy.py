"""Training on a busy machine: `pac train` updates/s alone and beside one other CPU-bound
process, for each thread setting, measured side by side in one run.

    python benchmarks/bench_busy.py [--updates 300] [--settings auto one]

Each arm is a real `pac train` process (the default tiny model and batch, bench_train.py's small
dm_control dataset, MLflow to a temporary store); "busy" starts one pure-Python busy loop (one
core's worth of CPU) before it and stops it after. updates/s is the median of the trainer's
`steps_per_s` windows after the first (warm-up). Settings (`train.threads`, pac.train.threads):

* cores: one intra-op thread per core, torch's own count (what training used before
  `train.threads`);
* auto: `train.threads: 0`, the default: the cores other processes leave free at the start;
* cores, passive wait: one thread per core with ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at
  barriers instead of spinning);
* one: one thread.

Results go into BENCHMARKS.md by hand ("Training on a busy machine").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_train import DATA, make_data

SETTINGS: dict[str, dict[str, list[str] | dict[str, str]]] = {
    "cores": {"set": [f"train.threads={os.cpu_count()}"]},  # torch's own count: before
    "auto": {"set": []},  # train.threads: 0, the default
    "cores, passive wait": {"set": [f"train.threads={os.cpu_count()}"],
                            "env": {"OMP_WAIT_POLICY": "PASSIVE"}},
    "one": {"set": ["train.threads=1"]},
}


def run_train(tmp: Path, name: str, setting: dict, updates: int, busy: bool) -> float:
    """updates/s of one `pac train` run (median of the logging windows after the first)."""
    out = tmp / name
    log_every = max(1, updates // 8)
    cmd = [sys.executable, "-m", "pac.cli", "train",
           *[a for o in [*DATA, f"data.root={tmp / 'data'}", f"train.steps={updates}",
                         f"train.log_every={log_every}", "train.checkpoint_every=100000",
                         "train.eval_every=0", f"train.out_dir={out}",
                         f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
                         f"tracking.artifact_dir={tmp / 'artifacts'}", *setting["set"]]
             for a in ("--set", o)]]
    hog = (subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None)
    try:
        time.sleep(1.0)  # the busy process is running when training starts
        subprocess.run(cmd, check=True, env=os.environ | setting.get("env", {}),
                       capture_output=True, text=True)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    from pac.config import load_config
    from pac.tracking import metric_history

    cfg = load_config(overrides=[f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
                                 f"tracking.artifact_dir={tmp / 'artifacts'}"])
    run_id = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    windows = [v for _, v in metric_history(cfg, run_id, "steps_per_s")]
    return statistics.median(windows[1:] or windows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        make_data(tmp / "data")
        rows = []
        for setting in args.settings:
            slug = setting.replace(" ", "").replace(",", "-")
            alone = run_train(tmp, f"{slug}-alone", SETTINGS[setting], args.updates, False)
            busy = run_train(tmp, f"{slug}-busy", SETTINGS[setting], args.updates, True)
            rows.append((setting, alone, busy))
            print(f"{setting}: alone {alone:.2f} updates/s, beside one busy process"
                  f" {busy:.2f} ({busy / alone:.2f}x)", flush=True)
    base = rows[0][1]
    print(f"\n{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {args.updates} updates a run\n")
    print("| threads | alone (updates/s) | beside one busy process | busy / alone |"
          f" busy / {rows[0][0]} alone |")
    print("|---|---:|---:|---:|---:|")
    for setting, alone, busy in rows:
        print(f"| {setting} | {alone:.2f} | {busy:.2f} | {busy / alone:.2f} |"
              f" {busy / base:.2f} |")


if __name__ == "__main__":
    main()
