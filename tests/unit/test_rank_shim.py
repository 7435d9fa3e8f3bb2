"""The rank shim (envbuild/run/rank.py) run as torch's launcher runs it: a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from envbuild.run.planning import RANK_SHIM_SOURCE

SHIM = str(RANK_SHIM_SOURCE)  # the file every PyTorch node mounts

SCRIPT = """\
import subprocess, sys
print("out line")
print("err line", file=sys.stderr)
subprocess.run([sys.executable, "-c", "print('child')"], check=True)
sys.stdout.write("partial")
what = sys.argv[1]
if what == "raise":
    raise ValueError("boom")
if what == "message":
    sys.exit("bad input")
sys.exit(int(what))
"""


def _shim(tmp_path: Path, what: str) -> subprocess.CompletedProcess[bytes]:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "NODE_RANK": "1", "RANK": "3"}
    return subprocess.run(
        [sys.executable, "-u", SHIM, str(script), what],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_every_line_is_tagged_with_node_and_rank_and_the_exit_is_reported(
    tmp_path: Path,
) -> None:
    done = _shim(tmp_path, "3")
    assert done.returncode == 3
    # a child's line too; the unterminated last line goes out, ended
    assert done.stdout == b"[1/3] out line\n[1/3] child\n[1/3] partial\n"
    # the report comes last and untagged: the executor reads it
    assert done.stderr == b"[1/3] err line\nenvbuild: rank 3 exited 3\n"


@pytest.mark.parametrize(
    ("what", "said"),
    [("raise", b"[1/3] ValueError: boom\n"), ("message", b"[1/3] bad input\n")],
)
def test_what_python_prints_at_exit_is_tagged_too(tmp_path: Path, what: str, said: bytes) -> None:
    done = _shim(tmp_path, what)
    assert done.returncode == 1
    assert done.stderr.endswith(said + b"envbuild: rank 3 exited 1\n")
    lines = done.stderr.splitlines()[:-1]
    assert all(line.startswith(b"[1/3] ") for line in lines), done.stderr
