"""Shell completion through the installed `runctl` console script, in a real bash and zsh.

The completion script is what `runctl completion SHELL` prints; the shell then calls `runctl`
back with _RUNCTL_COMPLETE set (which must get past the click-free fast path in entry.py).
Values come from the local state database: the jobs, hosts and machines recorded there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runctl.models import Instance
from runctl.state.store import Store
from tests.conftest import CLI, job_id_of

BIN = Path(sys.executable).parent  # where pip put the `runctl` console script


def _shell_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def _bash(words: list[str]) -> list[str]:
    """COMPREPLY for the command line ``words`` (the last word is the one being completed)."""
    quoted = " ".join(f"'{w}'" for w in words)
    script = (
        "source <(runctl completion bash)\n"
        f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n"
        "_runctl_completion runctl\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], env=_shell_env(),
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


def _zsh(words: list[str], tmp_path: Path) -> list[str]:
    """What zsh's completion function offers for ``words`` (its compadd/_describe calls)."""
    if shutil.which("zsh") is None:
        pytest.fail("zsh is not installed (scripts/install-test-deps.sh installs it)")
    quoted = " ".join(f"'{w}'" for w in words)
    script = (
        f"autoload -U compinit; compinit -u -d {tmp_path}/zcompdump\n"
        "source <(runctl completion zsh)\n"
        # the script registered itself for `runctl` ...
        '[[ $_comps[runctl] == _runctl_completion ]] || { print "not registered"; exit 3 }\n'
        # ... and what it offers goes to compadd/_describe, which we read instead of a menu.
        '_describe() { shift 2; print -l -- "${(@P)1}" }\n'
        'compadd() { print -l -- "${(@P)${@[-1]}}" }\n'
        f"words=({quoted}); CURRENT={len(words)}\n"
        "_runctl_completion\n"
    )
    done = subprocess.run(["zsh", "-f", "-c", script], env=_shell_env(), capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return [line.split(":", 1)[0] for line in done.stdout.splitlines() if line]


@pytest.fixture
def known(cli: CLI, project: Path, runctl_home: Path) -> dict[str, str]:
    """State with two real jobs, a registered host and a recorded cloud machine of each kind."""
    first = job_id_of(cli("run", "--wait", "--name", "alpha", "hello.py", cwd=project))
    second = job_id_of(cli("run", "--wait", "--name", "beta", "hello.py", cwd=project))
    added = cli("hosts", "add", "gpu1", "10.9.8.7", "--no-check")
    assert added.returncode == 0, added.stderr
    store = Store.open(runctl_home / "state.db")
    store.record_instance(Instance(provider="aws", instance_id="i-0abc123", name="runctl-a"))
    store.record_instance(Instance(provider="runpod", instance_id="pod7xyz", name="runctl-p"))
    store.db.close()
    return {"first": first, "second": second}


def test_bash_completes_job_ids_from_state(known: dict[str, str]) -> None:
    assert set(_bash(["runctl", "status", ""])) == {known["first"], known["second"]}
    assert _bash(["runctl", "logs", known["first"][:-2]]) == [known["first"]]
    assert set(_bash(["runctl", "cancel", ""])) == {known["first"], known["second"]}


def test_bash_completes_hosts_machines_targets_and_checkpoint_locations(
    known: dict[str, str],
) -> None:
    assert _bash(["runctl", "hosts", "rm", ""]) == ["gpu1"]
    assert _bash(["runctl", "aws", "terminate", ""]) == ["i-0abc123"]
    assert _bash(["runctl", "runpod", "status", "--pod-id", ""]) == ["pod7xyz"]
    targets = _bash(["runctl", "run", "--on", ""])
    assert {"local", "ssh:gpu1", "aws:i-0abc123", "runpod:pod7xyz"} <= set(targets)
    assert set(_bash(["runctl", "checkpoint", "list", "job:"])) == {
        f"job:{known['first']}",
        f"job:{known['second']}",
    }
    # Commands and options complete as click knows them.
    assert "completion" in _bash(["runctl", "comp"])
    assert "--follow" in _bash(["runctl", "logs", "--fol"])


def test_zsh_completes_job_ids_from_state(known: dict[str, str], tmp_path: Path) -> None:
    assert set(_zsh(["runctl", "wait", ""], tmp_path)) == {known["first"], known["second"]}
    assert _zsh(["runctl", "hosts", "rm", ""], tmp_path) == ["gpu1"]
    assert "checkpoint" in _zsh(["runctl", "check"], tmp_path)


def test_completion_never_creates_state(runctl_home: Path) -> None:
    # Pressing TAB before runctl was ever used offers commands and leaves no RUNCTL_HOME.
    assert _bash(["runctl", "status", ""]) == []
    assert "status" in _bash(["runctl", "stat"])
    assert not runctl_home.exists()


def test_fish_script_and_unknown_shell(cli: CLI) -> None:
    fish = cli("completion", "fish")
    assert fish.returncode == 0 and "complete" in fish.stdout and "runctl" in fish.stdout
    bad = cli("completion", "tcsh")
    assert bad.returncode == 2 and "tcsh" in bad.stderr
