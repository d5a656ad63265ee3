"""``runctl s3``: upload, download, sync, list, clean up, watch and review S3 prefixes.

The work happens in ``runctl.storage.s3``; this module turns flags into TransferOptions,
draws a progress bar on stderr (only on a terminal, never under --json) and prints results.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from runctl.cli.output import emit, is_json, json_option, progress, runtime, table
from runctl.cli.params import seconds
from runctl.errors import ConfigError, RunctlError, UsageError
from runctl.perms import private_dir

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgressBar

    from runctl.storage.s3 import ObjectInfo, S3Storage, TransferOptions, TransferSummary

F = TypeVar("F", bound=Callable[..., Any])


# ----------------------------------------------------------------------------- shared helpers


def open_storage(concurrency: int | None = None) -> S3Storage:
    """An S3Storage configured from runctl's config (aws.*, s3.*) and RUNCTL_HOME."""
    from runctl.storage.s3 import MIB, S3Settings, S3Storage

    rt = runtime()
    cfg = rt.config
    workers = concurrency or int(cfg.get("s3.max_concurrency"))
    threshold_mb = int(cfg.get("s3.multipart_threshold_mb"))
    if workers < 1 or threshold_mb < 1:
        raise ConfigError(
            "s3.max_concurrency and s3.multipart_threshold_mb must be at least 1",
            hint="fix them with `runctl config set KEY VALUE`",
        )
    settings = S3Settings(
        region=str(cfg.get("aws.region")),
        profile=str(cfg.get("aws.profile")),
        endpoint_url=str(cfg.get("s3.endpoint_url")),
        max_concurrency=workers,
        multipart_threshold=threshold_mb * MIB,
    )
    bar = RichProgress() if sys.stderr.isatty() and not is_json() else None
    return S3Storage(
        settings,
        state_dir=private_dir(rt.home / "transfers"),
        progress=bar,
        warn=lambda message: progress(f"warning: {message}"),
    )


def local_destination(text: str) -> Path:
    """A download target; a trailing / means "into this directory" (made if missing)."""
    path = Path(text).expanduser()
    if text.endswith(("/", os.sep)) and not path.is_dir():
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise UsageError(f"cannot create {path}: {exc.strerror}") from None
    return path


def transfer_options(fn: F) -> F:
    """--include/--exclude/--concurrency/--use-s5cmd, shared by upload, download and sync."""
    fn = click.option("--use-s5cmd", is_flag=True,
                      help="Move the bytes with the s5cmd binary (must be on PATH); runctl "
                      "still picks the files and checks the sizes.")(fn)  # fmt: skip
    fn = click.option("--concurrency", type=click.IntRange(1, 256),
                      help="Parallel requests (default: s3.max_concurrency).")(fn)  # fmt: skip
    fn = click.option("--exclude", multiple=True, metavar="GLOB",
                      help="Leave out matching paths (repeatable).")(fn)  # fmt: skip
    return click.option(
        "--include", multiple=True, metavar="GLOB",
        help="Only matching paths (repeatable); a pattern without / also matches file names.",
    )(fn)  # fmt: skip


class RichProgress:
    """A byte progress bar on stderr; thread-safe (rich locks around updates)."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._bar: RichProgressBar = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
            TransferSpeedColumn(), TimeRemainingColumn(),
            console=console or Console(stderr=True), transient=True,
        )  # fmt: skip
        self._task: Any = None

    def start(self, files: int, nbytes: int) -> None:
        self._bar.start()
        self._task = self._bar.add_task(_count(files, "file"), total=nbytes)

    def advance(self, nbytes: int) -> None:
        if self._task is not None:
            self._bar.advance(self._task, nbytes)

    def finish(self) -> None:
        self._bar.stop()


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def report(summary: TransferSummary, method: str = "") -> None:
    """Print a transfer summary; then, if some objects failed, list them and fail (exit 1)."""

    def text() -> None:
        if summary.dry_run:
            for action in summary.actions:
                where = action.get("path", "")
                arrow = f"{where} -> {action.get('key', '')}" if where and "key" in action else (
                    where or action.get("key", ""))  # fmt: skip
                click.echo(f"would {action['action']} {arrow}")
            click.echo(f"dry run: {len(summary.actions)} actions, {summary.skipped} up to date")
            return
        verb = {"upload": "uploaded", "download": "downloaded", "sync": "synced"}.get(
            summary.operation, summary.operation
        )
        line = (
            f"{verb} {_count(summary.files, 'file')} "
            f"({human_bytes(summary.bytes)}) in {summary.seconds:.2f} s "
            f"({summary.mb_per_s:.1f} MB/s)"
        )
        extras = [
            f"{summary.skipped} up to date" if summary.skipped else "",
            f"{summary.deleted} deleted" if summary.deleted else "",
            f"{human_bytes(summary.resumed_bytes)} resumed" if summary.resumed_bytes else "",
            f"{summary.verified} verified" if summary.verified else "",
        ]
        tail = f" ({method})" if method else ""
        click.echo("; ".join([line, *[e for e in extras if e]]) + tail)

    data = summary.to_dict()
    if method:
        data["method"] = method
    emit(data, text)
    if summary.failed:
        for failure in summary.failed[:20]:
            progress(f"failed: {failure}")
        if len(summary.failed) > 20:
            progress(f"... and {len(summary.failed) - 20} more")
        raise RunctlError(
            f"{len(summary.failed)} of {summary.files + len(summary.failed)} transfers failed",
            hint="run it again: multipart uploads resume, and sync/transfer skip finished files",
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _object_rows(objects: list[ObjectInfo], human: bool) -> list[tuple[str, str, str]]:
    return [(o.modified, human_bytes(o.size) if human else str(o.size), o.key) for o in objects]


# ----------------------------------------------------------------------------- commands


@click.group()
def s3() -> None:
    """Move files between this machine and S3 (or any S3-compatible store).

    \b
    Credentials and region come from the AWS SDK chain (AWS_PROFILE, env vars,
    ~/.aws) unless aws.profile / aws.region are set; s3.endpoint_url or
    AWS_ENDPOINT_URL_S3 selects another S3 server (MinIO, SeaweedFS, ...).

    \b
    Examples:
      runctl s3 upload -r data/ s3://my-bucket/data/
      runctl s3 list -r -H s3://my-bucket/runs/
      runctl s3 sync outputs/ s3://my-bucket/outputs/ --dry-run
    """


@s3.command(name="upload")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("destination", metavar="S3URI")
@click.option("-r", "--recursive", is_flag=True, help="Upload a directory, every file under it.")
@transfer_options
@json_option
def s3_upload(source: Path, destination: str, recursive: bool, include: tuple[str, ...],
              exclude: tuple[str, ...], concurrency: int | None,
              use_s5cmd: bool = False) -> None:  # fmt: skip
    """Upload a file or directory to S3.

    S3URI is the key for a file, or a prefix (ending in /) to put it or a directory under.
    Large files go up in parallel parts; an interrupted upload resumes when run again.

    \b
    Examples:
      runctl s3 upload model.pt s3://my-bucket/models/
      runctl s3 upload -r data/ s3://my-bucket/data/ --exclude '*.tmp'
    """
    from runctl.storage.s3 import TransferOptions, parse_uri

    uri = parse_uri(destination)
    if source.is_dir() and not recursive:
        raise UsageError(f"{source} is a directory", hint="pass -r/--recursive to upload it")
    opts = TransferOptions(include=include, exclude=exclude)
    storage = open_storage(concurrency)
    _transfer(storage, lambda o: storage.upload(source, uri, o), opts, use_s5cmd)


@s3.command(name="download")
@click.argument("source", metavar="S3URI")
@click.argument("destination", type=click.Path())
@click.option("-r", "--recursive", is_flag=True, help="Download everything under the prefix.")
@transfer_options
@json_option
def s3_download(source: str, destination: str, recursive: bool, include: tuple[str, ...],
                exclude: tuple[str, ...], concurrency: int | None,
                use_s5cmd: bool = False) -> None:  # fmt: skip
    """Download an object, or with -r a prefix, to DESTINATION.

    An object goes into DESTINATION if it is a directory (or ends in /), else becomes it.
    Keys that would land outside DESTINATION (``..``, absolute keys) are skipped.

    \b
    Examples:
      runctl s3 download s3://my-bucket/model.pt .
      runctl s3 download -r s3://my-bucket/data/ data/ --include '*.parquet'
    """
    from runctl.storage.s3 import TransferOptions, parse_uri

    uri = parse_uri(source)
    opts = TransferOptions(include=include, exclude=exclude)
    dest = local_destination(destination)
    storage = open_storage(concurrency)
    _transfer(storage, lambda o: storage.download(uri, dest, o, recursive=recursive), opts,
              use_s5cmd)  # fmt: skip


@s3.command(name="sync")
@click.argument("source")
@click.argument("destination")
@click.option("--delete", is_flag=True, help="Delete destination files the source lacks.")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.option("--direction", type=click.Choice(["up", "down"]), hidden=True,
              help="Old: `sync DIR S3URI --direction down` = `sync S3URI DIR`.")  # fmt: skip
@transfer_options
@json_option
def s3_sync(source: str, destination: str, delete: bool, dry_run: bool,
            include: tuple[str, ...], exclude: tuple[str, ...],
            concurrency: int | None, use_s5cmd: bool = False,
            direction: str | None = None) -> None:  # fmt: skip
    """Make DESTINATION match SOURCE (local directory <-> S3).

    One side is a directory, the other an s3://bucket/prefix.

    Files with the same size whose copy is not older (or whose MD5 matches the ETag) are
    left alone; downloaded files get the object's time as their mtime.

    \b
    Examples:
      runctl s3 sync outputs/ s3://my-bucket/outputs/
      runctl s3 sync s3://my-bucket/data/ data/ --delete --dry-run
    """
    from runctl.storage.s3 import TransferOptions, is_s3_uri

    if direction is not None:  # the seed named the local side first and said which way
        from runctl.cli.seed_compat import note

        local, remote = (destination, source) if is_s3_uri(source) else (source, destination)
        new = f"s3 sync {local} {remote}" if direction == "up" else f"s3 sync {remote} {local}"
        note(f"s3 sync {source} {destination} --direction {direction}", new)
        source, destination = (local, remote) if direction == "up" else (remote, local)
    opts = TransferOptions(include=include, exclude=exclude, delete=delete, dry_run=dry_run)
    storage = open_storage(concurrency)
    _transfer(storage, lambda o: storage.sync(source, destination, o), opts, use_s5cmd)


def _transfer(storage: S3Storage, run: Callable[[TransferOptions], TransferSummary],
              opts: TransferOptions, use_s5cmd: bool) -> None:  # fmt: skip
    """Run a transfer natively, or (--use-s5cmd) plan it natively and let s5cmd move it."""
    if not use_s5cmd or opts.dry_run:
        report(run(opts))
        return
    from dataclasses import replace

    from runctl.storage.s3.s5cmd import find_s5cmd, run_plan

    binary = find_s5cmd()  # before any listing: a missing binary is the first thing to say
    report(run_plan(storage, run(replace(opts, dry_run=True)), binary), method="s5cmd")


@s3.command(name="list")
@click.argument("location", metavar="S3URI")
@click.option("-r", "--recursive", is_flag=True, help="List every object, not one level.")
@click.option("-H", "--human", "--human-readable", is_flag=True, help="Sizes in KiB/MiB/GiB.")
@json_option
def s3_list(location: str, recursive: bool, human: bool) -> None:
    """List objects under S3URI (every page: no 1000-key limit).

    Without -r, one level: deeper keys are grouped as PRE prefix/ lines.

    \b
    Examples:
      runctl s3 list s3://my-bucket/
      runctl s3 list -r -H s3://my-bucket/runs/
    """
    from runctl.storage.s3 import parse_uri

    uri = parse_uri(location)
    objects, prefixes = open_storage().list_prefix(uri, recursive=recursive)
    total = sum(o.size for o in objects)
    data = {
        "path": str(uri),
        "objects": [o.to_dict() for o in objects],
        "prefixes": prefixes,
        "total_count": len(objects),
        "total_size": total,
    }

    def text() -> None:
        if not objects and not prefixes:
            click.echo(f"nothing under {uri}")
            return
        rows = [("", "PRE", p) for p in prefixes] + _object_rows(objects, human)
        table(["modified", "size", "key"], rows)
        size = human_bytes(total) if human else f"{total} bytes"
        click.echo(f"{_count(len(objects), 'object')}, {size}")

    emit(data, text)


@s3.command(name="cleanup")
@click.argument("location", metavar="S3URI")
@click.option("--keep-last-n", type=click.IntRange(min=1),
              help="Checkpoints to keep (default: checkpoint.keep_last_n).")  # fmt: skip
@click.option("--include", "named", multiple=True, metavar="NAME",
              help="Also consider this last*/best*/final* checkpoint.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; delete nothing.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
def s3_cleanup(
    location: str, keep_last_n: int | None, named: tuple[str, ...], dry_run: bool, yes: bool
) -> None:
    """Delete all but the newest complete checkpoints under S3URI, whole.

    Checkpoints are files (.pt .pth .ckpt .safetensors .bin) and framework directories (HF
    checkpoint-N/, Accelerate, DCP, DeepSpeed, Orbax), ordered by step or epoch, then time;
    a directory goes with all its objects, a file with its sidecar JSON. Never deleted: the
    newest complete checkpoint, last*/best*/final* and files without a step or epoch (an
    exported model.pt) unless --include names them, or anything else. --dry-run lists
    exactly what --yes deletes.

    \b
    Examples:
      runctl s3 cleanup s3://my-bucket/ckpts/ --keep-last-n 3 --dry-run
    """
    from runctl.storage.s3 import parse_uri

    uri = parse_uri(location)
    keep_n = keep_last_n or int(runtime().config.get("checkpoint.keep_last_n"))
    storage = open_storage()
    plan = storage.plan_cleanup(uri, keep_n, named)
    doomed = [o.key for o in plan.delete]
    freed = sum(o.size for o in plan.delete)
    data: dict[str, Any] = {
        "path": str(uri), "total_checkpoints": len(plan.keep) + len(plan.delete),
        "kept": [o.key for o in plan.keep], "deleted": doomed, "bytes_freed": freed,
        "objects": len(plan.delete_keys), "dry_run": dry_run,
    }  # fmt: skip
    if doomed and not dry_run:
        if not is_json():
            for obj in plan.delete:
                click.echo(f"delete s3://{uri.bucket}/{obj.key} ({human_bytes(obj.size)})")
        question = f"Delete {len(doomed)} checkpoints ({human_bytes(freed)}) under {uri}?"
        if not yes and not click.confirm(question, default=False, err=True):
            raise RunctlError(
                "cleanup cancelled: nothing deleted", hint="pass --yes to skip asking"
            )
        removed, data["failed"] = storage.delete_keys(uri.bucket, plan.delete_keys)
        gone = set(removed)
        data["deleted"] = [
            o.key for o in plan.delete
            if o.key in gone or (o.key.endswith("/") and not any(
                k.startswith(o.key) and k not in gone for k in plan.delete_keys))
        ]  # fmt: skip

    def text() -> None:
        if dry_run:
            for obj in plan.delete:
                click.echo(f"would delete s3://{uri.bucket}/{obj.key} ({human_bytes(obj.size)})")
        verb = "would delete" if dry_run else "deleted"
        click.echo(f"{verb} {len(data['deleted'])} of {data['total_checkpoints']} checkpoints "
                   f"({human_bytes(freed)}); kept {len(plan.keep)}")  # fmt: skip

    emit(data, text)
    if data.get("failed"):
        raise RunctlError(
            f"{len(data['failed'])} deletions failed: {data['failed'][0]}",
            hint="check delete permissions (s3:DeleteObject) on the bucket",
        )


@s3.command(name="watch")
@click.argument("location", metavar="S3URI")
@click.option("--interval", type=seconds(), default=30.0, show_default=True,
              help="Seconds between polls.")  # fmt: skip
@click.option("--max-polls", type=click.IntRange(min=1), help="Stop after N polls.")
@json_option
def s3_watch(location: str, interval: float, max_polls: int | None) -> None:
    """Print objects that appear, change or vanish under S3URI.

    Runs until Ctrl-C (or --max-polls). With --json, one JSON object per line for each
    event, then a summary line.

    \b
    Examples:
      runctl s3 watch s3://my-bucket/ckpts/
      runctl s3 watch s3://my-bucket/ckpts/ --interval 30
    """
    from runctl.storage.s3 import parse_uri

    uri = parse_uri(location)
    storage = open_storage()
    polls = events = 0
    try:
        for poll in storage.watch(uri, interval, max_polls):
            polls = poll.number
            if poll.number == 1:
                size = human_bytes(poll.bytes)
                progress(
                    f"watching {uri}: {_count(poll.objects, 'object')} ({size}); Ctrl-C to stop"
                )
            for event in poll.events:
                events += 1
                if is_json():
                    click.echo(json.dumps({"event": event.kind, **event.obj.to_dict()}))
                else:
                    stamp = datetime.now(UTC).strftime("%H:%M:%S")
                    click.echo(f"{stamp} {event.kind:<7} s3://{uri.bucket}/{event.obj.key} "
                               f"({human_bytes(event.obj.size)})")  # fmt: skip
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass  # the way to stop watching; not an error
    summary = {"path": str(uri), "polls": polls, "events": events}
    if is_json():
        click.echo(json.dumps({"summary": summary}))
    else:
        progress(f"stopped after {polls} polls, {events} events")


@s3.command(name="review")
@click.argument("location", metavar="S3URI")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True,
              help="How many of the largest objects to show.")  # fmt: skip
@click.option("-d", "--detailed", is_flag=True, help="Also list the largest objects.")
@json_option
def s3_review(location: str, top: int, detailed: bool) -> None:
    """Summarize a prefix: checkpoints, models, logs, other files.

    Counts and sizes per kind, the latest checkpoint and (with -d) the largest objects.

    \b
    Examples:
      runctl s3 review s3://my-bucket/
      runctl s3 review s3://my-bucket/runs/ --top 20
    """
    from runctl.storage.s3 import parse_uri

    uri = parse_uri(location)
    started = time.monotonic()
    data = open_storage().review(uri, top_n=top)
    data["seconds"] = round(time.monotonic() - started, 3)

    def text() -> None:
        line = f"{uri}: {_count(data['total_objects'], 'object')}, "
        line += human_bytes(data["total_bytes"])
        if data["last_modified"]:
            line += f", last change {data['last_modified']}"
        click.echo(line)
        rows = [(kind, v["count"], human_bytes(v["bytes"])) for kind, v in data["kinds"].items()]
        table(["kind", "count", "size"], rows)
        latest = data["latest_checkpoint"]
        if latest:
            click.echo(f"latest checkpoint: {latest['key']} ({latest['last_modified']})")
        if detailed and data["largest"]:
            click.echo("largest:")
            for item in data["largest"]:
                click.echo(f"  {human_bytes(item['size']):>10}  {item['key']}")

    emit(data, text)
