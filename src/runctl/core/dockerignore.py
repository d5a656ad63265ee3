""".dockerignore rules, evaluated the way the docker CLI does (moby/patternmatcher).

runctl sends ``docker build`` its context as a tar of the files sync would send (see
``core/docker.py``), and docker applies no ``.dockerignore`` to a context read from stdin, so
runctl applies it while writing the tar. Semantics: one pattern a line, ``#`` starts a
comment, patterns are relative to the context root (a leading ``/`` is dropped), ``*`` and
``?`` never match ``/``, ``**`` matches any number of directories, ``!`` re-includes, the
last matching pattern decides, and a path is excluded when it or a directory above it
matches.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

_REGEX_SPECIALS = frozenset(".+()|{}$^")


def read(path: Path) -> list[str]:
    """The patterns of an ignore file ([] when it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _compile(pattern: str) -> re.Pattern[str]:
    out = "^"
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*" and pattern[i : i + 1] == "*":
            i += 1
            if pattern[i : i + 1] == "/":
                i += 1  # "**/" is "**"
            out += ".*" if i >= len(pattern) else "(.*/)?"
        elif ch == "*":
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "\\":
            out += re.escape(pattern[i]) if i < len(pattern) else "\\\\"
            i += 1
        elif ch in "[]":
            out += ch
        elif ch in _REGEX_SPECIALS:
            out += "\\" + ch
        else:
            out += ch
    try:
        return re.compile(out + "$", re.DOTALL)
    except re.error:
        return re.compile(re.escape(pattern) + "$")  # docker refuses these; never match


class DockerIgnore:
    """``excluded(rel)``: whether docker would leave ``rel`` (a POSIX path) out of a context."""

    def __init__(self, lines: list[str]) -> None:
        self.patterns: list[tuple[bool, re.Pattern[str]]] = []
        for line in lines:
            text = line.strip()
            negate = text.startswith("!")
            text = posixpath.normpath(text[1:].strip() if negate else text)
            if len(text) > 1 and text.startswith("/"):
                text = text.lstrip("/")
            if text and text != ".":
                self.patterns.append((negate, _compile(text)))

    def excluded(self, rel: str) -> bool:
        parents = rel.split("/")[:-1]
        prefixes = ["/".join(parents[: i + 1]) for i in range(len(parents))]
        matched = False
        for negate, regex in self.patterns:
            if negate != matched:
                continue  # only an exclusion can change "kept", only a negation "excluded"
            if regex.match(rel) or any(regex.match(p) for p in prefixes):
                matched = not negate
        return matched
