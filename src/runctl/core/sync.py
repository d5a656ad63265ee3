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
    collect_files,
    diff_manifests,
    manifest_from_json,
    manifest_to_json,
)
from runctl.models import Instance, SyncStats
from runctl.runtime import Runtime
from runctl.transport.base import Transport


@dataclass(frozen=True)
class LocalTree:
    root: Path
    manifest: Manifest


def scan_tree(runtime: Runtime, root: Path, includes: Sequence[str]) -> LocalTree:
    """Select and hash the files to sync (hashes cached in RUNCTL_HOME by path+mtime)."""
    files = collect_files(root, includes)
    key = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    cache = runtime.home / "cache" / f"hashes-{key}.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    return LocalTree(root, build_manifest(root, files, cache))


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
    # job uses the current one, so its code never changes under it.
    prepared = agent.call_json(
        instance,
        transport,
        ["prepare-sync", "--base", instance.remote_dir, "--code-dir", code_dir],
        timeout=120,
    )
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
