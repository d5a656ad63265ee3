"""Real AWS, opt-in with --live: a t3.micro is created, checked and terminated (always).

Needs credentials in the usual chain and a region (AWS_REGION or aws.region). Costs about a
cent. The instance is terminated in ``finally`` even when an assertion fails.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import CLI

pytestmark = pytest.mark.live


def test_create_status_terminate_t3_micro(cli: CLI) -> None:
    env = {"AWS_REGION": os.environ.get("AWS_REGION", "us-east-1")}
    done = cli("aws", "create", "t3.micro", "--wait", "--json", env=env, timeout=900)
    assert done.returncode == 0, done.stderr
    iid = json.loads(done.stdout)["instance_id"]
    try:
        status = json.loads(cli("aws", "status", iid, "--json", env=env).stdout)
        assert status["state"] == "running"
        assert status["tags"]["runctl:managed"] == "true"
        assert status["hourly_usd"] and status["hourly_usd"] < 0.05
    finally:
        gone = cli("aws", "terminate", iid, "--force", "--json", env=env, timeout=900)
        assert gone.returncode == 0, gone.stderr
        assert json.loads(gone.stdout)["state"] == "terminated"
