"""`envbuild diff image:…` and `envbuild publish --with-images` against real images.

Two tiny environments on debian:bookworm-slim are locked and built once for the
module under a unique image prefix, and every image under that prefix is removed after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

pytestmark = pytest.mark.docker

TINY_A = """\
schema = 1
name = "tiny-a"
version = 1
description = "diff test, before"

[base]
image = "debian:bookworm-slim"

[pip]
packages = ["six==1.16.0"]
"""

TINY_B = """\
schema = 1
name = "tiny-b"
version = 1
description = "diff test, after"

[base]
image = "debian:bookworm-slim"

[system]
packages = ["jq"]

[pip]
packages = ["six==1.17.0"]
"""


@dataclass
class Built:
    catalog: Path
    prefix: str
    env: dict[str, str]

    def envbuild(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "envbuild", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=900,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"envbuild {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
            )
        return proc

    def image(self, name: str) -> str:
        return f"image:{self.prefix}/{name}:1"


@pytest.fixture(scope="module")
def built(docker_cli: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    root = tmp_path_factory.mktemp("catalog-images")
    catalog = root / "catalog"
    for name, text in (("tiny-a", TINY_A), ("tiny-b", TINY_B)):
        (catalog / name).mkdir(parents=True)
        (catalog / name / "env.toml").write_text(text, encoding="utf-8")
    prefix = f"envbuild-test-{uuid.uuid4().hex[:10]}"
    env = {**os.environ, "ENVBUILD_PREFIX": prefix, "ENVBUILD_HOME": str(root / "home")}
    result = Built(catalog, prefix, env)
    try:
        # Locked, as a published catalog is: publish renders offline, and only a
        # locked base is known without the engine (an unlocked one's image ID is
        # part of the build's hash).
        for name in ("tiny-a", "tiny-b"):
            result.envbuild("lock", "-q", str(catalog / name))
        result.envbuild("build", "-q", "--all", str(catalog))
        yield result
    finally:
        out = subprocess.run(
            [
                docker_cli,
                "images",
                "--format",
                "{{.Repository}}:{{.Tag}}",
                "--filter",
                f"reference={prefix}/*",
            ],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        for tag in out.split():
            subprocess.run([docker_cli, "rmi", "--force", tag], capture_output=True, check=False)


def test_diff_of_two_images(built: Built) -> None:
    data = json.loads(
        built.envbuild("diff", "--json", built.image("tiny-a"), built.image("tiny-b")).stdout
    )
    assert data["a"]["kind"] == data["b"]["kind"] == "image"
    assert data["identical"] is False
    assert data["base"]["changed"] == []
    assert data["base"]["a"]["image"] == "debian:bookworm-slim"
    pip = data["packages"]["pip"]
    assert {"name": "six", "old": "1.16.0", "new": "1.17.0"} in pip["changed"]
    assert pip["added"] == [] and pip["removed"] == []
    apt = data["packages"]["apt"]
    added = {p["name"] for p in apt["added"]}
    assert "jq" in added and "libjq1" in added  # with its dependencies
    assert apt["removed"] == [] and apt["unchanged"] > 50  # dpkg's whole database
    text = built.envbuild("diff", built.image("tiny-a"), built.image("tiny-b")).stdout
    assert "~ six" in text and "1.16.0 -> 1.17.0" in text
    # No container is left behind by reading the images.
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", "label=io.envbuild.sbom"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert left.stdout.strip() == ""


def test_diff_of_a_definition_and_its_image(built: Built) -> None:
    data = json.loads(
        built.envbuild(
            "diff", "--json", str(built.catalog / "tiny-b"), built.image("tiny-b")
        ).stdout
    )
    pip = data["packages"]["pip"]
    assert pip["removed"] == [] and pip["changed"] == []  # six==1.17.0 as declared
    assert "pip" in {p["name"] for p in pip["added"]}  # the venv's own pip


def test_publish_with_images(built: Built, tmp_path: Path) -> None:
    out = tmp_path / "published"
    proc = built.envbuild(
        "publish", "--with-images", "--catalog", str(built.catalog), "--out", str(out)
    )
    assert "image.json for 2" in proc.stderr
    for name, six in (("tiny-a", "1.16.0"), ("tiny-b", "1.17.0")):
        image = json.loads((out / name / "1" / "image.json").read_text())
        assert image["image"]["id"].startswith("sha256:") and image["image"]["size"] > 0
        sbom = image["sbom"]
        assert {"name": "six", "version": six} in sbom["pip"]["packages"]
        assert "libc6" in {p["name"] for p in sbom["apt"]["packages"]}
        assert sbom["base"]["image"] == "debian:bookworm-slim"
        assert {"ID": "debian", "VERSION_ID": "12"}.items() <= sbom["os"].items()
        # the locked base's pin, from the image's OCI base digest label
        assert sbom["base"]["pin"].startswith("sha256:")
        bom_text = (out / name / "1" / "sbom.cdx.json").read_text()
        assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(bom_text) is None
        bom = json.loads(bom_text)
        assert bom["metadata"]["component"]["version"] == image["image"]["id"]
        purls = {c["purl"] for c in bom["components"]}
        assert f"pkg:pypi/six@{six}" in purls
        assert any(p.startswith("pkg:deb/debian/libc6@") and "arch=" in p for p in purls)
        assert f"[SBOM]({name}/1/sbom.cdx.json)" in (out / "index.md").read_text()
    rows = json.loads((out / "index.json").read_text())["environments"]
    assert all(isinstance(r["size"], int) and r["size"] > 0 for r in rows)
    built.envbuild("publish", "--check", "--catalog", str(built.catalog), "--out", str(out))
