"""The container runner against the real engine: its container is gone on every path."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from envbuild.engine.docker import DockerEngine
from envbuild.engine.protocols import ContainerSpec
from envbuild.engine.runner import run_to_completion
from envbuild.errors import EngineError

pytestmark = pytest.mark.docker

IMAGE = "debian:bookworm-slim"
KEY = "io.envbuild.test-runner"


def _containers(docker_cli: str, label: str) -> list[str]:
    proc = subprocess.run(
        [docker_cli, "ps", "-aq", "--filter", f"label={label}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return proc.stdout.split()


@pytest.fixture
def labelled(docker_cli: str) -> Iterator[Callable[..., ContainerSpec]]:
    """Specs labelled uniquely for this test; asserts after it that none survived."""
    made: list[str] = []

    def spec(*argv: str) -> ContainerSpec:
        value = uuid.uuid4().hex
        made.append(f"{KEY}={value}")
        return ContainerSpec(image=IMAGE, argv=argv, labels={KEY: value}, network="none")

    yield spec
    for label in made:
        left = _containers(docker_cli, label)
        if left:
            subprocess.run([docker_cli, "rm", "-f", *left], capture_output=True, check=False)
        assert not left, f"containers labelled {label} survived"


def test_success(docker_cli: str, labelled: Callable[..., ContainerSpec]) -> None:
    spec = labelled("/bin/sh", "-c", "echo out; echo err >&2; exit 3")
    done = run_to_completion(DockerEngine(docker_cli), spec, timeout=60)
    assert done.exit_code == 3 and not done.timed_out
    assert done.stdout == b"out\n"
    assert sorted(done.output.decode().split()) == ["err", "out"]


def test_entrypoint_and_no_network(docker_cli: str, labelled: Callable[..., ContainerSpec]) -> None:
    base = labelled("/proc/net/dev")
    spec = ContainerSpec(
        image=base.image, argv=base.argv, labels=base.labels, network="none", entrypoint=("cat",)
    )
    done = run_to_completion(DockerEngine(docker_cli), spec, timeout=60)
    interfaces = {line.split(":")[0].strip() for line in done.text().splitlines() if ":" in line}
    assert done.exit_code == 0 and interfaces == {"lo"}


def test_a_missing_command(docker_cli: str, labelled: Callable[..., ContainerSpec]) -> None:
    engine = DockerEngine(docker_cli)
    done = run_to_completion(engine, labelled("no-such-program"), timeout=60)
    assert done.exit_code == 127  # from the init process, which could not exec it
    # Without an init the engine refuses to start it: 127 all the same, with its words.
    bare = replace(labelled("no-such-program"), init=False)
    done = run_to_completion(engine, bare, timeout=60)
    assert done.exit_code == 127 and done.missing
    with pytest.raises(EngineError):
        run_to_completion(engine, replace(bare, labels=labelled("x").labels), missing_exit=None)


def test_a_failing_hook(docker_cli: str, labelled: Callable[..., ContainerSpec]) -> None:
    def fail(container_id: str) -> None:
        raise RuntimeError("the caller gave up")

    with pytest.raises(RuntimeError):
        run_to_completion(DockerEngine(docker_cli), labelled("sleep", "30"), on_started=fail)


def test_timeout(docker_cli: str, labelled: Callable[..., ContainerSpec]) -> None:
    started = time.monotonic()
    done = run_to_completion(DockerEngine(docker_cli), labelled("sleep", "60"), timeout=1)
    assert done.timed_out and done.exit_code != 0
    assert time.monotonic() - started < 30


def test_keyboard_interrupt(docker_cli: str, labelled: Callable[..., ContainerSpec]) -> None:
    """A real SIGINT while the output is read (the main thread blocked on the socket)."""
    spec = labelled("/bin/sh", "-c", "echo ready; sleep 60")

    def interrupt(kind: int, data: bytes) -> None:
        # The container runs and has spoken: Ctrl-C now, as a person would.
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            run_to_completion(DockerEngine(docker_cli), spec, timeout=120, on_output=interrupt)
        assert time.monotonic() - started < 30
    finally:
        signal.signal(signal.SIGINT, previous)


def test_output_arrives_once_under_load(
    docker_cli: str, labelled: Callable[..., ContainerSpec]
) -> None:
    """Containers that speak the moment they start, many at once: every line once.

    Under load the engine's replay of a stored log overlapped its live stream and
    a line written in between came twice; the runner attaches to the live
    streams only (before start, so nothing is missed either).
    """
    engine = DockerEngine(docker_cli)
    specs = [labelled("/bin/sh", "-c", f"echo first {i}; echo second {i} >&2") for i in range(16)]
    outputs: dict[int, bytes] = {}

    def one(i: int) -> None:
        outputs[i] = run_to_completion(engine, specs[i], timeout=120).output

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(specs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    for i, output in outputs.items():
        assert sorted(output.decode().splitlines()) == [f"first {i}", f"second {i}"]
    assert len(outputs) == len(specs)
