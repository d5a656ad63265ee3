"""`runctl doctor [--fix]`: what runctl depends on, checked (and repaired where safe)."""

from __future__ import annotations

import click

from runctl.cli.output import emit, json_option, progress, runtime


@click.command()
@click.option("--fix", is_flag=True,
              help="Repair what is safe: permissions, a corrupt state DB (rebuilt from hosts "
              "and providers), unindexed job dirs, stale ssh sockets.")  # fmt: skip
@json_option
def doctor(fix: bool) -> None:
    """Check RUNCTL_HOME, the state database, registered hosts (reachable, python, disk,
    clock), provider credentials and ssh sockets.

    \b
    Examples:
      runctl doctor
      runctl doctor --fix
    """
    from runctl.core.doctor import FAIL, WARN, run
    from runctl.errors import RunctlError

    checks = run(runtime(), fix=fix, progress=progress)

    def text() -> None:
        marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "info": "    "}
        for c in checks:
            line = f"{marks.get(c.status, c.status)}  {c.name}: {c.detail}"
            if c.fix:
                line += f"  [{'fixed: ' if c.fixed else 'fix: '}{c.fix}]"
            click.echo(line)

    emit({"fix": fix, "checks": [c.to_json() for c in checks]}, text)
    open_problems = [c for c in checks if c.status == FAIL and not c.fixed]
    if open_problems:
        fixable = any(c.fix for c in open_problems)
        raise RunctlError(
            f"{len(open_problems)} problem(s) found: " + "; ".join(c.name for c in open_problems),
            hint="run `runctl doctor --fix`" if fixable and not fix else "see the lines above",
        )
    if not fix and any(c.status == WARN and c.fix and not c.fixed for c in checks):
        progress("hint: `runctl doctor --fix` repairs the warnings marked [fix: ...]")
