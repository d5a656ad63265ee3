"""The host side: a moto instance mapped (runctl:ssh-endpoint) to the loopback sshd stand.

train, monitor, processes, the generic `run --on aws:ID`, job-aware stop/terminate, and
--data-s3/--output-s3 through the agent's pre/post steps (the AWS CLI on the "host" talks to
the same moto server).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI, wait_for_log
from tests.providers.aws.conftest import MotoAWS, created_id
from tests.stands.sshd import DEFAULT_USER

pytestmark = pytest.mark.integration
HOST_CLI = Path("/opt/runctl-test-awscli/bin/aws")


@pytest.fixture
def instance(cli: CLI, aws_ssh: MotoAWS, sshd: Any) -> str:
    iid = created_id(cli("aws", "create", "t3.micro", "--json"))
    aws_ssh.point_ssh_at(iid, sshd)
    return iid


def test_train_follow_monitor_status_and_generic_run(
    cli: CLI, aws_ssh: MotoAWS, instance: str, project: Path
) -> None:
    done = cli("aws", "train", instance, "hello.py", "--follow", "--", "a b", "$HOME",
               "--lines", "3", cwd=project)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:2] == ["arg: 'a b'", "arg: '$HOME'"]
    assert done.stdout.splitlines()[-1] == "line 3"
    assert f"{instance}: using ssh {DEFAULT_USER}@127.0.0.1:" in done.stderr
    job = aws_ssh.tags(instance)["runctl:job"]
    assert job.startswith("hello-")
    shown = cli("aws", "watch", instance, "-n", "2")  # alias of monitor
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == ["line 2", "line 3"]
    as_json = json.loads(cli("aws", "monitor", instance, "--json").stdout)
    assert as_json["job_id"] == job and "line 1" in as_json["output"]
    status = json.loads(cli("aws", "status", instance, "--json").stdout)
    assert status["transport"] == "ssh"
    assert status["jobs"][0]["job_id"] == job and status["jobs"][0]["state"] == "succeeded"
    # The generic path: run --on aws:ID, wait, logs.
    failed = cli("run", "--on", f"aws:{instance}", "--wait", "hello.py", "--", "--exit-code",
                 "4", cwd=project)  # fmt: skip
    assert failed.returncode == 4, failed.stderr
    waited = cli("aws", "train", instance, "hello.py", "--wait", "--no-sync-code", cwd=project)
    assert waited.returncode == 0, waited.stderr


def test_transport_override_to_ssm_without_profile_is_explained(
    cli: CLI, aws_ssh: MotoAWS, instance: str, project: Path
) -> None:
    done = cli("aws", "processes", instance, "--transport", "ssm")
    assert done.returncode == 7, done.stderr
    assert "SSM" in done.stderr or "ssm" in done.stderr


def test_processes_reports_host_and_no_gpu(cli: CLI, aws_ssh: MotoAWS, instance: str) -> None:
    done = cli("aws", "processes", instance, "--json")
    assert done.returncode == 0, done.stderr
    snap = json.loads(done.stdout)
    assert snap["memory"]["total_mb"] > 0
    assert snap["processes"] and all(p["pid"] > 0 for p in snap["processes"])
    assert any(d["mount"] == "/" for d in snap["disks"])
    if shutil.which("nvidia-smi") is None:
        assert snap["gpus"] == [] and snap["gpu_status"] == "no GPU"
    text = cli("aws", "processes", instance, "--watch", "--count", "2", "--interval", "0.5",
               "--json")  # fmt: skip
    lines = text.stdout.splitlines()
    assert len(lines) == 2 and all(json.loads(ln)["instance_id"] == instance for ln in lines)
    plain = cli("aws", "processes", instance, "--detailed")
    assert "CPU " in plain.stdout and "PID" in plain.stdout


def test_stop_and_terminate_refuse_running_jobs_unless_forced(
    cli: CLI, aws_ssh: MotoAWS, instance: str, project: Path
) -> None:
    (project / "sleepy.py").write_text(
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('got SIGTERM', flush=True),"
        " sys.exit(143)))\n"
        "print('ready', flush=True)\ntime.sleep(120)\n"
    )
    # --wait --timeout MINUTES gives up waiting (exit 124), the job keeps running.
    started = cli("aws", "train", instance, "sleepy.py", "--wait", "--timeout", "0.04",
                  cwd=project)  # fmt: skip
    assert started.returncode == 124, started.stderr
    assert "the job keeps running" in started.stderr
    job = started.stdout.strip().splitlines()[0]
    wait_for_log(cli, job, "ready")
    refused = cli("aws", "stop", instance)
    assert refused.returncode == 9
    assert f"job(s) running: {job}" in refused.stderr and "--force" in refused.stderr
    refused = cli("aws", "terminate", instance)
    assert refused.returncode == 9
    stopped = cli("aws", "stop", instance, "--force", "--grace", "5", "--json")
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["stopped_jobs"] == [job]
    assert "got SIGTERM" in cli("logs", job).stdout
    assert json.loads(cli("status", job, "--json").stdout)["state"] == "cancelled"


@pytest.mark.skipif(not HOST_CLI.exists(), reason="AWS CLI for the test user missing "
                    "(scripts/install-test-deps.sh)")  # fmt: skip
def test_data_s3_and_output_s3_run_on_the_host(
    cli: CLI, aws_ssh: MotoAWS, instance: str, project: Path
) -> None:
    s3 = aws_ssh.client("s3")
    s3.create_bucket(Bucket="datasets")
    s3.put_object(Bucket="datasets", Key="mnist/train.csv", Body=b"1,2,3\n")
    (project / ".gitignore").write_text("extra/\n")
    (project / "extra").mkdir()
    (project / "extra" / "note.txt").write_text("included")
    (project / "use_data.py").write_text(
        "import os, pathlib\n"
        "print('extra:', pathlib.Path('extra/note.txt').read_text())\n"
        "data = pathlib.Path(os.environ['RUNCTL_DATA_DIR'])\n"
        "print('data:', (data / 'train.csv').read_text().strip())\n"
        "out = pathlib.Path(os.environ['RUNCTL_OUTPUT_DIR'])\n"
        "(out / 'metrics.json').write_text('{\"loss\": 0.1}')\n"
    )
    done = cli("aws", "train", instance, "use_data.py", "--follow",
               "--data-s3", "s3://datasets/mnist/", "--output-s3", "s3://datasets/runs/r1/",
               "--env", "AWS_ACCESS_KEY_ID=testing", "--env", "AWS_SECRET_ACCESS_KEY=testing",
               "--include", "extra/", cwd=project)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "data: 1,2,3" in done.stdout
    assert "extra: included" in done.stdout  # --include synced an ignored path
    body = s3.get_object(Bucket="datasets", Key="runs/r1/metrics.json")["Body"].read()
    assert json.loads(body) == {"loss": 0.1}
    bad = cli("aws", "train", instance, "use_data.py", "--data-s3", "http://x", cwd=project)
    assert bad.returncode == 2 and "not an S3 location" in bad.stderr
