"""The content hash: sha256 of a canonical description of the build context.

What is hashed (the *manifest*, :func:`manifest`):

* ``hash_schema`` — bumped whenever what is hashed, or what rendering means,
  changes, so an upgraded envbuild never reuses an image it would now build
  differently;
* every context file (the Dockerfile included) by relative POSIX path, its
  executable bit and its sha256, sorted by path;
* the base image as declared and its identity (``base_pin``): for a locked
  environment its pin (registry digest or image ID, known offline from the
  lock); for an unlocked base image, the image ID the engine holds for that
  reference (``engine-id:…``, asked by the caller,
  :func:`envbuild.build.builder.base_identity`, and handed to render), so
  a retagged or re-pulled base is another hash; a base Dockerfile by its text;
* the target platform and the build arguments.

What is not: mtimes, absolute paths, the order of keys or comments in
``env.toml``, the user, the machine. Hashing itself never touches the engine.

The schema stayed 2 when unlocked bases gained an identity: the manifest's
layout is unchanged, locked hashes are unchanged, and every unlocked hash now
has a ``base_pin``, which no earlier hash of an unlocked base had.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from envbuild.render.context import BuildContext

HASH_SCHEMA = 2  # 2: the base pin of the lock is hashed


def manifest(
    context: BuildContext,
    *,
    platform: str,
    build_args: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The canonical, JSON-ready description of what the image is built from."""
    return {
        "hash_schema": HASH_SCHEMA,
        "platform": platform,
        "base": context.base_image,
        "base_pin": context.base_pin,
        "build_args": dict(sorted((build_args or {}).items())),
        "files": [
            {"path": path, "executable": item.executable, "sha256": item.sha256}
            for path, item in sorted(context.files.items())
        ],
    }


def canonical_json(data: Mapping[str, Any]) -> bytes:
    """Canonical bytes: sorted keys, no whitespace, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_hash(
    context: BuildContext,
    *,
    platform: str,
    build_args: Mapping[str, str] | None = None,
) -> str:
    """The full sha256 hex digest naming the image ``context`` builds."""
    data = manifest(context, platform=platform, build_args=build_args)
    return hashlib.sha256(canonical_json(data)).hexdigest()
