"""The container runner with a fake engine: every path removes the container."""

from __future__ import annotations

import inspect
import threading
from typing import Any

import pytest

from envbuild.catalog.packages import capture
from envbuild.catalog.test import run_check
from envbuild.definition import model
from envbuild.engine import protocols
from envbuild.engine.docker import DockerEngine
from envbuild.engine.protocols import (
    STDERR,
    STDOUT,
    ContainerSpec,
    ImageInfo,
    label_matches,
)
from envbuild.engine.runner import RUNNER_LABEL, run_to_completion
from envbuild.errors import EngineError
from envbuild.lock.makers import python_of_base
from tests.fakes import FakeEngine
from tests.run_fakes import FakeRunEngine, out

SPEC = ContainerSpec(image="example:1", argv=("true",), labels={"io.envbuild.test": "1"})


def test_success_collects_output_and_removes_by_id() -> None:
    engine = FakeRunEngine(frames=[out("a\n"), (STDERR, b"warn\n"), out("b\n")], exit_code=3)
    done = run_to_completion(engine, SPEC)
    assert done.exit_code == 3 and not done.timed_out
    assert done.stdout == b"a\nb\n"
    assert done.output == b"a\nwarn\nb\n"
    assert done.tail(2) == ("warn", "b")
    assert engine.ops == ["create", "attach", "start", "wait", "remove"]
    assert not engine.live


def test_the_container_carries_a_label_of_its_own() -> None:
    engine = FakeRunEngine()
    run_to_completion(engine, SPEC)
    run_to_completion(engine, SPEC)
    first, second = engine.specs.values()
    assert first.labels["io.envbuild.test"] == "1"  # the caller's labels stay
    assert first.labels[RUNNER_LABEL] != second.labels[RUNNER_LABEL]


@pytest.mark.parametrize("failing", ["attach", "start", "wait", "put_archive"])
def test_an_engine_failure_removes_the_container_and_sweeps(failing: str) -> None:
    engine = FakeRunEngine(frames=[out("x\n")], fail=failing)
    with pytest.raises(EngineError, match=failing):
        run_to_completion(engine, SPEC, copy_in=("/", [b"tar"]))
    assert not engine.live
    assert "remove_labelled" in engine.ops


def test_a_failed_create_still_sweeps_by_label() -> None:
    engine = FakeRunEngine(fail="create")
    with pytest.raises(EngineError):
        run_to_completion(engine, SPEC)
    assert engine.ops == ["create", "remove_labelled"]


def test_keyboard_interrupt_while_streaming_removes_the_container() -> None:
    def interrupt(index: int) -> None:
        raise KeyboardInterrupt

    engine = FakeRunEngine(frames=[out("x\n"), out("y\n")], after_frame=interrupt)
    seen: list[bytes] = []
    with pytest.raises(KeyboardInterrupt):
        run_to_completion(engine, SPEC, on_output=lambda kind, data: seen.append(data))
    assert seen == [b"x\n"]
    assert not engine.live and engine.streams[0].closed


def test_keyboard_interrupt_during_removal_waits_for_it_then_is_raised() -> None:
    engine = FakeRunEngine()
    removing = threading.Event()
    remove = engine.remove_container

    def slow_remove(container_id: str) -> None:
        removing.set()
        remove(container_id)

    engine.remove_container = slow_remove  # type: ignore[method-assign]

    def interrupt_once(container_id: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_to_completion(engine, SPEC, on_started=interrupt_once)
    assert removing.is_set() and not engine.live


def test_timeout_kills_and_says_so() -> None:
    engine = FakeRunEngine(block=True)
    done = run_to_completion(engine, SPEC, timeout=0.05)
    assert done.timed_out and done.exit_code == 137
    assert engine.killed and not engine.live


def test_a_missing_command_is_127_like_a_shell() -> None:
    engine = FakeRunEngine(answer=lambda spec: None)
    done = run_to_completion(engine, SPEC)
    assert done.exit_code == 127 and done.missing and "not found" in done.missing
    assert not engine.live
    with pytest.raises(EngineError, match="not found"):
        run_to_completion(engine, SPEC, missing_exit=None)
    assert not engine.live


def test_copy_in_comes_before_start_and_hooks_see_the_id() -> None:
    engine = FakeRunEngine()
    seen: list[tuple[str, str]] = []
    run_to_completion(
        engine,
        SPEC,
        copy_in=("/data", [b"ab", b"cd"]),
        on_created=lambda cid: seen.append(("created", cid)),
        on_started=lambda cid: seen.append(("started", cid)),
        on_finishing=lambda: seen.append(("finishing", "")),
    )
    assert engine.archives == [("/data", b"abcd")]
    assert engine.ops.index("put_archive") < engine.ops.index("start")
    (cid,) = engine.specs
    assert seen == [("created", cid), ("started", cid), ("finishing", "")]


def test_output_is_kept_up_to_the_limit() -> None:
    engine = FakeRunEngine(frames=[out("abcdef"), out("gh")])
    done = run_to_completion(engine, SPEC, output_limit=4)
    assert done.stdout == b"abcd" and done.truncated


# --- the callers: one lifecycle, the runner's ----------------------------------------


def test_capture_answers_127_for_a_missing_tool() -> None:
    engine = FakeRunEngine(answer=lambda spec: None if spec.argv[0] == "conda" else [out("ok")])
    assert capture(engine, "example:1", ("dpkg-query",)) == (0, "ok")
    assert capture(engine, "example:1", ("conda", "list")) == (127, "")
    assert not engine.live


def test_capture_timeout_is_an_error() -> None:
    engine = FakeRunEngine(block=True)
    with pytest.raises(EngineError, match="did not finish"):
        capture(engine, "example:1", ("sleep", "9"), timeout=0.05)
    assert not engine.live


@pytest.mark.parametrize(
    ("frames", "code", "expect", "passed", "reason"),
    [
        ([out("1.6.0\n")], 0, "1.6.0", True, ""),
        ([out("v1.6.0\n")], 0, r"v1\.6\.\d+", True, ""),
        ([out("1.5\n")], 0, "1.6.0", False, "no output line equals or matches '1.6.0'"),
        ([out("boom\n")], 3, None, False, "exited with 3"),
    ],
)
def test_run_check_outcomes(
    frames: list[tuple[int, bytes]], code: int, expect: str | None, passed: bool, reason: str
) -> None:
    engine = FakeRunEngine(frames=frames, exit_code=code)
    spec = model.TestSpec(run=("python", "-V"), expect=expect)
    result = run_check(engine, "example:1", spec, 0)
    assert (result.passed, result.reason, result.exit_code) == (passed, reason, code)
    assert result.name == "test 1" and not engine.live


def test_run_check_timeout() -> None:
    engine = FakeRunEngine(block=True)
    spec = model.TestSpec(run=("sleep", "9"), timeout=0.05)  # type: ignore[arg-type]
    result = run_check(engine, "example:1", spec, 1)
    assert not result.passed and result.reason.startswith("timed out")
    assert engine.killed and not engine.live


def test_python_of_base_reads_os_release_offline() -> None:
    release = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
    engine = FakeRunEngine(frames=[out(release)])
    assert python_of_base("debian:bookworm-slim", engine) == "3.11"
    (spec,) = engine.specs.values()
    assert spec.entrypoint == ("cat",) and spec.argv == ("/etc/os-release",)
    assert spec.network == "none" and not engine.live
    assert python_of_base("debian:bookworm-slim", FakeRunEngine(exit_code=1)) is None


# --- the fakes are held to the protocols --------------------------------------------


def _members(protocol: type) -> dict[str, Any]:
    return {
        name: value
        for klass in protocol.__mro__
        if klass.__module__ == protocols.__name__
        for name, value in vars(klass).items()
        if callable(value) and not name.startswith("_")
    }


@pytest.mark.parametrize(
    ("fake", "protocol"),
    [
        (FakeEngine, protocols.Engine),
        (FakeRunEngine, protocols.RunEngine),
        (DockerEngine, protocols.RunEngine),
    ],
)
def test_every_protocol_method_is_implemented_with_its_signature(
    fake: type, protocol: type
) -> None:
    members = _members(protocol)
    assert members, protocol
    for name, method in members.items():
        implemented = inspect.getattr_static(fake, name)
        assert inspect.getattr_static(protocol, name) is not implemented, f"{fake.__name__}.{name}"
        expected = list(inspect.signature(method).parameters)
        assert list(inspect.signature(implemented).parameters) == expected, name


@pytest.mark.parametrize(
    ("label", "matches"),
    [
        ("io.envbuild.test", True),
        ("io.envbuild.test=1", True),
        ("io.envbuild.test=2", False),
        ("io.envbuild.other", False),
        ("io.envbuild.test=", False),
    ],
)
def test_fakes_filter_labels_as_the_engine_does(label: str, matches: bool) -> None:
    labels = {"io.envbuild.test": "1"}
    assert label_matches(labels, label) is matches
    engine = FakeRunEngine()
    engine.create_container(ContainerSpec(image="example:1", argv=("true",), labels=labels))
    assert bool(engine.list_labelled(label).containers) is matches
    engine.images["sha256:" + "1" * 64] = ImageInfo(id="sha256:" + "1" * 64, labels=labels)
    assert bool(engine.list_images(label)) is matches


def test_stdout_constant_is_the_engine_frame_kind() -> None:
    assert (STDOUT, STDERR) == (1, 2)
