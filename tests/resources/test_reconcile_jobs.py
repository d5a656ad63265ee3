"""``runctl reconcile`` on job records: lost jobs and submits cut short by a killed CLI.

Pods of the fake RunPod are mapped to the loopback sshd stand, so the agent answering is real.
"""

from __future__ import annotations

import os
import socket
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runctl.core.reconcile_jobs import is_submit_in_flight
from runctl.models import Job, JobState
from runctl.state.store import Store
from tests.conftest import CLI
from tests.fakes.runpod_server import FakeRunpod
from tests.resources.conftest import GPU, ok

RP = ("--platform", "runpod")
SLEEPY = "import time\nprint('ready', flush=True)\ntime.sleep(120)\n"


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _job(job_id: str, pod: str, state: JobState, pid: int | None, age_h: float = 0) -> Job:
    created = (datetime.now(UTC) - timedelta(hours=age_h)).isoformat().replace("+00:00", "Z")
    spec = {} if pid is None else {"submitted_by": {"pid": pid, "host": socket.gethostname()}}
    return Job(job_id=job_id, name="t", project="p", provider="runpod", instance_id=pod,
               state=state, argv=("t.py",), job_dir=f"x/jobs/{job_id}", workdir="w",
               checkpoint_dir="c", created_at=created, spec=spec)  # fmt: skip


def test_submit_in_flight_by_pid_or_age() -> None:
    mine = _job("a-1", "p", JobState.SUBMITTING, os.getpid())
    assert is_submit_in_flight(mine)
    assert not is_submit_in_flight(_job("a-2", "p", JobState.SUBMITTING, _dead_pid()))
    # a live process that started after the job was recorded only reused the pid
    assert not is_submit_in_flight(_job("a-5", "p", JobState.SUBMITTING, os.getpid(), age_h=24))
    # records without the submitting process: a young one may be in flight, an old one not
    assert is_submit_in_flight(_job("a-3", "p", JobState.SUBMITTING, None))
    assert not is_submit_in_flight(_job("a-4", "p", JobState.SUBMITTING, None, age_h=1))


@pytest.mark.integration
def test_reconcile_marks_lost_and_started_jobs(
    cli: CLI, pods_ssh: FakeRunpod, project: Path, runctl_home: Path
) -> None:
    (project / "sleepy.py").write_text(SLEEPY)
    pod = ok(cli("runpod", "create", "--gpu", GPU, "--json"))["id"]
    gone = ok(cli("runpod", "create", "--gpu", GPU, "--json"))["id"]
    running = ok(cli("runpod", "train", "--pod-id", pod, "sleepy.py", "--json", cwd=project))
    cut = ok(cli("runpod", "train", "--pod-id", pod, "sleepy.py", "--json", cwd=project))
    store = Store.open(runctl_home / "state.db")
    # A CLI killed after the agent started the job, before recording that:
    store.update_job(cut["job_id"], state=JobState.SUBMITTING, started_at=None)
    never = _job("never-000001", pod, JobState.SUBMITTING, _dead_pid())  # killed mid-sync
    flying = _job("flying-000001", pod, JobState.SUBMITTING, os.getpid())  # still submitting
    wiped = _job("wiped-000001", pod, JobState.RUNNING, None)  # the agent has no record
    orphaned = _job("orphaned-000001", gone, JobState.RUNNING, None)  # machine gone
    for job in (never, flying, wiped, orphaned):
        store.insert_job(job)
    del pods_ssh.pods[gone]

    dry = ok(cli("reconcile", *RP, "--dry-run", "--json"))
    found = {j["job_id"]: j for j in dry["jobs"]}
    assert {k: found[k]["kind"] for k in found} == {
        cut["job_id"]: "started",
        "never-000001": "lost",
        "flying-000001": "in-flight",
        "wiped-000001": "lost",
        "orphaned-000001": "lost",
    }
    assert "gone" in found["orphaned-000001"]["reason"]
    assert "no record" in found["wiped-000001"]["reason"]
    assert Store.open(runctl_home / "state.db").get_job("never-000001").state == "submitting"

    applied = ok(cli("reconcile", *RP, "--json"))
    assert {j["job_id"]: j["state"] for j in applied["jobs"]} == {
        cut["job_id"]: "running",
        "never-000001": "lost",
        "flying-000001": "submitting",
        "wiped-000001": "lost",
        "orphaned-000001": "lost",
    }
    store = Store.open(runctl_home / "state.db")
    assert store.get_job(cut["job_id"]).state == JobState.RUNNING
    assert store.get_job(cut["job_id"]).started_at
    assert store.get_job(running["job_id"]).state == JobState.RUNNING  # untouched
    for job_id in ("never-000001", "wiped-000001", "orphaned-000001"):
        assert store.get_job(job_id).state == JobState.LOST
        assert any(e["kind"] == "job.lost" for e in store.list_events(job_id))
    assert any(e["kind"] == "job.started" for e in store.list_events(cut["job_id"]))
    text = cli("reconcile", *RP).stdout
    assert "flying-000001" in text and "in-flight" in text  # the only finding left
    assert "never-000001" not in text

    # cleanup cancels what runs there (both jobs the agent runs) before terminating
    done = ok(cli("resources", "cleanup", *RP, "--yes", "--json"))
    assert [t["result"] for t in done["targets"]] == ["terminated"]
    store = Store.open(runctl_home / "state.db")
    for job_id in (running["job_id"], cut["job_id"]):
        assert store.get_job(job_id).state == JobState.CANCELLED
