"""The console script's fast paths end the process without the interpreter's teardown,
and only when nothing is left for the teardown to do."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence

import pytest

# An object whose finaliser prints: it runs only if the interpreter tears down.
PROLOGUE = """
import sys
from envbuild.cli.launcher import exit_now

class Noisy:
    def __del__(self):
        print("teardown", flush=True)

noisy = Noisy()
"""


def _child(body: str, stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    code = PROLOGUE + textwrap.dedent(body)
    # Unbuffered output (as these tests are often run) would fail at the write, not the flush.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )


def test_a_finished_fast_path_ends_at_once_with_its_output_and_code() -> None:
    done = _child(
        """
        sys.stdout.write("x" * 100_000)  # buffered: must be flushed before the end
        print("to stderr", file=sys.stderr)
        exit_now(3)
        print("not reached")
        """
    )
    assert done.returncode == 3
    assert done.stdout == "x" * 100_000  # no "teardown": the interpreter did not tear down
    assert done.stderr == "to stderr\n"


def test_exit_handlers_run_before_it_ends() -> None:
    done = _child(
        """
        import atexit, weakref
        atexit.register(print, "exit handler")
        weakref.finalize(noisy, print, "finalizer")
        exit_now(4)
        """
    )
    assert done.returncode == 4
    assert done.stdout.splitlines() == ["finalizer", "exit handler"]  # as the usual exit: LIFO


@pytest.mark.parametrize(
    "setup",
    [
        "import threading, time; threading.Thread(target=time.sleep, args=(0.2,)).start()",
        "CODE = 256",
    ],
    ids=["thread", "code"],
)
def test_the_usual_exit_is_kept_when_it_would_do_more(setup: str) -> None:
    done = _child(
        f"""
        CODE = 0
        {setup}
        exit_now(CODE)
        print("returned", flush=True)
        """
    )
    assert done.returncode == 0
    assert done.stdout == "returned\nteardown\n"


def test_a_daemon_thread_does_not_keep_the_usual_exit() -> None:
    done = _child(
        """
        import threading, time
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
        exit_now(0)
        print("returned")
        """
    )
    assert (done.returncode, done.stdout) == (0, "")


def test_output_that_cannot_be_flushed_exits_as_python_does() -> None:
    """A closed pipe: Python's own exit (its message, status 120), not a silent 0."""
    body = """
        sys.stdout.write("x" * 10)
        {call}
        """
    statuses = []
    for call in ("exit_now(0)", "pass"):
        read, write = os.pipe()
        os.close(read)  # the reader is gone: flushing stdout fails with EPIPE
        try:
            done = _child(body.format(call=call), stdout=write)
        finally:
            os.close(write)
        statuses.append((done.returncode, "BrokenPipeError" in done.stderr))
    assert statuses[0] == statuses[1]
    assert statuses[0][1]


@pytest.mark.parametrize("command", ["build", "ci", "run"])
def test_an_answer_stdout_no_longer_takes_is_reported_as_the_full_path_reports_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """``envbuild ci CATALOG | head -0``: the fast path's write fails with EPIPE; the
    error is reported in one line with the full path's exit code, not a traceback."""
    from envbuild.cli import exits, launcher, run_fast

    def answers(which: str) -> Callable[[Sequence[str]], int | None]:
        def fast_path(argv: Sequence[str]) -> int | None:
            if argv[0] == which:  # it answered, and writing the answer failed
                raise BrokenPipeError(32, "Broken pipe")
            return None

        return fast_path

    monkeypatch.setattr(launcher, "cached_build", answers("build"))
    monkeypatch.setattr(launcher, "cached_catalog", answers("none"))
    monkeypatch.setattr(launcher, "ci_recorded", answers("ci"))
    monkeypatch.setattr(run_fast, "fast_run", answers("run"))
    monkeypatch.setattr(launcher, "exit_now", lambda code: None)  # not in this process
    monkeypatch.setattr(sys, "argv", ["envbuild", command, "x"])
    with pytest.raises(SystemExit) as exited:
        launcher.entry()
    err = capsys.readouterr().err
    run = command == "run"
    assert exited.value.code == exits.report(BrokenPipeError(32, "Broken pipe"), run=run)
    assert "Traceback" not in err and "Broken pipe" in err
