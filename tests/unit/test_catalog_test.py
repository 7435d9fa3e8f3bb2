"""``envbuild test`` without an engine: expect matching, reports, and the recorded results.

The containers a check runs in are the integration tests' business
(tests/integration/test_catalog_images.py); here ``run_check`` is replaced by a
recorder, so what is tested is the logic around it: which checks run, which
results are reused, and what is recorded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from envbuild.catalog import test as testing
from envbuild.catalog.test import CheckResult, expectation_met, run_tests
from envbuild.definition import model

# Under other names: pytest would try to collect a `Test*` class named here.
Report = testing.TestReport
Spec = model.TestSpec

# --- expect -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expect", "stdout"),
    [
        (None, ""),  # no expect: the exit code alone decides
        (None, "anything\n"),
        ("1.6.0", "1.6.0\n"),
        ("1.6.0", "loading\n1.6.0\ndone\n"),  # any line
        ("1.6.0", "1.6.0"),  # no final newline
        (r"1\.6\.\d+", "1.6.2\n"),  # a regular expression, matched against a whole line
        ("2.*", "2.1.0+cpu\n"),
        ("a+b", "a+b\n"),  # equal as text even where the regex would not match
        ("[unclosed", "[unclosed\n"),  # not a valid regex: equality still counts
        ("10.2", "10.2\r\n"),  # splitlines: CRLF output from a Windows-minded tool
    ],
)
def test_expectation_met(expect: str | None, stdout: str) -> None:
    assert expectation_met(expect, stdout)


@pytest.mark.parametrize(
    ("expect", "stdout"),
    [
        ("1.6.0", ""),
        ("1.6.0", "torch 1.6.0\n"),  # a line must equal or fully match, not contain
        ("1.6.0", "1.6.0.post1\n"),
        ("1.6", "1.6.0\n"),
        (r"1\.6", "1.6.0\n"),  # fullmatch, not match
        ("[unclosed", "[unclosed]\n"),  # an invalid regex matches nothing but itself
        ("1.6.0", "1.6.0 \n"),  # trailing space is part of the line
    ],
)
def test_expectation_not_met(expect: str, stdout: str) -> None:
    assert not expectation_met(expect, stdout)


def test_a_backtracking_expect_is_stopped_at_the_timeout() -> None:
    """``(a+)+$`` against 40 a's and a b takes hours in ``re``: it is stopped."""
    started = time.monotonic()
    with pytest.raises(testing.PatternTimeout, match="longer than 1s"):
        expectation_met("(a+)+$", "a" * 40 + "b\n", timeout=1)
    assert time.monotonic() - started < 10


# --- reports -------------------------------------------------------------------------


def _result(name: str, passed: bool = True, **kw: Any) -> CheckResult:
    return CheckResult(name, ("python", "-c", "pass"), passed, 0 if passed else 1, 0.5, **kw)


def test_a_report_passes_when_every_check_passed() -> None:
    assert Report("img", "sha256:1", (_result("a"), _result("b"))).passed
    assert not Report("img", "sha256:1", (_result("a"), _result("b", False))).passed


def test_a_report_without_checks_does_not_pass() -> None:
    assert not Report("img", "sha256:1", ()).passed


def test_report_json() -> None:
    report = Report(
        "envbuild/x:abc",
        "sha256:1",
        (_result("a", expect="1.0", output_tail=("1.0",)), _result("b", False, reason="exited")),
    )
    data = report.to_json()
    assert data["image"] == "envbuild/x:abc"
    assert data["id"] == "sha256:1"
    assert data["passed"] is False
    assert data["reused"] is False
    results = data["results"]
    assert isinstance(results, list)
    assert [r["name"] for r in results] == ["a", "b"]
    assert results[0]["expect"] == "1.0"
    assert results[1]["reason"] == "exited"
    json.dumps(data)  # JSON-ready as it is


# --- which checks run, and the recorded results -------------------------------------


class Recorder:
    """Stands in for ``run_check``: records the checks asked for, answers from a table."""

    def __init__(self, failing: frozenset[int] = frozenset()) -> None:
        self.calls: list[tuple[str, Spec, int]] = []
        self.failing = failing

    def __call__(self, engine: object, image: str, spec: Spec, index: int) -> CheckResult:
        self.calls.append((image, spec, index))
        name = spec.name or f"test {index + 1}"
        if index in self.failing:
            return CheckResult(
                name, spec.run, False, 1, 0.1, spec.expect, ("boom",), "exited with 1"
            )
        return CheckResult(name, spec.run, True, 0, 0.1, spec.expect, ("ok",))


TESTS = (
    Spec(run=("python", "-c", "import six; print(six.__version__)"), expect="1.16.0"),
    Spec(run=("python", "-c", "pass"), name="starts"),
)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(testing, "run_check", rec)
    return rec


def _run(home: Path, *, image_id: str = "sha256:aaa", tests: tuple[Spec, ...] = TESTS,
         force: bool = False, log: list[str] | None = None) -> Report:  # fmt: skip
    lines = log if log is not None else []
    return run_tests(
        object(),  # type: ignore[arg-type]  # never used: run_check is replaced
        image="envbuild/x:abc",
        image_id=image_id,
        tests=tests,
        home=home,
        force=force,
        log=lines.append,
    )


def test_every_check_runs_in_order_and_is_logged(tmp_path: Path, recorder: Recorder) -> None:
    log: list[str] = []
    report = _run(tmp_path, log=log)
    assert [(image, index) for image, _, index in recorder.calls] == [
        ("envbuild/x:abc", 0),
        ("envbuild/x:abc", 1),
    ]
    assert [spec for _, spec, _ in recorder.calls] == list(TESTS)
    assert report.passed and not report.reused
    assert [r.name for r in report.results] == ["test 1", "starts"]
    assert log == ["  ok   test 1 (0.1s)", "  ok   starts (0.1s)"]


def test_a_failing_check_is_logged_with_its_reason(tmp_path: Path, recorder: Recorder) -> None:
    recorder.failing = frozenset({1})
    log: list[str] = []
    report = _run(tmp_path, log=log)
    assert not report.passed
    assert log[1] == "  FAIL starts (0.1s): exited with 1"


def test_results_are_recorded_and_reused(tmp_path: Path, recorder: Recorder) -> None:
    first = _run(tmp_path)
    log: list[str] = []
    again = _run(tmp_path, log=log)
    assert len(recorder.calls) == 2  # the second call ran nothing
    assert again.reused
    assert again.results == first.results  # tuples restored from JSON, equal field by field
    assert log == []  # the CLI says "(recorded)" itself


def test_a_failed_run_is_recorded_too(tmp_path: Path, recorder: Recorder) -> None:
    recorder.failing = frozenset({0})
    _run(tmp_path)
    again = _run(tmp_path)
    assert again.reused and not again.passed
    assert again.results[0].reason == "exited with 1"


def test_force_runs_again(tmp_path: Path, recorder: Recorder) -> None:
    _run(tmp_path)
    again = _run(tmp_path, force=True)
    assert len(recorder.calls) == 4
    assert not again.reused


@pytest.mark.parametrize(
    "change",
    [
        {"image_id": "sha256:bbb"},  # another image
        {"tests": (*TESTS, Spec(run=("true",)))},  # a check added
        {"tests": (Spec(run=TESTS[0].run, expect="1.17.0"), TESTS[1])},  # an expect changed
        {"tests": (TESTS[0], Spec(run=TESTS[1].run, name="starts", timeout=5))},  # a timeout
        {"tests": (TESTS[1], TESTS[0])},  # the order
    ],
)
def test_another_image_or_other_checks_run_again(
    tmp_path: Path, recorder: Recorder, change: dict[str, Any]
) -> None:
    _run(tmp_path)
    again = _run(tmp_path, **change)
    assert not again.reused
    assert len(recorder.calls) == 2 + len(change.get("tests", TESTS))


def test_records_live_under_home(tmp_path: Path, recorder: Recorder) -> None:
    _run(tmp_path / "home")
    records = list((tmp_path / "home" / "test-results").glob("*.json"))
    assert len(records) == 1
    assert not list((tmp_path / "home" / "test-results").glob("*.tmp"))  # written atomically
    data = json.loads(records[0].read_text(encoding="utf-8"))
    assert data["id"] == "sha256:aaa" and data["passed"] is True


@pytest.mark.parametrize(
    "content",
    ["", "{not json", '{"results": [{"name": "x"}]}', '{"results": 5}', "[]"],
)
def test_an_unreadable_record_means_running_again(
    tmp_path: Path, recorder: Recorder, content: str
) -> None:
    _run(tmp_path)
    (record,) = (tmp_path / "test-results").glob("*.json")
    record.write_text(content, encoding="utf-8")
    again = _run(tmp_path)
    assert not again.reused
    assert len(recorder.calls) == 4
    # ... and the record is whole again.
    assert json.loads(record.read_text(encoding="utf-8"))["passed"] is True
