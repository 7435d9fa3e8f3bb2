"""What the pipeline read: the files loading and rendering an environment opened.

Loading a definition (every ``env.toml`` of the ``extends`` chain, the base
Dockerfiles it names), reading its locks and rendering its context note each
file they read here, with the sha256 of the bytes read (or that it was
absent). Inside :func:`recording` the notes are collected; outside, noting
costs nothing. The memo (:mod:`envbuild.cache.memo`) keeps such a record with
the hash it led to, and answers that hash again only while every file still
has the recorded digest: the files a render depends on are the ones it read,
not a second copy of the rules that decide which ones those are.

Standard library only: every stage may import it.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Reads:
    """The files one recording saw: absolute path -> sha256 hex, ``None`` if absent."""

    files: dict[str, str | None] = field(default_factory=dict)
    # Why what was read does not determine the result (then nothing is memoised).
    refused: str | None = None

    def add(self, path: str, digest: str | None) -> None:
        """Note one read; the same file read twice with other content refuses the record."""
        if path in self.files and self.files[path] != digest:
            self.refused = f"{path} changed while it was being read"
        self.files[path] = digest

    def merge(self, other: Reads) -> None:
        """Add every read of ``other`` (and its refusal, if any)."""
        for path, digest in other.files.items():
            self.add(path, digest)
        self.refused = self.refused or other.refused


_ACTIVE: ContextVar[tuple[Reads, ...]] = ContextVar("envbuild_reads", default=())


def _key(path: Path) -> str:
    return str(Path(path).absolute())


def note(path: Path, data: bytes | None, *, digest: str | None = None) -> None:
    """Note that ``path`` was read as ``data`` (``None``: it did not exist).

    ``digest`` (sha256 hex) may stand in for ``data`` when the caller has it.
    """
    active = _ACTIVE.get()
    if not active:
        return
    if digest is None and data is not None:
        digest = hashlib.sha256(data).hexdigest()
    for reads in active:
        reads.add(_key(path), digest)


def refuse(reason: str) -> None:
    """Say that the result depends on more than the files read (e.g. a tool found on PATH)."""
    for reads in _ACTIVE.get():
        reads.refused = reads.refused or reason


@contextlib.contextmanager
def recording() -> Iterator[Reads]:
    """Collect the reads made inside the ``with`` block (recordings nest)."""
    reads = Reads()
    token = _ACTIVE.set((*_ACTIVE.get(), reads))
    try:
        yield reads
    finally:
        _ACTIVE.reset(token)
