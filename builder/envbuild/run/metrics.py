"""Metrics and tags a run's script logged, read from its metrics file after the run.

A run started with ``azureml_context`` (see :mod:`envbuild.run.files`) gets a
writable file, named in the container by :data:`METRICS_FILE_VARIABLE`, to
which the in-container ``azureml.core`` (``envbuild/run/azureml_context``)
appends one JSON object a line::

    {"v": 1, "kind": "log", "name": "loss", "value": 0.5, "time": 1764567000.1, "rank": "0"}

``kind`` is ``log`` (one value), ``list`` (a list of values), ``row`` (one row
of a table, a mapping), ``table`` (a mapping of column -> list) or ``tag``.
:func:`merge` turns them into what ``RunResult.metrics`` and
``envbuild runs show`` carry:

* a name logged once is its value; logged several times, the list of values;
* ``log_list`` gives a list (a later ``log`` or ``log_list`` extends it);
* ``log_row`` gives the list of its rows (mappings);
* ``log_table`` gives its mapping (the last one wins);
* tags are apart: ``{key: value}``, the last value wins.

The file is written by the script, so it is read as untrusted input: at most
:data:`MAX_METRICS_BYTES` of it, lines longer than :data:`MAX_LINE_BYTES`,
anything that is not a JSON object of this shape, and more than
:data:`MAX_NAMES` names are refused with a warning, never an error; a torn last
line (the script was killed mid-write) is dropped quietly.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envbuild.log import Log

METRICS_FILE_VARIABLE = "ENVBUILD_METRICS_FILE"
FORMAT = 1  # the "v" the in-container azureml.core writes
KINDS = ("log", "list", "row", "table", "tag")
MAX_METRICS_BYTES = 64 << 20  # read at most this much of a metrics file
MAX_LINE_BYTES = 1 << 20  # the in-container writer refuses longer lines itself
MAX_NAMES = 10_000  # distinct metric and tag names
MAX_NAME_CHARS = 255
MAX_DEPTH = 32  # nesting of a value (JSON parsers recurse)
MAX_WARNINGS = 5  # rejected lines reported one by one; the rest counted


@dataclass(frozen=True)
class Metrics:
    """What a run logged: ``metrics`` by name, ``tags`` by key, and what was refused."""

    metrics: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


@dataclass
class _Series:
    table: Any = None
    items: list[Any] = field(default_factory=list)
    logs: int = 0
    collection: bool = False

    def value(self) -> Any:
        if self.table is not None:
            return self.table
        if self.logs == 1 and not self.collection:
            return self.items[0]
        return list(self.items)


def merge(records: Iterable[Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    """``(metrics, tags)`` from checked records in the order they were logged.

    The one rule of the module docstring; the in-container ``Run.get_metrics``
    applies the same one to what its own process logged.
    """
    series: dict[str, _Series] = {}
    tags: dict[str, str] = {}
    for record in records:
        kind, name, value = record["kind"], record["name"], record["value"]
        if kind == "tag":
            tags[name] = value
            continue
        current = series.get(name)
        if kind == "table" or current is None or current.table is not None:
            current = series[name] = _Series()
        if kind == "table":
            current.table = value
        elif kind == "log":
            current.items.append(value)
            current.logs += 1
        else:
            current.items.extend(value if kind == "list" else [value])
            current.collection = True
    return {name: s.value() for name, s in series.items()}, tags


def _depth(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests at most ``limit`` deep (iteratively: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if level > limit:
            return False
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return True


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as strings: the history and ``--json`` stay JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def check_record(line: bytes) -> dict[str, Any]:
    """One line as a record, or :class:`ValueError` saying what is wrong with it."""
    if len(line) > MAX_LINE_BYTES:
        raise ValueError(f"{len(line)} bytes, more than {MAX_LINE_BYTES}")
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError("not UTF-8") from exc
    except RecursionError as exc:
        raise ValueError("nested too deep") from exc
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from exc
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if record.get("v") != FORMAT:
        raise ValueError(f"format {record.get('v')!r}, expected {FORMAT}")
    kind, name = record.get("kind"), record.get("name")
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}, expected one of {', '.join(KINDS)}")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
        raise ValueError(f"name {str(name)[:40]!r}: expected 1 to {MAX_NAME_CHARS} characters")
    if "value" not in record:
        raise ValueError("no value")
    value = record["value"]
    if not _depth(value):
        raise ValueError(f"value nested more than {MAX_DEPTH} deep")
    expected = {"list": list, "row": dict, "table": dict, "tag": str}.get(kind)
    if expected is not None and not isinstance(value, expected):
        raise ValueError(f"a {kind} needs a {expected.__name__} value")
    if kind == "table" and not all(isinstance(v, list) for v in value.values()):
        raise ValueError("a table maps each column to a list")
    return {"kind": kind, "name": name, "value": _finite(value)}


def read(path: Path, log: Log | None = None, *, limit: int = MAX_METRICS_BYTES) -> Metrics:
    """The metrics and tags in the file at ``path`` (none when it does not exist).

    Never raises for the file's content: what is refused is reported through
    ``log`` (and returned in ``warnings``), the rest is kept.
    """
    warnings: list[str] = []
    # The script could have left a symlink (to a file of yours) or a FIFO (which
    # would block) in its place: never followed, never waited on.
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return Metrics()
    except OSError as exc:
        why = "a symlink" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
        warnings.append(f"warning: the run's metrics {path} were not read ({why})")
        return _done(Metrics(warnings=tuple(warnings)), log)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            warnings.append(f"warning: the run's metrics {path} were not read (not a file)")
            return _done(Metrics(warnings=tuple(warnings)), log)
        data = handle.read(limit + 1)
    if len(data) > limit:
        data = data[:limit]
        warnings.append(
            f"warning: the run's metrics file is larger than {limit} bytes; "
            "only its beginning was read"
        )
        data = data[: data.rfind(b"\n") + 1]  # the cut line is no line
    lines = data.split(b"\n")
    torn = lines.pop()  # after the last newline: empty, or a line still being written
    records: list[dict[str, Any]] = []
    rejected: list[str] = []
    names: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = check_record(line)
        except ValueError as exc:
            rejected.append(f"line {number}: {exc}")
            continue
        key = ("t:" if record["kind"] == "tag" else "m:") + record["name"]
        if key not in names and len(names) >= MAX_NAMES:
            rejected.append(f"line {number}: more than {MAX_NAMES} names")
            continue
        names.add(key)
        records.append(record)
    if torn.strip():
        # Complete but for its newline, or torn: the writer was stopped mid-line.
        with contextlib.suppress(ValueError):
            records.append(check_record(torn))
    for problem in rejected[:MAX_WARNINGS]:
        warnings.append(f"warning: the run's metrics, {problem}: ignored")
    if len(rejected) > MAX_WARNINGS:
        warnings.append(
            f"warning: the run's metrics: {len(rejected) - MAX_WARNINGS} more lines ignored"
        )
    metrics, tags = merge(records)
    return _done(Metrics(metrics, tags, tuple(warnings)), log)


def _done(result: Metrics, log: Log | None) -> Metrics:
    if log is not None:
        for warning in result.warnings:
            log(warning)
    return result
