"""``runctl checkpoint``: list, inspect, prune and resume from checkpoints.

A LOCATION is a local directory, ``job:JOB_ID`` for the checkpoint directory of a job on
whatever host it ran, or an ``s3://bucket/prefix``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import click

from runctl.cli.output import emit, is_json, json_option, progress, runtime, table
from runctl.errors import NotFoundError


def _job_ref(location: str) -> str | None:
    return location[4:] if location.startswith("job:") else None


def _rows(location: str) -> list[dict[str, Any]]:
    """Checkpoints at LOCATION, oldest first, as dicts (path, bytes, mtime, step, meta)."""
    from runctl.storage.checkpoints import CHECKPOINT_EXTS, list_checkpoints, step_of

    ref = _job_ref(location)
    if ref is not None:
        rows = _agent_checkpoints(ref)
        for row in rows:
            row["step"] = step_of(Path(row["path"]).name)
        return rows
    if location.startswith("s3://"):
        from runctl.cli.s3 import open_storage
        from runctl.storage.s3 import order_checkpoints, parse_uri

        uri = parse_uri(location)
        storage = open_storage()
        with storage.errors(location):
            found = order_checkpoints(
                o for o in storage.iter_objects(uri.bucket, uri.prefix)
                if o.key.endswith(CHECKPOINT_EXTS)
            )  # fmt: skip
        return [
            {"path": f"s3://{uri.bucket}/{o.key}", "bytes": o.size, "mtime": o.last_modified,
             "step": step_of(o.key.rsplit("/", 1)[-1])}
            for o in found
        ]  # fmt: skip
    directory = Path(location)
    if not directory.is_dir():
        raise NotFoundError(f"no such directory: {location}", hint="give a checkpoint directory")
    return [
        {"path": str(c.path), "bytes": c.bytes, "mtime": c.mtime, "step": c.step}
        for c in list_checkpoints(directory)
    ]


def _agent_checkpoints(ref: str, keep: int | None = None, dry_run: bool = False) -> list[Any]:
    from runctl.core import agent
    from runctl.core.targets import instance_of_job

    rt = runtime()
    job = rt.store.get_job(ref)
    target = instance_of_job(rt, job.provider, job.instance_id)
    transport = target.provider.connect(target.instance)
    args = ["checkpoints", "--dir", job.checkpoint_dir]
    if keep is not None:
        args += ["--keep", str(keep)]
        if dry_run:
            args.append("--dry-run")
    rows: list[Any] = agent.call_json(target.instance, transport, args)
    return rows


@click.group()
def checkpoint() -> None:
    """List, inspect, prune and resume from checkpoints (.pt .pth .ckpt .safetensors)."""


@checkpoint.command(name="list")
@click.argument("location")
@json_option
def checkpoint_list(location: str) -> None:
    """List checkpoints at LOCATION (a directory, job:JOB_ID or s3://…), newest last."""
    rows = _rows(location)

    def text() -> None:
        if not rows:
            click.echo(f"no checkpoints in {location}")
            return
        table(["checkpoint", "step", "size", "modified"],
              [(Path(r["path"]).name, r.get("step"), _size(r["bytes"]), _when(r["mtime"]))
               for r in rows])  # fmt: skip

    emit(rows, text)


@checkpoint.command(name="info")
@click.argument("path")
@json_option
def checkpoint_info(path: str) -> None:
    """Show epoch/step/loss of a checkpoint: PATH, s3://…, or job:JOB_ID[:NAME] (latest/NAME).

    Read from a sidecar JSON when there is one, else with torch (weights_only) when installed.
    """
    from runctl.storage.checkpoints import inspect_checkpoint

    ref = _job_ref(path)
    if path.startswith("s3://"):
        info = _s3_info(path)
    elif ref is None:
        local = Path(path)
        if not local.is_file():
            raise NotFoundError(f"no such checkpoint file: {path}")
        info = inspect_checkpoint(local)
    else:
        job_ref, _, name = ref.partition(":")
        rows = _agent_checkpoints(job_ref)
        if name:
            rows = [r for r in rows if Path(r["path"]).name == name]
        if not rows:
            raise NotFoundError(f"no checkpoint {name or ''} in job {job_ref}".replace("  ", " "),
                                hint=f"see `runctl checkpoint list job:{job_ref}`")  # fmt: skip
        row = rows[-1]
        if row.get("meta"):
            info = {"path": row["path"], "bytes": row["bytes"], "source": "sidecar", **row["meta"]}
        else:
            from runctl.core.jobs import fetch

            rt = runtime()
            job = rt.store.get_job(job_ref)
            progress(f"downloading {Path(row['path']).name} ({_size(row['bytes'])}) to inspect it")
            with tempfile.TemporaryDirectory() as tmp:
                local = fetch(rt, job, Path(row["path"]).name, Path(tmp) / "ckpt",
                              root="checkpoints")  # fmt: skip
                info = inspect_checkpoint(local)
                info["path"] = row["path"]

    def text() -> None:
        for key, value in info.items():
            if value is not None:
                click.echo(f"{key:>14}: {value}")

    emit(info, text)


def _s3_info(uri_text: str) -> dict[str, Any]:
    """Inspect an S3 checkpoint: its sidecar JSON if present, else the object itself."""
    from runctl.cli.s3 import open_storage
    from runctl.storage.checkpoints import inspect_checkpoint
    from runctl.storage.s3 import TransferOptions, parse_uri

    uri = parse_uri(uri_text)
    storage = open_storage()
    head = storage.head(uri)
    if head is None:
        raise NotFoundError(f"no such object: {uri_text}", hint="see `runctl checkpoint list`")
    sidecar = parse_uri(uri_text.rsplit(".", 1)[0] + ".json")
    opts = TransferOptions(verify=False, resume=False, compress=False, skip_unchanged=False)
    with tempfile.TemporaryDirectory() as tmp:
        name = uri.key.rsplit("/", 1)[-1]
        if storage.head(sidecar) is not None:
            storage.download(sidecar, Path(tmp) / (name.rsplit(".", 1)[0] + ".json"), opts,
                             recursive=False)  # fmt: skip
            (Path(tmp) / name).write_bytes(b"")  # only the sidecar is needed
        else:
            progress(f"downloading {name} to inspect it")
            storage.download(uri, Path(tmp) / name, opts, recursive=False)
        info = inspect_checkpoint(Path(tmp) / name)
    info.update(path=uri_text, bytes=head.get("ContentLength", info.get("bytes")))
    return info


@checkpoint.command(name="cleanup")
@click.argument("location")
@click.option(
    "--keep-last-n",
    type=click.IntRange(min=0),
    default=None,
    help="How many newest checkpoints to keep (default: checkpoint.keep_last_n).",
)
@click.option("--dry-run", is_flag=True, help="Show what would be deleted.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
def checkpoint_cleanup(location: str, keep_last_n: int | None, dry_run: bool, yes: bool) -> None:
    """Delete all but the newest N checkpoints (and their sidecar JSON) at LOCATION."""
    from runctl.storage.checkpoints import list_checkpoints, sidecar_of, to_keep_and_delete

    keep = keep_last_n if keep_last_n is not None else runtime().config.get(
        "checkpoint.keep_last_n")  # fmt: skip
    rows = _rows(location)
    doomed = rows[: max(len(rows) - keep, 0)]
    if not doomed:
        emit({"deleted": [], "kept": len(rows)}, f"nothing to delete ({len(rows)} checkpoints)")
        return
    for row in doomed:
        progress(f"{'would delete' if dry_run else 'delete'} {row['path']}")
    if dry_run:
        emit({"deleted": [], "would_delete": [r["path"] for r in doomed], "kept": keep})
        return
    if not yes:
        click.confirm(f"Delete {len(doomed)} checkpoint(s) from {location}?", abort=True,
                      err=True)  # fmt: skip
    ref = _job_ref(location)
    if ref is not None:
        result = _agent_checkpoints(ref, keep=keep)
        deleted = [r["path"] for r in result if r.get("deleted")]
    elif location.startswith("s3://"):
        from runctl.cli.s3 import open_storage
        from runctl.storage.s3 import parse_uri

        bucket = parse_uri(location).bucket
        prefix = f"s3://{bucket}/"
        keys = [r["path"].removeprefix(prefix) for r in doomed]
        keys += [k.rsplit(".", 1)[0] + ".json" for k in keys]  # sidecars, if any
        storage = open_storage()
        with storage.errors(location):
            removed, _missing = storage.delete_keys(bucket, keys)
        deleted = [prefix + k for k in removed if not k.endswith(".json")]
    else:
        _, old = to_keep_and_delete(list_checkpoints(Path(location)), keep)
        deleted = []
        for ck in old:
            ck.path.unlink(missing_ok=True)
            sidecar_of(ck.path).unlink(missing_ok=True)
            deleted.append(str(ck.path))
    emit({"deleted": deleted, "kept": keep}, f"deleted {len(deleted)} checkpoint(s)")


@checkpoint.command(name="resume")
@click.argument("job_ref")
@click.option(
    "--from",
    "from_",
    metavar="PATH",
    help="Checkpoint on the host to resume from (default: the latest).",
)
@click.option(
    "--resume-arg/--no-resume-arg",
    default=False,
    help="Also pass `--resume PATH` to the script (for scripts that take it).",
)
@click.option("-f", "--follow", is_flag=True, help="Stream the new job's log.")
@json_option
def checkpoint_resume(job_ref: str, from_: str | None, resume_arg: bool, follow: bool) -> None:
    """Run JOB again on the same target, resuming from its latest checkpoint."""
    from runctl.core.jobs import resubmit

    rt = runtime()
    old = rt.store.get_job(job_ref)
    resume_from = from_
    if resume_from is None and resume_arg:
        rows = _agent_checkpoints(old.job_id)
        if not rows:
            raise NotFoundError(f"job {old.job_id} has no checkpoints to resume from")
        resume_from = rows[-1]["path"]
    result = resubmit(rt, old, resume_from=resume_from, resume_arg=resume_arg, progress=progress)
    job = result.job
    progress(
        f"started {job.job_id} (resuming {old.job_id}"
        f"{' from ' + resume_from if resume_from else ' from its latest checkpoint'})"
    )
    if follow and not is_json():
        from runctl.cli.jobs import _finish, _follow_to_end

        _finish(_follow_to_end(job, cancel_on_interrupt=False))
        return
    from runctl.cli.jobs import job_json

    emit(job_json(job, resumes=old.job_id), job.job_id)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def _when(mtime: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime))
