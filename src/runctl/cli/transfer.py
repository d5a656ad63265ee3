"""``runctl transfer SRC DST``: copy between this machine, S3, SSH hosts and job directories.

Locations are parsed into a ``Location`` (local, s3, host or job). Local ↔ S3 uses the S3
transfer code; anything involving a host or a job goes through runctl.core.transfer (S3 ↔ host
is staged through a temporary directory here).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from runctl.cli.output import json_option
from runctl.errors import UsageError

if TYPE_CHECKING:
    from runctl.storage.s3 import S3Uri

Kind = Literal["local", "s3", "host", "job"]


@dataclass(frozen=True)
class Location:
    """One end of a transfer: ``path`` on this machine, in S3 (``uri``), a host or a job."""

    kind: Kind
    path: str
    host: str = ""  # host name (kind "host") or job id (kind "job")
    uri: S3Uri | None = None


def parse_location(text: str) -> Location:
    """Read ``s3://b/k``, ``job:ID:path``, ``[ssh:]host:path`` or a local path.

    As with rsync and scp, a colon before the first slash means a host; ``./a:b`` and
    ``file://...`` are local, and so is anything that exists here under that name.
    """
    from runctl.storage.s3 import is_s3_uri, parse_uri

    if is_s3_uri(text):
        return Location("s3", text, uri=parse_uri(text))
    if text.startswith("file://"):
        return Location("local", text[len("file://") :])
    if text.startswith("job:"):
        _, job_id, path = (text.split(":", 2) + ["", ""])[:3]
        if not job_id:
            raise UsageError(f"invalid job location {text!r}", hint="use job:ID:path")
        return Location("job", path, host=job_id)
    head, sep, tail = text.removeprefix("ssh:").partition(":")
    if sep and head and "/" not in head and not Path(text).exists():
        return Location("host", tail, host=head)
    return Location("local", text)


@click.command()
@click.argument("source")
@click.argument("destination")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Check SHA-256 checksums end to end after the transfer.")  # fmt: skip
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Skip files already there and continue interrupted multipart uploads; "
                   "--no-resume sends everything again.")  # fmt: skip
@click.option("--compress", is_flag=True,
              help="Gzip files on upload (keys get .gz); gunzip them on download.")  # fmt: skip
@click.option("--parallel", type=click.IntRange(1, 256),
              help="Parallel requests (default: s3.max_concurrency).")  # fmt: skip
@json_option
def transfer(source: str, destination: str, verify: bool, resume: bool, compress: bool,
             parallel: int | None) -> None:  # fmt: skip
    """Copy SOURCE to DESTINATION: local paths, s3://..., HOST:path or job:ID:path.

    \b
    Examples:
      runctl transfer ./data s3://bucket/datasets/mnist/
      runctl transfer s3://bucket/datasets/mnist/ gpu1:datasets/mnist/
      runctl transfer job:train-3f9a2c:outputs ./results
    """
    from runctl.cli.s3 import local_destination, open_storage, report
    from runctl.storage.s3 import TransferOptions

    src, dst = parse_location(source), parse_location(destination)
    if src.kind in ("host", "job") or dst.kind in ("host", "job"):
        _host_transfer(src, dst, verify=verify, resume=resume, compress=compress,
                       parallel=parallel)  # fmt: skip
        return
    opts = TransferOptions(verify=verify, resume=resume, compress=compress,
                           skip_unchanged=resume)  # fmt: skip
    storage = open_storage(parallel)
    if src.kind == "local" and dst.uri is not None:
        path = Path(src.path)
        if not path.exists():
            raise UsageError(f"{path} does not exist")
        summary = storage.upload(path, dst.uri, opts)
    elif src.uri is not None and dst.kind == "local":
        summary = storage.download(src.uri, local_destination(dst.path), opts, recursive=None)
    else:
        raise UsageError(
            "transfer needs one local path and one s3:// location",
            hint="e.g. runctl transfer ./out s3://bucket/run1/  (or the reverse)",
        )
    summary.operation = "transfer"
    report(summary)


def _host_transfer(src: Location, dst: Location, *, verify: bool, resume: bool, compress: bool,
                   parallel: int | None) -> None:  # fmt: skip
    """Any transfer with a host or job end; S3 <-> host is staged through a temp dir."""
    import tempfile
    import time

    from runctl.cli.output import emit, progress, runtime
    from runctl.core import transfer as core

    started = time.monotonic()
    rt = runtime()
    if src.kind in ("host", "job") and dst.kind in ("host", "job"):
        raise UsageError(
            "copying directly between two hosts is not supported",
            hint="copy to this machine (or S3) first, then on to the other host",
        )
    checked = 0
    with tempfile.TemporaryDirectory(prefix="runctl-transfer-") as tmp:
        if dst.kind in ("host", "job"):
            end = core.resolve_end(rt, dst.kind, dst.host, dst.path)
            local = Path(src.path)
            if src.uri is not None:  # S3 -> host: download here first
                local = _stage_download(src, Path(tmp), verify, resume, compress, parallel)
            checked = core.push(end, local, compress=compress, resume=resume, check=verify,
                                progress=progress)  # fmt: skip
        else:
            end = core.resolve_end(rt, src.kind, src.host, src.path)
            local = Path(tmp) / "staged" if dst.uri is not None else Path(dst.path)
            checked = core.pull(end, local, compress=compress, resume=resume, check=verify,
                                progress=progress)  # fmt: skip
            if dst.uri is not None:  # host -> S3: upload what we fetched
                _stage_upload(local, dst, verify, resume, compress, parallel)
    summary = {
        "operation": "transfer",
        "source": source_text(src),
        "destination": source_text(dst),
        "verified_files": checked,
        "seconds": round(time.monotonic() - started, 3),
    }
    emit(summary, f"copied {source_text(src)} -> {source_text(dst)}"
         + (f" ({checked} files verified)" if verify else ""))  # fmt: skip


def source_text(loc: Location) -> str:
    if loc.kind in ("host", "job"):
        return f"{'job:' if loc.kind == 'job' else ''}{loc.host}:{loc.path}"
    return str(loc.uri or loc.path)


def _stage_download(src: Location, tmp: Path, verify: bool, resume: bool, compress: bool,
                    parallel: int | None) -> Path:  # fmt: skip
    from runctl.cli.s3 import open_storage
    from runctl.storage.s3 import TransferOptions

    assert src.uri is not None
    opts = TransferOptions(verify=verify, resume=resume, compress=compress,
                           skip_unchanged=resume)  # fmt: skip
    target = tmp / "staged"
    open_storage(parallel).download(src.uri, target, opts, recursive=None)
    return target


def _stage_upload(local: Path, dst: Location, verify: bool, resume: bool, compress: bool,
                  parallel: int | None) -> None:  # fmt: skip
    from runctl.cli.s3 import open_storage
    from runctl.storage.s3 import TransferOptions

    assert dst.uri is not None
    opts = TransferOptions(verify=verify, resume=resume, compress=compress,
                           skip_unchanged=resume)  # fmt: skip
    open_storage(parallel).upload(local, dst.uri, opts)
