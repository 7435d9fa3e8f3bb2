"""The curated catalog: discovering environments, ordering them, building them all.

The parts that need no definition model (:func:`discover`, the order, the
results and their report) live in :mod:`envbuild.catalog.results`, where the
console script's catalog fast path finds them too; they are importable here.

A catalog is a folder of environment folders (``curated/<name>/env.toml``).
Environments are built parents first (the ``extends`` graph), cache hits are
skipped, and a failure does not stop the others: every result is reported at
the end, as a registry's CI needs.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from envbuild import files
from envbuild.catalog.results import (
    CatalogResult,
    discover,
    parents_first,
    progress_line,
)
from envbuild.definition.model import DEFINITION_FILE, Environment, load
from envbuild.errors import DefinitionError, EnvbuildError, Problem
from envbuild.log import Log

if TYPE_CHECKING:
    from envbuild.build.result import BuildResult

T = TypeVar("T")

__all__ = [
    "Attempt",
    "CatalogResult",
    "build_all",
    "build_order",
    "definition_contents",
    "definition_digest",
    "definition_file_digests",
    "discover",
    "in_order",
    "lock_contents",
    "lock_files",
]


def lock_files(folder: Path) -> list[Path]:
    """The lock files beside ``folder/env.toml``: every entry whose name contains "lock".

    ``envbuild lock`` writes ``env.lock.toml``, ``requirements.lock`` and
    ``conda-<platform>.lock``; any other lock a person commits there counts too.
    Symlinks are listed as well, so that reading one that leads out of the
    folder is refused rather than silently skipped.
    """
    return sorted(
        p
        for p in folder.iterdir()
        if "lock" in p.name and not p.name.startswith(".") and (p.is_symlink() or p.is_file())
    )


def _read(path: Path, folder: Path) -> bytes:
    """A definition file's bytes, read through :mod:`envbuild.files` (inside ``folder``)."""
    try:
        return files.read_bytes(path, inside=folder, limit=files.MAX_LOCK_BYTES)
    except files.UnsafeRead as exc:
        raise DefinitionError([Problem(str(path), "", exc.reason, exc.hint)]) from None


def lock_contents(folder: Path) -> dict[str, bytes]:
    """``{name: bytes}`` of :func:`lock_files`, each a regular file inside ``folder``."""
    return {path.name: _read(path, folder) for path in lock_files(folder)}


def definition_contents(env: Environment) -> dict[str, bytes]:
    """``{path relative to the folder: bytes}`` of the files of ``env``'s own folder.

    ``env.toml``, every lock beside it and its own base Dockerfile wherever it
    lies in the folder (a subfolder, behind a symlink): everything of the
    folder that reaches the build context, hence what a version bump must
    follow. The base Dockerfile enters as the text the definition was loaded
    with, which is what was rendered. Parents are covered by
    :func:`definition_digest`.
    """
    out = {DEFINITION_FILE: _read(env.definition_file, env.path), **lock_contents(env.path)}
    dockerfile, text = env.base.dockerfile, env.base.dockerfile_text
    if dockerfile is not None and text is not None:
        root = env.path.resolve()
        if dockerfile.is_relative_to(root):  # else a parent's, covered by that parent
            out[dockerfile.relative_to(root).as_posix()] = text.encode("utf-8")
    return out  # in the order the digest takes them: env.toml, locks, base Dockerfile


def _own_contents(env: Environment) -> Iterable[tuple[str, bytes]]:
    for folder in (env.path, *env.parents):
        owner = env if folder == env.path else load(folder)
        for rel, data in definition_contents(owner).items():
            yield f"{folder.name}/{rel}", data


def definition_file_digests(env: Environment) -> dict[str, str]:
    """``{"<folder>/<file>": sha256}`` for the definition files of ``env`` and its parents.

    What :func:`definition_digest` covers, file by file: what lets a version
    check name the files that changed.
    """
    return dict(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in _own_contents(env)))


def definition_digest(env: Environment) -> str:
    """sha256 over the definition files of ``env`` and of every parent it extends."""
    digest = hashlib.sha256()
    for key, data in _own_contents(env):
        digest.update(f"{key}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def build_order(
    folders: Iterable[Path], loaded: dict[Path, Environment | DefinitionError] | None = None
) -> list[Path]:
    """``folders`` with every parent before its children (stable: by name otherwise).

    A parent outside ``folders`` is not added: it is built as part of its child.
    Each folder is loaded once; with ``loaded``, the environment (or the
    definition error, for a folder that does not load) is left there by
    folder as given, so a caller need not load it again, and a folder it
    already holds is not loaded again.
    """
    folders = list(folders)
    envs: dict[Path, Environment | DefinitionError] = {} if loaded is None else loaded
    for given in folders:
        if loaded is not None and given in loaded:
            continue
        try:
            envs[given] = load(given.resolve())
        except DefinitionError as exc:
            if loaded is None:
                raise
            envs[given] = exc

    def parents_of(given: Path) -> tuple[Path, ...]:
        env = envs[given]
        return env.parents if isinstance(env, Environment) else ()

    return parents_first(folders, parents_of)


@dataclass(frozen=True)
class Attempt(Generic[T]):
    """What one environment's step in :func:`in_order` gave: a value, or the error."""

    folder: Path  # as given
    value: T | None
    error: EnvbuildError | None
    seconds: float


def in_order(
    folders: Sequence[Path],
    step: Callable[[Environment], T],
    *,
    log: Log = lambda line: None,
    verb: str = "",
    loaded: Mapping[Path, Environment | DefinitionError] | None = None,
) -> list[Attempt[T]]:
    """Run ``step`` on each environment of ``folders``, parents first, past failures.

    The one rule of every catalog-wide command (``build --all``, ``push --all``,
    ``ci``): a failure (an :class:`EnvbuildError`, a definition that does not
    load among them) is recorded and the next environment goes on; the caller
    reports every attempt at the end. ``verb`` prefixes the progress line.
    ``loaded`` holds environments the caller already loaded (by folder as given).
    """
    loaded = dict(loaded or {})
    attempts: list[Attempt[T]] = []
    for folder in build_order(folders, loaded):
        started = time.monotonic()
        log(progress_line(len(attempts) + 1, len(folders), folder, verb))
        try:
            env = loaded[folder]
            if isinstance(env, DefinitionError):
                raise env
            value = step(env)
        except EnvbuildError as exc:
            attempts.append(Attempt(folder, None, exc, time.monotonic() - started))
            log(f"envbuild: {folder.name} failed: {exc.render().splitlines()[0]}")
            continue
        attempts.append(Attempt(folder, value, None, time.monotonic() - started))
    return attempts


def build_all(
    folders: Sequence[Path],
    build_one: Callable[[Environment], BuildResult],
    *,
    log: Log = lambda line: None,
    loaded: Mapping[Path, Environment | DefinitionError] | None = None,
) -> list[CatalogResult]:
    """Build ``folders`` parents first with ``build_one``; go on past failures.

    ``build_one(env)`` returns the :class:`~envbuild.build.result.BuildResult`
    or raises an :class:`EnvbuildError`. A definition that does not load is a
    failed result like any other. A child whose parent failed is still
    attempted: a parent is built again as part of its child, and says why it
    fails there. ``loaded``: as :func:`in_order`'s.
    """
    results: list[CatalogResult] = []
    for attempt in in_order(folders, build_one, log=log, loaded=loaded):
        env, seconds = str(attempt.folder), attempt.seconds
        if attempt.error is not None:
            error = attempt.error
            results.append(
                CatalogResult(
                    env, False, seconds=seconds, error=error.render(), exit_code=error.exit_code
                )
            )
            continue
        done = attempt.value
        assert done is not None
        results.append(
            CatalogResult(
                env,
                True,
                done.cached,
                done.image,
                done.hash,
                seconds,
                tier=done.answered_by,
                digest=done.digest or None,
            )
        )
    return results
