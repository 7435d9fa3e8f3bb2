"""Owners of what envbuild leaves behind, and signals that unwind (envbuild.process)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from envbuild import process
from envbuild.errors import Interrupted


def test_this_process_is_alive_and_a_gone_or_reused_pid_is_dead() -> None:
    me = process.current()
    assert me.pid == os.getpid() and me.start
    assert not me.is_dead()
    assert process.Owner.parse(me.label()) == me
    assert dataclasses.replace(me, start=str(int(me.start) + 1)).is_dead()  # PID reused
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    child = dataclasses.replace(me, pid=proc.pid, start=process.start_time(proc.pid) or "")
    proc.wait()
    assert child.is_dead()
    assert dataclasses.replace(me, boot="another-boot").is_dead()  # rebooted since


def test_owners_that_cannot_be_seen_are_never_judged_dead() -> None:
    me = process.current()
    assert not dataclasses.replace(me, host="another-host", pid=999_999_999).is_dead()
    assert not dataclasses.replace(me, pidns="1", pid=999_999_999).is_dead()
    assert not process.owner_dead("not an owner label")
    assert not process.owner_dead(None)


def test_sweep_removes_dead_owners_folders_only(tmp_path: Path) -> None:
    mine = tmp_path / (process.temp_prefix("ctx") + "live")
    mine.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    start = process.start_time(proc.pid)
    proc.wait()
    me = process.current()
    boot8 = me.boot.replace("-", "")[:8]
    dead = tmp_path / f"envbuild-ctx-{boot8}.{me.pidns}.{proc.pid}.{start}-abc"
    (dead / "sub").mkdir(parents=True)
    other_ns = tmp_path / f"envbuild-ctx-{boot8}.1.{proc.pid}.{start}-abc"
    other_ns.mkdir()
    unnamed = tmp_path / "envbuild-ctx-abc"
    unnamed.mkdir()
    assert process.sweep_temp(("ctx", "iid"), tmp_path) == [dead]
    assert mine.exists() and other_ns.exists() and unnamed.exists() and not dead.exists()


def test_interruptible_turns_sigterm_into_an_exception_and_restores() -> None:
    with pytest.raises(Interrupted) as info, process.interruptible():
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0)  # let the handler run
        raise AssertionError("not interrupted")
    assert info.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_interruptible_leaves_a_callers_handler_alone() -> None:
    caught: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: caught.append(signum))
    try:
        with process.interruptible():
            os.kill(os.getpid(), signal.SIGTERM)
        assert caught == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_helper_threads_leave_the_handled_signals_to_the_main_thread() -> None:
    """A signal the kernel may hand to any thread that does not block it must reach the
    main thread, where Python runs handlers and where a run waits on the output stream."""
    import threading

    seen: list[set[int]] = []
    thread = threading.Thread(
        target=lambda: seen.append(signal.pthread_sigmask(signal.SIG_BLOCK, []))
    )
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    process.start_thread(thread)
    thread.join()
    assert set(process.HANDLED_SIGNALS) <= seen[0]
    assert {signal.SIGINT, signal.SIGTERM} <= seen[0]
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before  # the caller's mask is back


def test_a_signal_sent_while_a_thread_starts_is_delivered_afterwards() -> None:
    """The mask is held only around the start: a signal that arrives meanwhile waits and
    is handled by the main thread once the start returns."""
    import threading

    got: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: got.append(signum))
    held = (*process.HANDLED_SIGNALS, signal.SIGUSR1)
    try:
        original = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        # Pending on this thread while blocked, as during a start (sent to the thread:
        # one sent to the process may go to another test's thread that does not block it).
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)
        assert got == []
        thread = threading.Thread(target=lambda: None)
        process.start_thread(thread)
        thread.join()
        signal.pthread_sigmask(signal.SIG_SETMASK, original)
        assert got == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)
