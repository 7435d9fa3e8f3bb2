"""Build an environment's image, or find the one that already exists.

``resolve`` ties the pure stages together (load -> render -> hash) and
``build`` adds the engine: a cache hit answers with one ``inspect``; a miss
builds with BuildKit under a per-hash file lock (two processes building the
same environment build it once), and tags the image with its hash only after
the build succeeded, so a failed or interrupted build never leaves a tag.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from envbuild import identity, process, reads
from envbuild.build.result import BuildResult as BuildResult  # re-exported, as is report
from envbuild.build.result import report as report
from envbuild.cache.hashing import content_hash
from envbuild.cache.lookup import lookup
from envbuild.definition.model import Environment, load
from envbuild.engine.docker import BuildRequest, Engine, ImageStore
from envbuild.errors import BaseMissing, EngineError, UsageError
from envbuild.identity import HASH_LABEL as HASH_LABEL  # re-exported
from envbuild.identity import INPUTS_LABEL as INPUTS_LABEL  # re-exported
from envbuild.lock.model import conda_store
from envbuild.log import Log
from envbuild.render.context import BuildContext
from envbuild.render.dockerfile import CA_SECRET, NETRC_SECRET, render
from envbuild.settings import DEFAULT_PLATFORM, Settings, load_settings

if TYPE_CHECKING:  # the registry tier is imported only by a build that uses one
    from envbuild.build.travel import Remote
    from envbuild.lock.model import Drift

CA_ENV_VARS = ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
PYTHON_MIRROR_VAR = "UV_PYTHON_INSTALL_MIRROR"


@dataclass(frozen=True)
class Resolved:
    """An environment with its content hash; its build context is rendered on demand."""

    env: Environment
    hash: str
    prefix: str
    rendered: BuildContext | None = None
    platform: str = DEFAULT_PLATFORM
    base_id: str | None = None  # the engine's image ID of an unlocked base image
    drift: Drift | None = None  # a locked base that moved, built on anyway
    conda_store: Path | None = None  # envbuild's conda package store (a conda-locked env)

    @functools.cached_property
    def context(self) -> BuildContext:
        """The rendered build context (rendered now if the hash came from the memo)."""
        if self.rendered is not None:
            return self.rendered
        return render(
            self.env,
            platform=self.platform,
            base_id=self.base_id,
            drift=self.drift,
            conda_store=self.conda_store,
        )

    @property
    def repository(self) -> str:
        """``<prefix>/<name>``."""
        return identity.repository(self.prefix, self.env.name)

    @property
    def hash_tag(self) -> str:
        """The tag that names this exact content: ``<prefix>/<name>:<hash12>``."""
        return identity.hash_tag(self.prefix, self.env.name, self.hash)

    @property
    def version_tag(self) -> str:
        """The moving tag of the definition's version: ``<prefix>/<name>:<version>``."""
        return identity.version_tag(self.prefix, self.env.name, self.env.version)


def resolve(
    env: str | Path | Environment,
    *,
    settings: Settings | None = None,
    memo: bool = True,
    engine: ImageStore | None = None,
    drift: Drift | None = None,
) -> Resolved:
    """Load (if needed) and hash ``env``.

    The hash covers the identity of the base actually used: a locked base is
    known offline from its pin; for an unlocked base image it is the image ID
    the engine holds (one inspect, through ``engine`` or the settings' engine),
    so without an engine an unlocked base is an error that says to lock.
    Nothing else touches the engine or the network.

    Rendering costs more than everything else on a cache hit, so the hash of a
    definition none of whose rendering inputs changed is read from the memo
    (:mod:`envbuild.cache.memo`, a record of the files the last render read);
    the context is then rendered only if needed.

    ``drift`` hashes a locked environment on the base the engine holds instead
    of its pin (see :func:`build`'s ``base_drift``): another hash, never memoised.
    """
    from envbuild.cache import memo as memo_mod

    settings = settings or load_settings()
    store = conda_store(settings.home)
    environment = env if isinstance(env, Environment) else load(env)
    base_id = base_identity(environment, settings, engine)
    folder, platform = environment.path, settings.platform
    memo = memo and drift is None
    if memo:
        found = memo_mod.recall(settings.home, folder, platform, base_id=lambda _: base_id)
        if found and (found.name, found.version) == (environment.name, environment.version):
            return Resolved(
                environment, found.hash, settings.prefix, None, platform, base_id, conda_store=store
            )
    with reads.recording() as seen:
        context = render(
            environment, platform=platform, base_id=base_id, drift=drift, conda_store=store
        )
    digest = content_hash(context, platform=platform)
    if memo and environment.sources and seen.refused is None:
        seen.merge(reads.Reads(dict(environment.sources)))
        memo_mod.remember(
            settings.home,
            folder,
            platform,
            seen.files.items(),
            digest=digest,
            name=environment.name,
            version=environment.version,
            base=(environment.base.image, base_id) if environment.base.image and base_id else None,
            parents=[str(parent.resolve()) for parent in environment.parents],
            run={
                "workdir": environment.run.workdir,
                "shm_size": environment.run.shm_size,
                "cuda": environment.gpu.cuda,
            },
        )
    elif memo:
        memo_mod.forget(settings.home, folder, platform)
    return Resolved(environment, digest, settings.prefix, context, platform, base_id, drift, store)


def base_identity(
    env: Environment, settings: Settings, engine: ImageStore | None = None
) -> str | None:
    """The image ID the engine holds for ``env``'s base image, when it is not locked.

    ``None`` when the base's identity is known without the engine: a locked
    base (its pin is hashed) or a base Dockerfile (its text is hashed).
    """
    import envbuild.lock as locking

    image = env.base.image
    if image is None:
        return None
    locks = locking.read(env.path)
    if locks is not None and locks.base is not None:
        return None
    why = (
        f"{env.name}: its base image {image} is not locked, so the image the engine holds "
        "for it is part of the hash"
    )
    hint = f"lock it (`envbuild lock {env.path}`) to hash and render it without the engine"
    if engine is None:
        from envbuild.engine.docker import DockerEngine

        engine = DockerEngine(settings.docker, state=settings.home)
    try:
        info = engine.inspect_image(image)
    except EngineError as exc:
        raise EngineError(f"{why}, and the engine cannot be reached: {exc}", hint=hint) from exc
    if info is None:
        raise BaseMissing(
            f"{why}, and the engine does not hold it",
            hint=f"pull it (`docker pull {image}`), or {hint}",
        )
    return info.id


def _pull_ref(image: str) -> str:
    """``image`` with the tag a pull needs (``:latest`` when it names none)."""
    if "@" in image or ":" in image.rsplit("/", 1)[-1]:
        return image
    return f"{image}:latest"


def _readable_file(path: Path, option: str, what: str) -> Path:
    """``path`` if it is a file this process can read, else a usage error naming ``option``."""
    problem = None
    if not path.exists():
        problem = "does not exist"
    elif not path.is_file():
        problem = "is not a file"
    elif not os.access(path, os.R_OK):
        problem = "cannot be read (permission denied)"
    if problem:
        raise UsageError(f"{option} {path}: {problem}", hint=f"name {what}")
    return path


def find_netrc(explicit: Path | None = None) -> Path | None:
    """The netrc with private index credentials: explicit, else ``$NETRC`` if set.

    Never ``~/.netrc`` implicitly: credentials reach a build only when asked.
    """
    if explicit is not None:
        return _readable_file(explicit, "--netrc", "the netrc with the index credentials")
    value = os.environ.get("NETRC")
    if value and Path(value).is_file():
        return Path(value)
    return None


def _python_mirror(env: Environment) -> dict[str, str]:
    """The uv Python download mirror, forwarded as a build argument (it is not secret)."""
    value = os.environ.get(PYTHON_MIRROR_VAR)
    if env.python.source != "uv" or not value:
        return {}
    from envbuild.definition.grammar import check_index_url

    bad = check_index_url(value)
    if bad:
        raise EngineError(
            f"{PYTHON_MIRROR_VAR}={value!r}: {bad[0]}",
            hint=bad[1] or "use a plain http(s) URL; credentials go in a netrc (--netrc)",
        )
    return {PYTHON_MIRROR_VAR: value}


def _nowhere(line: str) -> None:
    pass


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")


def find_ca_bundle(explicit: Path | None = None) -> Path | None:
    """The CA bundle to hand to package steps: explicit, else from the environment."""
    if explicit is not None:
        return _readable_file(explicit, "--ca-bundle", "a PEM file of CA certificates")
    for var in CA_ENV_VARS:
        value = os.environ.get(var)
        if value and Path(value).is_file():
            return Path(value)
    return None


@contextlib.contextmanager
def _hash_lock(settings: Settings, digest: str, log: Log, warn: Log) -> Iterator[None]:
    """Hold the build lock of one hash; wait (saying so) while another process holds it.

    The lock only saves a second process from building the same image twice:
    when the state folder cannot hold it (a file where ``locks`` should be, a
    read-only or full disk), the build goes on without it, with a warning.
    """
    path = settings.locks_dir / f"{digest}.lock"
    try:
        settings.locks_dir.mkdir(parents=True, exist_ok=True)
        handle = path.open("a")
    except OSError as exc:
        warn(
            f"envbuild: warning: cannot take the build lock {path} ({exc.strerror or exc}); "
            "building without it"
        )
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"envbuild: another envbuild is building {digest[:12]}; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lookup(engine: Engine, resolved: Resolved, started: float) -> BuildResult | None:
    """The cache lookup of :mod:`envbuild.cache.lookup`, as a build's result."""
    hit = lookup(
        engine,
        prefix=resolved.prefix,
        name=resolved.env.name,
        version=resolved.env.version,
        digest=resolved.hash,
        drifted=resolved.drift is not None,
    )
    if hit is None:
        return None
    return BuildResult(
        hit.image,
        resolved.hash,
        True,
        hit.id,
        time.monotonic() - started,
        hit.tags,
        base_drift=resolved.drift,
    )


def cached(
    env: str | Path | Environment | Resolved, settings: Settings, engine: Engine | None = None
) -> BuildResult | None:
    """The existing image of ``env`` (one engine call), or ``None`` on a cache miss.

    A hit moves the version tag to the image it answers with.
    """
    started = time.monotonic()
    if engine is None:
        from envbuild.engine.docker import DockerEngine

        engine = DockerEngine(settings.docker, state=settings.home)
    resolved = env if isinstance(env, Resolved) else resolve(env, settings=settings, engine=engine)
    return _lookup(engine, resolved, started)


def build(
    env: str | Path | Environment | Resolved,
    *,
    settings: Settings | None = None,
    engine: Engine | None = None,
    rebuild: bool = False,
    ca_bundle: Path | None = None,
    netrc: Path | None = None,
    strict: bool = False,
    log: Log | None = None,
    warn: Log = _stderr,
    remote: Remote | None = None,
    base_drift: str | None = None,
) -> BuildResult:
    """Return the image of ``env``, building it only when its hash is not in the engine.

    With a ``remote`` registry, a local miss asks the registry next (see
    :func:`envbuild.build.travel.fetch`: pulled by digest, its hash label
    verified); a build then reuses the registry's earlier image of the
    environment as layer cache (inline cache), and says so when that cache
    could not be imported.

    ``strict`` refuses an environment whose inputs are not all locked; without
    it such an image is built, labelled ``io.envbuild.reproducible=false``
    with the reasons, and ``warn`` says why. A locked base must still be the
    image the lock pinned, or the build refuses to start, saying how to fix it;
    unless ``base_drift`` (default: the settings') is ``"allow"`` and not
    ``strict``: then an image of the locked hash that the engine or the
    registry holds still answers, and otherwise the image is built on the base
    the engine holds (:func:`resolve` with the drift): labelled with both base
    identities and not reproducible, with its own hash (never the locked one),
    without the version tag, never fetched from or pushed to a registry; the
    result's ``base_drift`` says so and ``warn`` too.

    ``settings`` default to :func:`load_settings`, ``engine`` to the local
    Docker engine; ``log`` receives the build log (default: nowhere).
    """
    import envbuild.lock as locking

    started = time.monotonic()
    settings = settings or load_settings()
    if engine is None:
        from envbuild.engine.docker import DockerEngine

        engine = DockerEngine(settings.docker, state=settings.home)
    log = log or _nowhere
    allow_drift = (base_drift or settings.base_drift) == "allow" and not strict
    if isinstance(env, Resolved):
        environment = env.env
    else:
        environment = env if isinstance(env, Environment) else load(env)
    reasons = locking.unlocked_reasons(environment, locking.read(environment.path))
    if reasons and strict:  # refused before the engine is asked anything
        raise locking.LockError(
            f"{environment.name} is not locked, and --strict builds only locked environments:\n"
            + "\n".join(f"  - {r}" for r in reasons),
            hint=f"run `envbuild lock {environment.path}` and commit the lock files",
        )
    secrets = {}
    bundle = find_ca_bundle(ca_bundle)  # the user's files are checked before the cache lookup
    if bundle is not None:
        secrets[CA_SECRET] = bundle
    credentials = find_netrc(netrc)
    if credentials is not None:
        secrets[NETRC_SECRET] = credentials
    if isinstance(env, Resolved):
        resolved = env
    else:
        try:
            resolved = resolve(environment, settings=settings, engine=engine)
        except BaseMissing:
            # As `docker build` would: pull the unlocked base, then hash the image pulled.
            assert environment.base.image is not None
            log(f"envbuild: pulling the base image {environment.base.image}")
            engine.pull_image(_pull_ref(environment.base.image), None, log)
            resolved = resolve(environment, settings=settings, engine=engine)
    if not rebuild:
        hit = cached(resolved, settings, engine)
        if hit is not None:
            return hit
    # SIGTERM/SIGHUP unwind like Ctrl-C from here on: the docker child is
    # stopped, the context folder removed and the lock released.
    with process.interruptible(), _hash_lock(settings, resolved.hash, log, warn):
        if not rebuild:
            waited = _lookup(engine, resolved, started)  # built while we waited
            if waited is not None:
                log(f"envbuild: {resolved.hash_tag} was built by the other process; reusing it")
                return waited
            if remote is not None:
                from envbuild.build import travel

                fetched = travel.fetch(
                    resolved, remote=remote, engine=engine, log=log, started=started
                )
                if fetched is not None:
                    return fetched
        drift = _check_base(resolved, engine, log, allow_drift=allow_drift)
        if drift is None:
            image_id = _make(
                resolved, settings, engine, secrets, rebuild, reasons, log, warn, remote
            )
    if drift is not None:
        warn(
            f"envbuild: warning: {drift.reason}; building on it (--base-drift=allow): the "
            f"image is labelled {identity.BASE_DRIFT_LOCKED_LABEL}, has its own hash, "
            "takes no version tag and is never pushed"
        )
        drifted = resolve(environment, settings=settings, engine=engine, memo=False, drift=drift)
        return build(
            drifted,
            settings=settings,
            engine=engine,
            rebuild=rebuild,
            ca_bundle=ca_bundle,
            netrc=netrc,
            log=log,
            warn=warn,
            base_drift="allow",
        )
    return BuildResult(
        resolved.hash_tag,
        resolved.hash,
        False,
        image_id,
        time.monotonic() - started,
        _tags(resolved),
        base_drift=resolved.drift,
    )


def _check_base(resolved: Resolved, engine: Engine, log: Log, *, allow_drift: bool) -> Drift | None:
    """The base check before a build: the drift to build on instead, else ``None``.

    A locked base must be its pin (:func:`envbuild.lock.check_base`); over a
    drift already resolved, and for an unlocked base, the engine must still
    hold the image the hash was computed from.
    """
    import envbuild.lock as locking

    if resolved.drift is not None:
        _check_unlocked_base(resolved, engine, resolved.drift.actual)
        return None
    pinned = locking.read(resolved.env.path)
    if pinned is not None and pinned.base is not None:
        return locking.check_base(
            pinned.base, engine, env_path=resolved.env.path, log=log, allow_drift=allow_drift
        )
    if resolved.base_id is not None:
        _check_unlocked_base(resolved, engine, resolved.base_id)
    return None


def _make(
    resolved: Resolved,
    settings: Settings,
    engine: Engine,
    secrets: dict[str, Path],
    rebuild: bool,
    reasons: list[str],
    log: Log,
    warn: Log,
    remote: Remote | None,
) -> str:
    """Build the image of ``resolved`` (its base already checked) and tag it; its ID."""
    context = resolved.context
    _check_tools(resolved)
    if reasons:
        warn(
            f"envbuild: warning: {resolved.env.name} is not reproducible, so its image is "
            "labelled io.envbuild.reproducible=false: "
            + "; ".join(reasons)
            + f" (run `envbuild lock {resolved.env.path}`)"
        )
    if resolved.rendered is None:
        # The hash came from the memo: the context must still hash the same.
        actual = content_hash(context, platform=settings.platform)
        if actual != resolved.hash:
            raise EngineError(  # a bug, not a user error: say so plainly
                f"internal error: memoised hash {resolved.hash[:12]} != rendered {actual[:12]}",
                hint=f"remove {settings.home / 'cache'} and report this",
            )
    process.sweep_temp(("ctx", "iid"))  # what a `kill -9` of an earlier build left
    with tempfile.TemporaryDirectory(prefix=process.temp_prefix("ctx")) as tmp:
        context.write(Path(tmp))
        from envbuild.catalog.explain import inputs_record

        record = inputs_record(context, platform=settings.platform)
        request = BuildRequest(
            context_dir=Path(tmp),
            labels={
                HASH_LABEL: resolved.hash,
                INPUTS_LABEL: json.dumps(record, sort_keys=True, separators=(",", ":")),
            },
            secrets=secrets,
            platform=settings.platform,
            no_cache=rebuild,
            build_args=_python_mirror(resolved.env),
        )
        if remote is None:
            image_id = engine.build(request, log)
        else:
            image_id = _build_with_cache(request, resolved, remote, engine, log, warn)
    _tag(engine, image_id, resolved)
    return image_id


def _tags(resolved: Resolved) -> tuple[str, ...]:
    """The tags an image of ``resolved`` gets: the hash tag, and the version tag unless the
    base drifted (a drifted image never passes for the version's image)."""
    if resolved.drift is not None:
        return (resolved.hash_tag,)
    return (resolved.hash_tag, resolved.version_tag)


def _build_with_cache(
    request: BuildRequest, resolved: Resolved, remote: Remote, engine: Engine, log: Log, warn: Log
) -> str:
    """Build ``request`` with the registry's earlier image as inline layer cache.

    BuildKit goes on without a cache it cannot import, so the log is read for
    that and ``warn`` says it.
    """
    from envbuild.build import travel
    from envbuild.engine.registry import failed_cache_imports

    source = travel.cache_source(resolved, remote)
    lines: list[str] = []

    def keep(line: str) -> None:
        if "cache" in line or " ERROR: " in line:
            lines.append(line)
        log(line)

    with travel.docker_config(remote.registry) as config:
        image_id = engine.build(
            dataclasses.replace(
                request,
                build_args={**request.build_args, "BUILDKIT_INLINE_CACHE": "1"},
                cache_from=(source,) if source else (),
                docker_config=config,
            ),
            keep,
        )
    for ref, error in failed_cache_imports(lines).items():
        warn(
            f"envbuild: warning: the layer cache of {ref} could not be imported ({error}); "
            "built without it"
        )
    return image_id


def _check_unlocked_base(resolved: Resolved, engine: Engine, expected: str) -> None:
    """Refuse to build a hash whose base (unlocked, or drifted) moved after the hash was
    computed: ``expected`` is the image ID it was computed from.

    The image would be built on another base than its hash names, and its
    hash tag would name the wrong content.
    """
    image = resolved.env.base.image
    assert image is not None
    info = engine.inspect_image(image)
    now = info.id if info is not None else "nothing"
    if now != expected:
        raise EngineError(
            f"the base image {image} changed while {resolved.env.name} was being resolved "
            f"(it was {expected}, it is now {now})",
            hint="run the build again: it hashes the base the engine holds now",
        )


def _tag(engine: Engine, image_id: str, resolved: Resolved) -> None:
    """Tag a new image; if a tag fails, leave neither its tags nor an untagged image behind.

    The hash tag is written last: its presence means "built completely".
    """
    done: list[str] = []
    try:
        for ref in reversed(_tags(resolved)):
            engine.tag(image_id, ref)
            done.append(ref)
    except BaseException:
        for ref in done:
            with contextlib.suppress(EngineError):
                engine.remove_image(ref)
        # Removing by ID without force: the engine keeps an image that another
        # tag or a container still uses (an identical earlier build), as it should.
        with contextlib.suppress(EngineError):
            engine.remove_image(image_id)
        raise


def _check_tools(resolved: Resolved) -> None:
    """Say plainly when a tool the Dockerfile bind-mounts is not in the context."""
    import envbuild.lock as locking
    from envbuild.render.dockerfile import CONDA_INPUT_IN_CONTEXT

    if locking.needs_conda(resolved.env) and CONDA_INPUT_IN_CONTEXT not in resolved.context.files:
        # Locked, the conda prefix comes from the lock (py-rattler); unlocked,
        # micromamba solves in the image, and this machine has none to give it.
        raise EngineError(
            f"{resolved.env.name} has conda packages but is not locked, and this machine has "
            "no micromamba to solve them in the build",
            hint=f"lock it (`envbuild lock {resolved.env.path}`, needs py-rattler: "
            "pip install 'envbuild[conda]'), or set ENVBUILD_MICROMAMBA to a linux-64 "
            "micromamba",
        )
