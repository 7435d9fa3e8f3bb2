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

It runs in the image's Python (3.6 and later), so it imports nothing of
envbuild and uses no newer syntax.
"""

import contextlib
import os
import runpy
import sys

LOCAL_RANK = "--local_rank="
MARKER = "envbuild: rank {rank} exited {code}\n"


def _code(value: object) -> int:
    """The process exit status ``SystemExit(value)`` gives."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value & 0xFF
    return 1


def _report(code: int) -> None:
    line = MARKER.format(rank=os.environ.get("RANK", "?"), code=code).encode()
    for stream in (sys.stdout, sys.stderr):  # the script's last lines come first
        with contextlib.suppress(Exception):  # a closed stream: the raw write still goes
            stream.flush()
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
    code = 1
    try:
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = _code(exc.code)
        raise
    except KeyboardInterrupt:
        code = 130
        raise
    finally:
        _report(code)


if __name__ == "__main__":
    main(sys.argv[1:])
