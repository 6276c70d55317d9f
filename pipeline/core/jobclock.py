"""Where a stage job's time goes: process start and imports, set-up, compute.

Per-video jobs are short and many (THUMOS14: 1,239; ActivityNet 1.2: 21,606),
so what a job pays before its first frame (interpreter, imports, weights,
compile) decides much of a run's cost. Stages record it in their metadata
(``timing``); pipeline/costs.py and bench/job_overhead.py read it.
"""
from __future__ import annotations

import os
import time


def process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc; None elsewhere): interpreter start and imports."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return round(uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"), 3)
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_mb() -> float:
    """This process's peak resident memory. A warm-started job is not a child of the process Snakemake
    benchmarks (pipeline/warm.py), so stages record their own."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class Stopwatch:
    """Seconds since creation, read as often as needed."""

    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return round(time.perf_counter() - self.t0, 3)
