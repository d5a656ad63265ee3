"""Every state converges: a job left ``submitting`` by a killed runctl is settled from what its
host knows by the next `jobs` (or `status`, `top`, `reconcile`), and a job that never started
is cancelled without asking an agent about it."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from runctl.core.reconcile_jobs import NEVER_STARTED, submitter
from runctl.models import Job, JobState
from runctl.state.db import now_iso
from runctl.state.store import Store
from tests.conftest import CLI, job_id_of


def _killed_submitter() -> dict[str, object]:
    """What a runctl killed mid-submit left in its job's spec: a pid that is gone."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return {"pid": proc.pid, "host": socket.gethostname(), "start_ticks": 1, "boot_id": ""}


def _submitting(job_id: str, provider: str, instance: str, job_dir: str, who: object) -> Job:
    return Job(job_id=job_id, name="hello", project="proj", provider=provider,
               instance_id=instance, state=JobState.SUBMITTING, argv=("hello.py",),
               job_dir=job_dir, workdir="w", checkpoint_dir="c", created_at=now_iso(),
               spec={"submitted_by": who})  # fmt: skip


def _states(cli: CLI, *args: str) -> dict[str, dict[str, object]]:
    done = cli("jobs", "-n", "100", "--json", *args)
    assert done.returncode == 0, done.stderr
    return {j["job_id"]: j for j in json.loads(done.stdout)}


def test_jobs_settles_submits_whose_runctl_was_killed(
    cli: CLI, remote: str, project: Path, runctl_home: Path
) -> None:
    ran = job_id_of(cli("run", "--on", "box", "hello.py", cwd=project))
    assert cli("wait", ran).returncode == 0
    store = Store.open(runctl_home / "state.db")
    # Killed after the agent started it, before recording that: the host ran it to the end.
    spec = {**store.get_job(ran).spec, "submitted_by": _killed_submitter()}
    store.update_job(ran, state=JobState.SUBMITTING, spec=spec)
    store.db.execute("UPDATE jobs SET started_at = NULL, pid = NULL WHERE job_id = ?", (ran,))
    jobs_dir = f"{remote}/jobs"
    store.insert_job(_submitting("never-000001", "ssh", "box", f"{jobs_dir}/never-000001",
                                 _killed_submitter()))  # killed mid-sync  # fmt: skip
    store.insert_job(_submitting("flying-000001", "ssh", "box", f"{jobs_dir}/flying-000001",
                                 submitter()))  # this process: a submit in flight  # fmt: skip

    states = _states(cli)
    assert states[ran]["state"] == "succeeded" and states[ran]["exit_code"] == 0
    assert states["never-000001"]["state"] == "lost"
    assert states["never-000001"]["note"] == NEVER_STARTED
    assert states["flying-000001"]["state"] == "submitting"  # its runctl records it
    status = json.loads(cli("status", "never-000001", "--json").stdout)
    assert status["note"] == NEVER_STARTED
    logs = cli("logs", "never-000001")
    assert logs.returncode == 5 and "before it started" in logs.stderr

    # Cancelling a submit that has not started yet: recorded cancelled, no agent error; the
    # runctl submitting it carries the cancel out if it does start it.
    done = cli("cancel", "flying-000001", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "cancelled"
    assert _states(cli, "--no-refresh")["flying-000001"]["state"] == "cancelled"


def test_cancel_of_a_job_that_never_started_only_records_it(
    cli: CLI, remote: str, runctl_home: Path
) -> None:
    store = Store.open(runctl_home / "state.db")
    store.insert_job(_submitting("never-000002", "ssh", "box", f"{remote}/jobs/never-000002",
                                 _killed_submitter()))  # fmt: skip
    done = cli("cancel", "never-000002", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "cancelled"
    events = [e["kind"] for e in store.list_events("never-000002")]
    assert "job.cancel" in events


def test_reconcile_settles_jobs_on_ssh_hosts_and_this_machine(
    cli: CLI, remote: str, project: Path, runctl_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):  # no cloud credentials: the clouds are skipped, not jobs
        if name.startswith(("AWS_", "RUNPOD_", "LYCEUM_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    ran = job_id_of(cli("run", "--on", "box", "hello.py", cwd=project))
    assert cli("wait", ran).returncode == 0
    store = Store.open(runctl_home / "state.db")
    local_dir = str(runctl_home / "local" / "jobs" / "local-000001")
    store.insert_job(_submitting("local-000001", "local", "local", local_dir,
                                 _killed_submitter()))  # fmt: skip
    store.insert_job(_submitting("ssh-000001", "ssh", "box", f"{remote}/jobs/ssh-000001",
                                 _killed_submitter()))  # fmt: skip
    job = store.get_job(ran)
    store.insert_job(dataclasses.replace(job, job_id="wiped-000001", state=JobState.RUNNING,
                                         job_dir=f"{remote}/jobs/wiped-000001"))  # fmt: skip

    done = cli("reconcile", "--json")
    assert done.returncode == 0, done.stderr
    found = {j["job_id"]: (j["kind"], j["state"]) for j in json.loads(done.stdout)["jobs"]}
    assert found == {
        "local-000001": ("lost", "lost"),
        "ssh-000001": ("lost", "lost"),
        "wiped-000001": ("lost", "lost"),
    }
    assert _states(cli, "--no-refresh")[ran]["state"] == "succeeded"
