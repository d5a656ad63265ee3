"""``runctl checkpoint``: list, inspect, prune and resume from checkpoints.

A LOCATION is a local directory, ``job:JOB_ID`` for the checkpoint directory of a job on
whatever host it ran, or an ``s3://bucket/prefix``. A checkpoint is a file or a directory as
the frameworks write them (see runctl.storage.checkpoints); cleanup removes whole ones.
"""

from __future__ import annotations

import tempfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import click

from runctl.cli.output import emit, is_json, json_option, progress, runtime, table
from runctl.cli.seed_compat import HiddenArgument
from runctl.errors import NotFoundError, RunctlError, UsageError

if TYPE_CHECKING:
    from runctl.models import Job
    from runctl.storage.checkpoints import KeyCheckpoint


def _job_ref(location: str) -> str | None:
    return location[4:] if location.startswith("job:") else None


def _rows(location: str) -> list[dict[str, Any]]:
    """Checkpoints at LOCATION, oldest first, as dicts (Checkpoint.to_dict, plus ``keys``
    on S3: every object of the checkpoint)."""
    from runctl.storage.checkpoints import list_checkpoints

    ref = _job_ref(location)
    if ref is not None:
        return _agent_checkpoints(ref)
    if location.startswith("s3://"):
        bucket, found = _s3_checkpoints(location)
        return [_s3_row(bucket, k) for k in found]
    directory = Path(location)
    if not directory.is_dir():
        raise NotFoundError(f"no such directory: {location}", hint="give a checkpoint directory")
    return [c.to_dict() for c in list_checkpoints(directory)]


def _s3_checkpoints(location: str) -> tuple[str, list[KeyCheckpoint]]:
    from runctl.cli.s3 import open_storage
    from runctl.storage.checkpoints import rows_from_keys
    from runctl.storage.s3 import parse_uri

    uri = parse_uri(location)
    storage = open_storage()
    prefix = uri.prefix if not uri.prefix or uri.prefix.endswith("/") else uri.prefix + "/"
    with storage.errors(location):
        objects = [(o.key, o.size, o.last_modified)
                   for o in storage.iter_objects(uri.bucket, prefix)]  # fmt: skip
    return uri.bucket, rows_from_keys(prefix, objects)


def _s3_row(bucket: str, item: KeyCheckpoint) -> dict[str, Any]:
    row: dict[str, Any] = item.row.to_dict()
    row["path"] = f"s3://{bucket}/{row['path']}" + ("/" if item.row.kind != "file" else "")
    row["resume_path"] = f"s3://{bucket}/{row['resume_path']}"
    row["keys"] = list(item.keys)
    return row


def _has_checkpoints(job_ref: str) -> bool:
    """Whether the job's checkpoint dir holds any (True when the host cannot tell)."""
    try:
        return bool(_agent_checkpoints(job_ref))
    except RunctlError:
        return True


def _agent_checkpoints(
    ref: str, keep: int | None = None, dry_run: bool = False, named: tuple[str, ...] = (),
    only: list[str] | None = None,
) -> list[Any]:  # fmt: skip
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
        for name in named:
            args += ["--named", name]
        for name in only or ():
            args += ["--only", name]
    rows: list[Any] = agent.call_json(target.instance, transport, args)
    return rows


_HELP = """List, inspect, prune and resume from checkpoints.

A checkpoint is a file (.pt .pth .ckpt .safetensors .bin) or a directory as the frameworks
write them: Lightning (epoch=E-step=S.ckpt, last.ckpt), HF Trainer (checkpoint-<step>/),
Accelerate (checkpoint_<n>/), torch DCP (a directory with .metadata), DeepSpeed
(global_step<N>/ + latest), Orbax (<step>/). Newest last, by step, else epoch, else time.
An incomplete one (still being written, truncated) is never resumed from, and cleanup never
deletes one newer than the newest complete checkpoint.

A job gets RUNCTL_CHECKPOINT_DIR (write checkpoints there), RUNCTL_RESUME_FROM (the newest
complete checkpoint as its framework's resume API takes it, an absolute path, empty when
there is none), RUNCTL_RESUME_STEP (its step, when known) and, for DeepSpeed,
RUNCTL_RESUME_TAG (the global_step<N> chosen; `latest` may name one skipped as incomplete).
After `r = os.environ.get("RUNCTL_RESUME_FROM") or None`, the one line a script needs is:

\b
  Lightning   trainer.fit(model, ckpt_path=r)
  HF Trainer  trainer.train(resume_from_checkpoint=r)
  Accelerate  if r: accelerator.load_state(r)
  torch DCP   if r: dcp.load(state_dict, checkpoint_id=r)
  DeepSpeed   if r: engine.load_checkpoint(r, tag=os.environ.get("RUNCTL_RESUME_TAG"))
  torch file  if r: state = torch.load(r)

\b
Examples:
  runctl checkpoint list checkpoints/
  runctl checkpoint list job:train-3f9a2c
  runctl checkpoint resume train-3f9a2c -f
"""


@click.group(help=_HELP)
def checkpoint() -> None:
    pass


@checkpoint.command(name="list")
@click.argument("location")
@json_option
def checkpoint_list(location: str) -> None:
    """List checkpoints at LOCATION (a directory, job:JOB_ID or s3://…), newest last.

    \b
    Examples:
      runctl checkpoint list checkpoints/
      runctl checkpoint list job:train-3f9a2c
      runctl checkpoint list s3://my-bucket/ckpts/
    """
    rows = _rows(location)

    def text() -> None:
        if not rows:
            click.echo(f"no checkpoints in {location}")
            return
        table(["checkpoint", "kind", "step", "epoch", "size", "modified", "complete"],
              [(r.get("name") or Path(r["path"]).name, r.get("kind"), r.get("step"),
                _epoch(r.get("epoch")), _size(r["bytes"]), _when(r["mtime"]),
                "yes" if r.get("complete", True) else f"no: {r.get('problem')}")
               for r in rows])  # fmt: skip

    emit(rows, text)


def _epoch(value: Any) -> Any:
    return f"{value:g}" if isinstance(value, float) else value


@checkpoint.command(name="info")
@click.argument("path")
@json_option
def checkpoint_info(path: str) -> None:
    """Show step/epoch/loss of a checkpoint: a file or directory, s3://…, or
    job:JOB_ID[:NAME] (its newest complete checkpoint, or NAME: a checkpoint or a file in
    one, relative to the job's checkpoint dir).

    Read from a sidecar JSON when there is one, else from trainer_state.json, DCP's
    .metadata, or with torch (weights_only) when installed.

    \b
    Examples:
      runctl checkpoint info checkpoints/epoch=2-step=300.ckpt
      runctl checkpoint info job:train-3f9a2c:checkpoint-500
    """
    from runctl.storage.checkpoints import inspect_checkpoint

    ref = _job_ref(path)
    if path.startswith("s3://"):
        info = _s3_info(path)
    elif ref is None:
        local = Path(path)
        if not local.exists():
            raise NotFoundError(f"no such checkpoint: {path}",
                                hint="give a checkpoint file or directory")  # fmt: skip
        try:
            info = inspect_checkpoint(local)
        except FileNotFoundError as exc:
            raise NotFoundError(str(exc), hint=f"see `runctl checkpoint list {path}`") from None
    else:
        info = _job_info(ref)

    def text() -> None:
        for key, value in info.items():
            if value is not None:
                click.echo(f"{key:>14}: {value}")

    emit(info, text)


def _job_info(ref: str) -> dict[str, Any]:
    """info for job:JOB_ID[:NAME]: directory checkpoints from the agent's row (nothing is
    downloaded), files from their sidecar or a temporary copy (keeping its name)."""
    from runctl.storage.checkpoints import inspect_checkpoint

    job_ref, _, name = ref.partition(":")
    rows = _agent_checkpoints(job_ref)
    name = name.strip("/")
    inner = ""
    if name:
        match = [r for r in rows if r.get("name") == name or Path(r["path"]).name == name]
        if not match:  # a file inside a checkpoint directory, or any file in the dir
            match = [{"path": name, "name": name, "kind": "file", "bytes": None}]
            inner = name
        rows = match
    else:  # the one a re-run resumes from
        from runctl.storage.checkpoints import FRAMEWORK_KINDS

        complete = [r for r in rows if r.get("complete", True)]
        rows = [r for r in complete if r.get("kind") in FRAMEWORK_KINDS] or complete or rows
    if not rows:
        raise NotFoundError(f"no checkpoint in job {job_ref}",
                            hint=f"see `runctl checkpoint list job:{job_ref}`")  # fmt: skip
    row = rows[-1]
    if row.get("kind", "file") != "file":
        keys = ("path", "name", "kind", "step", "epoch", "bytes", "complete", "problem",
                "resume_path", "tag")  # fmt: skip
        info = {k: row.get(k) for k in keys if row.get(k) is not None}
        info.update(row.get("meta") or {})
        info["source"] = "sidecar" if row.get("meta") else "host"
        return info
    if row.get("meta"):
        meta = row["meta"]
        return {"path": row["path"], "bytes": row["bytes"], "step": row.get("step"),
                "epoch": row.get("epoch"), "source": "sidecar", **meta}  # fmt: skip
    from runctl.core.jobs import fetch

    rt = runtime()
    job = rt.store.get_job(job_ref)
    rel = inner or str(row.get("name") or PurePosixPath(row["path"]).name)
    size = f" ({_size(row['bytes'])})" if row.get("bytes") else ""
    progress(f"downloading {rel}{size} to inspect it")
    with tempfile.TemporaryDirectory() as tmp:
        local = fetch(rt, job, rel, Path(tmp) / PurePosixPath(rel).name, root="checkpoints")
        info = inspect_checkpoint(local)
    info["path"] = row["path"] if not inner else f"{job.checkpoint_dir}/{rel}"
    for key in ("step", "epoch"):
        if info.get(key) is None and row.get(key) is not None:
            info[key] = row[key]
    return info


def _s3_info(uri_text: str) -> dict[str, Any]:
    """Inspect an S3 checkpoint: an object (its sidecar JSON, else the object itself) or a
    directory checkpoint (its trainer_state.json or DCP .metadata; nothing else is read)."""
    from runctl.cli.s3 import open_storage
    from runctl.storage.checkpoints import inspect_checkpoint
    from runctl.storage.s3 import TransferOptions, parse_uri

    uri = parse_uri(uri_text)
    storage = open_storage()
    head = storage.head(uri) if uri.key and not uri.key.endswith("/") else None
    opts = TransferOptions(verify=False, resume=False, compress=False, skip_unchanged=False)
    if head is None:
        return _s3_dir_info(uri_text)
    sidecar = parse_uri(uri_text.rsplit(".", 1)[0] + ".json")
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
    if info.get("source") == "sidecar":
        info.pop("complete", None)  # the object itself was not looked at
        info.pop("problem", None)
    return info


def _s3_dir_info(uri_text: str) -> dict[str, Any]:
    from runctl.cli.s3 import open_storage
    from runctl.storage.checkpoints import inspect_checkpoint, pick_resume, rows_from_keys
    from runctl.storage.s3 import TransferOptions, parse_uri

    uri = parse_uri(uri_text.rstrip("/"))
    storage = open_storage()
    parent = uri.key.rsplit("/", 1)[0] + "/" if "/" in uri.key else ""
    with storage.errors(uri_text):
        objects = [(o.key, o.size, o.last_modified)
                   for o in storage.iter_objects(uri.bucket, uri.key + "/")]  # fmt: skip
    found = rows_from_keys(parent, objects)
    if not found:
        raise NotFoundError(f"no such object or checkpoint: {uri_text}",
                            hint="see `runctl checkpoint list`")  # fmt: skip
    chosen, _skipped = pick_resume([k.row for k in found], changing=lambda _rows: set())
    item = next((k for k in found if k.row is chosen), found[-1])
    if item.row.kind == "file":
        return _s3_info(f"s3://{uri.bucket}/{item.keys[0]}")
    row = item.row
    base = str(row.path)
    wanted = [k for k in item.keys if k.rsplit("/", 1)[-1] in ("trainer_state.json", ".metadata")]
    opts = TransferOptions(verify=False, resume=False, compress=False, skip_unchanged=False)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / row.path.name
        local.mkdir()
        for key in wanted:  # the markers only: a checkpoint may be gigabytes
            dest = local / key[len(base) + 1 :]
            dest.parent.mkdir(parents=True, exist_ok=True)
            storage.download(parse_uri(f"s3://{uri.bucket}/{key}"), dest, opts, recursive=False)
        info = inspect_checkpoint(local) if wanted else {}
    info.update(path=f"s3://{uri.bucket}/{base}/", kind=row.kind, bytes=row.bytes,
                complete=row.complete, objects=len(item.keys))  # fmt: skip
    info.pop("resume_path", None)
    info.pop("files", None)
    for key in ("step", "epoch"):
        if info.get(key) is None:
            info[key] = getattr(row, key)
    if row.problem:
        info["problem"] = row.problem
    else:
        info.pop("problem", None)
    return info


@checkpoint.command(name="cleanup")
@click.argument("location")
@click.option(
    "--keep-last-n",
    type=click.IntRange(min=0),
    default=None,
    help="How many newest complete checkpoints to keep (default: checkpoint.keep_last_n).",
)
@click.option(
    "--include",
    "named",
    multiple=True,
    metavar="NAME",
    help="Also consider this last*/best*/final* checkpoint (never by default).",
)
@click.option("--dry-run", is_flag=True, help="Show what would be deleted.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
def checkpoint_cleanup(
    location: str, keep_last_n: int | None, named: tuple[str, ...], dry_run: bool, yes: bool
) -> None:
    """Delete all but the newest N complete checkpoints at LOCATION, whole (directories and
    sidecar JSON included), oldest first.

    Never deleted: the newest complete checkpoint, last*/best*/final* (unless --include
    names them), and anything newer than the newest complete one or still being written.
    --dry-run prints exactly what --yes deletes.

    \b
    Examples:
      runctl checkpoint cleanup checkpoints/ --keep-last-n 3 --dry-run
      runctl checkpoint cleanup job:train-3f9a2c --keep-last-n 2 -y
    """
    keep = keep_last_n if keep_last_n is not None else int(runtime().config.get(
        "checkpoint.keep_last_n"))  # fmt: skip
    ref = _job_ref(location)
    if ref is not None:
        rows = _agent_checkpoints(ref, keep=keep, dry_run=True, named=named)
        doomed = [r for r in rows if r.get("deleted")]
    elif location.startswith("s3://"):
        from runctl.storage.checkpoints import plan_cleanup

        bucket, found = _s3_checkpoints(location)
        plan = plan_cleanup([k.row for k in found], keep, named, realpath=lambda p: p)
        rows = [_s3_row(bucket, k) for k in found]
        doomed = [r for r, k in zip(rows, found, strict=True) if k.row in plan]
    else:
        from runctl.storage.checkpoints import list_checkpoints, plan_cleanup, still_changing

        local = list_checkpoints(Path(location))
        plan = plan_cleanup(local, keep, named)
        writing = still_changing(plan)
        rows = [c.to_dict() for c in local]
        doomed = [
            r for r, c in zip(rows, local, strict=True) if c in plan and c.path not in writing
        ]
    if not doomed:
        emit({"deleted": [], "would_delete": [], "kept": len(rows)},
             f"nothing to delete ({len(rows)} checkpoints)")  # fmt: skip
        return
    for row in doomed:
        verb = "would delete" if dry_run else "delete"
        progress(f"{verb} {row['path']} ({_size(row['bytes'])})")
    if dry_run:
        emit({"deleted": [], "would_delete": [r["path"] for r in doomed],
              "kept": len(rows) - len(doomed)})  # fmt: skip
        return
    if not yes:
        click.confirm(f"Delete {len(doomed)} checkpoint(s) from {location}?", abort=True,
                      err=True)  # fmt: skip
    if ref is not None:
        names = [str(r["name"]) for r in doomed]
        result = _agent_checkpoints(ref, keep=keep, named=named, only=names)
        deleted = [r["path"] for r in result if r.get("deleted")]
    elif location.startswith("s3://"):
        from runctl.cli.s3 import open_storage
        from runctl.storage.s3 import parse_uri

        bucket = parse_uri(location).bucket
        keys = [k for r in doomed for k in r["keys"]]
        storage = open_storage()
        with storage.errors(location):
            removed, failed = storage.delete_keys(bucket, keys)
        gone = set(removed)
        deleted = [r["path"] for r in doomed if gone.issuperset(r["keys"])]
        if failed:
            raise RunctlError(f"{len(failed)} deletions failed: {failed[0]}",
                              hint="check delete permissions (s3:DeleteObject)")  # fmt: skip
    else:
        from runctl.storage.checkpoints import delete_checkpoint

        by_path = {str(c.path): c for c in local}
        deleted = []
        for row in doomed:
            delete_checkpoint(by_path[row["path"]])
            deleted.append(row["path"])
    emit({"deleted": deleted, "kept": len(rows) - len(deleted)},
         f"deleted {len(deleted)} checkpoint(s)")  # fmt: skip


@checkpoint.command(name="resume")
@click.argument("job_ref")
@click.argument("seed_args", nargs=-1, type=click.UNPROCESSED, cls=HiddenArgument)
@click.option(
    "--from",
    "from_",
    metavar="PATH",
    help="Checkpoint on the host to resume from (default: the latest).",
)
@click.option(
    "--resume-arg/--no-resume-arg",
    default=None,
    help="Also pass `--resume PATH` to the script (for scripts that take it).",
)
@click.option("-f", "--follow", is_flag=True, help="Stream the new job's log.")
@json_option
def checkpoint_resume(job_ref: str, from_: str | None, resume_arg: bool | None, follow: bool,
                      seed_args: tuple[str, ...] = ()) -> None:  # fmt: skip
    """Run JOB again on the same target, resuming from its latest checkpoint.

    \b
    Examples:
      runctl checkpoint resume train-3f9a2c
      runctl checkpoint resume train-3f9a2c --from checkpoint-500 -f
    """
    from runctl.core.jobs import resubmit
    from runctl.storage.checkpoints import FRAMEWORK_KINDS

    rt = runtime()
    if seed_args or not _is_job(job_ref):
        # The seed's form: `checkpoint resume CHECKPOINT SCRIPT [-- ARGS]` (a path, a script).
        from runctl.cli.seed_compat import resume_script

        resume_script(job_ref, seed_args, resume_arg is not False, follow)
        return
    resume_arg = bool(resume_arg)
    old = rt.store.get_job(job_ref)
    resume_from = _absolute_on_host(old, from_) if from_ else None
    if resume_from is None and resume_arg:
        # The host's absolute path, as the framework takes it (a HF checkpoint-N/ directory,
        # the DeepSpeed dir holding `latest`): the job runs in its code dir, not the home.
        rows = [r for r in _agent_checkpoints(old.job_id) if r.get("complete", True)]
        if not rows:
            raise NotFoundError(f"job {old.job_id} has no complete checkpoint to resume from")
        framework = [r for r in rows if r.get("kind") in FRAMEWORK_KINDS]
        newest = (framework or rows)[-1]
        resume_from = str(newest.get("resume_path") or newest["path"])
    how = f" from {resume_from}" if resume_from else " from its latest checkpoint"
    if not resume_from and not _has_checkpoints(old.job_id):
        how = ": it has no checkpoint, so it starts from scratch"
    result = resubmit(rt, old, resume_from=resume_from, resume_arg=resume_arg, progress=progress)
    job = result.job
    progress(f"started {job.job_id} (resuming {old.job_id}{how})")
    if follow and not is_json():
        from runctl.cli.jobs import _finish, _follow_to_end

        _finish(_follow_to_end(job, cancel_on_interrupt=False))
        return
    from runctl.cli.jobs import job_json

    emit(job_json(job, resumes=old.job_id), job.job_id)


_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".pkl")


def _is_job(ref: str) -> bool:
    """A job id/name this store knows (else `checkpoint resume` may be given a path)."""
    try:
        runtime().store.get_job(ref)
    except (NotFoundError, UsageError):
        # Neither a job nor path-like: the job lookup below says it is unknown.
        return not (Path(ref).exists() or "/" in ref or ref.endswith(_CHECKPOINT_SUFFIXES))
    return True


def _absolute_on_host(job: Job, given: str) -> str:
    """--from as an absolute path on the job's host: a checkpoint's name as `checkpoint list
    job:` shows it (relative to the checkpoint dir), else a path relative to the login home
    (the job itself runs in its code dir, where a relative path would not resolve)."""
    import json

    from runctl.core import agent
    from runctl.core.targets import instance_of_job
    from runctl.transport.local import LocalTransport

    if given.startswith("/"):
        return given
    for row in _agent_checkpoints(job.job_id):
        if row.get("name") == given.strip("/"):
            # A DeepSpeed tag dir itself: the agent turns it into its save dir plus
            # RUNCTL_RESUME_TAG (the save dir alone would load what `latest` names).
            return str(row["path"] if row.get("tag") else row.get("resume_path") or row["path"])
    target = instance_of_job(runtime(), job.provider, job.instance_id)
    transport = target.provider.connect(target.instance)
    if isinstance(transport, LocalTransport):  # this machine: relative to where you are
        return str(Path(given).resolve())
    done = agent.call(target.instance, transport, ["resolve", "--root", "~", "--path", given])
    answer = json.loads(done.stdout or b"{}")
    if done.returncode != 0 or "path" not in answer:
        raise NotFoundError(f"no checkpoint {given} on the job's host",
                            hint=f"see `runctl checkpoint list job:{job.job_id}`")  # fmt: skip
    return str(answer["path"])


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
