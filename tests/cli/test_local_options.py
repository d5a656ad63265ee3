"""`runctl local` takes run's job options, and refuses --on elsewhere instead of ignoring it."""

from __future__ import annotations

import json
from pathlib import Path

from runctl.cli.jobs import local, run
from tests.conftest import CLI


def test_local_refuses_another_machine_with_a_hint(cli: CLI, project: Path) -> None:
    done = cli("local", "--on", "ssh:nosuchhost", "hello.py", cwd=project)
    assert done.returncode == 2
    assert "runs on this machine only" in done.stderr
    assert "runctl run --on ssh:nosuchhost -f hello.py" in done.stderr
    assert json.loads(cli("jobs", "--json").stdout) == []  # nothing was started or recorded
    here = cli("local", "--on", "local", "hello.py", "--lines", "1", cwd=project)
    assert here.returncode == 0 and "line 1" in here.stdout, here.stderr


def test_local_takes_runs_job_options(cli: CLI, project: Path) -> None:
    # Everything `run` takes except what only makes sense for a detached or managed job.
    only_run = {p.name for p in run.params} - {p.name for p in local.params}
    assert only_run == {"follow", "wait_", "recover", "max_restarts", "recover_policy"}
    dry = cli("local", "--dry-run", "--json", "hello.py", cwd=project)
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)  # local jobs run in place: the plan says nothing is sent
    assert (
        plan["root"] == str(project) and plan["files"] == [] and "nothing is sent" in plan["note"]
    )
    timed = cli("local", "--max-duration", "1h", "--name", "timed", "hello.py", cwd=project)
    assert timed.returncode == 0, timed.stderr
    assert json.loads(cli("jobs", "--json").stdout)[0]["name"] == "timed"


def test_exec_passes_everything_after_the_command_to_it(cli: CLI, project: Path) -> None:
    done = cli("exec", "python3", "-c", "import sys; print(sys.argv[1:])", "--name", "x",
               cwd=project)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "['--name', 'x']" in done.stdout
    dashed = cli("exec", "--", "python3", "-c", "import sys; print(sys.argv[1:])", cwd=project)
    assert dashed.returncode == 0 and "[]" in dashed.stdout, dashed.stderr
