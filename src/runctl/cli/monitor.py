"""``runctl monitor``: watch a local log file and a checkpoint directory at the same time."""

from __future__ import annotations

import time
from pathlib import Path

import click

from runctl.cli.output import emit, is_json, json_option, progress
from runctl.cli.params import seconds
from runctl.errors import UsageError


def _tail_lines(path: Path, count: int) -> tuple[str, int]:
    data = path.read_bytes()
    lines = data.decode(errors="replace").splitlines(keepends=True)
    return "".join(lines[-count:]), len(data)


@click.command()
@click.option(
    "--log",
    "log",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Log file to show (waits up to --wait-s for it to appear).",
)
@click.option(
    "--checkpoint",
    "checkpoint",
    type=click.Path(file_okay=False, path_type=Path),
    help="Checkpoint directory to watch.",
)
@click.option("-f", "--follow", is_flag=True, help="Keep watching both until Ctrl-C.")
@click.option("-n", "--lines", default=20, show_default=True, type=click.IntRange(min=0))
@click.option("--interval", default=1.0, show_default=True, type=seconds(0.05))
@click.option("--wait-s", default=60.0, show_default=True, type=seconds())
@json_option
def monitor(log: Path | None, checkpoint: Path | None, follow: bool, lines: int,
            interval: float, wait_s: float) -> None:  # fmt: skip
    """Show the end of a log and the newest checkpoints; --follow watches both together.

    \b
    Examples:
      runctl monitor --log train.log --checkpoint checkpoints/
      runctl monitor --log train.log -f
    """
    from runctl.storage.checkpoints import list_checkpoints

    if log is None and checkpoint is None:
        raise UsageError("nothing to monitor", hint="pass --log FILE and/or --checkpoint DIR")
    if log is not None:
        deadline = time.monotonic() + wait_s
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(min(interval, 0.5))
        if not log.exists():
            raise UsageError(f"log file {log} did not appear within {wait_s:g}s")
    text, offset = _tail_lines(log, lines) if log else ("", 0)
    ckpts = list_checkpoints(checkpoint) if checkpoint else []
    if is_json() and not follow:
        emit({"log": text, "checkpoints": [
            {"path": str(c.path), "step": c.step, "bytes": c.bytes, "mtime": c.mtime}
            for c in ckpts]})  # fmt: skip
        return
    click.echo(text, nl=False)
    for ck in ckpts[-5:]:
        progress(f"checkpoint {ck.path.name} ({ck.bytes:,} bytes)")
    if not follow:
        return
    seen = {c.path for c in ckpts}
    try:
        while True:
            time.sleep(interval)
            if log is not None and log.exists():
                size = log.stat().st_size
                if size < offset:  # truncated or rotated: start over
                    offset = 0
                if size > offset:
                    with open(log, "rb") as fh:
                        fh.seek(offset)
                        chunk = fh.read(size - offset)
                    offset += len(chunk)
                    click.echo(chunk.decode(errors="replace"), nl=False)
            if checkpoint is not None:
                for ck in list_checkpoints(checkpoint):
                    if ck.path not in seen:
                        seen.add(ck.path)
                        progress(f"new checkpoint {ck.path.name} ({ck.bytes:,} bytes)")
    except KeyboardInterrupt:
        return
