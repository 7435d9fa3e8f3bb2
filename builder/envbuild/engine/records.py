"""The engine's records that the cache-hit path reads: :class:`ImageInfo` and the frame kinds.

Kept apart from :mod:`envbuild.engine.protocols` (which re-exports them) and
free of :mod:`dataclasses`: the console script's cache-hit path inspects one
image and prints its answer, and importing ``dataclasses`` (with ``inspect``)
and the protocol family would cost a tenth of that whole process.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

#: Frame kinds of a container's demultiplexed output.
STDOUT = 1
STDERR = 2

_NO_LABELS: Mapping[str, str] = MappingProxyType({})


class ImageInfo(NamedTuple):
    """What envbuild needs to know of an image in the local engine."""

    id: str
    tags: tuple[str, ...] = ()
    labels: Mapping[str, str] = _NO_LABELS
    size: int = 0
    created: str = ""
    repo_digests: tuple[str, ...] = ()  # "repo@sha256:..." the image has in registries
    variables: tuple[str, ...] = ()  # the names of the variables the image sets (Config.Env)


__all__ = ["STDERR", "STDOUT", "ImageInfo"]
