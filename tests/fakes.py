"""A fake engine for unit tests: records calls, builds nothing."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

from envbuild.engine.docker import BuildRequest, ImageInfo, Log
from envbuild.errors import BuildError


@dataclass
class FakeEngine:
    images: dict[str, ImageInfo] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    fail_build: bool = False

    def inspect_image(self, ref: str) -> ImageInfo | None:
        self.calls.append(("inspect", ref))
        return self.images.get(ref)

    def build(self, request: BuildRequest, log: Log) -> str:
        self.calls.append(("build", str(request.context_dir)))
        log("#1 [1/1] FROM fake")
        if self.fail_build:
            raise BuildError("the image build failed", step="[1/1] RUN false", step_exit_code=1)
        dockerfile = (request.context_dir / "Dockerfile").read_bytes()
        image_id = "sha256:" + hashlib.sha256(dockerfile).hexdigest()
        self.images[image_id] = ImageInfo(id=image_id, labels=dict(request.labels))
        return image_id

    def tag(self, image_id: str, ref: str) -> None:
        """Point ``ref`` at ``image_id``; each image's ``tags`` list what names it, as the engine's do."""
        self.calls.append(("tag", ref))
        for name, info in list(self.images.items()):
            if ref in info.tags:  # the tag moves away from the image it named
                self.images[name] = replace(info, tags=tuple(t for t in info.tags if t != ref))
        info = self.images[image_id]
        moved = replace(info, tags=(*info.tags, ref))
        for name, other in list(self.images.items()):
            if other.id == info.id:
                self.images[name] = moved
        self.images[ref] = moved

    def remove_image(self, ref: str) -> None:
        self.calls.append(("remove", ref))
        self.images.pop(ref, None)

    def list_images(self, label: str) -> list[ImageInfo]:
        return [i for r, i in self.images.items() if r.startswith("sha256:") and label in i.labels]
