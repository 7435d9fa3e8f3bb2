"""Base images built from distribution package archives (``envbuild base bootstrap``).

Where no registry can be reached, envbuild builds the base images itself: a
root filesystem from the distribution's package archive (``mmdebstrap``), packed
as a single-layer ``docker-archive`` and loaded into the engine. The chain from
distribution packages to the image is readable (each recipe below is the whole
story) and rebuildable.

The pipeline of :func:`bootstrap`:

1. ``mmdebstrap`` writes the root filesystem as a tar. ``SOURCE_DATE_EPOCH`` is
   always set and the host's ``/etc/resolv.conf`` and ``/etc/hostname`` are
   blanked, so the same mirror state gives the same bytes on any host.
2. The tar is checked for a shell and apt before the engine sees it (an empty
   or truncated stream would otherwise become a valid, empty image).
3. envbuild writes a ``docker-archive`` around that tar itself, with a fixed
   image config (``created`` is the epoch). The image ID is the digest of that
   config, so the same root filesystem always gets the same image ID, which
   ``docker import`` (it stamps the current time) cannot give.
4. The engine loads it under a temporary tag, a container runs a check, and
   only then is the target tag set and the temporary tag removed. On any
   failure, Ctrl-C included, the temporaries go and the target tag is left
   untouched.

The archive state is recorded: before mmdebstrap runs, every pocket's Release
file is read from the mirror, and the distribution, suite, mirror and each
pocket's Release ``Date:`` become image labels (:class:`envbuild.lock.model.
BaseArchive`, which ``envbuild lock`` copies into the lock). The same mirror
serving the same state gives the same image ID; a snapshot mirror
(``http://snapshot.debian.org/archive/debian/20240601T000000Z``, or
snapshot.ubuntu.com's ``/ubuntu/20240601T000000Z``) serves one state forever,
so ``base bootstrap REF --mirror URL`` makes the same base anywhere. The
security pocket of a Debian snapshot comes from the ``debian-security``
snapshot of the same time, and apt does not refuse a snapshot's Release
files for having expired.

Supported references (:data:`SUPPORTED`): ``debian:bookworm-slim`` (alias
``debian:12-slim``), ``ubuntu:20.04`` (``ubuntu:focal``), ``ubuntu:22.04``
(``ubuntu:jammy``) and ``ubuntu:24.04`` (``ubuntu:noble``). Only the slim
flavour of Debian is offered: ``debian:bookworm`` and ``debian:12`` upstream
keep documentation and locales that this recipe leaves out, so answering to
their names would be a lie.

The engine is reached through :mod:`envbuild.engine` only (its image store
and its container runner); mmdebstrap is the one program run here.
"""

from __future__ import annotations

import contextlib
import datetime
import difflib
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, Literal

from envbuild import process
from envbuild.engine.protocols import ContainerEngine, ContainerSpec, ImageStore
from envbuild.engine.runner import run_to_completion, shielded
from envbuild.errors import (
    BootstrapError,
    EngineError,
    ToolMissingError,
    UsageError,
)
from envbuild.identity import BASE_RECIPE_LABEL
from envbuild.lock.model import BaseArchive
from envbuild.log import Log
from envbuild.settings import Settings, load_settings

__all__ = [
    "SUPPORTED",
    "TEMP_REPOSITORY",
    "UBUNTU_ARCHIVE_KEYRING_SHA256",
    "UBUNTU_KEYRING_DEB",
    "UBUNTU_KEYRING_DEB_SHA256",
    "BaseRecipe",
    "BootstrapResult",
    "archive_state",
    "bootstrap",
    "check_mirror",
    "image_config",
    "import_rootfs",
    "is_present",
    "mmdebstrap_command",
    "recipe_for",
    "security_mirror",
    "ubuntu_archive_keyring",
    "write_docker_archive",
]

MirrorKind = Literal["debian", "ubuntu"]

#: Repository of the temporary tags a bootstrap loads under before verifying.
TEMP_REPOSITORY = "envbuild-tmp/bootstrap"

# --- the Ubuntu archive key -------------------------------------------------
# Debian 12 has no package carrying Ubuntu's archive key. It comes from the
# Ubuntu archive's own keyring package, whose digest is pinned here: this pin is
# the trust anchor (a download is never trusted on first use). The .deb holds
# the 2012 and 2018 "Ubuntu Archive Automatic Signing Key"s
# (790B C727 7767 219C 42C8 6F93 3B4F E6AC C0B2 1F32 and
#  F6EC B376 2474 EDA9 D21B 7022 8719 20D1 991B C93C), which sign focal to noble.
#: File name of the pinned keyring package in ``pool/main/u/ubuntu-keyring/``.
UBUNTU_KEYRING_DEB = "ubuntu-keyring_2023.11.28.1_all.deb"
#: sha256 of :data:`UBUNTU_KEYRING_DEB`.
UBUNTU_KEYRING_DEB_SHA256 = "36de43b15853ccae0028e9a767613770c704833f82586f28eb262f0311adb8a8"
#: sha256 of ``usr/share/keyrings/ubuntu-archive-keyring.gpg`` inside that package.
UBUNTU_ARCHIVE_KEYRING_SHA256 = "80a36b0a6de2f69f49d2df75ef473ccde121e9e190b9ea01d20a4f63778d5c31"
_KEYRING_MEMBER = "usr/share/keyrings/ubuntu-archive-keyring.gpg"

_HOOKS = "/usr/share/mmdebstrap/hooks"
# Blank what mmdebstrap copies from the host, or the bytes differ between hosts.
_BLANK_HOST_FILES = (': > "$1/etc/resolv.conf"', ': > "$1/etc/hostname"')
# What a usable base must contain (paths as they appear in mmdebstrap's tar).
_REQUIRED_MEMBERS = ("usr/bin/apt-get", "usr/bin/dpkg")
_SHELLS = ("bin/sh", "usr/bin/sh")
# dpkg path filters of the official slim Debian images: no man pages, docs
# (copyright files stay, the licences require them) or translations. They are
# written to /etc/dpkg/dpkg.cfg.d/ and so also apply to packages installed later.
_DEBIAN_SLIM_DPKG = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/groff/*",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/linda/*",
)
_UBUNTU_COMPONENTS = ("main", "restricted", "universe", "multiverse")
# A snapshot mirror's URL: .../archive/<archive>/<UTC time> (snapshot.debian.org) or
# .../<archive>/<UTC time> (snapshot.ubuntu.com).
_SNAPSHOT = re.compile(r"^(?P<head>.*/)(?P<archive>[A-Za-z0-9._-]+)/(?P<stamp>\d{8}T\d{6}Z)/?$")
# A snapshot keeps serving Release files past their Valid-Until: apt must accept them.
_SNAPSHOT_APT_OPTION = 'Acquire::Check-Valid-Until "false"'

_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# dpkg architecture -> OCI architecture (and variant).
_OCI_ARCH = {
    "amd64": ("amd64", None),
    "arm64": ("arm64", "v8"),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v5"),
    "i386": ("386", None),
    "ppc64el": ("ppc64le", None),
    "s390x": ("s390x", None),
    "riscv64": ("riscv64", None),
}


@dataclass(frozen=True)
class BaseRecipe:
    """How to build one base image with mmdebstrap; every option here was tried for its suite.

    ``pockets`` are the suites whose packages make up the image, all from the
    recipe's archive, except that a Debian ``*-security`` pocket comes from the
    security archive next to the mirror (``<mirror>-security``, as on
    deb.debian.org). ``epoch`` is the default ``SOURCE_DATE_EPOCH`` (the
    suite's release day) and becomes the image's creation time.
    """

    ref: str
    mirror_kind: MirrorKind
    suite: str
    pockets: tuple[str, ...]
    components: tuple[str, ...]
    epoch: int
    variant: str = "minbase"
    includes: tuple[str, ...] = ()
    hook_dirs: tuple[str, ...] = ()
    setup_hooks: tuple[str, ...] = ()
    customize_hooks: tuple[str, ...] = ()
    dpkg_options: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    def sources(self, mirror: str) -> tuple[str, ...]:
        """The one-line apt sources for ``mirror`` (also written into the image)."""
        base = mirror.rstrip("/")
        components = " ".join(self.components)
        return tuple(f"deb {url} {pocket} {components}" for pocket, url in self.pocket_urls(base))

    def pocket_urls(self, mirror: str) -> tuple[tuple[str, str], ...]:
        """``(pocket, archive URL)`` for each pocket, on ``mirror``."""
        base = mirror.rstrip("/")
        return tuple(
            (
                pocket,
                security_mirror(base)
                if self.mirror_kind == "debian" and pocket.endswith("-security")
                else base,
            )
            for pocket in self.pockets
        )


_RECIPES = (
    # Debian's own merged-usr hook directory avoids perl; the slim dpkg filters
    # bring the base to ~75 MB (a debootstrap one is ~200 MB).
    BaseRecipe(
        ref="debian:bookworm-slim",
        aliases=("debian:12-slim",),
        mirror_kind="debian",
        suite="bookworm",
        pockets=("bookworm", "bookworm-updates", "bookworm-security"),
        components=("main",),
        epoch=1686355200,  # 2023-06-10, Debian 12 release
        hook_dirs=(f"{_HOOKS}/merged-usr",),
        customize_hooks=_BLANK_HOST_FILES,
        dpkg_options=_DEBIAN_SLIM_DPKG,
    ),
    # Ubuntu's minbase lacks apt. The Debian dpkg filters made focal-updates
    # fail in `dpkg --install`, so Ubuntu recipes keep every file. Focal and
    # jammy have no real usr-is-merged package, so the merged-usr hook
    # directory fails there: its setup hook alone makes the /usr symlinks (as
    # the official images have) and its placeholder package is purged after.
    BaseRecipe(
        ref="ubuntu:20.04",
        aliases=("ubuntu:focal",),
        mirror_kind="ubuntu",
        suite="focal",
        pockets=("focal", "focal-updates", "focal-security"),
        components=_UBUNTU_COMPONENTS,
        epoch=1587600000,  # 2020-04-23, Ubuntu 20.04 release
        includes=("apt", "ca-certificates"),
        setup_hooks=(f"{_HOOKS}/merged-usr/setup00.sh",),
        customize_hooks=(*_BLANK_HOST_FILES, 'chroot "$1" dpkg --purge usr-is-merged'),
    ),
    BaseRecipe(
        ref="ubuntu:22.04",
        aliases=("ubuntu:jammy",),
        mirror_kind="ubuntu",
        suite="jammy",
        pockets=("jammy", "jammy-updates", "jammy-security"),
        components=_UBUNTU_COMPONENTS,
        epoch=1650499200,  # 2022-04-21, Ubuntu 22.04 release
        includes=("apt", "ca-certificates"),
        setup_hooks=(f"{_HOOKS}/merged-usr/setup00.sh",),
        customize_hooks=(*_BLANK_HOST_FILES, 'chroot "$1" dpkg --purge usr-is-merged'),
    ),
    # Noble's base-files makes /usr merged by itself; the merged-usr hooks
    # fail there (no usr-is-merged newer than the hook's placeholder).
    BaseRecipe(
        ref="ubuntu:24.04",
        aliases=("ubuntu:noble",),
        mirror_kind="ubuntu",
        suite="noble",
        pockets=("noble", "noble-updates", "noble-security"),
        components=_UBUNTU_COMPONENTS,
        epoch=1714003200,  # 2024-04-25, Ubuntu 24.04 release
        includes=("apt", "ca-certificates"),
        customize_hooks=_BLANK_HOST_FILES,
    ),
)

#: Every reference :func:`bootstrap` can build, aliases included, to its recipe.
SUPPORTED: Mapping[str, BaseRecipe] = MappingProxyType(
    {name: r for r in _RECIPES for name in (r.ref, *r.aliases)}
)


@dataclass(frozen=True)
class BootstrapResult:
    """What a bootstrap produced: the tag set, the engine's image ID, time and size."""

    ref: str
    image_id: str
    seconds: float
    size: int = 0
    archive: BaseArchive | None = None  # the archive state it was made from


def security_mirror(mirror: str) -> str:
    """Where Debian's security pocket lives beside ``mirror``.

    ``<mirror>-security``, as on deb.debian.org; for a snapshot mirror, the
    security archive's snapshot of the same time
    (``.../archive/debian/20240601T000000Z`` -> ``.../archive/debian-security/20240601T000000Z``).
    """
    base = mirror.rstrip("/")
    match = _SNAPSHOT.match(base)
    if match:
        return f"{match['head']}{match['archive']}-security/{match['stamp']}"
    return base + "-security"


def is_snapshot(mirror: str) -> bool:
    """Whether ``mirror`` names one point in time of an archive (a snapshot mirror)."""
    return _SNAPSHOT.match(mirror.rstrip("/")) is not None


def check_mirror(mirror: str, *, option: str = "--mirror") -> str:
    """``mirror`` without a trailing ``/`` if it is a plain http(s) archive URL, else a
    :class:`UsageError`: it is recorded in the image's labels and the lock, so it must
    name the archive and nothing else (no credentials, query or fragment)."""
    example = "e.g. http://snapshot.debian.org/archive/debian/20240601T000000Z"
    parts = urllib.parse.urlsplit(mirror)
    problem = None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problem = "is not an http(s) URL"
    elif any(c.isspace() for c in mirror) or not mirror.isprintable():
        problem = "contains spaces or control characters"
    elif parts.username is not None or parts.password is not None:
        problem = "holds credentials, which would be recorded in the image's labels and the lock"
    elif parts.query or parts.fragment:
        problem = "has a query or a fragment; an archive URL has neither"
    if problem:
        shown = mirror
        if parts.password is not None:  # never repeat a password, not even in an error
            shown = mirror.replace(f":{parts.password}@", ":***@", 1)
        raise UsageError(
            f"{option} {shown!r} {problem}",
            hint="name the package archive (the folder holding dists/ and pool/), " + example,
        )
    return mirror.rstrip("/")


def archive_state(
    recipe: BaseRecipe, mirror: str, *, fetch: Callable[[str], bytes] | None = None
) -> BaseArchive:
    """The archive state ``mirror`` serves for ``recipe``: each pocket's Release ``Date:``.

    Read from ``dists/<pocket>/InRelease`` (else ``Release``) of each pocket's
    archive; a pocket that is not served, or a Release file without a date,
    is a :class:`BootstrapError` naming the URL.
    """
    get = fetch or _http_get
    dates = []
    for pocket, url in recipe.pocket_urls(mirror):
        tried = []
        text = None
        for name in ("InRelease", "Release"):
            where = f"{url}/dists/{pocket}/{name}"
            tried.append(where)
            try:
                text = get(where).decode("utf-8", "replace")
                break
            except BootstrapError:
                continue
        if text is None:
            raise BootstrapError(
                f"the mirror serves no Release file for {pocket}: tried " + ", ".join(tried),
                hint=f"check that {mirror} is a {recipe.mirror_kind} archive serving "
                f"{', '.join(recipe.pockets)}",
            )
        date = _release_field(text, "Date")
        if date is None:
            raise BootstrapError(f"{tried[-1]} has no Date: field")
        dates.append((pocket, date))
    return BaseArchive(recipe.mirror_kind, recipe.suite, mirror, tuple(dates))


def _release_field(text: str, field: str) -> str | None:
    """A top-level field of a Release file (an InRelease's signature lines are skipped)."""
    for line in text.splitlines():
        if line.startswith(f"{field}:"):
            return line.split(":", 1)[1].strip()
    return None


def recipe_for(ref: str) -> BaseRecipe:
    """The recipe for a supported reference; a :class:`UsageError` naming the choices else."""
    recipe = SUPPORTED.get(ref)
    if recipe is not None:
        return recipe
    close = difflib.get_close_matches(ref, list(SUPPORTED), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else None
    raise UsageError(
        f"no bootstrap recipe for {ref!r}; supported: " + ", ".join(sorted(SUPPORTED)),
        hint=hint,
    )


def mmdebstrap_command(
    recipe: BaseRecipe, mirror: str, target: str, *, keyring: Path | None = None
) -> list[str]:
    """The mmdebstrap argv that writes ``recipe``'s root filesystem to ``target``."""
    argv = ["mmdebstrap", f"--variant={recipe.variant}"]
    argv.append("--components=" + ",".join(recipe.components))
    if recipe.includes:
        argv.append("--include=" + ",".join(recipe.includes))
    if keyring is not None:
        argv.append(f"--keyring={keyring}")
    if is_snapshot(mirror):
        argv.append(f"--aptopt={_SNAPSHOT_APT_OPTION}")
    argv += [f"--hook-dir={d}" for d in recipe.hook_dirs]
    argv += [f"--setup-hook={h}" for h in recipe.setup_hooks]
    argv += [f"--dpkgopt={o}" for o in recipe.dpkg_options]
    argv += [f"--customize-hook={h}" for h in recipe.customize_hooks]
    argv += [recipe.suite, target, *recipe.sources(mirror)]
    return argv


def image_config(
    diff_id: str,
    *,
    recipe: BaseRecipe,
    mirror: str,
    epoch: int,
    architecture: str = "amd64",
    archive: BaseArchive | None = None,
) -> bytes:
    """The canonical image config JSON; its sha256 is the image ID.

    ``diff_id`` is ``sha256:<hex>`` of the uncompressed layer tar. The config
    depends only on the layer, the recipe, the mirror, the epoch and the
    ``archive`` state recorded in its labels (never on the host, the user's
    paths or the clock), so the ID is stable.
    """
    created = datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc)
    created_text = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    oci_arch, variant = _OCI_ARCH.get(architecture, (architecture, None))
    command = shlex.join(mmdebstrap_command(recipe, mirror, "-"))
    config: dict[str, object] = {
        "architecture": oci_arch,
        "os": "linux",
        "created": created_text,
        "config": {
            "Env": [_PATH],
            "Cmd": ["bash"],
            "Labels": {
                BASE_RECIPE_LABEL: recipe.ref,
                **(archive.labels() if archive is not None else {}),
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [
            {
                "created": created_text,
                "created_by": f"SOURCE_DATE_EPOCH={epoch} {command}",
                "comment": "envbuild base bootstrap",
            }
        ],
    }
    if variant is not None:
        config["variant"] = variant
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def write_docker_archive(
    layer: Path, config: bytes, out: IO[bytes], *, repo_tag: str, diff_id: str | None = None
) -> None:
    """Write a ``docker load`` archive of one layer and ``config`` to ``out``.

    Every header is fixed (mtime 0, root-owned, fixed modes), so the same
    inputs give the same bytes; ``repo_tag`` only appears in ``manifest.json``,
    which is not part of the image ID. ``out`` may be a pipe (nothing is
    seeked).
    """
    if diff_id is None:
        diff_id = "sha256:" + _sha256_file(layer)
    layer_dir = diff_id.removeprefix("sha256:")
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = [
        {"Config": config_name, "RepoTags": [repo_tag], "Layers": [f"{layer_dir}/layer.tar"]}
    ]
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()

    def info(name: str, size: int = 0, *, directory: bool = False) -> tarfile.TarInfo:
        member = tarfile.TarInfo(name)
        member.mtime = 0
        member.uid = member.gid = 0
        member.uname = member.gname = "root"
        if directory:
            member.type = tarfile.DIRTYPE
            member.mode = 0o755
        else:
            member.mode = 0o644
            member.size = size
        return member

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        archive.addfile(info(layer_dir + "/", directory=True))
        with layer.open("rb") as stream:
            archive.addfile(info(f"{layer_dir}/layer.tar", layer.stat().st_size), stream)
        archive.addfile(info(config_name, len(config)), io.BytesIO(config))
        archive.addfile(info("manifest.json", len(manifest_bytes)), io.BytesIO(manifest_bytes))


def ubuntu_archive_keyring(
    cache_dir: Path,
    *,
    mirror: str,
    fetch: Callable[[str], bytes] | None = None,
    log: Log | None = None,
) -> Path:
    """Ubuntu's archive keyring, from the pinned keyring .deb, cached under ``cache_dir``.

    The download must match :data:`UBUNTU_KEYRING_DEB_SHA256`, else a
    :class:`BootstrapError` names both digests. A cached keyring is reused only
    while its own digest matches :data:`UBUNTU_ARCHIVE_KEYRING_SHA256`.
    """
    version = UBUNTU_KEYRING_DEB.split("_")[1]
    cached = cache_dir / f"ubuntu-archive-keyring-{version}.gpg"
    if cached.is_file() and _sha256_file(cached) == UBUNTU_ARCHIVE_KEYRING_SHA256:
        return cached
    url = f"{mirror.rstrip('/')}/pool/main/u/ubuntu-keyring/{UBUNTU_KEYRING_DEB}"
    if log is not None:
        log(f"envbuild: downloading {url}")
    data = (fetch or _http_get)(url)
    digest = hashlib.sha256(data).hexdigest()
    if digest != UBUNTU_KEYRING_DEB_SHA256:
        raise BootstrapError(
            f"{url}: sha256 {digest} does not match the pinned {UBUNTU_KEYRING_DEB_SHA256}",
            hint="the mirror serves a different file; pass a trusted keyring with --keyring FILE",
        )
    keyring = _extract_from_deb(data, _KEYRING_MEMBER)
    digest = hashlib.sha256(keyring).hexdigest()
    if digest != UBUNTU_ARCHIVE_KEYRING_SHA256:
        raise BootstrapError(
            f"{UBUNTU_KEYRING_DEB}: {_KEYRING_MEMBER} has sha256 {digest}, "
            f"expected {UBUNTU_ARCHIVE_KEYRING_SHA256}"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")
    partial.write_bytes(keyring)
    partial.replace(cached)
    return cached


def is_present(ref: str, engine: ImageStore) -> bool:
    """Whether the engine holds an image named ``ref``."""
    return engine.inspect_image(ref) is not None


def bootstrap(
    ref: str,
    *,
    engine: ContainerEngine | None = None,
    mirror: str | None = None,
    keyring: Path | None = None,
    epoch: int | None = None,
    log: Log | None = None,
    target: str | None = None,
    settings: Settings | None = None,
) -> BootstrapResult:
    """Build the base image ``ref`` from its distribution archive and tag it.

    ``ref`` names the recipe (a key of :data:`SUPPORTED`); the image is tagged
    ``target`` (default: ``ref``). ``mirror`` (checked by :func:`check_mirror`;
    a snapshot mirror makes the same image anywhere) defaults to the settings'
    Debian or Ubuntu mirror; its archive state (:func:`archive_state`) is read
    first and recorded in the image's labels. ``keyring`` replaces the archive keyring (for
    Ubuntu, the pinned download otherwise). ``epoch`` is the
    ``SOURCE_DATE_EPOCH`` (default: that variable from the environment, else the
    recipe's). ``log`` receives mmdebstrap's progress line by line. ``settings``
    (loaded when needed and not given) supply the mirror, the keyring cache
    and, when no ``engine`` is given, the engine's docker client.

    The target tag is set only once the whole pipeline succeeded; on any
    failure (Ctrl-C included) the temporary image is removed and the target tag
    is left as it was.
    """
    started = time.monotonic()
    recipe = recipe_for(ref)
    target = target or ref
    emit = log or (lambda _line: None)
    if shutil.which("mmdebstrap") is None:
        raise ToolMissingError(
            "mmdebstrap is not installed; it builds base images from package archives",
            hint="apt-get install mmdebstrap",
        )
    epoch = _resolve_epoch(epoch, recipe)
    if engine is None or mirror is None or (keyring is None and recipe.mirror_kind == "ubuntu"):
        settings = settings or load_settings()
    if engine is None:
        from envbuild.engine.docker import DockerEngine

        assert settings is not None
        engine = DockerEngine(settings.docker, state=settings.home)
    engine.inspect_image(target)  # one request: a dead engine is found now, not after mmdebstrap
    if mirror is None:
        assert settings is not None
        mirror = check_mirror(
            settings.debian_mirror if recipe.mirror_kind == "debian" else settings.ubuntu_mirror,
            option=f"the {recipe.mirror_kind}_mirror setting",
        )
    else:
        mirror = check_mirror(mirror)
    if keyring is not None and not keyring.is_file():
        raise BootstrapError(f"keyring {keyring} does not exist or is not a file")
    if keyring is None and recipe.mirror_kind == "ubuntu":
        assert settings is not None
        keyring = ubuntu_archive_keyring(settings.home / "keyrings", mirror=mirror, log=emit)
    emit(f"envbuild: reading the archive state of {mirror}")
    archive = archive_state(recipe, mirror)
    for pocket, date in archive.release_dates:
        emit(f"envbuild: {pocket}: Release of {date}")

    # SIGTERM/SIGHUP unwind like Ctrl-C: mmdebstrap is stopped, the folder removed.
    with (
        process.interruptible(),
        tempfile.TemporaryDirectory(prefix="envbuild-bootstrap-") as workdir,
    ):
        layer = Path(workdir) / "rootfs.tar"
        if keyring is not None:
            keyring = _readable_copy(keyring, Path(workdir))
        argv = mmdebstrap_command(recipe, mirror, str(layer), keyring=keyring)
        _run_mmdebstrap(argv, epoch=epoch, log=emit)
        result = import_rootfs(
            layer,
            target,
            engine=engine,
            recipe=recipe,
            mirror=mirror,
            epoch=epoch,
            log=emit,
            archive=archive,
        )
    return BootstrapResult(
        result.ref, result.image_id, time.monotonic() - started, result.size, archive
    )


def import_rootfs(
    layer: Path,
    target: str,
    *,
    engine: ContainerEngine,
    recipe: BaseRecipe,
    mirror: str,
    epoch: int,
    log: Log | None = None,
    archive: BaseArchive | None = None,
) -> BootstrapResult:
    """Turn a root-filesystem tar into the image ``target``: the second half of :func:`bootstrap`.

    ``archive``, the archive state the tar was made from, is recorded in the
    image's labels.

    Checks the tar, loads it under a temporary tag with the fixed config of
    :func:`image_config`, runs a container of it and only then tags it
    ``target``. On any failure (Ctrl-C included) the temporary tag is removed
    and ``target`` is left as it was.
    """
    started = time.monotonic()
    emit = log or (lambda _line: None)
    emit("envbuild: checking the root filesystem")
    _check_rootfs(layer)
    diff_id = "sha256:" + _sha256_file(layer)
    config = image_config(
        diff_id,
        recipe=recipe,
        mirror=mirror,
        epoch=epoch,
        architecture=_dpkg_arch(),
        archive=archive,
    )
    temp_tag = f"{TEMP_REPOSITORY}:{uuid.uuid4().hex[:16]}"
    try:
        emit(f"envbuild: loading the image as {temp_tag}")
        _load(engine, layer, config, temp_tag, diff_id)
        emit("envbuild: checking the image runs")
        image_id, size = _verify_image(engine, temp_tag)
        emit(f"envbuild: tagging {image_id} as {target}")
        engine.tag(image_id, target)
    finally:
        # Only untags while the target names the image; else the image goes too.
        shielded(lambda: _remove_quietly(engine, temp_tag))
    return BootstrapResult(target, image_id, time.monotonic() - started, size, archive)


# --- pipeline steps ---------------------------------------------------------


def _resolve_epoch(epoch: int | None, recipe: BaseRecipe) -> int:
    if epoch is None:
        text = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
        if not text:
            return recipe.epoch
        try:
            epoch = int(text)
        except ValueError:
            raise BootstrapError(
                f"SOURCE_DATE_EPOCH={text!r} is not a whole number of seconds"
            ) from None
    if epoch < 0:
        raise BootstrapError(f"SOURCE_DATE_EPOCH must not be negative, got {epoch}")
    return epoch


def _run_mmdebstrap(argv: Sequence[str], *, epoch: int, log: Log) -> None:
    """Run mmdebstrap, each output line to ``log``; a BootstrapError with the tail on failure."""
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch))
    tail: deque[str] = deque(maxlen=40)
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            for piece in raw.decode("utf-8", "replace").replace("\r", "\n").split("\n"):
                line = piece.rstrip()
                if line:
                    tail.append(line)
                    log(line)
        code = proc.wait()
    except BaseException:
        _stop(proc)
        raise
    if code != 0:
        raise BootstrapError(
            f"mmdebstrap failed (exit {code})",
            step=shlex.join(argv),
            step_exit_code=code,
            log_tail=list(tail),
            hint="check that the mirror is reachable and serves this suite",
        )


def _readable_copy(keyring: Path, workdir: Path) -> Path:
    """A copy of ``keyring`` that apt's unprivileged ``_apt`` user can read.

    apt verifies signatures as ``_apt``, which cannot read a keyring under
    ``/root`` (mode 0700): it would report the key as missing (NO_PUBKEY).
    """
    workdir.chmod(0o711)  # traversable, not listable
    copy = workdir / "keyring.gpg"
    shutil.copyfile(keyring, copy)
    copy.chmod(0o644)
    return copy


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # mmdebstrap removes its temporary chroot on SIGTERM; give it time to.
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _check_rootfs(layer: Path) -> None:
    """Refuse a root filesystem without a shell, apt and dpkg (an empty stream, say)."""
    names: set[str] = set()
    count = 0
    try:
        with tarfile.open(layer, mode="r|") as archive:
            for member in archive:
                count += 1
                names.add(member.name.removeprefix("./").rstrip("/"))
    except (OSError, tarfile.TarError) as exc:
        raise BootstrapError(f"the root filesystem tar {layer} is unreadable: {exc}") from exc
    missing = [name for name in _REQUIRED_MEMBERS if name not in names]
    if not any(shell in names for shell in _SHELLS):
        missing.append("/bin/sh")
    if missing:
        raise BootstrapError(
            f"the root filesystem ({count} entries) lacks "
            + ", ".join("/" + m.lstrip("/") for m in missing)
        )


def _archive_chunks(layer: Path, config: bytes, tag: str, diff_id: str) -> Iterator[bytes]:
    """The ``docker load`` archive of :func:`write_docker_archive`, as a stream of chunks.

    A thread writes it into a pipe, so no copy of the layer lands on disk.
    """
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            with os.fdopen(write_fd, "wb", buffering=1 << 20) as pipe:
                write_docker_archive(layer, config, pipe, repo_tag=tag, diff_id=diff_id)
        except BaseException as exc:  # reported by the consumer below
            failure.append(exc)

    thread = threading.Thread(target=produce, name="envbuild-archive", daemon=True)
    process.start_thread(thread)
    try:
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(1 << 20):
                yield chunk
    finally:
        thread.join()
    if failure and not isinstance(failure[0], BrokenPipeError):
        raise BootstrapError(f"cannot write the image archive of {layer}: {failure[0]}")


def _load(engine: ImageStore, layer: Path, config: bytes, tag: str, diff_id: str) -> None:
    try:
        engine.load_image(_archive_chunks(layer, config, tag, diff_id))
    except EngineError as exc:
        raise BootstrapError(
            f"the engine could not load the image: {exc.message}", step="load the image"
        ) from exc


def _verify_image(engine: ContainerEngine, tag: str) -> tuple[str, int]:
    """The image's ID and size, once a container of it ran ``apt-get --version`` with sh."""
    info = engine.inspect_image(tag)
    if info is None:
        raise BootstrapError(f"the engine loaded no image {tag}")
    if info.size <= 0:
        raise BootstrapError(f"the loaded image {tag} is empty (size {info.size})")
    argv = ("/bin/sh", "-c", "apt-get --version >/dev/null && dpkg --version >/dev/null")
    try:
        done = run_to_completion(
            engine, ContainerSpec(image=info.id, argv=argv, network="none"), timeout=120
        )
    except EngineError as exc:  # e.g. /bin/sh is not a program: the container cannot start
        raise BootstrapError(
            f"the loaded image {tag} does not work: {exc.message}", step=shlex.join(argv)
        ) from exc
    if done.exit_code != 0 or done.timed_out:
        raise BootstrapError(
            f"the loaded image {tag} does not work: a shell running apt-get and dpkg failed",
            step=shlex.join(argv),
            step_exit_code=done.exit_code,
            log_tail=list(done.tail(20)),
        )
    return info.id, info.size


def _remove_quietly(engine: ImageStore, ref: str) -> None:
    with contextlib.suppress(EngineError):
        engine.remove_image(ref)


def _dpkg_arch() -> str:
    proc = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() or "amd64"


def _http_get(url: str) -> bytes:
    if not url.startswith(("http://", "https://")):
        raise BootstrapError(f"mirror URL {url!r} must start with http:// or https://")
    try:
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - scheme checked
            data: bytes = response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise BootstrapError(
            f"cannot download {url}: {exc}",
            hint="check the Ubuntu mirror, or pass a trusted keyring with --keyring FILE",
        ) from exc
    return data


def _ar_members(data: bytes) -> Iterator[tuple[str, bytes]]:
    """The members of an ``ar`` archive (the container format of a .deb)."""
    if not data.startswith(b"!<arch>\n"):
        raise BootstrapError("not a .deb: the ar signature is missing")
    offset = 8
    while offset + 60 <= len(data):
        header = data[offset : offset + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        start = offset + 60
        yield name, data[start : start + size]
        offset = start + size + (size % 2)


def _extract_from_deb(data: bytes, member: str) -> bytes:
    """One file of a .deb's data archive (xz, gzip, bzip2 or plain; zstd via dpkg-deb)."""
    for name, payload in _ar_members(data):
        if not name.startswith("data.tar"):
            continue
        if name.endswith(".zst"):
            payload = _deb_fsys_tarfile(data)
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:*") as archive:
            for entry in archive:
                if entry.name.removeprefix("./") == member and entry.isfile():
                    extracted = archive.extractfile(entry)
                    assert extracted is not None
                    return extracted.read()
        raise BootstrapError(f"the keyring package does not contain {member}")
    raise BootstrapError("not a .deb: no data.tar member")


def _deb_fsys_tarfile(data: bytes) -> bytes:
    # Python before 3.14 cannot decompress zstd (Ubuntu's packages since 21.10);
    # dpkg-deb, which every Debian system has, can.
    if shutil.which("dpkg-deb") is None:
        raise ToolMissingError(
            "dpkg-deb is needed to unpack the Ubuntu keyring package", hint="apt-get install dpkg"
        )
    with tempfile.TemporaryDirectory(prefix="envbuild-keyring-") as workdir:
        deb = Path(workdir) / UBUNTU_KEYRING_DEB
        deb.write_bytes(data)
        proc = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=False
        )
    if proc.returncode != 0:
        raise BootstrapError(
            "cannot unpack the keyring package: " + _tail(proc.stderr.decode("utf-8", "replace"))
        )
    return proc.stdout


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _tail(text: str, lines: int = 5) -> str:
    return " / ".join(text.strip().splitlines()[-lines:])
