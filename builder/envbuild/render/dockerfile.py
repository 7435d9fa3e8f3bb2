"""Render an :class:`Environment` into a :class:`BuildContext`.

Python prepares plain, sorted, de-duplicated data (:func:`prepare`); the
Jinja2 templates in ``templates/`` only loop and branch. Every ``{{ }}`` must
pass through exactly one filter of :mod:`envbuild.render.quoting`: the environment's
``finalize`` hook refuses anything else. Lists of packages and helper scripts
enter the image as files of the build context, never inlined into ``RUN``.

Rendering never touches the network or the Docker engine.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import envbuild.lock as locking
from envbuild import identity, reads
from envbuild.definition.model import Environment
from envbuild.errors import RenderError, UsageError
from envbuild.render.context import BuildContext, ContextFile
from envbuild.render.quoting import FILTERS, Quoted, UnsafeValueError
from envbuild.settings import DEFAULT_PLATFORM

VENV = "/opt/venv"
CONDA_PREFIX = "/opt/conda"
# The venv first, then the base image's own PATH (expanded by the builder:
# this is envbuild's constant, never user text).
VENV_PATH = VENV + "/bin:${PATH}"
CONDA_PATH = CONDA_PREFIX + "/bin:${PATH}"
# uv installs the pip requirements (and, for python.source = "uv", Python).
# It enters the image from the package index inside the build, never from the
# host: install-uv.sh pip-installs exactly this version, checked against the
# sha256 of its wheel for the target platform (--require-hashes), into a cache
# mount, so it never reaches a layer. The same definition therefore renders the
# same context on every host. To update: pick the version, then for each
# platform `pip download --no-deps --only-binary=:all: --platform
# manylinux2014_x86_64 uv==VERSION` (manylinux2014_aarch64 for linux/arm64),
# `sha256sum` the wheel, check it against https://pypi.org/simple/uv/, and move
# the project's own uv pin (pyproject.toml, used on the host to lock) with it.
UV_VERSION = "0.13.9"
UV_WHEEL_SHA256 = {
    # uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
    "linux/amd64": "d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19",
    # uv-0.13.9-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.musllinux_1_1_aarch64.whl
    "linux/arm64": "5435c5ce14a56431208ca0996416d310f1598e8c2c8ba707688985a16bb82dbe",
}
UV_REQUIREMENTS_FILE = "uv-requirements.txt"
# What the conda step bind-mounts: for a locked environment, the prefix
# py-rattler installed on the host from the lock (a tar, unpacked by the step);
# for an unlocked one, micromamba, which solves in the image. One path, so that
# the build can check for it before it starts (build._check_tools).
CONDA_INPUT_IN_CONTEXT = "envbuild/conda/input"
# The BuildKit secrets a build may be given (``--secret id=...``): the CA
# bundle of a TLS-intercepting proxy and index credentials (netrc). Each is
# mounted at its default place, /run/secrets/<id>, by the steps that fetch,
# and never reaches a layer. The templates and helper scripts receive the ids
# and paths as data (``secrets``), the build passes the files under these ids.
CA_SECRET = "envbuild-ca"  # noqa: S105 - the secret's id, not a secret
NETRC_SECRET = "envbuild-netrc"  # noqa: S105 - the secret's id, not a secret
SECRETS = {
    "ca": CA_SECRET,
    "ca_path": f"/run/secrets/{CA_SECRET}",
    "netrc": NETRC_SECRET,
    "netrc_path": f"/run/secrets/{NETRC_SECRET}",
}


def templates_dir() -> Path:
    """Where the templates are: inside the installed package, else the source tree."""
    from envbuild.cache.memo import templates_dir as find

    found = find()
    if found is None:
        here = Path(__file__).resolve().parent
        raise RenderError(f"envbuild's templates are missing (looked in {here / 'templates'})")
    return found


def _finalize(value: object) -> object:
    if isinstance(value, Quoted):
        return value
    raise UnsafeValueError(
        f"template emitted {value!r} without a quoting filter "
        "(use one of: " + ", ".join(sorted(FILTERS)) + ")"
    )


def _userstage(text: str) -> Quoted:
    # The base Dockerfile is the one place user-declared instructions enter,
    # and only as a whole file checked at validation (no CR, no trailing "\").
    return Quoted(text.rstrip("\n"))


@functools.lru_cache(maxsize=1)
def _jinja_env(root: str) -> Any:
    import jinja2  # imported here: the cache-hit path of `build` never renders twice

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(root),
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        autoescape=False,  # noqa: S701 - Dockerfiles, not HTML; quoting is per context
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    env.filters["userstage"] = _userstage
    return env


# The distribution's Python made whole: Debian and Ubuntu split out of python3
# what a python.org build has, and python3-venv brings back venv, ensurepip
# (and distutils); python3-gdbm brings dbm.gnu. Every Debian and Ubuntu suite
# envbuild bootstraps has both.
SYSTEM_PYTHON_PACKAGES = ("python3", "python3-gdbm", "python3-venv")
# Installed where the suite has them: Debian ships wheel's wheel apart
# (python3-wheel-whl) for setup-python.sh to put in the venv; Ubuntu 20.04 has
# no such package and bundles it in python-pip-whl, which python3-venv brings.
SYSTEM_PYTHON_OPTIONAL_PACKAGES = ("python3-wheel-whl",)


def apt_packages(env: Environment) -> tuple[str, ...]:
    """The distro packages to install: what the Python source needs, plus the user's.

    python.source = "uv" needs python3 and python3-venv too: uv is
    pip-installed by the base's Python (see :data:`UV_VERSION`) before uv
    installs the environment's own. python.source = "system" gets a whole
    Python (:data:`SYSTEM_PYTHON_PACKAGES`).
    """
    needed: tuple[str, ...] = ()
    if env.python.source == "system":
        needed = SYSTEM_PYTHON_PACKAGES
    elif env.python.source == "uv":
        needed = ("python3", "python3-venv")
    return tuple(sorted(set(needed) | set(env.system_packages)))


def apt_optional_packages(env: Environment) -> tuple[str, ...]:
    """Distro packages installed only where the base's archive has them."""
    if env.python.source != "system":
        return ()
    return tuple(p for p in SYSTEM_PYTHON_OPTIONAL_PACKAGES if p not in env.system_packages)


def labels(
    env: Environment, locks: locking.Locks | None = None, drift: locking.Drift | None = None
) -> tuple[tuple[str, str], ...]:
    """The labels rendered into the Dockerfile (the hash label is added at build time).

    A locked environment says so; an unlocked one is labelled not reproducible,
    with the reasons, so that nobody mistakes it for a pinned image. One built
    on a drifted base (``drift``) carries both base identities instead of the
    pin, and is not reproducible either.
    """
    items = {
        identity.NAME_LABEL: env.name,
        identity.VERSION_LABEL: str(env.version),
        identity.SCHEMA_LABEL: str(env.schema),
        "org.opencontainers.image.title": env.name,
        "org.opencontainers.image.version": str(env.version),
    }
    if env.description:
        items["org.opencontainers.image.description"] = env.description
    if env.base.image:
        items["org.opencontainers.image.base.name"] = env.base.image
    if env.gpu.cuda:
        items[identity.CUDA_LABEL] = env.gpu.cuda
    if drift is not None:
        items[identity.BASE_DRIFT_LOCKED_LABEL] = drift.locked
        items[identity.BASE_DRIFT_ACTUAL_LABEL] = drift.actual
    elif locks is not None and locks.base is not None:
        # OCI's base.digest is a manifest digest; a local image ID gets our own label.
        key = (
            "org.opencontainers.image.base.digest"
            if locks.base.kind == "digest"
            else identity.BASE_ID_LABEL
        )
        items[key] = locks.base.id
    reasons = locking.unlocked_reasons(env, locks)
    if drift is not None:
        reasons.append(drift.reason)
    if reasons:
        items[identity.REPRODUCIBLE_LABEL] = "false"
        items[identity.REPRODUCIBLE_REASONS_LABEL] = "; ".join(reasons)
    else:
        items[identity.LOCKED_LABEL] = "true"
    return tuple(sorted(items.items()))


def image_variables(env: Environment) -> tuple[str, ...]:
    """The names of the variables ``env``'s image sets: ``PATH``, the venv's or
    conda prefix's variable and ``HOME`` (the templates' own ``ENV`` lines),
    then those of ``[variables]``. An MPI launcher forwards them to the ranks it
    starts through ssh, whose sessions get none of the image's environment."""
    prefix = "CONDA_PREFIX" if env.python.source == "conda" else "VIRTUAL_ENV"
    return ("PATH", prefix, "HOME", *(name for name, _ in env.variables))


def prepare(
    env: Environment, locks: locking.Locks | None = None, drift: locking.Drift | None = None
) -> dict[str, Any]:
    """The plain data the templates render: sorted, de-duplicated, validated.

    Over a drifted base (``drift``), ``FROM`` names the declared reference: the
    image the engine holds for it, not the pin it no longer matches.
    """
    base_dockerfile = env.base.dockerfile_text  # read once, checked, when loaded
    base_image = env.base.image
    if base_image and locks is not None and locks.base is not None and drift is None:
        base_image = locks.base.from_ref
    conda = env.python.source == "conda"
    pip_file = None
    if env.pip.packages:
        pip_file = locking.PIP_LOCK_FILE if locks and locks.pip else "requirements.txt"
    conda_file = None
    if locking.needs_conda(env):
        conda_file = locking.CONDA_LOCK_FILE if locks and locks.conda else "conda-specs.txt"
    python_version = env.python.version or (locks.python if locks else None) or "any"
    return {
        "base_image": base_image,
        "base_dockerfile": base_dockerfile,
        "apt_packages": list(apt_packages(env)),
        "apt_optional_packages": list(apt_optional_packages(env)),
        "python_source": env.python.source,
        "python_version": python_version,
        "venv": CONDA_PREFIX if conda else VENV,
        "venv_path": CONDA_PATH if conda else VENV_PATH,
        "python": (CONDA_PREFIX if conda else VENV) + "/bin/python",
        "pip_packages": sorted(set(env.pip.packages)),
        "pip_file": pip_file,
        # With pip requirements, uv seeds pip into the venv from the distro's
        # wheel (fast, no network); `python3 -m venv`'s ensurepip takes seconds.
        "venv_seed": "nopip" if pip_file else "pip",
        "pip_mode": "locked" if pip_file == locking.PIP_LOCK_FILE else "unlocked",
        "conda_file": conda_file,
        "conda_mode": "locked" if conda_file == locking.CONDA_LOCK_FILE else "unlocked",
        "uv_requirements": UV_REQUIREMENTS_FILE,
        "conda_input": CONDA_INPUT_IN_CONTEXT,
        "variables": list(env.variables),
        "labels": list(labels(env, locks, drift)),
        "workdir": env.run.workdir,
        "secrets": SECRETS,
    }


def _index_options(env: Environment) -> list[str]:
    """The [pip] index options, as requirements-file lines."""
    lines = []
    if env.pip.index_url:
        lines.append(f"--index-url {env.pip.index_url}")
    lines.extend(f"--extra-index-url {url}" for url in env.pip.extra_index_urls)
    return lines


def _requirements(env: Environment) -> str:
    """The unlocked requirements file: index options first, then the sorted requirements."""
    lines = ["# Generated by envbuild from env.toml [pip] (not locked: no hashes)."]
    lines.extend(_index_options(env))
    lines.extend(sorted(set(env.pip.packages)))
    return "\n".join(lines) + "\n"


def uv_requirements(env: Environment, platform: str) -> str:
    """The requirements file install-uv.sh installs uv from: one pinned, hashed wheel.

    uv comes from the environment's own index options (a private mirror of
    PyPI serves it too), checked against :data:`UV_WHEEL_SHA256` for ``platform``.
    """
    digest = UV_WHEEL_SHA256.get(platform)
    if digest is None:  # the platform setting's problem, not the definition's
        raise UsageError(
            f"{env.definition_file}: envbuild installs pip requirements with uv, and knows "
            f"the uv wheel for {', '.join(sorted(UV_WHEEL_SHA256))} only, not {platform!r} "
            "(set ENVBUILD_PLATFORM to one of those)"
        )
    lines = [
        f"# Generated by envbuild: uv {UV_VERSION}, which installs the pip requirements,",
        f"# pinned by the sha256 of its wheel for {platform} (pip --require-hashes).",
        *_index_options(env),
        f"uv=={UV_VERSION} --hash=sha256:{digest}",
    ]
    return "\n".join(lines) + "\n"


def _condarc(env: Environment) -> str:
    # JSON is YAML: micromamba reads this as its rc file for an unlocked solve.
    import json

    channels = list(env.conda.channels) or ["conda-forge"]
    return json.dumps({"channels": channels, "channel_priority": "strict"}, indent=2) + "\n"


@functools.lru_cache(maxsize=4)
def _tool_bytes(path: str, size: int, mtime_ns: int) -> bytes:
    return Path(path).read_bytes()


def _tool(path: Path) -> ContextFile:
    stat = path.stat()
    item = ContextFile(_tool_bytes(str(path), stat.st_size, stat.st_mtime_ns), executable=True)
    reads.note(path, None, digest=item.sha256)
    return item


def micromamba_binary() -> Path | None:
    """The micromamba (linux-64, static) copied into conda builds, if this machine has one."""
    found = locking.find_conda_solver()
    if found is not None and found[0] == "micromamba":
        return found[1]
    return None


def _listing(header: str, items: list[str] | tuple[str, ...]) -> str:
    return f"# Generated by envbuild from env.toml {header}.\n" + "".join(f"{i}\n" for i in items)


def render(
    env: Environment,
    *,
    platform: str = DEFAULT_PLATFORM,
    base_id: str | None = None,
    drift: locking.Drift | None = None,
    conda_store: Path | None = None,
) -> BuildContext:
    """Render ``env`` into its build context: the Dockerfile and every file it copies.

    The locks beside ``env.toml`` are part of the input (a stale lock is an
    error naming what changed); reading them is a file read, nothing more.
    ``base_id`` is the image ID the engine holds for an unlocked base image
    (the caller asks the engine; rendering never does): it enters the hash
    as the base's identity. A locked base is identified by its pin, unless
    it drifted and the build goes on anyway (``drift``, ``--base-drift=allow``):
    then by the image ID it is built on, so the hash is never the locked one.
    Every file read is noted (:mod:`envbuild.reads`) for the memo.
    A conda-locked environment's prefix is installed from envbuild's package
    store, ``conda_store`` (:func:`envbuild.lock.conda_store` of the settings'
    state folder): the caller names it, rendering never reads the settings.
    """
    locks = locking.current(env, platform)
    if drift is not None and (locks is None or locks.base is None):
        raise RenderError(f"{env.name}: a base drift was given, but its base is not locked")
    data = prepare(env, locks, drift)
    root = templates_dir()
    for path in sorted(root.rglob("*")):  # what Jinja and the copies below may read
        if path.is_file():
            reads.note(path, path.read_bytes())
    if locking.needs_conda(env):
        # A locked prefix comes from envbuild's package store, an unlocked solve
        # from a micromamba found on this machine: neither is a file read here.
        reads.refuse("conda packages")
    try:
        dockerfile = _jinja_env(str(root)).get_template("Dockerfile.j2").render(**data)
    except UnsafeValueError as exc:
        raise RenderError(f"cannot render the Dockerfile: {exc}", template="Dockerfile.j2") from exc
    files: dict[str, ContextFile] = {"Dockerfile": ContextFile(dockerfile.encode("utf-8"))}
    if data["apt_packages"]:
        # apt-get reads these through xargs: names only, no comment line.
        files["envbuild/apt-packages.txt"] = ContextFile(
            "".join(f"{p}\n" for p in data["apt_packages"]).encode()
        )
    setup = {"system": "setup-python.sh", "uv": "setup-python-uv.sh", "conda": "setup-conda.sh"}
    script = setup[env.python.source]
    files[f"envbuild/{script}"] = _script(root, script)
    needs_uv = env.python.source == "uv" or bool(data["pip_file"])
    if needs_uv:
        # Not a binary from this host: a pinned, hashed requirement that the
        # build installs from the index (see UV_VERSION).
        files[f"envbuild/{UV_REQUIREMENTS_FILE}"] = ContextFile(
            uv_requirements(env, platform).encode("utf-8")
        )
        files["envbuild/install-uv.sh"] = _script(root, "install-uv.sh")
    if data["pip_file"] == locking.PIP_LOCK_FILE:
        assert locks is not None and locks.pip is not None
        files[f"envbuild/{locking.PIP_LOCK_FILE}"] = ContextFile(locks.pip.data)
    elif data["pip_file"]:
        files["envbuild/requirements.txt"] = ContextFile(_requirements(env).encode("utf-8"))
    if data["pip_file"]:
        files["envbuild/pip-install.sh"] = _script(root, "pip-install.sh")
    if data["conda_file"] == locking.CONDA_LOCK_FILE:
        assert locks is not None and locks.conda is not None
        files[f"envbuild/{locking.CONDA_LOCK_FILE}"] = ContextFile(locks.conda.data)
        # The locked packages, installed for /opt/conda by py-rattler from
        # envbuild's package store (filled, hash-checked, by `envbuild lock`):
        # a deterministic function of the lock, so the build needs no conda
        # binary and no channel.
        if conda_store is None:  # the caller's mistake: envbuild's own failure
            raise ValueError(
                f"{env.name}: rendering a conda-locked environment needs envbuild's package "
                "store (render(..., conda_store=envbuild.lock.conda_store(settings.home)))"
            )
        files[CONDA_INPUT_IN_CONTEXT] = ContextFile(
            locking.conda_prefix_tar(locks.conda.data, CONDA_PREFIX, store=conda_store)
        )
    elif data["conda_file"]:
        files["envbuild/conda-specs.txt"] = ContextFile(
            _listing("[conda] packages", list(locking.conda_specs(env))).encode("utf-8")
        )
        files["envbuild/condarc"] = ContextFile(_condarc(env).encode("utf-8"))
        micromamba = micromamba_binary()
        if micromamba is not None:  # else the build says what is missing
            files[CONDA_INPUT_IN_CONTEXT] = _tool(micromamba)
    pin = locks.base if locks is not None else None
    base_pin = f"{pin.kind}:{pin.id}" if pin is not None else None
    if drift is not None:
        base_pin = f"{identity.DRIFTED_BASE}:{drift.actual}"
    if base_pin is None and env.base.image and base_id is not None:
        base_pin = f"{identity.ENGINE_BASE}:{base_id}"
    return BuildContext(files=_frozen(files), base_image=env.base.image, base_pin=base_pin)


def _script(root: Path, name: str) -> ContextFile:
    """A helper script of ``templates/files/``, given the secrets' paths as data."""
    template = f"files/{name}"
    try:
        text = _jinja_env(str(root)).get_template(template).render(secrets=SECRETS)
    except UnsafeValueError as exc:
        raise RenderError(f"cannot render {template}: {exc}", template=template) from exc
    return ContextFile(text.encode("utf-8"))


def _frozen(files: Mapping[str, ContextFile]) -> Mapping[str, ContextFile]:
    from types import MappingProxyType

    return MappingProxyType(dict(sorted(files.items())))
