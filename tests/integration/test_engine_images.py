"""The image store against the real engine: load (docker load without the CLI), tag, list."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import uuid
from collections.abc import Callable

import pytest

from envbuild.engine.docker import DockerEngine
from envbuild.errors import EngineError

pytestmark = pytest.mark.docker


def _archive(tag: str, label: str) -> bytes:
    """A one-layer ``docker save`` archive of a single file, labelled ``label``."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        data = label.encode()
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"io.envbuild.test-images": label}},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [tag], "Layers": ["layer/layer.tar"]}]
    ).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, body in (
            ("layer/layer.tar", layer_bytes),
            (config_name, config),
            ("manifest.json", manifest),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


def test_load_tag_list_remove(docker_cli: str, unique_tag: Callable[[str], str]) -> None:
    engine = DockerEngine(docker_cli)
    tag, other = unique_tag("loaded"), unique_tag("retagged")
    label = uuid.uuid4().hex
    data = _archive(tag, label)
    assert engine.load_image(data[i : i + 1000] for i in range(0, len(data), 1000)) == (tag,)
    info = engine.inspect_image(tag)
    assert info is not None and info.labels == {"io.envbuild.test-images": label}
    engine.tag(info.id, other)
    assert {i.id for i in engine.list_images(f"io.envbuild.test-images={label}")} == {info.id}
    assert engine.list_images(f"io.envbuild.test-images={label}x") == []
    assert info.id in {i.id for i in engine.list_images("io.envbuild.test-images")}
    # The batch of inspects the catalog fast path sends answers as single inspects do.
    refs = [tag, f"{tag}-absent", other, info.id]
    assert engine.inspect_images(refs) == [engine.inspect_image(ref) for ref in refs]
    assert engine.inspect_images(refs)[1] is None
    assert engine.inspect_images([]) == []
    engine.remove_image(other)
    engine.remove_image(other)  # gone is not an error
    assert engine.inspect_image(other) is None and engine.inspect_image(tag) is not None
    subprocess.run([docker_cli, "rmi", "-f", info.id], capture_output=True, check=False)


def test_loading_garbage_is_an_engine_error(docker_cli: str) -> None:
    with pytest.raises(EngineError, match="cannot load the image archive"):
        DockerEngine(docker_cli).load_image([b"this is not a tar archive" * 100])
