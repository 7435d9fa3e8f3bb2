"""The report of ``envbuild ci`` (:mod:`envbuild.catalog.ci`), cheap to import.

Its stages and outcomes, and the three forms it is rendered in: Markdown (a
pull-request comment), JSON (``report.json``) and JUnit XML. A report is
rebuilt from its JSON (:meth:`CiReport.from_json`): the console script answers a
green no-op job from a record of it without running the stages
(:mod:`envbuild.catalog.ci_record`). Standard library only, and not
:mod:`dataclasses` (whose import alone costs a sixth of that answer); XML is
imported only to write JUnit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
# The stages of one environment, in the order they run (and the report's columns).
ENV_STAGES = ("validate", "version", "locks", "base", "build", "tests", "push")
CATALOG_STAGES = ("version", "publish")


class Check(Protocol):
    """What the report reads of one check's result (:class:`envbuild.catalog.test.CheckResult`)."""

    @property
    def passed(self) -> bool:
        """Whether the check passed."""


class Tests(Protocol):
    """What the report reads of an image's test results
    (:class:`envbuild.catalog.test.TestReport`, or :class:`RecordedTests`)."""

    @property
    def results(self) -> Sequence[Check]:
        """Each check's result."""

    def to_json(self) -> dict[str, object]:
        """The JSON the report embeds."""


class _RecordedCheck:
    def __init__(self, data: Mapping[str, Any]) -> None:
        self.passed = bool(data["passed"])


class RecordedTests:
    """Test results as a report's JSON holds them (:meth:`EnvReport.from_json`)."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = dict(data)
        self.results = [_RecordedCheck(r) for r in data["results"]]

    def to_json(self) -> dict[str, object]:
        """The JSON it was made from."""
        return dict(self.data)


class _Fields:
    """Value equality and a ``repr`` over ``__slots__``: what a dataclass gives."""

    __slots__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, name) == getattr(other, name) for name in self.__slots__
        )

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({shown})"


class Stage(_Fields):
    """One stage's outcome: ``passed``, ``failed`` or ``skipped``, with why."""

    __slots__ = ("message", "name", "seconds", "status")

    def __init__(self, name: str, status: str, seconds: float = 0.0, message: str = "") -> None:
        self.name = name
        self.status = status
        self.seconds = seconds
        self.message = message

    def to_json(self) -> dict[str, object]:
        """A JSON-ready mapping."""
        return {
            "name": self.name,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "message": self.message,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Stage:
        """The stage :meth:`to_json` gave ``data``."""
        return cls(
            str(data["name"]), str(data["status"]), float(data["seconds"]), str(data["message"])
        )


class EnvReport(_Fields):
    """Everything the job found about one environment."""

    __slots__ = (
        "digest",
        "folder",
        "hash",
        "image",
        "name",
        "relock",
        "stages",
        "tests",
        "tier",
        "version",
    )

    def __init__(
        self,
        folder: str,
        name: str,
        version: int | None = None,
        stages: dict[str, Stage] | None = None,
        tier: str = "",
        image: str = "",
        hash: str = "",
        digest: str = "",
        tests: Tests | None = None,
        relock: Relock | None = None,
    ) -> None:
        self.folder = folder
        self.name = name
        self.version = version
        self.stages: dict[str, Stage] = stages if stages is not None else {}
        self.tier = tier  # who answered the build: local, registry or built
        self.image = image
        self.hash = hash
        self.digest = digest  # the registry digest (pulled or pushed)
        self.tests = tests
        self.relock = relock  # the fix proposed for a drifted base (--relock)

    @property
    def ok(self) -> bool:
        """True when no stage failed."""
        return all(s.status != FAILED for s in self.stages.values())

    @property
    def seconds(self) -> float:
        """The time all of this environment's stages took."""
        return sum(s.seconds for s in self.stages.values())

    def failed_before(self, stage: str) -> list[str]:
        """The stages before ``stage`` that failed."""
        names = ENV_STAGES[: ENV_STAGES.index(stage)]
        return [n for n in names if n in self.stages and self.stages[n].status == FAILED]

    def to_json(self) -> dict[str, object]:
        """A JSON-ready mapping."""
        return {
            "folder": self.folder,
            "name": self.name,
            "version": self.version,
            "ok": self.ok,
            "tier": self.tier,
            "image": self.image,
            "hash": self.hash,
            "digest": self.digest,
            "seconds": round(self.seconds, 3),
            "stages": {n: s.to_json() for n, s in self.stages.items()},
            "tests": self.tests.to_json() if self.tests is not None else None,
            "relock": self.relock.to_json() if self.relock is not None else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EnvReport:
        """The environment's report :meth:`to_json` gave ``data``."""
        version = data["version"]
        tests, relock = data["tests"], data["relock"]
        return cls(
            folder=str(data["folder"]),
            name=str(data["name"]),
            version=int(version) if version is not None else None,
            stages={str(n): Stage.from_json(s) for n, s in data["stages"].items()},
            tier=str(data["tier"]),
            image=str(data["image"]),
            hash=str(data["hash"]),
            digest=str(data["digest"]),
            tests=RecordedTests(tests) if tests is not None else None,
            relock=Relock.from_json(relock) if relock is not None else None,
        )


class Relock(NamedTuple):
    """The fix ``--relock`` wrote to the working tree for a drifted base (not committed)."""

    files: tuple[str, ...]  # the paths written: the lock files, and env.toml when bumped
    version: tuple[int, int]  # the version before and after

    def to_json(self) -> dict[str, object]:
        """A JSON-ready mapping."""
        return {"files": list(self.files), "version": list(self.version)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Relock:
        """The proposal :meth:`to_json` gave ``data``."""
        old, new = data["version"]
        return cls(tuple(str(f) for f in data["files"]), (int(old), int(new)))

    def describe(self) -> str:
        """The lines the base stage and the summary show."""
        old, new = self.version
        bumped = f"; version {old} -> {new}" if new != old else ""
        return (
            "proposed fix written to the working tree for review (not committed)"
            + bumped
            + ":\n"
            + "\n".join(f"  {path}" for path in self.files)
        )


class CiReport(_Fields):
    """The job's report: catalog-wide stages and one :class:`EnvReport` per environment."""

    __slots__ = ("catalog", "envs", "push", "registry", "relock", "seconds", "since", "stages")

    def __init__(
        self,
        catalog: str,
        registry: str = "",
        since: str | None = None,
        push: bool = False,
        stages: dict[str, Stage] | None = None,
        envs: list[EnvReport] | None = None,
        seconds: float = 0.0,
        relock: bool = False,
    ) -> None:
        self.catalog = catalog
        self.registry = registry
        self.since = since
        self.push = push
        self.stages: dict[str, Stage] = stages if stages is not None else {}
        self.envs: list[EnvReport] = envs if envs is not None else []
        self.seconds = seconds
        self.relock = relock

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return all(s.status != FAILED for s in self.stages.values()) and all(
            e.ok for e in self.envs
        )

    def failures(self) -> list[tuple[str, Stage]]:
        """``(where, stage)`` for every failed stage: the catalog's, then each environment's."""
        out = [("catalog", s) for s in self.stages.values() if s.status == FAILED]
        for env in self.envs:
            out.extend((env.name, s) for s in env.stages.values() if s.status == FAILED)
        return out

    def to_json(self) -> dict[str, object]:
        """The ``report.json`` shape."""
        return {
            "catalog": self.catalog,
            "registry": self.registry,
            "since": self.since,
            "push": self.push,
            "relock": self.relock,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "stages": {n: s.to_json() for n, s in self.stages.items()},
            "environments": [e.to_json() for e in self.envs],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CiReport:
        """The report :meth:`to_json` gave ``data`` (``report.json``): it renders the same
        Markdown, JSON and JUnit XML."""
        since = data["since"]
        return cls(
            catalog=str(data["catalog"]),
            registry=str(data["registry"]),
            since=str(since) if since is not None else None,
            push=bool(data["push"]),
            stages={str(n): Stage.from_json(s) for n, s in data["stages"].items()},
            envs=[EnvReport.from_json(e) for e in data["environments"]],
            seconds=float(data["seconds"]),
            relock=bool(data["relock"]),
        )

    def markdown(self) -> str:
        """The summary for a pull-request comment: a table per environment, then the failures."""
        mark = {PASSED: "ok", FAILED: "**FAIL**", SKIPPED: "-"}
        verdict = "passed" if self.ok else f"failed ({len(self.failures())} failures)"
        where = f" against `{self.registry}`" if self.registry else " (no registry)"
        lines = [
            f"## envbuild ci: {verdict}",
            "",
            f"Catalog `{self.catalog}`{where}"
            + (f", version guard since `{self.since}`" if self.since else "")
            + f", {self.seconds:.1f}s.",
            "",
            "| Environment | Version | "
            + " | ".join(s.capitalize() for s in ENV_STAGES)
            + " | Tier | Digest | Time |",
            "|---|---|" + "---|" * len(ENV_STAGES) + "---|---|---:|",
        ]
        for env in self.envs:
            cells = []
            for name in ENV_STAGES:
                stage = env.stages.get(name)
                cell = mark[stage.status] if stage else ""
                if name == "tests" and env.tests is not None and env.tests.results:
                    good = sum(1 for r in env.tests.results if r.passed)
                    cell += f" {good}/{len(env.tests.results)}"
                cells.append(cell)
            digest = f"`{env.digest[:19]}`" if env.digest else ""
            lines.append(
                f"| `{env.name}` | {env.version if env.version is not None else ''} | "
                + " | ".join(cells)
                + f" | {env.tier} | {digest} | {env.seconds:.1f}s |"
            )
        lines.append("")
        lines.append(
            "Catalog: "
            + ", ".join(f"{name} {mark[s.status]}" for name, s in self.stages.items())
            + "."
        )
        proposals = [env for env in self.envs if env.relock is not None]
        if proposals:
            lines += [
                "",
                "### Proposed fixes (`--relock`: in the working tree, not committed)",
                "",
            ]
            for env in proposals:
                assert env.relock is not None
                old, new = env.relock.version
                lines.append(
                    f"- `{env.name}`: version {old} \u2192 {new}, relocked on the base at hand:"
                )
                lines.extend(f"  - `{path}`" for path in env.relock.files)
        failures = self.failures()
        if failures:
            lines += ["", "### Failures", ""]
            for where, stage in failures:
                lines.append(f"**{where}**, {stage.name}:")
                text = stage.message.strip() or "(no message)"
                fence = "`" * max([3, *(len(run) + 1 for run in re.findall("`+", text))])
                lines += ["", fence, text, fence, ""]
        return "\n".join(lines).rstrip("\n") + "\n"

    def junit(self) -> str:
        """JUnit XML: one testcase per environment per stage (and per catalog stage)."""
        import xml.etree.ElementTree as ET  # only when JUnit is written

        cases: list[tuple[str, Stage]] = [("catalog", s) for s in self.stages.values()]
        for env in self.envs:
            cases.extend((env.name, s) for s in env.stages.values())
        suite = ET.Element(
            "testsuite",
            name="envbuild ci",
            tests=str(len(cases)),
            failures=str(sum(1 for _, s in cases if s.status == FAILED)),
            errors="0",
            skipped=str(sum(1 for _, s in cases if s.status == SKIPPED)),
            time=f"{self.seconds:.3f}",
        )
        for where, stage in cases:
            case = ET.SubElement(
                suite, "testcase", classname=where, name=stage.name, time=f"{stage.seconds:.3f}"
            )
            if stage.status == FAILED:
                first = (stage.message.strip().splitlines() or ["failed"])[0]
                failure = ET.SubElement(case, "failure", message=first, type=stage.name)
                failure.text = stage.message
            elif stage.status == SKIPPED:
                ET.SubElement(case, "skipped", message=stage.message)
        root = ET.Element("testsuites", name="envbuild ci")
        root.append(suite)
        ET.indent(root)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"

    def write(self, folder: Path) -> list[Path]:
        """Write ``summary.md``, ``report.json`` and ``junit.xml`` into ``folder``."""
        import json

        folder.mkdir(parents=True, exist_ok=True)
        out = {
            "summary.md": self.markdown(),
            "report.json": json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n",
            "junit.xml": self.junit(),
        }
        written = []
        for name, text in out.items():
            path = folder / name
            path.write_text(text, encoding="utf-8")
            written.append(path)
        return written
