"""The GPU check's CPU dry run (benchmarks/gpu_check.py --dry-run), end to end in a subprocess.

What it guards: the script keeps running on machines without a GPU, writes its table with every
part, and its checks hold on the CPU: the resumed run is bit-identical to the uninterrupted one,
the first-update loss of the in-process run equals the one `pac train` computes in a second
process (an independent run from the same params), memory is measured, the inference rows give
finite rates. 130-190 s on the shared 2-core machine at load average 5-8 (most of it MLflow's
store creation and DeepSpeed's imports, in two processes), so it is marked slow.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.mark.slow
def test_gpu_check_dry_run_fills_every_row(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env["PYTHONPATH"] = str(ROOT)
    env.pop("MLFLOW_TRACKING_URI", None)
    out = tmp_path / "gpu_check"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    report = json.loads((out / "gpu_check.json").read_text())
    rows = report["rows"]
    assert report["header"]["dry_run"] is True and report["header"]["device"] == "cpu"
    assert [r["part"] for r in rows] == ["peak", "train", "parity", "train2", "resume",
                                         "infer", "infer", "infer", "zero3"]
    status = {(r["part"], r["check"]): r["status"] for r in rows}
    assert all(s == "ok" for (part, _), s in status.items() if part != "train2"), status
    by = {r["part"]: r for r in rows}
    assert by["train2"]["status"] == "skipped"  # one device: no second rank

    # the printed table and the markdown file carry every row
    md = (out / "gpu_check.md").read_text()
    for r in rows:
        assert f"| {r['part']} | {r['check']} | {r['status']} |" in md
        assert f"| {r['part']} | {r['check']} |" in proc.stdout

    peak = by["peak"]["values"]["flops"]
    assert peak > 1e8  # any CPU multiplies faster than 0.1 GFLOP/s

    train = by["train"]["values"]
    assert train["peak_memory_bytes"] > 0 and train["plan_bytes"] > 0
    assert train["updates_per_s"] > 0 and 0 < train["mfu"] < 1
    assert len(train["losses"]) == 4 and all(math.isfinite(v) for v in train["losses"])

    parity = by["parity"]["values"]  # a second process (`pac train`) from the same params
    assert parity["device_loss"] == train["losses"][0]
    assert abs(parity["cpu_fp32_loss"] - parity["device_loss"]) <= 1e-5 * abs(
        parity["cpu_fp32_loss"])

    resume = by["resume"]["values"]  # exact on the CPU
    assert resume["exact"] is True and resume["max_relative"] == 0.0
    assert resume["resumed_from"] == 2
    assert resume["uninterrupted_next_loss"] == train["losses"][2]
    assert resume["next_loss"] == train["losses"][2]

    for r in rows:
        if r["part"] == "infer":
            v = r["values"]
            assert 0 < v["hz_argmax"] < math.inf and 0 < v["hz_q_rerank_10"] < math.inf

    zero3 = by["zero3"]["values"]
    assert zero3["scale"] == "tiny" and zero3["peak_bytes"] > 0 and zero3["plan_bytes"] > 0
