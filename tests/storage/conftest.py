"""Fixtures for storage tests: a shared SeaweedFS server, a fresh bucket, an S3Storage."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.stands.seaweed import (
    SeaweedStand,
    new_bucket,
)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials, no profile, no ~/.aws files: nothing can reach a real account."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def bucket(seaweed: SeaweedStand) -> str:
    return new_bucket(seaweed)


@pytest.fixture
def storage(seaweed: SeaweedStand, aws_env: None, tmp_path: Path) -> Any:
    """S3Storage on the stand: 5 MiB parts (the S3 minimum) keep multipart tests small."""
    from runctl.storage.s3 import MIB, S3Settings, S3Storage

    settings = S3Settings(
        endpoint_url=seaweed.endpoint_url, max_concurrency=4, multipart_threshold=5 * MIB
    )
    return S3Storage(settings, state_dir=tmp_path / "transfers")
