"""Interrupts at random moments leave nothing behind (docs/reliability.md).

Two sweeps against the real engine, each a seeded random series (the seed is
printed, ``ENVBUILD_SWEEP_SEED`` repeats one):

* builds killed (SIGKILL, SIGTERM) at random moments: no hash tag on an
  incomplete image, no build lock left held, no docker child left running, no
  temporary folder left once the next build ran, and the next build succeeds;
* runs interrupted (SIGINT, SIGTERM, SIGKILL of envbuild) at random moments:
  once any envbuild command has run, no container or network of theirs
  remains, and every run has a final state in the history.

And the reaper's own promises: what a ``kill -9`` left is removed and its run
marked ``lost``; a live run is never touched.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from envbuild.build.builder import BuildResult, build
from envbuild.engine.docker import DockerEngine
from envbuild.settings import load_settings

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "envs" / "hello"
OWNER = "io.envbuild.owner"
FINAL = {"exited", "interrupted", "timed-out", "failed", "lost"}
BUILDS_KILLED = 20
RUNS_INTERRUPTED = 50


@pytest.fixture(scope="module")
def seed() -> int:
    value = int(os.environ.get("ENVBUILD_SWEEP_SEED") or random.randrange(1 << 30))
    print(f"sweep seed: ENVBUILD_SWEEP_SEED={value}")
    return value


@pytest.fixture(scope="module")
def hello(docker_cli: str) -> BuildResult:
    settings = load_settings()
    return build(HELLO, settings=settings, engine=DockerEngine(settings.docker))


def _envbuild(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "envbuild", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def _processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line mentions ``text`` (the build's docker child names its context)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found


def _wait_until(check, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return bool(check())


def _lock_is_free(path: Path) -> bool:
    if not path.exists():
        return True
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
    return True


def _labels(docker: str, ref: str) -> dict[str, str] | None:
    proc = subprocess.run(
        [docker, "image", "inspect", "--format", "{{json .Config.Labels}}", ref],
        capture_output=True,
        text=True,
        check=False,
    )
    return json.loads(proc.stdout) if proc.returncode == 0 else None


@pytest.fixture
def sweep_env(tmp_path: Path, docker_cli: str) -> Iterator[dict[str, str]]:
    """Its own prefix, state folder and temporary folder; every image made is removed."""
    prefix = f"envbuild-sweep-{uuid.uuid4().hex[:8]}"
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {
        **os.environ,
        "ENVBUILD_PREFIX": prefix,
        "ENVBUILD_HOME": str(tmp_path / "home"),
        "TMPDIR": str(temp),
        "ENVBUILD_DOCKER": docker_cli,
    }
    yield env
    images = subprocess.run(
        [docker_cli, "images", "--format", "{{.Repository}}:{{.Tag}}", f"{prefix}/*"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if images:
        subprocess.run([docker_cli, "rmi", *images], capture_output=True, check=False)


@pytest.mark.slow
def test_builds_killed_at_random_moments_leave_nothing_behind(
    sweep_env: dict[str, str], tmp_path: Path, docker_cli: str, seed: int
) -> None:
    rng = random.Random(seed)
    temp = Path(sweep_env["TMPDIR"])
    locks = Path(sweep_env["ENVBUILD_HOME"]) / "locks"
    kinds = [signal.SIGKILL, signal.SIGTERM] * (BUILDS_KILLED // 2)
    rng.shuffle(kinds)
    outcomes = []
    for index, sig in enumerate(kinds):
        folder = tmp_path / f"env{index}"
        folder.mkdir()
        text = (HELLO / "env.toml").read_text(encoding="utf-8")
        # Only the last layers differ between the variants: each is a cache miss
        # that BuildKit builds in seconds from the layers before.
        (folder / "env.toml").write_text(
            text.replace('MESSAGE = "Hello"', f'MESSAGE = "sweep {seed} {index}"'), "utf-8"
        )
        hashed = _envbuild(sweep_env, "hash", str(folder))
        assert hashed.returncode == 0, hashed.stderr
        digest = hashed.stdout.strip()
        tag = f"{sweep_env['ENVBUILD_PREFIX']}/hello:{digest[:12]}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "envbuild", "build", "-q", str(folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=sweep_env,
        )
        delay = rng.uniform(0.3, 3.5)
        time.sleep(delay)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        outcomes.append((sig.name, round(delay, 2), proc.returncode))
        where = f"build {index} ({sig.name} after {delay:.2f}s, exit {proc.returncode})"
        assert b"Traceback" not in err, f"{where}: {err.decode(errors='replace')}"
        if sig == signal.SIGTERM:
            assert proc.returncode in (0, 143, -signal.SIGTERM), where
        # the docker child is gone with envbuild (it names the context folder)
        assert _wait_until(lambda: not _processes_mentioning(str(temp)), 15), where
        assert _lock_is_free(locks / f"{digest}.lock"), f"{where}: the build lock is held"
        labels = _labels(docker_cli, tag)
        if labels is not None:  # a tag only on a complete image
            assert labels.get("io.envbuild.hash") == digest, where
        if sig == signal.SIGTERM:  # unwound: nothing left at all
            assert not list(temp.iterdir()), f"{where}: left {list(temp.iterdir())}"
        again = _envbuild(sweep_env, "build", "-q", str(folder))
        assert again.returncode == 0, f"{where}; the next build: {again.stderr[-2000:]}"
        assert (_labels(docker_cli, tag) or {}).get("io.envbuild.hash") == digest, where
        assert not list(temp.iterdir()), f"{where}: the next build left {list(temp.iterdir())}"
    print("builds killed:", outcomes)


def _owned_by(docker: str, pids: set[int]) -> list[str]:
    """Containers and networks whose owner label names one of ``pids``."""
    found = []
    for kind in (["ps", "-a"], ["network", "ls"]):
        proc = subprocess.run(
            [
                docker,
                *kind,
                "--filter",
                f"label={OWNER}",
                "--format",
                '{{.ID}} {{.Label "' + OWNER + '"}}',
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        for line in proc.stdout.splitlines():
            ident, _, owner = line.partition(" ")
            parts = owner.split("/")
            if len(parts) == 5 and parts[3].isdigit() and int(parts[3]) in pids:
                found.append(f"{kind[0]}:{ident}")
    return found


def _history(env: dict[str, str]) -> list[dict[str, object]]:
    listing = _envbuild(env, "runs", "--all", "--json", timeout=120)
    assert listing.returncode == 0, listing.stderr
    return json.loads(listing.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def run_env(tmp_path: Path, hello: BuildResult, docker_cli: str) -> dict[str, str]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "sleep.py").write_text("import time\nprint('sleeping', flush=True)\ntime.sleep(300)\n")
    return {
        **os.environ,
        "ENVBUILD_HOME": str(tmp_path / "home"),
        "ENVBUILD_DOCKER": docker_cli,
        "SWEEP_SRC": str(src),
    }


def _exec_done(proc: subprocess.Popen[bytes]) -> None:
    """Wait until the child runs envbuild: a signal that arrives between fork and exec
    meets pytest's inherited SIGINT handler and is lost with it."""
    path = Path(f"/proc/{proc.pid}/cmdline")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if b"-m\0envbuild" in path.read_bytes():
                return
        except OSError:
            return  # already gone
        time.sleep(0.005)


def _start_run(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "envbuild",
            "run",
            "--source-dir",
            env["SWEEP_SRC"],
            str(HELLO),
            "sleep.py",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


@pytest.mark.slow
def test_runs_interrupted_at_random_moments_leave_nothing_and_end_in_the_history(
    run_env: dict[str, str], docker_cli: str, seed: int
) -> None:
    rng = random.Random(seed + 1)
    kinds = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL] * (RUNS_INTERRUPTED // 3 + 1)
    kinds = kinds[:RUNS_INTERRUPTED]
    rng.shuffle(kinds)
    pids: set[int] = set()
    codes = []
    batch = 5  # a few at once: reapers meet live runs, and the sweep stays short
    for start in range(0, len(kinds), batch):
        procs = []
        for sig in kinds[start : start + batch]:
            proc = _start_run(run_env)
            pids.add(proc.pid)
            procs.append((proc, sig, rng.uniform(0.0, 2.5)))
        for proc, _, _ in procs:
            _exec_done(proc)
        began = time.monotonic()
        for proc, sig, delay in sorted(procs, key=lambda p: p[2]):
            time.sleep(max(0.0, delay - (time.monotonic() - began)))
            proc.send_signal(sig)
        for proc, sig, delay in procs:
            _, err = proc.communicate(timeout=60)
            codes.append((sig.name, round(delay, 2), proc.returncode))
            if sig != signal.SIGKILL:
                assert proc.returncode in (128 + sig, -sig, 1), (sig, delay, err[-2000:])
    rows = _history(run_env)  # any envbuild command: this one reaps
    assert not _owned_by(docker_cli, pids), f"left behind after {codes}"
    assert len(rows) <= RUNS_INTERRUPTED
    unfinished = [(r["id"], r["status"]) for r in rows if r["status"] not in FINAL]
    assert not unfinished, unfinished
    print("runs interrupted:", codes, "history:", sorted(str(r["status"]) for r in rows))


def test_a_killed_run_is_reaped_and_marked_lost_and_a_live_one_is_left_alone(
    run_env: dict[str, str], docker_cli: str
) -> None:
    live = _start_run(run_env)
    killed = _start_run(run_env)
    try:
        for proc in (live, killed):
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"sleeping\n"  # its container runs
        killed.kill()
        killed.wait(30)
        assert _owned_by(docker_cli, {killed.pid}), (
            "the killed run's container should still be there"
        )
        rows = {r["status"]: r for r in _history(run_env)}  # reaps
        assert not _owned_by(docker_cli, {killed.pid})
        assert set(rows) == {"running", "lost"}  # the live one is still running
        assert _owned_by(docker_cli, {live.pid}), "a live run's container was reaped"
    finally:
        live.send_signal(signal.SIGINT)
        live.communicate(timeout=30)
        killed.kill()
        killed.communicate(timeout=30)
    history = _history(run_env)
    assert sorted(str(r["status"]) for r in history) == ["interrupted", "lost"]
    assert not _owned_by(docker_cli, {live.pid, killed.pid})


def test_sigterm_during_a_build_stops_its_docker_child_and_removes_its_context(
    sweep_env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "env"
    shutil.copytree(HELLO, folder)
    text = (folder / "env.toml").read_text(encoding="utf-8")
    (folder / "env.toml").write_text(
        text.replace('MESSAGE = "Hello"', f'MESSAGE = "{uuid.uuid4().hex}"'), "utf-8"
    )
    temp = Path(sweep_env["TMPDIR"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "envbuild", "build", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=sweep_env,
    )
    assert _wait_until(lambda: bool(_processes_mentioning(str(temp))), 60), "no docker child"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode(errors="replace")
    assert b"Traceback" not in err
    assert _wait_until(lambda: not _processes_mentioning(str(temp)), 15)
    assert not list(temp.iterdir())
