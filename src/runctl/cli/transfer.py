"""``runctl transfer SRC DST``: copy between this machine and S3, in either direction.

Locations are parsed into a ``Location`` (local, s3, host or job) so that host and job
transfers can be added here later; for now those kinds are refused with a clear message.
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
    """Copy SOURCE to DESTINATION: a file or directory to s3://..., or back.

    \b
    Examples:
      runctl transfer ./data s3://bucket/datasets/mnist/
      runctl transfer s3://bucket/runs/7/model.pt ./model.pt --compress
    """
    from runctl.cli.s3 import local_destination, open_storage, report
    from runctl.storage.s3 import TransferOptions

    src, dst = parse_location(source), parse_location(destination)
    for end in (src, dst):
        if end.kind in ("host", "job"):
            raise UsageError(
                "transfers to hosts are not available yet",
                hint=f"{source if end is src else destination!r} names a {end.kind}; "
                "stage it through S3, or use `runctl get JOB PATH` for job outputs",
            )
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
