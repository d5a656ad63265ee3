"""Fixtures for the Slurm tests: one real single-node cluster per session."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need
from tests.stands.slurm import SlurmStand, slurm_available, start_slurm


@pytest.fixture(scope="session")
def slurm_stand() -> Iterator[SlurmStand]:
    need(slurm_available())
    # World-readable (not pytest's 0700 tmp): the SSH test user submits jobs too.
    workdir = Path(tempfile.mkdtemp(prefix="runctl-slurm-"))
    try:
        stand = start_slurm(workdir)
        yield stand
        stand.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def slurm(slurm_stand: SlurmStand, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SlurmStand:
    """The cluster, with SLURM_CONF set for runctl (which runs sbatch/scontrol) and the
    user config pricing a node-hour."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_stand.conf))
    cfg = tmp_path / "xdg-config" / "runctl" / "config.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text("[slurm]\nhourly_usd_per_node = 2.5\n")
    return slurm_stand
