"""A fake engine for unit tests: records calls, builds nothing.

The fakes declare the protocols they stand in for and mypy checks them
(``files`` in pyproject): a protocol method they lack, or one whose signature
drifted, fails the type check, and :mod:`tests.unit.test_runner` fails the
unit suite the same way. Labels are filtered with the engine's own rule
(:func:`envbuild.engine.protocols.label_matches`).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from envbuild.engine.protocols import BuildRequest, Engine, ImageInfo, label_matches
from envbuild.errors import BuildError, EngineError, RegistryError
from envbuild.log import Log

# The base image every fake engine holds unless told otherwise: the base of
# envs/hello and of definitions without [base], unlocked, whose identity (this
# image ID) is part of their hash.
BASE = "debian:bookworm-slim"
BASE_ID = "sha256:" + "ba5e" * 16


def with_base(**images: ImageInfo) -> dict[str, ImageInfo]:
    """An image store holding :data:`BASE` and ``images``."""
    return {BASE: ImageInfo(id=BASE_ID, tags=(BASE,)), **images}


@dataclass
class FakeEngine(Engine):
    """Images are a dict from reference (tag or ID) to :class:`ImageInfo`."""

    images: dict[str, ImageInfo] = field(default_factory=with_base)
    calls: list[tuple[str, str]] = field(default_factory=list)
    fail_build: bool = False
    # A registry behind the engine: "repo:tag" -> (digest, image); a push or pull
    # with ``refuse`` set fails as a registry that refuses the credentials does.
    registry: dict[str, tuple[str, ImageInfo]] = field(default_factory=dict)
    refuse: str | None = None

    def inspect_image(self, ref: str) -> ImageInfo | None:
        self.calls.append(("inspect", ref))
        return self.images.get(ref)

    def build(self, request: BuildRequest, log: Log) -> str:
        self.calls.append(("build", str(request.context_dir)))
        log("#1 [1/1] FROM fake")
        if self.fail_build:
            raise BuildError("the image build failed", step="[1/1] RUN false", step_exit_code=1)
        dockerfile = (request.context_dir / "Dockerfile").read_bytes()
        # Content: the Dockerfile and the labels (the hash label names the base too).
        labels = json.dumps(dict(request.labels), sort_keys=True).encode()
        image_id = "sha256:" + hashlib.sha256(dockerfile + labels).hexdigest()
        self.images[image_id] = ImageInfo(id=image_id, labels=dict(request.labels))
        return image_id

    def tag(self, image_id: str, ref: str) -> None:
        """Point ``ref`` at ``image_id``; each image's ``tags`` list what names it, as the engine's do."""
        self.calls.append(("tag", ref))
        if image_id not in self.images:
            raise EngineError(f"cannot tag {image_id} as {ref}: no such image")
        for name, info in list(self.images.items()):
            if ref in info.tags:  # the tag moves away from the image it named
                self.images[name] = info._replace(tags=tuple(t for t in info.tags if t != ref))
        info = self.images[image_id]
        moved = info._replace(tags=(*info.tags, ref))
        for name, other in list(self.images.items()):
            if other.id == info.id:
                self.images[name] = moved
        self.images[ref] = moved

    def remove_image(self, ref: str) -> None:
        self.calls.append(("remove", ref))
        self.images.pop(ref, None)

    def list_images(self, label: str) -> list[ImageInfo]:
        return [
            info
            for ref, info in self.images.items()
            if ref.startswith("sha256:") and label_matches(info.labels, label)
        ]

    def load_image(self, chunks: Iterable[bytes]) -> tuple[str, ...]:
        """Read a ``docker save`` archive's manifest; each image gets the ID of its config."""
        data = b"".join(chunks)
        self.calls.append(("load", f"{len(data)} bytes"))
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as archive:
                members = {m.name: archive.extractfile(m).read() for m in archive if m.isfile()}  # type: ignore[union-attr]
            manifest = json.loads(members["manifest.json"])
        except (tarfile.TarError, KeyError, ValueError) as exc:
            raise EngineError(f"cannot load the image archive: {exc}") from exc
        loaded: list[str] = []
        for entry in manifest:
            config = members[entry["Config"]]
            image_id = "sha256:" + hashlib.sha256(config).hexdigest()
            labels = json.loads(config).get("config", {}).get("Labels") or {}
            info = ImageInfo(id=image_id, labels=labels, size=len(data))
            self.images[image_id] = info
            for tag in entry.get("RepoTags") or ():
                self.images[tag] = info
                loaded.append(tag)
        return tuple(loaded)

    def push_image(self, ref: str, auth: Mapping[str, str] | None, log: Log) -> str:
        """Copy the image ``ref`` names into :attr:`registry`; its digest is that of its ID."""
        self.calls.append(("push", ref))
        if self.refuse:
            raise RegistryError(f"cannot push {ref}: {self.refuse}")
        info = self.images[ref]
        digest = "sha256:" + hashlib.sha256(info.id.encode()).hexdigest()
        self.registry[ref] = (digest, info)
        repo_digest = f"{ref.rpartition(':')[0]}@{digest}"
        for name, other in list(self.images.items()):
            if other.id == info.id and repo_digest not in other.repo_digests:
                self.images[name] = other._replace(repo_digests=(*other.repo_digests, repo_digest))
        log(f"{ref.rpartition(':')[2]}: digest: {digest} size: 1")
        return digest

    def pull_image(self, ref: str, auth: Mapping[str, str] | None, log: Log) -> None:
        """Copy the image ``repo@digest`` names from :attr:`registry` into the engine."""
        self.calls.append(("pull", ref))
        if self.refuse:
            raise RegistryError(f"cannot pull {ref}: {self.refuse}")
        repo, _, digest = ref.partition("@")
        for tagged, (held, info) in self.registry.items():
            if tagged.rpartition(":")[0] == repo and held == digest:
                have = self.images.get(info.id, info._replace(tags=()))
                if ref not in have.repo_digests:  # as the engine records a pulled digest
                    have = have._replace(repo_digests=(*have.repo_digests, ref))
                self.images[info.id] = self.images[ref] = have
                return
        raise RegistryError(f"cannot pull {ref}: manifest unknown")

    def manifest_digest(self, name: str, reference: str) -> str | None:
        """The registry's API (:class:`envbuild.engine.registry.Manifests`), for any prefix."""
        self.calls.append(("head", f"{name}:{reference}"))
        for tagged, (digest, _) in self.registry.items():
            if tagged.endswith(f"/{name}:{reference}"):
                return digest
        return None


def _conforms() -> Engine:
    """Never called: mypy checks here that the fake is a complete :class:`Engine`."""
    return FakeEngine()
