"""SBOMs from a fixed package list: both formats validate and are deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from envbuild.catalog import sbom
from envbuild.catalog.packages import (
    Base,
    PackageList,
    base_from_labels,
    parse_dpkg,
    parse_dpkg_status,
    parse_os_release,
)

IMAGE_ID = "sha256:" + "ab" * 32
BASE_ID = "sha256:" + "cd" * 32
SUBJECT = sbom.Subject("envbuild/hello:0123456789ab", IMAGE_ID, "2026-11-30T12:34:56.123456789Z")
PACKAGES = PackageList(
    base=Base("debian:bookworm-slim", BASE_ID, "image-id"),
    apt={"python3": "3.11.2-1+b1", "libstdc++6": "12.2.0-14", "tzdata": "2024a-0+deb12u1"},
    pip={"six": "1.16.0", "pip": "23.0.1"},
    conda={"numpy": "1.26.4"},
    sources=dict.fromkeys(("apt", "pip", "conda"), "image"),
    apt_arch={"python3": "amd64", "libstdc++6": "amd64", "tzdata": "all"},
    os={"ID": "debian", "VERSION_ID": "12"},
)


def test_cyclonedx_validates_and_lists_everything() -> None:
    data = sbom.cyclonedx(PACKAGES, SUBJECT)
    text = sbom.dumps(data)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    assert data["specVersion"] == "1.6"
    purls = {c["purl"] for c in data["components"]}
    assert purls == {
        f"pkg:docker/debian@{BASE_ID}?tag=bookworm-slim",
        "pkg:deb/debian/python3@3.11.2-1%2Bb1?arch=amd64&distro=debian-12",
        "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14?arch=amd64&distro=debian-12",
        "pkg:deb/debian/tzdata@2024a-0%2Bdeb12u1?arch=all&distro=debian-12",
        "pkg:pypi/six@1.16.0",
        "pkg:pypi/pip@23.0.1",
        "pkg:conda/numpy@1.26.4",
    }
    root = data["metadata"]["component"]
    assert root["type"] == "container" and root["version"] == IMAGE_ID
    assert data["metadata"]["timestamp"] == "2026-11-30T12:34:56+00:00"
    # every component hangs off the image in the dependency graph
    top = next(d for d in data["dependencies"] if d["ref"] == root["bom-ref"])
    assert set(top["dependsOn"]) == purls


def test_cyclonedx_rejected_when_broken() -> None:
    data = sbom.cyclonedx(PACKAGES, SUBJECT)
    data["components"][0]["type"] = "no-such-type"
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(data)) is not None


def test_spdx_validates(tmp_path: Path) -> None:
    data = sbom.spdx(PACKAGES, SUBJECT)
    path = tmp_path / "sbom.spdx.json"
    path.write_text(sbom.dumps(data), encoding="utf-8")
    assert validate_full_spdx_document(parse_file(str(path)), "SPDX-2.3") == []
    assert data["spdxVersion"] == "SPDX-2.3"
    assert data["creationInfo"]["created"] == "2026-11-30T12:34:56Z"
    by_name = {p["name"]: p for p in data["packages"]}
    assert by_name["six"]["versionInfo"] == "1.16.0"
    assert by_name["six"]["externalRefs"][0]["referenceLocator"] == "pkg:pypi/six@1.16.0"
    # SPDX IDs are restricted to letters, digits, '.' and '-': libstdc++6 is renamed
    assert by_name["libstdc++6"]["SPDXID"] == "SPDXRef-apt-libstdc-6"
    kinds = {(r["relationshipType"], r["relatedSpdxElement"]) for r in data["relationships"]}
    assert ("DESCENDANT_OF", by_name["debian:bookworm-slim"]["SPDXID"]) in kinds
    assert ("CONTAINS", by_name["python3"]["SPDXID"]) in kinds


def test_spdx_validation_can_fail(tmp_path: Path) -> None:
    data = sbom.spdx(PACKAGES, SUBJECT)
    data["relationships"][0]["relatedSpdxElement"] = "SPDXRef-nothing"
    path = tmp_path / "bad.spdx.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    assert validate_full_spdx_document(parse_file(str(path)), "SPDX-2.3") != []


@pytest.mark.parametrize("fmt", sbom.FORMATS)
def test_deterministic_per_image(fmt: str) -> None:
    one = sbom.dumps(sbom.document(PACKAGES, SUBJECT, fmt))
    assert one == sbom.dumps(sbom.document(PACKAGES, SUBJECT, fmt))
    other = sbom.Subject(SUBJECT.ref, "sha256:" + "ef" * 32, SUBJECT.created)
    assert sbom.dumps(sbom.document(PACKAGES, other, fmt)) != one


def test_serial_from_image_id() -> None:
    data = sbom.cyclonedx(PACKAGES, SUBJECT)
    assert data["serialNumber"] == f"urn:uuid:{SUBJECT.serial}"
    assert SUBJECT.serial == sbom.Subject("other:ref", IMAGE_ID).serial


@pytest.mark.parametrize(
    ("ref", "version", "purl"),
    [
        ("debian:bookworm-slim", None, "pkg:docker/debian@bookworm-slim"),
        ("ubuntu:20.04", "sha256:00", "pkg:docker/ubuntu@sha256:00?tag=20.04"),
        ("library/debian:12", None, "pkg:docker/debian@12"),
        (
            "ghcr.io/org/img:v1",
            "sha256:00",
            "pkg:docker/org/img@sha256:00?repository_url=ghcr.io&tag=v1",
        ),
        (
            "localhost:5000/x@sha256:11",
            "sha256:11",
            "pkg:docker/x@sha256:11?repository_url=localhost:5000",
        ),
    ],
)
def test_image_purl(ref: str, version: str | None, purl: str) -> None:
    assert sbom.image_purl(ref, version) == purl


def test_dpkg_status_keeps_installed_packages() -> None:
    text = (
        "ii \tpython3\t3.11.2-1+b1\tamd64\n"
        "rc \told-lib\t1.0\tamd64\n"
        "ii \ttzdata\t2024a-0+deb12u1\tall\n"
    )
    rows = parse_dpkg_status(text)
    assert [(p.name, p.version, p.arch) for p in rows] == [
        ("python3", "3.11.2-1+b1", "amd64"),
        ("tzdata", "2024a-0+deb12u1", "all"),
    ]
    assert parse_dpkg(text) == {"python3": "3.11.2-1+b1", "tzdata": "2024a-0+deb12u1"}


def test_os_release() -> None:
    text = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\nHOME_URL=x\n'
    assert parse_os_release(text) == {
        "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)",
        "ID": "debian",
        "VERSION_ID": "12",
    }


@pytest.mark.parametrize(
    ("labels", "base"),
    [
        ({}, Base(None)),
        ({"org.opencontainers.image.base.name": "debian:12"}, Base("debian:12")),
        (
            {"org.opencontainers.image.base.name": "debian:12@sha256:aa"},
            Base("debian:12", "sha256:aa", "digest"),
        ),
        (
            {
                "org.opencontainers.image.base.name": "debian:12",
                "org.opencontainers.image.base.digest": "sha256:bb",
            },
            Base("debian:12", "sha256:bb", "digest"),
        ),
        (
            {"org.opencontainers.image.base.name": "local", "io.envbuild.base.id": "sha256:cc"},
            Base("local", "sha256:cc", "image-id"),
        ),
        (
            {
                "org.opencontainers.image.base.name": "debian:12",
                "io.envbuild.inputs": json.dumps({"base_pin": "engine-id:sha256:dd"}),
            },
            Base("debian:12", "sha256:dd", "image-id"),
        ),
        (
            {"org.opencontainers.image.base.name": "debian:12", "io.envbuild.inputs": "{bad"},
            Base("debian:12"),
        ),
    ],
)
def test_base_from_labels(labels: dict[str, str], base: Base) -> None:
    assert base_from_labels(labels) == base


def test_packages_json_round_trip_keeps_arch_and_os() -> None:
    data = PACKAGES.to_json()
    tzdata = {"name": "tzdata", "version": "2024a-0+deb12u1", "arch": "all"}
    assert tzdata in data["apt"]["packages"]
    assert PackageList.from_json(data) == PACKAGES
    # a list without them (a definition's) keeps the packages.json shape it had
    plain = PackageList(Base("debian:12"), apt={"jq": None})
    assert plain.to_json()["apt"]["packages"] == [{"name": "jq", "version": None}]
    assert "os" not in plain.to_json()
