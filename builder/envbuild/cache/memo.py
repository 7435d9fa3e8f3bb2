"""The hash memo: the content hash of a definition whose inputs did not change.

Rendering (Jinja, the lock files, hashing the context) costs more than
everything else a cache hit does, and its result is a pure function of a
known set of files: the definition files of the ``extends`` chain, the lock
files and a base Dockerfile beside them, every template, and the source of
the modules that render and hash. :func:`key` digests exactly those, reading
the chain from the raw TOML (no validation, no model), and :func:`recall`
answers what an earlier render of the same inputs found: the hash, the name
and the version.

A memo is written only after a successful load, validation and render, so a
key that is found names a definition that was valid, with that very hash.
Environments with conda packages are not memoised (their context holds a
prefix installed by py-rattler, whose version is another input): they render
every time. This module imports nothing of the pipeline, so the console
script's cache-hit path can use it without importing it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from envbuild import __version__

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DEFINITION_FILE = "env.toml"
# The modules whose behaviour the rendered context depends on: their source
# is part of the key, so an edited or upgraded envbuild never reuses a hash.
RENDERING_MODULES = (
    "cache/hashing",
    "definition/grammar",
    "definition/model",
    "lock/model",
    "render/context",
    "render/dockerfile",
    "render/quoting",
)
_PACKAGE = Path(__file__).resolve().parent.parent  # the envbuild package


def templates_dir() -> Path | None:
    """Where the templates are: inside the installed package, else the source tree."""
    for candidate in (_PACKAGE / "templates", _PACKAGE.parent.parent / "templates"):
        if (candidate / "Dockerfile.j2").is_file():
            return candidate
    return None


def env_folder(env: str | Path) -> Path:
    """The folder of the environment named by ``env`` (a folder or its env.toml), absolute."""
    path = Path(env).expanduser()
    if path.is_dir() or path.name != DEFINITION_FILE:
        return path.absolute()
    return path.parent.absolute()


def _chain(folder: Path) -> list[tuple[Path, bytes, dict[str, Any]]] | None:
    """The ``extends`` chain, child first, as (folder, env.toml bytes, raw TOML)."""
    chain: list[tuple[Path, bytes, dict[str, Any]]] = []
    seen: set[Path] = set()
    current = folder
    while True:
        if current.resolve() in seen:
            return None
        seen.add(current.resolve())
        try:
            data = (current / DEFINITION_FILE).read_bytes()
            raw = tomllib.loads(data.decode("utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return None
        chain.append((current, data, raw))
        parent = raw.get("extends")
        if parent is None:
            return chain
        if not isinstance(parent, str):
            return None
        current = (current / parent).resolve()


def _first(chain: list[tuple[Path, bytes, dict[str, Any]]], table: str, key: str) -> Any:
    """The child-wins value of ``[table] key`` along the chain, or ``None``."""
    for _, _, raw in chain:
        section = raw.get(table)
        if isinstance(section, dict) and key in section:
            return section[key]
    return None


def _any_list(chain: list[tuple[Path, bytes, dict[str, Any]]], table: str, key: str) -> bool:
    for _, _, raw in chain:
        section = raw.get(table)
        if isinstance(section, dict) and section.get(key):
            return True
    return False


def key(env: str | Path, platform: str) -> str | None:
    """The memo key of ``env``'s rendered context, or ``None`` when it is not memoised."""
    chain = _chain(env_folder(env))
    templates = templates_dir()
    if chain is None or templates is None:
        return None
    source = _first(chain, "python", "source") or "system"
    if source == "conda" or _any_list(chain, "conda", "packages"):
        return None
    digest = hashlib.sha256(f"{__version__}\0{platform}\0".encode())
    for name in RENDERING_MODULES:
        digest.update((_PACKAGE / f"{name}.py").read_bytes())
    for path in sorted(templates.rglob("*")):
        if path.is_file():
            digest.update(b"\0template\0" + path.relative_to(templates).as_posix().encode())
            digest.update(b"\0" + path.read_bytes())
    for _folder, data, _raw in chain:
        digest.update(b"\0env\0" + data)
    own = chain[0][0]
    for path in sorted(own.iterdir()):
        if "lock" in path.name and path.is_file():
            digest.update(b"\0lock\0" + path.name.encode() + b"\0" + path.read_bytes())
    for folder, _, raw in chain:  # the base: the nearest [base] table decides
        base = raw.get("base")
        if isinstance(base, dict):
            dockerfile = base.get("dockerfile")
            if isinstance(dockerfile, str):
                try:
                    digest.update(b"\0base\0" + (folder / dockerfile).read_bytes())
                except OSError:
                    return None  # let validation say what is wrong
            break
    return digest.hexdigest()


def recall(home: Path, memo_key: str) -> dict[str, Any] | None:
    """What was remembered for ``memo_key``: ``{"hash", "name", "version"}``, or ``None``."""
    try:
        data = json.loads((home / "cache" / "hashes" / memo_key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        isinstance(data, dict)
        and isinstance(data.get("hash"), str)
        and len(data["hash"]) == 64
        and isinstance(data.get("name"), str)
        and isinstance(data.get("version"), int)
    ):
        return data
    return None


def remember(home: Path, memo_key: str, *, digest: str, name: str, version: int) -> None:
    """Record the hash, name and version a render of ``memo_key``'s inputs found."""
    target = home / "cache" / "hashes" / memo_key
    with contextlib.suppress(OSError):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"hash": digest, "name": name, "version": version}), "utf-8")
        tmp.replace(target)
