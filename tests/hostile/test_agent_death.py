"""A killed agent must not leave its job running unsupervised."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import CLI, job_id_of, wait_for_log
from tests.hostile.conftest import assert_final_job_answers_fast

WORKER = """\
import subprocess, sys, time
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print("ready", helper.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie waiting for its parent to reap it is gone as far as the user is concerned.
    return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()


@pytest.fixture(params=["local", "ssh"])
def on(request: pytest.FixtureRequest, cli: CLI) -> list[str]:
    if request.param == "local":
        return []
    request.getfixturevalue("ssh_config")
    remote = f".runctl-death-{os.urandom(3).hex()}"
    assert cli("hosts", "add", "box", "testhost", "--remote-dir", remote).returncode == 0
    return ["--on", "ssh:box"]


def test_killing_the_agent_stops_the_job_and_marks_it_lost(
    cli: CLI, project: Path, on: list[str]
) -> None:
    (project / "worker.py").write_text(WORKER)
    job = job_id_of(cli("run", *on, "worker.py", cwd=project))
    wait_for_log(cli, job, "ready")
    info = json.loads(cli("status", job, "--json").stdout)
    job_dir = Path(info["job_dir"])
    agent_pid = json.loads((job_dir / "state.json").read_text())["agent_pid"]
    job_pid = int((job_dir / "pid").read_text())
    line = next(ln for ln in cli("logs", job).stdout.splitlines() if ln.startswith("ready"))
    helper_pid = int(line.split()[1])
    assert _alive(job_pid) and _alive(helper_pid)

    os.kill(agent_pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while (_alive(job_pid) or _alive(helper_pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(job_pid), "the job kept running without its agent"
    assert not _alive(helper_pid), "a process of the job's group kept running"
    assert json.loads(cli("status", job, "--json").stdout)["state"] == "lost"
    assert_final_job_answers_fast(cli, job)
    note = "the agent supervising this job died"
    while note not in (job_dir / "log").read_text() and time.monotonic() < deadline + 5:
        time.sleep(0.1)
    assert note in (job_dir / "log").read_text()
