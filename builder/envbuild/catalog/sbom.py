"""``envbuild sbom``: a software bill of materials of a built image.

The packages are the ones :func:`envbuild.catalog.packages.from_image` reads
from inside the image (the same lists ``image.json`` publishes): every Debian
package in dpkg's status database, every pip and conda distribution, and the
base image with its pin. Each is named by a package URL (purl):
``pkg:deb/debian/NAME@VERSION?arch=…&distro=…``, ``pkg:pypi/NAME@VERSION``,
``pkg:conda/NAME@VERSION``, ``pkg:docker/NAME@PIN?tag=…`` for the base.

Two formats: CycloneDX 1.6 JSON (written by ``cyclonedx-python-lib``) and
SPDX 2.3 JSON (written here). Both are deterministic for an image: the serial
number (and the SPDX namespace) are derived from the image ID, the timestamp is
the image's creation time.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from packageurl import PackageURL

import envbuild
from envbuild.catalog.packages import PackageList
from envbuild.errors import UsageError

FORMATS = ("cyclonedx", "spdx")
# The namespace of the serial numbers: uuid5(SERIAL_NAMESPACE, image ID).
SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://envbuild.invalid/sbom")
SPDX_NAMESPACE_ROOT = "https://envbuild.invalid/spdx"
TOOL = f"envbuild-{envbuild.__version__}"


@dataclass(frozen=True)
class Subject:
    """The image an SBOM describes."""

    ref: str  # how it was named, e.g. "envbuild/hello:1a2b3c4d5e6f"
    id: str  # the engine's image ID, "sha256:…"
    created: str = ""  # the engine's creation time (RFC 3339), "" when unknown

    @property
    def serial(self) -> uuid.UUID:
        """The document's serial number: a UUID derived from the image ID."""
        return uuid.uuid5(SERIAL_NAMESPACE, self.id)

    @property
    def timestamp(self) -> datetime:
        """The image's creation time (the epoch when unknown), in UTC."""
        return parse_time(self.created)


@dataclass(frozen=True)
class Item:
    """One package of the bill: its ecosystem, name, version and purl."""

    ecosystem: str  # "apt", "pip", "conda" or "base"
    name: str
    version: str | None
    purl: str


_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def parse_time(text: str) -> datetime:
    """An engine timestamp (nanoseconds allowed) as an aware UTC datetime."""
    if not text:
        return datetime(1970, 1, 1, tzinfo=timezone.utc)
    cleaned = _FRACTION.sub(r"\1", text.strip()).replace("Z", "+00:00")
    try:
        when = datetime.fromisoformat(cleaned)
    except ValueError:
        return datetime(1970, 1, 1, tzinfo=timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).replace(microsecond=0)


# --------------------------------------------------------------------------
# Package URLs
# --------------------------------------------------------------------------


def split_reference(ref: str) -> tuple[str | None, str, str | None]:
    """``(registry, repository, tag)`` of an image reference (without ``@digest``)."""
    registry: str | None = None
    first, sep, rest = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, ref = first, rest
    tag: str | None = None
    if ":" in ref.rsplit("/", 1)[-1]:
        ref, tag = ref.rsplit(":", 1)
    return registry, ref, tag


def image_purl(ref: str, version: str | None) -> str:
    """``pkg:docker/[NAMESPACE/]NAME@VERSION?repository_url=…&tag=…``."""
    registry, repository, tag = split_reference(ref.split("@", 1)[0])
    namespace, _, name = repository.rpartition("/")
    if registry in ("docker.io", "index.docker.io"):
        registry = None
    if registry is None and namespace == "library":
        namespace = ""
    qualifiers: dict[str, str] = {}
    if registry:
        qualifiers["repository_url"] = registry
    if tag and version:
        qualifiers["tag"] = tag
    return str(PackageURL("docker", namespace or None, name, version or tag, qualifiers or None))


def items(packages: PackageList) -> list[Item]:
    """Every package of ``packages`` with its purl: the base first, then apt, pip, conda."""
    out: list[Item] = []
    base = packages.base
    if base.image:
        out.append(Item("base", base.image, base.pin, image_purl(base.image, base.pin)))
    distro = packages.os.get("ID") or "debian"
    release = packages.os.get("VERSION_ID")
    for name, version in sorted(packages.apt.items()):
        qualifiers = {}
        if packages.apt_arch.get(name):
            qualifiers["arch"] = packages.apt_arch[name]
        if release:
            qualifiers["distro"] = f"{distro}-{release}"
        purl = PackageURL("deb", distro, name, version, qualifiers or None)
        out.append(Item("apt", name, version, str(purl)))
    for name, version in sorted(packages.pip.items()):
        out.append(Item("pip", name, version, str(PackageURL("pypi", None, name, version))))
    for name, version in sorted(packages.conda.items()):
        out.append(Item("conda", name, version, str(PackageURL("conda", None, name, version))))
    return out


# --------------------------------------------------------------------------
# CycloneDX
# --------------------------------------------------------------------------


def cyclonedx(packages: PackageList, subject: Subject) -> dict[str, Any]:
    """The CycloneDX 1.6 document of ``subject``'s ``packages``, as JSON data."""
    from cyclonedx.model import Property
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6

    root_purl = image_purl(subject.ref, subject.id)
    root = Component(
        name=subject.ref,
        version=subject.id,
        type=ComponentType.CONTAINER,
        purl=PackageURL.from_string(root_purl),
        bom_ref=root_purl,
    )
    tool = Component(name="envbuild", version=envbuild.__version__, type=ComponentType.APPLICATION)
    metadata = BomMetaData(component=root, timestamp=subject.timestamp)
    metadata.tools.components.add(tool)
    bom = Bom(serial_number=subject.serial, metadata=metadata)
    components = []
    for item in items(packages):
        component = Component(
            name=item.name,
            version=item.version,
            type=ComponentType.CONTAINER if item.ecosystem == "base" else ComponentType.LIBRARY,
            purl=PackageURL.from_string(item.purl),
            bom_ref=item.purl,
            properties=[Property(name="envbuild:ecosystem", value=item.ecosystem)],
        )
        bom.components.add(component)
        components.append(component)
    bom.register_dependency(root, components)
    data: dict[str, Any] = json.loads(JsonV1Dot6(bom).output_as_string())
    return data


# --------------------------------------------------------------------------
# SPDX 2.3 (written here: a flat list of packages and their relationships)
# --------------------------------------------------------------------------

_SPDX_ID_CHARS = re.compile(r"[^A-Za-z0-9.-]+")


def _spdx_package(spdx_id: str, name: str, version: str | None, purl: str) -> dict[str, Any]:
    package: dict[str, Any] = {
        "SPDXID": spdx_id,
        "name": name,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": False,
        "externalRefs": [
            {
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl,
            }
        ],
    }
    if version:
        package["versionInfo"] = version
    return package


def spdx(packages: PackageList, subject: Subject) -> dict[str, Any]:
    """The SPDX 2.3 document of ``subject``'s ``packages``, as JSON data."""
    root_id = "SPDXRef-image"
    root = _spdx_package(root_id, subject.ref, subject.id, image_purl(subject.ref, subject.id)) | {
        "primaryPackagePurpose": "CONTAINER"
    }
    listed = [root]
    relationships = [
        {
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES",
            "relatedSpdxElement": root_id,
        }
    ]
    seen: set[str] = {root_id}
    for item in items(packages):
        stem = f"SPDXRef-{item.ecosystem}-{_SPDX_ID_CHARS.sub('-', item.name)}"
        spdx_id, n = stem, 1
        while spdx_id in seen:
            n += 1
            spdx_id = f"{stem}-{n}"
        seen.add(spdx_id)
        purpose = "CONTAINER" if item.ecosystem == "base" else "LIBRARY"
        listed.append(
            _spdx_package(spdx_id, item.name, item.version, item.purl)
            | {"primaryPackagePurpose": purpose}
        )
        relationships.append(
            {
                "spdxElementId": root_id,
                "relationshipType": "DESCENDANT_OF" if item.ecosystem == "base" else "CONTAINS",
                "relatedSpdxElement": spdx_id,
            }
        )
    created = subject.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": subject.ref,
        "documentNamespace": f"{SPDX_NAMESPACE_ROOT}/{subject.serial}",
        "creationInfo": {"created": created, "creators": [f"Tool: {TOOL}"]},
        "documentDescribes": [root_id],
        "packages": listed,
        "relationships": relationships,
    }


def document(packages: PackageList, subject: Subject, fmt: str = "cyclonedx") -> dict[str, Any]:
    """The SBOM of ``subject`` in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "cyclonedx":
        return cyclonedx(packages, subject)
    if fmt == "spdx":
        return spdx(packages, subject)
    raise UsageError(f"unknown SBOM format {fmt!r}", hint=f"one of: {', '.join(FORMATS)}")


def dumps(data: Mapping[str, Any]) -> str:
    """The JSON text of a document: sorted keys, two-space indent, a final newline."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
