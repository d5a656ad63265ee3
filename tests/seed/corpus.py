"""The seed's documented command lines (tests/fixtures/seed_commands.txt), parsed."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "seed_commands.txt"
_LINE = re.compile(
    r"^(?P<command>.+?)  # (?P<sources>[^;]+); seed: (?P<seed>.+?); here: (?P<here>.+)$"
)


@dataclass(frozen=True)
class SeedLine:
    command: str  # the shell line, verbatim from the seed's docs
    sources: str  # "docs/EXAMPLES.md:7, ..."
    seed: str  # "ok ..." or "rejected (why)"
    here: str  # "ok" or "unsupported (why)"

    @property
    def runs_here(self) -> bool:
        return self.here.startswith("ok")

    @property
    def seed_ok(self) -> bool:
        return self.seed.startswith("ok")

    @property
    def until_ctrl_c(self) -> bool:
        return "Ctrl-C" in self.seed or "interactive" in self.seed

    @property
    def runctl_words(self) -> list[str]:
        """The runctl invocation's words, variables and shell around it stripped."""
        text = self.command.split("$(", 1)[1] if "$(" in self.command else self.command
        text = re.split(r"\s(?:\||\|\||2>&1)(?:\s|$)|\)$", text)[0]
        return shlex.split(text.replace("$(", "").rstrip(")"))

    @property
    def command_path(self) -> str:
        """ "aws ebs create", "checkpoint resume", "top"."""
        words = self.runctl_words[1:]
        path = []
        for word in words:
            if word.startswith("-") or not re.fullmatch(r"[a-z][a-z0-9-]*", word):
                break
            path.append(word)
            if path[0] not in GROUPS or (len(path) == 2 and path[:2] != ["aws", "ebs"]):
                break
            if len(path) == 3:
                break
        return " ".join(path)

    @property
    def flags(self) -> list[str]:
        """Options the line gives runctl (not the script's, after `--`)."""
        words = self.runctl_words
        if "--" in words:
            words = words[: words.index("--")]
        if self.command_path in ("local", "exec"):  # everything after SCRIPT is the script's
            words = words[: next((i for i, w in enumerate(words) if w.endswith(".py")), None)]
        return [w.split("=", 1)[0] for w in words if w.startswith("-") and " " not in w]


GROUPS = {"aws", "runpod", "checkpoint", "s3", "resources", "workflow", "config", "docker"}


def load() -> list[SeedLine]:
    lines = []
    for raw in FIXTURE.read_text().splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        match = _LINE.match(raw)
        assert match, f"malformed fixture line: {raw}"
        lines.append(SeedLine(**match.groupdict()))
    return lines
