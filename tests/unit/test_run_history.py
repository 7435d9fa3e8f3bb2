"""The run history: rows, prefixes, and many writers at once."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from pathlib import Path

import pytest

from envbuild.run.history import SCHEMA_VERSION, History, HistoryError, RunRecord, utc_iso


def record(run_id: str, started: float = 0.0, **fields: object) -> RunRecord:
    values: dict[str, object] = {
        "id": run_id,
        "started_at": utc_iso(started or time.time()),
        "status": "running",
        "image": "envbuild/hello:abc",
        "image_id": "sha256:1",
        "log_path": f"/tmp/{run_id}.log",
        "argv": ("python", "/workspace/train.py", "a b"),
        "arguments": ("a b",),
        "variables": ("MESSAGE",),
        "mounts": ({"source": "/src", "target": "/workspace", "read_only": True},),
        "inputs": {"data": {"host": "/d", "container": "/inputs/data", "mode": "mount"}},
        "outputs": {},
        "script": "train.py",
        "env_name": "hello",
        "env_version": 1,
        "env_hash": "f" * 64,
    }
    values.update(fields)
    return RunRecord(**values)  # type: ignore[arg-type]


def test_start_finish_get(tmp_path: Path) -> None:
    history = History(tmp_path / "runs.db")
    history.start(record("abc123def456"))
    history.finish("abc123def456", status="exited", exit_code=3, duration=1.23456, finished=1.0)
    got = history.get("abc123def456")
    assert got.status == "exited" and got.exit_code == 3 and got.duration == 1.235
    assert got.argv == ("python", "/workspace/train.py", "a b")
    assert got.mounts[0]["read_only"] is True
    assert got.inputs["data"]["mode"] == "mount"
    assert got.to_json()["environment"] == {"name": "hello", "version": 1, "hash": "f" * 64}
    assert history.get("abc1").id == "abc123def456"  # a unique prefix is enough
    with sqlite3.connect(tmp_path / "runs.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unknown_and_ambiguous_ids(tmp_path: Path) -> None:
    history = History(tmp_path / "runs.db")
    with pytest.raises(HistoryError, match="no runs recorded yet"):
        history.get("x")
    assert history.list() == []
    history.start(record("aa0000000001"))
    history.start(record("aa0000000002"))
    with pytest.raises(HistoryError, match="ambiguous"):
        history.get("aa")
    for bad in ("zz", "", "%", "a_"):
        with pytest.raises(HistoryError, match="no run"):
            history.get(bad)


def test_list_newest_first(tmp_path: Path) -> None:
    history = History(tmp_path / "runs.db")
    for index in range(5):
        history.start(record(f"run{index}", started=1_700_000_000 + index))
    assert [r.id for r in history.list(limit=3)] == ["run4", "run3", "run2"]
    assert len(history.list(limit=None)) == 5


def _writer(path: str, worker: int, count: int) -> None:
    history = History(Path(path))
    for index in range(count):
        run_id = f"w{worker:02d}r{index:03d}"
        history.start(record(run_id))
        history.finish(run_id, status="exited", exit_code=index % 7, duration=0.1, finished=1.0)


def test_concurrent_writers_never_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "home" / "runs.db"  # the folder does not exist yet: created by racers
    workers, count = 8, 25
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_writer, args=(str(path), w, count)) for w in range(workers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    records = History(path).list(limit=None)
    assert len(records) == workers * count
    assert all(r.status == "exited" for r in records)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    History(path).start(record("r1"))
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(HistoryError, match="newer envbuild"):
        History(path).list()


def test_one_damaged_row_does_not_hide_the_others(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    history = History(path)
    history.start(record("good000000001"))
    history.start(record("bad0000000001"))
    history.start(record("bad0000000002"))
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE runs SET argv = '{not json', inputs = '[1]', mounts = '\"x\"', "
            "exit_code = 'seven', duration = x'00ff', status = '', started_at = 3 "
            "WHERE id = 'bad0000000001'"
        )
        conn.execute(
            "UPDATE runs SET outputs = 'null', env_version = 'v', variables = '[1, {}]' "
            "WHERE id = 'bad0000000002'"
        )
    records = {r.id: r for r in History(path).list(limit=None)}
    assert set(records) == {"good000000001", "bad0000000001", "bad0000000002"}
    bad = records["bad0000000001"]
    assert bad.argv == () and bad.inputs == {} and bad.mounts == ()
    assert bad.exit_code is None and bad.duration is None and bad.status == "unknown"
    assert records["bad0000000002"].outputs == {} and records["bad0000000002"].env_version is None
    assert records["good000000001"].argv == ("python", "/workspace/train.py", "a b")
    assert History(path).get("bad0000000001").to_json()["argv"] == []
    assert records["good000000001"].to_json()["owner"] is None


def test_a_version_beyond_64_bits_is_recorded_as_unknown(tmp_path: Path) -> None:
    history = History(tmp_path / "runs.db")
    history.start(record("big", env_version=2**70))
    history.start(record("edge", env_version=2**63 - 1))
    assert history.get("big").env_version is None
    assert history.get("edge").env_version == 2**63 - 1


def test_runs_whose_envbuild_died_are_marked_lost(tmp_path: Path) -> None:
    import dataclasses
    import subprocess
    import sys

    from envbuild import process

    history = History(tmp_path / "runs.db")
    me = process.current()
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    dead = dataclasses.replace(me, pid=proc.pid, start=process.start_time(proc.pid) or "")
    proc.wait()
    history.start(record("alive", owner=me.label()))
    history.start(record("killed", owner=dead.label()))
    history.start(record("unowned"))  # a version 1 row: no owner, left alone
    history.start(record("finished", owner=dead.label()))
    history.finish("finished", status="exited", exit_code=0, duration=1.0, finished=1.0)
    assert history.mark_lost() == ["killed"]
    statuses = {r.id: r.status for r in history.list(limit=None)}
    assert statuses == {
        "alive": "running",
        "killed": "lost",
        "unowned": "running",
        "finished": "exited",
    }
    assert history.mark_lost(["unowned"]) == ["unowned"]  # its container was reaped


def test_a_version_1_history_gains_the_owner_column(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE runs (id TEXT PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT,"
            " status TEXT NOT NULL, exit_code INTEGER, duration REAL, env_name TEXT,"
            " env_version INTEGER, env_hash TEXT, image TEXT NOT NULL, image_id TEXT NOT NULL,"
            " script TEXT, argv TEXT NOT NULL, arguments TEXT NOT NULL, variables TEXT NOT NULL,"
            " mounts TEXT NOT NULL, inputs TEXT NOT NULL, outputs TEXT NOT NULL,"
            " source_dir TEXT, workdir TEXT, user TEXT, log_path TEXT NOT NULL)"
        )
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO runs VALUES ('old', '2026-01-01', NULL, 'exited', 0, 1.0, NULL, NULL,"
            " NULL, 'i', 'i', NULL, '[]', '[]', '[]', '[]', '{}', '{}', NULL, NULL, NULL, '/l')"
        )
    history = History(path)
    history.start(record("new", owner="h/b/1/2/3"))
    assert {r.id: r.owner for r in history.list()} == {"old": None, "new": "h/b/1/2/3"}


def test_a_version_2_history_gains_the_nodes_column(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    History(path).start(record("old"))
    with sqlite3.connect(path) as conn:  # back to version 2: no nodes column
        conn.execute("ALTER TABLE runs DROP COLUMN nodes")
        conn.execute("PRAGMA user_version = 2")
    history = History(path)
    history.start(record("job"))
    nodes: list[dict[str, object]] = [
        {"index": 0, "exit_code": 7, "ranks": {"0": 7}},
        {"index": 1, "exit_code": 143},
    ]
    history.finish(
        "job", status="exited", exit_code=7, duration=1.0, finished=time.time(), nodes=nodes
    )
    history.finish("old", status="exited", exit_code=0, duration=1.0, finished=time.time())
    rows = {r.id: r for r in history.list()}
    assert [dict(n) for n in rows["job"].nodes] == nodes
    assert rows["old"].nodes == () and rows["old"].to_json()["nodes"] == []
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


# The schema as envbuild wrote it at version 2 (before nodes, files_dir, metrics, tags).
_SCHEMA_2 = """
CREATE TABLE runs (
    id TEXT PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT, status TEXT NOT NULL,
    exit_code INTEGER, duration REAL, env_name TEXT, env_version INTEGER, env_hash TEXT,
    image TEXT NOT NULL, image_id TEXT NOT NULL, script TEXT, argv TEXT NOT NULL,
    arguments TEXT NOT NULL, variables TEXT NOT NULL, mounts TEXT NOT NULL,
    inputs TEXT NOT NULL, outputs TEXT NOT NULL, source_dir TEXT, workdir TEXT, user TEXT,
    log_path TEXT NOT NULL, owner TEXT
);
CREATE INDEX runs_started ON runs (started_at);
INSERT INTO runs VALUES ('old000000001', '2026-11-30T10:00:00.000+00:00', NULL, 'exited', 0,
    1.5, 'hello', 1, NULL, 'envbuild/hello:abc', 'sha256:1', 'train.py', '["python"]', '[]',
    '[]', '[]', '{}', '{}', '/src', '/workspace', '1000:1000', '/tmp/old.log', NULL);
PRAGMA user_version = 2;
"""


@pytest.mark.parametrize("version", [1, 2, 3])
def test_an_older_history_gains_the_new_columns(tmp_path: Path, version: int) -> None:
    path = tmp_path / "runs.db"
    with sqlite3.connect(path) as conn:
        script = _SCHEMA_2
        if version == 3:  # with the nodes column
            script = script.replace("owner TEXT\n);", "owner TEXT, nodes TEXT\n);")
            script = script.replace("'/tmp/old.log', NULL)", "'/tmp/old.log', NULL, '[]')")
            script = script.replace("user_version = 2", "user_version = 3")
        if version == 1:  # before the owner column
            script = script.replace(
                ",\n    log_path TEXT NOT NULL, owner TEXT", ",\n    log_path TEXT NOT NULL"
            )
            script = script.replace("'/tmp/old.log', NULL)", "'/tmp/old.log')")
            script = script.replace("user_version = 2", "user_version = 1")
        conn.executescript(script)
    history = History(path)
    old = history.get("old000000001")  # read, and migrated on the way
    assert (old.status, old.duration, old.files_dir, old.metrics, old.tags) == (
        "exited",
        1.5,
        None,
        {},
        {},
    )
    history.start(record("new000000001"))
    history.record_files(
        "new000000001", files_dir=tmp_path / "files", metrics={"loss": [0.5, 0.4]}, tags={"a": "b"}
    )
    new = history.get("new000000001")
    assert new.files_dir == str(tmp_path / "files")
    assert new.metrics == {"loss": [0.5, 0.4]} and new.tags == {"a": "b"}
    assert new.to_json()["metrics"] == {"loss": [0.5, 0.4]}
    history.record_files("old000000001", files_dir=None, metrics={"x": 1}, tags={})
    assert history.get("old000000001").metrics == {"x": 1}
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
    assert columns[-3:] == ["files_dir", "metrics", "tags"]


def test_damaged_metrics_read_as_empty(tmp_path: Path) -> None:
    history = History(tmp_path / "runs.db")
    history.start(record("dmg000000001"))
    with sqlite3.connect(tmp_path / "runs.db") as conn:
        conn.execute('UPDATE runs SET metrics = \'[not json\', tags = \'{"a": 1, "b": "c"}\'')
    got = history.get("dmg000000001")
    assert got.metrics == {} and got.tags == {"b": "c"}
