"""Ingestion throughput: rollout files in a landing folder -> validated, deduplicated, committed.

    .venv/bin/python benchmarks/bench_ingest.py --episodes 500 --steps 100

Writes `--episodes` valid rollout files of point_mass.easy plus 10% malformed ones into a fresh
landing folder, then times `pac.rlft.ingest.ingest` (parse + validate + hash + quarantine + one
atomic commit + moves, under the landing and store locks) and a second ingest of re-delivered
copies (all found in the ledger). Wall time and this process's CPU time are both printed: on a
shared machine the CPU time is the steadier figure.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "rlft" / "ingest"))

from ingest_corpus import make_episode  # noqa: E402

from pac.rlft.ingest import PROCESSED, ingest, write_rollout  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--episodes", type=int, default=500)
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pac_bench_ingest_"))
    landing, data = tmp / "landing", tmp / "data"
    try:
        t0 = time.perf_counter()
        for i in range(args.episodes):
            write_rollout(landing / f"ep{i:05d}.npz", make_episode(steps=args.steps, seed=i))
        for i in range(args.episodes // 10):  # 10% broken deliveries: cut files
            data_bytes = (landing / f"ep{i:05d}.npz").read_bytes()
            (landing / f"cut{i:05d}.npz").write_bytes(data_bytes[: len(data_bytes) // 2])
        size = sum(p.stat().st_size for p in landing.iterdir())
        write_s = time.perf_counter() - t0

        t0, c0 = time.perf_counter(), time.process_time()
        report = ingest(landing, data)
        ingest_s, ingest_cpu = time.perf_counter() - t0, time.process_time() - c0
        assert report.episodes_added == args.episodes
        assert len(report.rejected) == args.episodes // 10

        for p in (landing / PROCESSED).glob("*.npz"):  # the robot sends everything again
            shutil.copy(p, landing / f"again_{p.name}")
        t0, c0 = time.perf_counter(), time.process_time()
        again = ingest(landing, data)
        dedup_s, dedup_cpu = time.perf_counter() - t0, time.process_time() - c0
        assert again.episodes_added == 0

        n = args.episodes + args.episodes // 10
        print(f"files: {n} ({args.episodes} valid x {args.steps} steps + {n - args.episodes} cut),"
              f" {size / 2**20:.1f} MiB; written in {write_s:.1f} s")
        print(f"ingest: {ingest_s:.2f} s = {n / ingest_s:.0f} files/s,"
              f" {args.episodes * args.steps / ingest_s:,.0f} transitions/s,"
              f" {size / 2**20 / ingest_s:.1f} MiB/s; CPU {ingest_cpu:.2f} s ="
              f" {n / ingest_cpu:.0f} files per CPU-second")
        print(f"per file: {1e3 * ingest_s / n:.2f} ms; re-delivery of all {args.episodes}"
              f" (every one found in the ledger): {dedup_s:.2f} s, CPU {dedup_cpu:.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
