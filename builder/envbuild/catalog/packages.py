"""Package lists: what an environment declares or locks, and what an image holds.

A :class:`PackageList` names the base image and, per ecosystem (``apt``, ``pip``,
``conda``), each package with its version. It comes from one of three places:

* a definition folder (:func:`declared`): the apt packages as rendered (with
  their ``=version`` pins, if any), pip and conda from their lock files when
  ``envbuild lock`` wrote them, else the declared specs; the base as the
  Dockerfile's final ``FROM`` names it, with the lock's pin;
* a published version's ``packages.json`` (:meth:`PackageList.from_json`);
* an image (:func:`from_image`): ``dpkg-query``, ``python -m pip list`` and
  ``conda list`` run inside it, each in its own short-lived container.

Everything but :func:`from_image` is pure: no engine, no network. Versions are
strings: an exact version (``1.6.0``), a declared specifier when nothing pins it
(``>=1.26``), or ``None`` when nothing is known (an unpinned apt package).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envbuild import files
from envbuild.definition.model import Environment
from envbuild.engine.protocols import ContainerRuntime, ContainerSpec
from envbuild.engine.runner import run_to_completion
from envbuild.errors import EngineError, UsageError
from envbuild.identity import BASE_ID_LABEL, ENGINE_BASE, INPUTS_LABEL
from envbuild.identity import SBOM_LABEL as SBOM_LABEL  # re-exported
from envbuild.lock.model import CONDA_LOCK_FILE, INDEX_FILE, PIP_LOCK_FILE
from envbuild.lock.model import read as read_locks
from envbuild.render.context import BuildContext

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ECOSYSTEMS = ("apt", "pip", "conda")


# The label the rendered Dockerfile gives the declared base image.
BASE_LABEL = "org.opencontainers.image.base.name"

SBOM_TIMEOUT = 120  # seconds per command run inside an image

# The commands that read an image's packages (argv lists: no shell involved).
# dpkg's status database: each package's state ("ii " is installed), name,
# version and architecture. Packages removed but not purged are listed too.
DPKG_ARGV = (
    "dpkg-query",
    "-W",
    "-f",
    "${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n",
)
PIP_ARGV = ("python", "-m", "pip", "list", "--format", "json", "--disable-pip-version-check")
CONDA_ARGV = ("conda", "list", "--json")
OS_ARGV = ("cat", "/etc/os-release")
# The os-release keys a package list keeps (they name the distribution in purls).
OS_KEYS = ("ID", "VERSION_ID", "VERSION_CODENAME", "PRETTY_NAME")

# Labels that pin the base: OCI's manifest digest, or envbuild's image ID.
BASE_DIGEST_LABEL = "org.opencontainers.image.base.digest"

Versions = Mapping[str, "str | None"]


@dataclass(frozen=True)
class Base:
    """The base image: the reference as built on, and what pins it (if anything)."""

    image: str | None  # e.g. "ubuntu:20.04"; None when unknown
    pin: str | None = None  # a registry digest or, for a local-only image, its image ID
    pin_kind: str | None = None  # "digest" or "image-id"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {"image": self.image, "pin": self.pin, "pin_kind": self.pin_kind}

    @property
    def text(self) -> str:
        """How a person reads it: ``ref``, ``ref@digest``, or ``ref (image ID …)``.

        An image ID is not a registry digest: ``ref@<image ID>`` would name a
        manifest that does not exist, so it is never written that way.
        """
        if self.image is None:
            return "(unknown)"
        if not self.pin:
            return self.image
        if self.pin_kind == "image-id":
            return f"{self.image} (image ID {self.pin.removeprefix('sha256:')[:12]})"
        return f"{self.image}@{self.pin}"


@dataclass(frozen=True)
class PackageList:
    """The base and the packages of one environment, version or image."""

    base: Base
    apt: Versions = field(default_factory=dict)
    pip: Versions = field(default_factory=dict)
    conda: Versions = field(default_factory=dict)
    # Where each ecosystem's list came from: "definition", "lock:<file>", "image".
    sources: Mapping[str, str] = field(default_factory=dict)
    # Known only for an image: each apt package's dpkg architecture ("amd64",
    # "all"), and the distribution's /etc/os-release (the keys of OS_KEYS).
    apt_arch: Mapping[str, str] = field(default_factory=dict)
    os: Mapping[str, str] = field(default_factory=dict)

    def packages(self, ecosystem: str) -> Versions:
        """The packages of ``ecosystem`` (one of :data:`ECOSYSTEMS`)."""
        items: Versions = getattr(self, ecosystem)
        return items

    def to_json(self) -> dict[str, Any]:
        """The ``packages.json`` shape (without the published metadata), sorted."""
        out: dict[str, Any] = {"base": self.base.to_json()}
        if self.os:
            out["os"] = dict(sorted(self.os.items()))
        for eco in ECOSYSTEMS:
            arch = self.apt_arch if eco == "apt" else {}
            out[eco] = {
                "source": self.sources.get(eco, "definition"),
                "packages": [
                    {"name": name, "version": version}
                    | ({"arch": arch[name]} if name in arch else {})
                    for name, version in sorted(self.packages(eco).items())
                ],
            }
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PackageList:
        """Read what :meth:`to_json` wrote (e.g. a published ``packages.json``)."""
        base = data.get("base") or {}
        lists: dict[str, dict[str, str | None]] = {}
        sources: dict[str, str] = {}
        arch: dict[str, str] = {}
        for eco in ECOSYSTEMS:
            section = data.get(eco) or {}
            lists[eco] = {str(p["name"]): p.get("version") for p in section.get("packages", ())}
            sources[eco] = str(section.get("source", "definition"))
            if eco == "apt":
                arch = {
                    str(p["name"]): str(p["arch"])
                    for p in section.get("packages", ())
                    if p.get("arch")
                }
        return cls(
            base=Base(base.get("image"), base.get("pin"), base.get("pin_kind")),
            apt=lists["apt"],
            pip=lists["pip"],
            conda=lists["conda"],
            sources=sources,
            apt_arch=arch,
            os={str(k): str(v) for k, v in (data.get("os") or {}).items()},
        )


# --------------------------------------------------------------------------
# Names and parsers (pure)
# --------------------------------------------------------------------------


def normalize_pip_name(name: str) -> str:
    """PEP 503 normalisation: ``Scikit_Learn`` and ``scikit-learn`` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


_PIP_REQ = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:\[[^\]]*\])?\s*"
    r"(?P<spec>[^;]*?)\s*(?:;.*)?$"
)
_EXACT = re.compile(r"^={2,3}\s*(?P<version>[A-Za-z0-9.+!_-]+)$")


def parse_pip_requirement(text: str) -> tuple[str, str | None] | None:
    """``("torch", "1.6.0")`` for ``torch==1.6.0``; ``("numpy", ">=1.26")`` for a range."""
    match = _PIP_REQ.match(text)
    if match is None:
        return None
    spec = re.sub(r"\s+", "", match.group("spec")).strip("()")
    exact = _EXACT.match(spec)
    version = exact.group("version") if exact else (spec or None)
    return normalize_pip_name(match.group("name")), version


def parse_requirements(text: str) -> dict[str, str | None]:
    """The packages of a requirements file (``uv pip compile`` output with hashes)."""
    out: dict[str, str | None] = {}
    joined = re.sub(r"\\\r?\n", " ", text)
    for raw in joined.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        line = re.split(r"\s--?[A-Za-z]", " " + line, maxsplit=1)[0].strip()
        parsed = parse_pip_requirement(line)
        if parsed is not None:
            out[parsed[0]] = parsed[1]
    return out


_CONDA_SPEC = re.compile(
    r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*::)?(?P<name>[A-Za-z0-9_][A-Za-z0-9._-]*)\s*(?P<spec>.*)$"
)


def parse_conda_spec(text: str) -> tuple[str, str | None]:
    """``("mkl", "2020.2")`` for ``mkl=2020.2``; ``("numpy", ">=1.26")`` for a range."""
    match = _CONDA_SPEC.match(text.strip())
    if match is None:
        return text.strip().lower(), None
    spec = re.sub(r"\s+", "", match.group("spec"))
    if spec.startswith("=="):
        spec = spec[2:]
    elif spec.startswith("=") and not spec.startswith("=="):
        spec = spec[1:]
    return match.group("name").lower(), spec or None


def parse_conda_explicit(text: str) -> dict[str, str | None]:
    """The packages of conda-lock's explicit lock (one package URL a line)."""
    out: dict[str, str | None] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "@")):
            continue
        filename = line.split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        for suffix in (".tar.bz2", ".conda"):
            if filename.endswith(suffix):
                filename = filename[: -len(suffix)]
        parts = filename.rsplit("-", 2)
        if len(parts) == 3:
            out[parts[0].lower()] = parts[1]
    return out


@dataclass(frozen=True)
class DpkgPackage:
    """One installed package of dpkg's status database."""

    name: str
    version: str | None
    arch: str | None = None


def parse_dpkg_status(text: str) -> list[DpkgPackage]:
    """The installed packages in the output of ``dpkg-query`` run with :data:`DPKG_ARGV`.

    A line is ``status<TAB>name<TAB>version<TAB>arch``; a package whose status
    is not installed (removed, its configuration files left) is skipped. Lines
    of ``name<TAB>version`` alone (an older format) are read as installed.
    """
    out: list[DpkgPackage] = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) >= 4:
            status, name, version, arch = fields[:4]
            # db:Status-Abbrev: wanted, then current state ("i": installed), then errors.
            if len(status) < 2 or status[1] != "i":
                continue
        else:
            name, version, arch = fields[0], (fields[1] if len(fields) > 1 else ""), ""
        if name:
            out.append(DpkgPackage(name, version or None, arch or None))
    return out


def parse_dpkg(text: str) -> dict[str, str | None]:
    """The installed packages and versions in the output of :data:`DPKG_ARGV`."""
    return {p.name: p.version for p in parse_dpkg_status(text)}


def parse_os_release(text: str) -> dict[str, str]:
    """The :data:`OS_KEYS` of an ``/etc/os-release`` file (shell-quoted values unquoted)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key not in OS_KEYS:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key] = value
    return out


def parse_pip_list(text: str) -> dict[str, str | None]:
    """The output of ``pip list --format json``."""
    data = json.loads(text) if text.strip() else []
    return {normalize_pip_name(str(p["name"])): str(p["version"]) for p in data}


def parse_conda_list(text: str) -> dict[str, str | None]:
    """The output of ``conda list --json`` (conda's own packages, not pip's)."""
    data = json.loads(text) if text.strip() else []
    return {
        str(p["name"]).lower(): str(p["version"])
        for p in data
        if p.get("channel") != "pypi" and p.get("platform") != "pypi"
    }


def parse_apt(specs: Iterable[str]) -> dict[str, str | None]:
    """Declared apt packages: ``git=1:2.39`` pins a version, a bare name does not."""
    out: dict[str, str | None] = {}
    for spec in specs:
        name, _, version = spec.partition("=")
        out[name.split(":", 1)[0]] = version or None
    return out


_FROM = re.compile(
    r"^FROM\s+(?:--\S+\s+)*(?P<ref>\S+)(?:\s+AS\s+(?P<stage>\S+))?\s*$", re.IGNORECASE
)


def final_base(dockerfile: str) -> str | None:
    """The image the final stage of ``dockerfile`` starts from (stage names followed)."""
    stages: dict[str, str] = {}
    last: str | None = None
    for line in dockerfile.splitlines():
        match = _FROM.match(line.strip())
        if match is None:
            continue
        ref = match.group("ref")
        ref = stages.get(ref.lower(), ref)
        if match.group("stage"):
            stages[match.group("stage").lower()] = ref
        last = ref
    return last


# --------------------------------------------------------------------------
# From a definition folder (and its locks)
# --------------------------------------------------------------------------


def lock_index(folder: Path) -> dict[str, Any]:
    """The parsed ``env.lock.toml`` beside ``folder/env.toml`` (empty when not locked)."""
    path = folder / INDEX_FILE
    try:
        text = files.read_text(path, inside=folder, limit=files.MAX_LOCK_BYTES)
    except files.FileMissing:
        return {}
    except files.UnsafeRead as exc:
        raise UsageError(f"{path}: {exc.reason}", hint=exc.hint) from None
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except (ValueError, RecursionError) as exc:  # TOMLDecodeError is a ValueError
        raise UsageError(
            f"{path}: cannot be read ({exc})", hint="run `envbuild lock` to rewrite it"
        ) from None
    return data


def declared(
    env: Environment, context: BuildContext | None = None, *, conda_store: Path | None = None
) -> PackageList:
    """The packages ``env`` declares, or locks where ``envbuild lock`` wrote locks.

    Without ``context``, ``env`` is rendered (a conda-locked one from ``conda_store``,
    envbuild's package store: :func:`envbuild.lock.conda_store`).

    Lock files are read by the lock model (:func:`envbuild.lock.model.read`):
    the ones its index names, checked against their recorded digests.
    """
    from envbuild.render.dockerfile import apt_packages, render

    if context is None:
        context = render(env, conda_store=conda_store)
    locks = read_locks(env.path)
    sources = {"apt": "definition", "pip": "definition", "conda": "definition"}

    pip: dict[str, str | None] = {}
    if env.pip.packages and locks is not None and locks.pip is not None:
        pip = parse_requirements(locks.pip.data.decode("utf-8", "replace"))
        sources["pip"] = f"lock:{PIP_LOCK_FILE}"
    else:
        for spec in env.pip.packages:
            parsed = parse_pip_requirement(spec)
            if parsed is not None:
                pip[parsed[0]] = parsed[1]

    conda: dict[str, str | None] = {}
    if locks is not None and locks.conda is not None:
        conda = parse_conda_explicit(locks.conda.data.decode("utf-8", "replace"))
        sources["conda"] = f"lock:{CONDA_LOCK_FILE}"
    else:
        conda = dict(parse_conda_spec(spec) for spec in env.conda.packages)

    ref = final_base(context.dockerfile) or env.base.image
    pin: str | None = None
    pin_kind: str | None = None
    if ref and "@" in ref:
        ref, pin = ref.split("@", 1)
        pin_kind = "digest"
    if locks is not None and locks.base is not None:
        pin, pin_kind = locks.base.id, locks.base.kind
    return PackageList(
        base=Base(ref, pin, pin_kind),
        apt=parse_apt(apt_packages(env)),
        pip=pip,
        conda=conda,
        sources=sources,
    )


# --------------------------------------------------------------------------
# From an image: commands run inside it
# --------------------------------------------------------------------------


def capture(
    engine: ContainerRuntime, image: str, argv: tuple[str, ...], timeout: float = SBOM_TIMEOUT
) -> tuple[int, str]:
    """Run ``argv`` in a fresh container of ``image``: ``(exit code, stdout)``.

    A command the image does not have answers 127, as a shell would. The
    container is removed on every path and killed after ``timeout`` seconds.
    """
    done = run_to_completion(
        engine,
        ContainerSpec(image=image, argv=argv, labels={SBOM_LABEL: "1"}),
        timeout=timeout,
    )
    if done.timed_out:
        raise EngineError(f"`{' '.join(argv)}` in {image} did not finish in {timeout:.0f}s")
    return done.exit_code, done.text()


def from_image(
    engine: ContainerRuntime, image: str, labels: Mapping[str, str] | None = None
) -> PackageList:
    """The packages installed in ``image``: dpkg's database, pip's and conda's lists.

    An image without dpkg, python or conda has an empty list for it; a command
    that runs and fails is an error naming it. The base and its pin come from
    ``labels`` (see :func:`base_from_labels`); the distribution from
    ``/etc/os-release``.
    """
    lists: dict[str, dict[str, str | None]] = {}
    arch: dict[str, str] = {}
    for eco, argv in (("apt", DPKG_ARGV), ("pip", PIP_ARGV), ("conda", CONDA_ARGV)):
        code, out = capture(engine, image, argv)
        if code == 127 or (eco != "apt" and code != 0 and not out.strip()):
            lists[eco] = {}  # the image has no such tool (or pip/conda are absent)
            continue
        if code != 0:
            raise EngineError(f"`{' '.join(argv)}` in {image} exited with {code}")
        try:
            if eco == "apt":
                rows = parse_dpkg_status(out)
                lists[eco] = {p.name: p.version for p in rows}
                arch = {p.name: p.arch for p in rows if p.arch}
            elif eco == "pip":
                lists[eco] = parse_pip_list(out)
            else:
                lists[eco] = parse_conda_list(out)
        except (ValueError, KeyError, TypeError) as exc:
            raise EngineError(
                f"cannot read the output of `{' '.join(argv)}` in {image}: {exc}"
            ) from exc
    code, out = capture(engine, image, OS_ARGV)
    return PackageList(
        base=base_from_labels(labels or {}),
        apt=lists["apt"],
        pip=lists["pip"],
        conda=lists["conda"],
        sources=dict.fromkeys(ECOSYSTEMS, "image"),
        apt_arch=arch,
        os=parse_os_release(out) if code == 0 else {},
    )


def base_from_labels(labels: Mapping[str, str]) -> Base:
    """The base of an image envbuild built, from its labels.

    The reference is the OCI base name label; the pin, in this order: a
    ``ref@digest`` reference, OCI's base digest label (a locked base), the
    image-ID label (a base locked to a local image), or the base's identity in
    the record of the hash's inputs (for an unlocked base, the image ID the
    engine held when it was built).
    """
    ref = labels.get(BASE_LABEL)
    if ref and "@" in ref:
        ref, pin = ref.split("@", 1)
        return Base(ref, pin, "digest")
    if labels.get(BASE_DIGEST_LABEL):
        return Base(ref, labels[BASE_DIGEST_LABEL], "digest")
    if labels.get(BASE_ID_LABEL):
        return Base(ref, labels[BASE_ID_LABEL], "image-id")
    try:
        record = json.loads(labels.get(INPUTS_LABEL) or "{}")
        kind, _, pin = str(record.get("base_pin") or "").partition(":")
    except (ValueError, AttributeError):
        kind, pin = "", ""
    if pin and kind in ("digest", "image-id", ENGINE_BASE):
        return Base(ref, pin, "digest" if kind == "digest" else "image-id")
    return Base(ref)
