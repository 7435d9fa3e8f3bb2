"""The reaper: what a dead envbuild left is removed, a live one's never (fake engine)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from envbuild import process
from envbuild.engine.docker import ContainerSpec
from envbuild.run.history import History
from envbuild.run.reaper import reap
from tests.run_fakes import FakeRunEngine
from tests.unit.test_run_history import record


def _dead_owner() -> str:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    start = process.start_time(proc.pid) or ""
    proc.wait()
    return dataclasses.replace(process.current(), pid=proc.pid, start=start).label()


def test_reap_removes_a_dead_owners_containers_and_marks_their_runs_lost(tmp_path: Path) -> None:
    engine = FakeRunEngine()
    dead = _dead_owner()
    alive = process.current().label()
    other_host = dataclasses.replace(process.current(), host="elsewhere", pid=1).label()
    for run_id, owner in (("r-dead", dead), ("r-alive", alive), ("r-other", other_host)):
        engine.create_container(
            ContainerSpec(
                image="i",
                argv=("x",),
                labels={"io.envbuild.run": run_id, process.OWNER_LABEL: owner},
            )
        )
    history = History(tmp_path / "runs.db")
    history.start(record("r-dead", owner=dead))
    history.start(record("r-alive", owner=alive))
    messages: list[str] = []
    assert reap(engine, tmp_path, messages.append) == ["r-dead"]
    left = {engine.specs[cid].labels["io.envbuild.run"] for cid in engine.live}
    assert left == {"r-alive", "r-other"}
    assert {r.id: r.status for r in history.list()} == {"r-dead": "lost", "r-alive": "running"}
    assert any("died" in m for m in messages)
    assert reap(engine, tmp_path) == []  # nothing more to do


def test_reap_without_an_engine_or_a_history_is_quiet(tmp_path: Path) -> None:
    assert reap(None, tmp_path / "nowhere") == []


def test_run_to_completion_labels_its_owner_and_unwinds_on_sigterm() -> None:
    import os
    import signal

    import pytest

    from envbuild.engine.runner import run_to_completion
    from envbuild.errors import Interrupted
    from tests.run_fakes import out

    engine = FakeRunEngine(frames=[out("checking\n")], block=True).with_image()

    def terminated(container_id: str) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # `kill PID` of `envbuild test` mid-check

    with pytest.raises(Interrupted):
        run_to_completion(engine, ContainerSpec(image="i", argv=("x",)), on_started=terminated)
    (spec,) = engine.specs.values()
    assert spec.labels[process.OWNER_LABEL] == process.current().label()
    assert not engine.live  # the check container was removed on the way out
