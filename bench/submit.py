#!/usr/bin/env python3
"""Benchmark: runctl's submit and sync against the best manual path (rsync + ssh).

Starts a real sshd on loopback (the stand the tests use; needs root), builds a project of
N small files, and times whole processes, alternated (runctl, manual with a warm ssh
ControlMaster, manual without one, ...):

1. warm submit to first log line: ``runctl run --on HOST -f job.py`` against
   ``rsync -a`` + ``ssh HOST 'cd DIR && python3 job.py'``;
2. no-change ``runctl exec --on HOST -- true`` against ``ssh HOST true`` (and with rsync);
3. one file changed, submit + run to the end, against ``rsync -a`` + ``ssh python3 job.py``;
4. full sync of the tree to an empty host (runctl: a fresh remote dir, so the agent install
   is counted too) against ``rsync -az`` into a fresh directory.

The manual ControlMaster is opened once and kept (ControlPersist), as a competent user's
``~/.ssh/config`` does; runctl keeps its own master the same way.
Run as root: ``.venv/bin/python bench/submit.py [--files N] [--runs N]``; or through
``bench/run.py --only submit``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.timing import Row, Side, alternate, first_line, print_table, timed  # noqa: E402
from tests.stands.sshd import SSHStand, start_sshd  # noqa: E402

SECTION = "submit"
SCRIPT = "print('first line', flush=True)\n"
MARKER = b"first line"
MDIR = "runctl-bench-mdir"  # the manual path's copy of the project on the host


def make_project(root: Path, files: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text("[project]\nname='bench'\n")
    (root / "job.py").write_text(SCRIPT)
    for i in range(files):
        d = root / "pkg" / f"m{i // 500:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.py").write_text(f"X = {i}\n" * 8)


@dataclass
class Bench:
    work: Path
    stand: SSHStand
    env: dict[str, str]
    proj: Path

    @property
    def runctl(self) -> list[str]:
        entry = Path(sys.executable).with_name("runctl")  # the console script users run
        return [str(entry)] if entry.exists() else [sys.executable, "-m", "runctl"]

    def ssh(self, master: bool) -> str:
        """The ssh command line a user types, with or without a persistent ControlMaster."""
        cm = (f"-o ControlMaster=auto -o ControlPath={self.work}/cm-%C -o ControlPersist=600"
              if master else "-o ControlMaster=no -o ControlPath=none")  # fmt: skip
        return f"ssh -F {self.stand.ssh_config} {cm}"

    def rsync(self, master: bool, flags: str, dest: str) -> str:
        return (f"rsync {flags} -e {shlex.quote(self.ssh(master))} "
                f"{self.proj}/ {self.stand.alias()}:{dest}/")  # fmt: skip

    def remote(self, master: bool, command: str) -> str:
        return f"{self.ssh(master)} {self.stand.alias()} {shlex.quote(command)}"

    def cli(self, *args: str) -> list[str]:
        return [*self.runctl, *args]


def setup(work: Path, files: int) -> Bench:
    stand = start_sshd(work / "sshd")
    env = dict(os.environ, RUNCTL_HOME=str(work / "home"), XDG_CONFIG_HOME=str(work / "xdg"),
               NO_COLOR="1")  # fmt: skip
    env.pop("RUNCTL_CONFIG", None)
    cfg = work / "xdg" / "runctl" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f'[ssh]\nconfig_file = "{stand.ssh_config}"\n')
    proj = work / "proj"
    make_project(proj, files)
    return Bench(work, stand, env, proj)


def measure(b: Bench, runs: int) -> list[Row]:
    env, proj = b.env, b.proj
    # Own remote dirs (runctl-bench-*): the stand's test user may be shared with tests.
    subprocess.run(b.cli("hosts", "add", "h", b.stand.alias(), "--remote-dir",
                         ".runctl-bench-h", "--replace"),
                   env=env, check=True, capture_output=True)  # fmt: skip
    # Warm-up, not timed: agent installed, tree synced, runctl's master open; the manual
    # copy made and its master open.
    timed(b.cli("run", "--on", "h", "--wait", "job.py"), env, proj)
    timed(b.rsync(True, "-a", MDIR), env)
    timed(b.remote(True, "true"), env)

    def manual_run(master: bool) -> str:
        go = b.remote(master, f"cd {MDIR} && exec python3 job.py")
        return f"{b.rsync(master, '-a', MDIR)} && {go}"

    def manual_true(master: bool) -> str:
        return f"{b.rsync(master, '-a', MDIR)} && {b.remote(master, 'true')}"

    rows: list[Row] = []
    rows += alternate(SECTION, "warm submit -> first log line", [
        ("runctl run -f", lambda _: first_line(b.cli("run", "--on", "h", "-f", "job.py"),
                                               MARKER, env, proj)),
        ("rsync -a + ssh (ControlMaster)", lambda _: first_line(manual_run(True), MARKER, env)),
        ("rsync -a + ssh (no master)", lambda _: first_line(manual_run(False), MARKER, env)),
    ], runs)  # fmt: skip
    rows += alternate(SECTION, "no change: exec -- true", [
        ("runctl exec -- true", lambda _: timed(b.cli("exec", "--on", "h", "--", "true"),
                                                env, proj)),
        ("ssh true (ControlMaster)", lambda _: timed(b.remote(True, "true"), env)),
        ("rsync -a + ssh true (ControlMaster)",
         lambda _: timed(manual_true(True), env)),
        ("rsync -a + ssh true (no master)",
         lambda _: timed(manual_true(False), env)),
    ], runs)  # fmt: skip

    changed = proj / "pkg" / "m000" / "f00000.py"

    def change_then(fn: Side) -> Side:
        tool, time_it = fn

        def run(i: int) -> float:
            changed.write_text(f"X = {tool!r}, {i}\n")  # one file differs from the last sync
            return time_it(i)

        return tool, run

    rows += alternate(SECTION, "one file changed: submit + run to end", [
        change_then(("runctl run -f", lambda _: timed(b.cli("run", "--on", "h", "-f", "job.py"),
                                                      env, proj))),
        change_then(("rsync -a + ssh (ControlMaster)", lambda _: timed(manual_run(True), env))),
        change_then(("rsync -a + ssh (no master)", lambda _: timed(manual_run(False), env))),
    ], runs)  # fmt: skip

    fresh = iter(range(10**6))

    def runctl_full(_: int) -> float:
        name = f"e{next(fresh)}"
        subprocess.run(b.cli("hosts", "add", name, b.stand.alias(), "--remote-dir",
                             f".runctl-bench-{name}", "--no-check"),
                       env=env, check=True, capture_output=True)  # fmt: skip
        return timed(b.cli("exec", "--on", name, "--", "true"), env, proj)

    def rsync_full(master: bool) -> Side:
        flavour = "ControlMaster" if master else "no master"
        return (
            f"rsync -az to empty dir ({flavour})",
            lambda _: timed(b.rsync(master, "-az", f"runctl-bench-full{next(fresh)}"), env),
        )

    rows += alternate(SECTION, "full sync to an empty host", [
        ("runctl exec (fresh host dir)", runctl_full), rsync_full(True), rsync_full(False),
    ], runs)  # fmt: skip
    files = sum(1 for _ in proj.rglob("*") if _.is_file())
    for row in rows:
        row.measure += f" ({files} files)"
    return rows


def run_section(files: int, runs: int) -> list[Row]:
    if os.getuid() != 0:
        note = "skipped: needs root (starts sshd and a test user)"
        return [Row(SECTION, "submit/sync", "runctl", note=note)]
    work = Path(tempfile.mkdtemp(prefix="runctl-bench-submit-"))
    b = setup(work, files)
    try:
        return measure(b, runs)
    finally:
        clean = "rm -rf runctl-bench-* .runctl-bench-*"
        subprocess.run(b.remote(True, clean), shell=True, capture_output=True)
        subprocess.run(f"{b.ssh(True)} -O exit {b.stand.alias()}", shell=True,
                       capture_output=True)  # fmt: skip
        b.stand.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print_table(run_section(args.files, args.runs))


if __name__ == "__main__":
    main()
