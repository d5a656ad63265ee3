#!/usr/bin/env python3
"""Benchmark: runctl against the hand-written alternative (rsync -az + ssh nohup + ssh tail).

Starts a real sshd on loopback (the same stand the tests use; needs root), builds a project
of N small files, and measures:

1. ``runctl --help`` start-up against bare ``python -c pass``;
2. warm submit-to-first-log-line: ``runctl run --on HOST --follow`` against
   ``rsync -az`` + ``ssh nohup`` + ``ssh tail -f`` on the same host;
3. no-change resync of the tree: runctl's manifest check against ``rsync -az``.

Prints medians and ratios (>1 means runctl is faster).
Run as root: ``.venv/bin/python bench/submit.py [--files N] [--runs N]``
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.stands.sshd import SSHStand, start_sshd  # noqa: E402

SCRIPT = "import time\nprint('first line', flush=True)\ntime.sleep(0.2)\n"


def median_s(fn: Callable[[], float], runs: int) -> float:
    return statistics.median(fn() for _ in range(runs))


def timed(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def first_line_s(argv: list[str], env: dict[str, str], cwd: Path, shell: bool = False) -> float:
    """Seconds from starting ``argv`` until a line containing "first line" is printed."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv if not shell else " ".join(argv), env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            shell=shell, start_new_session=True)  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if b"first line" in line:
            elapsed = time.perf_counter() - start
            break
    else:
        raise RuntimeError(f"no first line from {argv}")
    os.killpg(proc.pid, signal.SIGKILL)  # the shell and its ssh/tail children
    proc.wait()
    return elapsed


def make_project(root: Path, files: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text("[project]\nname='bench'\n")
    (root / "job.py").write_text(SCRIPT)
    for i in range(files):
        d = root / "pkg" / f"m{i // 500:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.py").write_text(f"X = {i}\n" * 8)


def bench_project(
    work: Path, stand: SSHStand, env: dict[str, str], files: int, runs: int
) -> list[tuple[str, float, float]]:
    """Submit and resync timings for a project of ``files`` files, runctl vs naive."""
    runctl = [sys.executable, "-m", "runctl"]
    results: list[tuple[str, float, float]] = []
    proj = work / f"proj{files}"
    make_project(proj, files)
    subprocess.run([*runctl, "hosts", "add", f"h{files}", stand.alias(), "--replace"],
                   env=env, check=True, capture_output=True)  # fmt: skip
    # warm-up: installs the agent, syncs the tree, opens the ControlMaster
    subprocess.run([*runctl, "run", "--on", f"h{files}", "--wait", "job.py"], env=env,
                   cwd=proj, check=True, capture_output=True)  # fmt: skip
    ours = median_s(
        lambda: first_line_s(
            [*runctl, "run", "--on", f"h{files}", "--follow", "job.py"], env, proj
        ),
        runs,
    )
    ssh = ["ssh", "-F", str(stand.ssh_config)]
    dest = f"{stand.alias()}:bench{files}/"
    remote = (f"cd bench{files} && (nohup python3 job.py > log 2>&1 &) && "
              "sleep 0.05 && tail -f log")  # fmt: skip
    naive_cmd = [
        "rsync", "-az", "-e", shlex.quote(shlex.join(ssh)), f"{proj}/", dest, "&&",
        *ssh, stand.alias(), shlex.quote(remote),
    ]  # fmt: skip
    subprocess.run(" ".join(naive_cmd[:6]), shell=True, check=True)  # first full copy
    naive = median_s(lambda: first_line_s(naive_cmd, env, proj, shell=True), runs)
    results.append((f"warm submit → first log line ({files} files)", naive, ours))

    from runctl import config
    from runctl.core import sync
    from runctl.providers.ssh import SSHProvider
    from runctl.runtime import Runtime

    os.environ.update(RUNCTL_HOME=env["RUNCTL_HOME"], XDG_CONFIG_HOME=env["XDG_CONFIG_HOME"])
    rt = Runtime(config=config.load(), home=config.home())
    instance = SSHProvider(rt).get_instance(f"h{files}")
    assert instance is not None
    code_dir = f"{instance.remote_dir}/code/proj{files}/current"

    def resync() -> float:
        start = time.perf_counter()
        tree = sync.scan_tree(rt, proj, ())
        assert sync.is_known_synced(rt, instance, code_dir, tree)
        return time.perf_counter() - start

    ours_sync = median_s(resync, runs)
    naive_sync = median_s(lambda: timed(["sh", "-c", " ".join(naive_cmd[:6])], env),
                          runs)  # fmt: skip
    results.append((f"no-change resync ({files} files)", naive_sync, ours_sync))

    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if os.getuid() != 0:
        sys.exit("bench/submit.py needs root (it starts sshd and a test user)")
    work = Path(tempfile.mkdtemp(prefix="runctl-bench-"))
    stand: SSHStand = start_sshd(work / "sshd")
    env = dict(os.environ, RUNCTL_HOME=str(work / "home"), XDG_CONFIG_HOME=str(work / "xdg"))
    cfg = work / "xdg" / "runctl" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f'[ssh]\nconfig_file = "{stand.ssh_config}"\n')
    try:
        results: list[tuple[str, float, float]] = []

        # 1. start-up
        bare = median_s(lambda: timed([sys.executable, "-c", "pass"], env), args.runs * 2)
        entry = str(Path(sys.executable).parent / "runctl")  # the console script users run
        helped = median_s(lambda: timed([entry, "--help"], env), args.runs * 2)
        print(f"python -c pass {bare * 1000:.0f} ms; runctl --help {helped * 1000:.0f} ms "
              f"(+{(helped - bare) * 1000:.0f} ms)")  # fmt: skip

        for files in sorted({200, args.files}):
            results += bench_project(work, stand, env, files, args.runs)

        print(f"\n{'measure':<44} {'naive':>9} {'runctl':>9} {'ratio':>7}")
        for label, naive, ours in results:
            print(f"{label:<44} {naive:>8.3f}s {ours:>8.3f}s {naive / ours:>6.1f}x")
    finally:
        stand.stop()


if __name__ == "__main__":
    main()
