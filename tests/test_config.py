"""Config files: partial, merged, typed, with helpful errors; `config` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runctl import config
from runctl.errors import ConfigError
from tests.conftest import CLI


def test_partial_file_is_valid(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[jobs]\ngrace_s = 3\n")
    assert config.read_file(f) == {"jobs.grace_s": 3.0}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[jobs]\ngrace = 3\n", "did you mean 'jobs.grace_s'"),
        ("[ssh]\nconnect_timeout_s = 'x'\n", "must be int"),
        ("[jobs\n", "invalid TOML"),
        ("on = 'local'\n", "must be a [section]"),
        ("[ssh]\nconnect_timeout_s = true\n", "must be int"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        config.read_file(f)
    assert message in (exc.value.message + str(exc.value.hint))


def test_precedence_user_project_explicit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "xdg-config" / "runctl" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text("[jobs]\ngrace_s = 1\n[ssh]\nconnect_timeout_s = 4\n")
    proj = tmp_path / "p"
    (proj / "sub").mkdir(parents=True)
    (proj / ".runctl.toml").write_text("[jobs]\ngrace_s = 2\n")
    explicit = tmp_path / "x.toml"
    explicit.write_text("[ssh]\nconnect_timeout_s = 9\n")
    monkeypatch.chdir(proj / "sub")
    cfg = config.load()
    assert cfg.get("jobs.grace_s") == 2.0 and cfg.get("ssh.connect_timeout_s") == 4
    cfg = config.load(explicit)
    assert cfg.get("ssh.connect_timeout_s") == 9 and cfg.sources["jobs.grace_s"].endswith(
        ".runctl.toml"
    )
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "missing.toml")


def test_config_set_keeps_other_keys_and_types(cli: CLI, tmp_path: Path) -> None:
    (tmp_path / ".runctl.toml").write_text("[jobs]\ngrace_s = 4.0\n")
    done = cli("config", "set", "ssh.connect_timeout_s", "7", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert config.read_file(tmp_path / ".runctl.toml") == {
        "jobs.grace_s": 4.0, "ssh.connect_timeout_s": 7}  # fmt: skip
    bad = cli("config", "set", "ssh.connect_timeout_s", "soon", cwd=tmp_path)
    assert bad.returncode == 3 and "must be a number" in bad.stderr
    typo = cli("config", "set", "ssh.conect_timeout_s", "1", cwd=tmp_path)
    assert typo.returncode == 3 and "did you mean" in typo.stderr
    shown = json.loads(cli("config", "show", "--json", cwd=tmp_path).stdout)
    assert shown["values"]["ssh.connect_timeout_s"] == 7
    assert shown["sources"]["jobs.grace_s"].endswith(".runctl.toml")


def test_init_then_validate(cli: CLI, tmp_path: Path) -> None:
    assert cli("init", cwd=tmp_path).returncode == 0
    assert cli("init", cwd=tmp_path).returncode == 9  # refuses to overwrite
    done = cli("config", "validate", "--json", cwd=tmp_path)
    assert json.loads(done.stdout)["valid"] is True
    (tmp_path / ".runctl.toml").write_text("[jobs]\nbogus = 1\n")
    bad = cli("config", "validate", cwd=tmp_path)
    assert bad.returncode == 3 and "bogus" in bad.stderr


def test_secrets_stay_out_of_project_files_and_output(cli: CLI, tmp_path: Path) -> None:
    refused = cli("config", "set", "runpod.api_key", "rp_SECRET123", cwd=tmp_path)
    assert refused.returncode == 2 and not (tmp_path / ".runctl.toml").exists()
    done = cli("config", "set", "--global", "runpod.api_key", "rp_SECRET123", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "rp_SECRET123" not in done.stdout + done.stderr
    user_file = tmp_path / "xdg-config" / "runctl" / "config.toml"
    assert user_file.stat().st_mode & 0o777 == 0o600
    shown = cli("config", "show", "--json", cwd=tmp_path)
    assert "rp_SECRET123" not in shown.stdout
    assert json.loads(shown.stdout)["values"]["runpod.api_key"] == "***"
