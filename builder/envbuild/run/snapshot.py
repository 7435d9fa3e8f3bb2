"""The writable copy of a run's source folder (``RunConfig(snapshot=True)``).

Azure ML runs a script in a snapshot of its source directory: the script may
write beside itself (``./outputs``, ``./logs``, caches), and the user's folder
is never touched. :func:`copy_tree` makes that copy, safely:

* nothing is followed out of the tree: a symlink is copied as a symlink when
  it points inside the tree, and left out (with a warning) when it points
  outside it, is absolute, or dangles out of it;
* FIFOs, sockets and devices are left out with a warning (opening a FIFO
  would block, a device could be endless); every file is opened without
  following links and without blocking, and copied only if it is a regular
  file once open;
* a size sanity limit (:data:`MAX_SNAPSHOT_BYTES`, :data:`MAX_SNAPSHOT_FILES`;
  ``ENVBUILD_SNAPSHOT_MAX_BYTES`` / ``ENVBUILD_SNAPSHOT_MAX_FILES`` move them):
  a source folder larger than that holds data, which belongs in ``--input``,
  and the run is refused before anything starts;
* the top-level ``outputs`` and ``logs`` folders of the source are left out:
  what is kept of a run there is what the run wrote; so is envbuild's own
  state folder (``ENVBUILD_HOME``) when it lies inside the source, which would
  otherwise copy the snapshot into itself;
* as in Azure ML, the patterns of the source's top-level ``.amlignore`` (or,
  when there is none, ``.gitignore``) are left out: gitignore syntax (``*``,
  ``?``, ``[...]``, ``**``, a trailing ``/`` for folders, a ``/`` to anchor,
  ``!`` to take a path back).

Only runs that ask for a snapshot import this module.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from envbuild import files as safe_files
from envbuild.errors import RunConfigError
from envbuild.log import Log
from envbuild.run.files import KEPT

MAX_SNAPSHOT_BYTES = 2 << 30  # 2 GiB: far above code and configuration
MAX_SNAPSHOT_FILES = 200_000
LIMIT_VARIABLES = ("ENVBUILD_SNAPSHOT_MAX_BYTES", "ENVBUILD_SNAPSHOT_MAX_FILES")
IGNORE_FILES = (".amlignore", ".gitignore")  # the first one present is read, as Azure ML does
MAX_IGNORE_BYTES = 1 << 20
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Copied:
    """What :func:`copy_tree` copied, and what it left out (with the reasons)."""

    files: int
    bytes: int
    skipped: tuple[str, ...]
    ignored: int = 0  # paths an ignore file left out
    ignore_file: str | None = None


def limits(environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``(bytes, files)``: the snapshot's limits, from the environment or the defaults."""
    env = os.environ if environ is None else environ
    values = []
    for name, default in zip(
        LIMIT_VARIABLES, (MAX_SNAPSHOT_BYTES, MAX_SNAPSHOT_FILES), strict=True
    ):
        text = env.get(name, "").strip()
        if not text:
            values.append(default)
        elif text.isascii() and text.isdigit() and int(text) > 0:
            values.append(int(text))
        else:
            raise RunConfigError(f"{name}={text!r}: expected a whole number above 0")
    return values[0], values[1]


def _translate(pattern: str) -> str:
    """One gitignore pattern (no ``!``, no trailing ``/``) as a regular expression."""
    out: list[str] = []
    index, size = 0, len(pattern)
    while index < size:
        char = pattern[index]
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            out.append(".*")
            index += 2
        elif char == "*":
            out.append("[^/]*")
            index += 1
        elif char == "?":
            out.append("[^/]")
            index += 1
        elif char == "[" and "]" in pattern[index + 2 :]:
            end = pattern.index("]", index + 2)
            body = pattern[index + 1 : end]
            body = "^" + body[1:] if body.startswith("!") else body
            out.append("[" + body.replace("\\", "\\\\") + "]")
            index = end + 1
        elif char == "\\" and index + 1 < size:
            out.append(re.escape(pattern[index + 1]))
            index += 2
        else:
            out.append(re.escape(char))
            index += 1
    return "".join(out)


class Ignore:
    """The rules of a gitignore-style file: the last matching pattern decides."""

    def __init__(self, lines: Iterable[str]) -> None:
        self.rules: list[tuple[re.Pattern[str], bool, bool]] = []  # (regex, negated, folders only)
        for raw in lines:
            line = raw.rstrip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            line = line[1:] if negated else line
            line = line[1:] if line.startswith("\\") else line  # \# and \! are literal
            folders_only = line.endswith("/")
            line = line.rstrip("/")
            if not line:
                continue
            anchored = "/" in line  # a slash at the start or in the middle anchors it
            regex = _translate(line.lstrip("/"))
            try:
                compiled = re.compile(("" if anchored else "(?:.*/)?") + regex + r"(?:/.*)?\Z")
            except re.error:
                continue  # what git would not match either
            self.rules.append((compiled, negated, folders_only))

    def __bool__(self) -> bool:
        return bool(self.rules)

    def matches(self, relative: str, is_folder: bool) -> bool:
        """Whether the path ``relative`` (POSIX, from the source's root) is left out."""
        ignored = False
        for regex, negated, folders_only in self.rules:
            if folders_only and not is_folder:
                continue
            if regex.match(relative):
                ignored = not negated
        return ignored

    @classmethod
    def of(cls, root: Path) -> tuple[Ignore, str | None]:
        """The rules of ``root``'s ignore file, and its name (``None``: no file)."""
        for name in IGNORE_FILES:
            try:
                text = safe_files.read_text(root / name, inside=root, limit=MAX_IGNORE_BYTES)
            except safe_files.FileMissing:
                continue
            except safe_files.UnsafeRead as exc:
                raise RunConfigError(
                    f"--snapshot: cannot read {root / name}: {exc.reason}",
                    hint=exc.hint or "make it a small text file of patterns, or remove it",
                ) from exc
            return cls(text.splitlines()), name
        return cls(()), None


def _copy_data(source: BinaryIO, target: BinaryIO) -> None:
    """All of ``source`` into ``target``: in the kernel where it can (``copy_file_range``:
    no pass through user space, a reflink on filesystems that have them), else by chunks."""
    copy_range = getattr(os, "copy_file_range", None)
    if copy_range is not None:
        try:
            while copy_range(source.fileno(), target.fileno(), _CHUNK * 64):
                pass
            return
        except OSError as exc:  # across filesystems on old kernels, or not supported there
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            source.seek(0)
            target.seek(0)
            target.truncate()
    shutil.copyfileobj(source, target, _CHUNK)


class _Copier:
    def __init__(
        self,
        root: Path,
        limit_bytes: int,
        limit_files: int,
        *,
        avoid: Sequence[Path] = (),
        ignore: Ignore | None = None,
    ) -> None:
        self.root = root
        self.real_root = root.resolve()
        self.limit_bytes = limit_bytes
        self.limit_files = limit_files
        self.files = 0
        self.bytes = 0
        self.skipped: list[str] = []
        self.ignored = 0
        self.ignore = ignore or Ignore(())
        self.avoid = set()  # (device, inode) of folders never entered
        for path in avoid:
            with contextlib.suppress(OSError):
                info = path.stat()
                self.avoid.add((info.st_dev, info.st_ino))

    def skip(self, relative: str, why: str) -> None:
        self.skipped.append(f"{relative}: {why}")

    def count(self, size: int, relative: str) -> None:
        self.files += 1
        self.bytes += size
        if self.bytes > self.limit_bytes or self.files > self.limit_files:
            over = (
                f"more than {self.limit_bytes} bytes"
                if self.bytes > self.limit_bytes
                else f"more than {self.limit_files} files"
            )
            raise RunConfigError(
                f"--snapshot: the source folder {self.root} holds {over} "
                f"(reached at {relative}); a snapshot copies it for every run",
                hint="move data out of the source folder and pass it with --input NAME=PATH, "
                f"or raise the limit with {LIMIT_VARIABLES[0]} / {LIMIT_VARIABLES[1]}",
            )

    def tree(self, source: Path, destination: Path, relative: str) -> None:
        try:
            entries = sorted(os.scandir(source), key=lambda e: e.name)
        except OSError as exc:
            self.skip(relative or ".", f"cannot be listed ({exc.strerror or exc})")
            return
        for entry in entries:
            name = f"{relative}/{entry.name}" if relative else entry.name
            if not relative and entry.name in KEPT:
                self.skip(name, "left out: a run keeps what it writes there")
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError as exc:
                self.skip(name, f"cannot be read ({exc.strerror or exc})")
                continue
            mode = info.st_mode
            if self.ignore and self.ignore.matches(name, stat.S_ISDIR(mode)):
                self.ignored += 1
                continue
            target = destination / entry.name
            if stat.S_ISLNK(mode):
                self.link(Path(entry.path), target, name)
            elif stat.S_ISDIR(mode):
                if (info.st_dev, info.st_ino) in self.avoid:
                    self.skip(name, "left out: envbuild's own state folder (ENVBUILD_HOME)")
                    continue
                target.mkdir(mode=stat.S_IMODE(mode) | 0o700)
                self.tree(Path(entry.path), target, name)
            elif stat.S_ISREG(mode):
                self.file(Path(entry.path), target, name)
            else:
                self.skip(name, f"left out: {safe_files.kind(mode)}")

    def link(self, source: Path, target: Path, name: str) -> None:
        pointed = str(source.readlink())
        if Path(pointed).is_absolute():
            self.skip(name, f"left out: a symlink to the absolute path {pointed}")
            return
        # Lexically inside, and inside once resolved (no link on the way leads out).
        lexical = os.path.normpath(Path(name).parent / pointed)
        resolved = (source.parent / pointed).resolve()
        if lexical.split("/")[0] == ".." or not resolved.is_relative_to(self.real_root):
            self.skip(name, f"left out: a symlink out of the source folder ({pointed})")
            return
        target.symlink_to(pointed)
        self.count(0, name)

    def file(self, source: Path, target: Path, name: str) -> None:
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(source, flags)
        except OSError as exc:
            why = "it changed while copied" if exc.errno == errno.ELOOP else exc.strerror
            self.skip(name, f"cannot be read ({why or exc})")
            return
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                self.skip(name, f"left out: {safe_files.kind(info.st_mode)}")
                return
            self.count(info.st_size, name)
            with target.open("xb") as out:
                _copy_data(handle, out)
                os.fchmod(out.fileno(), stat.S_IMODE(info.st_mode) | 0o600)
                with contextlib.suppress(OSError):
                    os.utime(out.fileno(), ns=(info.st_atime_ns, info.st_mtime_ns))


def copy_tree(
    source: Path,
    destination: Path,
    *,
    limit_bytes: int | None = None,
    limit_files: int | None = None,
    avoid: Sequence[Path] = (),
    log: Log | None = None,
) -> Copied:
    """Copy the folder ``source`` to ``destination`` (which must not exist) as a snapshot.

    Folders in ``avoid`` (and ``destination`` itself) are never entered.
    Raises :class:`RunConfigError` when the source is over the limits (what
    was copied is removed) or its ignore file cannot be read; everything left
    out is reported through ``log`` (what the ignore file leaves out, as a count).
    """
    default_bytes, default_files = limits()
    ignore, ignore_file = Ignore.of(source)
    # The copy's folders keep their modes (a run as another user reads what it
    # could read before) and are the caller's to write.
    destination.mkdir(mode=stat.S_IMODE(source.stat().st_mode) | 0o700)
    copier = _Copier(
        source,
        default_bytes if limit_bytes is None else limit_bytes,
        default_files if limit_files is None else limit_files,
        avoid=(destination, *avoid),
        ignore=ignore,
    )
    try:
        copier.tree(source, destination, "")
    except BaseException:
        remove_tree(destination)
        raise
    if log is not None:
        for line in copier.skipped[:20]:
            log(f"envbuild: snapshot of {source}: {line}")
        if len(copier.skipped) > 20:
            log(f"envbuild: snapshot of {source}: {len(copier.skipped) - 20} more left out")
        if copier.ignored:
            log(f"envbuild: snapshot of {source}: {copier.ignored} paths left out by {ignore_file}")
    return Copied(copier.files, copier.bytes, tuple(copier.skipped), copier.ignored, ignore_file)


def remove_tree(path: Path, log: Log | None = None) -> bool:
    """Remove ``path`` and all below it, read-only folders included; ``False`` if some stayed.

    Never follows a symlink: a link the script made is removed, not what it names.
    """
    if not os.path.lexists(path):
        return True
    # A folder the script made read-only (or unreadable) is made ours again first.
    with contextlib.suppress(OSError):
        path.chmod(0o700)
    for root, folders, _files in os.walk(path):  # top-down, never into a symlink
        for name in folders:
            full = Path(root) / name
            if not full.is_symlink():  # chmod would follow it
                with contextlib.suppress(OSError):
                    full.chmod(0o700)
    failures: list[str] = []

    def note(function: Callable[..., object], name: str, error: object) -> None:
        exc = error if isinstance(error, BaseException) else error[1]  # type: ignore[index]
        failures.append(f"{name}: {getattr(exc, 'strerror', None) or exc}")

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=note)
    else:
        shutil.rmtree(path, onerror=note)
    if failures and log is not None:
        more = f", and {len(failures) - 1} more" if len(failures) > 1 else ""
        log(f"warning: could not remove all of {path} ({failures[0]}{more})")
    return not failures
