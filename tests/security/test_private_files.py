"""Another user on the same machine (or the same host) cannot read what runctl wrote.

A second local account is created for the test. RUNCTL_HOME lives in a directory everyone may
enter, so only the modes runctl sets protect it: the state DB, job dirs, logs, job specs,
checkpoints and the secrets file of a running job must all be unreadable by that account,
locally and in the host's runctl dir. Dirs and files left too open by an older runctl are
tightened on first use, with one line on stderr.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI, need

pytestmark = pytest.mark.integration

_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
PEER = "runctlpeer" if _WORKER == "gw0" else f"runctlpeer-{_WORKER}"

# Writes a checkpoint and an output, then holds until "go" appears in its outputs dir.
JOB = """\
import os, pathlib, time
ckpt = pathlib.Path(os.environ["RUNCTL_CHECKPOINT_DIR"])
ckpt.mkdir(parents=True, exist_ok=True)
(ckpt / "step_1.pt").write_bytes(b"weights")
out = pathlib.Path(os.environ["RUNCTL_OUTPUT_DIR"])
(out / "metrics.json").write_text("{}")
print("ready", flush=True)
deadline = time.time() + 60
while not (out / "go").exists() and time.time() < deadline:
    time.sleep(0.05)
"""


@pytest.fixture(scope="session")
def peer() -> str:
    """A second local account: the curious neighbour on a shared machine."""
    if os.geteuid() != 0:
        need("creating a second local user needs root")
    if shutil.which("runuser") is None:
        need("runuser is needed to act as the other user")
    from tests.stands.sshd import _ensure_user

    _ensure_user(PEER)  # serialised with the sshd stand's useradd (one lock)
    return PEER


def _readable_by(user: str, paths: list[Path]) -> list[str]:
    """The paths ``user`` can read (`cat` for files, `ls` for directories)."""
    script = (
        'for f; do if [ -d "$f" ]; then ls "$f"; else cat "$f"; fi >/dev/null 2>&1 '
        '&& echo "$f"; done'
    )
    argv = ["runuser", "-u", user, "--", "sh", "-c", script, "sh", *map(str, paths)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return done.stdout.splitlines()


def _tree(root: Path) -> list[Path]:
    """``root`` and everything below it, but the "go" files the test itself dropped."""
    found = [root]
    for folder, dirs, files in os.walk(root):
        found += [Path(folder) / n for n in dirs + files if n != "go"]
    return found


@pytest.fixture
def open_dir(monkeypatch: pytest.MonkeyPatch, project: Path) -> Iterator[Path]:
    """A 0755 directory outside pytest's private tmp dir, with RUNCTL_HOME and the project."""
    base = Path(tempfile.mkdtemp(prefix="runctl-private-", dir="/tmp"))
    os.chmod(base, 0o755)
    shutil.copytree(project, base / "proj")
    (base / "proj" / "writer.py").write_text(JOB)
    monkeypatch.setenv("RUNCTL_HOME", str(base / "home"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _start(cli: CLI, cwd: Path, *on: str) -> dict[str, Any]:
    done = cli("run", *on, "--json", "--secret", "HF_TOKEN", "writer.py", cwd=cwd)
    assert done.returncode == 0, done.stderr
    job: dict[str, Any] = json.loads(done.stdout)
    job["stderr"] = done.stderr
    log = Path(job["job_dir"]) / "log"
    deadline = time.monotonic() + 60
    while "ready" not in log.read_text():
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    return job


def _finish(cli: CLI, job: dict[str, Any]) -> None:
    (Path(job["job_dir"]) / "outputs" / "go").touch()
    waited = cli("wait", job["job_id"], "--json")
    assert waited.returncode == 0, waited.stderr


def test_another_local_user_reads_nothing_runctl_wrote(
    cli: CLI, peer: str, open_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf-local-" + os.urandom(8).hex())
    home = open_dir / "home"
    job = _start(cli, open_dir / "proj")
    job_dir = Path(job["job_dir"])
    running = [home / "state.db", job_dir / "secrets.json", job_dir / "job.json",
               job_dir / "log", home / "local" / "checkpoints"]  # fmt: skip
    assert all(p.exists() for p in running)
    assert _readable_by(peer, running) == []
    _finish(cli, job)
    # The project itself is the user's business (0755 here): the control is that the peer
    # can read that, so a "nothing readable" below is runctl's modes, not a broken runuser.
    assert _readable_by(peer, [open_dir / "proj" / "writer.py"]) != []
    assert _readable_by(peer, _tree(home)) == []
    assert home.stat().st_mode & 0o777 == 0o700
    for path in [home / "state.db", *home.glob("state.db-*")]:
        assert path.stat().st_mode & 0o777 == 0o600, path
    for path in _tree(job_dir) + _tree(home / "local" / "checkpoints"):
        assert path.stat().st_mode & 0o077 == 0, path


def test_too_open_home_and_database_are_tightened_with_a_notice(cli: CLI, open_dir: Path) -> None:
    home = open_dir / "home"
    assert cli("jobs", "--json").returncode == 0
    os.chmod(home, 0o755)
    os.chmod(home / "state.db", 0o644)
    done = cli("jobs", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
    notices = done.stderr.splitlines()
    assert len(notices) == 2 and all("made it" in n for n in notices), done.stderr
    assert home.stat().st_mode & 0o777 == 0o700
    assert (home / "state.db").stat().st_mode & 0o777 == 0o600
    again = cli("jobs", "--json")
    assert again.stderr == ""


@pytest.fixture
def host(cli: CLI, ssh_config: Path, sshd: Any) -> Iterator[tuple[str, Path]]:
    """testhost with a runctl dir an older runctl left world-readable (0755)."""
    remote = f".runctl-private-{os.urandom(4).hex()}"
    subprocess.run([*sshd.ssh_argv(), "--", "mkdir", "-m", "755", remote], check=True,
                   timeout=30)  # fmt: skip
    done = cli("hosts", "add", "testhost", "--remote-dir", remote)
    assert done.returncode == 0, done.stderr
    yield "testhost", Path(pwd.getpwnam(sshd.user).pw_dir) / remote
    cli("hosts", "rm", "testhost")


def test_another_user_on_the_host_reads_nothing_runctl_wrote(
    cli: CLI,
    peer: str,
    host: tuple[str, Path],
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf-host-" + os.urandom(8).hex())
    name, base = host
    (project / "writer.py").write_text(JOB)
    job = _start(cli, project, "--on", f"ssh:{name}")
    job_dir = Path(job["job_dir"])
    assert base.stat().st_mode & 0o777 == 0o700  # tightened by the first agent call
    assert f"runctl: {name}: {base} was open to other users (755); made it 0700" in job["stderr"]
    running = [job_dir / "secrets.json", job_dir / "job.json", job_dir / "log"]
    assert all(p.exists() for p in running)
    assert _readable_by(peer, running) == []
    _finish(cli, job)
    assert _readable_by(peer, _tree(base)) == []
    for path in _tree(job_dir) + _tree(base / "checkpoints"):
        assert path.stat().st_mode & 0o077 == 0, path
