"""The hostile-input corpus: odd ids, paths, URIs, numbers and TOML never crash runctl.

Every input ends in a result or a typed error (one `Error:` line, a documented exit code);
never a traceback, never exit 70. The CLI runs in-process (the same `main` the console script
calls) so hypothesis can try hundreds of inputs within seconds.
"""

from __future__ import annotations

import io
import math
import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import CLI, job_id_of

DOCUMENTED = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 124, 130}
FAST = settings(max_examples=30, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)
ids = st.one_of(
    _text,
    st.from_regex(r"[a-z]{1,8}-[0-9a-f]{6}", fullmatch=True),
    st.sampled_from(["", "-", "--", "..", "/", "../../etc/passwd", "a" * 5000, "\x00", "%s%n",
                     "$(id)", "`id`", "job:", "ssh:", "*", "?", "\n", "é", "💥"]),
)  # fmt: skip
paths = st.one_of(
    _text,
    st.lists(st.sampled_from(["..", ".", "a", "~", "", "x" * 300, "\x00", "*", " "]),
             max_size=6).map("/".join),
)  # fmt: skip
uris = st.one_of(
    st.builds(lambda s, p: f"{s}{p}", st.sampled_from(["s3://", "job:", "ssh:", "file://",
                                                       "s3:///", "job::", "http://"]), paths),
    _text,
)  # fmt: skip
numbers = st.one_of(
    st.sampled_from(["nan", "-nan", "inf", "-inf", "1e400", "-1", "0", "-0", "1e-400", "0x10",
                     "1_000", " 5 ", "", "9" * 5000, "١٢", "5s", "1e308"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers().map(str),
)  # fmt: skip


def run_in_process(*args: str) -> tuple[int, str, str]:
    """``runctl ARGS`` in this process: (exit code, stdout, stderr)."""
    from runctl.cli import main

    # Text streams over bytes, like the real ones: some commands write to .buffer.
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="replace")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="replace")
    code = 0
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = io.StringIO(""), out, err
    try:
        main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
    return code, _read(out), _read(err)


def _read(stream: io.TextIOWrapper) -> str:
    stream.flush()
    buffer = stream.buffer
    assert isinstance(buffer, io.BytesIO)
    return buffer.getvalue().decode("utf-8", errors="replace")


def check(*args: str) -> None:
    code, _, err = run_in_process(*args)
    assert "Traceback" not in err, (args, err)
    assert code in DOCUMENTED, (args, code, err)
    if code not in (0, 124):
        assert "Error:" in err or "Usage:" in err, (args, code, err)


@pytest.fixture(autouse=True)
def _in_a_scratch_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `config set` writes ./.runctl.toml: never into the repository.
    scratch = tmp_path / "cwd"
    scratch.mkdir()
    monkeypatch.chdir(scratch)


@pytest.fixture
def finished_job(cli: CLI, project: Path) -> str:
    job = job_id_of(cli("run", "hello.py", cwd=project))
    assert cli("wait", job).returncode == 0
    return job


@FAST
@given(job=ids)
def test_job_commands_take_any_job_id(job: str, finished_job: str) -> None:
    for command in ("status", "logs", "cancel", "events"):
        check(command, job)
    check("logs", "--tail", "3", job)


@FAST
@given(job=ids)
def test_recovery_and_host_commands_take_any_id(job: str, finished_job: str) -> None:
    check("recover", job)
    check("hosts", "rm", job)
    check("checkpoint", "resume", job)
    check("get", job, "log")


@FAST
@given(machine=ids)
def test_cloud_commands_take_any_machine_id(
    machine: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # No credentials anywhere: every call ends before the network (pytest-socket guards it).
    for name in [n for n in os.environ if n.startswith(("AWS_", "RUNPOD_", "LYCEUM_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    check("aws", "status", machine)
    check("aws", "monitor", machine)
    check("runpod", "status", "--pod-id", machine)
    check("lyceum", "status", "--vm-id", machine)


@FAST
@given(number=numbers)
def test_numeric_options_take_any_number_text(number: str, finished_job: str) -> None:
    check("wait", finished_job, "--timeout", number)
    check("logs", finished_job, "--tail", number)
    check("events", "-n", number)
    check("run", "--grace", number, "no-such-script.py")
    check("hosts", "add", "h", "127.0.0.1", "--no-check", "--port", number)
    check("config", "set", "jobs.grace_s", number)
    check("config", "set", "ssh.connect_timeout_s", number)
    check("checkpoint", "cleanup", ".", "--keep-last-n", number, "--dry-run")
    check("jobs", "prune", "--older-than", number, "--dry-run")
    check("jobs", "prune", "--keep", number, "--dry-run")


@FAST
@given(path=paths, dest=paths)
def test_paths_reach_get_and_checkpoints_safely(
    path: str, dest: str, finished_job: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = tmp_path / "dest"
    sandbox.mkdir(exist_ok=True)
    monkeypatch.chdir(sandbox)  # relative destinations land in the sandbox
    check("get", finished_job, path, "out/" + dest.lstrip("/").replace("..", "_"))
    check("checkpoint", "list", path)
    check("checkpoint", "info", path)
    # Not HOST:path (DNS lookups of random names), nor anything reaching outside the
    # sandbox (`transfer / out` would copy the whole disk).
    inside = ":" not in path and not path.startswith(("/", "~")) and ".." not in path
    if inside and path.strip("./ "):
        check("transfer", path, "out/t")
    check("transfer", f"job:{finished_job}:{path}", "out/t2")


@FAST
@given(uri=uris)
def test_locations_take_any_uri(uri: str, finished_job: str) -> None:
    if uri.startswith(("s3://", "s3:/", "http")):
        return  # would reach out to a real S3 endpoint
    check("checkpoint", "list", uri)
    check("get", finished_job, uri)


@FAST
@given(
    key=st.one_of(_text, st.sampled_from(["ssh.sync_method", "costs.budget_action",
                                          "jobs.grace_s", "a.b.c", "."])),
    value=_text,
)  # fmt: skip
def test_config_set_takes_any_key_and_value(key: str, value: str) -> None:
    check("config", "set", key, value)
    check("config", "show")


toml_values = st.recursive(
    st.one_of(st.booleans(), st.integers(), st.floats(), st.text(max_size=30)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)  # fmt: skip


@FAST
@given(
    data=st.dictionaries(
        st.sampled_from(["ssh", "jobs", "costs", "aws", "x", "defaults"]),
        st.dictionaries(st.sampled_from(["sync_method", "grace_s", "budget_action",
                                         "region", "on", "zz"]), toml_values, max_size=3),
        max_size=3,
    )
)  # fmt: skip
def test_config_files_with_any_values(data: dict[str, object], tmp_path: Path) -> None:
    import tomli_w

    cfg = tmp_path / "c.toml"
    try:
        cfg.write_text(tomli_w.dumps(data))
    except (TypeError, ValueError):
        return  # not representable in TOML
    check("-c", str(cfg), "config", "show")
    check("-c", str(cfg), "jobs")


@pytest.mark.parametrize(
    "text",
    [
        "[ssh]\nsync_method = " + "[" * 5000 + "]" * 5000 + "\n",
        "[jobs]\ngrace_s = " + "9" * 10000 + "\n",
        "[jobs]\ngrace_s = nan\n",
        "[jobs]\ngrace_s = inf\n",
        "[jobs]\ngrace_s = -1\n",
        '[ssh]\nsync_method = "ftp"\n',
        '[costs]\nbudget_action = "explode"\n',
        '[ssh]\nconfig_file = "' + "x" * 100_000 + '"\n',
        "\xff\xfe garbage",
        "[" * 100_000,
    ],
    ids=["deep", "huge-int", "nan", "inf", "negative", "sync-ftp", "budget-explode",
         "huge-string", "not-utf8", "deep-tables"],
)  # fmt: skip
def test_hostile_config_files_are_config_errors(text: str, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(text.encode("latin-1") if text.startswith("\xff") else text.encode())
    code, _, err = run_in_process("-c", str(cfg), "jobs")
    assert code == 3, err
    assert sum(ln.startswith("Error: ") for ln in err.splitlines()) == 1, err
    assert "Traceback" not in err


def test_runctl_config_pointing_at_a_directory(
    cli: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNCTL_CONFIG", str(tmp_path))
    done = cli("jobs")
    assert done.returncode == 3 and "RUNCTL_CONFIG" in done.stderr, done.stderr


def test_numbers_are_finite(tmp_path: Path) -> None:
    from runctl.config import load

    for bad in ("nan", "inf", "-1"):
        cfg = tmp_path / f"{bad}.toml"
        cfg.write_text(f"[jobs]\ngrace_s = {bad}\n")
        with pytest.raises(Exception, match="jobs.grace_s"):
            load(cfg)
    assert math.isfinite(load(None).get("jobs.grace_s"))
