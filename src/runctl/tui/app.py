"""``runctl top``: a live dashboard of machines, jobs, host utilisation and costs.

The first frame is drawn from the state database alone (``data.load``). Anything that talks to
hosts or provider APIs runs in thread workers and reports back with ``call_from_thread``:
a job refresh (agent ``status`` + each job's last log line) and one telemetry probe per
machine, repeated every ``interval`` seconds without overlapping a probe still in flight.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, Input, Static
from textual.worker import Worker, WorkerState, get_current_worker

from runctl.errors import RunctlError
from runctl.runtime import Runtime
from runctl.tui import data
from runctl.tui.widgets import ConfirmScreen, HelpScreen, LogScreen

LAST_LINE_JOBS = 10  # finished jobs whose last log line is fetched (unfinished: all)

# pane -> [(label, key function, newest/largest first)]
_SORTS: dict[str, list[tuple[str, Callable[[Any], Any], bool]]] = {
    "jobs": [
        ("created", lambda j: j.created_at, True),
        ("state", lambda j: j.state, False),
        ("runtime", lambda j: j.runtime_s or 0.0, True),
        ("on", lambda j: j.on, False),
        ("job", lambda j: j.job_id, False),
    ],
    "machines": [
        ("provider", lambda m: (m.provider != "local", m.provider, m.name), False),
        ("name", lambda m: m.name, False),
        ("state", lambda m: m.state, False),
        ("$/h", lambda m: m.hourly_usd or 0.0, True),
        ("cost", lambda m: m.total_usd or 0.0, True),
    ],
}


def money(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"${value:,.{digits}f}"


def clock(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class DashboardApp(App[None]):
    """Machines, jobs, utilisation and costs, refreshed in the background."""

    TITLE = "runctl top"
    CSS_PATH = Path(__file__).with_name("dashboard.tcss")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("escape", "escape", "Quit", show=False),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("question_mark", "help", "Help"),
        Binding("slash", "filter", "Filter"),
        Binding("s", "sort", "Sort"),
        Binding("l", "open_log", "Log"),
        Binding("c", "cancel_job", "Cancel job"),
        Binding("x", "machine('stop')", "Stop"),
        Binding("t", "machine('terminate')", "Terminate"),
        Binding("r", "refresh", "Refresh"),
    ]

    def __init__(self, runtime: Runtime, *, interval_s: float = 5.0) -> None:
        super().__init__()
        self.runtime = runtime
        self.interval_s = interval_s
        self.snapshot = data.load(runtime)
        self.filter_text = ""
        self.sort_index = {"jobs": 0, "machines": 0}
        self.last_lines: dict[str, str] = {}
        self.lines_looked_up: set[str] = set()  # finished jobs (touched by the refresh worker)
        self.probing: set[str] = set()
        self.shown: dict[str, list[tuple[str, list[str]]]] = {}  # table id -> rows as shown
        self.providers_down: dict[str, tuple[str, float]] = {}  # provider -> (why, since)
        self.refreshed_at: str | None = None

    # ------------------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="top-row"):
            with Vertical(id="machines-pane", classes="pane"):
                yield DataTable(id="machines", cursor_type="row", zebra_stripes=True)
            with Vertical(id="costs-pane", classes="pane"):
                yield Static(id="costs")
        with Vertical(id="jobs-pane", classes="pane"):
            yield DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
        with Vertical(id="telemetry-pane", classes="pane"):
            yield DataTable(id="telemetry", cursor_type="row")
        yield Input(placeholder="filter: text in any column; Enter keeps, Esc clears", id="filter")
        yield Static("", id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#machines", DataTable).add_columns(
            "provider", "name", "type", "state", "$/h", "accumulated"
        )
        self.query_one("#jobs", DataTable).add_columns(
            "job", "state", "on", "runtime", "exit", "last log line"
        )
        self.query_one("#telemetry", DataTable).add_columns(
            "machine", "cpu", "load 1/5/15", "memory", "disk /", "gpu", "gpu mem", "temp", "power"
        )
        self.query_one("#filter", Input).display = False
        self.render_all()
        self.query_one("#jobs", DataTable).focus()
        self.action_refresh()
        self.set_interval(self.interval_s, self.action_refresh)

    # ---------------------------------------------------------------- rendering

    def render_all(self) -> None:
        self.render_machines()
        self.render_jobs()
        self.render_telemetry()
        self.render_costs()
        self.render_status()

    def _visible(self, cells: list[str]) -> bool:
        return not self.filter_text or self.filter_text in " ".join(cells).lower()

    def _fill(self, table_id: str, rows: list[tuple[str, list[str]]]) -> None:
        """Replace a table's rows, keeping the cursor on the same row key when it remains."""
        table = self.query_one(f"#{table_id}", DataTable)
        visible = [(key, cells) for key, cells in rows if self._visible(cells)]
        before = self.shown.get(table_id)
        self.shown[table_id] = visible
        if before is not None and [k for k, _ in before] == [k for k, _ in visible]:
            # Same rows in the same order: change only the cells that changed (a refresh at
            # rest changes none, so a table of thousands of rows is not rebuilt every time).
            columns = list(table.columns)
            for (key, cells), (_, old) in zip(visible, before, strict=True):
                for column, value, was in zip(columns, cells, old, strict=False):
                    if value != was:  # widths are measured over every row: only if it grew
                        table.update_cell(key, column, value, update_width=len(value) > len(was))
            return
        current = None
        if table.row_count:
            current = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        table.clear()
        for key, cells in visible:
            table.add_row(*cells, key=key)
        if current in {key for key, _ in visible}:
            table.move_cursor(row=table.get_row_index(str(current)))

    def _sorted(self, pane: str, items: list[Any]) -> list[Any]:
        _, key, reverse = _SORTS[pane][self.sort_index[pane]]
        return sorted(items, key=key, reverse=reverse)

    def render_machines(self) -> None:
        rows = []
        for m in self._sorted("machines", self.snapshot.machines):
            state = m.state + (" (unreachable)" if m.key in self.snapshot.errors else "")
            rows.append((m.key, [m.provider, m.name, m.type, state, money(m.hourly_usd, 3),
                                 money(m.total_usd)]))  # fmt: skip
        self._fill("machines", rows)
        label = _SORTS["machines"][self.sort_index["machines"]][0]
        self.query_one("#machines-pane").border_title = f"Machines · sort: {label}"

    def render_jobs(self) -> None:
        rows = []
        for j in self._sorted("jobs", self.snapshot.jobs):
            line = self.last_lines.get(j.job_id, j.last_line)
            exit_code = "" if j.exit_code is None else str(j.exit_code)
            rows.append((j.job_id, [j.job_id, j.state, j.on, clock(j.runtime_s), exit_code,
                                    line[:80]]))  # fmt: skip
        self._fill("jobs", rows)
        label = _SORTS["jobs"][self.sort_index["jobs"]][0]
        self.query_one("#jobs-pane").border_title = f"Jobs · sort: {label}"

    def render_telemetry(self) -> None:
        rows: list[tuple[str, list[str]]] = []
        for m in data.live_machines(self.snapshot):
            found = self.snapshot.telemetry.get(m.key)
            if found is None:
                why = self.snapshot.errors.get(m.key, "probing…")
                rows.append((m.key, [m.name, why]))
                continue
            rows.extend(_telemetry_rows(m, found))
        self._fill("telemetry", [(k, c + [""] * (9 - len(c))) for k, c in rows])
        self.query_one("#telemetry-pane").border_title = "Utilisation"

    def render_costs(self) -> None:
        c = self.snapshot.costs
        lines = [
            f"[b]burn[/b]   {money(c.hourly_burn_usd, 3)}/h",
            f"[b]today[/b]  {money(c.today_usd)}",
            f"[b]total[/b]  {money(c.total_usd)}",
        ]
        if c.daily_budget_usd is None:
            lines.append("[b]budget[/b] none (costs.daily_budget_usd)")
        else:
            share = 100.0 * c.today_usd / c.daily_budget_usd
            colour = "red" if c.is_over_budget else "green" if share < 80 else "yellow"
            lines.append(
                f"[b]budget[/b] [{colour}]{money(c.daily_budget_usd)}/day ({share:.0f}% used)"
                f"[/{colour}]"
            )
        running = sum(1 for m in self.snapshot.machines if m.is_instance and m.state == "running")
        lines.append(f"{running} instance(s) running")
        self.query_one("#costs", Static).update("\n".join(lines))
        self.query_one("#costs-pane").border_title = "Costs (UTC day)"

    def render_status(self) -> None:
        parts = [f"refreshed {self.refreshed_at}" if self.refreshed_at else "loading from hosts…"]
        if self.filter_text:
            parts.append(f"filter: {self.filter_text!r}")
        if self.snapshot.errors:
            parts.append("unreachable: " + ", ".join(sorted(self.snapshot.errors)))
        self.query_one("#status", Static).update(" · ".join(parts) + " · ? for help")

    def reload(self) -> None:
        """Re-read state (main thread, fast), keeping telemetry and errors gathered so far."""
        fresh = data.load(self.runtime)
        fresh.telemetry = self.snapshot.telemetry
        fresh.errors = self.snapshot.errors
        self.snapshot = fresh
        self.render_all()

    # ------------------------------------------------------------------ workers

    def action_refresh(self) -> None:
        self.run_worker(self._refresh_jobs, thread=True, group="refresh", exclusive=True,
                        exit_on_error=False)  # fmt: skip
        now = time.monotonic()
        for machine in data.live_machines(self.snapshot):
            if machine.key in self.probing:
                continue
            why, since = self.providers_down.get(machine.provider, ("", 0.0))
            if why and now - since < data.PROVIDER_RETRY_S:
                self.snapshot.errors[machine.key] = why  # the same for all its machines
                continue
            if why:  # time to retry: this machine asks, the others wait for its answer
                self.providers_down[machine.provider] = (why, now)
            self.probing.add(machine.key)
            self.run_worker(partial(self._probe, machine), thread=True, group="telemetry",
                            exit_on_error=False)  # fmt: skip

    def _refresh_jobs(self) -> None:
        with data.worker_runtime(self.runtime) as rt:
            lines: dict[str, str] = {}
            errors = data.refresh_jobs(rt, lines)  # running jobs' lines come with their state
            jobs = rt.store.list_jobs(limit=data.RECENT_JOBS)
            reachable = [j for j in jobs if data.job_on(j) not in errors]
            final = [j.job_id for j in reachable if j.state.is_final][:LAST_LINE_JOBS]
            wanted = [j.job_id for j in reachable if not j.state.is_final] + final
            # A finished job's line does not change: it is looked up once (the kept tail, else
            # its host), or was already seen with the state that ended it.
            wanted = [j for j in wanted if j not in lines and j not in self.lines_looked_up]
            self.lines_looked_up.update(final)
            self.lines_looked_up.update(lines)
            lines.update(data.last_lines(rt, wanted))
        self._post(self._refreshed, errors, lines)

    def _refreshed(self, errors: dict[str, str], lines: dict[str, str]) -> None:
        self.last_lines.update(lines)
        self.snapshot.errors.update(errors)
        self.refreshed_at = datetime.now(UTC).astimezone().strftime("%H:%M:%S")
        self.reload()

    def _probe(self, machine: data.MachineRow) -> None:
        down = False
        try:
            with data.worker_runtime(self.runtime) as rt:
                found: dict[str, Any] | str = data.probe(rt, machine.provider, machine.instance_id)
        except RunctlError as exc:
            found, down = exc.message, data.provider_down(exc)
        self._post(self._probed, machine.key, found, machine.provider, down)

    def _probed(
        self, key: str, found: dict[str, Any] | str, provider: str = "", down: bool = False
    ) -> None:
        self.probing.discard(key)
        if down and isinstance(found, str):
            self.providers_down[provider] = (found, time.monotonic())
        elif not isinstance(found, str):
            self.providers_down.pop(provider, None)
        if isinstance(found, str):
            self.snapshot.errors[key] = found
        else:
            self.snapshot.errors.pop(key, None)
            self.snapshot.telemetry[key] = found
        self.render_telemetry()
        self.render_machines()
        self.render_status()

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        """Hand a worker's result to the UI thread, unless the app is already closing."""
        if not get_current_worker().is_cancelled and self.is_running:
            self.call_from_thread(callback, *args)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.notify(f"{event.worker.name}: {event.worker.error}", severity="error")

    # ------------------------------------------------------------------ actions

    def focused_pane(self) -> str:
        focused = self.focused
        return focused.id if focused is not None and focused.id in _SORTS else "jobs"

    def selected(self, table_id: str) -> str | None:
        table = self.query_one(f"#{table_id}", DataTable)
        if not table.row_count:
            return None
        value = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return str(value) if value is not None else None

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_escape(self) -> None:
        if self.query_one("#filter", Input).display:
            self._close_filter(clear=True)
        else:
            self.exit()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip().lower()
        self.render_all()

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self._close_filter(clear=False)

    def _close_filter(self, *, clear: bool) -> None:
        box = self.query_one("#filter", Input)
        if clear:
            box.value = ""
            self.filter_text = ""
        box.display = False
        self.query_one("#jobs", DataTable).focus()
        self.render_all()

    def action_sort(self) -> None:
        pane = self.focused_pane()
        self.sort_index[pane] = (self.sort_index[pane] + 1) % len(_SORTS[pane])
        if pane == "machines":
            self.render_machines()
        else:
            self.render_jobs()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "jobs":
            self.action_open_log()

    def action_open_log(self) -> None:
        job_id = self.selected("jobs")
        if job_id is None:
            self.notify("no job selected", severity="warning")
            return
        self.push_screen(LogScreen(self.runtime, job_id))

    def action_cancel_job(self) -> None:
        job_id = self.selected("jobs")
        row = next((j for j in self.snapshot.jobs if j.job_id == job_id), None)
        if row is None:
            self.notify("no job selected", severity="warning")
            return
        if row.state in ("succeeded", "failed", "cancelled", "preempted"):
            self.notify(f"{row.job_id} already {row.state}", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.notify(f"cancelling {row.job_id}…")
                self.run_worker(partial(self._cancel, row.job_id), thread=True,
                                group="action", exit_on_error=False)  # fmt: skip

        self.push_screen(ConfirmScreen(f"Cancel job {row.job_id} on {row.on}?"), answered)

    def _cancel(self, job_id: str) -> None:
        try:
            with data.worker_runtime(self.runtime) as rt:
                message = f"{job_id} {data.cancel_job(rt, job_id)}"
        except RunctlError as exc:
            message = f"cancel failed: {exc.message}"
        self._post(self._acted, message)

    def action_machine(self, action: str) -> None:
        key = self.selected("machines")
        machine = next((m for m in self.snapshot.machines if m.key == key), None)
        if machine is None or self.focused_pane() != "machines":
            self.notify(f"select an instance in the Machines pane to {action} it",
                        severity="warning")  # fmt: skip
            return
        reason = data.machine_action_reason(self.runtime, machine, action)
        if reason is not None:
            self.notify(f"cannot {action} {machine.name}: {reason}", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.notify(f"{action} {machine.name}…")
                self.run_worker(partial(self._act, machine, action), thread=True,
                                group="action", exit_on_error=False)  # fmt: skip

        price = f" ({money(machine.hourly_usd, 3)}/h)" if machine.hourly_usd else ""
        question = f"{action.capitalize()} {machine.provider} instance {machine.name}{price}?"
        self.push_screen(ConfirmScreen(question), answered)

    def _act(self, machine: data.MachineRow, action: str) -> None:
        try:
            with data.worker_runtime(self.runtime) as rt:
                message = f"{machine.name}: {data.act_on_machine(rt, machine, action)}"
        except RunctlError as exc:
            message = f"{action} failed: {exc.message}"
        self._post(self._acted, message)

    def _acted(self, message: str) -> None:
        self.notify(message)
        self.reload()
        self.action_refresh()


def _telemetry_rows(
    machine: data.MachineRow, found: dict[str, Any]
) -> list[tuple[str, list[str]]]:
    """One row per machine, then one per GPU."""
    mem = found.get("memory") or {}
    load = "/".join("" if v is None else f"{v:.2f}" for v in found.get("load") or [])
    root = next((d for d in found.get("disks") or [] if d.get("mount") == "/"), None)
    cpu = found.get("cpu_percent")
    gpus = found.get("gpus") or []
    row = [
        machine.name,
        "" if cpu is None else f"{cpu:.0f}%",
        load,
        f"{mem.get('used_mb', 0) / 1024:.1f}/{mem.get('total_mb', 0) / 1024:.1f} GB",
        "" if root is None or root.get("percent") is None else f"{root['percent']:.0f}%",
        f"{len(gpus)} GPU" if gpus else str(found.get("gpu_status", "")),
    ]
    rows = [(machine.key, row)]
    for gpu in gpus:
        rows.append((f"{machine.key}/gpu{gpu.get('index')}", [
            f" └ gpu{gpu.get('index')} {gpu.get('name', '')}", "", "", "", "",
            _unit(gpu.get("util_percent"), "%"),
            f"{_unit(gpu.get('memory_used_mib'), '')}/"
            f"{_unit(gpu.get('memory_total_mib'), ' MiB')}",
            _unit(gpu.get("temperature_c"), "°C"),
            _unit(gpu.get("power_w"), " W"),
        ]))  # fmt: skip
    return rows


def _unit(value: float | None, unit: str) -> str:
    return "n/a" if value is None else f"{value:.0f}{unit}"
