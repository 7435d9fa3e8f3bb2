"""The cache lookup: is the image of a hash in the engine? One function for every caller.

``envbuild build`` (:func:`envbuild.build.builder.build`) and the console
script's fast path (:mod:`envbuild.cli.launcher`) both answer a cache hit
through :func:`lookup`: one ``inspect`` of the hash tag, the hit rule of
:mod:`envbuild.identity`, and on a hit the version tag moved to the
image found (a second request only when it named another image), so that
``<prefix>/<name>:<version>`` always names the image the last answer returned.

Cheap to import (no click, no Jinja, no docker SDK, no :mod:`dataclasses`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, Protocol

from envbuild.identity import hash_tag, is_drifted, is_hit, version_tag


class _Image(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def tags(self) -> tuple[str, ...]: ...

    @property
    def labels(self) -> Mapping[str, str]: ...


class ImageStore(Protocol):
    """What the lookup needs of the engine: inspect an image, tag one."""

    def inspect_image(self, ref: str) -> _Image | None:
        """The image ``ref`` names, or ``None``."""
        ...

    def tag(self, image_id: str, ref: str) -> None:
        """Point ``ref`` at ``image_id``."""
        ...


class Hit(NamedTuple):
    """The image of a hash, found in the engine."""

    image: str  # the hash tag
    id: str
    tags: tuple[str, ...]  # the hash tag and the version tag, both naming ``id``


def lookup(
    store: ImageStore,
    *,
    prefix: str,
    name: str,
    version: int,
    digest: str,
    drifted: bool = False,
) -> Hit | None:
    """The image of ``digest`` if the engine holds it, else ``None``.

    A hit moves ``<prefix>/<name>:<version>`` to the image found, unless that
    image was built on a drifted base (``drifted``, or its labels say so): it
    never passes for the version's image.
    """
    tag = hash_tag(prefix, name, digest)
    info = store.inspect_image(tag)
    if info is None or not is_hit(info, digest):
        return None
    if drifted or is_drifted(info):
        return Hit(tag, info.id, (tag,))
    moving = version_tag(prefix, name, version)
    if moving not in info.tags:
        store.tag(info.id, moving)
    return Hit(tag, info.id, (tag, moving))
