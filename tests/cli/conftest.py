"""Fixtures for CLI tests that need S3: the shared SeaweedFS server and its environment."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.stands.seaweed import SeaweedStand, acquire_shared, release_shared, seaweed_available


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedStand]:
    reason = seaweed_available()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"test stand unavailable in CI: {reason}")
        pytest.skip(reason)
    yield acquire_shared(tmp_path_factory.mktemp("seaweed"))
    release_shared()
