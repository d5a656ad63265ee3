"""The SSH provider: machines the user can already ssh to. "Creating" one means registering it.

A host is either registered (``runctl hosts add``) or named ad hoc as ``ssh:[user@]host[:port]``
or an alias from ~/.ssh/config, which OpenSSH resolves itself.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from runctl.errors import UsageError
from runctl.models import Host, Instance, SSHTarget
from runctl.providers.base import Provider
from runctl.runtime import Runtime
from runctl.transport.base import Transport
from runctl.transport.ssh import SSHTransport

_DEST_RE = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>[A-Za-z0-9._-]+)(?::(?P<port>\d+))?$"
)


def parse_destination(text: str) -> SSHTarget:
    """Parse ``[user@]host[:port]``; UsageError for anything else (no shell metacharacters,
    and no part that ssh could read as an option: ``ssh:-Fx@host`` is not a user)."""
    match = _DEST_RE.match(text)
    if not match or any(part.startswith("-") for part in (match["host"], match["user"] or "")):
        raise UsageError(
            f"invalid ssh destination {text!r}",
            hint="use [user@]host[:port] or an alias from ~/.ssh/config",
        )
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"invalid port in {text!r}")
    return SSHTarget(host=match["host"], user=match["user"], port=port)


def ssh_config_aliases(path: Path) -> list[str]:
    """Concrete ``Host`` aliases in an ssh_config file (and the files it Includes)."""
    aliases: list[str] = []
    seen: set[Path] = set()

    def read(file: Path) -> None:
        if file in seen or not file.is_file():
            return
        seen.add(file)
        for raw in file.read_text(errors="replace").splitlines():
            words = raw.strip().split()
            if len(words) < 2:
                continue
            key = words[0].lower()
            if key == "host":
                aliases.extend(w for w in words[1:] if not any(c in w for c in "*?!"))
            elif key == "include":
                for pattern in words[1:]:
                    pattern = os.path.expanduser(pattern)
                    if not os.path.isabs(pattern):
                        pattern = str(Path("~/.ssh").expanduser() / pattern)
                    for found in sorted(glob.glob(pattern)):
                        read(Path(found))

    read(path)
    return list(dict.fromkeys(aliases))


class SSHProvider(Provider):
    name = "ssh"
    unsupported: ClassVar[dict[str, str]] = {
        "stop": "runctl does not power SSH hosts on or off; they are yours",
        "create": "SSH hosts already exist; register one with `runctl hosts add`",
    }

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def check(self) -> None:
        return None

    def config_file(self) -> Path:
        configured = self.runtime.config.get("ssh.config_file")
        return Path(os.path.expanduser(configured or "~/.ssh/config"))

    def _from_host(self, host: Host) -> Instance:
        return Instance(
            provider="ssh",
            instance_id=host.name,
            name=host.name,
            ssh=host.target,
            remote_dir=host.remote_dir,
            python=host.python,
            hourly_usd=host.hourly_usd,
        )

    def get_instance(self, instance_id: str) -> Instance | None:
        if "," in instance_id:
            return self._group(instance_id)
        host = self.runtime.store.get_host(instance_id)
        if host is not None:
            return self._from_host(host)
        # Not registered: an ssh destination or config alias used directly.
        target = parse_destination(instance_id)
        return Instance(provider="ssh", instance_id=instance_id, name=instance_id, ssh=target)

    def list_instances(self) -> list[Instance]:
        return [self._from_host(h) for h in self.runtime.store.list_hosts()]

    def _group(self, instance_id: str) -> Instance | None:
        """``h1,h2,...``: a multi-node job's hosts (core/multinode.py); acts as rank 0."""
        names = [n.strip() for n in instance_id.split(",")]
        if len(names) < 2 or "" in names or len(set(names)) != len(names):
            raise UsageError(
                f"invalid host group {instance_id!r}",
                hint="name two or more distinct hosts: --on ssh:HOST1,HOST2",
            )
        members = [self.get_instance(n) for n in names]
        first = members[0]
        if first is None or None in members:
            return None
        return replace(first, instance_id=instance_id, name=instance_id,
                       extra={**first.extra, "nodes": names})  # fmt: skip

    def connect(self, instance: Instance) -> Transport:
        assert instance.ssh is not None
        cfg = self.runtime.config
        return SSHTransport(
            instance.ssh,
            home=self.runtime.home,
            config_file=cfg.get("ssh.config_file"),
            connect_timeout_s=cfg.get("ssh.connect_timeout_s"),
            control_persist_s=cfg.get("ssh.control_persist_s"),
            python=instance.python,
            sync_method=cfg.get("ssh.sync_method"),
        )
