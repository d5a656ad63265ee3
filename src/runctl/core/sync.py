"""Code sync: make the host's copy of the project tree match the local one, cheaply.

The local tree is reduced to a content-hash manifest (see ``sync_select``). The digest of the
last manifest pushed to each (host, directory) is kept in state, so an unchanged tree needs no
network round trip at all: the agent's ``start`` verifies the host still holds that digest and
answers "stale" otherwise, which sends us through the full path here. The full path fetches the
host's manifest, sends only files whose hash differs (rsync, or tar without it), deletes files
removed locally, and records the new manifest on the host.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from runctl.core import agent
from runctl.core.sync_select import (
    Manifest,
    build_manifest,
    diff_manifests,
    manifest_from_json,
    manifest_to_json,
    select_files,
)
from runctl.errors import RunctlError, UsageError
from runctl.models import Instance, SyncStats
from runctl.perms import private_dir
from runctl.runtime import Runtime
from runctl.transport.base import Transport

_SHOWN_SECRETS = 5  # paths named in the summary line; the rest are counted


@dataclass(frozen=True)
class LocalTree:
    root: Path
    manifest: Manifest
    secrets: tuple[str, ...] = ()  # what the secret rules kept out (sync_select.Selection)
    script_only: bool = False  # no project around the script: only it (and includes) go

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.manifest.files.values())


def scan_tree(
    runtime: Runtime,
    root: Path,
    includes: Sequence[str],
    *,
    script: str | None = None,
    script_only: bool = False,
) -> LocalTree:
    """Select and hash the files to sync (hashes cached in RUNCTL_HOME by path+mtime).

    ``script`` (relative to ``root``) is always sent; with ``script_only`` nothing else is
    but what ``includes`` select.
    """
    selection = select_files(root, includes, script=script, script_only=script_only)
    key = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    cache = runtime.home / "cache" / f"hashes-{key}.json"
    private_dir(cache.parent)  # paths and hashes of the user's files: theirs only
    manifest = build_manifest(root, selection.files, cache)
    return LocalTree(root, manifest, tuple(selection.secrets), script_only)


def human_size(size: int) -> str:
    """``1536`` -> ``"1.5 KB"``: binary units, one decimal below 10."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            if unit == "B":
                return f"{size} B"
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def summary(tree: LocalTree, script: str | None) -> str:
    """The one line every sync prints: what is sent, and what the secret rules kept out."""
    count = len(tree.manifest.files)
    line = f"sync: {count} file{'s' if count != 1 else ''}, {human_size(tree.total_bytes)}"
    notes: list[str] = []
    if tree.script_only:
        what, where = (f"only {script}", "above it") if script else ("no files", "here or above")
        notes.append(
            f"{what}: no .git or project marker {where}; --project-root DIR sends a directory"
        )
    if tree.secrets:
        shown = ", ".join(tree.secrets[:_SHOWN_SECRETS])
        more = (
            f" and {len(tree.secrets) - _SHOWN_SECRETS} more"
            if len(tree.secrets) > _SHOWN_SECRETS
            else ""
        )
        plural = "s" if len(tree.secrets) != 1 else ""
        notes.append(
            f"excluded {len(tree.secrets)} secret-looking path{plural}: {shown}{more}; "
            "--include PATH to send"
        )
    return line + "".join(f" ({note})" for note in notes)


def check_size(
    tree: LocalTree,
    max_files: int,
    max_mb: float,
    *,
    yes: bool,
    confirm: Callable[[str], bool] | None,
    where: str,
) -> None:
    """Refuse a sync above the thresholds unless the user agrees (``confirm``) or said --yes.

    Raises UsageError without a way to ask, RunctlError when the user says no.
    """
    count, size = len(tree.manifest.files), tree.total_bytes
    if yes or (count <= max_files and size <= max_mb * 1024 * 1024):
        return
    what = f"{count} files, {human_size(size)}"
    limits = f"sync.max_files = {max_files}, sync.max_mb = {max_mb:g}"
    if confirm is None:
        raise UsageError(
            f"refusing to send {what} from {tree.root} to {where} without confirmation "
            f"(over {limits})",
            hint="pass --yes, leave files out with a .runctlignore, pick the directory with "
            "--project-root DIR, or raise sync.max_files / sync.max_mb",
        )
    if not confirm(f"Send {what} from {tree.root} to {where}?"):
        raise RunctlError(
            "cancelled: nothing was sent",
            hint="leave files out with a .runctlignore or pick the directory with "
            "--project-root DIR",
        )


def target_key(instance: Instance, code_dir: str) -> str:
    return f"{instance.provider}:{instance.instance_id}:{code_dir}"


def is_known_synced(runtime: Runtime, instance: Instance, code_dir: str, tree: LocalTree) -> bool:
    """True when state says the host already holds this exact manifest (no I/O to the host)."""
    return runtime.store.get_sync_digest(target_key(instance, code_dir)) == tree.manifest.digest


def forget(runtime: Runtime, instance: Instance, code_dir: str) -> None:
    runtime.store.set_sync_digest(target_key(instance, code_dir), None)


def push_tree(
    runtime: Runtime,
    instance: Instance,
    transport: Transport,
    tree: LocalTree,
    code_dir: str,
    progress: Callable[[str], None],
) -> SyncStats:
    """Bring ``code_dir`` on the host in line with ``tree``; return what it took."""
    started = time.monotonic()
    # The agent picks the directory to sync into: a new hard-linked version when a running
    # job uses the current one, so its code never changes under it. Given the paths we are
    # about to send, it first moves aside any file a job wrote at one of them.
    prepared = agent.call_json(
        instance,
        transport,
        ["prepare-sync", "--base", instance.remote_dir, "--code-dir", code_dir,
         "--paths-on-stdin"],
        input=json.dumps({"files": sorted(tree.manifest.files)}).encode(),
        timeout=120,
    )  # fmt: skip
    for job_id, where in (prepared.get("moved") or {}).items():
        _note_workdir_outputs(runtime, str(job_id), str(where))
    remote: Manifest | None = None
    if prepared.get("manifest"):
        try:
            remote = manifest_from_json(prepared["manifest"])
        except ValueError:
            remote = None  # unreadable: resend everything, rsync skips identical files anyway
    changed, deleted = diff_manifests(tree.manifest, remote)
    total = len(tree.manifest.files)
    if changed or deleted:
        progress(f"syncing {len(changed)} of {total} files to {instance.name}:{code_dir}")
    sent = transport.send_files(tree.root, changed, code_dir)
    request = {
        "manifest": manifest_to_json(tree.manifest),
        "digest": tree.manifest.digest,
        "delete": deleted,
    }
    agent.call_json(
        instance,
        transport,
        ["apply-manifest", "--code-dir", code_dir],
        input=json.dumps(request).encode(),
    )
    runtime.store.set_sync_digest(target_key(instance, code_dir), tree.manifest.digest)
    return SyncStats(
        files_total=total,
        files_sent=len(changed),
        files_deleted=len(deleted),
        bytes_sent=sent,
        skipped=False,
        seconds=time.monotonic() - started,
    )


def _note_workdir_outputs(runtime: Runtime, job_id: str, where: str) -> None:
    """Remember where the agent moved what a job wrote into its working directory when that
    code version was removed, so ``status`` shows it without asking the host."""
    try:
        job = runtime.store.get_job(job_id)
    except RunctlError:
        return  # a job this machine never submitted
    if job.job_id == job_id and job.spec.get("workdir_outputs") != where:
        runtime.store.update_job(job_id, spec={**job.spec, "workdir_outputs": where})
