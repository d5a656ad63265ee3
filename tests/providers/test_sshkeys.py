"""The SSH key runctl injects into cloud machines: made once, private, reused; or configured."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from runctl.errors import ConfigError
from runctl.providers.sshkeys import ensure_keypair


def test_own_key_is_generated_once_and_private(tmp_path: Path) -> None:
    path, public = ensure_keypair(tmp_path, "")
    assert path == tmp_path / "keys" / "runctl_ed25519" and public.startswith("ssh-ed25519 ")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert ensure_keypair(tmp_path, "") == (path, public)


def test_configured_key_without_pub_is_derived(tmp_path: Path) -> None:
    path, public = ensure_keypair(tmp_path, "")
    path.with_name(path.name + ".pub").unlink()
    derived_path, derived = ensure_keypair(tmp_path / "other", str(path))
    assert derived_path == path and derived.split()[:2] == public.split()[:2]


def test_missing_configured_key_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        ensure_keypair(tmp_path, str(tmp_path / "nope"))
