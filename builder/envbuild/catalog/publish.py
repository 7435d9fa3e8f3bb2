"""``envbuild publish``: the catalog's Dockerfiles, locks and package lists, in the open.

For every environment of a catalog (``curated/``), its current version gets a
folder ``<out>/<name>/<version>/`` holding:

* the build context exactly as ``envbuild render -o`` writes it: the rendered
  ``Dockerfile`` and every file it copies (``envbuild/…``);
* ``locks/``: the lock files beside its ``env.toml`` (what ``envbuild lock`` wrote);
* ``manifest.json``: the hashed manifest, the content hash it gives, and the
  definition files (with their digests) that ``envbuild check`` compares;
* ``packages.json``: the base image and the apt, pip and conda packages, locked
  where there are locks, else as declared;
* ``image.json`` (only with ``--with-images``, for an image that exists
  locally): the image's ID and size and the packages read from inside it;
* ``sbom.cdx.json`` beside it: the same packages as a CycloneDX SBOM
  (:mod:`envbuild.catalog.sbom`), linked from the index.

``<out>/index.json`` and ``<out>/index.md`` list every environment and version.
Folders of older versions are history: they are never rewritten, and stay in
the index. Everything except ``image.json`` and ``sbom.cdx.json`` is a function of the catalog and
of envbuild alone (sorted keys, no timestamps, no absolute paths), so
:func:`check` can render it afresh and compare byte for byte: the drift guard
a registry's CI runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envbuild import files as safe_files
from envbuild.cache.hashing import canonical_json, content_hash, manifest
from envbuild.catalog.listing import default_out as default_out  # re-exported
from envbuild.catalog.listing import files_under as _files_under
from envbuild.catalog.listing import folder_listing as _folder_listing
from envbuild.catalog.listing import is_executable as _is_executable
from envbuild.catalog.listing import listings_hold, unfollowed
from envbuild.catalog.order import (
    definition_digest,
    definition_file_digests,
    discover,
    lock_contents,
)
from envbuild.catalog.packages import PackageList, declared, lock_index
from envbuild.definition.model import Environment, load
from envbuild.errors import EngineError, EnvbuildError, UsageError
from envbuild.log import Log
from envbuild.render.context import BuildContext
from envbuild.render.dockerfile import render

if TYPE_CHECKING:
    from envbuild.catalog.diff import ImageEngine
    from envbuild.settings import Settings

GENERATED_BY = "envbuild publish (generated: do not edit; run `envbuild publish` to update)"
INDEX_JSON = "index.json"
INDEX_MD = "index.md"
MANIFEST = "manifest.json"
PACKAGES = "packages.json"
IMAGE = "image.json"
SBOM = "sbom.cdx.json"  # written with image.json; the name is sbom.CYCLONEDX_FILE's
# Files read from an image: never compared by check, never part of the history.
IMAGE_DOCS = (IMAGE, SBOM)
LOCKS = "locks"
# Context files larger than this (or binary) are listed, not copied (see omission).
MAX_PUBLISHED_FILE = 1 << 20

# Frameworks the index names with their version, when a pin (or a lock) gives one.
FRAMEWORKS = (
    "torch",
    "torchvision",
    "tensorflow",
    "tensorflow-cpu",
    "scikit-learn",
    "numpy",
    "jax",
)
_EXACT_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+!_-]*")
_VERSION_NAME = re.compile(r"0|[1-9][0-9]{0,18}")  # ASCII digits: "²" is no version
_IMAGE_DOC = re.compile(r"[^/]+/[0-9]+/(?:" + "|".join(map(re.escape, IMAGE_DOCS)) + ")")

# Reads a current version's image: (environment, content hash) -> image.json data, or None.
ImageReader = Callable[[Environment, str], "dict[str, Any] | None"]


@dataclass(frozen=True)
class PublishedFile:
    """One file of the published folder: its bytes and whether it is executable."""

    data: bytes
    executable: bool = False


@dataclass(frozen=True)
class Release:
    """One environment at one version: a row of the index."""

    name: str
    version: int
    description: str
    python: str | None
    frameworks: tuple[tuple[str, str], ...]
    cuda: str | None
    base: str
    hash: str
    definition_digest: str
    status: str = "current"  # "current", "superseded" or "removed" (no longer in the catalog)
    size: int | None = None  # bytes, from image.json when the image was read
    sbom: bool = False  # whether sbom.cdx.json was written beside that image.json

    @property
    def path(self) -> str:
        """The release's folder, relative to the published folder."""
        return f"{self.name}/{self.version}"

    def to_json(self) -> dict[str, Any]:
        """The row of ``index.json``."""
        return {
            "name": self.name,
            "version": self.version,
            "status": self.status,
            "description": self.description,
            "python": self.python,
            "frameworks": dict(self.frameworks),
            "cuda": self.cuda,
            "base": self.base,
            "hash": self.hash,
            "hash12": self.hash[:12],
            "definition_digest": self.definition_digest,
            "size": self.size,
            "path": self.path,
        }


@dataclass(frozen=True)
class Rendered:
    """A catalog environment's current version, rendered: its files and its row."""

    env: Environment
    context: BuildContext
    hash: str
    files: Mapping[str, PublishedFile]  # relative to the release folder
    release: Release


@dataclass(frozen=True)
class Drift:
    """One way a published folder differs from what ``envbuild publish`` would write."""

    kind: str  # "changed", "missing", "extra" or "corrupt"
    path: str  # relative to the published folder
    detail: str = ""

    def render(self) -> str:
        """One line for a person."""
        return f"{self.kind:<8} {self.path}" + (f"  ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Plan:
    """Everything deterministic the published folder must hold, by relative path."""

    files: Mapping[str, PublishedFile]
    current: tuple[Rendered, ...]
    releases: tuple[Release, ...]
    problems: tuple[Drift, ...] = ()  # history folders that fail their own manifest


@dataclass(frozen=True)
class PublishReport:
    """What :func:`publish` did."""

    out: Path
    written: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    unchanged: int = 0
    images: tuple[str, ...] = ()  # releases whose image.json was written
    warnings: tuple[str, ...] = field(default_factory=tuple)


def guard_out(out: Path) -> None:
    """Refuse an output tree that publish must neither read nor write.

    ``out`` must not be a symlink; it must be absent, an empty folder, or a
    folder publish wrote before (it holds ``index.json``), so ``--out /`` or
    ``--out ~`` is refused before anything is read. Inside it, every entry
    must be a plain folder or regular file: publish never follows a symlink
    it did not create (a release folder linked elsewhere would have it write
    and delete there; a link to ``/dev/zero`` or a FIFO would be read).
    """
    if out.is_symlink():
        raise UsageError(
            f"{out}: is a symlink; publish does not follow symlinks",
            hint="name the real folder with --out",
        )
    if not out.exists():
        return
    if not out.is_dir():
        raise UsageError(f"{out}: is not a folder", hint="name a folder with --out")
    try:
        empty = next(os.scandir(out), None) is None
    except OSError as exc:
        raise UsageError(f"{out}: cannot be read ({exc.strerror})") from None
    index = out / INDEX_JSON
    if not empty and (index.is_symlink() or not index.is_file()):
        raise UsageError(
            f"{out}: is neither empty nor a published folder (it has no {INDEX_JSON})",
            hint="publish into a new or empty folder, or the one `envbuild publish` wrote",
        )
    bad = unfollowed(out)
    if bad:
        raise UsageError(
            f"{out}: holds entries publish does not follow: "
            + ", ".join(bad[:5])
            + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""),
            hint="remove them: a published folder holds only folders and regular files",
        )


def _read(path: Path, out: Path) -> bytes:
    """A published file's bytes: a regular file inside ``out``, bounded."""
    try:
        return safe_files.read_bytes(path, inside=out, limit=safe_files.MAX_LOCK_BYTES)
    except safe_files.UnsafeRead as exc:
        raise UsageError(f"{path}: {exc.reason}", hint=exc.hint) from None


def dump_json(data: Mapping[str, Any]) -> bytes:
    """The published JSON form: indented, sorted keys, UTF-8, final newline."""
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def frameworks(packages: PackageList) -> tuple[tuple[str, str], ...]:
    """The well-known frameworks among the pip packages, with their exact versions."""
    found = []
    for name in FRAMEWORKS:
        version = packages.pip.get(name)
        if version and _EXACT_VERSION.fullmatch(version):
            found.append((name, version))
    return tuple(found)


# --------------------------------------------------------------------------
# Rendering the current versions (pure)
# --------------------------------------------------------------------------


def omission(data: bytes) -> str | None:
    """Why a context file is not copied into the published folder, or ``None``.

    The published folder is committed: binaries in a context (the conda
    prefix of a locked conda environment, say) are named by path and digest in
    manifest.json instead, and ``envbuild render -o`` writes them.
    """
    if b"\0" in data:
        return "binary file: `envbuild render -o DIR` writes it"
    if len(data) > MAX_PUBLISHED_FILE:
        return "large file: `envbuild render -o DIR` writes it"
    return None


def _python_version(env: Environment) -> str | None:
    """The declared Python version, else the one the lock resolved for."""
    if env.python.version:
        return env.python.version
    version = lock_index(env.path).get("python", {}).get("version")
    return str(version) if version else None


def render_release(env: Environment, *, platform: str, conda_store: Path | None = None) -> Rendered:
    """Render ``env``'s release folder: context, locks, manifest.json and packages.json.

    ``conda_store`` is envbuild's conda package store (a conda-locked environment
    renders from it: :func:`envbuild.lock.conda_store` of the settings' state folder).
    """
    context = render(env, conda_store=conda_store)
    digest = content_hash(context, platform=platform)
    files: dict[str, PublishedFile] = {}
    omitted: list[dict[str, Any]] = []
    for rel, item in context.files.items():
        reason = omission(item.data)
        if reason is None:
            files[rel] = PublishedFile(item.data, item.executable)
        else:
            omitted.append({"path": rel, "reason": reason, "size": len(item.data)})
    for name, data in lock_contents(env.path).items():
        files[f"{LOCKS}/{name}"] = PublishedFile(data)
    packages = declared(env, context, conda_store=conda_store)
    definition = {"digest": definition_digest(env), "files": definition_file_digests(env)}
    files[MANIFEST] = PublishedFile(
        dump_json(
            {
                "generated_by": GENERATED_BY,
                "name": env.name,
                "version": env.version,
                "hash": digest,
                "manifest": manifest(context, platform=platform),
                "definition": definition,
                "omitted": omitted,
            }
        )
    )
    python = _python_version(env)
    files[PACKAGES] = PublishedFile(
        dump_json(
            {
                "generated_by": GENERATED_BY,
                "name": env.name,
                "version": env.version,
                "description": env.description,
                "python": python,
                "cuda": env.gpu.cuda,
                **packages.to_json(),
            }
        )
    )
    release = Release(
        name=env.name,
        version=env.version,
        description=env.description,
        python=python,
        frameworks=frameworks(packages),
        cuda=env.gpu.cuda,
        base=packages.base.text,
        hash=digest,
        definition_digest=str(definition["digest"]),
    )
    return Rendered(env, context, digest, files, release)


def render_catalog(
    catalog: Path, *, platform: str, conda_store: Path | None = None
) -> list[Rendered]:
    """Render the current version of every environment in ``catalog``, sorted by name."""
    rendered = [
        render_release(load(folder), platform=platform, conda_store=conda_store)
        for folder in discover(catalog)
    ]
    seen: dict[str, Path] = {}
    for item in rendered:
        if item.env.name in seen:
            raise UsageError(
                f"two environments of {catalog} are named {item.env.name!r}: "
                f"{seen[item.env.name].name} and {item.env.path.name}",
                hint="every environment of a catalog needs its own name",
            )
        seen[item.env.name] = item.env.path
    return sorted(rendered, key=lambda r: r.env.name)


# --------------------------------------------------------------------------
# Reading what is published (history)
# --------------------------------------------------------------------------


def version_folders(out: Path) -> dict[tuple[str, int], Path]:
    """The published release folders ``<out>/<name>/<version>/`` (with a manifest.json)."""
    found: dict[tuple[str, int], Path] = {}
    if not out.is_dir():
        return found
    for name_dir in sorted(out.iterdir()):
        if not name_dir.is_dir() or name_dir.is_symlink() or name_dir.name.startswith("."):
            continue
        for version_dir in sorted(name_dir.iterdir()):
            if (
                version_dir.is_dir()
                and not version_dir.is_symlink()
                and _VERSION_NAME.fullmatch(version_dir.name)
                and (version_dir / MANIFEST).is_file()
            ):
                found[(name_dir.name, int(version_dir.name))] = version_dir
    return found


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a published file (a regular file, bounded); else an error."""
    try:
        data = json.loads(_read(path, path.parent))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UsageError(f"{path}: cannot be read as JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object")
    return data


def read_release(folder: Path, status: str) -> Release:
    """The index row of a published release folder (from its manifest and packages)."""
    meta = read_json(folder / MANIFEST)
    packages_data = read_json(folder / PACKAGES)
    packages = PackageList.from_json(packages_data)
    try:
        return Release(
            name=str(meta["name"]),
            version=int(meta["version"]),
            description=str(packages_data.get("description", "")),
            python=packages_data.get("python"),
            frameworks=frameworks(packages),
            cuda=packages_data.get("cuda"),
            base=packages.base.text,
            hash=str(meta["hash"]),
            definition_digest=str(meta["definition"]["digest"]),
            status=status,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{folder / MANIFEST}: malformed ({exc!r})") from exc


def verify_release(folder: Path, rel: str) -> list[Drift]:
    """Check a published release against its own manifest.json (history is immutable)."""
    problems: list[Drift] = []
    try:
        meta = read_json(folder / MANIFEST)
        hashed = meta["manifest"]
        if hashlib.sha256(canonical_json(hashed)).hexdigest() != meta["hash"]:
            problems.append(Drift("corrupt", f"{rel}/{MANIFEST}", "its hash is not its manifest's"))
        omitted = {str(o["path"]) for o in meta.get("omitted", ())}
        for item in hashed["files"]:
            if item["path"] in omitted:
                continue
            path = folder / item["path"]
            where = f"{rel}/{item['path']}"
            if not path.is_file():
                problems.append(Drift("corrupt", where, "listed in manifest.json, missing"))
            elif hashlib.sha256(_read(path, folder)).hexdigest() != item["sha256"]:
                problems.append(Drift("corrupt", where, "differs from its manifest.json digest"))
            elif _is_executable(path) != bool(item["executable"]):
                problems.append(Drift("corrupt", where, "executable bit differs from manifest"))
    except (EnvbuildError, KeyError, TypeError) as exc:
        problems.append(Drift("corrupt", f"{rel}/{MANIFEST}", f"unreadable: {exc}"))
    if not (folder / PACKAGES).is_file():
        problems.append(Drift("corrupt", f"{rel}/{PACKAGES}", "missing"))
    return problems


def _image_size(folder: Path, digest: str) -> int | None:
    """The image size recorded in ``folder/image.json``, if it describes ``digest``."""
    path = folder / IMAGE
    if not path.is_file():
        return None
    try:
        data = read_json(path)
        if data.get("hash") != digest:
            return None
        return int(data["image"]["size"])
    except (EnvbuildError, KeyError, TypeError, ValueError):
        return None


# --------------------------------------------------------------------------
# The plan: every deterministic file the published folder must hold
# --------------------------------------------------------------------------


def make_plan(rendered: Sequence[Rendered], out: Path, *, catalog_name: str) -> Plan:
    """The complete deterministic content of ``out``: current releases, history, index."""
    files: dict[str, PublishedFile] = {}
    releases: list[Release] = []
    current_names = {r.env.name for r in rendered}
    current_keys = {(r.env.name, r.env.version) for r in rendered}
    for item in rendered:
        for rel, data in item.files.items():
            files[f"{item.release.path}/{rel}"] = data
        size = _image_size(out / item.release.path, item.hash)
        sbom = size is not None and (out / item.release.path / SBOM).is_file()
        releases.append(replace(item.release, size=size, sbom=sbom))
    problems: list[Drift] = []
    for (name, version), folder in version_folders(out).items():
        if (name, version) in current_keys:
            continue
        rel = f"{name}/{version}"
        problems.extend(verify_release(folder, rel))
        for sub, path in _files_under(folder).items():
            if sub not in IMAGE_DOCS:
                files[f"{rel}/{sub}"] = PublishedFile(_read(path, folder), _is_executable(path))
        status = "superseded" if name in current_names else "removed"
        try:
            release = read_release(folder, status)
        except EnvbuildError as exc:
            problems.append(Drift("corrupt", rel, exc.message))
            continue
        size = _image_size(folder, release.hash)
        sbom = size is not None and (folder / SBOM).is_file()
        releases.append(replace(release, size=size, sbom=sbom))
    releases.sort(key=lambda r: (r.name, -r.version))
    files[INDEX_JSON] = PublishedFile(index_json(releases, catalog_name))
    files[INDEX_MD] = PublishedFile(index_markdown(releases, catalog_name).encode("utf-8"))
    return Plan(dict(sorted(files.items())), tuple(rendered), tuple(releases), tuple(problems))


def index_json(releases: Sequence[Release], catalog_name: str) -> bytes:
    """``index.json``: one row per environment and version, newest version first."""
    return dump_json(
        {
            "generated_by": GENERATED_BY,
            "catalog": catalog_name,
            "environments": [r.to_json() for r in releases],
        }
    )


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ") or "—"


def _size(size: int | None) -> str:
    return f"{size / 1e6:.0f} MB" if size is not None else "—"


def index_markdown(releases: Sequence[Release], catalog_name: str) -> str:
    """``index.md``: the same rows as ``index.json``, as a table for people."""
    lines = [
        f"<!-- Generated by `envbuild publish` from {catalog_name}/: do not edit. -->",
        "",
        "# Published environments",
        "",
        f"Every environment of `{catalog_name}/`, each version with its rendered",
        "Dockerfile, build context, locks, hashed manifest and package list. Older",
        "versions stay published and never change. *Hash* names the image",
        "(`<prefix>/<name>:<hash>`); *definition* is the digest of the definition",
        "files that `envbuild check` guards. Size (and the image's CycloneDX SBOM)",
        "are known once the image was read (`envbuild publish --with-images`).",
        "",
        "| environment | version | status | python | frameworks | CUDA | base | hash "
        "| definition | size | description |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in releases:
        framework_text = ", ".join(f"{name} {version}" for name, version in r.frameworks)
        lines.append(
            "| "
            + " | ".join(
                [
                    _cell(r.name),
                    f"[{r.version}]({r.path}/Dockerfile)",
                    r.status,
                    _cell(r.python or ""),
                    _cell(framework_text),
                    _cell(r.cuda or ""),
                    f"`{_cell(r.base)}`",
                    f"`{r.hash[:12]}`",
                    f"`{r.definition_digest[:12]}`",
                    _size(r.size) + (f" ([SBOM]({r.path}/{SBOM}))" if r.sbom else ""),
                    _cell(r.description),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def plan(catalog: Path, out: Path, *, platform: str, conda_store: Path | None = None) -> Plan:
    """Render ``catalog`` and read ``out``'s history: what ``out`` must hold."""
    rendered = render_catalog(catalog, platform=platform, conda_store=conda_store)
    return make_plan(rendered, out, catalog_name=catalog.absolute().name)


# --------------------------------------------------------------------------
# Writing and checking
# --------------------------------------------------------------------------


def _write(path: Path, item: PublishedFile) -> bool:
    """Write ``item`` to ``path`` unless it already holds exactly that; True if written."""
    mode = 0o755 if item.executable else 0o644
    if path.is_file() and not path.is_symlink() and _read(path, path.parent) == item.data:
        if _is_executable(path) == item.executable:
            return False
        os.chmod(path, mode)  # noqa: PTH101
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(item.data)
    os.chmod(tmp, mode)  # noqa: PTH101
    tmp.replace(path)
    return True


def _unbumped(folder: Path, release: Release) -> str | None:
    """A warning when ``folder`` published this version from another definition."""
    try:
        old = read_json(folder / MANIFEST)["definition"]["digest"]
    except (EnvbuildError, KeyError, TypeError):
        return None
    if old == release.definition_digest:
        return None
    return (
        f"{release.name} {release.version}: the definition changed but its version did not; "
        "`envbuild check` fails until `version` is bumped"
    )


def publish(
    catalog: Path,
    out: Path,
    *,
    platform: str,
    read_image: ImageReader | None = None,
    log: Log = lambda line: None,
    conda_store: Path | None = None,
) -> PublishReport:
    """Write every current release of ``catalog`` and the index into ``out``.

    Folders of other versions are left alone. In a current release's folder,
    files publish no longer produces are removed (an ``image.json`` only when
    it describes another hash). With ``read_image``, an ``image.json`` is
    written for each release whose image it finds.
    """
    guard_out(out)
    rendered = render_catalog(catalog, platform=platform, conda_store=conda_store)
    warnings = []
    for item in rendered:
        warning = _unbumped(out / item.release.path, item.release)
        if warning:
            warnings.append(warning)
    images: list[str] = []
    written: list[str] = []
    if read_image is not None:
        for item in rendered:
            data = read_image(item.env, item.hash)
            if data is None:
                log(f"envbuild: {item.release.path}: no local image {item.hash[:12]}; skipped")
                continue
            doc: dict[str, Any] = {
                **data,
                "generated_by": GENERATED_BY,
                "name": item.env.name,
                "version": item.env.version,
                "hash": item.hash,
            }
            rel = f"{item.release.path}/{IMAGE}"
            if _write(out / rel, PublishedFile(dump_json(doc))):
                written.append(rel)
            rel = f"{item.release.path}/{SBOM}"
            if _write(out / rel, PublishedFile(image_sbom(doc, item.env).encode("utf-8"))):
                written.append(rel)
            images.append(item.release.path)
    result = make_plan(rendered, out, catalog_name=catalog.absolute().name)
    unchanged = 0
    for rel, planned in result.files.items():
        if _write(out / rel, planned):
            written.append(rel)
        else:
            unchanged += 1
    removed: list[str] = []
    for item in result.current:
        folder = out / item.release.path
        for sub, path in _files_under(folder).items():
            rel = f"{item.release.path}/{sub}"
            if rel in result.files:
                continue
            if sub in IMAGE_DOCS and _image_size(folder, item.hash) is not None:
                continue
            path.unlink()
            removed.append(rel)
        subs = [Path(root) / d for root, dirs, _ in os.walk(folder) for d in dirs]
        for sub_dir in sorted(subs, reverse=True):
            if not sub_dir.is_symlink() and not any(sub_dir.iterdir()):
                sub_dir.rmdir()
    warnings.extend(p.render() for p in result.problems)
    return PublishReport(
        out, tuple(sorted(written)), tuple(removed), unchanged, tuple(images), tuple(warnings)
    )


def image_reader(engine: ImageEngine, settings: Settings) -> ImageReader:
    """An :data:`ImageReader` for images built with ``settings`` (``<prefix>/<name>:<hash12>``).

    An image counts only if its hash label carries the full hash; its packages
    are read by running commands inside it (see :func:`envbuild.catalog.packages.from_image`).
    A release is hashed offline, but the image of an environment whose base image is
    not locked was built under another hash, one that holds the image ID the engine
    has for that base: its image is looked up under that hash
    (:func:`envbuild.build.builder.resolve`, one inspect of the base), so that
    ``--with-images`` finds it too.
    """
    from envbuild.build.builder import base_identity, resolve
    from envbuild.catalog.packages import from_image
    from envbuild.identity import HASH_LABEL, hash_tag

    def read(env: Environment, digest: str) -> dict[str, Any] | None:
        built = digest
        try:
            if base_identity(env, settings, engine) is not None:  # an unlocked base image
                built = resolve(env, settings=settings, engine=engine).hash
        except EngineError:  # the base is not in the engine: nor is an image built on it
            return None
        tag = hash_tag(settings.prefix, env.name, built)
        info = engine.inspect_image(tag)
        if info is None or info.labels.get(HASH_LABEL) != built:
            return None
        packages = from_image(engine, tag, info.labels)
        image = {"id": info.id, "size": info.size, "created": info.created, "ref": tag}
        return {"image": image, "sbom": packages.to_json()}

    return read


def image_sbom(doc: Mapping[str, Any], env: Environment) -> str:
    """The CycloneDX SBOM of an ``image.json`` document: the packages it read, as JSON."""
    from envbuild.catalog import sbom

    image = doc.get("image") or {}
    subject = sbom.Subject(
        str(image.get("ref") or f"{env.name}:{env.version}"),
        str(image.get("id", "")),
        str(image.get("created") or ""),
    )
    return sbom.dumps(sbom.cyclonedx(PackageList.from_json(doc.get("sbom") or {}), subject))


def check(
    catalog: Path,
    out: Path,
    *,
    platform: str,
    conda_store: Path | None = None,
    home: Path | None = None,
) -> list[Drift]:
    """How ``out`` differs from what :func:`publish` would write now (empty: no drift).

    Compares every deterministic file byte for byte (and its executable bit);
    ``image.json`` files are not compared. Older releases are checked against
    their own ``manifest.json``.

    With ``home`` (envbuild's state folder), a check that found no drift is
    remembered with every file it depended on (see :func:`_recall_check`), and
    a later check of unchanged files answers from that record without
    rendering.
    """
    from envbuild import reads

    guard_out(out)
    if home is not None and _recall_check(home, catalog, out, platform, conda_store):
        return []
    # Listed before rendering: a file or folder added meanwhile makes the record miss.
    listed = {str(f): _folder_listing(f) for f in discover(catalog)} if home is not None else {}
    with reads.recording() as seen:
        result = plan(catalog, out, platform=platform, conda_store=conda_store)
    drift: list[Drift] = list(result.problems)
    present = _files_under(out) if out.is_dir() else {}
    for rel, item in result.files.items():
        path = present.get(rel)
        if path is None:
            drift.append(Drift("missing", rel))
        elif _read(path, out) != item.data:
            drift.append(Drift("changed", rel))
        elif _is_executable(path) != item.executable:
            drift.append(Drift("changed", rel, "executable bit"))
    for rel in present:
        if rel not in result.files and not _IMAGE_DOC.fullmatch(rel):
            drift.append(Drift("extra", rel))
    if home is not None and not drift and seen.refused is None:
        _remember_check(
            home, catalog, out, platform, conda_store, result, seen.files, present, listed
        )
    return sorted(drift, key=lambda d: (d.path, d.kind))


# --------------------------------------------------------------------------
# The check's record: a clean check of unchanged files need not render again
# --------------------------------------------------------------------------

# The envbuild source that decides what publish writes: rendering's (what the
# hash memo records) and the catalog's (this module, the package lists, ...).
CHECK_SOURCES = ("catalog",)
CHECK_FORMAT = 1


def _check_identity(
    catalog: Path, out: Path, platform: str, conda_store: Path | None
) -> tuple[str, Path]:
    """The record's identity and the part of its path under the state folder."""
    from envbuild import __version__
    from envbuild.cache import memo

    ident = "\0".join(
        [
            str(CHECK_FORMAT),
            __version__,
            str(catalog.absolute()),
            str(out.absolute()),
            platform,
            str(conda_store),
            memo.installation(),
        ]
    )
    name = hashlib.sha256(ident.encode()).hexdigest()[:32]
    return ident, Path("cache") / "publish-check" / f"{name}.json"


def _remember_check(
    home: Path,
    catalog: Path,
    out: Path,
    platform: str,
    conda_store: Path | None,
    result: Plan,
    read: Mapping[str, str | None],
    present: Mapping[str, Path],
    listed: Mapping[str, dict[str, bool]],
) -> None:
    """Record a check that found no drift, with everything it depended on.

    The files: each one the renders read (:mod:`envbuild.reads`: the
    definitions with their parents, locks, base Dockerfiles, templates), every
    file of every environment folder and of the folders they extend, every
    published file (its digest is the
    one the check compared equal), and envbuild's rendering and catalog source;
    the listings: the catalog's environment folders, the files of each, and of
    the published folder, with their executable bits. Nothing is recorded when
    a file already differs from what the check saw. ``listed``: the catalog's
    folders and their files as listed before rendering; the published folder
    is recorded as the check compared it (``present``).
    """
    from envbuild.cache import memo

    if [str(folder) for folder in discover(catalog)] != list(listed):
        return  # an environment came or went while the check ran
    wanted: dict[str, str | None] = dict(read)
    folders = dict(listed)
    for item in result.current:  # the parents too: one outside the catalog is listed nowhere else
        for parent in item.env.parents:
            if str(parent) not in folders:
                folders[str(parent)] = _folder_listing(parent)
    for folder_name, listing in folders.items():
        for rel in listing:
            path = str(Path(folder_name) / rel)
            if path not in wanted:
                wanted[path] = memo.file_digest(path)
    for rel, file in present.items():
        planned = result.files.get(rel)  # what the check compared the file with, if it did
        data = planned.data if planned is not None else _read(file, out)  # image.json
        wanted[str(file.absolute())] = hashlib.sha256(data).hexdigest()
    entries = memo.file_entries(wanted.items(), sources=(*memo.RENDERING_SOURCES, *CHECK_SOURCES))
    if entries is None:
        return
    ident, where = _check_identity(catalog, out, platform, conda_store)
    memo.write_record(
        home / where,
        {
            "for": ident,
            "catalog": list(listed),
            "folders": folders,
            "published": {  # the bits the check compared equal (image docs: as read now)
                rel: result.files[rel].executable if rel in result.files else _is_executable(file)
                for rel, file in present.items()
            },
            "files": entries,
        },
    )


def _recall_check(
    home: Path, catalog: Path, out: Path, platform: str, conda_store: Path | None
) -> bool:
    """Whether a recorded clean check still holds: the same environment folders in
    ``catalog``, the same files (and executable bits) in each and in ``out``, and
    every recorded file with its recorded content (:func:`envbuild.cache.memo.unchanged`).
    Anything unreadable or different is a miss: the check renders.
    """
    from envbuild.cache import memo

    ident, where = _check_identity(catalog, out, platform, conda_store)
    try:
        data = json.loads(memo.read_record(home / where))
        if data["for"] != ident or not listings_hold(data, catalog, out):
            return False
        return memo.unchanged(data["files"]) is not None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EnvbuildError):
        return False


def check_record(
    home: Path, catalog: Path, out: Path, platform: str, conda_store: Path | None
) -> dict[str, Any] | None:
    """The record of a clean check of ``catalog`` against ``out`` (what
    :func:`_remember_check` wrote) while it still holds (:func:`_recall_check`), else
    ``None``: what a green ``ci`` job's record (:mod:`envbuild.catalog.ci_record`) builds on.
    """
    if not _recall_check(home, catalog, out, platform, conda_store):
        return None
    from envbuild.cache import memo

    _, where = _check_identity(catalog, out, platform, conda_store)
    try:
        data: dict[str, Any] = json.loads(memo.read_record(home / where))
    except (OSError, ValueError):
        return None
    return data
