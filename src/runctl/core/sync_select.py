"""Choose which files of a project tree are synced, and fingerprint them cheaply.

Syncing a project to a remote host happens in two steps:

1. **Selection** (:func:`collect_files`): walk the tree and keep the regular files that git
   would consider part of the working tree. ``.gitignore`` files at every level,
   ``.git/info/exclude`` and runctl's own ``.runctlignore`` files (same syntax, same nesting,
   higher precedence than ``.gitignore`` in the same directory) are honoured. ``.git/`` and
   ``.runctl/`` are never synced. Caller-supplied ``includes`` (gitignore-style patterns relative
   to the root) force paths back in, e.g. a data directory that is gitignored but needed by the
   job. Ignored directories are pruned, so an ignored ``.venv`` or ``node_modules`` costs one
   directory entry, not a walk of thousands of files.

2. **Manifest** (:func:`build_manifest`): record ``(size, sha256, executable)`` for every
   selected file plus one digest over the whole set. Comparing the local digest with the one the
   remote side reports answers "is anything to do?" in one string comparison; when something
   changed, :func:`diff_manifests` names exactly which files to send and which to delete.

Hashing every file on every run would make a large tree slow to sync even when nothing changed,
so hashes are cached in a JSON file keyed by relative path and validated with
``(size, mtime_ns, inode)``: a warm run only ``stat``-s each file.

Pattern semantics follow git, evaluated the way git does during its own walk: every path is
checked against the patterns as it is reached, a directory that ends up ignored is not entered
(so a negation cannot resurrect a file below it; only ``includes`` can), and within the
ignore files that apply to a path, the last pattern that matches it decides. Patterns are
compiled by ``pathspec``; the walk evaluates them itself because ``pathspec``'s whole-path
matching also matches a path through its parent directories and ranks file patterns above
directory patterns, which gets idioms such as ``*`` + ``!*/`` + ``!*.py`` wrong when directories
are checked one at a time.
"""

import contextlib
import hashlib
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pathspec

__all__ = [
    "IGNORE_FILE_NAMES",
    "PROJECT_MARKERS",
    "SKIPPED_DIR_NAMES",
    "FileEntry",
    "Manifest",
    "build_manifest",
    "collect_files",
    "diff_manifests",
    "find_project_root",
    "manifest_from_json",
    "manifest_to_json",
]

PROJECT_MARKERS: tuple[str, ...] = (
    "pyproject.toml",
    "requirements.txt",
    "setup.py",
    "setup.cfg",
    ".runctl.toml",
)
# Order matters: later files in the same directory take precedence, so a .runctlignore can
# override (or negate) what the .gitignore beside it says.
IGNORE_FILE_NAMES: tuple[str, ...] = (".gitignore", ".runctlignore")
# Never synced whatever the patterns or includes say: git's object store is large and
# host-specific (a `.git` *file* points to a local path), and `.runctl/` holds local state.
SKIPPED_DIR_NAMES: frozenset[str] = frozenset({".git", ".runctl"})

_MANIFEST_VERSION = 1
_CACHE_VERSION = 1
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
# pathspec marks the "/" that ends a directory match with this named group. When present, a
# full match means the pattern matched the path itself rather than one of its parents.
_DIR_MARK_GROUP = "ps_d"
# The prefix pathspec puts in front of patterns that may match at any depth. We test such
# patterns against the bare entry name, where the prefix can only waste time backtracking.
_ANY_DEPTH_PREFIX = "^(?:.+/)?"
_GLOB_CHARS = frozenset("*?[\\")
_NEVER = re.compile(r"(?!)")
_ALWAYS = re.compile("")
# Filesystems store mtimes with coarse granularity (2 s on FAT, 1 s on some network FSes). A
# file rewritten within that window after we hashed it could keep the same (size, mtime): we
# never cache hashes of files that young, so such an edit cannot be masked by the cache.
_RACY_WINDOW_NS = 2_000_000_000


# --------------------------------------------------------------------------------------------
# Project root
# --------------------------------------------------------------------------------------------


def find_project_root(script: Path) -> Path:
    """Return the directory whose tree should be synced to run ``script``.

    The nearest ancestor (starting at the script's own directory) that contains ``.git`` wins;
    failing that, the nearest one containing a project marker (:data:`PROJECT_MARKERS`);
    failing that, the script's directory. Symlinks are resolved first so the answer does not
    depend on how the script was reached.
    """
    resolved = script.resolve()
    start = resolved if resolved.is_dir() else resolved.parent
    candidates = [start, *start.parents]
    # A repository boundary is the strongest signal, so it is searched for over the whole
    # ancestry before any marker file is considered.
    for directory in candidates:
        if os.path.lexists(directory / ".git"):
            return directory
    for directory in candidates:
        if any((directory / marker).exists() for marker in PROJECT_MARKERS):
            return directory
    return start


# --------------------------------------------------------------------------------------------
# Ignore rules
# --------------------------------------------------------------------------------------------


def _pattern_body(text: str) -> str:
    """The part of a pattern line that decides whether it is anchored (no "!" nor final "/")."""
    body = text.rstrip()
    if body.startswith("!"):
        body = body[1:]
    return body.removesuffix("/")


def _is_anchored(text: str) -> bool:
    # git: a pattern with a "/" anywhere but at the end matches relative to its ignore file's
    # directory; otherwise it matches an entry name at any depth.
    return "/" in _pattern_body(text)


def _compile(lines: Sequence[str]) -> pathspec.GitIgnoreSpec:
    """Compile gitignore lines, dropping the ones git would also silently ignore."""
    try:
        return pathspec.GitIgnoreSpec.from_lines(lines)
    except ValueError:
        # One malformed line (e.g. a lone "!") must not break syncing or drop the good
        # lines around it, so keep only the lines that compile on their own.
        good: list[str] = []
        for line in lines:
            try:
                pathspec.GitIgnoreSpec.from_lines([line])
            except ValueError:
                continue
            good.append(line)
        return pathspec.GitIgnoreSpec.from_lines(good)


@dataclass(frozen=True, slots=True)
class _Rule:
    regex: re.Pattern[str]
    ignore: bool  # False for a negated ("!") pattern
    anchored: bool  # matched against the path relative to the ignore file's directory
    whole: bool  # regex carries pathspec's dir mark: use fullmatch to reject parent matches
    children_only: bool  # "dir/**": matches everything below dir, but not dir itself

    def matches(self, name: str, path: str) -> bool:
        if not self.anchored:
            # An entry name contains at most a trailing "/", so any match is a match of the
            # entry itself.
            return self.regex.search(name) is not None
        if self.children_only:
            if self.regex.search(path) is None:
                return False
            return not path.endswith("/") or self.regex.search(path[:-1]) is not None
        if self.whole:
            match = self.regex.fullmatch(path)
            # Older pathspec lets the dir mark be followed by ".*" (a match through a parent
            # directory); only a mark at the very end means this path itself matched.
            return match is not None and match.end(_DIR_MARK_GROUP) in (-1, len(path))
        return self.regex.search(path) is not None


def _strip_groups(regex: str) -> str:
    # Combining many regexes into one alternation requires unique group names; the prefilter
    # does not need the groups at all.
    return re.sub(r"\(\?P<\w+>", "(?:", regex)


_Matcher = Callable[[str], "re.Match[str] | None"]


def _union(regexes: Sequence[str]) -> _Matcher:
    """One matcher that hits whenever any of ``regexes`` would (a prefilter, not a verdict)."""
    if not regexes:
        return _NEVER.match
    try:
        union = re.compile("|".join(f"(?:{_strip_groups(r)})" for r in regexes))
    except re.error:
        return _ALWAYS.match  # Fall back to checking every rule: slower, still correct.
    # search() retries at every offset; when every alternative is anchored at the start, a
    # single attempt at offset 0 gives the same answer.
    return union.match if all(r.startswith("^") for r in regexes) else union.search


class _Level:
    """The ignore rules contributed by one directory, applied to paths below it."""

    __slots__ = ("base", "literal_names", "name_filter", "name_suffixes", "path_filter", "rules")

    def __init__(self, base: str, lines: Sequence[str]) -> None:
        self.base = base  # directory relative to the root, "" or ending in "/"
        rules: list[_Rule] = []
        literal_names: set[str] = set()
        name_suffixes: list[str] = []
        name_regexes: list[str] = []
        path_regexes: list[str] = []
        for pattern in _compile(lines).patterns:
            if pattern.include is None or pattern.regex is None:
                continue  # comment or blank line
            text = str(pattern.pattern)
            body = _pattern_body(text)
            anchored = _is_anchored(text)
            regex = pattern.regex
            source: str = regex.pattern
            if anchored:
                path_regexes.append(source)
            else:
                if source.startswith(_ANY_DEPTH_PREFIX):
                    stripped = "^" + source[len(_ANY_DEPTH_PREFIX) :]
                    # Only safe if the rest cannot match an empty remainder (the prefix could
                    # otherwise have swallowed a whole "name/").
                    if re.match(stripped, "") is None:
                        regex = re.compile(stripped)
                # Typical ignore files are mostly plain names ("dist", ".venv") and extension
                # globs ("*.pyc"); a set lookup and one str.endswith settle those far faster
                # than a regex alternation, which is left with the few real globs.
                if not _GLOB_CHARS.intersection(body):
                    literal_names.add(body)
                elif body.startswith("*") and not _GLOB_CHARS.intersection(body[1:]):
                    name_suffixes.append(body[1:])
                else:
                    name_regexes.append(regex.pattern)
            rules.append(
                _Rule(
                    regex=regex,
                    ignore=bool(pattern.include),
                    anchored=anchored,
                    whole=_DIR_MARK_GROUP in regex.groupindex,
                    children_only=body.endswith("/**"),
                )
            )
        self.rules = tuple(reversed(rules))  # last match wins: scan from the end
        # Most entries match no rule at all. These prefilters settle that case with a few
        # C-level calls instead of a Python loop over every rule; they may report false hits
        # (e.g. a dir-only name matching a file), which the rule loop then rejects.
        self.literal_names = frozenset(literal_names)
        self.name_suffixes = tuple(name_suffixes)
        self.name_filter = _union(name_regexes)
        self.path_filter = _union(path_regexes)

    def verdict(self, rel: str, name: str, bare_name: str) -> bool | None:
        """True/False if some rule here ignores/re-includes ``rel``; None if none applies.

        ``rel`` is relative to the walk root and ``name`` is the entry's name, both ending in
        "/" for directories; ``bare_name`` is the name without that "/".
        """
        path = rel[len(self.base) :]
        if (
            bare_name not in self.literal_names
            and not bare_name.endswith(self.name_suffixes)
            and self.name_filter(name) is None
            and self.path_filter(path) is None
        ):
            return None
        for rule in self.rules:
            if rule.matches(name, path):
                return rule.ignore
        return None


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().splitlines()
    except OSError:
        return []  # unreadable or vanished ignore file: same as absent, like git


def _info_exclude_path(root: Path) -> str | None:
    """Locate ``info/exclude`` for the repository at ``root``, including worktrees/submodules."""
    dot_git = root / ".git"
    if dot_git.is_dir():
        return str(dot_git / "info" / "exclude")
    try:
        first = dot_git.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    if not first.startswith("gitdir:"):
        return None
    git_dir = (root / first.removeprefix("gitdir:").strip()).resolve()
    # A linked worktree keeps info/exclude in the main repository's directory.
    common = _read_lines(str(git_dir / "commondir"))
    if common:
        git_dir = (git_dir / common[0].strip()).resolve()
    return str(git_dir / "info" / "exclude")


class _Includes:
    """Force-include patterns, relative to the walk root."""

    __slots__ = ("anchored_segments", "anywhere", "spec")

    def __init__(self, includes: Sequence[str]) -> None:
        self.spec = _compile(includes)
        # A positive pattern without an inner "/" (e.g. "*.ckpt") may match at any depth, so
        # no ignored directory can be skipped unseen.
        self.anywhere = False
        self.anchored_segments: list[list[str]] = []
        for pattern in self.spec.patterns:
            if not pattern.include:
                continue
            text = str(pattern.pattern)
            if _is_anchored(text):
                self.anchored_segments.append(_pattern_body(text).lstrip("/").split("/"))
            else:
                self.anywhere = True

    def matches(self, rel: str) -> bool:
        return self.spec.match_file(rel)

    def may_match_below(self, rel_dir: str) -> bool:
        """Whether some include could select a path strictly inside ``rel_dir`` (no "/" end)."""
        if self.anywhere or self.spec.match_file(rel_dir + "/"):
            return True
        dir_segments = rel_dir.split("/")
        return any(
            _segments_may_extend(segments, dir_segments) for segments in self.anchored_segments
        )


def _segments_may_extend(pattern: Sequence[str], directory: Sequence[str]) -> bool:
    """Could an anchored pattern match something below ``directory``? Errs towards yes."""
    for index, dir_segment in enumerate(directory):
        if index >= len(pattern):
            return False  # the pattern stops above this directory
        segment = pattern[index]
        if "**" in segment or "\\" in segment:
            return True  # "**" spans any depth; escapes are not worth interpreting here
        if not fnmatchcase(dir_segment, segment):
            return False
    return len(pattern) > len(directory)


# --------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------


def collect_files(root: Path, includes: Sequence[str] = ()) -> list[str]:
    """Return the sorted POSIX paths, relative to ``root``, of the regular files to sync.

    Honours nested ``.gitignore`` / ``.runctlignore`` files and ``.git/info/exclude`` with git
    semantics; ``includes`` (gitignore syntax, relative to ``root``) force paths in even when
    ignored. ``.git`` and ``.runctl`` are always skipped. Symlinked directories are not
    followed; a symlinked file is kept only if it resolves to a regular file inside ``root``.
    Sockets, FIFOs and device nodes are skipped.
    """
    root_real = os.path.realpath(root)
    root_prefix = root_real.rstrip(os.sep) + os.sep
    forced = _Includes(includes) if includes else None

    root_lines: list[str] = []
    exclude_path = _info_exclude_path(root)
    if exclude_path is not None:
        # Lowest precedence in git: any .gitignore pattern overrides it, so it comes first.
        root_lines.extend(_read_lines(exclude_path))

    out: list[str] = []
    # (absolute dir, dir relative to root ("" or ending "/"), applicable levels, inside an
    # ignored directory that is only being walked for the sake of `includes`)
    stack: list[tuple[str, str, tuple[_Level, ...], bool]] = [(str(root), "", (), False)]
    while stack:
        directory, rel_dir, levels, in_ignored = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except OSError:
            continue  # unreadable directory: nothing in it can be synced anyway

        if not in_ignored:
            # Ignore files inside an ignored directory are never consulted (git does not read
            # them either): everything there is ignored unless `includes` selects it.
            names = {entry.name for entry in entries}
            lines = list(root_lines) if rel_dir == "" else []
            for ignore_name in IGNORE_FILE_NAMES:
                if ignore_name in names:
                    lines.extend(_read_lines(os.path.join(directory, ignore_name)))
            if lines:
                levels = (*levels, _Level(rel_dir, lines))

        for entry in entries:
            name = entry.name
            if name in SKIPPED_DIR_NAMES:
                continue
            try:
                if entry.is_symlink():
                    # Only files that stay inside the tree: a link to a directory could loop or
                    # pull in an arbitrary tree, and a link outside would ship foreign data.
                    target = os.path.realpath(entry.path)
                    if not target.startswith(root_prefix) or not os.path.isfile(target):
                        continue
                    is_dir = False
                elif entry.is_dir(follow_symlinks=False):
                    is_dir = True
                elif entry.is_file(follow_symlinks=False):
                    is_dir = False
                else:
                    continue  # socket, FIFO, device node
            except OSError:
                continue  # vanished while we looked: nothing to sync

            rel = rel_dir + name
            if in_ignored:
                ignored = True
            else:
                ignored = False
                check_rel, check_name = (rel + "/", name + "/") if is_dir else (rel, name)
                for level in levels:
                    verdict = level.verdict(check_rel, check_name, name)
                    if verdict is not None:
                        ignored = verdict  # deeper ignore files override shallower ones

            if is_dir:
                if not ignored:
                    stack.append((entry.path, rel + "/", levels, False))
                elif forced is not None and forced.may_match_below(rel):
                    stack.append((entry.path, rel + "/", levels, True))
            elif not ignored or (forced is not None and forced.matches(rel)):
                out.append(rel)

    out.sort()
    return out


# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileEntry:
    """What the remote copy of one file must match."""

    size: int
    sha256: str
    executable: bool


@dataclass(frozen=True)
class Manifest:
    """The content fingerprint of a selected tree.

    ``files`` maps relative POSIX paths to entries; ``digest`` is a SHA-256 over all of them,
    so two manifests with equal digests describe identical trees. Build one with
    :meth:`from_entries` so the digest is always consistent with ``files``.
    """

    files: dict[str, FileEntry]
    digest: str

    @classmethod
    def from_entries(cls, files: Mapping[str, FileEntry]) -> "Manifest":
        return cls(files=dict(files), digest=_digest(files))


def _digest(files: Mapping[str, FileEntry]) -> str:
    # NUL cannot occur in a path and the other fields have fixed shapes, so the byte stream
    # decodes unambiguously even for paths containing newlines. One join + one update is much
    # cheaper than 10k small hasher updates.
    text = "".join(
        f"{path}\0{e.size}\0{e.sha256}\0{e.executable:d}\n" for path, e in sorted(files.items())
    )
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _load_cache(cache_path: Path | None) -> dict[str, Any]:
    """Read the hash cache's raw entries; anything unreadable or malformed counts as empty.

    Entries are validated one by one when used: checking all of them up front costs about as
    much as the stat calls the cache exists to limit us to.
    """
    if cache_path is None:
        return {}
    try:
        data = json.loads(cache_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != _CACHE_VERSION:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def _write_cache(cache_path: Path, entries: Mapping[str, list[Any]]) -> None:
    payload = json.dumps({"version": _CACHE_VERSION, "entries": entries}, separators=(",", ":"))
    tmp_name: str | None = None
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        # Same directory as the target so os.replace is an atomic rename: a concurrent reader
        # sees the old or the new cache, never half of one.
        fd, tmp_name = tempfile.mkstemp(
            dir=cache_path.parent, prefix=f".{cache_path.name}.", suffix=".tmp"
        )
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(payload)
        os.replace(tmp_name, cache_path)
        tmp_name = None
    except OSError:
        pass  # The cache only saves time; failing to store it must not fail the sync.
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


def _hash_file(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def build_manifest(root: Path, files: Sequence[str], cache_path: Path | None) -> Manifest:
    """Hash ``files`` (relative to ``root``) into a :class:`Manifest`.

    With ``cache_path``, a file whose ``(size, mtime_ns, inode)`` matches the cached record
    reuses the cached hash and is only ``stat``-ed. The cache is rewritten atomically, and only
    when its content changed. Files that disappeared since selection are left out.
    """
    cached_entries = _load_cache(cache_path)
    new_cache: dict[str, list[Any]] = {}
    rewritten = False  # did we store any record the cache file does not already hold?
    entries: dict[str, FileEntry] = {}
    fresh_after = time.time_ns() - _RACY_WINDOW_NS
    prefix = os.path.join(str(root), "")
    # Locals, not attribute lookups: this loop is the whole warm-path cost.
    stat_path, lookup, exec_bit = os.stat, cached_entries.get, stat.S_IXUSR
    for rel in files:
        path = prefix + rel
        try:
            st = stat_path(path)
            size, mtime_ns, inode = st.st_size, st.st_mtime_ns, st.st_ino
            record: Any = lookup(rel)
            reused = (
                type(record) is list
                and len(record) == 4
                and record[0] == size
                and record[1] == mtime_ns
                and record[2] == inode
                and type(record[3]) is str
                # A length check, not a hex regex: the cache is our own file.
                and len(record[3]) == 64
            )
            if not reused:
                record = [size, mtime_ns, inode, _hash_file(path)]
        except FileNotFoundError:
            continue  # deleted since selection: treat as gone, the next sync sees the truth
        if mtime_ns < fresh_after:
            new_cache[rel] = record
            rewritten = rewritten or not reused
        # The exec bit comes from stat every time, not the cache: chmod leaves mtime alone.
        entries[rel] = FileEntry(size, record[3], bool(st.st_mode & exec_bit))
    # Every reused record came from the file under the same key, so equal counts and no new
    # records mean the cache content is unchanged and rewriting it would be wasted I/O.
    if cache_path is not None and (rewritten or len(new_cache) != len(cached_entries)):
        _write_cache(cache_path, new_cache)
    return Manifest.from_entries(entries)


def diff_manifests(local: Manifest, remote: Manifest | None) -> tuple[list[str], list[str]]:
    """Return ``(changed_or_new, deleted)`` paths, both sorted, to bring remote to local.

    With no remote manifest (first sync) everything is sent and nothing deleted.
    """
    if remote is None:
        return sorted(local.files), []
    if local.digest == remote.digest:
        return [], []
    changed = sorted(path for path, e in local.files.items() if remote.files.get(path) != e)
    deleted = sorted(path for path in remote.files if path not in local.files)
    return changed, deleted


# --------------------------------------------------------------------------------------------
# Serialisation
# --------------------------------------------------------------------------------------------


def manifest_to_json(m: Manifest) -> str:
    """Serialise compactly: ``{"version", "digest", "files": {path: [size, sha256, exec]}}``."""
    files = {path: [e.size, e.sha256, e.executable] for path, e in sorted(m.files.items())}
    return json.dumps(
        {"version": _MANIFEST_VERSION, "digest": m.digest, "files": files},
        separators=(",", ":"),
    )


def _check_rel_path(path: str) -> None:
    # Manifests come back from remote hosts and their paths drive deletions: refuse anything
    # that could point outside the synced tree.
    parts = path.split("/")
    if not path or "\0" in path or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"manifest: invalid path {path!r}")


def manifest_from_json(text: str) -> Manifest:
    """Parse :func:`manifest_to_json` output; raise ``ValueError`` on anything malformed.

    The digest is recomputed and must match, so a truncated or edited manifest is rejected.
    """
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"manifest: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("manifest: expected a JSON object")
    if data.get("version") != _MANIFEST_VERSION:
        raise ValueError(f"manifest: unsupported version {data.get('version')!r}")
    digest = data.get("digest")
    raw_files = data.get("files")
    if not isinstance(digest, str) or not isinstance(raw_files, dict):
        raise ValueError("manifest: missing 'digest' or 'files'")
    files: dict[str, FileEntry] = {}
    for path, value in raw_files.items():
        _check_rel_path(path)
        if not (isinstance(value, list) and len(value) == 3):
            raise ValueError(f"manifest: bad entry for {path!r}")
        size, sha, executable = value
        if (
            type(size) is not int
            or size < 0
            or not isinstance(sha, str)
            or not _SHA256_RE.fullmatch(sha)
            or not isinstance(executable, bool)
        ):
            raise ValueError(f"manifest: bad entry for {path!r}")
        files[path] = FileEntry(size=size, sha256=sha, executable=executable)
    manifest = Manifest.from_entries(files)
    if manifest.digest != digest:
        raise ValueError("manifest: digest does not match its files")
    return manifest
