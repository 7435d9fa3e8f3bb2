"""Build an environment's image, or find the one that already exists.

``resolve`` ties the pure stages together (load -> render -> hash) and
``build`` adds the engine: a cache hit answers with one ``inspect``; a miss
builds with BuildKit under a per-hash file lock (two processes building the
same environment build it once), and tags the image with its hash only after
the build succeeded, so a failed or interrupted build never leaves a tag.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from envbuild.context import BuildContext
from envbuild.definition import Environment, load
from envbuild.engine import BuildRequest, Engine, ImageInfo
from envbuild.errors import EngineError
from envbuild.hashing import content_hash
from envbuild.render import render
from envbuild.settings import Settings

HASH_LABEL = "io.envbuild.hash"
CA_SECRET = "envbuild-ca"  # noqa: S105 - the secret's id, not a secret
CA_ENV_VARS = ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")

Log = Callable[[str], None]


@dataclass(frozen=True)
class Resolved:
    """An environment with its rendered context and content hash."""

    env: Environment
    context: BuildContext
    hash: str
    prefix: str

    @property
    def repository(self) -> str:
        """``<prefix>/<name>``."""
        return f"{self.prefix}/{self.env.name}"

    @property
    def hash_tag(self) -> str:
        """The tag that names this exact content: ``<prefix>/<name>:<hash12>``."""
        return f"{self.repository}:{self.hash[:12]}"

    @property
    def version_tag(self) -> str:
        """The moving tag of the definition's version: ``<prefix>/<name>:<version>``."""
        return f"{self.repository}:{self.env.version}"


@dataclass(frozen=True)
class BuildResult:
    """What ``build`` did: the image, its hash, whether it was a cache hit."""

    image: str
    hash: str
    cached: bool
    id: str
    seconds: float
    tags: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        """The ``--json`` shape: image, hash, cached, id, seconds (and tags)."""
        return {
            "image": self.image,
            "hash": self.hash,
            "cached": self.cached,
            "id": self.id,
            "seconds": round(self.seconds, 3),
            "tags": list(self.tags),
        }


def resolve(env: str | Path | Environment, settings: Settings) -> Resolved:
    """Load (if needed), render and hash ``env``; touches neither network nor engine."""
    environment = env if isinstance(env, Environment) else load(env)
    context = render(environment)
    digest = content_hash(context, platform=settings.platform)
    return Resolved(environment, context, digest, settings.prefix)


def find_ca_bundle(explicit: Path | None = None) -> Path | None:
    """The CA bundle to hand to package steps: explicit, else from the environment."""
    if explicit is not None:
        if not explicit.is_file():
            raise EngineError(f"CA bundle {explicit} does not exist")
        return explicit
    for var in CA_ENV_VARS:
        value = os.environ.get(var)
        if value and Path(value).is_file():
            return Path(value)
    return None


@contextlib.contextmanager
def _hash_lock(settings: Settings, digest: str, log: Log) -> Iterator[None]:
    """Hold the build lock of one hash; wait (saying so) while another process holds it."""
    settings.locks_dir.mkdir(parents=True, exist_ok=True)
    path = settings.locks_dir / f"{digest}.lock"
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"envbuild: another envbuild is building {digest[:12]}; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cache_hit(engine: Engine, resolved: Resolved) -> ImageInfo | None:
    info = engine.inspect_image(resolved.hash_tag)
    # hash12 is a tag, not a proof: the label carries the full hash.
    if info is not None and info.labels.get(HASH_LABEL) == resolved.hash:
        return info
    return None


def build(
    env: str | Path | Environment | Resolved,
    *,
    settings: Settings,
    engine: Engine,
    rebuild: bool = False,
    ca_bundle: Path | None = None,
    log: Log = lambda line: None,
) -> BuildResult:
    """Return the image of ``env``, building it only when its hash is not in the engine."""
    started = time.monotonic()
    resolved = env if isinstance(env, Resolved) else resolve(env, settings)
    tags = (resolved.hash_tag, resolved.version_tag)
    if not rebuild:
        info = _cache_hit(engine, resolved)
        if info is not None:
            return BuildResult(
                resolved.hash_tag, resolved.hash, True, info.id, time.monotonic() - started, tags
            )
    with _hash_lock(settings, resolved.hash, log):
        if not rebuild:
            info = _cache_hit(engine, resolved)  # built while we waited
            if info is not None:
                log(f"envbuild: {resolved.hash_tag} was built by the other process; reusing it")
                return BuildResult(
                    resolved.hash_tag,
                    resolved.hash,
                    True,
                    info.id,
                    time.monotonic() - started,
                    tags,
                )
        secrets = {}
        bundle = find_ca_bundle(ca_bundle)
        if bundle is not None:
            secrets[CA_SECRET] = bundle
        with tempfile.TemporaryDirectory(prefix="envbuild-ctx-") as tmp:
            resolved.context.write(Path(tmp))
            request = BuildRequest(
                context_dir=Path(tmp),
                labels={HASH_LABEL: resolved.hash},
                secrets=secrets,
                platform=settings.platform,
                no_cache=rebuild,
            )
            image_id = engine.build(request, log)
        # The hash tag is written last: its presence means "built completely".
        engine.tag(image_id, resolved.version_tag)
        engine.tag(image_id, resolved.hash_tag)
    return BuildResult(
        resolved.hash_tag, resolved.hash, False, image_id, time.monotonic() - started, tags
    )
