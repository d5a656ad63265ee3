"""The dashboard driven by textual's Pilot: a populated state with stubbed hosts."""

from __future__ import annotations

from typing import Any

from runctl.models import InstanceState
from runctl.runtime import Runtime
from runctl.tui.app import DashboardApp
from runctl.tui.widgets import ConfirmScreen, HelpScreen
from tests.tui.conftest import DemoProvider, Stubs, run_async, wait_for

SIZE = (160, 48)


def rows(app: DashboardApp, table_id: str) -> list[list[str]]:
    from textual.widgets import DataTable

    table = app.query_one(f"#{table_id}", DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def column(app: DashboardApp, table_id: str, index: int = 0) -> list[str]:
    return [r[index] for r in rows(app, table_id)]


def text_of(app: DashboardApp, widget_id: str) -> str:
    from textual.widgets import Static

    return str(app.query_one(f"#{widget_id}", Static).render())


def notes(app: DashboardApp) -> list[str]:
    return [n.message for n in app._notifications]


def test_first_frame_comes_from_state_before_any_host_answers(populated: Runtime,
                                                              stubs: Stubs) -> None:  # fmt: skip
    stubs.gate.clear()  # every host call blocks until released

    async def body() -> None:
        app = DashboardApp(populated, interval_s=60)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            assert column(app, "jobs") == ["train-aaa111", "eval-bbb222", "prep-ccc333"]
            machines = {r[1]: r for r in rows(app, "machines")}
            assert set(machines) == {"local", "gpu-box", "i-gpu", "i-old"}
            assert machines["i-gpu"][2:5] == ["g5.xlarge", "running", "$1.250"]
            assert machines["gpu-box"][4] == "$0.400"  # hosts: only their price
            assert "$1.250/h" in text_of(app, "costs")
            assert "probing" in " ".join(column(app, "telemetry", 1))
            assert stubs.probes == [] and stubs.refreshes == 0
            stubs.gate.set()
            await wait_for(pilot, lambda: "42%" in column(app, "telemetry", 1))
            await wait_for(pilot, lambda: "epoch 3/3 of train-aaa111" in column(app, "jobs", 5))
            telemetry = {r[0]: r for r in rows(app, "telemetry")}
            assert telemetry["local"][3] == "4.0/16.0 GB"
            gpu = next(r for name, r in telemetry.items() if "A10G" in name)
            assert gpu[5:9] == ["87%", "9120/23028 MiB", "61°C", "n/a"]  # [N/A] power
            assert "unreachable: ssh:gpu-box" in text_of(app, "status")
            await pilot.press("q")
        assert app.return_code == 0

    run_async(body)


def test_filter_sort_navigate_help_and_quit_keys(populated: Runtime, stubs: Stubs) -> None:
    async def body() -> None:
        app = DashboardApp(populated, interval_s=60)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.refreshed_at is not None)
            # r refreshes now (the interval is a minute away)
            before = stubs.refreshes
            await pilot.press("r")
            await wait_for(pilot, lambda: stubs.refreshes == before + 1)
            # navigate: the cursor moves down the jobs pane, Tab moves to another pane
            assert app.selected("jobs") == "train-aaa111"
            await pilot.press("down")
            assert app.selected("jobs") == "eval-bbb222"
            await pilot.press("shift+tab")
            assert app.focused is not None and app.focused.id == "machines"
            await pilot.press("tab")
            # sort: created (newest first) -> state
            await pilot.press("s")
            assert app.query_one("#jobs-pane").border_title == "Jobs · sort: state"
            assert column(app, "jobs", 1) == ["failed", "running", "succeeded"]
            assert app.selected("jobs") == "eval-bbb222"  # the cursor follows its row
            # filter: / opens the box, typing narrows every pane, Esc clears it
            await pilot.press("slash")
            await pilot.press(*"eval")
            assert column(app, "jobs") == ["eval-bbb222"]
            assert column(app, "machines", 1) == []
            assert "filter: 'eval'" in text_of(app, "status")
            await pilot.press("escape")
            assert len(column(app, "jobs")) == 3
            # Enter keeps the filter and returns to the panes
            await pilot.press("slash", *"i-", "enter")
            assert sorted(column(app, "machines", 1)) == ["i-gpu", "i-old"]
            assert app.focused is not None and app.focused.id == "jobs"
            await pilot.press("slash", "escape")
            # help overlay; any key closes it
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            await pilot.press("space")
            assert not isinstance(app.screen, HelpScreen)
            await pilot.press("escape")  # Esc with no filter open quits
        assert app.return_code == 0

    run_async(body)


def test_ctrl_c_quits_and_interval_repeats_refresh(populated: Runtime, stubs: Stubs) -> None:
    async def body() -> None:
        app = DashboardApp(populated, interval_s=0.2)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: stubs.refreshes >= 3)
            await pilot.press("ctrl+c")
        assert app.return_code == 0

    run_async(body)


def test_stop_asks_first_and_unsupported_explains(populated: Runtime, stubs: Stubs) -> None:
    async def select_machine(app: DashboardApp, pilot: Any, name: str) -> None:
        from textual.widgets import DataTable

        table = app.query_one("#machines", DataTable)
        table.focus()
        table.move_cursor(row=column(app, "machines", 1).index(name))
        await pilot.pause()

    async def body() -> None:
        app = DashboardApp(populated, interval_s=60)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.refreshed_at is not None)
            await select_machine(app, pilot, "gpu-box")
            await pilot.press("x")
            assert not isinstance(app.screen, ConfirmScreen)
            assert any("cannot stop gpu-box" in n and "yours" in n for n in notes(app))
            await select_machine(app, pilot, "i-gpu")
            await pilot.press("t")  # terminate, then answer no
            assert isinstance(app.screen, ConfirmScreen)
            assert "Terminate demo instance i-gpu ($1.250/h)?" in app.screen.question
            await pilot.press("n")
            assert DemoProvider.live["i-gpu"] == InstanceState.RUNNING
            await pilot.press("x")  # stop, answer yes
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await wait_for(pilot, lambda: ["i-gpu", "stopped"] in
                           [r[1:4:2] for r in rows(app, "machines")])  # fmt: skip
            assert DemoProvider.live["i-gpu"] == InstanceState.STOPPED
            record = populated.store.get_instance_record("demo", "i-gpu")
            assert record is not None and record["state"] == "stopped"
            assert "$0.000/h" in text_of(app, "costs")
            await pilot.press("q")

    run_async(body)


def test_cancel_on_a_finished_job_does_not_ask(populated: Runtime, stubs: Stubs) -> None:
    async def body() -> None:
        app = DashboardApp(populated, interval_s=60)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.refreshed_at is not None)
            await pilot.press("down", "c")
            assert not isinstance(app.screen, ConfirmScreen)
            assert "eval-bbb222 already succeeded" in notes(app)
            await pilot.press("q")

    run_async(body)
