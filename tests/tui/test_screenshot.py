"""The committed screenshot script still renders the dashboard over its demo state."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_screenshot_script_writes_an_svg_of_every_pane(tmp_path: Path) -> None:
    out = tmp_path / "top.svg"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "top_screenshot.py"), str(out)],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    svg = out.read_text()
    assert svg.startswith("<svg")
    for text in ("Machines", "Jobs", "Utilisation", "Costs", "g5.xlarge", "RTX&#160;3090"):
        assert text in svg, text
    assert (REPO / "docs" / "top.svg").is_file()
