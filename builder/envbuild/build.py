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
import functools
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from envbuild import __version__
from envbuild.context import BuildContext
from envbuild.definition import DEFINITION_FILE, Environment, load
from envbuild.engine import BuildRequest, Engine, ImageInfo
from envbuild.errors import EngineError
from envbuild.hashing import HASH_SCHEMA, content_hash
from envbuild.render import render, templates_dir
from envbuild.settings import Settings

HASH_LABEL = "io.envbuild.hash"
CA_SECRET = "envbuild-ca"  # noqa: S105 - the secret's id, not a secret
CA_ENV_VARS = ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")

Log = Callable[[str], None]


@dataclass(frozen=True)
class Resolved:
    """An environment with its content hash; its build context is rendered on demand."""

    env: Environment
    hash: str
    prefix: str
    rendered: BuildContext | None = None

    @functools.cached_property
    def context(self) -> BuildContext:
        """The rendered build context (rendered now if the hash came from the memo)."""
        if self.rendered is not None:
            return self.rendered
        return render(self.env)

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


def _memo_key(env: Environment, settings: Settings) -> str:
    """A digest of everything rendering reads: if it is unchanged, so is the hash.

    The definition files of the whole ``extends`` chain, a base Dockerfile,
    every template, and the source of the modules that render and hash.
    """
    from envbuild import context, definition, grammar, hashing, quoting
    from envbuild import render as render_mod

    digest = hashlib.sha256()
    digest.update(f"{__version__}\0{HASH_SCHEMA}\0{settings.platform}\0".encode())
    for module in (context, definition, grammar, hashing, quoting, render_mod):
        digest.update(Path(module.__file__ or "").read_bytes())
    root = templates_dir()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    for folder in (env.path, *env.parents):
        digest.update(b"\0env\0" + (folder / DEFINITION_FILE).read_bytes())
    if env.base.dockerfile is not None:
        digest.update(b"\0base\0" + env.base.dockerfile.read_bytes())
    return digest.hexdigest()


def resolve(env: str | Path | Environment, settings: Settings, *, memo: bool = True) -> Resolved:
    """Load (if needed) and hash ``env``; touches neither network nor engine.

    Rendering costs more than everything else on a cache hit, so the hash of a
    definition whose inputs (see :func:`_memo_key`) are unchanged is read from a
    memo under ``settings.home``; the context is then rendered only if needed.
    """
    environment = env if isinstance(env, Environment) else load(env)
    memo_file = None
    if memo:
        memo_file = settings.home / "cache" / "hashes" / _memo_key(environment, settings)
        with contextlib.suppress(OSError):
            remembered = memo_file.read_text(encoding="ascii").strip()
            if len(remembered) == 64:
                return Resolved(environment, remembered, settings.prefix)
    context = render(environment)
    digest = content_hash(context, platform=settings.platform)
    if memo_file is not None:
        with contextlib.suppress(OSError):
            memo_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(digest, encoding="ascii")
            tmp.replace(memo_file)
    return Resolved(environment, digest, settings.prefix, context)


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


def cached(
    env: str | Path | Environment | Resolved, settings: Settings, engine: Engine | None = None
) -> BuildResult | None:
    """The existing image of ``env`` (one engine call), or ``None`` on a cache miss."""
    started = time.monotonic()
    resolved = env if isinstance(env, Resolved) else resolve(env, settings)
    if engine is None:
        from envbuild.engine import DockerEngine

        engine = DockerEngine(settings.docker)
    info = _cache_hit(engine, resolved)
    if info is None:
        return None
    return BuildResult(
        resolved.hash_tag,
        resolved.hash,
        True,
        info.id,
        time.monotonic() - started,
        (resolved.hash_tag, resolved.version_tag),
    )


def report(result: BuildResult, *, as_json: bool, quiet: bool) -> None:
    """Print a build's result as ``envbuild build`` does: the image (or JSON) to stdout."""
    import json
    import sys

    if as_json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n")
        return
    if not quiet:
        what = "cached" if result.cached else f"built in {result.seconds:.1f}s"
        sys.stderr.write(f"envbuild: {result.image} ({what})\n")
    sys.stdout.write(result.image + "\n")


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
        hit = cached(resolved, settings, engine)
        if hit is not None:
            return hit
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
        context = resolved.context
        if resolved.rendered is None:
            # The hash came from the memo: the context must still hash the same.
            actual = content_hash(context, platform=settings.platform)
            if actual != resolved.hash:
                raise EngineError(  # a bug, not a user error: say so plainly
                    f"internal error: memoised hash {resolved.hash[:12]} != rendered {actual[:12]}",
                    hint=f"remove {settings.home / 'cache'} and report this",
                )
        with tempfile.TemporaryDirectory(prefix="envbuild-ctx-") as tmp:
            context.write(Path(tmp))
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
