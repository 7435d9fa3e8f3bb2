"""The one type of envbuild's progress callbacks.

A ``Log`` receives one line of text (no trailing newline) per call: build
output, progress messages, warnings. Every stage takes one; the CLI passes a
writer to stderr, the library API a no-op or the caller's own function.
"""

from __future__ import annotations

from collections.abc import Callable

Log = Callable[[str], None]


def quiet(line: str) -> None:
    """A :data:`Log` that drops every line."""


__all__ = ["Log", "quiet"]
