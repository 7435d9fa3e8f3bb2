"""``envbuild test``: run an environment's ``[[tests]]`` inside its built image.

Each check runs in its own container (argv as a list, an init process, a
timeout after which the container is killed) and passes when it exits 0 and,
if it has ``expect``, a line of its standard output equals ``expect`` or
matches it as a regular expression (``re.fullmatch``). Results are recorded
by image ID and the checks' own digest, so an unchanged image with unchanged
checks is not tested again (``force=True`` retests).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from envbuild.definition.model import TestSpec
from envbuild.engine.protocols import ContainerRuntime, ContainerSpec
from envbuild.engine.runner import run_to_completion
from envbuild.identity import TEST_LABEL as TEST_LABEL  # re-exported
from envbuild.log import Log

OUTPUT_LIMIT = 1 << 20  # bytes of output kept per check


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one ``[[tests]]`` entry."""

    name: str
    run: tuple[str, ...]
    passed: bool
    exit_code: int | None
    seconds: float
    expect: str | None = None
    output_tail: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class TestReport:
    """All checks of one image."""

    image: str
    image_id: str
    results: tuple[CheckResult, ...]
    reused: bool = False  # recorded earlier for the same image and checks

    @property
    def passed(self) -> bool:
        """True when every check passed (and there was at least one)."""
        return bool(self.results) and all(r.passed for r in self.results)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready mapping of this report."""
        return {
            "image": self.image,
            "id": self.image_id,
            "passed": self.passed,
            "reused": self.reused,
            "results": [asdict(r) for r in self.results],
        }


class PatternTimeout(Exception):
    """Matching ``expect`` against the output took longer than the check's timeout."""


# Matches a regex against lines in a child interpreter, so that a pattern that
# backtracks catastrophically (``(a+)+$``) can be stopped: ``re`` cannot be.
_MATCHER = (
    "import json, re, sys\n"
    "data = json.load(sys.stdin)\n"
    "pattern = re.compile(data['pattern'])\n"
    "sys.stdout.write('1' if any(pattern.fullmatch(l) for l in data['lines']) else '0')\n"
)


def expectation_met(expect: str | None, stdout: str, *, timeout: float = 30.0) -> bool:
    """Whether a line of ``stdout`` equals ``expect`` or fully matches it as a regex.

    The regex runs in a separate interpreter stopped after ``timeout`` seconds
    (:class:`PatternTimeout`): a pattern written in ``env.toml`` never hangs
    the host.
    """
    if expect is None:
        return True
    lines = stdout.splitlines()
    if expect in lines:
        return True
    try:
        re.compile(expect)
    except (re.error, RecursionError, OverflowError):
        return False
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _MATCHER],
            input=json.dumps({"pattern": expect, "lines": lines}),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise PatternTimeout(f"matching {expect!r} took longer than {timeout:g}s") from None
    return done.stdout == "1"


def _checks_digest(tests: Sequence[TestSpec]) -> str:
    data = [asdict(t) for t in tests]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def record_path(home: Path, image_id: str, tests: Sequence[TestSpec]) -> Path:
    key = hashlib.sha256(f"{image_id}\0{_checks_digest(tests)}".encode()).hexdigest()
    return home / "test-results" / f"{key}.json"


def run_check(engine: ContainerRuntime, image: str, spec: TestSpec, index: int) -> CheckResult:
    """Run one check in a fresh container; the container is removed on every path."""
    name = spec.name or f"test {index + 1}"
    done = run_to_completion(
        engine,
        ContainerSpec(image=image, argv=spec.run, labels={TEST_LABEL: "1"}),
        timeout=spec.timeout,
        output_limit=OUTPUT_LIMIT,
    )
    tail = done.tail(15)
    code = done.exit_code

    def failed(reason: str) -> CheckResult:
        return CheckResult(name, spec.run, False, code, done.seconds, spec.expect, tail, reason)

    if done.timed_out:
        return failed(f"timed out after {spec.timeout}s")
    if done.missing is not None:
        return failed(f"{spec.run[0]} is not in the image")
    if code != 0:
        return failed(f"exited with {code}")
    try:
        met = expectation_met(spec.expect, done.text(), timeout=spec.timeout)
    except PatternTimeout as exc:
        return failed(f"{exc} (a regex that backtracks without end?)")
    if not met:
        return failed(f"no output line equals or matches {spec.expect!r}")
    return CheckResult(name, spec.run, True, code, done.seconds, spec.expect, tail)


def run_tests(
    engine: ContainerRuntime,
    *,
    image: str,
    image_id: str,
    tests: Sequence[TestSpec],
    home: Path,
    force: bool = False,
    log: Log = lambda line: None,
) -> TestReport:
    """Run every check of ``tests`` in ``image`` (or reuse the recorded results)."""
    record = record_path(home, image_id, tests)
    if not force and record.is_file():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            data = json.loads(record.read_text(encoding="utf-8"))
            recorded = tuple(
                CheckResult(**{**r, "run": tuple(r["run"]), "output_tail": tuple(r["output_tail"])})
                for r in data["results"]
            )
            return TestReport(image, image_id, recorded, reused=True)
    results: list[CheckResult] = []
    for index, spec in enumerate(tests):
        result = run_check(engine, image, spec, index)
        mark = "ok  " if result.passed else "FAIL"
        why = f": {result.reason}" if result.reason else ""
        log(f"  {mark} {result.name} ({result.seconds:.1f}s){why}")
        results.append(result)
    report = TestReport(image, image_id, tuple(results))
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps(report.to_json(), indent=2), encoding="utf-8")
    tmp.replace(record)
    return report
