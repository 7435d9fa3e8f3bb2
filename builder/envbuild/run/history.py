"""Run history: one SQLite file in envbuild's state folder (``ENVBUILD_HOME`` moves it).

Each run is a row, written when it starts (status ``running``) and completed
when it ends: run id, time, environment name/version/hash, image and image ID,
script, arguments, variable *names* (never values), mounts, inputs, outputs,
exit code, duration and log file; for a run with a snapshot, the folder of
the files it kept and the metrics and tags its script logged (written when it
ends, see :mod:`envbuild.run.files`).

Concurrent runs share the file safely: WAL journal (readers never block the
writer), a busy timeout (a writer waits for another instead of failing), and
each write is one short ``BEGIN IMMEDIATE`` transaction on its own connection.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from envbuild.errors import HistoryError as HistoryError  # its home is the one error hierarchy
from envbuild.process import owner_dead
from envbuild.settings import Settings

DATABASE = "runs.db"
SCHEMA_VERSION = 4  # 2: the owner column; 3: nodes; 4: files_dir, metrics, tags
BUSY_TIMEOUT_SECONDS = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id            TEXT PRIMARY KEY,
    started_at    TEXT NOT NULL,      -- ISO 8601, UTC
    finished_at   TEXT,
    status        TEXT NOT NULL,      -- running | exited | interrupted | timed-out | failed | lost
    exit_code     INTEGER,
    duration      REAL,               -- seconds
    env_name      TEXT,
    env_version   INTEGER,
    env_hash      TEXT,
    image         TEXT NOT NULL,
    image_id      TEXT NOT NULL,
    script        TEXT,
    argv          TEXT NOT NULL,      -- JSON list: the container's command
    arguments     TEXT NOT NULL,      -- JSON list: the script's arguments
    variables     TEXT NOT NULL,      -- JSON list of variable NAMES, never values
    mounts        TEXT NOT NULL,      -- JSON list of {source, target, read_only}
    inputs        TEXT NOT NULL,      -- JSON object name -> {host, container, mode}
    outputs       TEXT NOT NULL,      -- JSON object name -> {host, container}
    source_dir    TEXT,
    workdir       TEXT,
    user          TEXT,
    log_path      TEXT NOT NULL,
    owner         TEXT,               -- the envbuild process running it (envbuild.process.Owner)
    nodes         TEXT,               -- JSON list: a distributed run's nodes and exit codes
    files_dir     TEXT,               -- the folder of the files the run kept (outputs, logs)
    metrics       TEXT,               -- JSON object name -> value (or list of values)
    tags          TEXT                -- JSON object key -> value
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
"""

# Columns added since schema 1, each with its type: a history written by an
# older envbuild gains them (additively: old rows read them as NULL).
_ADDED_COLUMNS = (
    ("owner", "TEXT"),
    ("nodes", "TEXT"),
    ("files_dir", "TEXT"),
    ("metrics", "TEXT"),
    ("tags", "TEXT"),
)


@dataclass(frozen=True)
class RunRecord:
    """One row of the run history."""

    id: str
    started_at: str
    status: str
    image: str
    image_id: str
    log_path: str
    argv: tuple[str, ...] = ()
    arguments: tuple[str, ...] = ()
    variables: tuple[str, ...] = ()
    mounts: tuple[Mapping[str, Any], ...] = ()
    inputs: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    outputs: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    script: str | None = None
    env_name: str | None = None
    env_version: int | None = None
    env_hash: str | None = None
    source_dir: str | None = None
    workdir: str | None = None
    user: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    duration: float | None = None
    owner: str | None = None
    # A distributed run's nodes, node 0 first: {"index", "container", "role",
    # "exit_code", "ranks": {rank: exit code}} (empty for one container).
    nodes: tuple[Mapping[str, Any], ...] = ()
    files_dir: str | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping of every field."""
        return {
            "id": self.id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "status": self.status,
            "exit_code": self.exit_code,
            "duration": self.duration,
            "environment": {
                "name": self.env_name,
                "version": self.env_version,
                "hash": self.env_hash,
            },
            "image": self.image,
            "image_id": self.image_id,
            "script": self.script,
            "argv": list(self.argv),
            "arguments": list(self.arguments),
            "variables": list(self.variables),
            "mounts": [dict(m) for m in self.mounts],
            "inputs": {k: dict(v) for k, v in self.inputs.items()},
            "outputs": {k: dict(v) for k, v in self.outputs.items()},
            "source_dir": self.source_dir,
            "workdir": self.workdir,
            "user": self.user,
            "log_path": self.log_path,
            "owner": self.owner,  # host/boot/pidns/pid/start of the envbuild that ran it
            "nodes": [dict(n) for n in self.nodes],
            "files_dir": self.files_dir,
            "metrics": dict(self.metrics),
            "tags": dict(self.tags),
        }


def utc_iso(timestamp: float) -> str:
    """``timestamp`` as an ISO 8601 UTC string with milliseconds."""
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat(timespec="milliseconds")


_JSON_COLUMNS = ("argv", "arguments", "variables", "mounts", "inputs", "outputs")
_INT64 = (-(1 << 63), (1 << 63) - 1)


def _sqlite_int(value: int | None) -> int | None:
    """``value`` if SQLite can hold it (64 bits), else ``None`` (recorded as unknown)."""
    if value is None or _INT64[0] <= value <= _INT64[1]:
        return value
    return None


def _text(value: object, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _optional(value: object, kind: type | tuple[type, ...]) -> Any:
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


def _json_column(value: object, kind: type) -> Any:
    try:
        data = json.loads(value) if isinstance(value, (str, bytes)) else None
    except ValueError:
        data = None
    if not isinstance(data, kind):
        return kind()
    if isinstance(data, dict):  # name -> {key: value}
        return {str(k): v for k, v in data.items() if isinstance(v, dict)}
    return data


def _json_object(value: object) -> dict[str, Any]:
    """A JSON object column (any values); missing or damaged reads as empty."""
    try:
        data = json.loads(value) if isinstance(value, (str, bytes)) else None
    except (ValueError, RecursionError):
        data = None
    return {str(k): v for k, v in data.items()} if isinstance(data, dict) else {}


def _row_to_record(row: sqlite3.Row) -> RunRecord:
    """One row as a record; a damaged field reads as empty, never as an error.

    The history is a record of what happened, not an input: one row written by
    a crashed process or edited by hand must not make every other row unreadable.
    """
    data = dict(row)
    status = _text(data.get("status"), "unknown") or "unknown"
    return RunRecord(
        id=_text(data.get("id"), "?"),
        started_at=_text(data.get("started_at")),
        status=status,
        image=_text(data.get("image")),
        image_id=_text(data.get("image_id")),
        log_path=_text(data.get("log_path")),
        argv=tuple(str(a) for a in _json_column(data.get("argv"), list)),
        arguments=tuple(str(a) for a in _json_column(data.get("arguments"), list)),
        variables=tuple(str(a) for a in _json_column(data.get("variables"), list)),
        mounts=tuple(m for m in _json_column(data.get("mounts"), list) if isinstance(m, dict)),
        inputs=_json_column(data.get("inputs"), dict),
        outputs=_json_column(data.get("outputs"), dict),
        script=_optional(data.get("script"), str),
        env_name=_optional(data.get("env_name"), str),
        env_version=_optional(data.get("env_version"), int),
        env_hash=_optional(data.get("env_hash"), str),
        source_dir=_optional(data.get("source_dir"), str),
        workdir=_optional(data.get("workdir"), str),
        user=_optional(data.get("user"), str),
        finished_at=_optional(data.get("finished_at"), str),
        exit_code=_optional(data.get("exit_code"), int),
        duration=_optional(data.get("duration"), (int, float)),
        owner=_optional(data.get("owner"), str),
        nodes=tuple(n for n in _json_column(data.get("nodes"), list) if isinstance(n, dict)),
        files_dir=_optional(data.get("files_dir"), str),
        metrics=_json_object(data.get("metrics")),
        tags={k: v for k, v in _json_object(data.get("tags")).items() if isinstance(v, str)},
    )


class History:
    """The run history in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def at(cls, settings: Settings) -> History:
        """The history of ``settings.home``."""
        return cls(settings.home / DATABASE)

    @contextmanager
    def _connect(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        if not write and not self.path.exists():  # reading never creates the file
            raise HistoryError(f"no runs recorded yet ({self.path} does not exist)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise HistoryError(f"cannot open the run history {self.path}: {exc}") from exc
        with closing(conn):
            try:
                conn.row_factory = sqlite3.Row
                conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
                self._prepare(conn)
                yield conn
            except (sqlite3.Error, OSError, OverflowError) as exc:
                raise HistoryError(f"the run history {self.path} failed: {exc}") from exc

    @staticmethod
    def _prepare(conn: sqlite3.Connection) -> None:
        """WAL mode and the schema (both idempotent, safe when run by two processes at once)."""
        # Switching to WAL takes an exclusive lock, and SQLite answers "database
        # is locked" at once (without the busy handler) while another process
        # holds one, e.g. when several runs create the history together: retry
        # within the busy timeout.
        deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
        while conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            try:
                conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        conn.execute("PRAGMA synchronous = NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
                    for name, kind in _ADDED_COLUMNS:  # an older history gains them
                        if name not in columns:
                            conn.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        elif version > SCHEMA_VERSION:
            raise HistoryError(
                "the run history was written by a newer envbuild "
                f"(schema {version}, this one knows {SCHEMA_VERSION})"
            )

    def start(self, record: RunRecord) -> None:
        """Insert the row of a run that is starting."""
        row = record.to_json()
        values = {
            "id": record.id,
            "started_at": record.started_at,
            "finished_at": record.finished_at,
            "status": record.status,
            "exit_code": record.exit_code,
            "duration": record.duration,
            "env_name": record.env_name,
            "env_version": _sqlite_int(record.env_version),
            "env_hash": record.env_hash,
            "image": record.image,
            "image_id": record.image_id,
            "script": record.script,
            "source_dir": record.source_dir,
            "workdir": record.workdir,
            "user": record.user,
            "log_path": record.log_path,
            "owner": record.owner,
            "nodes": json.dumps(row["nodes"], sort_keys=True) if record.nodes else None,
            "files_dir": record.files_dir,
            "metrics": json.dumps(dict(record.metrics), sort_keys=True),
            "tags": json.dumps(dict(record.tags), sort_keys=True),
        }
        for key in _JSON_COLUMNS:
            values[key] = json.dumps(row[key], sort_keys=True)
        columns = ", ".join(values)
        marks = ", ".join(f":{key}" for key in values)
        with self._connect(write=True) as conn:
            conn.execute(f"INSERT INTO runs ({columns}) VALUES ({marks})", values)  # noqa: S608

    def finish(
        self,
        run_id: str,
        *,
        status: str,
        exit_code: int,
        duration: float,
        finished: float,
        nodes: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Complete the row of run ``run_id`` (``nodes``: a distributed run's, with exit codes)."""
        nodes_json = None if nodes is None else json.dumps([dict(n) for n in nodes], sort_keys=True)
        with self._connect(write=True) as conn:
            conn.execute(
                "UPDATE runs SET status = ?, exit_code = ?, duration = ?, finished_at = ?, "
                "nodes = COALESCE(?, nodes) WHERE id = ?",
                (status, exit_code, round(duration, 3), utc_iso(finished), nodes_json, run_id),
            )

    def record_files(
        self,
        run_id: str,
        *,
        files_dir: Path | None,
        metrics: Mapping[str, Any],
        tags: Mapping[str, str],
    ) -> None:
        """Record what run ``run_id`` kept (its files folder) and logged (metrics, tags)."""
        with self._connect(write=True) as conn:
            conn.execute(
                "UPDATE runs SET files_dir = ?, metrics = ?, tags = ? WHERE id = ?",
                (
                    None if files_dir is None else str(files_dir),
                    json.dumps(dict(metrics), sort_keys=True),
                    json.dumps(dict(tags), sort_keys=True),
                    run_id,
                ),
            )

    def mark_lost(self, run_ids: Iterable[str] = ()) -> list[str]:
        """Mark ``lost`` every ``running`` run whose envbuild died, and those of ``run_ids``.

        A run whose envbuild was killed (``kill -9``, a crash, a reboot) never
        recorded its end; its owner (see :mod:`envbuild.process`) says it never will.
        Returns the ids marked.
        """
        if not self.path.exists():
            return []
        given = set(run_ids)
        with self._connect(write=True) as conn:
            rows = conn.execute("SELECT id, owner FROM runs WHERE status = 'running'").fetchall()
            lost = [r["id"] for r in rows if r["id"] in given or owner_dead(r["owner"])]
            if lost:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(
                        "UPDATE runs SET status = 'lost' WHERE id = ? AND status = 'running'",
                        [(run_id,) for run_id in lost],
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        return lost

    def get(self, run_id: str) -> RunRecord:
        """The run whose id is ``run_id`` or starts with it (unambiguously)."""
        if not run_id or any(c in run_id for c in "%_\\"):
            raise HistoryError(f"no run {run_id!r}", hint="see `envbuild runs` for run ids")
        with self._connect(write=False) as conn:
            rows = conn.execute(
                "SELECT * FROM runs WHERE id LIKE ? ORDER BY started_at DESC LIMIT 11",
                (run_id + "%",),
            ).fetchall()
        exact = [r for r in rows if r["id"] == run_id]
        if exact:
            return _row_to_record(exact[0])
        if not rows:
            raise HistoryError(f"no run {run_id!r}", hint="see `envbuild runs` for run ids")
        if len(rows) > 1:
            ids = ", ".join(r["id"] for r in rows[:10])
            raise HistoryError(f"run id {run_id!r} is ambiguous: {ids}", hint="give more of it")
        return _row_to_record(rows[0])

    def list(self, limit: int | None = 20) -> list[RunRecord]:
        """The most recent runs, newest first (all of them when ``limit`` is ``None``)."""
        if not self.path.exists():
            return []
        query = "SELECT * FROM runs ORDER BY started_at DESC, id"
        params: Sequence[int] = ()
        if limit is not None:
            query += " LIMIT ?"
            params = (limit,)
        with self._connect(write=False) as conn:
            return [_row_to_record(row) for row in conn.execute(query, params)]
