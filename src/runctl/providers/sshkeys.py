"""The SSH key runctl puts on cloud machines it creates.

A provider's ``ssh_key`` setting names a private key; its public half is ``KEY.pub`` (or derived
with ``ssh-keygen -y``). Without a setting runctl makes its own ed25519 key under
``RUNCTL_HOME/keys`` once, so a first ``create`` needs no preparation.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from runctl.errors import ConfigError, TransportError
from runctl.models import Instance, SSHTarget
from runctl.runtime import Runtime
from runctl.transport.base import Transport

DEFAULT_KEY_NAME = "runctl_ed25519"


def private_key_path(home: Path, configured: str) -> Path:
    """The private key a provider uses: the configured one, else runctl's own."""
    if configured:
        return Path(os.path.expanduser(configured))
    return home / "keys" / DEFAULT_KEY_NAME


def ensure_keypair(home: Path, configured: str) -> tuple[Path, str]:
    """Return (private key path, public key line), generating runctl's own key if needed.

    Raises ConfigError when a configured key is missing or unreadable.
    """
    path = private_key_path(home, configured)
    if not path.is_file():
        if configured:
            raise ConfigError(
                f"SSH key {path} does not exist",
                hint="fix the provider's ssh_key setting, or unset it to let runctl make a key",
            )
        _generate(path)
    pub = path.with_name(path.name + ".pub")
    if pub.is_file():
        return path, pub.read_text().strip()
    done = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise ConfigError(
            f"cannot read the public half of {path}",
            hint="the key may need a passphrase; give a key without one, or add KEY.pub",
        )
    return path, done.stdout.strip()


def _generate(path: Path) -> None:
    from runctl.perms import private_dir

    private_dir(path.parent)
    done = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "runctl", "-f", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise ConfigError(
            f"ssh-keygen failed: {done.stderr.strip()[:200]}",
            hint="install openssh-client, or set the provider's ssh_key to an existing key",
        )


def cloud_target(
    runtime: Runtime, provider: str, instance_id: str, host: str, port: int, user: str,
    key_setting: str,
) -> SSHTarget:  # fmt: skip
    """How to ssh to a cloud machine: its own known_hosts file, so a recycled IP:port with a
    new host key never trips over an older machine's entry."""
    known = runtime.home / "known_hosts.d" / f"{provider}-{instance_id}"
    return SSHTarget(
        host=host,
        user=user,
        port=port,
        identity_file=str(private_key_path(runtime.home, key_setting)),
        options=("StrictHostKeyChecking=accept-new", f"UserKnownHostsFile={known}"),
    )


def connect_cloud(runtime: Runtime, instance: Instance, what: str, status_cmd: str) -> Transport:
    """An SSHTransport to ``instance``; TransportError with a hint while it has no endpoint."""
    from runctl.transport.ssh import SSHTransport

    if instance.ssh is None:
        raise TransportError(
            f"{what} {instance.instance_id} has no SSH endpoint yet "
            f"(status {instance.extra.get('status', instance.state)})",
            hint=f"wait until it runs: `{status_cmd} --wait`",
        )
    from runctl.perms import private_dir

    private_dir(runtime.home / "known_hosts.d")
    cfg = runtime.config
    return SSHTransport(
        instance.ssh,
        home=runtime.home,
        config_file=cfg.get("ssh.config_file"),
        connect_timeout_s=cfg.get("ssh.connect_timeout_s"),
        control_persist_s=cfg.get("ssh.control_persist_s"),
        python=instance.python,
        sync_method=cfg.get("ssh.sync_method"),
    )
