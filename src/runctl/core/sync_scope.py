"""Sync scope: which local files a job's code is made of, said out loud before anything goes.

A script's project is the nearest directory above it holding ``.git`` or a marker file
(``sync_select.find_project``), except that the home directory, the directories above it,
``/`` and the system directories never count (a dotfiles ``~/.git`` is not a project). A
script with no project around it is sent alone, with whatever ``--include`` selects: its
directory may be the home directory or ``/etc``, and guessing wrong would upload keys and
other people's files. ``--project-root DIR`` names the tree explicitly. Either way the
secret rules of ``sync_select`` apply, every sync prints one summary line (files, bytes,
what the secret rules kept out), and a tree above ``sync.max_files`` / ``sync.max_mb`` is
only sent after a yes on the terminal or ``--yes``.

Sending the script alone beats refusing: a lone ``train.py`` in a scratch directory still
runs with one command, and the summary line says how to send more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runctl.core import sync
from runctl.core.sync_select import find_project
from runctl.errors import NotFoundError, UsageError
from runctl.models import Instance
from runctl.runtime import Runtime

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Scope:
    """Where a job's code comes from.

    ``mode``: ``"project"`` (found from ``.git`` or a marker), ``"explicit"``
    (``--project-root``) or ``"script"`` (no project: only the script and the includes).
    """

    root: Path
    argv: list[str]  # as the host sees it: the script relative to ``root``
    mode: str
    script: str | None  # the script relative to ``root``; None for commands


def scope_of(
    argv: Sequence[str], kind: str, project_root: Path | None, cwd: Path | None = None
) -> Scope:
    """Work out the scope of a submit; UsageError / NotFoundError for impossible ones.

    For commands the project is searched from ``cwd`` (default: the current directory).
    """
    args = list(argv)
    if not args or not args[0]:
        raise UsageError("nothing to run", hint="give a script: runctl run train.py -- --epochs 3")
    explicit = _explicit_root(project_root) if project_root is not None else None
    if kind == "command":
        if explicit is not None:
            return Scope(explicit, args, "explicit", None)
        found = find_project((cwd or Path.cwd()) / "__runctl_exec__")
        return Scope(found.path, args, "script" if found.kind == "none" else "project", None)
    if "\0" in args[0]:
        raise UsageError("script path contains a NUL byte")
    script = Path(args[0])
    if not script.is_file():
        raise NotFoundError(
            f"script not found: {args[0]}",
            hint="give a path to a file, relative to the current directory",
        )
    if explicit is not None:
        root, mode = explicit, "explicit"
    else:
        found = find_project(script)
        root, mode = found.path, "script" if found.kind == "none" else "project"
    try:
        rel = script.resolve().relative_to(root).as_posix()
    except ValueError:
        raise UsageError(
            f"{args[0]} is outside the project root {root}",
            hint="give a --project-root that contains the script",
        ) from None
    return Scope(root, [rel, *args[1:]], mode, rel)


def _explicit_root(path: Path) -> Path:
    root = path.expanduser().resolve()
    if not root.is_dir():
        raise UsageError(
            f"--project-root {path}: not a directory",
            hint="name the directory whose files the job needs",
        )
    return root


def scan(
    runtime: Runtime,
    scope: Scope,
    includes: Sequence[str],
    instance: Instance,
    code_dir: str,
    progress: Progress,
    *,
    yes: bool,
    confirm: Callable[[str], bool] | None,
) -> sync.LocalTree:
    """Select and hash the tree, print the summary line, enforce the size thresholds.

    Raises UsageError (over a threshold, no way to ask) or RunctlError (the user said no)
    before anything is sent. A tree the host is known to hold already is not asked about.
    """
    tree = sync.scan_tree(
        runtime, scope.root, includes, script=scope.script, script_only=scope.mode == "script"
    )
    progress(sync.summary(tree, scope.script))
    if not sync.is_known_synced(runtime, instance, code_dir, tree):
        cfg = runtime.config
        sync.check_size(
            tree, int(cfg.get("sync.max_files")), float(cfg.get("sync.max_mb")), yes=yes,
            confirm=confirm, where=instance.name,
        )  # fmt: skip
    return tree


def plan(
    runtime: Runtime, scope: Scope, includes: Sequence[str], *, is_local: bool
) -> dict[str, Any]:
    """What a submit would send, for ``--dry-run``: nothing is recorded, nothing contacted.

    ``files`` lists every file the host's copy of the code will hold, with its size (a host
    that has some of them already receives only the ones that differ). Local jobs run in
    place, so nothing is sent for them.
    """
    data: dict[str, Any] = {"root": str(scope.root), "scope": scope.mode, "argv": scope.argv}
    if is_local:
        note = "local jobs run in place: nothing is sent"
        return {**data, "files": [], "total_files": 0, "total_bytes": 0,
                "excluded_secrets": [], "note": note}  # fmt: skip
    tree = sync.scan_tree(
        runtime, scope.root, includes, script=scope.script, script_only=scope.mode == "script"
    )
    files = [
        {"path": path, "size": entry.size} for path, entry in sorted(tree.manifest.files.items())
    ]
    return {**data, "files": files, "total_files": len(files), "total_bytes": tree.total_bytes,
            "excluded_secrets": list(tree.secrets),
            "summary": sync.summary(tree, scope.script)}  # fmt: skip
