"""One rank of a local PyTorch job: run its script in this process, report its exit code.

envbuild mounts this file read-only into every node of a PyTorch job (at
:data:`envbuild.run.distributed.RANK_SHIM`) and torch's launcher starts it in
place of the script::

    python -u /run/envbuild/rank.py [--local_rank=K] SCRIPT ARGS...

It runs SCRIPT as ``python SCRIPT [--local_rank=K] ARGS...`` would (same
process, ``__main__``, ``sys.argv`` and ``sys.path[0]``), then writes one line
``envbuild: rank R exited C`` to stderr. torch's launchers do not pass a
rank's exit code on (``torch.distributed.launch`` raises on the first process
*in order*, ``torchrun`` exits 1); the executor reads the line instead.

While the script runs, its fds 1 and 2 are pipes: each line it (or a child
that inherits them) writes goes out on the same stream with ``[NODE/RANK] ``
in front (``NODE_RANK`` and ``RANK`` from the launcher's environment), one
``os.write`` per line, as soon as the line ends; a last line without its end
goes out, ended, when the script is done. The executor files each line under
its rank by that prefix. The exit report is written after the last line,
untagged. A traceback or a ``sys.exit("message")`` is printed while the
streams are still tagged.

It runs in the image's Python (3.6 and later), so it imports nothing of
envbuild and uses no newer syntax.
"""

import contextlib
import os
import runpy
import sys
import threading
import traceback

LOCAL_RANK = "--local_rank="
MARKER = "envbuild: rank {rank} exited {code}\n"
#: How long the exit report waits for the rank's last lines (a child process may hold them).
DRAIN_SECONDS = 5.0


def _code(value: object) -> int:
    """The process exit status ``SystemExit(value)`` gives."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value & 0xFF
    return 1


def prefix() -> bytes:
    """``[NODE/RANK] ``: what each of this rank's lines starts with."""
    node, rank = os.environ.get("NODE_RANK", "?"), os.environ.get("RANK", "?")
    return f"[{node}/{rank}] ".encode()


class Tagged:
    """fds 1 and 2 replaced by pipes whose complete lines go out with ``tag`` in front.

    One thread per pipe writes each line with one ``os.write`` to the stream
    it came from (the node's other ranks share it); a last line without its
    end goes out, ended, when the pipe closes.
    """

    def __init__(self, tag: bytes) -> None:
        self.tag = tag
        self.saved = {}  # type: dict[int, int]
        self.threads = []  # type: list[threading.Thread]
        for fd in (1, 2):
            read, write = os.pipe()
            self.saved[fd] = os.dup(fd)
            os.dup2(write, fd)
            os.close(write)
            thread = threading.Thread(target=self._pump, args=(read, self.saved[fd]))
            thread.daemon = True
            thread.start()
            self.threads.append(thread)

    def _pump(self, read: int, out: int) -> None:
        pending = b""
        while True:
            try:
                data = os.read(read, 65536)
            except OSError:
                data = b""
            if not data:
                break
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                self._write(out, self.tag + line + b"\n")
        if pending:
            self._write(out, self.tag + pending + b"\n")
        os.close(read)

    @staticmethod
    def _write(fd: int, data: bytes) -> None:
        with contextlib.suppress(OSError):
            while data:
                data = data[os.write(fd, data) :]

    def close(self) -> None:
        """Give fds 1 and 2 back and wait (a while) for the last lines to go out."""
        _flush()
        for fd, saved in self.saved.items():
            os.dup2(saved, fd)  # the pipe's write end closes: its thread sees the end
        for thread in self.threads:
            thread.join(DRAIN_SECONDS)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed stream: the raw write still goes
            stream.flush()


def _report(code: int) -> None:
    line = MARKER.format(rank=os.environ.get("RANK", "?"), code=code).encode()
    _flush()  # the script's last lines come first
    with contextlib.suppress(OSError):
        os.write(2, line)  # one write: the node's other ranks share this stderr


def main(argv: "list[str]") -> None:  # a string: the image's Python may predate list[str]
    """Run the script ``argv`` names (after an optional ``--local_rank=K``)."""
    local = argv[:1] if argv[:1] and argv[0].startswith(LOCAL_RANK) else []
    rest = argv[len(local) :]
    if not rest:
        sys.exit("usage: rank.py [--local_rank=K] SCRIPT [ARGS...]")
    script = rest[0]
    sys.argv = [script, *local, *rest[1:]]
    sys.path[0] = os.path.dirname(os.path.abspath(script))  # noqa: PTH100, PTH120
    tagged = Tagged(prefix())
    code = 1
    try:
        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = _code(exc.code)
            if exc.code is not None and code == 1 and not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)  # what Python would print, still tagged
                raise SystemExit(1) from None
            raise
        except KeyboardInterrupt:
            code = 130
            raise
        except BaseException:
            traceback.print_exc()  # what Python would print, still tagged
            raise SystemExit(1) from None
    finally:
        tagged.close()
        _report(code)


if __name__ == "__main__":
    main(sys.argv[1:])
