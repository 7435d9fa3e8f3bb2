"""Reading a run's metrics file: the merge rule, and a file written by an untrusted script."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from envbuild.run import metrics
from envbuild.run.metrics import check_record, merge, read


def line(kind: str, name: str, value: Any, **extra: Any) -> str:
    return json.dumps({"v": 1, "kind": kind, "name": name, "value": value, **extra}) + "\n"


def write(tmp_path: Path, *lines: str | bytes) -> Path:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b"".join(x.encode() if isinstance(x, str) else x for x in lines))
    return path


def test_the_merge_rule() -> None:
    got, tags = merge(
        [
            {"kind": "log", "name": "once", "value": 1},
            {"kind": "log", "name": "loss", "value": 0.5},
            {"kind": "log", "name": "loss", "value": 0.4},
            {"kind": "list", "name": "acc", "value": [0.1]},  # a list even of one
            {"kind": "list", "name": "acc2", "value": [1, 2]},
            {"kind": "list", "name": "acc2", "value": [3]},  # extends
            {"kind": "row", "name": "table", "value": {"epoch": 1}},
            {"kind": "row", "name": "table", "value": {"epoch": 2}},
            {"kind": "table", "name": "cm", "value": {"a": [1]}},
            {"kind": "table", "name": "cm", "value": {"a": [2]}},  # the last wins
            {"kind": "log", "name": "mixed", "value": 1},
            {"kind": "list", "name": "mixed", "value": [2, 3]},
            {"kind": "tag", "name": "model", "value": "cnn"},
            {"kind": "tag", "name": "model", "value": "rnn"},
        ]
    )
    assert got == {
        "once": 1,
        "loss": [0.5, 0.4],
        "acc": [0.1],
        "acc2": [1, 2, 3],
        "table": [{"epoch": 1}, {"epoch": 2}],
        "cm": {"a": [2]},
        "mixed": [1, 2, 3],
    }
    assert tags == {"model": "rnn"}


def test_read_a_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        line("log", "loss", 0.5, time=1.0, rank="0"),
        line("log", "loss", 0.4, time=2.0, rank="1"),
        line("tag", "model", "cnn"),
        "\n",  # blank lines are nothing
    )
    found = read(path)
    assert found.metrics == {"loss": [0.5, 0.4]} and found.tags == {"model": "cnn"}
    assert found.warnings == ()


def test_a_missing_file_is_no_metrics(tmp_path: Path) -> None:
    found = read(tmp_path / "none.jsonl")
    assert (found.metrics, found.tags, found.warnings) == ({}, {}, ())


def test_a_torn_last_line_is_dropped_quietly(tmp_path: Path) -> None:
    torn = line("log", "loss", 0.3)[:20]
    messages: list[str] = []
    found = read(write(tmp_path, line("log", "loss", 0.5), torn), messages.append)
    assert found.metrics == {"loss": 0.5} and messages == []


def test_a_complete_last_line_without_its_newline_counts(tmp_path: Path) -> None:
    found = read(write(tmp_path, line("log", "a", 1), line("log", "b", 2).rstrip("\n")))
    assert found.metrics == {"a": 1, "b": 2}


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (b"not json at all", "not JSON"),
        (b"\xff\xfe\xfd", "not UTF-8"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"v": 2, "kind": "log", "name": "x", "value": 1}', "format 2"),
        (b'{"v": 1, "kind": "exec", "name": "x", "value": 1}', "kind 'exec'"),
        (b'{"v": 1, "kind": "log", "name": "", "value": 1}', "name"),
        (b'{"v": 1, "kind": "log", "name": 7, "value": 1}', "name"),
        (b'{"v": 1, "kind": "log", "name": "x"}', "no value"),
        (b'{"v": 1, "kind": "list", "name": "x", "value": 1}', "list value"),
        (b'{"v": 1, "kind": "row", "name": "x", "value": [1]}', "dict value"),
        (b'{"v": 1, "kind": "tag", "name": "x", "value": 1}', "str value"),
        (b'{"v": 1, "kind": "table", "name": "x", "value": {"a": 1}}', "each column"),
        (b'{"v": 1, "kind": "log", "name": "x", "value": ' + b"[" * 40 + b"]" * 40 + b"}", "deep"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deep"),
    ],
)
def test_garbage_lines_are_refused_with_a_reason(bad: bytes, why: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=why):
        check_record(bad)
    messages: list[str] = []
    found = read(
        write(tmp_path, line("log", "ok", 1), bad + b"\n", line("log", "ok", 2)), messages.append
    )
    assert found.metrics == {"ok": [1, 2]}  # the good lines around it are kept
    assert len(messages) == 1 and "line 2" in messages[0] and "ignored" in messages[0]


def test_many_bad_lines_are_counted_not_listed(tmp_path: Path) -> None:
    messages: list[str] = []
    read(write(tmp_path, *(["garbage\n"] * 50)), messages.append)
    assert len(messages) == metrics.MAX_WARNINGS + 1
    assert f"{50 - metrics.MAX_WARNINGS} more lines ignored" in messages[-1]


def test_a_huge_file_is_read_only_up_to_the_limit(tmp_path: Path) -> None:
    one = line("log", "loss", 0.5)
    path = write(tmp_path, one * 1000)
    messages: list[str] = []
    found = read(path, messages.append, limit=len(one) * 10 + 5)  # the cut line is no line
    assert found.metrics["loss"] == [0.5] * 10
    assert any("larger than" in m for m in messages)


def test_a_huge_line_is_refused(tmp_path: Path) -> None:
    huge = line("log", "x", "a" * (metrics.MAX_LINE_BYTES + 10))
    messages: list[str] = []
    found = read(write(tmp_path, huge, line("log", "y", 1)), messages.append)
    assert found.metrics == {"y": 1} and "bytes" in messages[0]


def test_too_many_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "MAX_NAMES", 3)
    lines = [line("log", f"m{i}", i) for i in range(5)] + [line("log", "m0", 9)]
    messages: list[str] = []
    found = read(write(tmp_path, *lines), messages.append)
    assert found.metrics == {"m0": [0, 9], "m1": 1, "m2": 2}  # a known name still counts
    assert len(messages) == 2


def test_non_finite_numbers_stay_json(tmp_path: Path) -> None:
    found = read(write(tmp_path, '{"v": 1, "kind": "log", "name": "x", "value": NaN}\n'))
    assert found.metrics == {"x": "nan"}
    json.dumps(found.metrics, allow_nan=False)


def test_a_symlink_or_a_fifo_in_its_place_is_never_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(line("log", "stolen", 1))
    link = tmp_path / "metrics.jsonl"
    link.symlink_to(secret)
    found = read(link)
    assert found.metrics == {} and "symlink" in found.warnings[0]
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    found = read(fifo)  # returns at once: opened without blocking
    assert found.metrics == {} and "not a file" in found.warnings[0]
