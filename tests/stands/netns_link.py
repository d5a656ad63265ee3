"""Let netns hosts (tests/stands/netns.py) reach each other, for multi-node jobs.

Each host only has a /30 to the root namespace. ``link_hosts`` gives every host a route to
10.213.0.0/16 through its veth peer and turns on IPv4 forwarding for exactly those veth
interfaces (``net.ipv4.conf.vhN.forwarding``; the global ``net.ipv4.ip_forward`` and every
other interface stay as they are). Nothing needs undoing: the settings vanish with the veth
pairs when the hosts stop.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

IP = "/usr/sbin/ip" if Path("/usr/sbin/ip").exists() else "ip"


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def link_hosts(hosts: Sequence[object]) -> None:
    """Route 10.213.0.0/16 between the given hosts (objects with ``index`` and ``name``)."""
    for host in hosts:
        index, name = host.index, host.name  # type: ignore[attr-defined]
        sysctl = Path(f"/proc/sys/net/ipv4/conf/vh{index}/forwarding")
        sysctl.write_text("1\n")
        routes = _run([IP, "netns", "exec", name, IP, "route", "show"])
        if "10.213.0.0/16" not in routes:
            _run([IP, "netns", "exec", name, IP, "route", "add", "10.213.0.0/16",
                  "via", f"10.213.{index}.1"])  # fmt: skip
