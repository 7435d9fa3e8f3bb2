"""Image identity: how an environment's image is named, labelled and recognised.

The one home of

* the tag scheme: ``<prefix>/<name>:<hash12>`` names exact content and never
  moves; ``<prefix>/<name>:<version>`` names the image last answered for that
  version of the definition, and moves;
* every ``io.envbuild.*`` label key that envbuild writes or reads;
* the cache-hit rule (:func:`is_hit`): an image is the image of a hash iff it
  exists under the hash tag and its hash label holds the full hash (12 hex
  digits are a tag, not a proof).

A top-level module, outside the pipeline's layers like :mod:`envbuild.errors`:
every stage reads its keys (render writes the labels, the engine's runner and
the run layer label containers), and :mod:`envbuild.cache.lookup` applies the
hit rule. Imports nothing beyond the standard library's typing: the console
script's cache-hit path uses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

# -- labels on the images envbuild builds ---------------------------------------
HASH_LABEL = "io.envbuild.hash"  # the full content hash
INPUTS_LABEL = "io.envbuild.inputs"  # the record of the hash's inputs (explain)
NAME_LABEL = "io.envbuild.name"
VERSION_LABEL = "io.envbuild.version"
SCHEMA_LABEL = "io.envbuild.schema"  # the definition's schema
CUDA_LABEL = "io.envbuild.cuda"
BASE_ID_LABEL = "io.envbuild.base.id"  # a base pinned by image ID (no registry digest)
LOCKED_LABEL = "io.envbuild.locked"
REPRODUCIBLE_LABEL = "io.envbuild.reproducible"
REPRODUCIBLE_REASONS_LABEL = "io.envbuild.reproducible.reasons"
# An image built with ``--base-drift=allow`` on another base than its lock pins: both
# identities. Such an image never carries the locked hash, never takes the version
# tag and is never pushed (:func:`is_drifted`).
BASE_DRIFT_LOCKED_LABEL = "io.envbuild.base.drift.locked"  # the pin of the lock
BASE_DRIFT_ACTUAL_LABEL = "io.envbuild.base.drift.actual"  # the image ID built on
# -- labels on other things envbuild makes ---------------------------------------
BASE_RECIPE_LABEL = "io.envbuild.base.recipe"  # a bootstrapped base image
# ... and the archive state it was bootstrapped from (envbuild.lock.model.BaseArchive)
BASE_DISTRIBUTION_LABEL = "io.envbuild.base.distribution"  # "debian" or "ubuntu"
BASE_SUITE_LABEL = "io.envbuild.base.suite"  # e.g. "bookworm"
BASE_MIRROR_LABEL = "io.envbuild.base.mirror"  # the package archive URL
BASE_RELEASE_DATES_LABEL = "io.envbuild.base.release-dates"  # JSON: pocket -> Release Date
RUN_LABEL = "io.envbuild.run"  # containers and networks of a run
NODE_LABEL = "io.envbuild.node"  # a distributed run's container: its node index
OWNER_LABEL = "io.envbuild.owner"  # every container and network: its owner process
CONTAINER_LABEL = "io.envbuild.container"  # a container of the engine's runner (unique)
TEST_LABEL = "io.envbuild.test"  # containers of `envbuild test`
SBOM_LABEL = "io.envbuild.sbom"  # containers of `envbuild packages`


# How the base's identity enters the hash (the manifest's ``base_pin``): a lock's
# pin ("digest:sha256:…" or "image-id:sha256:…"), or for an unlocked base image
# the image ID the engine holds for its reference ("engine-id:sha256:…").
ENGINE_BASE = "engine-id"
# A locked base that drifted, built on anyway (``--base-drift=allow``): the image ID
# the engine held ("drifted-id:sha256:…"), so the hash is never the locked one.
DRIFTED_BASE = "drifted-id"


def repository(prefix: str, name: str) -> str:
    """``<prefix>/<name>``: where every image of the environment ``name`` is tagged."""
    return f"{prefix}/{name}"


def hash_tag(prefix: str, name: str, digest: str) -> str:
    """``<prefix>/<name>:<hash12>``: the tag that names this exact content."""
    return f"{repository(prefix, name)}:{digest[:12]}"


def version_tag(prefix: str, name: str, version: int) -> str:
    """``<prefix>/<name>:<version>``: the moving tag of a definition's version."""
    return f"{repository(prefix, name)}:{version}"


class _Labelled(Protocol):
    @property
    def labels(self) -> Mapping[str, str]: ...


def is_drifted(image: _Labelled) -> bool:
    """Whether ``image`` was built on a drifted base (``--base-drift=allow``)."""
    return BASE_DRIFT_LOCKED_LABEL in image.labels


def is_hit(image: _Labelled | None, digest: str) -> bool:
    """Whether ``image`` (found under the hash tag of ``digest``) is that hash's image."""
    return image is not None and image.labels.get(HASH_LABEL) == digest
