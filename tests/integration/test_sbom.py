"""`envbuild sbom` against envs/hello's real image: both formats list what is inside."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from envbuild.build.builder import build
from envbuild.engine.docker import DockerEngine
from envbuild.settings import load_settings

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "envs" / "hello"


@pytest.fixture(scope="module")
def hello_id(docker_cli: str) -> str:
    """envs/hello's image ID (built once if missing)."""
    settings = load_settings()
    return build(HELLO, settings=settings, engine=DockerEngine(settings.docker)).id


def _sbom(fmt: str, out: Path, home: Path) -> dict[str, Any]:
    env = {**os.environ, "ENVBUILD_HOME": str(home)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "envbuild",
            "sbom",
            "-q",
            str(HELLO),
            "--format",
            fmt,
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return data


def test_sbom_of_hello(hello_id: str, docker_cli: str, tmp_path: Path) -> None:
    cdx = _sbom("cyclonedx", tmp_path / "hello.cdx.json", tmp_path / "home")
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(cdx)) is None
    assert cdx["metadata"]["component"]["version"] == hello_id
    by_purl = {c["purl"].split("@")[0]: c for c in cdx["components"]}
    python3 = by_purl["pkg:deb/debian/python3"]
    assert python3["version"] and "arch=" in python3["purl"] and "arch=all" not in python3["purl"]
    assert "distro=debian-12" in python3["purl"]
    assert by_purl["pkg:pypi/six"]["version"] == "1.16.0"
    base = by_purl["pkg:docker/debian"]
    assert base["name"] == "debian:bookworm-slim" and base["version"].startswith("sha256:")
    assert "tag=bookworm-slim" in base["purl"]
    assert len([c for c in cdx["components"] if c["purl"].startswith("pkg:deb/")]) > 50

    spdx_path = tmp_path / "hello.spdx.json"
    spdx = _sbom("spdx", spdx_path, tmp_path / "home")
    assert validate_full_spdx_document(parse_file(str(spdx_path)), "SPDX-2.3") == []
    names = {p["name"]: p.get("versionInfo") for p in spdx["packages"]}
    assert names["six"] == "1.16.0" and names["python3"] == python3["version"]
    assert names["debian:bookworm-slim"] == base["version"]

    # Deterministic: the same image gives the same document.
    again = _sbom("cyclonedx", tmp_path / "again.cdx.json", tmp_path / "home")
    assert again == cdx
    # No container of the reads is left behind.
    left = subprocess.run(
        [docker_cli, "ps", "-aq", "--filter", "label=io.envbuild.sbom"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert not left, left
