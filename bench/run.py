#!/usr/bin/env python3
"""One entry point for the issue-21 benchmarks: runctl against the best manual path and the
fastest peers, side by side, as whole processes, runs alternated (A, B, C, A, B, C, ...).

Sections (``--only`` picks some, comma-separated):

- ``submit``   ``runctl run/exec --on HOST`` against ``rsync`` + ``ssh`` with and without a
               warm ControlMaster (bench/submit.py; needs root for the loopback sshd);
- ``s3``       ``runctl s3 upload/download`` against aws-cli, s5cmd and rclone on one
               SeaweedFS server (bench/s3.py; an absent peer is skipped with a note);
- ``listings`` start-up and listings over 10k jobs + 2k instances, against
               ``python -c pass`` (bench/listings.py).

Prints one table (median / min / max seconds; ratio = that row's median over runctl's, so
above 1 means runctl is faster; listings rows give CPU time and the time over python) and
writes it, with a description of the machine, to the ``## bench/run.py`` section of
docs/perf.md (every other section is kept).

    .venv/bin/python bench/run.py                    # real numbers: takes ~15-25 min
    .venv/bin/python bench/run.py --quick            # smoke test: tiny sizes, 1 run
    .venv/bin/python bench/run.py --only s3 --runs 3 --no-docs
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "src")]

from bench.timing import Row, markdown, print_table  # noqa: E402

SECTIONS = ("submit", "s3", "listings")
HEADING = "## bench/run.py"


def run_submit(quick: bool, runs: int) -> list[Row]:
    from bench import submit

    return submit.run_section(200 if quick else 10_000, runs)


def run_s3(quick: bool, runs: int) -> list[Row]:
    from bench import s3

    return s3.run_section(4 if quick else 1024, 100 if quick else 10_000, runs)


def run_listings(quick: bool, runs: int) -> list[Row]:
    from bench import listings

    jobs, instances = (300, 60) if quick else (10_000, 2_000)
    work = Path(tempfile.mkdtemp(prefix="runctl-bench-listings-"))
    try:
        os.environ["RUNCTL_HOME"] = str(work / "home")
        newest = listings.build_state(work / "home", jobs, instances)
        (work / "empty").mkdir()
        results = listings.time_commands(work / "home", work / "empty", newest, runs)
    finally:
        os.environ.pop("RUNCTL_HOME", None)
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    bare = float(str(results[0]["median_ms"]))  # python -c pass comes first
    for r in results:
        # listings.py already alternates the commands; it returns only the summary, so the
        # row carries min / median / max as its samples (their median is the median).
        samples = [float(str(r[k])) / 1000 for k in ("min_ms", "median_ms", "max_ms")]
        over = float(str(r["median_ms"])) - bare
        note = f"cpu {r['cpu_ms']} ms" + (f"; python +{over:.0f} ms" if rows else "")
        rows.append(Row("listings", f"{jobs} jobs + {instances} instances", str(r["command"]),
                        samples, note=note, runs=runs, ratio=False))  # fmt: skip
    return rows


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "absent"
    return ((done.stdout or done.stderr).strip().splitlines() or ["?"])[0]


def machine() -> list[str]:
    """What the numbers were measured on."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    bin_dir = Path(sys.executable).parent
    aws = "/opt/runctl-test-awscli/bin/aws"
    return [
        f"- CPUs: {os.cpu_count()} ({cpu}); memory {mem_kib / 2**20:.1f} GiB; "
        f"load average at start {os.getloadavg()[0]:.2f}",
        f"- Linux {platform.release()}; CPython {platform.python_version()}; "
        f"SQLite {sqlite3.sqlite_version}",
        f"- {_first_line(['rsync', '--version'])}; {_first_line(['ssh', '-V'])}",
        f"- aws-cli: {_first_line([aws, '--version'])}; "
        f"s5cmd: {_first_line([str(bin_dir / 's5cmd'), 'version'])}; "
        f"rclone: {_first_line(['rclone', 'version']) if shutil.which('rclone') else 'absent'}",
    ]


def write_docs(path: Path, rows: list[Row], argv: list[str], quick: bool, took_s: float) -> None:
    """Replace (or append) the ``## bench/run.py`` section; every other section stays. With
    ``--only``, the table rows of the sections not run are kept from the previous run."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = path.read_text() if path.exists() else ""
    lines = text.splitlines()
    start = lines.index(HEADING) if HEADING in lines else len(lines)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))  # fmt: skip
    ran = {row.section for row in rows}
    others = set(SECTIONS) - ran
    kept = [line for line in lines[start:end]
            if line.startswith("| ") and line.split("|")[1].strip() in others]  # fmt: skip
    body = [
        HEADING,
        "",
        "Every comparison of issue 21 side by side, from one command: whole processes,\n"
        "runs alternated; ratio = the row's median over runctl's (above 1: runctl is faster);\n"
        "listings rows give CPU time and the time over `python -c pass`. Written by:",
        "",
        "```bash",
        ".venv/bin/python bench/run.py   # as root (sshd stand); --quick: smoke test",
        "```",
        "",
        f"Measured {when} with `bench/run.py {' '.join(argv)}` in {took_s:.0f} s.",
    ]
    if quick:
        body.append("**These are `--quick` smoke-test numbers (tiny sizes, 1 run): not a "
                    "measurement.**")  # fmt: skip
    if kept:
        body.append(f"Rows of {', '.join(sorted(others))} are from an earlier run.")
    body += ["", "### Machine", "", *machine(), "", "### Numbers", "", markdown(rows), *kept, ""]
    if start < len(lines):
        lines[start:end] = body
    else:
        lines += ["", *body] if lines else body
    path.write_text("\n".join(lines).rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections of: {', '.join(SECTIONS)}")  # fmt: skip
    parser.add_argument("--runs", type=int, help="runs per side (default 7; --quick: 1)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument("--docs", type=Path, default=REPO / "docs" / "perf.md")
    parser.add_argument("--no-docs", action="store_true", help="print only")
    args = parser.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {SECTIONS}")
    runs = args.runs or (1 if args.quick else 7)
    runners = {"submit": run_submit, "s3": run_s3, "listings": run_listings}
    started = time.perf_counter()
    rows: list[Row] = []
    for name in SECTIONS:
        if name in only:
            print(f"== {name}", file=sys.stderr, flush=True)
            rows += runners[name](args.quick, runs)
    print_table(rows)
    if not args.no_docs:
        write_docs(args.docs, rows, sys.argv[1:], args.quick, time.perf_counter() - started)
        print(f"\nwrote the {HEADING!r} section of {args.docs}", file=sys.stderr)


if __name__ == "__main__":
    main()
