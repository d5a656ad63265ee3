"""``runctl s3 ...`` and ``runctl transfer`` as a user runs them, against SeaweedFS.

Every call is a real ``python -m runctl`` subprocess with RUNCTL_HOME / XDG_CONFIG_HOME in
tmp dirs (the root conftest) and fake AWS credentials pointing at the stand.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.stands.seaweed import SeaweedStand, new_bucket

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def s3env(seaweed: SeaweedStand, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    return seaweed.env()


@pytest.fixture
def run(cli: Any, s3env: dict[str, str]) -> Run:
    def invoke(
        *args: str, input: str | None = None, env: dict[str, str | None] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run runctl with the stand's environment; ``None`` in ``env`` drops a variable."""
        merged = {k: v for k, v in {**s3env, **(env or {})}.items() if v is not None}
        result: subprocess.CompletedProcess[str] = cli(*args, input=input, env=merged)
        assert "Traceback" not in result.stderr, result.stderr
        return result

    return invoke


@pytest.fixture
def bucket(seaweed: SeaweedStand) -> str:
    return new_bucket(seaweed, "cli")


@pytest.fixture
def s3client(seaweed: SeaweedStand) -> Any:
    """A plain boto3 client for setting up and checking, cheaper than another CLI call."""
    import boto3

    return boto3.client(
        "s3", endpoint_url=seaweed.endpoint_url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip


def _put(client: Any, bucket: str, prefix: str, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        client.put_object(Bucket=bucket, Key=prefix + rel, Body=data)


def _keys(client: Any, bucket: str, prefix: str) -> list[str]:
    answer = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in answer.get("Contents", [])]


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def _read_tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _ok(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


FILES = {"a.txt": b"alpha" * 50, "sub/b.pt": b"weights" * 100, "sub/skip.log": b"log"}


# ----------------------------------------------------------------------------- s3


@pytest.mark.integration
def test_upload_download_round_trip(run: Run, bucket: str, tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", FILES)
    up = _ok(run("s3", "upload", str(src), f"s3://{bucket}/d/", "-r", "--json"))
    assert (up["files"], up["bytes"], up["failed"]) == (3, sum(map(len, FILES.values())), [])
    assert {"seconds", "mb_per_s"} <= up.keys()
    down = _ok(run("s3", "download", f"s3://{bucket}/d", str(tmp_path / "out"), "-r", "--json"))
    assert down["files"] == 3 and _read_tree(tmp_path / "out") == FILES
    one = run("s3", "download", f"s3://{bucket}/d/a.txt", str(tmp_path / "one.txt"))
    assert one.returncode == 0 and "downloaded 1 file" in one.stdout
    assert (tmp_path / "one.txt").read_bytes() == FILES["a.txt"]
    into = run("s3", "download", f"s3://{bucket}/d/sub/b.pt", f"{tmp_path}/new/dir/")
    assert into.returncode == 0, into.stderr
    assert (tmp_path / "new" / "dir" / "b.pt").read_bytes() == FILES["sub/b.pt"]


@pytest.mark.integration
def test_directory_and_prefix_need_recursive(run: Run, bucket: str, tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", FILES)
    up = run("s3", "upload", str(src), f"s3://{bucket}/d/")
    assert up.returncode == 2
    assert "is a directory" in up.stderr and "hint: pass -r/--recursive" in up.stderr
    down = run("s3", "download", f"s3://{bucket}/d/", str(tmp_path / "o"))
    assert down.returncode == 2 and "--recursive" in down.stderr


@pytest.mark.integration
def test_include_exclude_concurrency_and_list(
    run: Run, s3client: Any, bucket: str, tmp_path: Path
) -> None:
    src = _tree(tmp_path / "src", FILES)
    filters = ["--include", "*.pt", "--include", "*.txt", "--exclude", "a.*", "--concurrency", "2"]
    up = run("s3", "upload", str(src), f"s3://{bucket}/f/", "-r", *filters, "--json")
    assert _ok(up)["files"] == 1
    _put(s3client, bucket, "f/", {"top.txt": FILES["a.txt"]})
    flat = _ok(run("s3", "list", f"s3://{bucket}/f/", "--json"))
    assert [o["key"] for o in flat["objects"]] == ["f/top.txt"]
    assert flat["prefixes"] == ["f/sub/"] and flat["total_count"] == 1
    text = run("s3", "list", f"s3://{bucket}/f/", "-r", "-H")
    assert "MODIFIED" in text.stdout and "700 B  f/sub/b.pt" in text.stdout
    assert "250 B  f/top.txt" in text.stdout
    assert "2 objects, 950 B" in text.stdout


@pytest.mark.integration
def test_sync_both_ways_with_delete_and_dry_run(
    run: Run, s3client: Any, bucket: str, tmp_path: Path
) -> None:
    src = _tree(tmp_path / "src", FILES)
    dst = f"s3://{bucket}/s/"
    assert _ok(run("s3", "sync", str(src), dst, "--json"))["files"] == 3
    (src / "sub" / "skip.log").unlink()
    plan = _ok(run("s3", "sync", str(src), dst, "--delete", "--dry-run", "--json"))
    assert (plan["dry_run"], plan["skipped"]) == (True, 2)  # unchanged files stay put
    assert plan["actions"] == [{"action": "delete", "key": f"s3://{bucket}/s/sub/skip.log"}]
    assert len(_keys(s3client, bucket, "s/")) == 3  # the dry run deleted nothing
    assert _ok(run("s3", "sync", str(src), dst, "--delete", "--json"))["deleted"] == 1

    out = _tree(tmp_path / "out", {"stray.txt": b"x"})
    text = run("s3", "sync", dst, str(out), "--delete", "--dry-run")
    assert f"would delete {out / 'stray.txt'}" in text.stdout and (out / "stray.txt").exists()
    done = _ok(run("s3", "sync", dst, str(out), "--delete", "--json"))
    assert (done["files"], done["deleted"]) == (2, 1) and not (out / "stray.txt").exists()
    assert _read_tree(out) == {k: v for k, v in FILES.items() if k != "sub/skip.log"}


@pytest.mark.integration
def test_cleanup_asks_before_deleting(run: Run, s3client: Any, bucket: str) -> None:
    names = [f"step_{i}.pt" for i in range(1, 6)] + ["best.pt", "train.log"]
    _put(s3client, bucket, "ck/", {n: b"x" for n in names})
    uri = f"s3://{bucket}/ck"
    plan = _ok(run("s3", "cleanup", uri, "--keep-last-n", "2", "--dry-run", "--json"))
    assert plan["deleted"] == [f"ck/step_{i}.pt" for i in (1, 2, 3)] and plan["dry_run"]
    assert plan["kept"] == ["ck/step_4.pt", "ck/step_5.pt"] and plan["total_checkpoints"] == 5
    refused = run("s3", "cleanup", uri, "--keep-last-n", "2", input="n\n")
    assert (
        refused.returncode == 1 and "Error: cleanup cancelled: nothing deleted" in refused.stderr
    )
    assert "Delete 3 checkpoints" in refused.stderr
    assert len(_keys(s3client, bucket, "ck/")) == 7
    agreed = run("s3", "cleanup", uri, "--keep-last-n", "2", input="y\n")
    assert agreed.returncode == 0 and "deleted 3 of 5 checkpoints" in agreed.stdout
    forced = _ok(run("s3", "cleanup", uri, "--keep-last-n", "1", "--yes", "--json"))
    assert forced["deleted"] == ["ck/step_4.pt"]
    assert _keys(s3client, bucket, "ck/") == ["ck/best.pt", "ck/step_5.pt", "ck/train.log"]


@pytest.mark.integration
def test_watch_streams_events(s3env: dict[str, str], s3client: Any, bucket: str) -> None:
    client = s3client
    client.put_object(Bucket=bucket, Key="w/old.txt", Body=b"1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runctl",
            "s3",
            "watch",
            f"s3://{bucket}/w/",
            "--interval",
            "0.1",
            "--max-polls",
            "12",
            "--json",
        ],
        env={**os.environ, **s3env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert "watching" in proc.stderr.readline()  # first poll done: now change something
        client.put_object(Bucket=bucket, Key="w/new.pt", Body=b"22")
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["event"] == "new" and lines[0]["key"] == "w/new.pt" and lines[0]["size"] == 2
    assert lines[-1] == {"summary": {"path": f"s3://{bucket}/w/", "polls": 12, "events": 1}}


@pytest.mark.integration
def test_review(run: Run, s3client: Any, bucket: str) -> None:
    files = {"step_1.pt": b"x" * 10, "final.pt": b"x" * 2000, "train.log": b"l", "a.csv": b"c"}
    _put(s3client, bucket, "rv/", files)
    data = _ok(run("s3", "review", f"s3://{bucket}/rv", "--top", "1", "--json"))
    assert data["total_objects"] == 4 and data["total_bytes"] == 2012
    assert data["kinds"]["model"] == {"count": 1, "bytes": 2000}
    assert data["latest_checkpoint"]["key"] == "rv/step_1.pt"
    assert [o["key"] for o in data["largest"]] == ["rv/final.pt"]
    text = run("s3", "review", f"s3://{bucket}/rv", "-d")
    assert (
        "checkpoint" in text.stdout and "largest:" in text.stdout and "rv/final.pt" in text.stdout
    )


# ----------------------------------------------------------------------------- transfer


@pytest.mark.integration
def test_transfer_compress_and_verify(
    run: Run, s3client: Any, bucket: str, tmp_path: Path
) -> None:
    files = {"data.csv": b"1,2,3\n" * 2000, "sub/w.pt": os.urandom(1000)}
    src = _tree(tmp_path / "src", files)
    up = _ok(run("transfer", str(src), f"s3://{bucket}/t/", "--compress", "--json"))
    assert (up["files"], up["verified"]) == (2, 2) and up["bytes"] < 13000
    assert _keys(s3client, bucket, "t/") == ["t/data.csv.gz", "t/sub/w.pt.gz"]
    down = _ok(run("transfer", f"s3://{bucket}/t/", str(tmp_path / "out"), "--compress", "--json"))
    assert (down["files"], down["verified"]) == (2, 2)
    assert _read_tree(tmp_path / "out") == files
    raw = _ok(run("transfer", f"s3://{bucket}/t/", str(tmp_path / "raw"), "--no-verify", "--json"))
    assert raw["verified"] == 0 and sorted(_read_tree(tmp_path / "raw")) == [
        "data.csv.gz",
        "sub/w.pt.gz",
    ]


@pytest.mark.integration
def test_transfer_resume_flag(run: Run, bucket: str, tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", FILES)
    dst = f"s3://{bucket}/r/"
    first = _ok(run("transfer", str(src), dst, "--parallel", "2", "--json"))
    assert (first["files"], first["verified"]) == (3, 3)
    resumed = _ok(run("transfer", str(src), dst, "--json"))
    assert (resumed["files"], resumed["skipped"]) == (0, 3)
    fresh = _ok(run("transfer", str(src), dst, "--no-resume", "--no-verify", "--json"))
    assert (fresh["files"], fresh["skipped"], fresh["verified"]) == (3, 0, 0)
    single = run("transfer", f"s3://{bucket}/r/a.txt", str(tmp_path / "a.txt"))
    assert single.returncode == 0 and "1 verified" in single.stdout


@pytest.mark.integration
def test_transfer_continues_an_interrupted_upload(
    run: Run,
    seaweed: SeaweedStand,
    s3env: dict[str, str],
    bucket: str,
    tmp_path: Path,
    runctl_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An upload cut off mid-way (in-process) is finished by the CLI with only what's missing.

    The endpoint comes from the config file here, not from AWS_ENDPOINT_URL_S3.
    """
    from runctl.storage.s3 import MIB, S3Settings, S3Storage, S3Uri, TransferOptions

    config = tmp_path / "xdg-config" / "runctl" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        f'[s3]\nendpoint_url = "{seaweed.endpoint_url}"\nmultipart_threshold_mb = 5\n'
    )
    for name, value in s3env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(11 * MIB))

    class CutOff:
        calls = 0

        def start(self, files: int, nbytes: int) -> None: ...
        def finish(self) -> None: ...

        def advance(self, nbytes: int) -> None:
            self.calls += 1
            if self.calls > 1:
                raise KeyboardInterrupt

    settings = S3Settings(
        endpoint_url=seaweed.endpoint_url, max_concurrency=1, multipart_threshold=5 * MIB
    )
    storage = S3Storage(settings, state_dir=runctl_home / "transfers", progress=CutOff())
    with pytest.raises(KeyboardInterrupt):
        storage.upload(src, S3Uri(bucket, "big.bin"), TransferOptions())

    env: dict[str, str | None] = {"AWS_ENDPOINT_URL_S3": None}
    done = _ok(
        run("transfer", str(src), f"s3://{bucket}/big.bin", "--no-verify", "--json", env=env)
    )
    assert (done["resumed_bytes"], done["bytes"]) == (5 * MIB, 6 * MIB)
    assert not list((runctl_home / "transfers").glob("*.json"))
    back = _ok(
        run("transfer", f"s3://{bucket}/big.bin", str(tmp_path / "back.bin"), "--json", env=env)
    )
    assert back["files"] == 1 and (tmp_path / "back.bin").read_bytes() == src.read_bytes()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("src", "dst", "message"),
    [
        ("gpu1:/data", "ssh:gpu2:/data", "copying directly between two hosts"),
        ("job:abc123:out", "gpu1:/data", "copying directly between two hosts"),
        ("gpu1:", "./here", "missing path in host location"),
        ("./a", "./b", "one local path and one s3:// location"),
        ("s3://bucket-x/a", "s3://bucket-x/b", "one local path and one s3:// location"),
    ],
)
def test_transfer_refuses_what_it_cannot_do(run: Run, src: str, dst: str, message: str) -> None:
    result = run("transfer", src, dst)
    assert result.returncode == 2 and message in result.stderr


# ----------------------------------------------------------------------------- errors


@pytest.mark.integration
def test_user_errors_are_one_clean_line(run: Run, bucket: str, tmp_path: Path) -> None:
    bad = run("s3", "list", "s3://Bad_Bucket/x")
    assert bad.returncode == 2 and "invalid bucket name 'Bad_Bucket'" in bad.stderr
    assert "hint:" in bad.stderr
    missing = run("s3", "list", "s3://no-such-bucket-zz/", "--json")
    assert missing.returncode == 5 and "'no-such-bucket-zz' does not exist" in missing.stderr
    assert json.loads(missing.stdout)["error"]["exit_code"] == 5
    denied = run("s3", "list", f"s3://{bucket}/", env={"AWS_SECRET_ACCESS_KEY": "wrong"})
    assert denied.returncode == 4 and "SignatureDoesNotMatch" in denied.stderr
    dead = run(
        "s3",
        "list",
        f"s3://{bucket}/",
        env={"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"},
    )
    assert dead.returncode == 7 and "cannot reach S3 at" in dead.stderr
    gone = run("s3", "download", f"s3://{bucket}/nothing", str(tmp_path / "x"))
    assert gone.returncode == 5 and "not found" in gone.stderr


@pytest.mark.integration
def test_failed_objects_fail_the_command(
    run: Run, s3client: Any, bucket: str, tmp_path: Path
) -> None:
    client = s3client
    client.put_object(Bucket=bucket, Key="v/good.txt", Body=b"fine")
    client.put_object(Bucket=bucket, Key="v/bad.txt", Body=b"content",
                      Metadata={"runctl-sha256": "0" * 64})  # fmt: skip
    result = run("transfer", f"s3://{bucket}/v/", str(tmp_path / "out"), "--json")
    assert result.returncode == 1
    assert "Error: 1 of 2 transfers failed" in result.stderr
    assert f"failed: s3://{bucket}/v/bad.txt: verification failed" in result.stderr
    summary = json.loads(result.stdout.split("\n}\n")[0] + "\n}")
    assert summary["files"] == 1 and len(summary["failed"]) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.txt"]


# ----------------------------------------------------------------------------- no server


def test_location_parsing() -> None:
    from runctl.cli.transfer import parse_location

    assert parse_location("s3://bkt/k").kind == "s3"
    assert parse_location("./dir:with:colons").kind == "local"
    assert parse_location("file:///tmp/x").path == "/tmp/x"
    host = parse_location("ssh:gpu1:/data")
    assert (host.kind, host.host, host.path) == ("host", "gpu1", "/data")
    job = parse_location("job:abc:/out/model.pt")
    assert (job.kind, job.host, job.path) == ("job", "abc", "/out/model.pt")


def test_rich_progress_draws_on_a_terminal() -> None:
    from rich.console import Console

    from runctl.cli.s3 import RichProgress, human_bytes

    sink = io.StringIO()
    bar = RichProgress(Console(file=sink, force_terminal=True, width=100))
    bar.start(3, 3000)
    bar.advance(1500)
    bar.finish()
    assert "3 files" in sink.getvalue()
    assert (human_bytes(10), human_bytes(1536), human_bytes(3 * 1024**3)) == (
        "10 B",
        "1.5 KiB",
        "3.0 GiB",
    )


def test_importing_s3_commands_loads_no_sdk() -> None:
    code = (
        "import sys, runctl.cli.s3, runctl.cli.transfer, runctl.storage.s3;"
        "bad = {'boto3', 'botocore', 'rich'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.integration
def test_checkpoint_list_and_cleanup_on_an_s3_prefix(
    run: Run, bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "ck"
    src.mkdir()
    for step in (3, 10, 20):
        (src / f"ckpt_step_{step}.pt").write_bytes(b"w" * step)
        (src / f"ckpt_step_{step}.json").write_text(json.dumps({"step": step}))
    (src / "notes.txt").write_text("not a checkpoint")
    _ok(run("s3", "upload", str(src), f"s3://{bucket}/run1/", "-r", "--json"))
    listed = _ok(run("checkpoint", "list", f"s3://{bucket}/run1/", "--json"))
    assert [r["path"].rsplit("/", 1)[-1] for r in listed] == [
        "ckpt_step_3.pt", "ckpt_step_10.pt", "ckpt_step_20.pt"]  # fmt: skip
    cleaned = _ok(run("checkpoint", "cleanup", f"s3://{bucket}/run1/", "--keep-last-n", "1",
                      "--yes", "--json"))  # fmt: skip
    assert [p.rsplit("/", 1)[-1] for p in cleaned["deleted"]] == [
        "ckpt_step_3.pt", "ckpt_step_10.pt"]  # fmt: skip
    keys = [o["key"] for o in _ok(run("s3", "list", f"s3://{bucket}/run1/", "-r",
                                      "--json"))["objects"]]  # fmt: skip
    assert sorted(keys) == ["run1/ckpt_step_20.json", "run1/ckpt_step_20.pt", "run1/notes.txt"]
    info = _ok(run("checkpoint", "info", f"s3://{bucket}/run1/ckpt_step_20.pt", "--json"))
    assert info["step"] == 20 and info["source"] == "sidecar" and info["bytes"] == 20
    missing = run("checkpoint", "info", f"s3://{bucket}/run1/nope.pt")
    assert missing.returncode == 5
