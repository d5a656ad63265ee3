"""Screens the dashboard opens: a yes/no confirmation, the key help, and a job's live log."""

from __future__ import annotations

import codecs
from typing import BinaryIO, ClassVar, cast

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Label, Log, Static
from textual.worker import get_current_worker

from runctl.config import Config
from runctl.errors import RunctlError, TransportError
from runctl.runtime import Runtime
from runctl.tui import data

LOG_POLL_S = 0.5
LOG_MAX_LINES = 10_000
LOG_RECONNECT_S = 2.0

HELP_TEXT = """\
[b]runctl top[/b] — keys

  [b]Tab / Shift+Tab[/b]  move between panes      [b]↑ ↓ PgUp PgDn[/b]  move in a pane
  [b]/[/b]                filter rows (Enter keeps it, Esc clears it)
  [b]s[/b]                sort the focused pane by the next column
  [b]l / Enter[/b]        open the selected job's live log
  [b]c[/b]                cancel the selected job (asks first)
  [b]x[/b]                stop the selected instance (asks first)
  [b]t[/b]                terminate the selected instance (asks first)
  [b]r[/b]                refresh now
  [b]?[/b]                this help
  [b]q / Esc / Ctrl+C[/b] quit

Press any key to close."""


class ConfirmScreen(ModalScreen[bool]):
    """Ask a yes/no question; dismisses with True only on an explicit yes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.question, id="question")
            with Horizontal(id="buttons"):
                yield Button("Yes (y)", variant="error", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class HelpScreen(ModalScreen[None]):
    """The key overview; any key closes it."""

    def compose(self) -> ComposeResult:
        yield Static(HELP_TEXT, id="help")

    def on_key(self) -> None:
        self.dismiss(None)


class LogScreen(Screen[None]):
    """A job's log, streamed from its host by ``core.jobs.follow`` in a thread worker.

    The worker polls (``follow=False`` from the byte offset already shown) instead of holding
    one ``--follow`` stream, so closing the screen never waits on a silent remote tail.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Back"),
        Binding("q", "close", "Back"),
        Binding("l", "close", "Back", show=False),
    ]

    def __init__(self, runtime: Runtime, job_id: str) -> None:
        super().__init__()
        self.runtime = runtime
        self.job_id = job_id

    def compose(self) -> ComposeResult:
        yield Static(f"log of [b]{self.job_id}[/b] — Esc to go back", id="log-title")
        yield Log(max_lines=LOG_MAX_LINES, id="log")
        yield Static("", id="log-status")
        yield Footer()

    def on_mount(self) -> None:
        self._log = self.query_one(Log)
        self._status_line = self.query_one("#log-status", Static)
        self.run_worker(self._stream, thread=True, exit_on_error=False, group="log")

    def action_close(self) -> None:
        self.dismiss(None)

    def _stream(self) -> None:
        from runctl.core.jobs import follow

        worker = get_current_worker()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        sink = _Sink(lambda chunk: self._write(decoder.decode(chunk)))
        # Each poll is short, so a lost host is retried by the next poll rather than inside
        # follow() for ssh.reconnect_timeout_s (which would keep this thread past the screen).
        config = Config(values={**self.runtime.config.values,
                                "ssh.reconnect_timeout_s": LOG_RECONNECT_S})  # fmt: skip
        polling = Runtime(config=config, home=self.runtime.home)
        with data.worker_runtime(polling) as rt:
            job = rt.store.get_job(self.job_id)
            while not worker.is_cancelled:
                try:
                    job, _end = follow(
                        rt, job, cast(BinaryIO, sink), _quiet, offset=sink.count, follow=False
                    )
                except TransportError as exc:
                    self._status(f"[yellow]{exc.message}; retrying[/yellow]")
                    worker.cancelled_event.wait(LOG_RECONNECT_S)
                    continue
                except RunctlError as exc:
                    self._status(f"[red]{exc.message}[/red]")
                    return
                if job.state.is_final:
                    code = "" if job.exit_code is None else f" (exit {job.exit_code})"
                    self._status(f"job {job.state}{code}")
                    return
                self._status(f"job {job.state}; following")
                worker.cancelled_event.wait(LOG_POLL_S)

    def _write(self, text: str) -> None:
        if text and not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._log.write, text)

    def _status(self, text: str) -> None:
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._status_line.update, text)


class _Sink:
    """A binary file-like object that hands every chunk to a callback and counts bytes."""

    def __init__(self, callback: object) -> None:
        assert callable(callback)
        self.callback = callback
        self.count = 0

    def write(self, chunk: bytes) -> int:
        self.count += len(chunk)
        self.callback(chunk)
        return len(chunk)

    def flush(self) -> None:
        return None


def _quiet(_message: str) -> None:
    """Progress sink: reconnect notes from ``follow`` have nowhere to go on screen."""
