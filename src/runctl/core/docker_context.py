"""The build context runctl gives ``docker build``: a tar of the files sync would send.

``docker build DIR`` would send everything in DIR that ``.dockerignore`` does not name, keys
and ``.env`` files included, and a generated ``COPY . /workspace`` would bake them into an
image that is then pushed to a registry. So the context is built here from the sync
selection (``sync_select.select_files``: ignore files, secret rules, ``--include``), with
the project's ``.dockerignore`` applied on top, and streamed to ``docker build -``.

The Dockerfile travels in the tar. A project Dockerfile keeps its place (so its own
``.dockerignore`` rules about it still work); a generated one, or one from outside the
project, goes to ``.runctl/Dockerfile`` (sync never sends ``.runctl/``, so nothing can clash)
with a ``.dockerignore`` that makes docker drop it (and itself) before ``COPY`` sees them.
(The legacy builder does that dropping; BuildKit, reading a tar context, may leave those two
small files in the image: never anything the selection did not hold.)
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from runctl.core.dockerignore import DockerIgnore

RESERVED_DOCKERFILE = ".runctl/Dockerfile"


class Context:
    """The files of one build context; ``write`` streams them as a tar."""

    def __init__(
        self,
        root: Path,
        files: Sequence[str],
        dockerfile: Path | None,
        dockerfile_text: bytes,
        ignore_lines: list[str] | None,
    ) -> None:
        self.root = root
        rel = _inside(root, dockerfile) if dockerfile is not None else None
        self.dockerfile_name = rel or RESERVED_DOCKERFILE
        ignore = DockerIgnore(ignore_lines or [])
        self.files = [f for f in files if not ignore.excluded(f) and f != rel]
        self.extra: list[tuple[str, bytes]] = [(self.dockerfile_name, dockerfile_text)]
        # docker always sends the Dockerfile and .dockerignore, and drops them from the
        # context after reading them when .dockerignore names them: the same here.
        drop = [self.dockerfile_name] if rel is None or ignore.excluded(rel) else []
        if drop or ignore.excluded(".dockerignore"):
            self.files = [f for f in self.files if f != ".dockerignore"]
            names = [".dockerignore", *drop]
            self.extra.append((".dockerignore", "".join(n + "\n" for n in names).encode()))

    def write(self, stream: IO[bytes]) -> None:
        """Write the context to ``stream`` as an uncompressed tar (files vanished are skipped)."""
        with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            # The Dockerfile first: docker sniffs the first 512 bytes of stdin to tell a
            # tar from a bare Dockerfile, and a short plain header passes that test.
            for name, data in self.extra:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
                _anonymous(info)
                tar.addfile(info, io.BytesIO(data))
            for rel in self.files:
                # select_files kept links only when they resolve to a regular file inside
                # the project: the image gets that file's content.
                path = os.path.realpath(self.root / rel)
                try:
                    with open(path, "rb") as fh:
                        info = tar.gettarinfo(arcname=rel, fileobj=fh)
                        _anonymous(info)
                        tar.addfile(info, fh)
                except FileNotFoundError:
                    continue


def _anonymous(info: tarfile.TarInfo) -> None:
    """Owned by root in the image anyway; the local user's name is none of its business.

    Whole-second mtimes: a float one would cost every member a PAX header.
    """
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = int(info.mtime)


def _inside(root: Path, path: Path) -> str | None:
    """``path`` relative to ``root`` as a POSIX path, None when it lies outside."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None
