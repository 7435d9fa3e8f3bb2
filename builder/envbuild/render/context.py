"""The materialised build context: a Dockerfile and the files it copies."""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ContextFile:
    """One file of a build context: its bytes and whether it is executable."""

    data: bytes
    executable: bool = False

    @functools.cached_property
    def sha256(self) -> str:
        """The file's content digest (computed once: a bundled tool is tens of MB)."""
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class BuildContext:
    """Everything ``docker build`` receives, by relative POSIX path."""

    files: Mapping[str, ContextFile]
    base_image: str | None = None
    # The base as `envbuild lock` pinned it ("digest:sha256:..." or
    # "image-id:sha256:..."): how the base actually used enters the hash.
    base_pin: str | None = None

    @property
    def dockerfile(self) -> str:
        """The rendered Dockerfile text."""
        return self.files["Dockerfile"].data.decode("utf-8")

    def write(self, dest: Path) -> None:
        """Write the context into ``dest`` (created if missing; must be empty)."""
        dest.mkdir(parents=True, exist_ok=True)
        if any(dest.iterdir()):
            raise FileExistsError(f"{dest} is not empty")
        for rel, item in self.files.items():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(item.data)
            os.chmod(target, 0o755 if item.executable else 0o644)  # noqa: PTH101
