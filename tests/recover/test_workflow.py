"""`workflow train`: create -> sync -> train -> follow -> fetch outputs -> terminate."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI
from tests.providers.aws.conftest import MotoAWS
from tests.recover.conftest import COUNT, Tagger, events, steps_of, write_config

pytestmark = pytest.mark.integration


def _summary(done: Any) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        raise AssertionError(f"no JSON on stdout:\n{done.stdout}\n{done.stderr}") from None
    return data


def test_local_end_to_end(cli: CLI, project: Path, runctl_home: Path) -> None:
    (project / "count.py").write_text(COUNT)
    done = cli("workflow", "train", "--on", "local", "--poll", "0.2", "--json", "count.py",
               "--", "12", cwd=project)  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = _summary(done)
    assert summary["state"] == "succeeded" and summary["result"] == "finished"
    assert summary["cost_usd"] == 0.0 and summary["instances"] == []
    # the log went to stderr under --json, from the first line to the last
    assert "step 1\n" in done.stderr and "step 12\ndone" in done.stderr
    metrics = json.loads((Path(summary["outputs"]) / "metrics.json").read_text())
    assert metrics["steps"] == 12
    kinds = [e["kind"] for e in events(runctl_home, "workflow.")]
    assert kinds[0] == "workflow.started" and kinds[-1] == "workflow.finished"
    assert "workflow.fetched" in kinds


def test_ssh_host_outputs_and_cost(
    cli: CLI, ssh_config: Path, sshd: Any, project: Path, tmp_path: Path
) -> None:
    added = cli("hosts", "add", "wfhost", "testhost", "--hourly-usd", "3.6",
                "--remote-dir", f".runctl-wf-{time.time_ns()}")  # fmt: skip
    assert added.returncode == 0, added.stderr
    (project / "count.py").write_text(COUNT)
    out = tmp_path / "fetched"
    done = cli("workflow", "train", "--on", "ssh:wfhost", "--poll", "0.2", "--output", str(out),
               "--no-install-deps", "count.py", "--", "10", "0.05", cwd=project)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("step 10\ndone\n")  # the log streams to stdout
    assert json.loads((out / "metrics.json").read_text())["steps"] == 10
    # the human summary on stderr: $3.60/h for a run of seconds is a fraction of a cent
    cost = re.search(r"succeeded, in \d+s, cost \$(\d+\.\d+)", done.stderr)
    assert cost is not None and 0 < float(cost.group(1)) < 0.05, done.stderr


@pytest.fixture
def aws_stand(aws_ssh: MotoAWS, sshd: Any) -> MotoAWS:
    write_config(aws_ssh, aws={"wait_timeout_s": 30.0}, ssh={"control_persist_s": 5})
    return aws_ssh


def _runctl_instances(aws: MotoAWS) -> list[dict[str, Any]]:
    found = aws.client("ec2").describe_instances(
        Filters=[{"Name": "tag:runctl:managed", "Values": ["true"]}]
    )
    return [i for r in found["Reservations"] for i in r["Instances"]]


def test_aws_create_train_fetch_terminate(
    cli: CLI, aws_stand: MotoAWS, sshd: Any, project: Path, tmp_path: Path
) -> None:
    (project / "count.py").write_text(COUNT)
    tagger = Tagger(aws_stand, [f"127.0.0.1:{sshd.port}"])
    tagger.start()
    try:
        done = cli("workflow", "train", "--on", "aws", "--instance-type", "t3.micro",
                   "--poll", "0.3", "--json", "--output", str(tmp_path / "out"),
                   "--no-install-deps", "count.py", "--", "10", cwd=project)  # fmt: skip
    finally:
        tagger.stop()
    assert done.returncode == 0, done.stderr
    summary = _summary(done)
    assert summary["state"] == "succeeded" and summary["restarts"] == 0
    [machine] = summary["instances"]
    iid = machine["id"].removeprefix("aws:")
    assert machine["state"] == "terminated" and machine["hourly_usd"] > 0
    assert summary["cost_usd"] == machine["cost_usd"] > 0
    assert aws_stand.instance(iid)["State"]["Name"] == "terminated"
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["steps"] == 10
    assert tagger.max_alive == 1


def test_aws_failure_terminates_without_asking_when_not_interactive(
    cli: CLI, aws_stand: MotoAWS, project: Path, runctl_home: Path
) -> None:
    # Nothing maps the instance to a host: it never answers, the workflow fails.
    write_config(aws_stand, aws={"wait_timeout_s": 2.0})
    (project / "job.py").write_text("print('never runs')\n")
    done = cli("workflow", "train", "--on", "aws", "--instance-type", "t3.micro", "--json",
               "job.py", cwd=project)  # fmt: skip
    assert done.returncode == 8, done.stderr  # ProviderError: not reachable
    assert "not reachable" in done.stderr
    # Cleanup terminated the machine: the hint must not claim it is still billed.
    assert "still billed" not in done.stderr and "was terminated" in done.stderr
    summary = _summary(done)
    assert summary["result"] == "failed" and "not reachable" in summary["error"]
    [machine] = summary["instances"]
    assert machine["state"] == "terminated"
    assert [i["State"]["Name"] for i in _runctl_instances(aws_stand)] == ["terminated"]
    kinds = [e["kind"] for e in events(runctl_home, "workflow.")]
    assert "workflow.failed" in kinds and "workflow.terminated" in kinds


def test_aws_failure_with_keep_keeps_the_machine(
    cli: CLI, aws_stand: MotoAWS, project: Path
) -> None:
    write_config(aws_stand, aws={"wait_timeout_s": 2.0})
    (project / "job.py").write_text("print('never runs')\n")
    done = cli("workflow", "train", "--on", "aws", "--instance-type", "t3.micro", "--keep",
               "job.py", cwd=project)  # fmt: skip
    assert done.returncode == 8
    assert "kept aws:i-" in done.stderr and "runctl aws terminate" in done.stderr
    assert [i["State"]["Name"] for i in _runctl_instances(aws_stand)] == ["running"]


def test_ctrl_c_cancels_the_job_and_terminates(
    cli: CLI, aws_stand: MotoAWS, sshd: Any, project: Path, runctl_home: Path
) -> None:
    (project / "count.py").write_text(COUNT)
    tagger = Tagger(aws_stand, [f"127.0.0.1:{sshd.port}"])
    tagger.start()
    proc = cli.popen("workflow", "train", "--on", "aws", "--instance-type", "t3.micro",
                     "--poll", "0.2", "--no-install-deps", "count.py", "--", "1000", "0.05",
                     cwd=project)  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the log streams to stdout
            if line == "step 3\n":
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        tagger.stop()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "cancelling count-" in err and "terminating aws:i-" in err
    assert [i["State"]["Name"] for i in _runctl_instances(aws_stand)] == ["terminated"]
    from runctl.state.store import Store

    store = Store.open(runctl_home / "state.db")
    [job] = store.list_jobs()
    assert job.state.value == "cancelled"
    kinds = [e["kind"] for e in events(runctl_home, "workflow.")]
    assert "workflow.cleaned_up" in kinds


def test_steps_of_reads_the_training_log() -> None:
    log = "resumed from step 10 (ckpt_step_000010.pt)\nstep 11 loss=1\nsaved step 15\nstep 16 x"
    assert steps_of(log) == {"resumed": 10, "saved": [15], "uploaded": [], "last": 16}
    upload = (
        "upload: .runctl/checkpoints/p/t/ckpt_step_000020.pt to s3://b/run/ckpt_step_000020.pt"
    )
    assert steps_of(upload)["uploaded"] == [20]
