"""`run --checkpoint-s3`: the agent restores, copies while running and at exit (real S3)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI, job_id_of, need, wait_for_log

HOST_CLI = Path("/opt/runctl-test-awscli/bin/aws")

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WRITER = """
import os, pathlib, sys, time
d = pathlib.Path(os.environ["RUNCTL_CHECKPOINT_DIR"])
print("resume=" + os.environ["RUNCTL_RESUME_FROM"].rsplit("/", 1)[-1], flush=True)
start = len(list(d.glob("*.pt")))
for i in range(start + 1, start + 3):
    (d / f"step_{i:03d}.pt").write_bytes(b"w" * i)
    print(f"wrote step_{i:03d}", flush=True)
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""


def _keys(seaweed: Any, bucket: str, prefix: str) -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=seaweed.endpoint_url, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    found = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted(o["Key"].rsplit("/", 1)[-1] for o in found)


@pytest.fixture
def bucket(seaweed: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SeaweedFS bucket; the agent's host steps run the AWS CLI against it."""
    need(None if HOST_CLI.exists() else f"no AWS CLI at {HOST_CLI} (scripts/install-test-deps.sh)")
    from tests.stands.seaweed import new_bucket

    for key, value in seaweed.env().items():
        monkeypatch.setenv(key, value)
    cfg = tmp_path / "xdg-config" / "runctl" / "config.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(
        f'[aws]\nhost_cli = "{HOST_CLI}"\n[s3]\nendpoint_url = "{seaweed.endpoint_url}"\n'
    )
    return str(new_bucket(seaweed, "ck"))


def test_store_restores_and_syncs(cli: CLI, project: Path, seaweed: Any, bucket: str) -> None:
    store = f"s3://{bucket}/runs/a"
    (project / "writer.py").write_text(WRITER)

    first = cli("run", "--wait", "--checkpoint-s3", store, "writer.py", cwd=project)
    assert first.returncode == 0, first.stderr
    assert _keys(seaweed, bucket, "runs/a/") == ["step_001.pt", "step_002.pt"]
    job = job_id_of(first)
    ckpt_dir = json.loads(cli("status", job, "--json").stdout)["checkpoint_dir"]

    # A new machine: nothing local. The store is restored and the job resumes from it.
    shutil.rmtree(ckpt_dir)
    second = job_id_of(cli("run", "--checkpoint-s3", store, "--checkpoint-sync-s", "0.5",
                           "writer.py", "--", "6", cwd=project))  # fmt: skip
    wait_for_log(cli, second, "resume=step_002.pt")
    wait_for_log(cli, second, "wrote step_004")
    deadline = time.monotonic() + 20
    while "step_004.pt" not in _keys(seaweed, bucket, "runs/a/"):  # copied while running
        assert time.monotonic() < deadline, cli("logs", second).stdout
        time.sleep(0.2)
    assert json.loads(cli("status", second, "--json").stdout)["state"] == "running"
    assert cli("wait", second).returncode == 0


SAVES_ON_SIGTERM = """
import os, pathlib, signal, sys, time
d = pathlib.Path(os.environ["RUNCTL_CHECKPOINT_DIR"])
def stop(*_):
    (d / "step_final.pt").write_bytes(b"last")
    print("saved on SIGTERM", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(60)
"""


def test_final_upload_outlives_the_cancel_grace(
    cli: CLI, project: Path, seaweed: Any, bucket: str
) -> None:
    """A job that stops well within its grace keeps its last checkpoint: the copy to the store
    that follows is not SIGKILLed when the grace period (0.2 s here) runs out."""
    (project / "saver.py").write_text(SAVES_ON_SIGTERM)
    job = job_id_of(cli("run", "--checkpoint-s3", f"s3://{bucket}/r", "saver.py", cwd=project))
    wait_for_log(cli, job, "ready")
    assert cli("cancel", job, "--grace", "0.2").returncode == 0
    cli("wait", job)  # the job's own exit code (0: it caught SIGTERM and returned)
    assert json.loads(cli("status", job, "--json").stdout)["state"] == "cancelled"
    log = cli("logs", job).stdout
    assert "saved on SIGTERM" in log and "failed with exit code" not in log, log
    assert _keys(seaweed, bucket, "r/") == ["step_final.pt"]
