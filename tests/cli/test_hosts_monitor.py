"""`hosts` registry commands and the local `monitor` command."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runctl.errors import UsageError
from runctl.providers.ssh import parse_destination, ssh_config_aliases
from tests.conftest import CLI


def test_parse_destination_accepts_only_plain_names() -> None:
    t = parse_destination("ubuntu@gpu-1.example.com:2222")
    assert (t.user, t.host, t.port) == ("ubuntu", "gpu-1.example.com", 2222)
    for bad in ("-oProxyCommand=x", "a;b", "host:99999", "a b", "$(id)"):
        with pytest.raises(UsageError):
            parse_destination(bad)


def test_ssh_config_aliases_follow_includes(tmp_path: Path) -> None:
    inc = tmp_path / "extra.conf"
    inc.write_text("Host included-box\n  HostName 10.0.0.9\n")
    cfg = tmp_path / "config"
    cfg.write_text(f"Host gpu1 gpu2\n  User u\nHost *.corp !x\nInclude {inc}\nHost gpu1\n")
    assert ssh_config_aliases(cfg) == ["gpu1", "gpu2", "included-box"]


def test_hosts_add_list_rm_without_connecting(cli: CLI, tmp_path: Path) -> None:
    cfg = tmp_path / "xdg-config" / "runctl" / "config.toml"
    cfg.parent.mkdir(parents=True)
    ssh_cfg = tmp_path / "ssh_config"
    ssh_cfg.write_text("Host alias-a\n  HostName 127.0.0.1\n")
    cfg.write_text(f'[ssh]\nconfig_file = "{ssh_cfg}"\n')
    added = cli("hosts", "add", "box", "me@10.1.2.3:2200", "--no-check", "--hourly-usd", "1.5",
                "--json")  # fmt: skip
    assert added.returncode == 0, added.stderr
    dup = cli("hosts", "add", "box", "me@10.1.2.3", "--no-check")
    assert dup.returncode == 2 and "--replace" in dup.stderr
    listed = json.loads(cli("hosts", "list", "--all", "--json").stdout)
    assert (listed["hosts"][0]["name"], listed["hosts"][0]["port"]) == ("box", 2200)
    assert listed["ssh_config_aliases"] == ["alias-a"]
    bad = cli("hosts", "add", "x;y", "--no-check")
    assert bad.returncode == 2
    assert cli("hosts", "rm", "box").returncode == 0
    assert cli("hosts", "rm", "box").returncode == 5


def test_monitor_log_and_checkpoints_together(cli: CLI, tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    ck = tmp_path / "ck"
    ck.mkdir()
    log.write_text("".join(f"line {i}\n" for i in range(30)))
    once = cli("monitor", "--log", str(log), "--checkpoint", str(ck), "-n", "3", "--json")
    assert json.loads(once.stdout) == {"log": "line 27\nline 28\nline 29\n", "checkpoints": []}
    proc = subprocess.Popen(
        [sys.executable, "-m", "runctl", "monitor", "--log", str(log), "--checkpoint", str(ck),
         "--follow", "-n", "1", "--interval", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(1.0)
    with log.open("a") as fh:
        fh.write("appended\n")
    (ck / "ckpt_epoch_0001.pt").write_bytes(b"x")
    time.sleep(1.0)
    proc.terminate()
    out, err = proc.communicate(timeout=10)
    assert out.splitlines() == ["line 29", "appended"]
    assert "new checkpoint ckpt_epoch_0001.pt" in err


def test_monitor_needs_something(cli: CLI) -> None:
    done = cli("monitor")
    assert done.returncode == 2 and "--log" in done.stderr


def test_uv_runs_py_scripts_when_present(cli: CLI, project: Path, tmp_path: Path) -> None:
    uv = Path(sys.executable).parent / "uv"
    if not uv.exists():
        pytest.skip("uv is not installed in this environment")
    (project / "inline.py").write_text(
        "# /// script\n# requires-python = '>=3.8'\n# dependencies = []\n# ///\n"
        "import sys\nprint('inline ok', sys.argv[1:])\n"
    )
    env = {"PATH": f"{uv.parent}:/usr/bin:/bin", "UV_OFFLINE": "1",
           "UV_CACHE_DIR": str(tmp_path / "uvcache")}  # fmt: skip
    done = cli("run", "--follow", "inline.py", "--", "x y", cwd=project, env=env)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "inline ok ['x y']" in done.stdout
    job = json.loads(cli("jobs", "--json").stdout)[0]
    state = json.loads(Path(job["job_dir"], "state.json").read_text())
    assert Path(state["command"][0]).name == "uv" and state["command"][1] == "run"
