""" "Remote" hosts in network namespaces, each with its own sshd, address and hostname.

Follows the tested ``ci/netns-host.sh`` recipe (docs: test-infra.md). Host ``index`` N is the
namespace ``rhostN``, reached from the main namespace over the veth pair vhN (10.213.N.1/30)
<-> vrN (10.213.N.2/30, inside). Needs a running :class:`SSHStand` (it reuses its user,
keys, known_hosts and ssh_config)::

    host = start_netns_host(stand, 1)          # ssh -F stand.ssh_config rhost1 ...
    with host.block():                         # every packet to/from rhost1 dropped
        ...
    host.stop()

Traffic only ever goes to 10.213.x.x: an ``unreachable 10.213.0.0/16`` route (metric 4000)
keeps packets for a vanished veth from leaking out through the default route, and the route
to each host is checked before the first packet. The route guard is left in place on stop
(other sessions may rely on it; it is harmless).

A host index is held with an flock under /run/runctl-stands for the life of the host, so two
live sessions never fight over one namespace; leftovers of a crashed run (whose lock died with
it) are removed before a host starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .sshd import START_TIMEOUT_S, SSHStand, host_block, spawn_daemon, terminate, wait_for_ssh

IP = "/usr/sbin/ip"
NFT_TABLE = "runctl_drop"
SUBNET_GUARD = "10.213.0.0/16"
LOCK_DIR = Path("/run/runctl-stands")

_DROP_RULESET = f"""\
table inet {NFT_TABLE} {{
  chain input {{ type filter hook input priority -300; policy drop; }}
  chain output {{ type filter hook output priority -300; policy drop; }}
}}
"""


class NetnsHostBusy(RuntimeError):
    """Another live process holds this host index."""


@dataclass
class NetnsHost:
    index: int
    name: str
    address: str
    proc: subprocess.Popen[bytes]
    stand: SSHStand = field(repr=False)
    sshd_config: Path = field(repr=False)
    log: Path = field(repr=False)
    _lock_fd: int | None = field(default=None, repr=False)

    def alias(self) -> str:
        """The ``Host`` alias in the stand's ssh_config (same as the namespace name)."""
        return self.name

    def ssh_argv(self) -> list[str]:
        """``["ssh", "-F", ssh_config, name]``; append the remote command."""
        return self.stand.ssh_argv(self.name)

    @contextlib.contextmanager
    def block(self) -> Iterator[None]:
        """Drop every packet to and from the host (no RST, no ICMP): connections hang.

        Open connections stall too; they resume once the context exits.
        """
        _run([IP, "netns", "exec", self.name, "nft", "-f", "-"], input=_DROP_RULESET)
        try:
            yield
        finally:
            if Path(f"/run/netns/{self.name}").exists():
                _run([IP, "netns", "exec", self.name, "nft", "delete", "table", "inet", NFT_TABLE])

    def stop(self) -> None:
        """Kill everything in the namespace, delete it (and the veth pair); idempotent."""
        try:
            terminate([self.proc], _netns_pids(self.name))
            _remove(self.name, self.index)
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None


@functools.cache
def netns_available() -> str | None:
    """Why netns hosts cannot run here, or None if they can (tries a throwaway namespace)."""
    if os.geteuid() != 0:
        return "netns hosts need root"
    if not os.access(IP, os.X_OK):
        return f"{IP} missing (apt-get install iproute2)"
    if shutil.which("unshare") is None:
        return "unshare missing (apt-get install util-linux)"
    if shutil.which("nft") is None:
        return "nft missing (apt-get install nftables)"
    probe = f"runctl-probe-{os.getpid()}"
    added = subprocess.run(
        [IP, "netns", "add", probe], capture_output=True, text=True, check=False
    )
    if added.returncode != 0:
        return f"cannot create a network namespace: {added.stderr.strip()}"
    try:
        for argv in (
            [IP, "netns", "exec", probe, IP, "link", "set", "lo", "up"],
            [IP, "netns", "exec", probe, "unshare", "--uts", "true"],
        ):
            result = subprocess.run(argv, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                return f"{' '.join(argv)} failed: {result.stderr.strip()}"
    finally:
        subprocess.run([IP, "netns", "del", probe], capture_output=True, check=False)
    return None


def start_netns_host(stand: SSHStand, index: int) -> NetnsHost:
    """Start host ``rhost<index>`` (10.213.<index>.2); return once ssh to it works."""
    if not 1 <= index <= 254:
        raise ValueError(f"netns host index must be 1..254, not {index}")
    name = f"rhost{index}"
    address = f"10.213.{index}.2"
    lock_fd = _lock(name)
    proc = None
    try:
        _remove(name, index)  # leftovers of a crashed run
        _ensure_route_guard()
        veth_out, veth_in = f"vh{index}", f"vr{index}"
        _run([IP, "netns", "add", name])
        _run([IP, "link", "add", veth_out, "type", "veth", "peer", "name", veth_in])
        _run([IP, "link", "set", veth_in, "netns", name])
        _run([IP, "addr", "add", f"10.213.{index}.1/30", "dev", veth_out])
        _run([IP, "link", "set", veth_out, "up"])
        _run([IP, "netns", "exec", name, IP, "addr", "add", f"{address}/30", "dev", veth_in])
        _run([IP, "netns", "exec", name, IP, "link", "set", veth_in, "up"])
        _run([IP, "netns", "exec", name, IP, "link", "set", "lo", "up"])
        route = _run([IP, "route", "get", address])
        if f"dev {veth_out} " not in route + " ":
            raise RuntimeError(f"route to {address} does not use {veth_out}: {route.strip()}")

        config = stand.workdir / f"sshd_config.{name}"
        config.write_text(_netns_sshd_config(stand, name, address))
        log = stand.workdir / f"sshd-{name}.log"
        proc = spawn_daemon(
            [
                *(IP, "netns", "exec", name, "unshare", "--uts", "sh", "-c"),
                f"hostname {name}; exec /usr/sbin/sshd -D -e -f {config}",
            ],
            log,
        )
        host = NetnsHost(index, name, address, proc, stand, config, log, lock_fd)
        _add_client_config(stand, name, address)
        wait_for_ssh(host.ssh_argv(), proc, log, START_TIMEOUT_S)
        return host
    except BaseException:
        with contextlib.suppress(Exception):
            terminate([proc] if proc is not None else [], _netns_pids(name))
            _remove(name, index)
        os.close(lock_fd)
        raise


def _netns_sshd_config(stand: SSHStand, name: str, address: str) -> str:
    replace = {
        "Port": "Port 22",
        "ListenAddress": f"ListenAddress {address}",
        "PidFile": f"PidFile {stand.workdir / f'sshd-{name}.pid'}",
    }
    lines = []
    for line in stand.sshd_config.read_text().splitlines():
        keyword = line.split(maxsplit=1)[0] if line.strip() else ""
        lines.append(replace.get(keyword, line))
    return "\n".join(lines) + "\n"


def _add_client_config(stand: SSHStand, name: str, address: str) -> None:
    host_pub = " ".join(Path(f"{stand.host_key}.pub").read_text().split()[:2])
    known = f"{address} {host_pub}"
    if known not in stand.known_hosts.read_text().splitlines():
        with open(stand.known_hosts, "a") as f:
            f.write(known + "\n")
    if f"Host {name}" not in stand.ssh_config.read_text().splitlines():
        with open(stand.ssh_config, "a") as f:
            f.write(host_block(name, address, stand.user, stand.key, stand.known_hosts))


def _lock(name: str) -> int:
    LOCK_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    path = LOCK_DIR / f"{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children (O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
        os.close(fd)
        raise NetnsHostBusy(
            f"netns host {name} is in use by a live process (pid {holder or '?'}, lock {path}); "
            "pick another index"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _netns_pids(name: str) -> list[int]:
    if not Path(f"/run/netns/{name}").exists():
        return []
    result = subprocess.run(
        [IP, "netns", "pids", name], capture_output=True, text=True, check=False
    )
    return [int(tok) for tok in result.stdout.split() if tok.isdigit()]


def _remove(name: str, index: int) -> None:
    """Kill what runs in the namespace, delete it and the veth pair, if they exist."""
    if Path(f"/run/netns/{name}").exists():
        terminate([], _netns_pids(name), grace=2.0)
        subprocess.run([IP, "netns", "del", name], capture_output=True, check=False)
    # Deleting the namespace normally takes the veth pair with it; not when a process
    # outside our reach still holds the namespace open.
    veth = f"vh{index}"
    if Path(f"/sys/class/net/{veth}").exists():
        subprocess.run([IP, "link", "del", veth], capture_output=True, check=False)


def _ensure_route_guard() -> None:
    routes = _run([IP, "route", "show"])
    if not any(line.split()[:2] == ["unreachable", SUBNET_GUARD] for line in routes.splitlines()):
        result = subprocess.run(
            [IP, "route", "add", "unreachable", SUBNET_GUARD, "metric", "4000"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 and "File exists" not in result.stderr:  # lost a race
            raise RuntimeError(f"cannot add the {SUBNET_GUARD} route guard: {result.stderr}")


def _run(argv: list[str], input: str | None = None) -> str:
    result = subprocess.run(argv, input=input, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result.stdout
