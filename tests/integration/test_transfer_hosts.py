"""`transfer` with host and job ends over the real sshd (and S3 via SeaweedFS)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI, job_id_of

pytestmark = pytest.mark.integration


@pytest.fixture
def host(cli: CLI, ssh_config: Path) -> str:
    done = cli("hosts", "add", "testhost", "--remote-dir", f".runctl-tr-{time.time_ns()}")
    assert done.returncode == 0, done.stderr
    return "testhost"


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_local_to_host_and_back_verified(cli: CLI, host: str, tmp_path: Path) -> None:
    src = tmp_path / "data"
    (src / "sub").mkdir(parents=True)
    (src / "a.csv").write_text("1,2\n" * 1000)
    (src / "sub" / "b.bin").write_bytes(os.urandom(50_000))
    remote = f"tr-{time.time_ns()}/data"
    up = cli("transfer", str(src), f"{host}:{remote}", "--compress", "--json")
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["verified_files"] == 2
    back = tmp_path / "back"
    down = cli("transfer", f"{host}:{remote}", str(back), "--json")
    assert down.returncode == 0, down.stderr
    assert _tree(back) == _tree(src)
    # --no-verify really skips the check: no files verified
    again = cli("transfer", str(src), f"{host}:{remote}", "--no-verify", "--json")
    assert json.loads(again.stdout)["verified_files"] == 0


def test_job_outputs_and_traversal(cli: CLI, host: str, project: Path, tmp_path: Path) -> None:
    (project / "w.py").write_text(
        "import os, pathlib\n"
        "pathlib.Path(os.environ['RUNCTL_OUTPUT_DIR'], 'r.txt').write_text('result')\n"
    )
    job = job_id_of(cli("run", "--on", host, "--wait", "w.py", cwd=project))
    got = cli("transfer", f"job:{job}:outputs", str(tmp_path / "out"))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "out" / "r.txt").read_text() == "result"
    bad = cli("transfer", f"job:{job}:../../..", str(tmp_path / "x"))
    assert bad.returncode == 2 and "refusing" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_s3_to_host_is_staged_and_verified(
    cli: CLI, host: str, tmp_path: Path, seaweed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.stands.seaweed import new_bucket

    for key, value in seaweed.env().items():
        monkeypatch.setenv(key, value)
    bucket = new_bucket(seaweed, "tr")
    src = tmp_path / "ds"
    src.mkdir()
    (src / "x.txt").write_text("x" * 100)
    assert cli("transfer", str(src), f"s3://{bucket}/ds/").returncode == 0
    remote = f"tr-{time.time_ns()}/ds"
    done = cli("transfer", f"s3://{bucket}/ds/", f"{host}:{remote}", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verified_files"] == 1
    back = cli("transfer", f"{host}:{remote}", f"s3://{bucket}/copy/", "--json")
    assert back.returncode == 0, back.stderr
    listed = json.loads(cli("s3", "list", f"s3://{bucket}/copy/", "-r", "--json").stdout)
    assert [o["key"] for o in listed["objects"]] == ["copy/x.txt"]
