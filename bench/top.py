#!/usr/bin/env python3
"""Benchmark: what `runctl top` costs at rest on a long-used install (issue 21).

Builds the 10k jobs + 2k instances state of ``bench/listings.py`` in a temporary
RUNCTL_HOME, then measures (1) ``runctl top --json``: wall time and max RSS of the whole
process, medians of ``--runs``; (2) the live dashboard: ``runctl top`` run under a pty
(``script -q``), left ``--warmup-s`` to start, then the CPU seconds (user + system, from
/proc, the process and all it starts) it burns over ``--seconds`` at the default interval,
and its resident memory at the end.

Needs no network, no root. Run: ``.venv/bin/python bench/top.py [--runs 5] [--seconds 30]``
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from listings import ENTRY, RUNCTL, _cpu_s, build_state


def _runner() -> list[str]:
    return [str(ENTRY)] if ENTRY.exists() else RUNCTL


def top_json(env: dict[str, str], runs: int) -> tuple[list[float], list[float]]:
    """Wall seconds and max RSS (MiB) of each ``top --json`` (one warm-up run first)."""
    walls, rss = [], []
    for i in range(runs + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        start = time.perf_counter()
        done = subprocess.run([*_runner(), "top", "--json"], env=env, capture_output=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"top --json failed: {done.stderr.decode()[-500:]}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if i:
            walls.append(wall)
            # ru_maxrss of children is the largest of any child so far: it only shows a rise
            rss.append(max(peak, before) / 1024)
    return walls, rss


def _rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants (MiB)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            ppids = _chain(int(entry.name))
        except (OSError, ValueError):
            continue
        if pid in ppids:
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def _chain(pid: int) -> list[int]:
    from listings import _ancestors

    return _ancestors(pid)


def dashboard(env: dict[str, str], warmup_s: float, seconds: float) -> tuple[float, float]:
    """CPU seconds over ``seconds`` and RSS (MiB) of a live ``runctl top`` under a pty."""
    command = " ".join([*_runner(), "top"])
    proc = subprocess.Popen(["script", "-q", "-c", command, "/dev/null"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        time.sleep(warmup_s)
        before = _cpu_s(proc.pid)
        time.sleep(seconds)
        used = _cpu_s(proc.pid) - before
        rss = _rss_mib(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # script, top and what top started
        proc.wait()
    return used, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup-s", type=float, default=8.0)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--instances", type=int, default=2_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="runctl-bench-top-"))
    try:
        os.environ["RUNCTL_HOME"] = str(work / "home")
        build_state(work / "home", args.jobs, args.instances)
        env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "160", "LINES": "50", "TERM": "xterm"}
        env.pop("RUNCTL_CONFIG", None)
        walls, rss = top_json(env, args.runs)
        median = statistics.median(walls)
        print(f"top --json: wall median {median:.3f} s (min {min(walls):.3f}, "
              f"max {max(walls):.3f}), max RSS {max(rss):.0f} MiB")  # fmt: skip
        if args.seconds > 0:
            used, mib = dashboard(env, args.warmup_s, args.seconds)
            print(f"top (live, default interval): {used:.2f} CPU-s over {args.seconds:g} s "
                  f"= {100 * used / args.seconds:.1f}% of a core, RSS {mib:.0f} MiB")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
