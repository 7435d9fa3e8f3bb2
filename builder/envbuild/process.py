"""This envbuild process: who owns what it leaves behind, and how a signal ends it.

Everything envbuild creates outside itself (a container, a network, a
temporary folder) names its owner: the host, the boot, the PID namespace, the
PID and that process's start time. A later envbuild can then tell, without
guessing, that the owner is dead (the PID is gone, or reused by a process that
started later, or the machine rebooted) and remove what it left; and it never
touches what a live envbuild, another machine or another PID namespace owns.

SIGTERM and SIGHUP end Python at once, without ``finally`` blocks: a build's
docker child would be orphaned and its context folder leaked. Inside
:func:`interruptible` they raise :class:`~envbuild.errors.Interrupted`
instead, so that cleanup runs, as Ctrl-C's ``KeyboardInterrupt`` does.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from envbuild import identity
from envbuild.errors import Interrupted

#: The label on every container and network envbuild creates: its owner (see :class:`Owner`).
OWNER_LABEL = identity.OWNER_LABEL

_TAG = re.compile(r"([0-9a-f]{8})\.(\d+)\.(\d+)\.(\d+)-")


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:  # noqa: PTH123
            return handle.read().strip()
    except OSError:
        return ""


def _boot_id() -> str:
    return _read("/proc/sys/kernel/random/boot_id")


def _pid_namespace() -> str:
    try:
        return "".join(c for c in str(Path("/proc/self/ns/pid").readlink()) if c.isdigit())
    except OSError:
        return ""


def start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), or ``None`` if there is none.

    A PID is reused; a PID with the same start time in the same boot is the same process.
    """
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat.rpartition(")")[2].split()  # the name in (...) may hold spaces
    return fields[19] if len(fields) > 19 else None


@dataclass(frozen=True)
class Owner:
    """The process that created something: host, boot, PID namespace, PID, start time."""

    host: str
    boot: str
    pidns: str
    pid: int
    start: str

    def label(self) -> str:
        """The value of :data:`OWNER_LABEL`: ``host/boot/pidns/pid/start``."""
        return f"{self.host}/{self.boot}/{self.pidns}/{self.pid}/{self.start}"

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        """The owner a label value names, or ``None`` when it is not one."""
        parts = text.split("/")
        if len(parts) != 5 or not parts[3].isdigit():
            return None
        return cls(parts[0], parts[1], parts[2], int(parts[3]), parts[4])

    def is_dead(self) -> bool:
        """True only when this owner is known to be gone; unknown owners are alive.

        Another host's or another PID namespace's process cannot be looked at,
        so it is never judged dead. On this host, a different boot means the
        owner died with the last one.
        """
        me = current()
        if self.host != me.host:
            return False
        if self.boot and me.boot and self.boot != me.boot:
            return True
        if self.pidns != me.pidns:
            return False
        if me.boot:  # /proc is there: PID and start time together
            return start_time(self.pid) != self.start
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False


@functools.lru_cache(maxsize=1)
def _identity() -> tuple[str, str, str]:
    return socket.gethostname(), _boot_id(), _pid_namespace()


def current() -> Owner:
    """This process as an owner."""
    host, boot, pidns = _identity()
    pid = os.getpid()
    return Owner(host, boot, pidns, pid, start_time(pid) or "")


def owner_dead(label: str | None) -> bool:
    """Whether the owner a label value names is known to be dead (see :meth:`Owner.is_dead`)."""
    owner = Owner.parse(label) if label else None
    return owner is not None and owner.is_dead()


# Temporary folders
# --------------------------------------------------------------------------


def temp_prefix(kind: str) -> str:
    """``envbuild-<kind>-<boot8>.<pidns>.<pid>.<start>-``: the owner in a folder's name."""
    me = current()
    boot = (me.boot.replace("-", "") or "0" * 8)[:8]
    return f"envbuild-{kind}-{boot}.{me.pidns or 0}.{me.pid}.{me.start or 0}-"


def _temp_owner_dead(name: str, prefix: str) -> bool:
    match = _TAG.match(name[len(prefix) :])
    if match is None:
        return False  # not named by temp_prefix: not ours to judge
    boot, pidns, pid, start = match.groups()
    me = current()
    my_boot = (me.boot.replace("-", "") or "0" * 8)[:8]
    if boot != my_boot:
        return True  # the machine rebooted since (a /tmp that survives reboots)
    if pidns != (me.pidns or "0"):
        return False
    return (start_time(int(pid)) or "0") != start


def sweep_temp(kinds: Sequence[str], folder: Path | None = None) -> list[Path]:
    """Remove the ``envbuild-<kind>-*`` folders of dead owners (ours only); return them.

    What a ``kill -9`` of a build leaves in the temporary folder is removed by
    the next build, never anything a live process still uses.
    """
    import shutil  # here: a run's start-up does not sweep, and these cost ~1.5 ms to import
    import tempfile

    base = folder or Path(tempfile.gettempdir())
    removed: list[Path] = []
    uid = os.getuid()
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    for entry in entries:
        for kind in kinds:
            prefix = f"envbuild-{kind}-"
            if not entry.name.startswith(prefix):
                continue
            with contextlib.suppress(OSError):
                if (
                    entry.is_dir(follow_symlinks=False)
                    and entry.stat().st_uid == uid
                    and _temp_owner_dead(entry.name, prefix)
                ):
                    shutil.rmtree(entry.path, ignore_errors=True)
                    removed.append(Path(entry.path))
    return removed


# Signals
# --------------------------------------------------------------------------

_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise :class:`Interrupted` (so ``finally`` runs).

    Only on the main thread, and only for signals still at their default
    (a caller's own handler is left alone).
    """
    previous: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in _SIGNALS:
            if signal.getsignal(signum) is signal.SIG_DFL:
                previous[signum] = signal.signal(signum, _raise)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]


# Every signal envbuild's commands handle (Ctrl-C, `kill`, a closed terminal).
HANDLED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def start_thread(thread: threading.Thread) -> None:
    """Start ``thread`` with :data:`HANDLED_SIGNALS` blocked in it.

    Python runs signal handlers in the main thread, but POSIX lets the kernel
    deliver a signal sent to the process to any thread that does not block it.
    One that lands in a helper thread only marks the handler as due: a main
    thread waiting in a system call (a container's output stream, silent for
    hours) is not woken, and Ctrl-C goes unanswered. A thread inherits the
    signal mask of the thread that creates it, so the mask is set around the
    start; a signal that arrives meanwhile waits, and is delivered when the
    mask is restored. A process started from such a thread inherits the mask
    (``exec`` keeps it): it would ignore ``kill`` and Ctrl-C, so such threads
    start no processes.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
