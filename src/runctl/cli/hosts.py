"""``runctl hosts``: register, list and remove SSH hosts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from runctl.cli.output import emit, json_option, progress, runtime, table
from runctl.cli.params import Number
from runctl.errors import UsageError

if TYPE_CHECKING:
    from runctl.models import Host

# One round trip tells us what the host can do; printed by `hosts add`. The python part
# names the interpreter and its torch build without importing torch (that takes seconds):
# jobs whose requirements.txt it already satisfies install nothing.
_PY_PROBE = r"""
import os, re, sys
print("python=" + sys.version.split()[0])
print("python_path=" + sys.executable)
kind = "venv" if sys.prefix != getattr(sys, "base_prefix", sys.prefix) else "system"
print("python_env=" + ("conda" if os.path.isdir(os.path.join(sys.prefix, "conda-meta")) else kind))
try:
    import importlib.metadata, importlib.util
    print("torch=" + importlib.metadata.version("torch"))
    where = importlib.util.find_spec("torch").submodule_search_locations[0]
    text = open(os.path.join(where, "version.py")).read()
    for key in ("cuda", "hip"):
        found = re.search(r"^%s\b[^=\n]*=\s*['\"]([^'\"]+)" % key, text, re.M)
        if found:
            print("torch_%s=%s" % (key, found.group(1)))
except Exception:
    pass
"""
_PROBE = (
    "{py} -c {code} 2>/dev/null; "
    'for t in rsync uv nvidia-smi; do command -v $t >/dev/null 2>&1 && echo "$t=yes" || '
    'echo "$t=no"; done'
)


@click.group()
def hosts() -> None:
    """Register, list and remove SSH hosts (aliases from ~/.ssh/config work as-is).

    \b
    Examples:
      runctl hosts add gpu1 alice@10.0.0.5:2222
      runctl hosts list --all
      runctl hosts rm gpu1
    """


@hosts.command(name="add")
@click.argument("name")
@click.argument("destination", required=False)
@click.option("--user", help="Login user (default: from ssh config or your user).")
@click.option("--port", type=click.IntRange(1, 65535), help="SSH port.")
@click.option("--key", "identity_file", type=click.Path(dir_okay=False), help="Private key file.")
@click.option("-o", "--ssh-option", "options", multiple=True, metavar="KEY=VALUE",
              help="Extra ssh -o option (repeatable).")  # fmt: skip
@click.option("--remote-dir", default=".runctl", show_default=True,
              help="runctl's directory on the host (relative to the login home).")  # fmt: skip
@click.option("--python", "python", default="python3", show_default=True,
              help="Interpreter on the host for the agent and .py scripts.")  # fmt: skip
@click.option("--hourly-usd", type=Number(0, 1_000_000), help="What the host costs per hour.")
@click.option("--replace", is_flag=True, help="Overwrite an existing host of that name.")
@click.option("--no-check", is_flag=True, help="Do not connect to verify the host.")
@json_option
def hosts_add(name: str, destination: str | None, user: str | None, port: int | None,
              identity_file: str | None, options: tuple[str, ...], remote_dir: str,
              python: str, hourly_usd: float | None, replace: bool,
              no_check: bool) -> None:  # fmt: skip
    """Register NAME, reached at DESTINATION ([user@]host[:port], default NAME itself).

    \b
    Examples:
      runctl hosts add gpu1 alice@10.0.0.5:2222
      runctl hosts add lab-box
      runctl hosts add gpu2 10.0.0.6 --python /opt/venv/bin/python --hourly-usd 1.2
    """
    import dataclasses
    import shlex

    from runctl.models import Host
    from runctl.providers.ssh import SSHProvider, parse_destination
    from runctl.state.db import now_iso
    from runctl.transport.ssh import check_word

    if (
        name.startswith("-")
        or not name.replace("-", "a").replace("_", "a").replace(".", "a").isalnum()
    ):
        raise UsageError(f"invalid host name {name!r}", hint="use letters, digits, - _ .")
    # Each of these reaches ssh, rsync or a remote shell as one word: none may look like an
    # option or hide whitespace (issue 17: `--user -oProxyCommand=...`).
    check_word("--remote-dir", remote_dir)
    check_word("--python", python)
    if user is not None:
        check_word("--user", user)
    if ".." in remote_dir.split("/"):
        raise UsageError(f"invalid --remote-dir {remote_dir!r}", hint="no '..' components")
    for option in options:
        if "=" not in option:
            raise UsageError(f"invalid ssh option {option!r}", hint="use -o Key=Value")
    target = parse_destination(destination or name)
    target = dataclasses.replace(
        target,
        user=user or target.user,
        port=port or target.port,
        identity_file=identity_file,
        options=options,
    )
    host = Host(name=name, target=target, remote_dir=remote_dir.removeprefix("~/"),
                python=python, hourly_usd=hourly_usd, created_at=now_iso())  # fmt: skip
    rt = runtime()
    facts: dict[str, str] = {}
    if not no_check:
        provider = SSHProvider(rt)
        instance = provider._from_host(host)
        transport = provider.connect(instance)
        progress(f"checking {target.destination} ...")
        probe = _PROBE.replace("{code}", shlex.quote(_PY_PROBE))
        probe = probe.replace("{py}", shlex.quote(python))
        done = transport.run(["sh", "-c", probe], timeout=60)
        for line in done.text.splitlines():
            key, _, value = line.partition("=")
            facts[key] = value
        if not facts.get("python"):
            raise UsageError(
                f"{python} does not run on {target.destination}",
                hint="install python3 there, or pass --python PATH",
            )
    old = rt.store.get_host(name) if replace else None
    rt.store.add_host(host, replace=replace)
    if old is not None and old.target != host.target:
        # The replaced identity's master would keep a session open for ControlPersist.
        _close_master(old)
    found: dict[str, str | None] = dict(facts)
    if facts:  # always present after a check, null when absent: scripts can rely on the keys
        for key in ("torch", "torch_cuda", "torch_hip"):
            found.setdefault(key, None)
    data = {"name": name, "destination": target.destination, "port": target.port, **found}

    def text() -> None:
        click.echo(f"added {name} ({target.destination})")
        if facts:
            click.echo(f"  {_describe_python(facts)}")
            tools = ", ".join(f"{k} {facts.get(k, '?')}" for k in ("rsync", "uv", "nvidia-smi"))
            click.echo(f"  {tools}")
            if facts.get("rsync") == "no":
                progress("  note: no rsync on the host; code sync falls back to tar")

    emit(data, text)


def _describe_python(facts: dict[str, str]) -> str:
    """One line: which python `hosts add` found, and its torch build."""
    where = facts.get("python_path") or "?"
    line = f"python {facts.get('python')} at {where} ({facts.get('python_env', '?')})"
    torch = facts.get("torch")
    if not torch:
        return f"{line}; no torch"
    if facts.get("torch_cuda"):
        build = f"CUDA {facts['torch_cuda']}"
    elif facts.get("torch_hip"):
        build = f"ROCm {facts['torch_hip']}"
    else:
        build = "CPU-only build"
    return f"{line}; torch {torch} ({build})"


@hosts.command(name="list")
@click.option("--all", "show_all", is_flag=True, help="Also list aliases from your ssh config.")
@json_option
def hosts_list(show_all: bool) -> None:
    """List registered hosts (and, with --all, ~/.ssh/config aliases usable as ssh:ALIAS).

    \b
    Examples:
      runctl hosts list
      runctl hosts list --all --json
    """
    from runctl.providers.ssh import SSHProvider, ssh_config_aliases

    rt = runtime()
    registered = rt.store.list_hosts()
    aliases: list[str] = []
    if show_all:
        names = {h.name for h in registered}
        config_file = SSHProvider(rt).config_file()
        aliases = [a for a in ssh_config_aliases(config_file) if a not in names]
    data = {
        "hosts": [
            {"name": h.name, "host": h.target.host, "user": h.target.user, "port": h.target.port,
             "remote_dir": h.remote_dir, "python": h.python, "hourly_usd": h.hourly_usd}
            for h in registered
        ],
        "ssh_config_aliases": aliases,
    }  # fmt: skip

    def text() -> None:
        if not registered and not aliases:
            click.echo("no hosts: add one with `runctl hosts add NAME [user@]host[:port]`")
            return
        rows = [
            (
                h.name,
                h.target.destination,
                str(h.target.port or 22),
                h.remote_dir,
                "" if h.hourly_usd is None else f"${h.hourly_usd:.2f}/h",
            )
            for h in registered
        ]
        rows += [(a, "(ssh config)", "", "", "") for a in aliases]  # fmt: skip
        table(["name", "destination", "port", "remote dir", "cost"], rows)

    emit(data, text)


def _close_master(host: Host) -> None:
    """Ask ``host``'s ssh master connection to exit (a no-op when none is up).

    An entry stored before validation existed may not connect at all: that is no error.
    """
    import contextlib

    from runctl.errors import RunctlError
    from runctl.providers.ssh import SSHProvider

    provider = SSHProvider(runtime())
    with contextlib.suppress(RunctlError):
        provider.connect(provider._from_host(host)).close()


@hosts.command(name="rm")
@click.argument("name")
@json_option
def hosts_rm(name: str) -> None:
    """Forget host NAME and close runctl's ssh connection to it (nothing on the host is
    touched).

    \b
    Examples:
      runctl hosts rm gpu1
    """
    rt = runtime()
    host = rt.store.get_host(name)
    if host is not None:
        # A warm master would otherwise keep a session to the host open for ControlPersist.
        _close_master(host)
    rt.store.remove_host(name)
    emit({"removed": name}, f"removed {name}")
