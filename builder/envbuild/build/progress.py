"""A progress display for BuildKit's plain build log.

On a terminal, each build step becomes one line that shows the step's latest
output while it runs and its time (or "cached") when it is done. Elsewhere
(CI logs, pipes) the plain log passes through unchanged: it is the record.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable

_STEP = re.compile(r"^#(\d+) \[(?:[^\]]*?\s)?(\d+/\d+)\] (.*)$")
_DONE = re.compile(r"^#(\d+) DONE (\d+(?:\.\d+)?s)$")
_CACHED = re.compile(r"^#(\d+) CACHED$")
_ERROR = re.compile(r"^#(\d+) ERROR")
_OUTPUT = re.compile(r"^#(\d+) \d+\.\d+ (.*)$")


class BuildProgress:
    """Turns plain BuildKit log lines into a compact live display on a terminal."""

    def __init__(
        self, write: Callable[[str], None], *, tty: bool, width: int | None = None
    ) -> None:
        self.write = write
        self.tty = tty
        self.width = width or shutil.get_terminal_size((100, 20)).columns
        self.steps: dict[str, str] = {}
        self.live: str | None = None  # the step whose status line is on screen

    def _fit(self, text: str) -> str:
        return text if len(text) <= self.width - 1 else text[: self.width - 2] + "…"

    def _finish(self, step: str, mark: str, note: str) -> None:
        title = self.steps.pop(step, None)
        if title is None:
            return
        self.write("\r\x1b[K" + self._fit(f"{mark} {title}  {note}") + "\n")
        if self.live == step:
            self.live = None

    def __call__(self, line: str) -> None:
        if not self.tty:
            self.write(line + "\n")
            return
        if m := _STEP.match(line):
            step, index, instruction = m.groups()
            self.steps[step] = f"[{index}] {' '.join(instruction.split())}"
            self.live = step
            self.write("\r\x1b[K" + self._fit(f"… {self.steps[step]}"))
        elif m := _DONE.match(line):
            self._finish(m.group(1), "✔", m.group(2))
        elif m := _CACHED.match(line):
            self._finish(m.group(1), "✔", "cached")
        elif m := _ERROR.match(line):
            self._finish(m.group(1), "✘", "failed")
        elif (m := _OUTPUT.match(line)) and m.group(1) in self.steps:
            self.live = m.group(1)
            status = f"… {self.steps[m.group(1)]} │ {m.group(2).strip()}"
            self.write("\r\x1b[K" + self._fit(status))
        elif line.strip() and not line.startswith(("#", "-----", " > ")):
            self.write("\r\x1b[K" + line + "\n")  # envbuild's own messages
