"""Shared fixtures: an isolated RUNCTL_HOME per test, a CLI runner, and real SSH stands."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI") == "true"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--live", action="store_true", help="run tests against real clouds")


def pytest_configure(config: pytest.Config) -> None:
    # Started with SIGINT ignored (`nohup`, `cmd &` from a script), pytest would hand that
    # disposition to every child it spawns (ignored signals survive exec), and the Ctrl-C
    # tests would interrupt nothing. A Python-level handler is reset to the default on exec.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# Under pytest-xdist (`-n N --dist loadgroup`), tests that share a machine-wide resource run
# on one worker, in order: fixed network-namespace host indices, the one Slurm cluster, the
# dockerd stand. Every other test is scheduled on its own. The list is longest-first, and
# collection is sorted by it, so the 20-interruption test starts at once instead of ending last.
_XDIST_GROUPS = (
    ("tests/recover/test_spot.py", "netns-31-32"),
    ("tests/integration/test_multinode.py", "netns-21-22"),
    ("tests/integration/test_netns.py", "netns-7"),
    ("tests/docker/", "dockerd"),
    ("tests/providers/slurm/", "slurm"),
    ("tests/stands/", "stands"),
)


def _stand_group(nodeid: str) -> tuple[int, str]:
    path = nodeid.split("::", 1)[0]
    for rank, (prefix, group) in enumerate(_XDIST_GROUPS):
        if path.startswith(prefix):
            return rank, group
    return len(_XDIST_GROUPS), nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """``--dist loadgroup`` with the groups above.

    Not xdist's own loadgroup: it rewrites node ids to carry ``xdist_group`` marks, which
    pytest 9.2 no longer lets it do (pytest-xdist#1386), and then silently groups nothing.
    """
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class StandGroups(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return _stand_group(nodeid)[1]

    return StandGroups(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: _stand_group(item.nodeid)[0])  # stable within a group
    if config.getoption("--live"):
        return
    skip = pytest.mark.skip(reason="live cloud test; pass --live to run")
    for item in items:
        if "live" in item.keywords:
            item.add_marker(skip)


def need(reason: str | None) -> None:
    """Skip when a stand is unavailable — except in CI, where that is a failure."""
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"test stand unavailable in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def runctl_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "runctl-home"
    monkeypatch.setenv("RUNCTL_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.delenv("RUNCTL_CONFIG", raising=False)
    monkeypatch.delenv("RUNCTL_DEBUG", raising=False)
    return home


@dataclass
class CLI:
    """Runs the real ``runctl`` in a subprocess, as a user would."""

    cwd: Path
    started: list[subprocess.Popen[str]] = field(default_factory=list)

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        timeout: float = 120,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        # Its own process group, so a timeout kills the CLI and every helper it started
        # (ssh, rsync) instead of leaving them to trip up the next test.
        with subprocess.Popen(
            [sys.executable, "-m", "runctl", *args],
            cwd=cwd or self.cwd,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            process_group=0,
        ) as proc:
            try:
                out, err = proc.communicate(input, timeout=timeout)
            except BaseException:
                _kill_group(proc)
                raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def popen(self, *args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runctl", *args],
            cwd=cwd or self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            process_group=0,
        )
        self.started.append(proc)
        return proc

    def kill_leftovers(self) -> None:
        """Kill what a test started with `popen` and left running (a failed assertion)."""
        for proc in self.started:
            if proc.poll() is None:
                _kill_group(proc)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def job_id_of(done: subprocess.CompletedProcess[str]) -> str:
    """The job id a successful `runctl run` printed as its last stdout line."""
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def wait_for_log(cli: CLI, job: str, text: str, timeout: float = 30) -> None:
    """Poll `runctl logs JOB` until ``text`` shows up (fails the test after ``timeout``)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in cli("logs", job).stdout:
            return
        time.sleep(0.1)
    pytest.fail(f"{text!r} never appeared in the log of {job}")


@pytest.fixture
def cli() -> Iterator[CLI]:
    runner = CLI(cwd=REPO)
    yield runner
    runner.kill_leftovers()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A small project tree (marker file + scripts) outside the repo."""
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'proj'\n")
    (root / "hello.py").write_text((REPO / "examples" / "hello.py").read_text())
    (root / "pkg" / "util.py").write_text("VALUE = 1\n")
    return root


def _write_user_config(home_cfg: Path, text: str) -> None:
    home_cfg.parent.mkdir(parents=True, exist_ok=True)
    home_cfg.write_text(text)


# ---------------------------------------------------------------------------- ssh stands


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from tests.stands.sshd import ssh_available, start_sshd

    need(ssh_available())
    stand = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield stand
    stand.stop()


@pytest.fixture
def ssh_config(sshd: object, runctl_home: Path, tmp_path: Path) -> Path:
    """Point runctl at the stand's ssh_config through the user config file."""
    cfg = tmp_path / "xdg-config" / "runctl" / "config.toml"
    _write_user_config(cfg, f'[ssh]\nconfig_file = "{sshd.ssh_config}"\n')  # type: ignore[attr-defined]
    return cfg


@pytest.fixture(scope="session")
def netns_host(sshd: object) -> Iterator[object]:
    from tests.stands.netns import netns_available, start_netns_host

    need(netns_available())
    host = start_netns_host(sshd, 7)  # type: ignore[arg-type]
    yield host
    host.stop()


# ------------------------------------------------------------------------------ S3 stand


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One SeaweedFS (real S3 server) shared by every test that needs S3."""
    from tests.stands.seaweed import acquire_shared, release_shared, seaweed_available

    need(seaweed_available())
    yield acquire_shared(tmp_path_factory.mktemp("seaweed"))
    release_shared()
