"""runctl.storage.s3: pure rules first, then real transfers against SeaweedFS.

moto stands in only where SeaweedFS cannot: it refuses to store keys such as ``a/../evil``,
which the path-traversal test needs.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from runctl.errors import AuthError, NotFoundError, ProviderError, TransportError, UsageError
from runctl.storage.s3 import (
    MIB,
    ObjectInfo,
    S3Settings,
    S3Storage,
    S3Uri,
    TransferOptions,
    classify,
    is_selected,
    map_error,
    order_checkpoints,
    parse_uri,
    review_objects,
    safe_destination,
)

# ----------------------------------------------------------------------------- pure rules


@pytest.mark.parametrize(
    ("text", "bucket", "key"),
    [
        ("s3://my-bucket/a/b.pt", "my-bucket", "a/b.pt"),
        ("s3://my.bucket.1", "my.bucket.1", ""),
        ("S3://abc/", "abc", ""),
        ("s3://abc/dir/", "abc", "dir/"),
    ],
)
def test_parse_uri_accepts(text: str, bucket: str, key: str) -> None:
    assert parse_uri(text) == S3Uri(bucket, key)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("bucket/key", "not an S3 location"),
        ("s3:/bucket/key", "not an S3 location"),
        ("s3:///key", "missing"),
        ("s3://ab/key", "3 to 63"),
        ("s3://" + "a" * 64, "3 to 63"),
        ("s3://My-Bucket/x", "use a-z"),
        ("s3://bucket_1/x", "use a-z"),
        ("s3://-bucket/x", "use a-z"),
        ("s3://a..b/x", "'.'"),
        ("s3://192.168.1.1/x", "IP address"),
        ("s3://xn--abc/x", "reserves"),
        ("s3://abc/" + "k" * 1025, "1024"),
    ],
)
def test_parse_uri_rejects_with_hint(text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_uri(text)
    assert fragment in info.value.message + (info.value.hint or "")
    assert info.value.hint


def test_uri_prefix_reads_key_as_directory() -> None:
    assert S3Uri("b", "").prefix == ""
    assert S3Uri("b", "run1").prefix == "run1/"
    assert S3Uri("b", "run1/").prefix == "run1/"


@pytest.mark.parametrize(
    "rel", ["a/../../evil", "../evil", "/abs/evil", "a//b", "./x", "a/./b", "", "a/\x00"]
)
def test_safe_destination_refuses_escaping_keys(tmp_path: Path, rel: str) -> None:
    assert safe_destination(tmp_path, rel) is None


def test_safe_destination_refuses_symlink_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "link").symlink_to(outside)
    assert safe_destination(dest, "link/x") is None
    assert safe_destination(dest, "sub/x.pt") == dest / "sub" / "x.pt"


def test_include_exclude_patterns() -> None:
    assert is_selected("a/b.pt", ["*.pt"], [])
    assert not is_selected("a/b.txt", ["*.pt"], [])
    assert not is_selected("logs/x.pt", [], ["logs/*"])
    assert is_selected("ckpt/step_1.pt", ["ckpt/*"], ["*.log"])
    assert not is_selected("deep/dir/run.log", [], ["*.log"])  # no "/": matches names too


def test_classify_and_checkpoint_order() -> None:
    assert classify("run/ckpt/step_100.pt") == "checkpoint"
    assert classify("run/model_epoch_3.safetensors") == "checkpoint"  # a step wins
    assert classify("run/best.pt") == "model"
    assert classify("run/model.onnx") == "model"
    assert classify("hf/pytorch_model.bin") == "model"
    assert classify("data/shard-0001.bin") == "other"
    assert classify("run/train.log") == "log"
    assert classify("run/logs/metrics.csv") == "log"
    assert classify("run/events.out.tfevents.123") == "log"
    assert classify("run/data.csv") == "other"
    objs = [
        ObjectInfo("r/step_10.pt", 1, 300.0),
        ObjectInfo("r/step_2.pt", 1, 400.0),  # newer file, lower step: still older
        ObjectInfo("r/latest.pt", 1, 100.0),  # no number: first
        ObjectInfo("r/step_10b.pt", 1, 200.0),
    ]
    assert [o.key for o in order_checkpoints(objs)] == [
        "r/latest.pt",
        "r/step_2.pt",
        "r/step_10b.pt",
        "r/step_10.pt",
    ]


def test_review_objects_counts_kinds() -> None:
    objs = [
        ObjectInfo("p/step_1.pt", 10, 1.0),
        ObjectInfo("p/step_2.pt", 30, 2.0),
        ObjectInfo("p/final.pt", 50, 3.0),
        ObjectInfo("p/train.log", 5, 4.0),
        ObjectInfo("p/notes.md", 1, 5.0),
    ]
    report = review_objects(objs, top_n=2)
    assert report["total_objects"] == 5 and report["total_bytes"] == 96
    assert report["kinds"]["checkpoint"] == {"count": 2, "bytes": 40}
    assert report["kinds"]["model"] == {"count": 1, "bytes": 50}
    assert report["kinds"]["log"]["count"] == 1 and report["kinds"]["other"]["count"] == 1
    assert report["latest_checkpoint"]["key"] == "p/step_2.pt"
    assert [o["key"] for o in report["largest"]] == ["p/final.pt", "p/step_2.pt"]


def test_part_size_stays_under_part_limit() -> None:
    settings = S3Settings(multipart_threshold=16 * MIB)
    assert settings.part_size(100 * MIB) == 16 * MIB
    assert settings.part_size(1024 * 1024 * MIB) > 1024 * 1024 * MIB // 10_000
    assert S3Settings(multipart_threshold=1 * MIB).part_size(10 * MIB) == 5 * MIB


def _client_error(code: str, status: int, op: str = "PutObject") -> Exception:
    from botocore.exceptions import ClientError

    body: Any = {
        "Error": {"Code": code, "Message": code},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(body, op)


def test_map_error_gives_clear_messages() -> None:
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    missing = map_error(_client_error("NoSuchBucket", 404), "s3://nope/x")
    assert isinstance(missing, NotFoundError) and "'nope' does not exist" in missing.message
    denied = map_error(_client_error("AccessDenied", 403), "s3://b/x")
    assert isinstance(denied, AuthError) and denied.hint and "credentials" in denied.hint
    assert isinstance(map_error(NoCredentialsError()), AuthError)
    down = map_error(EndpointConnectionError(endpoint_url="http://x"), "", "http://x")
    assert isinstance(down, TransportError) and "http://x" in down.message
    other = map_error(_client_error("InternalError", 500))
    assert isinstance(other, ProviderError) and other.status == 500
    assert map_error(ValueError("not botocore")) is None


# ----------------------------------------------------------------------------- SeaweedFS


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def _read_tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


FILES = {
    "a.txt": b"alpha",
    "sub/b.bin": os.urandom(3000),
    "sub/deep/c.pt": b"checkpoint" * 100,
    "logs/run.log": b"log line\n",
    "empty.txt": b"",
}


@pytest.mark.integration
def test_upload_and_download_tree_round_trip(
    storage: S3Storage, bucket: str, tmp_path: Path
) -> None:
    src = _tree(tmp_path / "src", FILES)
    up = storage.upload(src, S3Uri(bucket, "data/"), TransferOptions())
    assert (up.files, up.bytes, up.failed) == (5, sum(map(len, FILES.values())), [])
    assert up.seconds > 0 and up.mb_per_s >= 0
    keys = sorted(o.key for o in storage.iter_objects(bucket, ""))
    assert keys == sorted(f"data/{k}" for k in FILES)
    down = storage.download(S3Uri(bucket, "data"), tmp_path / "out", TransferOptions(), True)
    assert down.files == 5 and _read_tree(tmp_path / "out") == FILES
    # Downloaded files carry the object's time, so a sync sees them as current.
    obj = next(o for o in storage.iter_objects(bucket, "data/a.txt"))
    assert (tmp_path / "out" / "a.txt").stat().st_mtime == pytest.approx(obj.last_modified)


@pytest.mark.integration
def test_small_objects_go_direct_and_round_trip_odd_keys(
    storage: S3Storage, bucket: str, tmp_path: Path
) -> None:
    """Small objects skip botocore (signed by runctl) and still match what botocore sees."""
    odd = {"a b/c+d=e.txt": b"spaces and signs", "ü/naïve~1.bin": b"\x00\x01", "x!'()*.pt": b"x"}
    src = _tree(tmp_path / "src", odd)
    up = storage.upload(src, S3Uri(bucket, "odd/"), TransferOptions(verify=True))
    assert (up.files, up.failed, up.verified) == (3, [], 3)
    direct = storage._direct()
    # The first object of the bucket goes through botocore, which shows the way for the rest;
    # parallel workers that start before that first answer also take botocore.
    first_direct, fallbacks = direct.direct_count, direct.fallback_count
    assert first_direct + fallbacks == 3 and fallbacks >= 1
    got = storage.client.get_object(Bucket=bucket, Key="odd/a b/c+d=e.txt")
    assert got["Body"].read() == b"spaces and signs" and got["ContentType"] == "text/plain"
    down = storage.download(S3Uri(bucket, "odd"), tmp_path / "out", TransferOptions(verify=True),
                            True)  # fmt: skip
    assert (down.files, down.verified) == (3, 3) and _read_tree(tmp_path / "out") == odd
    assert (direct.direct_count, direct.fallback_count) == (first_direct + 3, fallbacks)


@pytest.mark.integration
def test_direct_path_falls_back_to_botocore_errors(
    seaweed: Any, bucket: str, tmp_path: Path, aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused signature is redone by botocore, whose error the user sees."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    wrong = S3Storage(S3Settings(endpoint_url=seaweed.endpoint_url))
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(AuthError, match="SignatureDoesNotMatch"):
        wrong.upload(tmp_path / "f.txt", S3Uri(bucket, "f.txt"), TransferOptions())
    assert wrong._direct().direct_count == 0


@pytest.mark.integration
def test_refused_direct_request_is_redone_by_botocore(
    storage: S3Storage, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / name).write_text(name)
    storage.upload(tmp_path / "a", S3Uri(bucket, "a"), TransferOptions())  # learns the layout
    direct = storage._direct()
    monkeypatch.setattr(direct, "_signing_key", lambda *_: b"wrong key")  # server says 403
    storage.upload(tmp_path / "b", S3Uri(bucket, "b"), TransferOptions())
    storage.upload(tmp_path / "c", S3Uri(bucket, "c"), TransferOptions())
    assert (direct.direct_count, direct.fallback_count) == (0, 3)  # refused once, then off
    assert direct._refused == {bucket}
    keys = sorted(o.key for o in storage.iter_objects(bucket, ""))
    assert keys == ["a", "b", "c"]


@pytest.mark.integration
def test_include_exclude_filter_uploads(storage: S3Storage, bucket: str, tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", FILES)
    opts = TransferOptions(include=("*.pt", "*.txt"), exclude=("empty.*",))
    storage.upload(src, S3Uri(bucket, "f/"), opts)
    assert sorted(o.key for o in storage.iter_objects(bucket, "f/")) == [
        "f/a.txt",
        "f/sub/deep/c.pt",
    ]


@pytest.mark.integration
def test_single_file_keys_and_destinations(
    storage: S3Storage, bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "model.pt"
    src.write_bytes(b"weights")
    storage.upload(src, S3Uri(bucket, "exact/name.pt"), TransferOptions())
    storage.upload(src, S3Uri(bucket, "dir/"), TransferOptions())
    keys = {o.key for o in storage.iter_objects(bucket, "")}
    assert keys == {"exact/name.pt", "dir/model.pt"}
    (tmp_path / "into").mkdir()
    storage.download(S3Uri(bucket, "dir/model.pt"), tmp_path / "into", TransferOptions())
    storage.download(S3Uri(bucket, "exact/name.pt"), tmp_path / "f.bin", TransferOptions())
    assert (tmp_path / "into" / "model.pt").read_bytes() == b"weights"
    assert (tmp_path / "f.bin").read_bytes() == b"weights"
    with pytest.raises(UsageError, match="prefix"):
        storage.download(S3Uri(bucket, "dir"), tmp_path / "x", TransferOptions(), False)
    with pytest.raises(NotFoundError):
        storage.download(S3Uri(bucket, "nothing-here"), tmp_path / "x", TransferOptions())


@pytest.mark.integration
def test_list_returns_all_pages(storage: S3Storage, bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "many"
    src.mkdir()
    for i in range(1005):
        (src / f"k{i:04d}.txt").write_bytes(b"x")
    (src / "sub").mkdir()
    (src / "sub" / "inner.txt").write_bytes(b"y")
    up = storage.upload(src, S3Uri(bucket, "many/"), TransferOptions())
    assert up.files == 1006
    objects, prefixes = storage.list_prefix(S3Uri(bucket, "many/"), recursive=True)
    assert len(objects) == 1006 and prefixes == []
    objects, prefixes = storage.list_prefix(S3Uri(bucket, "many/"))
    assert len(objects) == 1005 and prefixes == ["many/sub/"]


@pytest.mark.integration
def test_sync_up_skips_unchanged_and_deletes(
    storage: S3Storage, bucket: str, tmp_path: Path
) -> None:
    src = _tree(tmp_path / "src", FILES)
    dst = f"s3://{bucket}/sync/"
    first = storage.sync(str(src), dst, TransferOptions())
    assert (first.files, first.skipped) == (5, 0)
    again = storage.sync(str(src), dst, TransferOptions())
    assert (again.files, again.skipped) == (0, 5)
    # Same size, newer mtime, different bytes: must go up again (mtime, then MD5 decide).
    (src / "a.txt").write_bytes(b"ALPHA")
    future = time.time() + 5
    os.utime(src / "a.txt", (future, future))
    # Same size and bytes but touched: the single-part ETag proves it equal.
    os.utime(src / "sub" / "b.bin", (future, future))
    (src / "logs" / "run.log").unlink()
    plan = storage.sync(str(src), dst, TransferOptions(delete=True, dry_run=True))
    assert {(a["action"], a["key"].rsplit("/", 1)[-1]) for a in plan.actions} == {
        ("upload", "a.txt"),
        ("delete", "run.log"),
    }
    assert len(list(storage.iter_objects(bucket, "sync/"))) == 5  # dry run changed nothing
    done = storage.sync(str(src), dst, TransferOptions(delete=True))
    assert (done.files, done.deleted, done.skipped) == (1, 1, 3)
    assert sorted(o.key for o in storage.iter_objects(bucket, "sync/logs/")) == []


@pytest.mark.integration
def test_sync_down_skips_unchanged_and_deletes(
    storage: S3Storage, bucket: str, tmp_path: Path
) -> None:
    src = _tree(tmp_path / "src", FILES)
    storage.upload(src, S3Uri(bucket, "d/"), TransferOptions())
    out = tmp_path / "out"
    first = storage.sync(f"s3://{bucket}/d", str(out), TransferOptions())
    assert first.files == 5 and _read_tree(out) == FILES
    again = storage.sync(f"s3://{bucket}/d/", str(out), TransferOptions())
    assert (again.files, again.skipped) == (0, 5)
    (out / "stray.txt").write_bytes(b"not in s3")
    (out / "a.txt").write_bytes(b"local edit, longer")
    plan = storage.sync(f"s3://{bucket}/d/", str(out), TransferOptions(delete=True, dry_run=True))
    assert {a["action"] for a in plan.actions} == {"download", "delete"}
    assert (out / "stray.txt").exists()
    done = storage.sync(f"s3://{bucket}/d/", str(out), TransferOptions(delete=True))
    assert (done.files, done.deleted) == (1, 1)
    assert _read_tree(out) == FILES


class _Interrupt(Exception):
    pass


class _CountingProgress:
    """Counts bytes; raises after ``fail_after`` calls to simulate a dropped connection."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.fail_after = fail_after

    def start(self, files: int, nbytes: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise _Interrupt("connection lost")

    def finish(self) -> None:
        pass


def _big_file(path: Path, mib: int) -> Path:
    path.write_bytes(os.urandom(mib * MIB))
    return path


@pytest.mark.integration
def test_interrupted_multipart_upload_resumes(
    seaweed: Any, bucket: str, tmp_path: Path, aws_env: None
) -> None:
    src = _big_file(tmp_path / "big.bin", 26)  # 6 parts of 5 MiB
    settings = S3Settings(
        endpoint_url=seaweed.endpoint_url, max_concurrency=1, multipart_threshold=5 * MIB
    )
    state_dir = tmp_path / "transfers"
    flaky = S3Storage(settings, state_dir=state_dir, progress=_CountingProgress(fail_after=3))
    uri = S3Uri(bucket, "big.bin")
    with pytest.raises(_Interrupt):
        flaky.upload(src, uri, TransferOptions())
    [state_file] = state_dir.glob("*.json")
    state = json.loads(state_file.read_text())
    assert len(state["parts"]) == 3 and state["key"] == "big.bin"
    assert flaky.head(uri) is None  # not completed

    again = S3Storage(settings, state_dir=state_dir)
    summary = again.upload(src, uri, TransferOptions())
    assert summary.resumed_bytes == 15 * MIB
    assert summary.bytes == src.stat().st_size - 15 * MIB  # only the missing parts went up
    assert not list(state_dir.glob("*.json"))
    again.download(uri, tmp_path / "back.bin", TransferOptions())
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    assert again.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@pytest.mark.integration
def test_no_resume_restarts_and_aborts_the_old_upload(
    seaweed: Any, bucket: str, tmp_path: Path, aws_env: None
) -> None:
    src = _big_file(tmp_path / "big.bin", 11)
    settings = S3Settings(
        endpoint_url=seaweed.endpoint_url, max_concurrency=1, multipart_threshold=5 * MIB
    )
    state_dir = tmp_path / "transfers"
    flaky = S3Storage(settings, state_dir=state_dir, progress=_CountingProgress(fail_after=1))
    with pytest.raises(_Interrupt):
        flaky.upload(src, S3Uri(bucket, "big.bin"), TransferOptions())
    old = flaky.client.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert len(old) == 1
    fresh = S3Storage(settings, state_dir=state_dir)
    summary = fresh.upload(src, S3Uri(bucket, "big.bin"), TransferOptions(resume=False))
    assert (summary.bytes, summary.resumed_bytes) == (src.stat().st_size, 0)
    assert fresh.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@pytest.mark.integration
def test_changed_source_is_not_resumed(
    seaweed: Any, bucket: str, tmp_path: Path, aws_env: None
) -> None:
    src = _big_file(tmp_path / "big.bin", 11)
    settings = S3Settings(
        endpoint_url=seaweed.endpoint_url, max_concurrency=1, multipart_threshold=5 * MIB
    )
    state_dir = tmp_path / "transfers"
    flaky = S3Storage(settings, state_dir=state_dir, progress=_CountingProgress(fail_after=1))
    with pytest.raises(_Interrupt):
        flaky.upload(src, S3Uri(bucket, "big.bin"), TransferOptions())
    _big_file(src, 11)  # same size, new content and mtime
    again = S3Storage(settings, state_dir=state_dir)
    summary = again.upload(src, S3Uri(bucket, "big.bin"), TransferOptions())
    assert summary.resumed_bytes == 0
    again.download(S3Uri(bucket, "big.bin"), tmp_path / "back.bin", TransferOptions())
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()


@pytest.mark.integration
def test_verify_and_compress_round_trip(storage: S3Storage, bucket: str, tmp_path: Path) -> None:
    files = {"small.txt": b"hello " * 1000, "big.bin": os.urandom(6 * MIB) + b"\0" * MIB}
    src = _tree(tmp_path / "src", files)
    opts = TransferOptions(verify=True, compress=True)
    up = storage.upload(src, S3Uri(bucket, "z/"), opts)
    assert (up.files, up.verified) == (2, 2)
    head = storage.head(S3Uri(bucket, "z/small.txt.gz"))
    assert head is not None
    assert head["Metadata"]["runctl-compressed"] == "gzip"
    assert head["Metadata"]["runctl-sha256"] == hashlib.sha256(files["small.txt"]).hexdigest()
    assert head["ContentLength"] < len(files["small.txt"])
    down = storage.download(S3Uri(bucket, "z/"), tmp_path / "out", opts, True)
    assert (down.files, down.verified) == (2, 2)
    assert _read_tree(tmp_path / "out") == files
    # Without --compress the .gz objects arrive as they are, checked by S3's own checksum:
    # a whole-object one for the single PUT, none usable for the multipart one.
    raw = storage.download(
        S3Uri(bucket, "z/"), tmp_path / "raw", TransferOptions(verify=True), True
    )
    assert raw.files == 2 and (tmp_path / "raw" / "small.txt.gz").exists()
    assert raw.verified == 1 and raw.warnings == [
        f"cannot verify s3://{bucket}/z/big.bin.gz: no whole-file checksum"
    ]


@pytest.mark.integration
def test_verify_multipart_without_compression(
    storage: S3Storage, bucket: str, tmp_path: Path
) -> None:
    src = _big_file(tmp_path / "big.bin", 12)
    up = storage.upload(src, S3Uri(bucket, "v/big.bin"), TransferOptions(verify=True))
    assert up.verified == 1
    head = storage.head(S3Uri(bucket, "v/big.bin"))
    assert head is not None and str(head.get("ChecksumSHA256", "")).endswith("-3")
    down = storage.download(
        S3Uri(bucket, "v/big.bin"), tmp_path / "o.bin", TransferOptions(verify=True)
    )
    assert down.verified == 1 and (tmp_path / "o.bin").read_bytes() == src.read_bytes()


@pytest.mark.integration
def test_verify_catches_a_corrupt_object(storage: S3Storage, bucket: str, tmp_path: Path) -> None:
    storage.client.put_object(
        Bucket=bucket, Key="bad.txt", Body=b"content", Metadata={"runctl-sha256": "0" * 64}
    )
    summary = storage.download(
        S3Uri(bucket, "bad.txt"), tmp_path / "bad.txt", TransferOptions(verify=True)
    )
    assert summary.files == 0 and "checksum mismatch" in summary.failed[0]
    assert not (tmp_path / "bad.txt").exists()  # nothing half-verified is left behind
    assert not list(tmp_path.glob(".bad.txt*"))


@pytest.mark.integration
def test_cleanup_plan_keeps_newest_checkpoints(
    storage: S3Storage, bucket: str, tmp_path: Path
) -> None:
    names = ["step_1.pt", "step_2.pt", "step_10.pt", "step_3.ckpt", "best.pt", "notes.txt"]
    src = _tree(tmp_path / "c", {n: b"x" for n in names})
    storage.upload(src, S3Uri(bucket, "run/"), TransferOptions())
    plan = storage.plan_cleanup(S3Uri(bucket, "run"), keep_last_n=2)
    assert [o.key for o in plan.keep] == ["run/step_3.ckpt", "run/step_10.pt"]
    assert [o.key for o in plan.delete] == ["run/step_1.pt", "run/step_2.pt"]
    deleted, failures = storage.delete_keys(bucket, [o.key for o in plan.delete])
    assert failures == [] and len(deleted) == 2
    left = sorted(o.key.split("/")[1] for o in storage.iter_objects(bucket, "run/"))
    assert left == ["best.pt", "notes.txt", "step_10.pt", "step_3.ckpt"]


@pytest.mark.integration
def test_watch_reports_new_changed_deleted(storage: S3Storage, bucket: str) -> None:
    client = storage.client
    client.put_object(Bucket=bucket, Key="w/keep.txt", Body=b"1")
    client.put_object(Bucket=bucket, Key="w/gone.txt", Body=b"1")
    changes: Iterator[Callable[[], object]] = iter(
        [
            lambda: client.put_object(Bucket=bucket, Key="w/new.pt", Body=b"22"),
            lambda: (
                client.put_object(Bucket=bucket, Key="w/keep.txt", Body=b"333"),
                client.delete_object(Bucket=bucket, Key="w/gone.txt"),
            ),
        ]
    )
    slept: list[float] = []

    def fake_sleep(seconds: float) -> None:  # the world changes while we "sleep"
        slept.append(seconds)
        next(changes)()

    polls = list(storage.watch(S3Uri(bucket, "w"), 7.0, max_polls=3, sleep=fake_sleep))
    assert slept == [7.0, 7.0]
    assert (polls[0].objects, polls[0].events) == (2, [])
    assert [(e.kind, e.obj.key) for e in polls[1].events] == [("new", "w/new.pt")]
    assert sorted((e.kind, e.obj.key) for e in polls[2].events) == [
        ("changed", "w/keep.txt"),
        ("deleted", "w/gone.txt"),
    ]


@pytest.mark.integration
def test_review_summarizes_prefix(storage: S3Storage, bucket: str, tmp_path: Path) -> None:
    src = _tree(
        tmp_path / "r",
        {"step_1.pt": b"x" * 10, "final.pt": b"x" * 99, "train.log": b"l", "cfg.yaml": b"c"},
    )
    storage.upload(src, S3Uri(bucket, "rv/"), TransferOptions())
    report = storage.review(S3Uri(bucket, "rv"), top_n=1)
    assert report["path"] == f"s3://{bucket}/rv"
    assert report["total_objects"] == 4
    assert {k: v["count"] for k, v in report["kinds"].items()} == {
        "checkpoint": 1,
        "model": 1,
        "log": 1,
        "other": 1,
    }
    assert report["largest"][0]["key"] == "rv/final.pt"


@pytest.mark.integration
def test_missing_bucket_is_not_found(storage: S3Storage, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="'no-such-bucket-x' does not exist"):
        storage.list_prefix(S3Uri("no-such-bucket-x", ""))
    with pytest.raises(NotFoundError, match="does not exist"):
        storage.download(S3Uri("no-such-bucket-x", "p/"), tmp_path, TransferOptions(), True)


@pytest.mark.integration
def test_bad_credentials_and_dead_endpoint(
    seaweed: Any, bucket: str, tmp_path: Path, aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    wrong = S3Storage(S3Settings(endpoint_url=seaweed.endpoint_url))
    with pytest.raises(AuthError, match="SignatureDoesNotMatch"):
        wrong.list_prefix(S3Uri(bucket, ""))
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    dead = S3Storage(S3Settings(endpoint_url="http://127.0.0.1:9"))
    with pytest.raises(TransportError, match="cannot reach S3 at http://127.0.0.1:9"):
        dead.list_prefix(S3Uri(bucket, ""))


# ----------------------------------------------------------------------------- moto


def test_download_never_writes_outside_destination(tmp_path: Path, aws_env: None) -> None:
    from moto import mock_aws

    with mock_aws():
        storage = S3Storage(S3Settings(region="us-east-1"))
        client = storage.client
        client.create_bucket(Bucket="evil-bucket")
        for key in ["p/a/../../evil", "p/../evil2", "p//abs", "p/ok/fine.txt"]:
            client.put_object(Bucket="evil-bucket", Key=key, Body=b"payload")
        dest = tmp_path / "dest" / "inner"
        warnings: list[str] = []
        storage = S3Storage(S3Settings(region="us-east-1"), warn=warnings.append)
        summary = storage.download(S3Uri("evil-bucket", "p/"), dest, TransferOptions(), True)
    assert summary.files == 1
    assert _read_tree(tmp_path) == {"dest/inner/ok/fine.txt": b"payload"}
    assert len(summary.warnings) == 3 and len(warnings) == 3
    assert all("outside" in w for w in summary.warnings)


def test_upload_to_missing_bucket_stops_the_whole_transfer(tmp_path: Path, aws_env: None) -> None:
    # SeaweedFS creates buckets on PutObject for admin keys; AWS (and moto) refuse.
    from moto import mock_aws

    src = _tree(tmp_path / "src", {f"f{i}": b"1" for i in range(50)})
    with mock_aws(), pytest.raises(NotFoundError, match="'no-such-bucket-x' does not exist"):
        storage = S3Storage(S3Settings(region="us-east-1", max_concurrency=2))
        storage.upload(src, S3Uri("no-such-bucket-x", "p/"), TransferOptions())


def test_object_modified_is_utc_iso() -> None:
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert ObjectInfo("k", 1, stamp).modified == "2026-01-02T03:04:05+00:00"


def test_listing_timestamps_parse_fast_and_like_botocore() -> None:
    """The ISO 8601 shortcut for LastModified agrees with botocore's own parser."""
    from botocore.utils import parse_timestamp

    from runctl.storage.s3.client import _parse_timestamp

    for value in ("2026-12-02T01:02:03.000Z", "2026-12-02T01:02:03Z",
                  "Wed, 02 Dec 2026 01:02:03 GMT", 1764637323, "2026-12-02T01:02:03"):  # fmt: skip
        assert _parse_timestamp(value).timestamp() == parse_timestamp(value).timestamp()
