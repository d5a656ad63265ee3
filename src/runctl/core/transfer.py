"""Copies that involve a host or a job directory (``host:path``, ``job:ID:path``).

Local ↔ host goes straight over the host's transport (rsync on SSH: ``--partial`` to resume,
``-z`` to compress). S3 ↔ host is staged through a temporary directory on this machine, so the
same checksums, resume and compression rules apply as for plain S3 transfers. ``verify``
compares sha256 of every file on both ends (the agent hashes the remote side).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runctl.core import agent
from runctl.core.jobs import check_relative
from runctl.core.targets import Target, instance_of_job, resolve_target
from runctl.errors import TransportError, UsageError
from runctl.runtime import Runtime
from runctl.transport.base import Transport


@dataclass(frozen=True)
class RemoteEnd:
    target: Target
    transport: Transport
    path: str  # on the host (relative paths are from the login home)
    label: str


def resolve_end(runtime: Runtime, kind: str, name: str, path: str) -> RemoteEnd:
    """The host, transport and path for a ``host:path`` or ``job:ID:path`` location."""
    if not path or "\0" in path:
        raise UsageError(f"missing path in {kind} location {name}:", hint="e.g. gpu1:data/")
    if kind == "job":
        job = runtime.store.get_job(name)
        rel = check_relative(path)
        target = instance_of_job(runtime, job.provider, job.instance_id)
        remote = f"{job.job_dir}/{rel}"
        label = f"job:{job.job_id}:{rel}"
    else:
        target = resolve_target(runtime, name if ":" in name else f"ssh:{name}")
        remote = path
        label = f"{name}:{path}"
    return RemoteEnd(target, target.provider.connect(target.instance), remote, label)


def local_hashes(path: Path) -> dict[str, str]:
    """sha256 per file, keyed like the agent's ``hash`` (relative, "" for a single file)."""
    files = [("", path)] if path.is_file() else [
        (p.relative_to(path).as_posix(), p) for p in sorted(path.rglob("*")) if p.is_file()
    ]  # fmt: skip
    out: dict[str, str] = {}
    for rel, full in files:
        digest = hashlib.sha256()
        with open(full, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
        out[rel] = digest.hexdigest()
    return out


def verify(end: RemoteEnd, local: Path) -> int:
    """Compare every file's sha256 on both ends; TransportError naming the first mismatch."""
    remote: dict[str, str] = agent.call_json(
        end.target.instance, end.transport, ["hash", "--path", end.path], timeout=600
    )
    ours = local_hashes(local)
    for rel, digest in ours.items():
        if remote.get(rel) != digest:
            raise TransportError(
                f"checksum mismatch for {rel or local.name} between {local} and {end.label}",
                hint="run the transfer again with --no-resume",
            )
    return len(ours)


def push(
    end: RemoteEnd, local: Path, *, compress: bool, resume: bool, check: bool,
    progress: Callable[[str], None],
) -> int:  # fmt: skip
    """Copy ``local`` to the remote end; returns the number of files verified (0 if not)."""
    if not local.exists():
        raise UsageError(f"{local} does not exist")
    progress(f"copying {local} to {end.label}")
    end.transport.copy_to(local, end.path, compress=compress, resume=resume)
    return verify(end, local) if check else 0


def pull(
    end: RemoteEnd, local: Path, *, compress: bool, resume: bool, check: bool,
    progress: Callable[[str], None],
) -> int:  # fmt: skip
    """Copy the remote end to ``local``; returns the number of files verified (0 if not)."""
    progress(f"copying {end.label} to {local}")
    end.transport.copy_from(end.path, local, compress=compress, resume=resume)
    return verify(end, local) if check else 0
