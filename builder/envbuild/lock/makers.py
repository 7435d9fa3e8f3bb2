"""Making locks: pip via uv, conda via py-rattler or conda-lock, and base pins from the engine."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envbuild import files as safe_files
from envbuild.definition.model import Environment
from envbuild.engine.protocols import ContainerEngine, ContainerRuntime, ContainerSpec, ImageStore
from envbuild.engine.runner import run_to_completion
from envbuild.errors import EngineError
from envbuild.log import Log
from envbuild.settings import Settings

if sys.version_info >= (3, 11):
    pass

# Making locks: uv for pip, conda-lock for conda, the engine for the base
from envbuild.lock.model import (
    CONDA_LOCK_FILE,
    CONDA_PLATFORM,
    DISTRO_PYTHON,
    GENERATED,
    INDEX_FILE,
    PIP_LOCK_FILE,
    BaseArchive,
    BasePin,
    CondaLock,
    Drift,
    LockError,
    Locks,
    PipLock,
    conda_inputs,
    conda_specs,
    conda_store,
    explicit_urls,
    needs_conda,
    pip_inputs,
    pip_pins,
    platform_tag,
    read,
    render_index,
    stale_reasons,
    unlocked_reasons,
)

if TYPE_CHECKING:  # a registry is imported only by a lock or build that uses one
    from envbuild.engine.registry import Manifests, Registry

# --------------------------------------------------------------------------


def uv_binary() -> Path:
    """The uv that locks pip requirements on this host: the one beside this
    interpreter, else the ``uv`` package's (a runtime dependency), else one on PATH.

    Only locking runs it. Builds install their own uv inside the image, pinned
    by :data:`envbuild.render.dockerfile.UV_VERSION`: no host binary enters a
    build context.
    """
    beside = Path(sys.executable).parent / "uv"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    try:
        import uv
    except ImportError:  # pragma: no cover - uv is a dependency
        import shutil

        found = shutil.which("uv")
        if found is None:
            raise LockError(
                "uv is not installed",
                hint="install envbuild with its dependencies (pip install uv)",
            ) from None
        return Path(found)
    return Path(uv.find_uv_bin())


def _uv_version(binary: Path) -> str:
    import subprocess

    proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or "uv"


def _tool_env(ca_bundle: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if ca_bundle is not None:
        # uv and conda's requests both honour this; it replaces their roots.
        env["SSL_CERT_FILE"] = str(ca_bundle)
        env["REQUESTS_CA_BUNDLE"] = str(ca_bundle)
    env.setdefault("UV_NO_PROGRESS", "1")
    return env


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join("    " + ln for ln in text.strip().splitlines()[-lines:])


def compile_pip(
    env: Environment,
    python: str,
    platform: str,
    *,
    previous: bytes | None = None,
    ca_bundle: Path | None = None,
    uv: Path | None = None,
) -> bytes:
    """Resolve ``[pip] packages`` with hashes for ``python`` on ``platform``; the lock's bytes.

    An existing lock is handed to uv as the output file, so uv keeps its pins
    where they still satisfy the requirements: locking again changes nothing
    unless the requirements changed (``lock`` is idempotent).
    """
    import subprocess
    import tempfile

    binary = uv or uv_binary()
    with tempfile.TemporaryDirectory(prefix="envbuild-lock-") as tmp:
        folder = Path(tmp)
        lines = []
        if env.pip.index_url:
            lines.append(f"--index-url {env.pip.index_url}")
        lines.extend(f"--extra-index-url {url}" for url in env.pip.extra_index_urls)
        lines.extend(sorted(set(env.pip.packages)))
        (folder / "requirements.in").write_text("\n".join(lines) + "\n", encoding="utf-8")
        if previous is not None:
            (folder / PIP_LOCK_FILE).write_bytes(previous)
        argv = [
            str(binary), "pip", "compile", "requirements.in",
            "--output-file", PIP_LOCK_FILE,
            "--generate-hashes",
            "--python-version", python,
            "--python-platform", platform,
            "--no-header",
            "--quiet",
        ]  # fmt: skip
        if env.pip.index_url or env.pip.extra_index_urls:
            argv.append("--emit-index-url")
        proc = subprocess.run(
            argv,
            cwd=folder,
            capture_output=True,
            text=True,
            env=_tool_env(ca_bundle),
            timeout=900,
            check=False,
        )
        if proc.returncode != 0:
            raise LockError(
                f"uv could not resolve the [pip] packages of {env.name} "
                f"for Python {python} on {platform}:\n{_tail(proc.stderr)}",
                hint="check the package names and versions; behind a TLS-intercepting proxy "
                "pass --ca-bundle (or set SSL_CERT_FILE / PIP_CERT)",
            )
        body = (folder / PIP_LOCK_FILE).read_bytes()
    header = (
        GENERATED
        + f"# pip requirements of {env.name} for Python {python} on {platform}, with hashes.\n"
    ).encode()
    return header + body


def find_conda_solver() -> tuple[str, Path] | None:
    """``("micromamba"|"mamba"|"conda", path)`` of a conda solver on this machine, or None."""
    import shutil

    explicit = os.environ.get("ENVBUILD_MICROMAMBA") or os.environ.get("MAMBA_EXE")
    if explicit and Path(explicit).is_file():
        return "micromamba", Path(explicit)
    for kind in ("micromamba", "mamba", "conda"):
        found = shutil.which(kind)
        if found:
            return kind, Path(found)
    return None


def conda_resolver() -> str:
    """Which solver :func:`solve_conda` uses: ``"conda-lock"`` or ``"py-rattler"``.

    conda-lock when it is installed *and* a micromamba/mamba/conda binary is
    there for it to drive (what it has always used); else py-rattler, which
    solves in-process (it is a wheel: nothing to download at lock time).
    """
    import importlib.util

    if importlib.util.find_spec("conda_lock") is not None and find_conda_solver() is not None:
        return "conda-lock"
    if importlib.util.find_spec("rattler") is not None:
        return "py-rattler"
    raise LockError(
        "locking [conda] needs py-rattler (or conda-lock with micromamba, mamba or conda), "
        "and neither was found",
        hint="install it: pip install 'envbuild[conda]' (or pip install py-rattler)",
    )


def solve_conda(env: Environment, *, ca_bundle: Path | None = None) -> bytes:
    """Solve the conda specs; the explicit lock's bytes (see :func:`conda_resolver`)."""
    if conda_resolver() == "py-rattler":
        return solve_conda_rattler(env, ca_bundle=ca_bundle)
    return _solve_conda_lock(env, ca_bundle=ca_bundle)


def _solve_conda_lock(env: Environment, *, ca_bundle: Path | None = None) -> bytes:
    """Solve the conda specs with conda-lock; the explicit lock's bytes."""
    import subprocess
    import tempfile

    solver = find_conda_solver()
    assert solver is not None  # conda_resolver() checked
    kind, path = solver
    with tempfile.TemporaryDirectory(prefix="envbuild-conda-lock-") as tmp:
        folder = Path(tmp)
        spec = {
            "channels": list(env.conda.channels) or ["conda-forge"],
            "dependencies": list(conda_specs(env)),
            "platforms": [CONDA_PLATFORM],
        }
        # JSON is YAML: no YAML writer needed.
        (folder / "environment.yml").write_text(json.dumps(spec, indent=2), encoding="utf-8")
        argv = [
            sys.executable, "-m", "conda_lock", "lock",
            "--file", "environment.yml",
            "--platform", CONDA_PLATFORM,
            "--kind", "explicit",
            "--filename-template", "conda-{platform}.lock",
            "--conda", str(path),
        ]  # fmt: skip
        argv.append("--micromamba" if kind == "micromamba" else "--no-micromamba")
        proc = subprocess.run(
            argv,
            cwd=folder,
            capture_output=True,
            text=True,
            env=_tool_env(ca_bundle),
            timeout=900,
            check=False,
        )
        out = folder / CONDA_LOCK_FILE
        if proc.returncode != 0 or not out.is_file():
            raise LockError(
                f"conda-lock could not solve the [conda] packages of {env.name}:\n"
                f"{_tail(proc.stderr + proc.stdout)}",
                hint="check the channels and package specs",
            )
        body = out.read_bytes()
    return GENERATED.encode() + body


# -- conda with py-rattler ----------------------------------------------------------

# The virtual packages a linux-64 image is solved for. Not this host's
# (detected ones would tie the lock to the machine that made it): the floor
# every supported base provides (glibc 2.17, as the pip locks assume).
CONDA_VIRTUAL_PACKAGES = (("__unix", "0", "0"), ("__linux", "4.4", "0"),
                          ("__glibc", "2.17", "0"), ("__archspec", "1", "x86_64"))  # fmt: skip


def _rattler() -> Any:
    try:
        import rattler
    except ImportError:
        raise LockError(
            "installing or locking conda packages without micromamba needs py-rattler",
            hint="install it: pip install 'envbuild[conda]' (or pip install py-rattler)",
        ) from None
    return rattler


def _rattler_version() -> str:
    from importlib.metadata import version

    return version("py-rattler")


def solve_conda_rattler(env: Environment, *, ca_bundle: Path | None = None) -> bytes:
    """Solve the conda specs with py-rattler for linux-64; the explicit lock's bytes.

    The channels of ``[conda]`` (conda-forge when none) are read with strict
    channel priority; the lock lists every package of the solution in install
    order, by URL with its sha256 (``url#sha256:HEX``, which conda's explicit
    format and micromamba accept), so that what it names can be checked byte
    for byte wherever it is installed.
    """
    import asyncio

    rattler = _rattler()
    channels = list(env.conda.channels) or ["conda-forge"]
    virtual = [
        rattler.GenericVirtualPackage(
            rattler.PackageName(name), rattler.Version(version), rattler.BuildString(build)
        )
        for name, version, build in CONDA_VIRTUAL_PACKAGES
    ]
    # ca_bundle: py-rattler's HTTP client trusts its own roots; a private CA
    # for the channels is not handed to it yet (conda-lock's path honours it).
    del ca_bundle
    try:
        records = asyncio.run(
            rattler.solve(
                sources=channels,
                specs=list(conda_specs(env)),
                platforms=[CONDA_PLATFORM, "noarch"],
                virtual_packages=virtual,
            )
        )
    except Exception as exc:  # rattler's errors are one family per failure kind
        raise LockError(
            f"py-rattler could not solve the [conda] packages of {env.name} "
            f"against {', '.join(channels)}:\n{_tail(str(exc))}",
            hint="check the channels and package specs",
        ) from exc
    # Install order (dependencies first), as conda writes explicit files; the
    # sort returns plain package records, so map them back by name (a
    # solution holds one record per name).
    by_name = {record.name.normalized: record for record in records}
    topological = rattler.PackageRecord.sort_topologically(records)
    ordered = [by_name[r.name.normalized] for r in topological]
    lines = []
    for record in ordered:
        if record.sha256 is None:
            raise LockError(f"the channel gives no sha256 for {record.url}: it cannot be locked")
        lines.append(f"{record.url}#sha256:{record.sha256.hex()}")
    header = (
        f"# conda packages of {env.name} for {CONDA_PLATFORM}, solved by py-rattler "
        f"{_rattler_version()} from: {' '.join(channels)}\n"
    )
    return (GENERATED + header + "@EXPLICIT\n" + "".join(f"{ln}\n" for ln in lines)).encode()


@dataclass(frozen=True)
class LockedPackage:
    """One line of an explicit conda lock: where the package is and its expected hash."""

    url: str
    algorithm: str  # "sha256" or "md5" (conda-lock's explicit locks carry md5)
    digest: str

    @property
    def filename(self) -> str:
        """The archive's file name (``name-version-build.tar.bz2`` or ``.conda``)."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def channel(self) -> str:
        """The channel URL: the package URL without its ``/subdir/filename``."""
        return self.url.rsplit("/", 2)[0]


def locked_packages(data: bytes) -> list[LockedPackage]:
    """The packages of an explicit conda lock; a line without a hash is an error."""
    out = []
    for line in explicit_urls(data):
        url, _, fragment = line.partition("#")
        algorithm, _, digest = fragment.rpartition(":")
        algorithm = algorithm or ("sha256" if len(digest) == 64 else "md5")
        size = {"sha256": 64, "md5": 32}.get(algorithm)
        if size is None or len(digest) != size:
            raise LockError(
                f"the conda lock names {url} without a sha256 or md5 hash",
                hint="run `envbuild lock` to rewrite it",
            )
        out.append(LockedPackage(url, algorithm, digest.lower()))
    return out


def _archive_path(store: Path, package: LockedPackage) -> Path:
    return store / "pkgs" / f"{package.digest}-{package.filename}"


def fetch_conda_packages(
    data: bytes, *, store: Path, ca_bundle: Path | None = None, log: Log = lambda line: None
) -> int:
    """Download what the lock names into the package store, each checked against its hash.

    ``store`` is the package store (:func:`conda_store`). Already stored
    packages are skipped (they were checked when stored).
    Returns how many were downloaded. This, in ``envbuild lock``, is the only
    place envbuild reaches a conda channel: builds install from the store, so
    a channel only the host can reach (a mirror on loopback, behind a proxy
    the build cannot use) works, and a build needs no network for conda.
    """
    import ssl
    import urllib.request

    context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    fetched = 0
    for package in locked_packages(data):
        target = _archive_path(store, package)
        if target.is_file():
            continue
        if not package.url.startswith(("http://", "https://", "file://")):
            raise LockError(f"the conda lock names {package.url}: not an http(s) or file URL")
        log(f"envbuild: fetching {package.url}")
        try:
            # The scheme is checked above: file:// is a local channel, as in conda.
            with urllib.request.urlopen(  # noqa: S310
                package.url, timeout=300, context=context
            ) as answer:
                blob = answer.read()
        except OSError as exc:
            raise LockError(
                f"cannot fetch the locked conda package {package.url}: {exc}",
                hint="check the channel is reachable from this machine",
            ) from exc
        actual = hashlib.new(package.algorithm, blob).hexdigest()
        if actual != package.digest:
            raise LockError(
                f"{package.url}: {package.algorithm} {actual} is not the locked {package.digest}",
                hint="the channel changed a published package; check it, then `envbuild lock`",
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(blob)
        tmp.replace(target)
        fetched += 1
    return fetched


def conda_prefix_tar(data: bytes, prefix: str, *, store: Path) -> bytes:
    """The conda prefix the lock ``data`` describes, installed for ``prefix``, as a tar.

    py-rattler links the stored packages (see :func:`fetch_conda_packages`)
    into a scratch directory on this host, with ``prefix`` written into every
    file that embeds its location (conda's prefix placeholders), for the
    linux-64 platform images are built for — so the result is the prefix a
    conda install inside the image would make, and the build only unpacks it.
    Link scripts are not run (py-rattler's default; they are arbitrary code).
    The host paths py-rattler records in ``conda-meta/`` are replaced by the
    locked URLs, and the tar is deterministic (sorted, fixed times and
    owners): the same lock gives the same bytes, hence the same image hash.
    It is cached in the store (``store``, :func:`conda_store`) by the lock's
    digest and py-rattler's version.
    """
    import asyncio
    import platform as host
    import tempfile

    if host.system() != "Linux" or host.machine() not in ("x86_64", "AMD64"):
        raise LockError(
            f"conda packages for {CONDA_PLATFORM} are installed on this host, which is "
            f"{host.system()}/{host.machine()}",
            hint="build conda environments on a linux x86-64 machine",
        )
    rattler = _rattler()
    packages = locked_packages(data)
    key = hashlib.sha256(data + f"\0{prefix}\0{_rattler_version()}".encode()).hexdigest()
    cached = store / "prefixes" / f"{key}.tar"
    if cached.is_file():
        return cached.read_bytes()
    missing = [p.url for p in packages if not _archive_path(store, p).is_file()]
    if missing:
        raise LockError(
            f"{len(missing)} locked conda package(s) are not in envbuild's package store "
            f"({store / 'pkgs'}), e.g. {missing[0]}",
            hint="run `envbuild lock ENV`: it fetches them (checked against the lock's hashes)",
        )

    async def install(target: Path, scratch: Path) -> None:
        records = [
            await rattler.RepoDataRecord.from_package_archive(_archive_path(store, p))
            for p in packages
        ]
        await rattler.install(
            records,
            target_prefix=target,
            cache_dir=scratch,
            platform=rattler.Subdir(CONDA_PLATFORM),
            execute_link_scripts=False,
            show_progress=False,
            alternative_target_prefix=prefix,
        )

    with tempfile.TemporaryDirectory(prefix="envbuild-conda-prefix-") as tmp:
        target, scratch = Path(tmp) / "prefix", Path(tmp) / "extracted"
        try:
            asyncio.run(install(target, scratch))
        except Exception as exc:  # rattler raises its own exception types
            raise LockError(f"py-rattler could not install the conda lock: {exc}") from exc
        _scrub_conda_meta(target, packages)
        (target / "CACHEDIR.TAG").unlink(missing_ok=True)  # rattler's marker, not a cache
        blob = _deterministic_tar(target)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp_file = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    tmp_file.write_bytes(blob)
    tmp_file.replace(cached)
    return blob


def _scrub_conda_meta(target: Path, packages: Sequence[LockedPackage]) -> None:
    """Record the locked URL and channel of each package, and no path of this host."""
    by_file = {p.filename: p for p in packages}
    for path in sorted((target / "conda-meta").glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        package = by_file.get(str(record.get("fn", "")))
        if package is not None:
            record["url"] = package.url
            record["channel"] = package.channel
        for key in ("extracted_package_dir", "package_tarball_full_path"):
            record.pop(key, None)
        if isinstance(record.get("link"), dict):
            record["link"].pop("source", None)
        path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _deterministic_tar(root: Path) -> bytes:
    """A tar of ``root``'s contents: sorted, owned by root, fixed times; links kept."""
    import io
    import stat
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix()):
            info = tarfile.TarInfo(path.relative_to(root).as_posix())
            mode = path.lstat().st_mode
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = stat.S_IMODE(mode) | (0o644 if path.parent.name == "conda-meta" else 0)
            if stat.S_ISLNK(mode):
                info.type = tarfile.SYMTYPE
                info.linkname = str(path.readlink())
                tar.addfile(info)
            elif stat.S_ISDIR(mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                content = path.read_bytes()
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


# -- the base ---------------------------------------------------------------


def pin_base(
    image: str,
    engine: ImageStore,
    registry: Registry | None = None,
    client: Manifests | None = None,
    log: Log = lambda line: None,
) -> BasePin:
    """Pin ``image`` to what the engine holds: its registry digest, else its image ID.

    With a ``registry`` (and its API ``client``) that holds the base (``envbuild
    base push``), the pin is that registry's digest, named there (``source``),
    so that a machine without the base pulls exactly it.
    """
    info = engine.inspect_image(image)
    if info is None:
        raise LockError(
            f"the base image {image} is not in the engine, so it cannot be pinned",
            hint=f"pull it, or build it: envbuild base bootstrap {image}",
        )
    archive = BaseArchive.from_labels(info.labels)  # a base envbuild bootstrapped
    if registry is not None and client is not None:
        from envbuild.engine.registry import image_path

        path, tag = image_path(image)
        source = f"{registry.prefix}/{path}"
        digest = client.manifest_digest(path, tag)
        if digest is not None and f"{source}@{digest}" in info.repo_digests:
            return BasePin(image=image, kind="digest", id=digest, source=source, archive=archive)
        if digest is not None:
            raise LockError(
                f"the registry holds {source}:{tag} as {digest}, which is not the engine's "
                f"{image} ({info.id})",
                hint=f"publish this machine's base: envbuild base push {image} --registry "
                f"{registry.prefix}; or use the registry's: docker pull {source}@{digest} "
                f"and tag it {image}",
            )
        log(
            f"envbuild: the registry holds no {source}:{tag}; pinning {image} here only "
            f"(envbuild base push {image} --registry {registry.prefix} publishes it)"
        )
    repository = image.split("@", 1)[0].rsplit(":", 1)[0] if "/" in image or ":" in image else image
    for digest_ref in info.repo_digests:
        repo, _, digest = digest_ref.partition("@")
        if digest and _same_repository(repo, repository):
            return BasePin(image=image, kind="digest", id=digest, archive=archive)
    return BasePin(image=image, kind="image-id", id=info.id, archive=archive)


def _same_repository(a: str, b: str) -> bool:
    def norm(name: str) -> str:
        if name.count("/") == 0:
            return f"docker.io/library/{name}"
        first = name.split("/", 1)[0]
        if "." not in first and ":" not in first and first != "localhost":
            return f"docker.io/{name}"
        return name

    return norm(a) == norm(b)


def drift_fixes(image: str, where: str) -> str:
    """The commands that fix a base which moved away from its lock (the hint of a drift)."""
    return (
        "fix it one of these ways:\n"
        "    relock on the base at hand and raise the version (the base is an input, so "
        "the image changes):\n"
        f"      envbuild lock {where} --bump\n"
        "    or get the pinned base from a registry that holds it (`envbuild base push "
        f"{image} --registry R` where it was made):\n"
        f"      envbuild base pull {image} --registry R\n"
        "    or build on the base at hand: an image labelled as drifted, with another hash, "
        "never pushed:\n"
        f"      envbuild build {where} --base-drift=allow"
    )


def _bootstrap_fix(pin: BasePin) -> str:
    """The bootstrap that makes ``pin``'s base again: from the archive state the lock
    recorded, when it recorded one (a snapshot mirror gives the same image ID)."""
    if pin.archive is None:
        return (
            "    or, for a base envbuild builds from the distribution archive:\n"
            f"      envbuild base bootstrap {pin.image}"
        )
    return (
        "    or make it again from the archive state the lock recorded (the same image ID "
        "while the mirror serves that state, as a snapshot mirror does):\n"
        f"      envbuild base bootstrap {pin.image} --mirror {pin.archive.mirror}"
    )


def check_base(
    pin: BasePin,
    engine: ImageStore,
    *,
    env_path: Path | None = None,
    log: Log = lambda line: None,
    allow_drift: bool = False,
) -> Drift | None:
    """Refuse a build whose base is no longer what the lock pinned.

    A base pinned in a registry (``source``) that the engine lacks is pulled
    by its digest first. When neither gives the pinned base, the error says
    which base changed, from what to what, and the commands that fix it.

    With ``allow_drift``, a base that moved is not an error as long as the
    engine holds an image under the declared reference: the drift is returned
    (``None`` when the base is the pinned one), and a failed pull of the
    pinned base is only logged. Nothing at hand is still an error.
    """
    ref = pin.from_ref if pin.kind == "digest" else pin.image
    info = engine.inspect_image(ref)
    if info is None and pin.source:
        from envbuild.engine.registry import find_credentials
        from envbuild.errors import RegistryError

        host = pin.source.split("/", 1)[0]
        creds = find_credentials(host)
        log(f"envbuild: pulling the pinned base {ref}")
        try:
            engine.pull_image(ref, creds.auth_config(host) if creds else None, log)
        except (EngineError, RegistryError) as exc:
            if not allow_drift:
                raise
            log(f"envbuild: cannot pull the pinned base {ref}: {exc.message}")
        else:
            info = engine.inspect_image(ref)
    where = str(env_path) if env_path is not None else "ENV"
    fixes = drift_fixes(pin.image, where)
    if info is None:
        at_hand = engine.inspect_image(pin.image) if ref != pin.image else None
        if at_hand is None:
            raise LockError(
                f"the pinned base image {pin.image} ({pin.id}) is not in the engine, "
                f"and no other image is there under that name to build {where} on",
                hint="get it one of these ways:\n"
                "    from a registry that holds it (`envbuild base push "
                f"{pin.image} --registry R` where it was made):\n"
                f"      envbuild base pull {pin.image} --registry R\n" + _bootstrap_fix(pin),
            )
        info, ok, now = at_hand, False, at_hand.id
    elif pin.kind == "image-id":
        ok = info.id == pin.id
        now = info.id
    else:
        digests = [d.partition("@")[2] for d in info.repo_digests]
        ok = pin.id in digests
        now = ", ".join(digests) or info.id
    if ok:
        return None
    if allow_drift:
        return Drift(image=pin.image, locked=pin.id, actual=info.id)
    raise LockError(
        f"base changed since lock: {pin.image} is now {now}, "
        f"the lock of {where} pins {pin.id}"
        + _archive_moved(pin.archive, BaseArchive.from_labels(info.labels)),
        hint=fixes,
    )


def _archive_moved(locked: BaseArchive | None, now: BaseArchive | None) -> str:
    """What changed in the archive between two bootstraps of a base, when both say."""
    if locked is None or now is None:
        return ""
    if locked.mirror != now.mirror:
        return f" (bootstrapped from {now.mirror}, the lock's from {locked.mirror})"
    before, after = dict(locked.release_dates), dict(now.release_dates)
    moved = [
        f"{pocket} {before.get(pocket, 'absent')} -> {after.get(pocket, 'absent')}"
        for pocket in sorted(set(before) | set(after))
        if before.get(pocket) != after.get(pocket)
    ]
    return f" (the archive moved on: {'; '.join(moved)})" if moved else ""


def python_of_base(image: str, engine: ContainerRuntime) -> str | None:
    """The python3 version the distribution of ``image`` ships, from its os-release."""
    spec = ContainerSpec(
        image=image,
        argv=("/etc/os-release",),
        entrypoint=("cat",),
        network="none",
        init=False,
    )
    try:
        done = run_to_completion(engine, spec, timeout=120)
    except EngineError:
        return None
    if done.exit_code != 0 or done.timed_out:
        return None
    fields = dict(line.split("=", 1) for line in done.text().splitlines() if "=" in line)
    key = (fields.get("ID", "").strip('"'), fields.get("VERSION_ID", "").strip('"'))
    return DISTRO_PYTHON.get(key)


# -- the whole lock -----------------------------------------------------------


@dataclass(frozen=True)
class LockResult:
    """What ``lock`` wrote (or, with ``check``, found)."""

    folder: Path
    written: tuple[str, ...]
    unchanged: tuple[str, ...]
    locks: Locks

    def to_json(self) -> dict[str, object]:
        """The ``--json`` shape."""
        base = self.locks.base
        return {
            "folder": str(self.folder),
            "written": list(self.written),
            "unchanged": list(self.unchanged),
            "base": (
                {
                    **dataclasses.asdict(base),
                    "archive": base.archive.to_json() if base.archive else None,
                }
                if base
                else None
            ),
            "python": self.locks.python,
            "pip": len(pip_pins(self.locks.pip.data)) if self.locks.pip else 0,
            "conda": len(explicit_urls(self.locks.conda.data)) if self.locks.conda else 0,
        }


def lock(
    env: str | Path | Environment,
    *,
    settings: Settings | None = None,
    engine: ContainerEngine | None = None,
    ca_bundle: Path | None = None,
    log: Log | None = None,
    registry: Registry | None = None,
    client: Manifests | None = None,
) -> LockResult:
    """Resolve and write every lock of ``env`` (a folder, or loaded) beside its ``env.toml``.

    For ``settings.platform``; ``settings`` default to :func:`load_settings`,
    ``engine`` to the local Docker engine; ``log`` gets progress (default: nowhere).
    With a ``registry`` that holds the base, the base is pinned by its digest there
    (see :func:`pin_base`).
    """
    from envbuild.settings import load_settings

    settings = settings or load_settings()
    if not isinstance(env, Environment):
        from envbuild.definition.model import load

        env = load(env)
    if engine is None:
        from envbuild.engine.docker import DockerEngine

        engine = DockerEngine(settings.docker)
    log = log or (lambda line: None)
    platform = settings.platform
    previous = None
    try:
        previous = read(env.path)
    except LockError:
        previous = None  # a broken index is rewritten
    base = None
    if env.base.image:
        log(f"envbuild: pinning the base {env.base.image}")
        base = pin_base(env.base.image, engine, registry, client, log)
    python = env.python.version
    if python is None and (env.pip.packages or needs_conda(env)):
        if env.python.source != "system" or not env.base.image:
            raise LockError(
                f"{env.definition_file}: set [python] version to lock this environment",
                hint='e.g. [python] version = "3.11"',
            )
        python = python_of_base(env.base.image, engine)
        if python is None:
            raise LockError(
                f"cannot tell which Python the base {env.base.image} provides",
                hint=f'set [python] version in {env.definition_file}, e.g. version = "3.11"',
            )
        log(f"envbuild: the base {env.base.image} provides Python {python}")
    pip = None
    if env.pip.packages:
        assert python is not None
        target = platform_tag(platform)
        binary = uv_binary()
        log(f"envbuild: resolving {len(env.pip.packages)} pip requirement(s) with uv")
        old = previous.pip.data if previous and previous.pip else None
        data = compile_pip(env, python, target, previous=old, ca_bundle=ca_bundle, uv=binary)
        pip = PipLock(
            requested=tuple(sorted(set(env.pip.packages))),
            inputs=pip_inputs(env, python, target),
            python=python,
            platform=target,
            resolver=_uv_version(binary).split(" (")[0],
            data=data,
        )
    conda = None
    if needs_conda(env):
        log(f"envbuild: solving the conda packages with {conda_resolver()}")
        conda = CondaLock(
            requested=conda_specs(env),
            channels=env.conda.channels,
            inputs=conda_inputs(env),
            data=solve_conda(env, ca_bundle=ca_bundle),
        )
        # Builds install from envbuild's package store, never from the channel.
        fetch_conda_packages(
            conda.data, store=conda_store(settings.home), ca_bundle=ca_bundle, log=log
        )
    locks = Locks(base=base, python=python, pip=pip, conda=conda)
    files: dict[str, bytes] = {INDEX_FILE: render_index(locks).encode()}
    if pip is not None:
        files[PIP_LOCK_FILE] = pip.data
    if conda is not None:
        files[CONDA_LOCK_FILE] = conda.data
    written, unchanged = [], []
    for name, data in files.items():
        path = env.path / name
        if _holds(env.path, name, data):
            unchanged.append(name)
            continue
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        written.append(name)
    for name in (PIP_LOCK_FILE, CONDA_LOCK_FILE):
        if name not in files and (env.path / name).is_file():
            (env.path / name).unlink()  # the section is gone from env.toml
            written.append(name)
    return LockResult(env.path, tuple(written), tuple(unchanged), locks)


def _holds(folder: Path, name: str, data: bytes) -> bool:
    """Whether ``folder/name`` is a regular file (no symlink) holding exactly ``data``."""
    path = folder / name
    if path.is_symlink():
        return False
    try:
        return safe_files.read_bytes(path, inside=folder, limit=safe_files.MAX_LOCK_BYTES) == data
    except safe_files.UnsafeRead:
        return False


def check(env: Environment, platform: str) -> list[str]:
    """Why the locks of ``env`` are missing or stale (empty: they are current). Offline."""
    locks = read(env.path)
    if locks is None:
        if unlocked_reasons(env, None):
            return [f"no {INDEX_FILE}: the environment was never locked"]
        return []
    return stale_reasons(env, locks, platform)
