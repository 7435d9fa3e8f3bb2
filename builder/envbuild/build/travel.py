"""Images that travel: push to a registry, and the registry as a cache tier.

* :func:`push` puts ``<registry>/<name>:<hash12>`` and ``:<version>`` in the
  registry, then checks with a manifest ``HEAD`` that the registry serves the
  digest the push reported. An image the registry already holds (its digest is
  among the local image's ``RepoDigests``) costs the ``HEAD``s and nothing
  else. The hash tag goes first and the version tag only after it verified, so
  a failure never leaves the moving tag on something unverified; the local
  registry tags a failed push made are removed again.
* :func:`fetch` answers a build from the registry: when it holds
  ``<name>:<hash12>``, the image is pulled by digest and accepted only if its
  ``io.envbuild.hash`` label holds the full hash; only then is it tagged
  locally. A tampered image is removed again and refused.
* :func:`cache_source` names the registry's earlier image of an environment,
  whose inline cache a build may reuse.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from envbuild import identity
from envbuild.engine.registry import Manifests, Registry, RegistryClient
from envbuild.errors import RegistryError, UsageError
from envbuild.log import Log

if TYPE_CHECKING:
    from envbuild.build.builder import Resolved
    from envbuild.build.result import BuildResult
    from envbuild.engine.docker import Engine, ImageInfo
    from envbuild.lock.model import Drift


@dataclass
class Remote:
    """A registry and its API client, used together."""

    registry: Registry
    client: Manifests

    @classmethod
    def open(cls, registry: Registry) -> Remote:
        """The remote of ``registry``, its API spoken by a :class:`RegistryClient`."""
        return cls(registry, RegistryClient(registry))

    @property
    def auth(self) -> dict[str, str] | None:
        """The engine's auth document for this registry (``None`` without credentials)."""
        creds = self.registry.credentials
        return creds.auth_config(self.registry.host) if creds is not None else None

    def ref(self, name: str, tag: str) -> str:
        """``<registry>/<name>:<tag>``."""
        return f"{identity.repository(self.registry.prefix, name)}:{tag}"

    def digest_ref(self, name: str, digest: str) -> str:
        """``<registry>/<name>@<digest>``."""
        return f"{identity.repository(self.registry.prefix, name)}@{digest}"


@dataclass(frozen=True)
class PushResult:
    """What ``push`` did for one environment."""

    image: str  # the local hash tag
    hash: str
    refs: tuple[str, ...]  # the registry's hash tag and version tag
    digest: str
    pushed: bool  # False when the registry already held exactly this image
    seconds: float

    def to_json(self) -> dict[str, object]:
        """The ``--json`` shape of ``envbuild push``."""
        return {
            "image": self.image,
            "hash": self.hash,
            "refs": list(self.refs),
            "digest": self.digest,
            "pushed": self.pushed,
            "seconds": round(self.seconds, 3),
        }


def report_push(result: PushResult, *, as_json: bool) -> None:
    """Print a push's result as ``envbuild push`` does for one environment."""
    if as_json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n")
        return
    what = "pushed" if result.pushed else "already in the registry"
    sys.stderr.write(f"envbuild: {result.refs[0]} {result.digest} ({what})\n")
    sys.stdout.write(f"{result.refs[0]}@{result.digest}\n")


def _verify(remote: Remote, name: str, tag: str, digest: str) -> None:
    served = remote.client.manifest_digest(name, tag)
    if served != digest:
        raise RegistryError(
            f"the push of {remote.ref(name, tag)} reported {digest}, but the registry serves "
            f"{served or 'nothing'} under that tag",
            hint="another push may have raced this one; push again",
        )


def push_verified(
    engine: Engine, remote: Remote, image_id: str, name: str, tag: str, log: Log
) -> str:
    """Tag ``image_id`` as ``<registry>/<name>:<tag>``, push it, and return the digest the
    push reported once the registry serves exactly that digest under the tag.

    The one push-and-verify step of every push (environments, bases, job images):
    a push without a digest, or a registry serving another one, is a
    :class:`RegistryError`, and a registry tag made here is removed again.
    """
    ref = remote.ref(name, tag)
    info = engine.inspect_image(image_id)
    made = info is None or ref not in info.tags
    try:
        engine.tag(image_id, ref)
        digest = engine.push_image(ref, remote.auth, log)
        if not digest:
            raise RegistryError(f"the push of {ref} reported no digest")
        _verify(remote, name, tag, digest)
    except BaseException:
        if made:  # nothing half-tagged
            with contextlib.suppress(Exception):
                engine.remove_image(ref)
        raise
    return digest


def already_pushed(
    remote: Remote,
    engine: Engine,
    *,
    prefix: str,
    name: str,
    version: int,
    digest: str,
    started: float,
) -> tuple[ImageInfo | None, PushResult | None]:
    """The engine's image of ``digest`` (``None`` if it holds none), and, when the registry
    already holds exactly that image under both tags, the answer of a push (one inspect,
    two manifest HEADs); ``None`` when a push has work to do."""
    info = engine.inspect_image(identity.hash_tag(prefix, name, digest))
    if info is None or not identity.is_hit(info, digest):
        return None, None
    refs = (remote.ref(name, digest[:12]), remote.ref(name, str(version)))
    held = remote.client.manifest_digest(name, digest[:12])
    if (
        held is not None
        and remote.digest_ref(name, held) in info.repo_digests
        and remote.client.manifest_digest(name, str(version)) == held
    ):
        local = identity.hash_tag(prefix, name, digest)
        return info, PushResult(local, digest, refs, held, False, time.monotonic() - started)
    return info, None


def refuse_drifted(image: str, drift: Drift) -> None:
    """Refuse to push ``image``, built on a drifted base: it is not the published image."""
    from envbuild.errors import LockError

    raise LockError(
        f"{image} is not pushed: {drift.reason} (--base-drift=allow), so it is not the image "
        "its lock describes",
        hint="publish from a machine with the pinned base, or relock and bump: "
        "`envbuild lock ENV --bump`",
    )


def push(resolved: Resolved, *, remote: Remote, engine: Engine, log: Log) -> PushResult:
    """Push the image of ``resolved`` (already built) and verify the registry's digest.

    An image built on a drifted base (``--base-drift=allow``) is refused.
    """
    started = time.monotonic()
    name, digest_hex = resolved.env.name, resolved.hash
    info, done = already_pushed(
        remote,
        engine,
        prefix=resolved.prefix,
        name=name,
        version=resolved.env.version,
        digest=digest_hex,
        started=started,
    )
    if info is None:
        raise UsageError(
            f"{name}: the engine holds no image of hash {digest_hex[:12]} to push",
            hint=f"build it first: envbuild build {resolved.env.path}",
        )
    if identity.is_drifted(info):
        from envbuild.lock.model import Drift

        labels = info.labels
        refuse_drifted(
            resolved.hash_tag,
            Drift(
                resolved.env.base.image or "",
                labels[identity.BASE_DRIFT_LOCKED_LABEL],
                labels.get(identity.BASE_DRIFT_ACTUAL_LABEL, "?"),
            ),
        )
    if done is not None:
        return done
    return push_tags(
        remote,
        engine,
        info,
        name=name,
        version=resolved.env.version,
        digest_hex=digest_hex,
        local_tag=resolved.hash_tag,
        log=log,
        started=started,
    )


def push_tags(
    remote: Remote,
    engine: Engine,
    info: ImageInfo,
    *,
    name: str,
    version: int,
    digest_hex: str,
    local_tag: str,
    log: Log,
    started: float,
) -> PushResult:
    """The pushing part of :func:`push`, for the engine's image ``info`` of ``digest_hex``
    (checked to be that hash's, and not drifted): the hash tag, verified, then the version
    tag, verified; on any failure the registry tags made here are removed again."""
    hash_ref = remote.ref(name, digest_hex[:12])
    version_ref = remote.ref(name, str(version))
    refs = (hash_ref, version_ref)
    made = [ref for ref in refs if ref not in info.tags]
    try:
        engine.tag(info.id, hash_ref)
        digest = engine.push_image(hash_ref, remote.auth, log)
        if not digest:
            raise RegistryError(f"the push of {hash_ref} reported no digest")
        _verify(remote, name, digest_hex[:12], digest)
        engine.tag(info.id, version_ref)
        version_digest = engine.push_image(version_ref, remote.auth, log)
        if version_digest != digest:
            raise RegistryError(
                f"the push of {version_ref} reported {version_digest or 'no digest'}, "
                f"not the {digest} of {hash_ref}"
            )
        _verify(remote, name, str(version), digest)
    except BaseException:
        for ref in made:  # nothing half-tagged: the local registry tags go again
            with contextlib.suppress(Exception):
                engine.remove_image(ref)
        raise
    return PushResult(local_tag, digest_hex, refs, digest, True, time.monotonic() - started)


@dataclass(frozen=True)
class BasePushResult:
    """What ``base push`` did: where the base is now, and as which digest."""

    ref: str  # the local reference pushed
    pushed_as: str  # <registry>/<path>:<tag>
    digest: str
    pushed: bool
    seconds: float

    @property
    def pinned(self) -> str:
        """``<registry>/<path>@<digest>``: what a lock pins and a build pulls."""
        return f"{self.pushed_as.rpartition(':')[0]}@{self.digest}"

    def to_json(self) -> dict[str, object]:
        """The ``--json`` shape of ``envbuild base push``."""
        return {
            "ref": self.ref,
            "pushed_as": self.pushed_as,
            "pinned": self.pinned,
            "digest": self.digest,
            "pushed": self.pushed,
            "seconds": round(self.seconds, 3),
        }


def push_base(ref: str, *, remote: Remote, engine: Engine, log: Log) -> BasePushResult:
    """Push the base image ``ref`` (as the engine holds it) to ``<registry>/<path>:<tag>``,
    verified like :func:`push`, so that ``envbuild lock --registry`` can pin it there."""
    from envbuild.engine.registry import image_path

    started = time.monotonic()
    info = engine.inspect_image(ref)
    if info is None:
        raise UsageError(
            f"the base image {ref} is not in the engine",
            hint=f"bootstrap it first: envbuild base bootstrap {ref}",
        )
    path, tag = image_path(ref)
    dest = f"{remote.registry.prefix}/{path}:{tag}"
    held = remote.client.manifest_digest(path, tag)
    if held is not None and f"{dest.rpartition(':')[0]}@{held}" in info.repo_digests:
        return BasePushResult(ref, dest, held, False, time.monotonic() - started)
    digest = push_verified(engine, remote, info.id, path, tag, log)
    return BasePushResult(ref, dest, digest, True, time.monotonic() - started)


@dataclass(frozen=True)
class BasePullResult:
    """What ``base pull`` did: the base fetched from the registry and tagged locally."""

    ref: str  # the local reference now naming it
    pulled: str  # <registry>/<path>@<digest>
    id: str  # the engine's image ID (the same as where it was pushed from)
    seconds: float

    def to_json(self) -> dict[str, object]:
        """The ``--json`` shape of ``envbuild base pull``."""
        return {
            "ref": self.ref,
            "pulled": self.pulled,
            "id": self.id,
            "seconds": round(self.seconds, 3),
        }


def pull_base(ref: str, *, remote: Remote, engine: Engine, log: Log) -> BasePullResult:
    """Fetch the base ``ref`` that ``envbuild base push`` put in the registry, and tag it
    ``ref`` here: the same image ID as on the machine that pushed it, so a lock pinning
    that image ID (or its digest) is satisfied.

    Pulled by the digest the registry serves for ``<registry>/<path>:<tag>``; the local
    tag moves only once the pull succeeded.
    """
    from envbuild.engine.registry import image_path

    started = time.monotonic()
    path, tag = image_path(ref)
    source = f"{remote.registry.prefix}/{path}"
    digest = remote.client.manifest_digest(path, tag)
    if digest is None:
        raise RegistryError(
            f"the registry holds no {source}:{tag}",
            hint=f"push it from a machine that has the base: envbuild base push {ref} "
            f"--registry {remote.registry.prefix}",
        )
    pulled = f"{source}@{digest}"
    log(f"envbuild: pulling {pulled}")
    engine.pull_image(pulled, remote.auth, log)
    info = engine.inspect_image(pulled)
    if info is None:
        raise RegistryError(
            f"the pull of {pulled} reported success, but the engine has no such image"
        )
    engine.tag(info.id, ref)
    return BasePullResult(ref, pulled, info.id, time.monotonic() - started)


def fetch(
    resolved: Resolved, *, remote: Remote, engine: Engine, log: Log, started: float
) -> BuildResult | None:
    """The image of ``resolved`` from the registry (pulled by digest and verified), or
    ``None`` when the registry does not hold its hash tag."""
    return fetch_image(
        remote,
        engine,
        name=resolved.env.name,
        digest_hex=resolved.hash,
        tags=(resolved.hash_tag, resolved.version_tag),
        log=log,
        started=started,
    )


def fetch_image(
    remote: Remote,
    engine: Engine,
    *,
    name: str,
    digest_hex: str,
    tags: tuple[str, str],
    log: Log,
    started: float,
) -> BuildResult | None:
    """:func:`fetch` from what identifies the image alone: the environment's ``name``, its
    full hash and its local ``(hash tag, version tag)`` (the console script's fast path
    knows these from the memo, without loading the definition)."""
    from envbuild.build.result import BuildResult

    hash_tag, version_tag = tags
    digest = remote.client.manifest_digest(name, digest_hex[:12])
    if digest is None:
        return None
    ref = remote.digest_ref(name, digest)
    log(f"envbuild: pulling {ref}")
    engine.pull_image(ref, remote.auth, log)
    info = engine.inspect_image(ref)
    if info is None:
        raise RegistryError(f"the pull of {ref} reported success, but the engine has no such image")
    if not identity.is_hit(info, digest_hex):
        found = info.labels.get(identity.HASH_LABEL)
        with contextlib.suppress(Exception):
            engine.remove_image(ref)
        raise RegistryError(
            f"refused {remote.ref(name, digest_hex[:12])} ({digest}): its "
            f"{identity.HASH_LABEL} label is {found or 'missing'}, not {digest_hex}",
            hint="the registry's image is not the one this definition builds; nothing was "
            "tagged. Remove that tag from the registry, or build without --registry",
        )
    engine.tag(info.id, version_tag)
    engine.tag(info.id, hash_tag)  # last: its presence means "complete"
    return BuildResult(
        hash_tag,
        digest_hex,
        True,
        info.id,
        time.monotonic() - started,
        (hash_tag, version_tag),
        tier="registry",
        digest=digest,
    )


def cache_source(resolved: Resolved, remote: Remote) -> str | None:
    """The registry's image of this version of the environment, else of the version
    before: the layer cache a build may import (``None`` when it holds neither)."""
    name, version = resolved.env.name, resolved.env.version
    for candidate in (version, version - 1):
        if candidate < 0:
            continue
        digest = remote.client.manifest_digest(name, str(candidate))
        if digest is not None:
            return remote.ref(name, str(candidate))
    return None


@contextlib.contextmanager
def docker_config(registry: Registry) -> Iterator[Path | None]:
    """A private docker client config holding ``registry``'s credentials, for BuildKit
    to fetch a cache with (``None`` without credentials); removed afterwards."""
    creds = registry.credentials
    if creds is None:
        yield None
        return
    import base64

    with tempfile.TemporaryDirectory(prefix="envbuild-docker-config-") as tmp:
        token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
        path = Path(tmp) / "config.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"auths": {registry.host: {"auth": token}}}, handle)
        yield Path(tmp)
