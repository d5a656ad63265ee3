"""A run refused before it starts (--exclusive on a busy project) leaves no job behind."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import CLI, job_id_of, wait_for_log

SLEEPY = "import time\nprint('ready', flush=True)\ntime.sleep(60)\n"


def test_refused_exclusive_run_leaves_no_job(cli: CLI, project: Path) -> None:
    (project / "sleepy.py").write_text(SLEEPY)
    first = job_id_of(cli("run", "sleepy.py", cwd=project))
    wait_for_log(cli, first, "ready")
    refused = cli("run", "--exclusive", "hello.py", cwd=project)
    assert refused.returncode == 9 and "drop --exclusive" in refused.stderr
    assert [j["job_id"] for j in json.loads(cli("jobs", "--json").stdout)] == [first]
    assert cli("cancel", first).returncode == 0


def test_resume_without_a_checkpoint_says_so(cli: CLI, project: Path) -> None:
    job = job_id_of(cli("run", "hello.py", cwd=project))
    assert cli("wait", job).returncode == 0
    done = cli("checkpoint", "resume", job, cwd=project)
    assert done.returncode == 0, done.stderr
    assert "no checkpoint, so it starts from scratch" in done.stderr
    assert "from its latest checkpoint" not in done.stderr
    assert cli("wait", job_id_of(done)).returncode == 0
