"""Shared timing for the benchmarks: whole processes, alternated, summarized per tool.

Every measure is a list of sides (runctl first, then the peers); ``alternate`` runs them
A, B, C, A, B, C, ... so a slow moment on a shared machine hits every side alike, and
``Row`` keeps each side's samples for median / min / max and the ratio to runctl.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# A side: its tool label and a callable taking the run index and returning seconds taken.
Side = tuple[str, Callable[[int], float]]


@dataclass
class Row:
    section: str
    measure: str
    tool: str
    samples: list[float] = field(default_factory=list)
    note: str = ""
    runs: int | None = None  # when samples are a summary (min, median, max), not the runs
    ratio: bool = True  # False: the first row is a reference, not the runctl side

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def alternate(section: str, measure: str, sides: list[Side], runs: int) -> list[Row]:
    """Run every side ``runs`` times, interleaved; the first side is runctl."""
    rows = [Row(section, measure, tool) for tool, _ in sides]
    for run in range(runs):
        for row, (_, fn) in zip(rows, sides, strict=True):
            row.samples.append(fn(run))
    return rows


def timed(argv: list[str] | str, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> float:  # fmt: skip
    """Wall seconds of one whole process (``str``: through ``sh -c``); it must succeed."""
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, shell=isinstance(argv, str),
                          capture_output=True, text=True)  # fmt: skip
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        shown = argv if isinstance(argv, str) else " ".join(argv)
        raise RuntimeError(f"{shown} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return elapsed


def first_line(argv: list[str] | str, marker: bytes, env: dict[str, str] | None = None,
               cwd: Path | None = None) -> float:  # fmt: skip
    """Seconds from starting the process until it prints a line containing ``marker``;
    then the whole process group (shell, ssh, tail...) is killed."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, shell=isinstance(argv, str),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    assert proc.stdout is not None
    elapsed = None
    for line in proc.stdout:
        if marker in line:
            elapsed = time.perf_counter() - start
            break
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if elapsed is None:
        raise RuntimeError(f"no {marker!r} line from {argv}")
    return elapsed


def table(rows: list[Row]) -> list[tuple[str, ...]]:
    """Header + one line per row: median/min/max in seconds, ratio = this side's median over
    runctl's (the first side of the measure): above 1 means runctl is faster."""
    out: list[tuple[str, ...]] = [("section", "measure", "tool", "runs", "median s", "min s",
                                   "max s", "ratio / note")]  # fmt: skip
    base: dict[tuple[str, str], float] = {}
    for row in rows:
        key = (row.section, row.measure)
        if not row.samples:
            out.append((row.section, row.measure, row.tool, "0", "", "", "", row.note))
            continue
        ratio = f"{row.median / base[key]:.2f}x" if key in base and row.ratio else ""
        base.setdefault(key, row.median)
        runs = row.runs if row.runs is not None else len(row.samples)
        out.append((row.section, row.measure, row.tool, str(runs),
                    f"{row.median:.3f}", f"{min(row.samples):.3f}", f"{max(row.samples):.3f}",
                    ratio + (f" {row.note}" if row.note else "")))  # fmt: skip
    return out


def print_table(rows: list[Row]) -> None:
    lines = table(rows)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        cells = zip(line, widths, strict=True)
        print("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(cells)))


def markdown(rows: list[Row]) -> str:
    lines = table(rows)
    head = "| " + " | ".join(lines[0]) + " |"
    sep = "|" + "|".join(["---"] * 3 + ["---:"] * 5) + "|"
    body = ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |"
            for line in lines[1:]]  # fmt: skip
    return "\n".join([head, sep, *body])
