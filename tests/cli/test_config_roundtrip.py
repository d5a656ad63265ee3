"""`runctl config set` edits the file `runctl init` wrote without losing a comment or a line,
and `runctl config show` gives every key a value, including the defaults worked out at run time.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

from tests.conftest import CLI


def test_config_set_keeps_every_comment_of_the_init_file(cli: CLI, tmp_path: Path) -> None:
    assert cli("init", cwd=tmp_path).returncode == 0
    path = tmp_path / ".runctl.toml"
    original = path.read_text().splitlines()
    settings = [("jobs.grace_s", "7"), ("ssh.sync_method", "tar"),
                ("jobs.secrets", "HF_TOKEN,WANDB_API_KEY"), ("jobs.grace_s", "8")]  # fmt: skip
    for key, value in settings:
        done = cli("config", "set", key, value, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    edited = path.read_text().splitlines()
    # Every line init wrote is still there, in order; only the three set keys were added.
    added = [line for line in edited if line not in original]
    assert added == ["grace_s = 8.0", 'secrets = ["HF_TOKEN", "WANDB_API_KEY"]',
                     'sync_method = "tar"']  # fmt: skip
    assert [line for line in edited if line in original] == original
    # Each value sits right under its own commented default.
    assert edited[edited.index("grace_s = 8.0") - 1].startswith("# grace_s = ")
    assert edited[edited.index('sync_method = "tar"') - 1].startswith("# sync_method = ")
    data = {k: v for k, v in tomllib.loads(path.read_text()).items() if v}  # bar empty sections
    assert data == {"jobs": {"grace_s": 8.0, "secrets": ["HF_TOKEN", "WANDB_API_KEY"]},
                    "ssh": {"sync_method": "tar"}}  # fmt: skip
    shown = json.loads(cli("config", "show", "--json", cwd=tmp_path).stdout)
    assert shown["values"]["jobs.grace_s"] == 8.0
    assert shown["sources"]["ssh.sync_method"] == str(path)


def test_config_set_keeps_a_hand_written_file(cli: CLI, tmp_path: Path) -> None:
    path = tmp_path / ".runctl.toml"
    text = (
        "# my settings\n\n[jobs]\ngrace_s = 3.0  # short, my jobs checkpoint fast\n\n"
        '[defaults]\n# where I train\non = "ssh:gpu1"\n'
    )
    path.write_text(text)
    assert cli("config", "set", "jobs.grace_s", "5", cwd=tmp_path).returncode == 0
    assert cli("config", "set", "local.python", "/usr/bin/python3", cwd=tmp_path).returncode == 0
    assert path.read_text() == (
        text.replace("grace_s = 3.0  #", "grace_s = 5.0  #")
        + '\n[local]\npython = "/usr/bin/python3"\n'
    )
    # A value config would refuse leaves the file as it was.
    bad = cli("config", "set", "--", "jobs.grace_s", "-1", cwd=tmp_path)
    assert bad.returncode == 3
    assert "grace_s = 5.0  #" in path.read_text()


def test_config_show_prints_every_default(cli: CLI, project: Path, runctl_home: Path) -> None:
    shown = json.loads(cli("config", "show", "--json", cwd=project / "pkg").stdout)["values"]
    assert shown["defaults.project"] == "proj"  # the project root's directory name
    assert shown["local.checkpoint_dir"] == str(runctl_home / "local" / "checkpoints")
    assert shown["local.python"] == sys.executable
    table = cli("config", "show", cwd=project).stdout
    row = next(line for line in table.splitlines() if line.startswith("defaults.project"))
    assert row.split()[1:] == ["proj", "default"]
