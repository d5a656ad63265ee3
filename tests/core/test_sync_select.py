"""Tests for runctl.core.sync_select: project root, file selection, manifests."""

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runctl.core import sync_select
from runctl.core.sync_select import (
    FileEntry,
    Manifest,
    build_manifest,
    collect_files,
    diff_manifests,
    find_project_root,
    manifest_from_json,
    manifest_to_json,
)

# Old enough that the cache's guard against racily-modified files does not apply.
OLD_NS = 1_600_000_000 * 1_000_000_000


def write(root: Path, rel: str, content: str = "x", *, old: bool = False) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    if old:
        os.utime(path, ns=(OLD_NS, OLD_NS))
    return path


def tree(root: Path, *rels: str) -> None:
    for rel in rels:
        write(root, rel)


# --------------------------------------------------------------------------------------------
# find_project_root
# --------------------------------------------------------------------------------------------


def test_root_prefers_git_over_nearer_marker(tmp_path: Path) -> None:
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    write(tmp_path, "repo/proj/pyproject.toml")
    script = write(tmp_path, "repo/proj/sub/train.py")
    assert find_project_root(script) == (tmp_path / "repo").resolve()


def test_root_accepts_git_file(tmp_path: Path) -> None:
    write(tmp_path, "wt/.git", "gitdir: /elsewhere/.git/worktrees/wt\n")
    script = write(tmp_path, "wt/a/b/train.py")
    assert find_project_root(script) == (tmp_path / "wt").resolve()


def test_root_uses_nearest_marker_without_git(tmp_path: Path) -> None:
    write(tmp_path, "outer/setup.cfg")
    write(tmp_path, "outer/inner/requirements.txt")
    script = write(tmp_path, "outer/inner/src/deep/train.py")
    assert find_project_root(script) == (tmp_path / "outer" / "inner").resolve()
    script2 = write(tmp_path, "outer/other/train.py")
    assert find_project_root(script2) == (tmp_path / "outer").resolve()


@pytest.mark.parametrize(
    "marker", ["pyproject.toml", "requirements.txt", "setup.py", "setup.cfg", ".runctl.toml"]
)
def test_root_every_marker_counts(tmp_path: Path, marker: str) -> None:
    write(tmp_path, f"p/{marker}")
    script = write(tmp_path, "p/s/train.py")
    assert find_project_root(script) == (tmp_path / "p").resolve()


def test_root_falls_back_to_script_dir(tmp_path: Path) -> None:
    script = write(tmp_path, "lonely/dir/train.py")
    assert find_project_root(script) == (tmp_path / "lonely" / "dir").resolve()


def test_root_resolves_symlinked_script(tmp_path: Path) -> None:
    write(tmp_path, "real/pyproject.toml")
    target = write(tmp_path, "real/sub/train.py")
    link_dir = tmp_path / "links"
    link_dir.mkdir()
    (link_dir / "train.py").symlink_to(target)
    assert find_project_root(link_dir / "train.py") == (tmp_path / "real").resolve()


def test_root_accepts_directory(tmp_path: Path) -> None:
    write(tmp_path, "p/pyproject.toml")
    (tmp_path / "p" / "sub").mkdir()
    assert find_project_root(tmp_path / "p" / "sub") == (tmp_path / "p").resolve()


# --------------------------------------------------------------------------------------------
# collect_files
# --------------------------------------------------------------------------------------------


def test_collect_skips_git_and_runctl_dirs(tmp_path: Path) -> None:
    tree(tmp_path, "a.py", ".git/HEAD", ".git/objects/ab/cd", ".runctl/state.json")
    tree(tmp_path, "sub/.git/config", "sub/b.py", "sub/.runctl/x")
    assert collect_files(tmp_path) == ["a.py", "sub/b.py"]


def test_collect_is_sorted_posix(tmp_path: Path) -> None:
    tree(tmp_path, "b/z.py", "b/a.py", "a.py", "c/d/e/f.txt")
    assert collect_files(tmp_path) == ["a.py", "b/a.py", "b/z.py", "c/d/e/f.txt"]


def test_nested_gitignore(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "*.log\n")
    write(tmp_path, "sub/.gitignore", "*.tmp\n!keep.log\n")
    tree(tmp_path, "a.log", "a.tmp", "sub/b.log", "sub/keep.log", "sub/b.tmp", "sub/deep/c.tmp")
    tree(tmp_path, "other/keep.log")
    assert collect_files(tmp_path) == [
        ".gitignore",
        "a.tmp",
        "sub/.gitignore",
        "sub/keep.log",
    ]


def test_negation(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "*.txt\n!important.txt\n")
    tree(tmp_path, "a.txt", "important.txt", "d/important.txt", "d/b.txt")
    assert collect_files(tmp_path) == [".gitignore", "d/important.txt", "important.txt"]


def test_negation_cannot_reach_into_ignored_dir(tmp_path: Path) -> None:
    # git never looks inside an excluded directory, so the negation has no effect.
    write(tmp_path, ".gitignore", "build/\n!build/keep.txt\n")
    write(tmp_path, "build/.gitignore", "!*\n")  # never read: its directory is ignored
    tree(tmp_path, "build/keep.txt", "build/other.txt", "main.py")
    assert collect_files(tmp_path) == [".gitignore", "main.py"]


def test_children_glob_allows_negation(tmp_path: Path) -> None:
    # "data/**" matches everything inside data/ but not data/ itself, so it can be re-included.
    write(tmp_path, ".gitignore", "data/**\n!data/.gitkeep\n")
    tree(tmp_path, "data/.gitkeep", "data/big.bin", "data/sub/x.bin")
    assert collect_files(tmp_path) == [".gitignore", "data/.gitkeep"]


def test_whitelist_idiom(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "*\n!*/\n!*.py\n")
    tree(tmp_path, "a.py", "a.txt", "src/pkg/m.py", "src/pkg/m.json")
    assert collect_files(tmp_path) == ["a.py", "src/pkg/m.py"]


def test_dir_only_pattern(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "out/\n")
    tree(tmp_path, "out/a.txt", "sub/out/b.txt", "x/out", "keep.txt")
    assert collect_files(tmp_path) == [".gitignore", "keep.txt", "x/out"]


def test_anchored_patterns_are_relative_to_their_file(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "/top.txt\ndocs/build\n")
    write(tmp_path, "sub/.gitignore", "/local.txt\n")
    tree(tmp_path, "top.txt", "sub/top.txt", "docs/build/i.html", "x/docs/build/i.html")
    tree(tmp_path, "sub/local.txt", "sub/deeper/local.txt", "local.txt")
    assert collect_files(tmp_path) == [
        ".gitignore",
        "local.txt",
        "sub/.gitignore",
        "sub/deeper/local.txt",
        "sub/top.txt",
        "x/docs/build/i.html",
    ]


def test_deeper_gitignore_overrides_shallower(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "*.csv\ncache/\n")
    write(tmp_path, "data/.gitignore", "!*.csv\n!cache/\n")
    tree(tmp_path, "a.csv", "data/b.csv", "data/cache/c.bin", "cache/d.bin")
    assert collect_files(tmp_path) == [
        ".gitignore",
        "data/.gitignore",
        "data/b.csv",
        "data/cache/c.bin",
    ]


def test_runctlignore(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "*.csv\n")
    write(tmp_path, ".runctlignore", "notebooks/\n!small.csv\n")
    write(tmp_path, "sub/.runctlignore", "*.png\n")
    tree(tmp_path, "notebooks/a.ipynb", "small.csv", "big.csv", "sub/p.png", "q.png")
    assert collect_files(tmp_path) == [".gitignore", ".runctlignore", "q.png", "small.csv"] + [
        "sub/.runctlignore"
    ]


def test_git_info_exclude(tmp_path: Path) -> None:
    write(tmp_path, ".git/info/exclude", "scratch/\n*.secret\n")
    write(tmp_path, ".gitignore", "!ok.secret\n")
    tree(tmp_path, "scratch/a.py", "x.secret", "ok.secret", "main.py")
    assert collect_files(tmp_path) == [".gitignore", "main.py", "ok.secret"]


def test_git_info_exclude_via_gitdir_file(tmp_path: Path) -> None:
    write(tmp_path, "gitdirs/wt/info/exclude", "*.secret\n")
    root = tmp_path / "wt"
    write(root, ".git", f"gitdir: {tmp_path / 'gitdirs' / 'wt'}\n")
    tree(root, "x.secret", "main.py")
    assert collect_files(root) == ["main.py"]


def test_malformed_pattern_line_is_skipped(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "!\n*.log\n")
    tree(tmp_path, "a.log", "a.py")
    assert collect_files(tmp_path) == [".gitignore", "a.py"]


def test_includes_reinclude_ignored_dir_and_file(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "data/\n*.ckpt\nnode_modules/\n")
    tree(tmp_path, "data/train.csv", "data/sub/val.csv", "model.ckpt", "other.ckpt")
    tree(tmp_path, "node_modules/x/index.js", "main.py")
    got = collect_files(tmp_path, includes=["data/", "model.ckpt"])
    assert got == [
        ".gitignore",
        "data/sub/val.csv",
        "data/train.csv",
        "main.py",
        "model.ckpt",
    ]


def test_includes_single_file_inside_ignored_dirs(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "outputs/\n")
    tree(tmp_path, "outputs/run1/model.ckpt", "outputs/run1/log.txt", "outputs/run2/model.ckpt")
    got = collect_files(tmp_path, includes=["outputs/run1/model.ckpt"])
    assert got == [".gitignore", "outputs/run1/model.ckpt"]


def test_includes_unanchored_glob_reaches_any_depth(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "outputs/\n")
    tree(tmp_path, "outputs/a/b/best.ckpt", "outputs/a/b/log.txt")
    assert collect_files(tmp_path, includes=["*.ckpt"]) == [
        ".gitignore",
        "outputs/a/b/best.ckpt",
    ]


def test_includes_never_bring_back_git_dir(tmp_path: Path) -> None:
    tree(tmp_path, ".git/HEAD", "a.py")
    assert collect_files(tmp_path, includes=[".git/", "*"]) == ["a.py"]


def test_ignored_dirs_are_pruned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, ".gitignore", ".venv/\nnode_modules/\n")
    tree(tmp_path, ".venv/lib/site.py", "node_modules/a/b.js", "data/x.csv", "main.py")
    scanned: list[str] = []
    real_scandir = os.scandir

    def spy(path: Any) -> Any:
        scanned.append(os.path.relpath(path, tmp_path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", spy)
    assert collect_files(tmp_path, includes=["data/x.csv"]) == [
        ".gitignore",
        "data/x.csv",
        "main.py",
    ]
    assert sorted(scanned) == [".", "data"]


def test_anchored_include_descends_only_matching_dirs(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "*/\n")
    tree(tmp_path, "data/keep/a.csv", "data/skip/b.csv", "other/c.csv")
    inc = sync_select._Includes(["data/keep/*.csv"])
    assert inc.may_match_below("data")
    assert inc.may_match_below("data/keep")
    assert not inc.may_match_below("data/skip")
    assert not inc.may_match_below("other")
    assert collect_files(tmp_path, includes=["data/keep/*.csv"]) == [
        ".gitignore",
        "data/keep/a.csv",
    ]


def test_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = write(tmp_path, "outside/secret.txt")
    write(root, "real/a.txt")
    (root / "escape.txt").symlink_to(outside)
    (root / "inside.txt").symlink_to(root / "real" / "a.txt")
    (root / "relative.txt").symlink_to("real/a.txt")
    (root / "dirlink").symlink_to(root / "real", target_is_directory=True)
    (root / "outdir").symlink_to(tmp_path / "outside", target_is_directory=True)
    (root / "broken").symlink_to(root / "missing")
    (root / "sneaky.txt").symlink_to(root / "dirlink" / ".." / ".." / "outside" / "secret.txt")
    assert collect_files(root) == ["inside.txt", "real/a.txt", "relative.txt"]


def test_non_utf8_file_name_round_trips(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9.txt")  # Latin-1 bytes: not valid UTF-8
    (tmp_path / name).write_text("x")
    files = collect_files(tmp_path)
    assert files == [name]
    m = build_manifest(tmp_path, files, tmp_path.parent / f"{tmp_path.name}-cache.json")
    assert manifest_from_json(manifest_to_json(m)) == m


def test_fifo_skipped(tmp_path: Path) -> None:
    write(tmp_path, "a.py")
    os.mkfifo(tmp_path / "pipe")
    assert collect_files(tmp_path) == ["a.py"]


# --------------------------------------------------------------------------------------------
# build_manifest
# --------------------------------------------------------------------------------------------


def manifest_of(root: Path, cache: Path | None = None) -> Manifest:
    return build_manifest(root, collect_files(root), cache)


def test_manifest_entries(tmp_path: Path) -> None:
    write(tmp_path, "a.txt", "hello")
    run = write(tmp_path, "run.sh", "#!/bin/sh\n")
    run.chmod(0o755)
    m = manifest_of(tmp_path)
    assert m.files["a.txt"] == FileEntry(
        size=5,
        sha256="2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        executable=False,
    )
    assert m.files["run.sh"].executable
    assert len(m.digest) == 64


def test_manifest_digest_stable_and_sensitive(tmp_path: Path) -> None:
    tree(tmp_path, "a.txt", "b/c.txt")
    first = manifest_of(tmp_path)
    assert manifest_of(tmp_path).digest == first.digest
    assert Manifest.from_entries(dict(reversed(first.files.items()))).digest == first.digest

    write(tmp_path, "a.txt", "y")  # same size, different content
    changed = manifest_of(tmp_path)
    assert changed.digest != first.digest

    (tmp_path / "a.txt").chmod(0o755)
    chmodded = manifest_of(tmp_path)
    assert chmodded.digest != changed.digest
    (tmp_path / "a.txt").chmod(0o644)
    assert manifest_of(tmp_path).digest == changed.digest

    (tmp_path / "b" / "c.txt").rename(tmp_path / "b" / "d.txt")
    renamed = manifest_of(tmp_path)
    assert renamed.digest != changed.digest
    assert set(renamed.files) == {"a.txt", "b/d.txt"}

    (tmp_path / "b" / "d.txt").unlink()
    deleted = manifest_of(tmp_path)
    assert deleted.digest not in {first.digest, changed.digest, renamed.digest}
    assert set(deleted.files) == {"a.txt"}


def test_manifest_skips_vanished_file(tmp_path: Path) -> None:
    write(tmp_path, "a.txt")
    m = build_manifest(tmp_path, ["a.txt", "gone.txt"], None)
    assert set(m.files) == {"a.txt"}


def test_cache_is_used(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    cache = tmp_path / "state" / "hashes.json"
    path = write(root, "a.txt", "aaaa", old=True)
    first = build_manifest(root, ["a.txt"], cache)
    assert cache.exists()

    # Rewrite in place (same inode, same size) and put the mtime back: only the cache can
    # still know the old hash, so getting it back proves the file was not read.
    st = path.stat()
    with open(path, "r+") as fh:
        fh.write("bbbb")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_ino == st.st_ino

    cached = build_manifest(root, ["a.txt"], cache)
    assert cached.files["a.txt"].sha256 == first.files["a.txt"].sha256
    uncached = build_manifest(root, ["a.txt"], None)
    assert uncached.files["a.txt"].sha256 != first.files["a.txt"].sha256


def test_cache_detects_changes(tmp_path: Path) -> None:
    cache = tmp_path / "hashes.json"
    root = tmp_path / "proj"
    write(root, "a.txt", "one", old=True)
    first = build_manifest(root, ["a.txt"], cache)
    write(root, "a.txt", "two")  # new mtime
    assert build_manifest(root, ["a.txt"], cache).digest != first.digest


def test_cache_written_only_when_changed(tmp_path: Path) -> None:
    cache = tmp_path / "hashes.json"
    root = tmp_path / "proj"
    write(root, "a.txt", "one", old=True)
    write(root, "b.txt", "two", old=True)
    build_manifest(root, ["a.txt", "b.txt"], cache)
    before = cache.stat()
    build_manifest(root, ["a.txt", "b.txt"], cache)
    after = cache.stat()
    # os.replace of a fresh temp file would give a new inode.
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    build_manifest(root, ["a.txt"], cache)  # b.txt dropped from the selection
    assert set(json.loads(cache.read_text())["entries"]) == {"a.txt"}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_recently_modified_files_are_not_cached(tmp_path: Path) -> None:
    cache = tmp_path / "hashes.json"
    root = tmp_path / "proj"
    write(root, "old.txt", old=True)
    write(root, "new.txt")
    m = build_manifest(root, ["new.txt", "old.txt"], cache)
    assert set(m.files) == {"new.txt", "old.txt"}
    assert set(json.loads(cache.read_text())["entries"]) == {"old.txt"}
    # Re-hashing the young file must not count as a cache change.
    before = cache.stat()
    assert build_manifest(root, ["new.txt", "old.txt"], cache) == m
    assert cache.stat().st_ino == before.st_ino


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "{not json",
        "[]",
        '{"version": 99, "entries": {}}',
        '{"version": 1, "entries": []}',
        '{"version": 1, "entries": {"a.txt": [1, 2, "x", "y"]}}',
    ],
)
def test_corrupt_cache_is_treated_as_empty(tmp_path: Path, garbage: str) -> None:
    cache = tmp_path / "hashes.json"
    cache.write_text(garbage)
    root = tmp_path / "proj"
    write(root, "a.txt", "hello", old=True)
    m = build_manifest(root, ["a.txt"], cache)
    assert m.files["a.txt"].sha256.startswith("2cf24dba")
    data = json.loads(cache.read_text())
    assert data["entries"]["a.txt"][3] == m.files["a.txt"].sha256


def test_cache_wrong_hash_shape_ignored(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    path = write(root, "a.txt", "hello", old=True)
    st = path.stat()
    cache = tmp_path / "hashes.json"
    entry = [st.st_size, st.st_mtime_ns, st.st_ino, "not-a-sha"]
    cache.write_text(json.dumps({"version": 1, "entries": {"a.txt": entry}}))
    m = build_manifest(root, ["a.txt"], cache)
    assert m.files["a.txt"].sha256.startswith("2cf24dba")


# --------------------------------------------------------------------------------------------
# diff_manifests
# --------------------------------------------------------------------------------------------


def entry(sha_char: str, size: int = 1, executable: bool = False) -> FileEntry:
    return FileEntry(size=size, sha256=sha_char * 64, executable=executable)


def test_diff_no_remote() -> None:
    local = Manifest.from_entries({"b": entry("b"), "a": entry("a")})
    assert diff_manifests(local, None) == (["a", "b"], [])


def test_diff_identical() -> None:
    files = {"a": entry("a"), "b": entry("b")}
    assert diff_manifests(Manifest.from_entries(files), Manifest.from_entries(files)) == ([], [])


def test_diff_changes() -> None:
    remote = Manifest.from_entries(
        {"same": entry("a"), "edited": entry("b"), "mode": entry("c"), "old": entry("d")}
    )
    local = Manifest.from_entries(
        {
            "same": entry("a"),
            "edited": entry("e"),
            "mode": entry("c", executable=True),
            "new": entry("f"),
        }
    )
    assert diff_manifests(local, remote) == (["edited", "mode", "new"], ["old"])


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------


def test_json_round_trip(tmp_path: Path) -> None:
    write(tmp_path, "a.txt", "hello")
    write(tmp_path, "dir with space/ünïcode\nnewline.txt", "x")
    (tmp_path / "a.txt").chmod(0o755)
    m = manifest_of(tmp_path)
    back = manifest_from_json(manifest_to_json(m))
    assert back == m
    assert manifest_to_json(back) == manifest_to_json(m)


def valid_json() -> dict[str, Any]:
    m = Manifest.from_entries({"a.txt": entry("a", size=3)})
    loaded: dict[str, Any] = json.loads(manifest_to_json(m))
    return loaded


def mutated(**changes: Any) -> str:
    data = valid_json()
    data.update(changes)
    return json.dumps(data)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "[]",
        "null",
        mutated(version=2),
        mutated(digest=None),
        mutated(files=[]),
        mutated(digest="0" * 64),
        mutated(files={"a.txt": [3, "a" * 64]}),
        mutated(files={"a.txt": [-1, "a" * 64, False]}),
        mutated(files={"a.txt": [True, "a" * 64, False]}),
        mutated(files={"a.txt": [3, "A" * 64, False]}),
        mutated(files={"a.txt": [3, "a" * 64, 0]}),
        mutated(files={"../escape": [3, "a" * 64, False]}),
        mutated(files={"/abs": [3, "a" * 64, False]}),
        mutated(files={"a//b": [3, "a" * 64, False]}),
        mutated(files={"./a": [3, "a" * 64, False]}),
    ],
)
def test_json_bad_input_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        manifest_from_json(text)


# --------------------------------------------------------------------------------------------
# Speed
# --------------------------------------------------------------------------------------------

GITIGNORE = """\
# Byte-compiled / optimized / DLL files
__pycache__/
*.py[cod]
*$py.class
*.so
.Python
build/
develop-eggs/
dist/
downloads/
eggs/
.eggs/
/lib/
/lib64/
parts/
sdist/
var/
wheels/
*.egg-info/
.installed.cfg
*.egg
MANIFEST
*.manifest
*.spec
pip-log.txt
htmlcov/
.tox/
.nox/
.coverage
.coverage.*
.cache
nosetests.xml
coverage.xml
*.cover
.hypothesis/
.pytest_cache/
*.mo
*.pot
*.log
instance/
.webassets-cache
.scrapy
docs/_build/
target/
.ipynb_checkpoints
.env
.venv
env/
venv/
ENV/
node_modules/
.mypy_cache/
.dmypy.json
.pyre/
wandb/
outputs/
*.ckpt
"""


@pytest.fixture
def big_tree(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "big"
    root.mkdir()
    (root / ".gitignore").write_text(GITIGNORE)
    for d in range(100):
        sub = root / f"pkg{d:03d}" / "mod"
        sub.mkdir(parents=True)
        for f in range(100 if d else 99):  # + .gitignore = 10,000 selected files
            (sub / f"file_{f:03d}.py").write_text(f"print({d}, {f})\n")
        (sub / "junk.pyc").write_text("ignored")
    # An ignored virtualenv that must be pruned, not walked.
    for d in range(50):
        venv_dir = root / ".venv" / "lib" / f"pkg{d}"
        venv_dir.mkdir(parents=True)
        for f in range(40):
            (venv_dir / f"m{f}.py").write_text("x")
    for dirpath, _dirs, filenames in os.walk(root):
        for name in filenames:
            os.utime(os.path.join(dirpath, name), ns=(OLD_NS, OLD_NS))
    yield root


def test_speed_10k_files(big_tree: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "hashes.json"

    t0 = time.perf_counter()
    files = collect_files(big_tree)
    cold_manifest = build_manifest(big_tree, files, cache)
    cold = time.perf_counter() - t0
    assert len(files) == 10_000

    warm_times = []
    for _ in range(3):
        t0 = time.perf_counter()
        warm_files = collect_files(big_tree)
        warm_manifest = build_manifest(big_tree, warm_files, cache)
        warm_times.append(time.perf_counter() - t0)
        assert warm_manifest.digest == cold_manifest.digest
    warm = min(warm_times)
    print(f"\n10k files: cold select+manifest {cold:.3f}s, warm {warm:.3f}s ({warm_times})")
    assert warm < 1.5
