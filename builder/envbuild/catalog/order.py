"""The curated catalog: discovering environments, ordering them, building them all.

A catalog is a folder of environment folders (``curated/<name>/env.toml``).
Environments are built parents first (the ``extends`` graph), cache hits are
skipped, and a failure does not stop the others: every result is reported at
the end, as a registry's CI needs.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from envbuild.definition.model import DEFINITION_FILE, Environment, load
from envbuild.errors import DefinitionError, EnvbuildError, Problem

Log = Callable[[str], None]


def discover(root: Path) -> list[Path]:
    """Every environment folder directly under ``root``, sorted by name."""
    if (root / DEFINITION_FILE).is_file():
        return [root.absolute()]
    if not root.is_dir():
        raise DefinitionError([Problem(str(root), "", "is not a folder of environments")])
    return sorted(p.absolute() for p in root.iterdir() if (p / DEFINITION_FILE).is_file())


def lock_files(folder: Path) -> list[Path]:
    """The lock files beside ``folder/env.toml``: every file whose name contains "lock".

    ``envbuild lock`` writes ``env.lock.toml``, ``requirements.lock`` and
    ``conda-<platform>.lock``; any other lock a person commits there counts too.
    """
    return sorted(p for p in folder.iterdir() if p.is_file() and "lock" in p.name)


def definition_files(env: Environment) -> list[Path]:
    """The files a person or ``envbuild lock`` writes for ``env``'s own folder.

    ``env.toml``, every generated lock beside it and a base Dockerfile: what a
    version bump must follow. Parents are covered by :func:`definition_digest`.
    """
    files = [env.definition_file, *lock_files(env.path)]
    if env.base.dockerfile is not None and env.base.dockerfile.parent == env.path:
        files.append(env.base.dockerfile)
    return files


def definition_file_digests(env: Environment) -> dict[str, str]:
    """``{"<folder>/<file>": sha256}`` for the definition files of ``env`` and its parents.

    What :func:`definition_digest` covers, file by file: what lets a version
    check name the files that changed.
    """
    out: dict[str, str] = {}
    for folder in (env.path, *env.parents):
        owner = env if folder == env.path else load(folder)
        for path in definition_files(owner):
            out[f"{folder.name}/{path.name}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return dict(sorted(out.items()))


def definition_digest(env: Environment) -> str:
    """sha256 over the definition files of ``env`` and of every parent it extends."""
    digest = hashlib.sha256()
    for folder in (env.path, *env.parents):
        owner = env if folder == env.path else load(folder)
        for path in definition_files(owner):
            digest.update(f"{folder.name}/{path.name}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def build_order(
    folders: Iterable[Path], loaded: dict[Path, Environment | DefinitionError] | None = None
) -> list[Path]:
    """``folders`` with every parent before its children (stable: by name otherwise).

    A parent outside ``folders`` is not added: it is built as part of its child.
    Each folder is loaded once; with ``loaded``, the environment (or the
    definition error, for a folder that does not load) is left there by
    folder as given, so a caller need not load it again.
    """
    wanted = {p.resolve(): p for p in folders}
    parents: dict[Path, list[Path]] = {}
    for key, given in wanted.items():
        try:
            env = load(key)
        except DefinitionError as exc:
            if loaded is None:
                raise
            loaded[given] = exc
            parents[key] = []
            continue
        if loaded is not None:
            loaded[given] = env
        parents[key] = [p.resolve() for p in env.parents if p.resolve() in wanted]
    order: list[Path] = []
    done: set[Path] = set()

    def visit(node: Path) -> None:
        if node in done:
            return
        done.add(node)
        for parent in parents[node]:
            visit(parent)
        order.append(wanted[node])

    for key in sorted(wanted, key=lambda p: p.name):
        visit(key)
    return order


@dataclass(frozen=True)
class CatalogResult:
    """One environment's outcome in a catalog build."""

    env: str  # the folder as given
    ok: bool
    cached: bool = False
    image: str | None = None
    hash: str | None = None
    seconds: float = 0.0
    error: str | None = None
    exit_code: int = 0

    def to_json(self) -> dict[str, object]:
        """A JSON-ready mapping of this result."""
        return {
            "env": self.env,
            "ok": self.ok,
            "cached": self.cached,
            "image": self.image,
            "hash": self.hash,
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }


def build_all(
    folders: Sequence[Path],
    build_one: Callable[[Environment], tuple[str, str, bool]],
    *,
    log: Log = lambda line: None,
) -> list[CatalogResult]:
    """Build ``folders`` parents first with ``build_one``; go on past failures.

    ``build_one(env)`` returns ``(image, hash, cached)`` or raises an
    :class:`EnvbuildError`. A definition that does not load is a failed result
    like any other. A child whose parent failed is still attempted: a parent is
    built again as part of its child, and says why it fails there.
    """
    loaded: dict[Path, Environment | DefinitionError] = {}
    results: list[CatalogResult] = []
    for folder in build_order(folders, loaded):
        started = time.monotonic()
        log(f"envbuild: [{len(results) + 1}/{len(folders)}] {folder.name}")
        try:
            env = loaded[folder]
            if isinstance(env, DefinitionError):
                raise env
            image, digest, hit = build_one(env)
        except EnvbuildError as exc:
            results.append(
                CatalogResult(
                    str(folder),
                    False,
                    seconds=time.monotonic() - started,
                    error=exc.render(),
                    exit_code=exc.exit_code,
                )
            )
            log(f"envbuild: {folder.name} failed: {exc.render().splitlines()[0]}")
            continue
        results.append(
            CatalogResult(str(folder), True, hit, image, digest, time.monotonic() - started)
        )
    return results
