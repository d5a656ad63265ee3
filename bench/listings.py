#!/usr/bin/env python3
"""Benchmark: listings and start-up against a large history (issue 21).

Builds, in a temporary RUNCTL_HOME, the state of a long-used install: 10,000 jobs, 2,000
cloud instances with their state history, and the events those wrote (~36k), written straight
through ``runctl.state.store`` (one transaction, so building takes seconds). Then times whole
``runctl`` processes, as a user runs them, alternating commands so a slow moment hits every
command alike, and prints median / min / max per command with ``python -c pass`` for
reference. Finally it measures the CPU a ``logs -f`` of an idle local job burns over 30 s
(the ``runctl logs`` process plus the agent's tail, from /proc), against ``tail -f``.

Needs no network, no root. Run: ``.venv/bin/python bench/listings.py [--runs 11]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNCTL = [sys.executable, "-m", "runctl"]
ENTRY = Path(sys.executable).with_name("runctl")

COMMANDS: list[tuple[str, list[str]]] = [
    ("python -c pass", [sys.executable, "-c", "pass"]),
    ("runctl jobs (empty state)", ["@empty", "jobs"]),
    ("runctl status", ["status"]),
    ("runctl resources list --no-refresh", ["resources", "list", "--no-refresh"]),
    ("runctl jobs", ["jobs"]),
    ("runctl events -n 50", ["events", "-n", "50"]),
    ("runctl jobs -n 10000", ["jobs", "-n", "10000"]),
    ("runctl wait JOB (finished)", ["wait", "@newest"]),
]


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_state(home: Path, jobs: int = 10_000, instances: int = 2_000, seed: int = 21) -> str:
    """Write the big state into ``home``/state.db; returns the newest job's id."""
    from runctl.state.db import transaction
    from runctl.state.store import Store

    rng = random.Random(seed)
    store = Store.open(home / "state.db")
    db = store.db
    now = datetime.now(UTC)
    begin = now - timedelta(days=90)
    providers = ["aws"] * 6 + ["runpod"] * 3 + ["lyceum"]
    inst_rows, state_rows, events = [], [], []
    placed: list[tuple[str, str]] = []
    for rid in range(1, instances + 1):
        provider = providers[rid % len(providers)]
        iid = f"i-{rid:08x}" if provider == "aws" else f"runctl-{rid:05d}"
        created = begin + timedelta(seconds=rng.uniform(0, 88 * 86400))
        # ~5% still running (these raise the cost warnings), some stopped, most terminated
        roll = rng.random()
        final = "running" if roll < 0.05 else "stopped" if roll < 0.15 else "terminated"
        ending = {"running": [], "stopped": ["stopping"], "terminated": ["terminating"]}
        path = ["pending", "running", *ending[final]] + ([final] if final != "running" else [])
        at = created
        for state in path:
            state_rows.append((rid, state, _iso(at)))
            events.append(
                (_iso(at), "instance.state", f"{provider}:{iid}", json.dumps({"to": state}))
            )
            at += timedelta(seconds=rng.uniform(30, 6 * 3600))
        data = {"storage_gb": 100} if rng.random() < 0.5 else {}
        tags = {"runctl:managed": "true", "runctl:project": f"proj{rid % 7}"}
        price, spot = round(rng.uniform(0.2, 4.0), 3), int(rng.random() < 0.3)
        meta = (json.dumps(tags), json.dumps(data), _iso(created), _iso(at))
        inst_rows.append((rid, provider, iid, f"runctl-{rid}", final, price, spot, *meta))
        placed.append((provider, iid))
    job_rows = []
    newest = ""
    for n in range(jobs):
        created = begin + timedelta(seconds=89 * 86400 * n / jobs)
        provider, iid = ("local", "local") if n % 3 == 0 else placed[n % len(placed)]
        job_id = f"train-{n:05d}-{n * 2654435761 % 16**6:06x}"
        newest = job_id
        state = rng.choice(["succeeded"] * 8 + ["failed", "cancelled"])
        spec = {"budget_usd": 50.0} if n % 50 == 0 else {}
        ended = created + timedelta(seconds=rng.uniform(60, 7200))
        job_rows.append((job_id, f"train-{n}", f"proj{n % 7}", provider, iid, state,
                         json.dumps(["python", "train.py", "--epochs", str(n % 10)]),
                         f"/tmp/jobs/{job_id}", f"/tmp/work/{job_id}", f"/tmp/ckpt/{job_id}",
                         json.dumps(spec), _iso(created), _iso(created + timedelta(seconds=2)),
                         _iso(ended), 0 if state == "succeeded" else 1, 1000 + n))  # fmt: skip
        events.append((_iso(created), "job.submitted", job_id,
                       json.dumps({"on": f"{provider}:{iid}"})))  # fmt: skip
        events.append((_iso(created), "job.state", job_id,
                       json.dumps({"from": "submitting", "to": "running"})))  # fmt: skip
        events.append((_iso(ended), "job.state", job_id,
                       json.dumps({"from": "running", "to": state})))  # fmt: skip
    events.sort(key=lambda e: e[0])
    with transaction(db):
        db.executemany("INSERT INTO instances VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", inst_rows)
        db.executemany(
            "INSERT INTO instance_states (resource_id, state, at) VALUES (?, ?, ?)", state_rows
        )
        db.executemany(
            "INSERT INTO jobs (job_id, name, project, provider, instance_id, state, argv,"
            " job_dir, workdir, checkpoint_dir, spec, created_at, started_at, ended_at,"
            " exit_code, pid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            job_rows,
        )
        db.executemany("INSERT INTO events (at, kind, subject, data) VALUES (?, ?, ?, ?)", events)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return newest


def _argv(spec: list[str], newest: str) -> tuple[list[str], bool]:
    if spec[0] == sys.executable:
        return spec, False
    empty = spec[0] == "@empty"
    args = [newest if a == "@newest" else a for a in spec[empty:]]
    runner = [str(ENTRY)] if ENTRY.exists() else RUNCTL
    return [*runner, *args], empty


def time_commands(home: Path, empty_home: Path, newest: str, runs: int) -> list[dict[str, object]]:
    env = {**os.environ, "RUNCTL_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "120"}
    env.pop("RUNCTL_CONFIG", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # "warm cache" includes the .pyc files
    samples: dict[str, list[float]] = {name: [] for name, _ in COMMANDS}
    cpus: dict[str, list[float]] = {name: [] for name, _ in COMMANDS}
    lines: dict[str, int] = {}
    for i in range(runs + 1):  # the first round warms the page cache and .pyc files
        for name, spec in COMMANDS:
            argv, empty = _argv(spec, newest)
            run_env = {**env, "RUNCTL_HOME": str(empty_home)} if empty else env
            used = _children_cpu_s()
            start = time.perf_counter()
            done = subprocess.run(argv, env=run_env, capture_output=True, text=True)
            elapsed = time.perf_counter() - start
            cpu = _children_cpu_s() - used
            if done.returncode != 0:
                raise SystemExit(f"{name} failed ({done.returncode}): {done.stderr.strip()}")
            if i:
                samples[name].append(elapsed)
                cpus[name].append(cpu)
            lines[name] = len((done.stdout + done.stderr).splitlines())
    return [
        {"command": name, "median_ms": round(statistics.median(v) * 1000, 1),
         "min_ms": round(min(v) * 1000, 1), "max_ms": round(max(v) * 1000, 1),
         "cpu_ms": round(statistics.median(cpus[name]) * 1000, 1), "lines": lines[name]}
        for name, v in samples.items()
    ]  # fmt: skip


def _children_cpu_s() -> float:
    """CPU seconds (user + system) of this process's finished children: on a busy machine
    this moves far less than wall time, so both are printed."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and all its descendants (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid_chain = _ancestors(int(entry.name))
        if pid in ppid_chain:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _ancestors(pid: int) -> list[int]:
    out = [pid]
    while pid > 1:
        try:
            pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            break
        out.append(pid)
    return out


def idle_follow_cpu(seconds: float) -> dict[str, float]:
    """CPU seconds burnt over ``seconds`` by `logs -f` on an idle job, and by `tail -f`."""
    home = Path(tempfile.mkdtemp(prefix="runctl-bench-follow-"))
    project = home / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname='idle'\n")
    (project / "idle.py").write_text(
        f"import time\nprint('started', flush=True)\ntime.sleep({seconds + 60:.0f})\n"
    )
    env = {**os.environ, "RUNCTL_HOME": str(home / "home"), "NO_COLOR": "1"}
    runner = [str(ENTRY)] if ENTRY.exists() else RUNCTL
    out = subprocess.run([*runner, "--json", "run", "idle.py"], env=env, cwd=project,
                         capture_output=True, text=True, check=True)  # fmt: skip
    job = json.loads(out.stdout)
    job_id = job.get("job_id") or job["job"]["job_id"]
    result: dict[str, float] = {}
    try:
        time.sleep(2)
        follow = subprocess.Popen(
            [*runner, "logs", "-f", job_id],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(3)  # past start-up: only the idle cost counts
        before = _cpu_s(follow.pid)
        time.sleep(seconds)
        result["runctl logs -f"] = round(_cpu_s(follow.pid) - before, 3)
        follow.kill()
        follow.wait()
        log = next(Path(env["RUNCTL_HOME"]).rglob("log"), None)
        if log is not None:
            tail = subprocess.Popen(["tail", "-f", str(log)], stdout=subprocess.DEVNULL)
            time.sleep(1)
            before = _cpu_s(tail.pid)
            time.sleep(seconds)
            result["tail -f"] = round(_cpu_s(tail.pid) - before, 3)
            tail.kill()
            tail.wait()
    finally:
        subprocess.run([*runner, "cancel", job_id], env=env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--instances", type=int, default=2_000)
    parser.add_argument("--follow-s", type=float, default=30.0, help="0 skips the logs -f part")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="runctl-bench-listings-"))
    try:
        os.environ["RUNCTL_HOME"] = str(work / "home")
        start = time.perf_counter()
        newest = build_state(work / "home", args.jobs, args.instances)
        events = _count(work / "home" / "state.db")
        print(f"built {args.jobs} jobs, {args.instances} instances, {events} events "
              f"in {time.perf_counter() - start:.1f} s")  # fmt: skip
        (work / "empty").mkdir()
        results = time_commands(work / "home", work / "empty", newest, args.runs)
        print(f"\n{'command':<36} {'median':>7} {'min':>7} {'max':>7} {'cpu':>7} {'lines':>6}"
              "  (ms; cpu: median user+sys)")  # fmt: skip
        for row in results:
            print(f"{row['command']:<36} {row['median_ms']:>7} {row['min_ms']:>7} "
                  f"{row['max_ms']:>7} {row['cpu_ms']:>7} {row['lines']:>6}")  # fmt: skip
        if args.follow_s > 0:
            print(f"\nidle follow, CPU seconds over {args.follow_s:g} s:")
            for name, cpu in idle_follow_cpu(args.follow_s).items():
                print(f"  {name:<20} {cpu:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _count(path: Path) -> int:
    import sqlite3

    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM events").fetchone()[0])


if __name__ == "__main__":
    main()
