"""Output helpers: JSON on stdout with --json, aligned tables otherwise, progress on stderr."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from runctl.runtime import Runtime

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Ctx:
    config_path: str | None
    json: bool
    _runtime: Runtime | None = field(default=None, repr=False)

    def runtime(self) -> Runtime:
        if self._runtime is None:
            from runctl import config

            cfg = config.load(Path(self.config_path) if self.config_path else None)
            self._runtime = Runtime(config=cfg, home=config.home(), json=self.json)
        return self._runtime

    def reload(self) -> None:
        """Forget the loaded config and state (a long-running loop sees edits each round)."""
        if self._runtime is not None and self._runtime._store is not None:
            self._runtime._store.db.close()
        self._runtime = None


def json_option(fn: F) -> F:
    """Add ``--json`` to a command (the root's --json works too)."""

    def set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.find_object(Ctx).json = True  # type: ignore[union-attr]
        return value

    return click.option(
        "--json", "json_", is_flag=True, expose_value=False, callback=set_json,
        is_eager=True, help="Print JSON on stdout.",
    )(fn)  # fmt: skip


def get_ctx() -> Ctx:
    ctx = click.get_current_context().find_object(Ctx)
    assert ctx is not None
    return ctx


def runtime() -> Runtime:
    return get_ctx().runtime()


def is_json() -> bool:
    return get_ctx().json


def progress(message: str) -> None:
    """Progress and warnings: always stderr, so stdout stays parseable."""
    if _status is not None:  # above the live status line, which stays at the bottom
        _status.console.print(message, markup=False, highlight=False, soft_wrap=True)
        return
    click.echo(message, err=True)


class Waiting:
    """``with waiting("what"):`` shows a spinner, WHAT and the elapsed time on stderr while the
    block runs (create, wait until running, terminate, big syncs, downloads), and removes it
    afterwards. Only on a terminal: nothing at all when stderr is not a TTY or under --json.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.bar: Any = None

    def __enter__(self) -> Waiting:
        global _status
        if _status is not None or is_json() or not sys.stderr.isatty():
            return self
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                            TimeElapsedColumn(), console=Console(stderr=True), transient=True,
                            redirect_stdout=False, redirect_stderr=False)  # fmt: skip
        self.bar.add_task(self.what, total=None)
        self.bar.start()
        _status = self.bar
        return self

    def __exit__(self, *exc: object) -> None:
        global _status
        if self.bar is not None:
            self.bar.stop()
            _status = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hide the status for a prompt, then show it again."""
        if self.bar is None:
            yield
            return
        self.bar.stop()
        try:
            yield
        finally:
            self.bar.start()


waiting = Waiting
_status: Any = None  # the Progress of the active `waiting` block, if any


#: set once a JSON document went to stdout, so a later error adds no second document
json_emitted = False


def emit(data: Any, text: Callable[[], None] | str | None = None) -> None:
    """Print ``data`` as JSON under --json, else run/print the human rendering."""
    global json_emitted
    if is_json():
        click.echo(json.dumps(data, indent=2, default=str))
        json_emitted = True
    elif callable(text):
        text()
    elif text is not None:
        click.echo(text)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    line = "  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))
    click.echo(line.rstrip())
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def age(iso: str | None) -> str:
    """Human duration since an ISO timestamp ("3m", "2h05m")."""
    if not iso:
        return ""
    then = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return duration((datetime.now(UTC) - then).total_seconds())


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def binary_stdout() -> Any:
    return sys.stdout.buffer
