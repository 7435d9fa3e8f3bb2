"""The hash memo: a dependency record of each render, so a hit needs no render.

Rendering (loading the ``extends`` chain, reading the locks, Jinja, hashing
the context) costs more than everything else a cache hit does. When a full
render happens, :func:`remember` stores what it led to (the hash, the name,
the version) with every file it actually read (:mod:`envbuild.reads`: each
``env.toml`` of the chain, base Dockerfiles, lock files and their absence,
templates) and the source of envbuild's
rendering modules, each with its sha256; and, for an unlocked base image,
the image ID the engine held for it. :func:`recall` answers the hash again
only while every recorded file still has its digest (compared by stat first,
by content when the stat differs or was taken too close to a change) and the
engine holds the same base: there is no second copy of the rules that decide
what a render reads. A missing, unreadable or changed file is a miss.

Environments whose render depends on more than the files it read (conda:
the package store, a micromamba found on PATH) are not memoised.

Cheap to import (standard library only): the console script's cache-hit path
uses it without loading the definition model, Jinja or click.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple, Protocol

from envbuild import __version__

DEFINITION_FILE = "env.toml"
MEMO_FORMAT = 2  # the record's layout; bumped when it changes
# The source that decides what a render produces, relative to the envbuild
# package: every file of it is recorded like an input file (whichever modules
# a given render happened to import), so an edited or upgraded envbuild never
# reuses a hash.
RENDERING_SOURCES = ("__init__.py", "files.py", "reads.py", "cache", "definition", "lock", "render")
# A file changed this recently may change again within its mtime's
# granularity: its stat is not trusted, its content is compared every time.
RACY_NS = 2_000_000_000
# The keys of a record's run defaults (see Memo.run).
RUN_DEFAULTS = ("workdir", "shm_size", "cuda")
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


class Memo(NamedTuple):
    """What a render of unchanged inputs found."""

    hash: str
    name: str
    version: int
    parents: tuple[str, ...] = ()  # the folders the definition extends, resolved, nearest first
    # What a run of the environment needs of its definition (workdir, shm_size, cuda):
    # a cache hit of `envbuild run` plans without loading the definition.
    run: dict[str, str | None] | None = None


BaseLookup = Callable[[str], "str | None"]  # image reference -> the engine's image ID


def record_path(home: Path, folder: Path, platform: str) -> Path:
    """Where the record of ``folder``'s render for ``platform`` is kept.

    One per folder, platform and envbuild installation (interpreter).
    """
    ident = _identity(folder, platform).encode()
    # A checksum, not a digest (hashlib costs more to import than a hit): the
    # record names what it is for, and one for another folder is a miss.
    return home / "cache" / "memo" / f"{zlib.crc32(ident):08x}{zlib.adler32(ident):08x}.json"


def installation() -> str:
    """This envbuild installation, as a record's identity names it: the interpreter
    and the package folder. A record lists the source files of the installation
    that wrote it; another checkout of the same version (another worktree on the
    same ``PYTHONPATH`` habit, a second virtual environment) must not answer from
    a record whose sources are not its own."""
    return f"{sys.executable}\0{_PACKAGE}"


def _identity(folder: Path, platform: str) -> str:
    return f"{MEMO_FORMAT}\0{folder}\0{platform}\0{installation()}"


def file_digest(path: str) -> str | None:
    """The sha256 of a regular file, read through :mod:`envbuild.files` (bounded,
    never blocking on a FIFO or device a recorded path was replaced by); else ``None``."""
    import hashlib  # only when a stat differs or a record is written: not on a plain hit

    from envbuild import files

    try:
        data = files.read_bytes(Path(path), inside=None, limit=files.MAX_LOCK_BYTES)
    except files.UnsafeRead:
        return None
    return hashlib.sha256(data).hexdigest()


def _module_files(sources: Iterable[str] = RENDERING_SOURCES) -> dict[str, str | None]:
    """Every source file of ``sources`` (default :data:`RENDERING_SOURCES`), with its digest."""
    files: dict[str, str | None] = {}
    for name in sources:
        path = _PACKAGE / name
        for source in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            files[str(source)] = file_digest(str(source))
    return files


def recall(
    home: Path, folder: Path, platform: str, *, base_id: BaseLookup | None = None
) -> Memo | None:
    """The hash a render of ``folder`` found, if nothing it read has changed since.

    ``base_id`` answers the engine's image ID of an unlocked base image (one
    inspect); without it, a record that names such a base is a miss.
    """
    try:
        data = json.loads(read_record(record_path(home, folder, platform)))
        if data["for"] != _identity(folder, platform) or data["envbuild"] != __version__:
            return None
        found = Memo(
            str(data["hash"]),
            str(data["name"]),
            int(data["version"]),
            tuple(str(parent) for parent in data["parents"]),
            _run_defaults(data.get("run")),
        )
        files = data["files"]
        base = data["base"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    restat = unchanged(files)
    if restat is None:
        return None
    if base is not None and (base_id is None or base_id(str(base["image"])) != base["id"]):
        return None
    if restat:  # e.g. after a checkout: the next hit need not read the files again
        _refresh_stats(home, folder, platform, data)
    return found


def _run_defaults(value: object) -> dict[str, str | None] | None:
    if not isinstance(value, dict) or set(value) != set(RUN_DEFAULTS):
        return None
    if not all(v is None or isinstance(v, str) for v in value.values()):
        return None
    return dict(value)


class _Store(Protocol):
    def inspect_image(self, ref: str) -> _Identified | None: ...


class _Identified(Protocol):
    @property
    def id(self) -> str: ...


def recall_with(store: _Store, home: Path, folder: Path, platform: str) -> Memo | None:
    """:func:`recall`, the image ID of an unlocked base asked of ``store`` (one inspect):
    what the console script's fast paths and a run's plan use."""

    def base_id(ref: str) -> str | None:
        info = store.inspect_image(ref)
        return info.id if info is not None else None

    return recall(home, folder, platform, base_id=base_id)


def _stat_key(stat: os.stat_result) -> list[int]:
    # ctime too: no tool sets it back, so rewriting a file with the same size
    # and a restored mtime still reads as a change.
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


_SAME_STAT = "stat"  # unchanged, by its stat
_SAME_CONTENT = "content"  # unchanged, by its content (the stat differed or was not kept)


def unchanged(entries: object) -> bool | None:
    """Whether every recorded file ``[path, sha256 | None, stat | None]`` of ``entries``
    (what :func:`file_entries` made) still is as recorded: ``None`` when one
    changed (or ``entries`` is malformed), else whether one had to be compared
    by content (its stat differs: the record's stats are worth refreshing)."""
    if not isinstance(entries, list):
        return None
    restat = False
    for entry in entries:
        state = _unchanged(entry)
        if state is None:
            return None
        restat = restat or state is not _SAME_STAT
    return restat


def _unchanged(entry: object) -> str | None:
    """Whether one recorded file ``[path, sha256 | None, stat | None]`` still is as recorded:
    :data:`_SAME_STAT`, :data:`_SAME_CONTENT` (the stat differs or was not
    recorded, the content's digest is the same) or ``None`` (changed).

    The stat (size, mtime, ctime, inode) answers when it is recorded and equal;
    otherwise the content's digest does. A symlink is always a change: whether
    it may be followed (one that leads out of its folder may not) is the full
    command's to say.
    """
    if not isinstance(entry, list) or len(entry) != 3:
        return None
    path, digest, stat = entry
    try:
        now = os.lstat(path)  # not a Path object: the hit path
    except FileNotFoundError:
        return _SAME_STAT if digest is None else None
    except (OSError, TypeError, ValueError):
        return None
    if digest is None or now.st_mode & 0o170000 == 0o120000:  # S_IFLNK: no stat import
        return None  # a file that was absent now exists; a symlink
    if stat is not None and stat == _stat_key(now):
        return _SAME_STAT
    return _SAME_CONTENT if file_digest(str(path)) == digest else None


def _trusted(stat: os.stat_result) -> bool:
    """Whether ``stat`` may stand for the content: not taken too close to a change."""
    racy = time.time_ns() - RACY_NS
    return stat.st_mtime_ns < racy and stat.st_ctime_ns < racy


def _refresh_stats(home: Path, folder: Path, platform: str, data: dict[str, object]) -> None:
    """Rewrite the record ``data`` with the current stats of the files whose content
    :func:`recall` just found unchanged (see :func:`refreshed`)."""
    _write(record_path(home, folder, platform), {**data, "files": refreshed(data["files"])})


def refreshed(entries: object) -> list[list[object]]:
    """``entries`` (as :func:`file_entries` made them, just found :func:`unchanged` by
    content) with each file's current stat, so the next check need not read them
    (a checkout rewrites files without changing them). A file that changed since is
    left without a stat: the next check compares its content, and misses."""
    fresh: list[list[object]] = []
    for entry in entries:  # type: ignore[attr-defined]
        path, digest, stat = entry
        if digest is not None:
            try:
                now: os.stat_result | None = os.stat(path)  # noqa: PTH116
            except OSError:
                now = None
            if now is None:
                stat = None
            elif stat != _stat_key(now):
                same = _trusted(now) and file_digest(str(path)) == digest
                stat = _stat_key(now) if same else None
        fresh.append([path, digest, stat])
    return fresh


def remember(
    home: Path,
    folder: Path,
    platform: str,
    files: Iterable[tuple[str, str | None]],
    *,
    digest: str,
    name: str,
    version: int,
    base: tuple[str, str] | None = None,
    parents: Iterable[str] = (),
    run: dict[str, str | None] | None = None,
) -> bool:
    """Record that a render of ``folder``, which read ``files`` (path, sha256 or
    ``None`` if absent) and, for an unlocked base, saw ``base`` (reference, image
    ID), found ``digest``, ``name`` and ``version``; ``parents`` are the folders
    the definition extends (what a catalog's build order needs), ``run`` the
    run defaults of :data:`RUN_DEFAULTS` (what a run's plan needs).

    Each file is read again now: if one no longer has the digest the render
    saw, nothing is recorded (a later render records it). Answers whether a
    record was written.
    """
    target = record_path(home, folder, platform)
    entries = file_entries(files)
    if entries is None:
        return False
    record = {
        "memo": MEMO_FORMAT,
        "for": _identity(folder, platform),
        "envbuild": __version__,
        "hash": digest,
        "name": name,
        "version": version,
        "base": {"image": base[0], "id": base[1]} if base else None,
        "parents": list(parents),
        "run": run,
        "files": entries,
    }
    return _write(target, record)


def file_entries(
    files: Iterable[tuple[str, str | None]], sources: Iterable[str] = RENDERING_SOURCES
) -> list[list[object]] | None:
    """The record of ``files`` (path, sha256 or ``None`` if absent) and of every
    source file of envbuild's ``sources`` (package-relative, as
    :data:`RENDERING_SOURCES`): ``[path, sha256 | None, stat | None]`` each, for
    :func:`unchanged`. Each file is read again now: ``None`` if one no longer has
    the digest given (what was seen has already changed: record nothing)."""
    wanted = dict(files)
    wanted.update(_module_files(sources))
    entries: list[list[object]] = []
    for path, want in sorted(wanted.items()):
        try:
            stat = os.stat(path)  # noqa: PTH116
        except FileNotFoundError:
            if want is not None:
                return None
            entries.append([path, None, None])
            continue
        except OSError:
            return None
        if want is None or file_digest(path) != want:
            return None
        entries.append([path, want, _stat_key(stat) if _trusted(stat) else None])
    return entries


def read_record(target: Path) -> bytes:
    """The bytes of the record file ``target``: ``FileNotFoundError`` when there is none,
    another ``OSError`` when it cannot be read or is not a regular file (a FIFO or a
    device put in its place is never read: it could block forever)."""
    import stat

    fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as handle:  # noqa: PTH123 - an open descriptor
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{target}: not a regular file")
        return handle.read()


def write_record(target: Path, record: dict[str, object]) -> bool:
    """Write ``record`` (JSON) to ``target`` atomically; whether it was written."""
    return _write(target, record)


def _write(target: Path, record: dict[str, object]) -> bool:
    """Write ``record`` to ``target`` atomically; whether it was written."""
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(record), "utf-8")
        tmp.replace(target)
        return True
    with contextlib.suppress(OSError):  # e.g. a folder where the record goes: no litter
        tmp.unlink()
    return False


def forget(home: Path, folder: Path, platform: str) -> None:
    """Drop the record of ``folder`` (a render that cannot be memoised replaces it)."""
    with contextlib.suppress(OSError):
        record_path(home, folder, platform).unlink()
