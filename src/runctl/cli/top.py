"""``runctl top``: the live dashboard; ``--json`` prints one snapshot instead."""

from __future__ import annotations

import click

from runctl.cli.output import emit, is_json, json_option, runtime
from runctl.cli.params import seconds


@click.command()
@click.option("-i", "--interval", "interval_s", type=seconds(0.5), default=5.0,
              show_default=True, help="Seconds between refreshes from hosts.")  # fmt: skip
@json_option
def top(interval_s: float) -> None:
    """Live dashboard of machines, jobs, utilisation and costs (q quits, ? for keys).

    With --json, gather one snapshot (jobs refreshed, every machine probed), print it and exit.

    \b
    Examples:
      runctl top
      runctl top --interval 5
      runctl top --json
    """
    rt = runtime()
    if is_json():
        from runctl.tui import data

        emit(data.collect(rt).to_json())
        return
    from runctl.tui.app import DashboardApp

    DashboardApp(rt, interval_s=interval_s).run()
