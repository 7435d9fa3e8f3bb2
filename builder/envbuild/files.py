"""Reading the files a definition names: inside its folder, regular, bounded.

Every file an environment's definition or lock names (``env.toml``, an
``extends`` target's ``env.toml``, ``[base] dockerfile``, the lock files) is
read through :func:`read_bytes` / :func:`read_text`, and only through them:

* the path is resolved (symlinks followed) and must lie inside the folder it
  belongs to (``inside``), so ``../../etc/hostname`` or a symlink to
  ``/etc/passwd`` is refused, never read;
* it must be a regular file: a FIFO, a device (``/dev/zero``, ``/dev/stdin``),
  a socket or a folder is refused without blocking (opened non-blocking,
  checked with ``fstat`` on the open descriptor);
* it must not be larger than ``limit`` bytes (checked before and while reading);
* a symlink loop is a refusal like any other, not a traceback.

Each refusal is an :class:`UnsafeRead` naming the path and the reason, which
the caller turns into its own error (a ``DefinitionError`` with the key, a
lock error); a missing file is a :class:`FileMissing`, so a caller can treat
"absent" differently from "refused".
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from envbuild import reads

# Definitions are small text files; lock files with hashes for large stacks
# run to a few hundred kilobytes. Anything larger is not a definition.
MAX_DEFINITION_BYTES = 1 << 20  # env.toml, a base Dockerfile
MAX_LOCK_BYTES = 16 << 20  # requirements.lock, conda-<platform>.lock, env.lock.toml

_CHUNK = 1 << 16


class UnsafeRead(Exception):
    """A file was not read: it is outside its folder, not a regular file, too large, ..."""

    def __init__(self, path: Path, reason: str, hint: str | None = None) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.hint = hint


class FileMissing(UnsafeRead):
    """The file does not exist (or a folder on its way does not)."""


def kind(mode: int) -> str:
    """What a file that is not a regular file is, in words ("a FIFO", ...), from its mode."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def resolve_inside(path: Path, inside: Path | None) -> Path:
    """``path`` with every symlink resolved; refused unless it lies inside ``inside``.

    Raises :class:`FileMissing` when it does not exist and :class:`UnsafeRead`
    for a symlink loop or a path that leaves ``inside``.
    """
    try:
        resolved = Path(path).resolve(strict=True)
    except FileNotFoundError:
        raise FileMissing(Path(path), "does not exist") from None
    except RuntimeError:  # Python < 3.13: "Symlink loop from ..."
        raise UnsafeRead(Path(path), "is a symlink loop", "point the symlink at a file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeRead(
                Path(path), "is a symlink loop", "point the symlink at a file"
            ) from None
        if exc.errno == errno.ENOTDIR:
            raise FileMissing(Path(path), "does not exist") from None
        raise UnsafeRead(Path(path), f"cannot be read: {exc.strerror}") from None
    if inside is not None:
        try:
            root = Path(inside).resolve(strict=False)
        except (RuntimeError, OSError):
            raise UnsafeRead(Path(inside), "is a symlink loop") from None
        if resolved != root and not resolved.is_relative_to(root):
            raise UnsafeRead(
                Path(path),
                f"resolves to {resolved}, outside {root}",
                "a definition may only name files inside its own folder "
                "(no '..', no absolute paths, no symlinks that lead out)",
            )
    return resolved


def read_bytes(path: Path, *, inside: Path | None, limit: int = MAX_DEFINITION_BYTES) -> bytes:
    """The bytes of ``path``, read only if it is a regular file inside ``inside``.

    ``inside`` is the folder the file must lie in once symlinks are resolved
    (``None``: anywhere, for a file the person named on the command line).
    Never blocks on a FIFO or device; never reads more than ``limit`` bytes.
    What was read, or that the file was missing, is noted for the memo
    (:mod:`envbuild.reads`).
    """
    try:
        data = _read_bytes(path, inside=inside, limit=limit)
    except FileMissing:
        reads.note(path, None)
        raise
    reads.note(path, data)
    return data


def _read_bytes(path: Path, *, inside: Path | None, limit: int) -> bytes:
    resolved = resolve_inside(path, inside)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
    try:
        fd = os.open(resolved, flags)
    except FileNotFoundError:
        raise FileMissing(Path(path), "does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # replaced by a symlink since it was resolved
            raise UnsafeRead(Path(path), "changed into a symlink while being read") from None
        if exc.errno in (errno.ENXIO, errno.EISDIR):
            raise UnsafeRead(Path(path), "is not a regular file") from None
        raise UnsafeRead(Path(path), f"cannot be read: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeRead(
                Path(path),
                f"is {kind(info.st_mode)}, not a regular file",
                "name a plain file",
            )
        if info.st_size > limit:
            raise UnsafeRead(Path(path), f"is {info.st_size} bytes, more than {limit} allowed")
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = os.read(fd, _CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise UnsafeRead(Path(path), f"is more than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise UnsafeRead(Path(path), f"cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)


def read_text(path: Path, *, inside: Path | None, limit: int = MAX_DEFINITION_BYTES) -> str:
    """:func:`read_bytes` decoded as UTF-8; bytes that are not UTF-8 are an :class:`UnsafeRead`."""
    data = read_bytes(path, inside=inside, limit=limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsafeRead(
            Path(path),
            f"is not UTF-8 text ({exc.reason} at byte {exc.start})",
            "save it as UTF-8",
        ) from None
