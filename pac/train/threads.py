"""Intra-op threads of CPU training (``train.threads``): the cores other processes leave free.

OpenMP's intra-op threads meet at a barrier in every parallel region; beside another CPU-bound
process one of them is descheduled at each barrier and training collapses (bench_busy.py in
BENCHMARKS.md, "Training on a busy machine": 2 threads beside one busy process ran at a third of
their speed alone, 1 thread at the same speed as alone). ``train.threads: 0`` (auto) takes the
cores not busy when a single-process CPU run starts (measured from /proc/stat over
:data:`WINDOW_S`, at least 1); a resumed run keeps the count it started with (exact resume needs
the same reduction order). Multi-rank and GPU runs keep torch's default.
"""

from __future__ import annotations

import math
import os
import time

#: seconds over which the other processes' CPU use is measured at the start of a run
WINDOW_S = 0.5


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies over all CPUs from /proc/stat, None where it is absent."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (no guest)
    return total - idle, total


def busy_cores(window_s: float = WINDOW_S) -> float | None:
    """Cores kept busy by other processes over `window_s` seconds (this one sleeps meanwhile);
    None where /proc/stat cannot be read."""
    first = _cpu_jiffies()
    own = sum(os.times()[:2])
    time.sleep(window_s)
    second = _cpu_jiffies()
    if first is None or second is None or second[1] <= first[1]:
        return None
    cores = os.cpu_count() or 1
    share = (second[0] - first[0]) / (second[1] - first[1])  # of all cores
    own_cores = (sum(os.times()[:2]) - own) / window_s
    return max(0.0, share * cores - own_cores)


def auto_threads(cores: int, busy: float | None) -> int:
    """The free cores, rounded to the nearest whole core: at least 1, at most `cores`."""
    if busy is None:
        return cores
    return max(1, min(cores, math.floor(cores - busy + 0.5)))


def training_threads(setting: int, world_size: int, is_cpu: bool, resumed: int | None) -> int:
    """The intra-op thread count of a run: `setting` when > 0; auto (0) on a single-process CPU
    run: the count a resumed run started with, else the free cores now, never more than the
    process's count (OMP_NUM_THREADS or torch.set_num_threads, when set, still cap it); else
    torch's count."""
    import torch

    current = torch.get_num_threads()
    if setting > 0:
        return setting
    if world_size > 1 or not is_cpu:
        return current
    if resumed:
        return int(resumed)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(current, auto_threads(cores or 1, busy_cores()))
