"""Why did this rebuild? The inputs of a hash, and what changed against an image.

Every image envbuild builds carries, in the label ``io.envbuild.inputs``, a
short record of what its hash was computed from (:func:`inputs_record`): the
hashed manifest's fields, each context file's digest, and the pins read from
the lock files (pip and conda versions, apt package names). ``explain``
compares the record of a definition as it is now with the one of the last
image built for it (or any image), and names each changed input down to the
pin: ``requirements.lock: six 1.16.0 -> 1.15.0``.

Only the record is compared, never the engine's layers: explain works for an
image built on another machine, as long as it carries the label.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import envbuild.lock as locking
from envbuild.cache.hashing import HASH_SCHEMA
from envbuild.engine.docker import Engine, ImageInfo
from envbuild.identity import ENGINE_BASE, HASH_LABEL, INPUTS_LABEL, NAME_LABEL
from envbuild.render.context import BuildContext

RECORD_VERSION = 1


def inputs_record(context: BuildContext, *, platform: str) -> dict[str, Any]:
    """The record of a context's hash inputs, with the pins its lock files hold."""
    files = {path: item.sha256 for path, item in sorted(context.files.items())}
    record: dict[str, Any] = {
        "record": RECORD_VERSION,
        "hash_schema": HASH_SCHEMA,
        "platform": platform,
        "base": context.base_image,
        "base_pin": context.base_pin,
        "files": files,
    }
    pins: dict[str, dict[str, str]] = {}
    lock_file = context.files.get(f"envbuild/{locking.PIP_LOCK_FILE}")
    listing = context.files.get("envbuild/requirements.txt")
    if lock_file is not None:
        pins[locking.PIP_LOCK_FILE] = locking.pip_pins(lock_file.data)
    elif listing is not None:
        pins["requirements.txt"] = _requested(listing.data)
    conda = context.files.get(f"envbuild/{locking.CONDA_LOCK_FILE}")
    if conda is not None:
        pins[locking.CONDA_LOCK_FILE] = locking.conda_pins(conda.data)
    apt = context.files.get("envbuild/apt-packages.txt")
    if apt is not None:
        pins["apt-packages.txt"] = {name: "" for name in apt.data.decode("utf-8").split() if name}
    record["pins"] = pins
    return record


def _requested(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in data.decode("utf-8").splitlines():
        text = line.strip()
        if text and not text.startswith(("#", "-")):
            out[text] = ""
    return out


@dataclass(frozen=True)
class Change:
    """One changed input: where (a file or field) and what happened."""

    what: str
    detail: str

    def render(self) -> str:
        """``what: detail``."""
        return f"{self.what}: {self.detail}"


def _short(value: object) -> str:
    text = str(value)
    if text.startswith(("sha256:", "image-id:sha256:", "digest:sha256:")):
        head, _, digest = text.rpartition("sha256:")
        return f"{head}sha256:{digest[:12]}"
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return text[:12]
    return text


def _diff_pins(name: str, old: Mapping[str, str], new: Mapping[str, str]) -> list[Change]:
    changes: list[Change] = []
    for pkg in sorted(set(old) | set(new)):
        if pkg not in old:
            changes.append(Change(name, f"+ {pkg} {new[pkg]}".rstrip()))
        elif pkg not in new:
            changes.append(Change(name, f"- {pkg} {old[pkg]}".rstrip()))
        elif old[pkg] != new[pkg]:
            changes.append(Change(name, f"{pkg} {old[pkg]} \u2192 {new[pkg]}"))
    return changes


def _base_identity(record: Mapping[str, Any]) -> str:
    """How a record names its base's identity, in words."""
    pin = record.get("base_pin")
    if not pin:
        return "not identified"
    kind, _, digest = str(pin).partition(":")
    if kind == ENGINE_BASE:
        return f"the engine's image {_short(digest)} (not locked)"
    return f"pinned {_short(pin)}"


def _base_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> Change:
    """The base's identity changed: a retagged or re-pulled base, or a new pin."""
    same_ref = old.get("base") == new.get("base")
    what = f"the base image {new.get('base')} changed" if same_ref else "the base changed"
    return Change("base_pin", f"{what}: {_base_identity(old)} \u2192 {_base_identity(new)}")


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """Every input that differs between two records, down to the pin."""
    changes: list[Change] = []
    for key in ("hash_schema", "platform", "base"):
        if old.get(key) != new.get(key):
            changes.append(Change(key, f"{_short(old.get(key))} \u2192 {_short(new.get(key))}"))
    if old.get("base_pin") != new.get("base_pin"):
        changes.append(_base_change(old, new))
    old_pins: Mapping[str, Mapping[str, str]] = old.get("pins", {})
    new_pins: Mapping[str, Mapping[str, str]] = new.get("pins", {})
    explained: set[str] = set()
    for name in sorted(set(old_pins) | set(new_pins)):
        found = _diff_pins(name, old_pins.get(name, {}), new_pins.get(name, {}))
        changes.extend(found)
        if found:
            explained.add(name)
    old_files: Mapping[str, str] = old.get("files", {})
    new_files: Mapping[str, str] = new.get("files", {})
    for path in sorted(set(old_files) | set(new_files)):
        short = path.removeprefix("envbuild/")
        if path not in old_files:
            changes.append(Change(short, "added"))
        elif path not in new_files:
            changes.append(Change(short, "removed"))
        elif old_files[path] != new_files[path] and short not in explained:
            what = "changed"
            if short in new_pins or short in old_pins:
                what = "changed (same versions: its hashes or index options differ)"
            changes.append(
                Change(
                    short, f"{what} (sha256 {old_files[path][:12]} \u2192 {new_files[path][:12]})"
                )
            )
    return changes


@dataclass(frozen=True)
class Explanation:
    """The inputs of a definition's hash and, against an image, what changed."""

    hash: str
    record: Mapping[str, Any]
    manifest: Mapping[str, Any]
    against: str | None = None
    against_hash: str | None = None
    against_record: Mapping[str, Any] | None = None
    changes: tuple[Change, ...] = ()
    note: str | None = None
    unlocked: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, object]:
        """The ``--json`` shape."""
        return {
            "hash": self.hash,
            "manifest": dict(self.manifest),
            "inputs": dict(self.record),
            "against": self.against,
            "against_hash": self.against_hash,
            "changes": [{"input": c.what, "change": c.detail} for c in self.changes],
            "note": self.note,
            "unlocked": list(self.unlocked),
        }

    def render(self) -> str:
        """The text ``envbuild explain`` prints."""
        lines = [f"hash {self.hash}"]
        record = self.record
        lines.append(f"  hash_schema {record['hash_schema']}, platform {record['platform']}")
        lines.append(
            f"  base {record['base']}"
            + (f" ({_base_identity(record)})" if record.get("base_pin") else " (not pinned)")
        )
        for path, digest in record["files"].items():
            lines.append(f"  {path}  {digest[:12]}")
        for name, pins in record.get("pins", {}).items():
            shown = ", ".join(f"{k} {v}".strip() for k, v in pins.items())
            lines.append(f"  {name}: {shown or '(empty)'}")
        if self.unlocked:
            lines.append("not reproducible: " + "; ".join(self.unlocked))
        if self.against is None:
            lines.append(self.note or "no earlier image to compare with")
        elif self.against_hash == self.hash:
            lines.append(f"against {self.against}: same hash, nothing changed")
        else:
            lines.append(
                f"against {self.against} (hash {(self.against_hash or '?')[:12]}): "
                + (f"{len(self.changes)} input(s) changed" if self.changes else "")
            )
            if self.note:
                lines.append(f"  {self.note}")
            lines.extend("  " + c.render() for c in self.changes)
        return "\n".join(lines) + "\n"


def last_image(engine: Engine, name: str, prefix: str) -> ImageInfo | None:
    """The most recently built image of the environment ``name`` (by labels)."""
    found = engine.list_images(f"{NAME_LABEL}={name}")
    mine = [i for i in found if any(t.startswith(f"{prefix}/{name}:") for t in i.tags)]
    candidates = mine or found
    if not candidates:
        return None
    return max(candidates, key=lambda i: (i.created, i.id))


def explain(
    context: BuildContext,
    digest: str,
    *,
    platform: str,
    manifest: Mapping[str, Any],
    image: ImageInfo | None,
    image_ref: str | None,
    unlocked: tuple[str, ...] = (),
) -> Explanation:
    """Explain ``context`` (whose hash is ``digest``) against ``image`` (if any)."""
    record = inputs_record(context, platform=platform)
    if image is None:
        return Explanation(digest, record, manifest, note=None, unlocked=unlocked)
    old_hash = image.labels.get(HASH_LABEL)
    # Name the image by its hash tag when it has one: that tag never moves.
    by_hash = [t for t in sorted(image.tags) if old_hash and t.endswith(f":{old_hash[:12]}")]
    ref = image_ref or (by_hash or sorted(image.tags) or [image.id])[0]
    raw = image.labels.get(INPUTS_LABEL)
    if raw is None:
        return Explanation(
            digest, record, manifest, ref, old_hash, None, (),
            note="that image carries no record of its inputs (built by an older envbuild, "
            "or not by envbuild): only its hash can be compared",
            unlocked=unlocked,
        )  # fmt: skip
    try:
        old = json.loads(raw)
    except ValueError:
        old = {}
    changes = tuple(diff(old, record)) if old_hash != digest else ()
    return Explanation(digest, record, manifest, ref, old_hash, old, changes, unlocked=unlocked)
