"""What a build answers, and how ``envbuild build`` prints it.

Kept apart from :mod:`envbuild.build.builder` so that the console script's cache-hit
path can print a result without importing the build pipeline.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, NamedTuple

from envbuild.identity import HASH_LABEL as HASH_LABEL  # re-exported

if TYPE_CHECKING:
    from envbuild.lock.model import Drift


class BuildResult(NamedTuple):
    """What ``build`` did: the image, its hash, whether it was a cache hit.

    A named tuple (``result._replace(digest=...)`` makes a changed copy), not a
    dataclass: the console script's cache-hit path prints one, and importing
    :mod:`dataclasses` would cost a tenth of that whole process.
    """

    image: str
    hash: str
    cached: bool
    id: str
    seconds: float
    tags: tuple[str, ...] = ()
    tier: str = ""  # who answered: "local", "registry" or "built" (derived when empty)
    digest: str = ""  # the registry digest, when a registry answered or was pushed to
    base_drift: Drift | None = None  # built on a base that moved from its lock (allowed)

    @property
    def answered_by(self) -> str:
        """Which tier answered: ``local`` (the engine), ``registry`` or ``built``."""
        return self.tier or ("local" if self.cached else "built")

    def to_json(self) -> dict[str, object]:
        """The ``--json`` shape: image, hash, cached, tier, id, seconds, tags (and digest,
        and ``base_drift``: ``{"image", "locked", "actual"}`` for an image built on a base
        that moved from its lock)."""
        data: dict[str, object] = {
            "image": self.image,
            "hash": self.hash,
            "cached": self.cached,
            "tier": self.answered_by,
            "id": self.id,
            "seconds": round(self.seconds, 3),
            "tags": list(self.tags),
        }
        if self.digest:
            data["digest"] = self.digest
        if self.base_drift is not None:
            data["base_drift"] = self.base_drift.to_json()
        return data


def report(result: BuildResult, *, as_json: bool, quiet: bool) -> None:
    """Print a build's result as ``envbuild build`` does: the image (or JSON) to stdout."""
    if as_json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n")
        return
    if not quiet:
        what = {
            "local": "cached",
            "registry": f"pulled from the registry in {result.seconds:.1f}s",
        }.get(result.answered_by, f"built in {result.seconds:.1f}s")
        if result.base_drift is not None:
            what += f", on the drifted base {result.base_drift.actual[:19]}"
        sys.stderr.write(f"envbuild: {result.image} ({what})\n")
    sys.stdout.write(result.image + "\n")
