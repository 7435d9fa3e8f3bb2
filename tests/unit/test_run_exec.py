"""run() against a fake engine: order of calls, logs, exit codes, signals, cleanup, history."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from envbuild import process
from envbuild.engine.protocols import STDERR, STDOUT
from envbuild.engine.runner import RUNNER_LABEL
from envbuild.errors import EngineError, RunError
from envbuild.run.config import Input, Output, RunConfig
from envbuild.run.history import History
from envbuild.run.local import run
from envbuild.settings import Settings, load_settings
from tests.run_fakes import IMAGE_ID, FakeRunEngine, out, tar_members


@pytest.fixture
def settings() -> Settings:
    return load_settings()


@pytest.fixture
def src(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "train.py").write_text("")
    return folder


class Captured:
    def __init__(self) -> None:
        self.chunks: list[tuple[str, bytes]] = []
        self.messages: list[str] = []

    def output(self, stream: str, data: bytes) -> None:
        self.chunks.append((stream, data))

    def log(self, line: str) -> None:
        self.messages.append(line)


def go(
    engine: FakeRunEngine, settings: Settings, src: Path, **overrides: object
) -> tuple[object, Captured]:
    captured = Captured()
    values: dict[str, object] = {
        "environment": "image:example:1",
        "script": "train.py",
        "source_directory": src,
    }
    values.update(overrides)
    result = run(
        RunConfig(**values),  # type: ignore[arg-type]
        settings=settings,
        engine=engine,
        output=captured.output,
        log=captured.log,
    )
    return result, captured


def test_order_output_log_and_cleanup(settings: Settings, src: Path) -> None:
    engine = FakeRunEngine(
        frames=[out("one\n"), (STDERR, b"warn\n"), (STDOUT, b"bad \xff\xfe bytes\n")],
        exit_code=3,
    ).with_image()
    result, captured = go(engine, settings, src)
    # attach before start (no output lost), remove only after wait (exit code kept)
    assert engine.ops == ["create", "attach", "start", "wait", "remove"]
    assert result.exit_code == 3 and result.status == "exited"  # type: ignore[attr-defined]
    assert captured.chunks == [
        ("stdout", b"one\n"),
        ("stderr", b"warn\n"),
        ("stdout", b"bad \xff\xfe bytes\n"),
    ]
    log_path = result.log_path  # type: ignore[attr-defined]
    assert log_path.read_bytes() == b"one\nwarn\nbad \xff\xfe bytes\n"
    assert log_path.parent == settings.home / "runs"
    assert not engine.live
    spec = next(iter(engine.specs.values()))
    assert spec.image == IMAGE_ID  # pinned by ID, not by tag
    assert spec.labels["io.envbuild.run"] == result.run_id  # type: ignore[attr-defined]
    # the runner's own label, to sweep by; the owner, for a later reaper
    assert set(spec.labels) == {"io.envbuild.run", RUNNER_LABEL, "io.envbuild.owner"}
    assert spec.labels["io.envbuild.owner"] == process.current().label()
    assert spec.init is True
    assert engine.streams[0].closed


@pytest.mark.parametrize("failing", ["create", "attach", "start", "wait"])
def test_engine_failure_leaves_nothing(settings: Settings, src: Path, failing: str) -> None:
    engine = FakeRunEngine(frames=[out("x\n")], fail=failing).with_image()
    with pytest.raises(EngineError):
        go(engine, settings, src)
    assert not engine.live
    assert "remove_labelled" in engine.ops
    (record,) = History.at(settings).list()
    assert record.status == "failed" and record.exit_code == 125


def test_missing_image_is_a_run_error(settings: Settings, src: Path) -> None:
    engine = FakeRunEngine()
    with pytest.raises(RunError, match="no image example:1"):
        go(engine, settings, src)
    assert engine.ops == []


def test_sigint_stops_then_reports_130(settings: Settings, src: Path) -> None:
    engine = FakeRunEngine(frames=[out("sleeping\n")], block=True).with_image()
    engine.after_frame = lambda index: os.kill(os.getpid(), signal.SIGINT)
    before = signal.getsignal(signal.SIGINT)
    result, captured = go(engine, settings, src)
    assert result.exit_code == 130 and result.status == "interrupted"  # type: ignore[attr-defined]
    assert engine.stopped and not engine.killed
    assert engine.ops[-2:] == ["wait", "remove"]  # stopped, waited for, removed by its ID
    assert not engine.live
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
    assert any("stopping the run" in m for m in captured.messages)


def test_second_signal_kills(settings: Settings, src: Path) -> None:
    engine = FakeRunEngine(frames=[out("a\n"), out("b\n")], block=True).with_image()
    engine.stop_container = lambda container_id, timeout: engine.ops.append("stop")  # type: ignore[method-assign]
    engine.after_frame = lambda index: os.kill(os.getpid(), signal.SIGTERM)
    result, _ = go(engine, settings, src)
    assert result.exit_code == 143  # type: ignore[attr-defined]
    assert engine.killed  # the graceful stop was ignored; the second signal killed it
    assert not engine.live


def test_signal_before_start_never_starts(settings: Settings, src: Path) -> None:
    engine = FakeRunEngine().with_image()
    original = engine.create_container

    def create(spec):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the container is being created
        return original(spec)

    engine.create_container = create  # type: ignore[method-assign]
    result, _ = go(engine, settings, src)
    assert result.exit_code == 130  # type: ignore[attr-defined]
    assert "start" not in engine.ops and not engine.live


def test_timeout_stops_the_run(settings: Settings, src: Path) -> None:
    engine = FakeRunEngine(frames=[out("x\n")], block=True).with_image()
    result, _ = go(engine, settings, src, timeout=0.05)
    assert result.exit_code == 124 and result.status == "timed-out"  # type: ignore[attr-defined]
    assert engine.stopped and not engine.live


def test_outputs_are_created_by_the_caller(settings: Settings, src: Path, tmp_path: Path) -> None:
    engine = FakeRunEngine().with_image()
    target = tmp_path / "a" / "b"
    result, _ = go(engine, settings, src, outputs=[Output("model", target)])
    assert target.is_dir() and target.stat().st_uid == os.getuid()
    assert result.outputs == {"model": target.resolve()}  # type: ignore[attr-defined]


def test_download_inputs_are_copied_before_start(
    settings: Settings, src: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_text("A")
    (data / "sub" / "b.txt").write_text("B")
    single = tmp_path / "one.csv"
    single.write_text("1,2\n")
    engine = FakeRunEngine().with_image()
    go(
        engine,
        settings,
        src,
        user="1234:99",
        inputs=[Input("data", data, "download"), Input("table", single, "download")],
    )
    assert engine.ops.index("put_archive") < engine.ops.index("start")
    ((path, archive),) = engine.archives
    assert path == "/"
    members = tar_members(archive)
    assert set(members) == {
        "inputs",
        "inputs/data",
        "inputs/data/a.txt",
        "inputs/data/sub",
        "inputs/data/sub/b.txt",
        "inputs/table",
    }
    assert members["inputs"].uid == 0 and members["inputs"].mode == 0o755
    assert all(members[n].uid == 1234 and members[n].gid == 99 for n in members if n != "inputs")
    spec = next(iter(engine.specs.values()))
    assert all(m.target not in ("/inputs/data", "/inputs/table") for m in spec.mounts)


def test_history_row(settings: Settings, src: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    engine = FakeRunEngine(exit_code=0).with_image()
    result, _ = go(
        engine,
        settings,
        src,
        arguments=["--data", "${{inputs.data}}"],
        environment_variables={"TOKEN": "very-secret-value"},
        inputs=[Input("data", data)],
    )
    record = History.at(settings).get(result.run_id)  # type: ignore[attr-defined]
    assert record.status == "exited" and record.exit_code == 0
    assert record.script == "train.py"
    assert record.arguments == ("--data", "/inputs/data")
    assert "TOKEN" in record.variables
    assert record.image == "example:1" and record.image_id == IMAGE_ID
    assert record.inputs["data"]["mode"] == "mount"
    assert record.duration is not None and record.finished_at
    db = (settings.home / "runs.db").read_bytes()
    wal = settings.home / "runs.db-wal"
    raw = db + (wal.read_bytes() if wal.exists() else b"")
    assert b"very-secret-value" not in raw  # names only, never values


def test_run_from_a_worker_thread_leaves_signals_alone(settings: Settings, src: Path) -> None:
    engine = FakeRunEngine(frames=[out("x\n")]).with_image()
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(go(engine, settings, src)[0]))
    thread.start()
    thread.join(10)
    assert results and results[0].exit_code == 0  # type: ignore[attr-defined]


def _broken_home(settings: Settings, how: str) -> None:
    home = settings.home
    if how == "home-is-a-file":
        home.parent.mkdir(parents=True, exist_ok=True)
        home.write_text("not a folder")
    elif how == "parts-are-wrong":
        home.mkdir(parents=True)
        (home / "runs").write_text("a file where the logs go")
        (home / "runs.db").mkdir()  # a folder where the database goes
    elif how == "database-is-garbage":
        home.mkdir(parents=True)
        (home / "runs.db").write_bytes(b"this is not a database" * 100)


@pytest.mark.parametrize("how", ["home-is-a-file", "parts-are-wrong", "database-is-garbage"])
def test_a_broken_state_folder_never_costs_the_job(
    settings: Settings, src: Path, tmp_path: Path, how: str
) -> None:
    _broken_home(settings, how)
    engine = FakeRunEngine(frames=[out("trained\n")], exit_code=0).with_image()
    result, captured = go(engine, settings, src, outputs=[Output("model", tmp_path / "out")])
    assert result.exit_code == 0 and result.status == "exited"  # type: ignore[attr-defined]
    assert engine.ops == ["create", "attach", "start", "wait", "remove"]  # never cut short
    assert captured.chunks == [("stdout", b"trained\n")]
    assert (tmp_path / "out").is_dir()
    warnings = [m for m in captured.messages if m.startswith("warning:")]
    history_warnings = [m for m in warnings if "history" in m]
    assert len(history_warnings) == 1, warnings  # reported once, start and end together
    if how != "database-is-garbage":
        assert result.log_path is None  # type: ignore[attr-defined]
        assert sum("log" in m and "history" not in m for m in warnings) == 1


class _FullDisk:
    """A log file whose writes fail as on a full filesystem, after ``room`` bytes."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.writes = 0

    def write(self, data: bytes) -> int:
        self.writes += 1
        if len(data) > self.room:
            raise OSError(28, "No space left on device")
        self.room -= len(data)
        return len(data)

    def flush(self) -> None:
        if self.room <= 0:
            raise OSError(28, "No space left on device")

    def close(self) -> None:
        self.flush()


def test_a_full_disk_mid_run_is_warned_once_and_the_run_completes(
    settings: Settings, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = _FullDisk(room=10)
    real_open = Path.open

    def fake_open(self: Path, mode: str = "r", *args: object, **kwargs: object) -> object:
        if self.suffix == ".log" and mode == "wb":
            return disk
        return real_open(self, mode, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", fake_open)
    frames = [out(f"line {i}\n") for i in range(50)]
    engine = FakeRunEngine(frames=frames, exit_code=7).with_image()
    result, captured = go(engine, settings, src)
    assert result.exit_code == 7 and result.status == "exited"  # type: ignore[attr-defined]
    assert len(captured.chunks) == 50  # the user still saw every line
    assert engine.ops == ["create", "attach", "start", "wait", "remove"]
    assert [m for m in captured.messages if "log" in m and m.startswith("warning:")] == [
        m for m in captured.messages if m.startswith("warning:")
    ]
    assert len([m for m in captured.messages if m.startswith("warning:")]) == 1
    assert disk.writes <= 3  # stopped writing after the failure
    assert History.at(settings).get(result.run_id).status == "exited"  # type: ignore[attr-defined]


def test_an_output_folder_that_cannot_be_made_is_a_clear_error(
    settings: Settings, src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from envbuild.errors import RunConfigError

    real_mkdir = Path.mkdir

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        if self.name == "model":
            raise PermissionError(13, "Permission denied")
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", refuse)
    engine = FakeRunEngine().with_image()
    with pytest.raises(RunConfigError, match="cannot create the folder"):
        go(engine, settings, src, outputs=[Output("model", tmp_path / "out" / "model")])
    assert engine.ops == []  # nothing started


def test_bookkeeping_waits_until_the_container_runs(
    settings: Settings, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history row and the reap of dead envbuilds' leftovers start once the container
    runs, never before (they would hold the interpreter while create and start are sent),
    and are complete when run() returns."""
    import envbuild.run.local as local

    engine = FakeRunEngine(frames=[out("x\n")]).with_image()
    seen: dict[str, list[str]] = {}
    from envbuild.run.reaper import reap

    record_start = local._record_start

    def recording(*args: object) -> object:
        seen["history"] = list(engine.ops)
        return record_start(*args)  # type: ignore[arg-type]

    def reaping(*args: object) -> object:
        seen["reap"] = list(engine.ops)
        return reap(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(local, "_record_start", recording)
    monkeypatch.setattr(local, "reap", reaping)
    result, _ = go(engine, settings, src)
    assert seen["history"][:3] == seen["reap"][:3] == ["create", "attach", "start"]
    assert History.at(settings).get(result.run_id).status == "exited"  # type: ignore[attr-defined]


@pytest.mark.parametrize("when", ["while created", "right after start"])
def test_an_interrupted_run_still_gets_its_history_row(
    settings: Settings, src: Path, when: str
) -> None:
    """Ctrl-C before the bookkeeping threads were started (the container never ran) or as
    they start: the row is written, and completed as interrupted, before run() returns."""
    engine = FakeRunEngine(frames=[out("x\n")], block=True).with_image()
    step = engine.create_container if when == "while created" else engine.start_container

    def interrupted(*args: object) -> object:
        answer = step(*args)  # type: ignore[arg-type]
        os.kill(os.getpid(), signal.SIGINT)
        return answer

    if when == "while created":
        engine.create_container = interrupted  # type: ignore[method-assign, assignment]
    else:
        engine.start_container = interrupted  # type: ignore[method-assign, assignment]
    result, _ = go(engine, settings, src)
    assert result.exit_code == 130 and result.status == "interrupted"  # type: ignore[attr-defined]
    assert not engine.live
    record = History.at(settings).get(result.run_id)  # type: ignore[attr-defined]
    assert (record.status, record.exit_code) == ("interrupted", 130)


def test_a_failing_history_row_is_reported_once(
    settings: Settings, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure in the background work is a warning, never lost and never the run's."""
    import envbuild.run.local as local

    def broken(*args: object) -> object:
        raise OSError(28, "No space left on device", "runs.db")

    monkeypatch.setattr(local, "_record_start", broken)
    engine = FakeRunEngine(frames=[out("x\n")], exit_code=5).with_image()
    result, captured = go(engine, settings, src)
    assert result.exit_code == 5 and result.status == "exited"  # type: ignore[attr-defined]
    warnings = [m for m in captured.messages if m.startswith("warning:")]
    assert warnings == [
        f"warning: could not record run {result.run_id} in the history: "  # type: ignore[attr-defined]
        "runs.db: No space left on device"
    ]


def test_a_job_that_has_shown_output_is_in_the_history(
    settings: Settings, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history row is written before the first line of the job is shown: a run
    killed (kill -9) once its output appeared always has a row for the reaper to mark
    lost, however slow the row's thread is."""
    import threading

    import envbuild.run.local as local

    record_start = local._record_start
    slow = threading.Event()

    def slow_row(*args: object) -> object:
        slow.wait(0.3)  # a loaded machine: the row's thread is late
        return record_start(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(local, "_record_start", slow_row)
    engine = FakeRunEngine(frames=[out("first\n"), out("second\n")]).with_image()
    rows_when_shown: list[list[str]] = []
    captured = Captured()

    def output(stream: str, data: bytes) -> None:
        rows_when_shown.append([r.status for r in History.at(settings).list(limit=10)])
        captured.output(stream, data)

    result = run(
        RunConfig(environment="image:example:1", script="train.py", source_directory=src),
        settings=settings,
        engine=engine,
        output=output,
        log=captured.log,
    )
    assert rows_when_shown[0] == ["running"]
    assert History.at(settings).get(result.run_id).status == "exited"
