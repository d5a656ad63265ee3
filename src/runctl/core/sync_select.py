"""Choose which files of a project tree are synced, and fingerprint them cheaply.

Syncing a project to a remote host happens in two steps:

1. **Selection** (:func:`select_files`): walk the tree and keep the regular files that git
   would consider part of the working tree. ``.gitignore`` files at every level,
   ``.git/info/exclude`` and runctl's own ``.runctlignore`` files (same syntax, same nesting,
   higher precedence than ``.gitignore`` in the same directory) are honoured. ``.git/`` and
   ``.runctl/`` are never synced. Caller-supplied ``includes`` (gitignore-style patterns relative
   to the root) force paths back in, e.g. a data directory that is gitignored but needed by the
   job. Ignored directories are pruned, so an ignored ``.venv`` or ``node_modules`` costs one
   directory entry, not a walk of thousands of files. Secret-looking paths (SSH keys, cloud
   credentials, shell history, ``.env``) are left out whatever the ignore files say, and only
   an include that names them brings them back (:func:`secret_keyword`).

The tree itself is the project the script belongs to (:func:`find_project`): the nearest
directory with ``.git``, else with a marker file, never the home directory, a directory above
it, ``/`` or a system directory (:func:`never_roots`).

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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Imported where patterns are compiled: `jobs`, `status`, `wait` import this module
    # (through core.jobs) but never sync, and pathspec alone costs ~30 ms of start-up.
    import pathspec

__all__ = [
    "IGNORE_FILE_NAMES",
    "PROJECT_MARKERS",
    "SKIPPED_DIR_NAMES",
    "FileEntry",
    "Manifest",
    "ProjectRoot",
    "Selection",
    "build_manifest",
    "collect_files",
    "diff_manifests",
    "find_project",
    "find_project_root",
    "manifest_from_json",
    "manifest_to_json",
    "never_roots",
    "secret_keyword",
    "select_files",
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
# Never a project root (see never_roots): system directories whose .git (etckeeper) or stray
# marker file must not turn them into a tree to upload. Deeper directories still qualify.
_SYSTEM_DIRS: tuple[str, ...] = (
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
    "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr",
    "/var", "/var/tmp", "/Users", "/Volumes", "/private", "/private/tmp", "/private/var",
    "/System", "/Library",
)  # fmt: skip

# Secret-bearing paths: never synced, whatever the ignore files say, unless an include that
# *names* them selects them. Each rule has a keyword; an include "names" a path when its text
# contains the keyword of a rule hitting the path or one of its parent directories, so
# `--include .env` or `--include .aws/credentials` send those, while a catch-all such as
# `--include '*'` does not. .npmrc and .pypirc hold registry tokens and jobs never need them.
_SECRET_DIR_NAMES = frozenset({".ssh", ".aws", ".gnupg", ".kube", ".azure", ".password-store"})
_SECRET_FILE_NAMES = frozenset(
    {".netrc", "_netrc", ".pgpass", ".git-credentials", ".pypirc", ".npmrc", ".vault-token",
     ".s3cfg", ".boto", ".env", "rclone.conf", ".zhistory", ".histfile"}
)  # fmt: skip
_SECRET_SUFFIXES: tuple[str, ...] = (".pem", ".key", ".p12", ".pfx", ".ppk", "_history")
# OpenSSH private keys (id_rsa, id_ed25519_sk, id_rsa_work); not their .pub halves, and not
# code such as id_rsa_check.py (a dot ends the match).
_SSH_KEY_RE = re.compile(r"id_(?:rsa|dsa|ecdsa|ed25519|xmss)(?:_sk)?(?:[-_][\w@-]*)?")
# (file name, directory it must sit in, keyword)
_SECRET_IN_DIR: tuple[tuple[str, str, str], ...] = (
    ("config.json", ".docker", ".docker"),
    ("token", "huggingface", "huggingface"),
    ("hosts.yml", "gh", "hosts.yml"),
)

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


def _homes() -> list[str]:
    """The user's home directories: ``$HOME`` and the password database's entry."""
    homes: list[str] = []
    env_home = os.environ.get("HOME")
    if env_home:
        homes.append(env_home)
    with contextlib.suppress(KeyError, ImportError):
        import pwd

        homes.append(pwd.getpwuid(os.getuid()).pw_dir)
    return [os.path.realpath(h) for h in homes if h]


def never_roots() -> frozenset[str]:
    """Directories that are never a project, whatever ``.git`` or marker file they hold.

    A dotfiles repository or a stray ``requirements.txt`` in the home directory, an etckeeper
    ``/etc/.git``, a marker dropped in ``/tmp``: treating any of those as "the project" would
    upload keys, credentials and other people's files. So the home directories, every
    directory above them, ``/`` and the well-known system directories never count.
    """
    roots = {os.path.realpath(d) for d in _SYSTEM_DIRS} | set(_SYSTEM_DIRS)
    for home in _homes():
        roots.add(home)
        roots.update(str(p) for p in Path(home).parents)
    return frozenset(roots)


@dataclass(frozen=True)
class ProjectRoot:
    """Where a script's project starts, and why.

    ``kind`` is ``"git"`` or ``"marker"`` when a real project was found; ``"none"`` when no
    directory above the script qualifies, in which case ``path`` is the script's directory
    and only the script itself should be synced.
    """

    path: Path
    kind: str


def find_project(script: Path) -> ProjectRoot:
    """Find the project ``script`` belongs to (see :func:`find_project_root`)."""
    resolved = script.resolve()
    start = resolved if resolved.is_dir() else resolved.parent
    excluded = never_roots()
    candidates = [d for d in (start, *start.parents) if str(d) not in excluded]
    # A repository boundary is the strongest signal, so it is searched for over the whole
    # ancestry before any marker file is considered.
    for directory in candidates:
        if os.path.lexists(directory / ".git"):
            return ProjectRoot(directory, "git")
    for directory in candidates:
        if any((directory / marker).exists() for marker in PROJECT_MARKERS):
            return ProjectRoot(directory, "marker")
    return ProjectRoot(start, "none")


def find_project_root(script: Path) -> Path:
    """Return the directory whose tree should be synced to run ``script``.

    The nearest ancestor (starting at the script's own directory) that contains ``.git`` wins;
    failing that, the nearest one containing a project marker (:data:`PROJECT_MARKERS`);
    failing that, the script's directory. Directories from :func:`never_roots` (the home
    directory, ``/``, system directories) are skipped. Symlinks are resolved first so the
    answer does not depend on how the script was reached.
    """
    return find_project(script).path


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


def _compile(lines: Sequence[str]) -> "pathspec.GitIgnoreSpec":
    """Compile gitignore lines, dropping the ones git would also silently ignore."""
    import pathspec

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


def secret_keyword(rel: str, name: str, is_dir: bool) -> str | None:
    """The keyword of the secret rule ``rel`` hits (None: not secret-looking).

    ``rel`` is the path relative to the walk root and ``name`` its last part; an include
    must contain the keyword to bring the path back (see the rules above).
    """
    if is_dir:
        if name in _SECRET_DIR_NAMES or name == ".env":
            return name
        if name == "gcloud" and _parent_name(rel) == ".config":
            return "gcloud"  # the gcloud SDK's credentials and tokens
        return None
    if name in _SECRET_FILE_NAMES:
        return name
    if name.startswith(".env."):
        return ".env"
    if name.endswith(_SECRET_SUFFIXES):
        return next(s for s in _SECRET_SUFFIXES if name.endswith(s))
    if name.startswith("id_") and _SSH_KEY_RE.fullmatch(name):
        return "id_"
    if name.startswith("credentials") and _parent_name(rel) == ".terraform.d":
        return ".terraform.d"
    for file_name, dir_name, keyword in _SECRET_IN_DIR:
        if name == file_name and _parent_name(rel) == dir_name:
            return keyword
    return None


def _path_secret_keywords(rel: str) -> tuple[str, ...]:
    """The keywords of the secret rules hitting file ``rel`` or any directory above it."""
    parts = rel.split(os.sep)
    found = []
    for index, part in enumerate(parts):
        keyword = secret_keyword("/".join(parts[: index + 1]), part, index < len(parts) - 1)
        if keyword is not None:
            found.append(keyword)
    return tuple(found)


def _parent_name(rel: str) -> str:
    parts = rel.rstrip("/").split("/")
    return parts[-2] if len(parts) > 1 else ""


@dataclass(frozen=True)
class Selection:
    """The files to sync, and what the secret rules kept out.

    ``secrets`` lists paths that would have been synced but for the secret rules: files, and
    directories (ending in "/") that were not entered at all.
    """

    files: list[str]
    secrets: list[str]


class _SecretIncludes:
    """The includes that name a secret path, per set of secret keywords (cached)."""

    def __init__(self, includes: Sequence[str]) -> None:
        self.includes = [p for p in includes if p.strip()]
        self.cache: dict[tuple[str, ...], _Includes | None] = {}

    def naming(self, keywords: tuple[str, ...]) -> "_Includes | None":
        if keywords not in self.cache:
            named = [p for p in self.includes if any(k in p for k in keywords)]
            self.cache[keywords] = _Includes(named) if named else None
        return self.cache[keywords]


def collect_files(root: Path, includes: Sequence[str] = ()) -> list[str]:
    """Return the sorted POSIX paths, relative to ``root``, of the regular files to sync.

    Shorthand for ``select_files(root, includes).files``.
    """
    return select_files(root, includes).files


def select_files(
    root: Path, includes: Sequence[str] = (), *, script: str | None = None,
    script_only: bool = False,
) -> Selection:  # fmt: skip
    """Select the files to sync below ``root`` (sorted POSIX paths relative to it).

    Honours nested ``.gitignore`` / ``.runctlignore`` files and ``.git/info/exclude`` with git
    semantics; ``includes`` (gitignore syntax, relative to ``root``) force paths in even when
    ignored. ``.git`` and ``.runctl`` are always skipped. Secret-looking paths (keys,
    credentials, shell history, ``.env``) are left out unless an include names them.
    Symlinked directories are not followed; a symlinked file is kept only if it resolves to a
    regular file inside ``root``. Sockets, FIFOs and device nodes are skipped.

    ``script`` (relative to ``root``) is always selected: the user named it. With
    ``script_only`` nothing else is, apart from what ``includes`` select (a script outside
    any project).
    """
    root_real = os.path.realpath(root)
    root_prefix = root_real.rstrip(os.sep) + os.sep
    forced = _Includes(includes) if includes else None
    secret_includes = _SecretIncludes(includes)

    root_lines: list[str] = []
    exclude_path = _info_exclude_path(root)
    if exclude_path is not None and not script_only:
        # Lowest precedence in git: any .gitignore pattern overrides it, so it comes first.
        root_lines.extend(_read_lines(exclude_path))

    out: list[str] = []
    secrets: list[str] = []
    # (absolute dir, dir relative to root ("" or ending "/"), applicable levels, inside an
    # ignored directory that is only being walked for the sake of `includes`, keywords of
    # the secret rules hitting this directory or one above it)
    Frame = tuple[str, str, tuple[_Level, ...], bool, tuple[str, ...]]
    stack: list[Frame] = [(str(root), "", (), script_only, ())]
    while stack:
        directory, rel_dir, levels, in_ignored, secret_above = stack.pop()
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
            link_secret: tuple[str, ...] = ()
            try:
                if entry.is_symlink():
                    # Only files that stay inside the tree: a link to a directory could loop or
                    # pull in an arbitrary tree, and a link outside would ship foreign data.
                    target = os.path.realpath(entry.path)
                    if not target.startswith(root_prefix) or not os.path.isfile(target):
                        continue
                    is_dir = False
                    link_secret = _path_secret_keywords(target[len(root_prefix) :])
                elif entry.is_dir(follow_symlinks=False):
                    is_dir = True
                elif entry.is_file(follow_symlinks=False):
                    is_dir = False
                else:
                    continue  # socket, FIFO, device node
            except OSError:
                continue  # vanished while we looked: nothing to sync

            rel = rel_dir + name
            if rel == script:
                out.append(rel)
                continue
            if in_ignored:
                ignored = True
            else:
                ignored = False
                check_rel, check_name = (rel + "/", name + "/") if is_dir else (rel, name)
                for level in levels:
                    verdict = level.verdict(check_rel, check_name, name)
                    if verdict is not None:
                        ignored = verdict  # deeper ignore files override shallower ones
            keyword = secret_keyword(rel, name, is_dir)
            secret = (*secret_above, keyword) if keyword is not None else secret_above
            if link_secret:  # a harmless name linking to a key must not smuggle it out
                secret = (*secret, *link_secret)

            if is_dir:
                reachable = forced is not None and forced.may_match_below(rel)
                towards_script = script is not None and script.startswith(rel + "/")
                if not secret:
                    if not ignored or reachable or towards_script:
                        stack.append((entry.path, rel + "/", levels, ignored, ()))
                elif reachable or towards_script:
                    # Whether an include names a file in here is judged per file, with the
                    # keywords of every secret directory above it (--include id_ed25519).
                    stack.append((entry.path, rel + "/", levels, ignored or not reachable,
                                  secret))  # fmt: skip
                elif not ignored:
                    secrets.append(rel + "/")
            elif secret:
                allow = secret_includes.naming(secret)
                if allow is not None and allow.matches(rel):
                    out.append(rel)
                elif not ignored or (forced is not None and forced.matches(rel)):
                    secrets.append(rel)  # would have been sent but for the secret rules
            elif not ignored or (forced is not None and forced.matches(rel)):
                out.append(rel)

    out.sort()
    secrets.sort()
    return Selection(out, secrets)


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
