"""How a job log is written to the user: progress bars collapsed, or live on a terminal.

Progress bars (tqdm, rich) redraw one line with carriage returns and cursor codes; in a log
file a tqdm bar becomes one "line" of thousands of states. Reading a log (``logs``, ``-n``,
``--json``, anything not a terminal) shows each line as it last looked: the text after its
last carriage return, without cursor codes (and without colours unless shown on a terminal).
``logs -f`` on a terminal passes the bytes through, so the bar moves, minus the codes that
hide the cursor (a job stopped mid-bar would leave the user's cursor hidden).
"""

from __future__ import annotations

import re
from typing import BinaryIO

# CSI sequences (ESC [ params final) and the few two-byte escapes rich and tqdm emit.
_CSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[78=>]")
_SGR = re.compile(rb"\x1b\[[0-9;]*m")
_CURSOR_VISIBILITY = re.compile(rb"\x1b\[\?25[lh]")
# A chunk may end inside an escape sequence: hold it back until the rest arrives.
_PARTIAL_ESCAPE = re.compile(rb"\x1b(\[[0-9;?]*[ -/]*)?$")


def last_state(line: bytes, keep_colour: bool = False) -> bytes:
    """What a terminal shows for one line (without its newline) that was redrawn with CRs."""
    line = line.rstrip(b"\r")
    line = line[line.rfind(b"\r") + 1 :]
    if keep_colour:
        return _CSI.sub(lambda m: m.group(0) if _SGR.fullmatch(m.group(0)) else b"", line)
    return _CSI.sub(b"", line)


class CollapsedWriter:
    """Writes each complete line as it last looked; ``close`` writes the unfinished one."""

    def __init__(self, out: BinaryIO, keep_colour: bool = False, end_line: bool = False) -> None:
        self.out = out
        self.keep_colour = keep_colour
        self.end_line = end_line  # end an unfinished last line, so a prompt starts on its own
        self.pending = b""

    def write(self, data: bytes) -> int:
        lines = (self.pending + data).split(b"\n")
        self.pending = lines.pop()
        if lines:
            self.out.write(b"".join(last_state(x, self.keep_colour) + b"\n" for x in lines))
        return len(data)

    def flush(self) -> None:
        self.out.flush()

    def close(self) -> None:
        """Write the last, unfinished line (a bar still running) as it looks now."""
        if self.pending:
            self.out.write(last_state(self.pending, self.keep_colour))
            self.out.write(b"\n" if self.end_line else b"")
            self.pending = b""
        self.out.flush()


class LiveWriter:
    """Passes a followed log to a terminal as is (bars move), without cursor hide/show."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.pending = b""

    def write(self, data: bytes) -> int:
        size = len(data)
        data = self.pending + data
        partial = _PARTIAL_ESCAPE.search(data[-16:])
        cut = len(data) - (len(partial.group(0)) if partial else 0)
        self.pending = data[cut:]
        self.out.write(_CURSOR_VISIBILITY.sub(b"", data[:cut]))
        return size

    def flush(self) -> None:
        self.out.flush()

    def close(self) -> None:
        if self.pending:
            self.out.write(self.pending)
            self.pending = b""
        self.out.flush()


def log_writer(out: BinaryIO, *, live: bool, terminal: bool) -> CollapsedWriter | LiveWriter:
    """The writer for a log shown on ``out``: live only when following on a terminal."""
    if live and terminal:
        return LiveWriter(out)
    return CollapsedWriter(out, keep_colour=terminal, end_line=True)
