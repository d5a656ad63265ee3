"""Progress bars read well: `logs -f` on a terminal shows a Lightning bar moving, and reading
a log (`logs`, `-n`, `--json`, a pipe) shows each bar as it last looked, one short line."""

from __future__ import annotations

import importlib.util
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import CLI, REPO, job_id_of, need
from tests.frameworks.conftest import need_framework

pytestmark = pytest.mark.slow

TQDM_JOB = """\
import time
from tqdm import tqdm

print("training", flush=True)
for _ in tqdm(range(400), mininterval=0, ncols=80):  # a redraw per item: one 30 KB "line"
    time.sleep(0.001)
print("finished", flush=True)
"""
AGENT = REPO / "src" / "runctl" / "agent" / "runctl_agent.py"
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def test_tail_of_a_tqdm_job_is_two_short_lines(cli: CLI, fw_project: Path) -> None:
    need(None if importlib.util.find_spec("tqdm") else "tqdm is not installed")
    (fw_project / "bar.py").write_text(TQDM_JOB)
    job = job_id_of(cli("run", "--name", "bar", "bar.py", cwd=fw_project))
    assert cli("wait", job).returncode == 0, cli("logs", job).stdout
    job_dir = Path(json.loads(cli("status", job, "--json").stdout)["job_dir"])
    raw = (job_dir / "log").read_bytes()
    assert max(len(line) for line in raw.split(b"\n")) > 8000  # what tqdm really wrote

    # The host sends only each line's last state, not the 30 KB of redraws.
    sent = subprocess.run([sys.executable, str(AGENT), "tail", "--job-dir", str(job_dir),
                           "--last-lines", "2"], capture_output=True, check=True)  # fmt: skip
    assert len(sent.stdout) < 400, sent.stdout
    tail = cli("logs", job, "-n", "2").stdout.splitlines()
    assert len(tail) == 2 and tail[1] == "finished", tail
    assert "400/400" in tail[0] and len(tail[0]) < 200, tail
    whole = cli("logs", job).stdout
    assert whole.splitlines() == ["training", tail[0], "finished"], whole[:500]
    as_json = json.loads(cli("logs", job, "--json").stdout)["log"]
    assert as_json.splitlines() == ["training", tail[0], "finished"], as_json[:500]


def _read_terminal(argv: list[str], timeout: float) -> list[tuple[float, bytes]]:
    """Run ``argv`` with stdout on a pseudo-terminal; the chunks it wrote, with arrival times."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(argv, stdout=secondary, stderr=subprocess.DEVNULL)
    os.close(secondary)
    chunks: list[tuple[float, bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(primary, 65536)
            except OSError:  # EIO: the terminal's other end closed
                break
            if not data:
                break
            chunks.append((time.monotonic(), data))
    finally:
        proc.kill()
        proc.wait()
        os.close(primary)
    return chunks


def test_lightning_progress_moves_in_logs_follow(cli: CLI, fw_project: Path) -> None:
    need_framework("lightning")
    job = job_id_of(cli("run", "--name", "bar-pl", "train_lightning.py", "--", "--steps", "20",
                        "--save-every", "100", "--sleep", "0.3", cwd=fw_project))  # fmt: skip
    chunks = _read_terminal([sys.executable, "-m", "runctl", "logs", job, "-f"], timeout=180)
    stream = b"".join(data for _, data in chunks)
    assert b"\r" in stream, stream[-2000:]  # the bar is redrawn in place on a terminal
    assert b"\x1b[?25l" not in stream  # and the user's cursor is never hidden

    seen = b""
    started = None
    frames: dict[int, float] = {}  # bar position -> when it first showed
    for at, data in chunks:
        seen += data
        text = ANSI.sub("", seen.decode(errors="replace"))
        if started is None and "STEP 1\n" in text.replace("\r", "\n"):
            started = at
        if "DONE at step 20" in text:
            break
        # rich's bar: "Epoch 1/-2 ━━━━━━     3/8 0:00:01 • ..." (8 batches an epoch, 4 in the last)
        for epoch, batch, per in re.findall(r"Epoch (\d+)/-?\d+ [^\r\n]*? (\d+)/(\d+) ", text):
            frames.setdefault(int(epoch) * int(per) + int(batch), at)
    assert started is not None, stream[-2000:]
    moving = sorted(n for n in frames if 0 < n < 20)
    assert len(moving) >= 3, (frames, stream[-2000:])  # several states while it trained
    assert frames[moving[0]] - started < 10, (started, frames)

    shown = cli("logs", job).stdout  # read back: plain text, each bar line as it last looked
    assert "\r" not in shown and "\x1b" not in shown, shown[-1000:]
    # The bar of the last epoch (4 batches left of 20 steps), once, as it last looked.
    assert re.search(r"^Epoch 2/-?\d+ .* 4/4 ", shown, re.MULTILINE), shown[-1000:]


def test_bars_split_across_reads_still_show_their_last_state() -> None:
    """The log arrives in arbitrary chunks: a line, a CR or an escape code may be cut."""
    import io

    from runctl.cli.logtext import CollapsedWriter, LiveWriter

    raw = b"start\n 10%|#  | 1/10\r\x1b[?25l 20%|## | 2/10\r\x1b[2K\x1b[1mloss\x1b[0m 0.5\r\nend"
    for size in (1, 2, 3, 7, len(raw)):
        plain, coloured, live = io.BytesIO(), io.BytesIO(), io.BytesIO()
        writers = (CollapsedWriter(plain), CollapsedWriter(coloured, keep_colour=True),
                   LiveWriter(live))  # fmt: skip
        for start in range(0, len(raw), size):
            for writer in writers:
                writer.write(raw[start : start + size])
        for writer in writers:
            writer.close()
        assert plain.getvalue() == b"start\nloss 0.5\nend"
        assert coloured.getvalue() == b"start\n\x1b[1mloss\x1b[0m 0.5\nend"
        assert live.getvalue() == raw.replace(b"\x1b[?25l", b"")
