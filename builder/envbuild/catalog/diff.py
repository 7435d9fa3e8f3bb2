"""``envbuild diff A B``: what changed between two environments, versions or images.

Each side is one of:

* an environment folder (``curated/pytorch-1.6-gpu``): its declared packages,
  or its locked ones where ``envbuild lock`` wrote locks;
* a published version, ``name@version`` (``pytorch-1.6-gpu@1``), read from the
  published folder's ``packages.json``;
* ``image:REF``, a local image: the packages installed in it, read by running
  ``dpkg-query``, ``pip list`` and ``conda list`` inside it.

The diff is per ecosystem (apt/dpkg, pip, conda): packages added, removed and
changed (old -> new version), plus whether the base image changed (its
reference or its pin).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envbuild.catalog.packages import (
    ECOSYSTEMS,
    Base,
    PackageList,
    declared,
    from_image,
)
from envbuild.definition.model import DEFINITION_FILE, load
from envbuild.engine.protocols import ContainerEngine
from envbuild.errors import UsageError

IMAGE_PREFIX = "image:"
_PUBLISHED = re.compile(r"(?P<name>[a-z0-9][a-z0-9._-]*)@(?P<version>[0-9]+)")


#: What reading an image side asks of the engine: inspect, then run commands in it.
ImageEngine = ContainerEngine


@dataclass(frozen=True)
class Side:
    """One side of a diff: what was named, how it was read, and its packages."""

    spec: str
    kind: str  # "folder", "published" or "image"
    packages: PackageList
    detail: str = ""  # e.g. the image ID

    @property
    def label(self) -> str:
        """How the side is shown."""
        what = {"folder": "definition", "published": "published", "image": "image"}[self.kind]
        return f"{self.spec} ({what}{', ' + self.detail if self.detail else ''})"


@dataclass(frozen=True)
class Change:
    """A package whose version differs."""

    name: str
    old: str | None
    new: str | None


@dataclass(frozen=True)
class EcosystemDiff:
    """The differences of one ecosystem."""

    added: tuple[tuple[str, str | None], ...] = ()
    removed: tuple[tuple[str, str | None], ...] = ()
    changed: tuple[Change, ...] = ()
    same: int = 0  # packages present on both sides with the same version

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "added": [{"name": n, "version": v} for n, v in self.added],
            "removed": [{"name": n, "version": v} for n, v in self.removed],
            "changed": [{"name": c.name, "old": c.old, "new": c.new} for c in self.changed],
            "unchanged": self.same,
        }


@dataclass(frozen=True)
class PackageDiff:
    """Everything that differs between two sides."""

    a: Side
    b: Side
    ecosystems: Mapping[str, EcosystemDiff]

    @property
    def base_changes(self) -> tuple[str, ...]:
        """What differs of the base: ``"ref"`` and/or ``"pin"``."""
        old, new = self.a.packages.base, self.b.packages.base
        out = []
        if old.image != new.image:
            out.append("ref")
        if old.pin != new.pin:
            out.append("pin")
        return tuple(out)

    @property
    def identical(self) -> bool:
        """True when nothing differs."""
        return not self.base_changes and not any(self.ecosystems.values())

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            "a": {"spec": self.a.spec, "kind": self.a.kind, "detail": self.a.detail},
            "b": {"spec": self.b.spec, "kind": self.b.kind, "detail": self.b.detail},
            "identical": self.identical,
            "base": {
                "a": self.a.packages.base.to_json(),
                "b": self.b.packages.base.to_json(),
                "changed": list(self.base_changes),
            },
            "packages": {eco: d.to_json() for eco, d in self.ecosystems.items()},
        }


def _version(value: str | None) -> str:
    return value if value is not None else "(any)"


def compare(old: Mapping[str, str | None], new: Mapping[str, str | None]) -> EcosystemDiff:
    """Added, removed and changed packages from ``old`` to ``new``, each sorted by name."""
    added = tuple((n, new[n]) for n in sorted(set(new) - set(old)))
    removed = tuple((n, old[n]) for n in sorted(set(old) - set(new)))
    both = sorted(set(old) & set(new))
    changed = tuple(Change(n, old[n], new[n]) for n in both if old[n] != new[n])
    return EcosystemDiff(added, removed, changed, len(both) - len(changed))


def diff(a: Side, b: Side) -> PackageDiff:
    """The package-level diff from ``a`` to ``b``."""
    return PackageDiff(
        a,
        b,
        {eco: compare(a.packages.packages(eco), b.packages.packages(eco)) for eco in ECOSYSTEMS},
    )


# --------------------------------------------------------------------------
# Reading a side
# --------------------------------------------------------------------------


def read_side(
    spec: str,
    *,
    published: Path,
    engine: Callable[[], ImageEngine] | None = None,
    conda_store: Path | None = None,
) -> Side:
    """Read ``spec``: a folder, ``name@version`` (from ``published``) or ``image:REF``.

    A conda-locked folder is rendered from ``conda_store`` (envbuild's package store).
    """
    if spec.startswith(IMAGE_PREFIX):
        ref = spec[len(IMAGE_PREFIX) :]
        if not ref:
            raise UsageError("image: needs a reference, e.g. image:envbuild/hello:1")
        if engine is None:
            raise UsageError(f"{spec}: reading an image needs the Docker engine")
        eng = engine()
        info = eng.inspect_image(ref)
        if info is None:
            raise UsageError(
                f"{spec}: no such image in the local engine",
                hint="build it first (envbuild build ENV), or pull it",
            )
        packages = from_image(eng, ref, info.labels)
        return Side(spec, "image", packages, info.id.removeprefix("sha256:")[:12])
    path = Path(spec)
    match = _PUBLISHED.fullmatch(spec)
    if match and not (path / DEFINITION_FILE).is_file():
        return _published_side(spec, match["name"], int(match["version"]), published)
    if not (path / DEFINITION_FILE).is_file() and not (
        path.name == DEFINITION_FILE and path.is_file()
    ):
        raise UsageError(
            f"{spec}: not an environment folder, a published name@version or image:REF",
            hint="e.g. curated/pytorch-1.6-gpu, pytorch-1.6-gpu@1 or image:envbuild/hello:1",
        )
    return Side(spec, "folder", declared(load(path), conda_store=conda_store))


def _published_side(spec: str, name: str, version: int, published: Path) -> Side:
    import json

    path = published / name / str(version) / "packages.json"
    if not path.is_file():
        versions = sorted(
            int(p.name) for p in (published / name).glob("*") if p.name.isdigit() and p.is_dir()
        )
        hint = (
            f"published versions of {name}: {', '.join(map(str, versions))}"
            if versions
            else f"nothing is published as {name} in {published} (see its index.md)"
        )
        raise UsageError(f"{spec}: {path} does not exist", hint=hint)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        packages = PackageList.from_json(data)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path}: cannot be read ({exc!r})") from exc
    return Side(spec, "published", packages)


# --------------------------------------------------------------------------
# Showing it
# --------------------------------------------------------------------------


def _base_line(old: Base, new: Base, changes: tuple[str, ...]) -> str:
    if not changes:
        return f"base: {old.text} (unchanged)"
    return f"base changed ({' and '.join(changes)}): {old.text} -> {new.text}"


def render_text(result: PackageDiff) -> str:
    """The diff for a person: grouped by ecosystem, then added, removed, changed; aligned."""
    lines = [
        f"--- {result.a.label}",
        f"+++ {result.b.label}",
        _base_line(result.a.packages.base, result.b.packages.base, result.base_changes),
    ]
    for eco, d in result.ecosystems.items():
        sizes = (len(result.a.packages.packages(eco)), len(result.b.packages.packages(eco)))
        if sizes == (0, 0):
            continue
        title = "apt/dpkg" if eco == "apt" else eco
        if not d:
            lines.append(f"{title}: no changes ({d.same} packages)")
            continue
        counts = [
            f"{len(d.added)} added",
            f"{len(d.removed)} removed",
            f"{len(d.changed)} changed",
            f"{d.same} unchanged",
        ]
        lines.append(f"{title}: {', '.join(counts)}")
        names = [n for n, _ in d.added] + [n for n, _ in d.removed] + [c.name for c in d.changed]
        width = max(map(len, names))
        lines.extend(f"  + {name:<{width}}  {_version(v)}" for name, v in d.added)
        lines.extend(f"  - {name:<{width}}  {_version(v)}" for name, v in d.removed)
        lines.extend(
            f"  ~ {c.name:<{width}}  {_version(c.old)} -> {_version(c.new)}" for c in d.changed
        )
    if result.identical:
        lines.append("no differences")
    return "\n".join(lines) + "\n"
