"""``envbuild ci``: the whole job an image registry's CI runs, composed from the other commands.

Every stage calls the library function of the command that owns its rule:

* ``validate``: :func:`envbuild.definition.model.load` of every definition;
* ``version``: the version guard of ``envbuild check``
  (:func:`envbuild.catalog.check.check_catalog`, against git ``since`` or the published index);
* ``locks``: ``envbuild lock --check`` (:func:`envbuild.lock.check`);
* ``base``: the build's base check (:func:`envbuild.lock.check_base`): has the base moved
  away from its pin;
* ``build``: ``envbuild build`` with the registry tier, parents first, past failures
  (:func:`envbuild.catalog.order.build_all`);
* ``tests``: ``envbuild test`` (:func:`envbuild.catalog.test.run_tests`);
* ``push``: ``envbuild push`` (:func:`envbuild.build.travel.push`, digests verified);
* ``publish``: ``envbuild publish --check`` (:func:`envbuild.catalog.publish.check`).

With ``relock``, a base that moved from its pin gets a proposed fix: the
environment is relocked on the base at hand and its version raised
(``envbuild lock ENV --bump``: :func:`envbuild.lock.lock`,
:func:`envbuild.definition.model.bump_version`), written to the working tree
for review and never committed; the base stage still fails (the fix is not in
the catalog until someone commits it), the proposal is built and tested like
any environment, never pushed, and the report lists the files it wrote.

A failure is recorded in its stage and the job goes on, so one report lists
every problem: :class:`CiReport` renders it as Markdown (a pull-request
comment), JSON and JUnit XML.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from envbuild.errors import DefinitionError, EnvbuildError, UsageError
from envbuild.log import Log

if TYPE_CHECKING:
    from envbuild.build.builder import Resolved
    from envbuild.build.result import BuildResult
    from envbuild.build.travel import Remote
    from envbuild.catalog.test import TestReport
    from envbuild.definition.model import Environment
    from envbuild.engine.protocols import RunEngine
    from envbuild.settings import Settings

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
# The stages of one environment, in the order they run (and the report's columns).
ENV_STAGES = ("validate", "version", "locks", "base", "build", "tests", "push")
CATALOG_STAGES = ("version", "publish")


@dataclass
class Stage:
    """One stage's outcome: ``passed``, ``failed`` or ``skipped``, with why."""

    name: str
    status: str
    seconds: float = 0.0
    message: str = ""

    def to_json(self) -> dict[str, object]:
        """A JSON-ready mapping."""
        return {
            "name": self.name,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "message": self.message,
        }


@dataclass
class EnvReport:
    """Everything the job found about one environment."""

    folder: str
    name: str
    version: int | None = None
    stages: dict[str, Stage] = field(default_factory=dict)
    tier: str = ""  # who answered the build: local, registry or built
    image: str = ""
    hash: str = ""
    digest: str = ""  # the registry digest (pulled or pushed)
    tests: TestReport | None = None
    relock: Relock | None = None  # the fix proposed for a drifted base (--relock)

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


@dataclass(frozen=True)
class Relock:
    """The fix ``--relock`` wrote to the working tree for a drifted base (not committed)."""

    files: tuple[str, ...]  # the paths written: the lock files, and env.toml when bumped
    version: tuple[int, int]  # the version before and after

    def to_json(self) -> dict[str, object]:
        """A JSON-ready mapping."""
        return {"files": list(self.files), "version": list(self.version)}

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


@dataclass
class CiReport:
    """The job's report: catalog-wide stages and one :class:`EnvReport` per environment."""

    catalog: str
    registry: str = ""
    since: str | None = None
    push: bool = False
    stages: dict[str, Stage] = field(default_factory=dict)
    envs: list[EnvReport] = field(default_factory=list)
    seconds: float = 0.0
    relock: bool = False

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


def _timed(name: str, work: Callable[[], tuple[str, str]]) -> Stage:
    """Run ``work`` (returning ``(status, message)``) as stage ``name``; an error fails it."""
    started = time.monotonic()
    try:
        status, message = work()
    except EnvbuildError as exc:
        status, message = FAILED, exc.render()
    return Stage(name, status, time.monotonic() - started, message)


def run_ci(
    catalog: Path,
    *,
    settings: Settings,
    engine: RunEngine,
    remote: Remote | None = None,
    since: str | None = None,
    published: Path | None = None,
    push: bool = False,
    relock: bool = False,
    log: Log = lambda line: None,
) -> CiReport:
    """Run every stage of the registry's CI job on ``catalog``; never stop at a failure.

    ``remote`` is the registry tier of the builds (and where ``push`` goes);
    ``since`` a git revision for the version guard (default: the published
    index); ``published`` the published folder (default: beside the catalog).
    ``relock`` proposes the fix of each drifted base in the working tree (see
    the module's docstring).
    """
    if push and remote is None:
        raise UsageError(
            "--push needs a registry, and none is named",
            hint="name it with --registry HOST[:PORT][/NAMESPACE] or the registry setting",
        )
    from envbuild.catalog import publish as pub
    from envbuild.catalog.order import build_order, discover
    from envbuild.definition.model import load

    started = time.monotonic()
    published = published if published is not None else pub.default_out(catalog)
    report = CiReport(
        str(catalog), remote.registry.prefix if remote is not None else "", since, push
    )
    report.relock = relock
    loaded: dict[Path, Environment | DefinitionError] = {}
    folders = build_order(discover(catalog), loaded)
    envs: dict[Path, EnvReport] = {}
    for folder in folders:
        env_or_error = loaded[folder]
        if isinstance(env_or_error, DefinitionError):
            entry = EnvReport(str(folder), folder.name)
            entry.stages["validate"] = Stage("validate", FAILED, 0.0, env_or_error.render())
        else:
            entry = EnvReport(str(folder), env_or_error.name, env_or_error.version)
            entry.stages["validate"] = Stage("validate", PASSED)
        envs[folder] = entry
        report.envs.append(entry)
    log(f"envbuild ci: {len(folders)} environments in {catalog}")
    good = {f: e for f, e in loaded.items() if not isinstance(e, DefinitionError)}
    _version_guard(report, catalog, since=since, published=published, envs=envs, loaded=good)
    for folder, env in list(good.items()):
        entry = envs[folder]
        entry.stages["locks"] = _timed("locks", partial(_locks, env, settings))
        entry.stages["base"] = _timed(
            "base", partial(_base, entry, env, engine, settings, relock, log)
        )
        if entry.relock is not None:  # build and test the proposal as it was written
            good[folder] = loaded[folder] = load(folder)
    built = _build(good, envs, settings=settings, engine=engine, remote=remote, log=log)
    for folder, (resolved, result) in built.items():
        entry = envs[folder]
        entry.stages["tests"] = _timed(
            "tests", partial(_tests, entry, resolved, result, engine, settings, log)
        )
    for folder, entry in envs.items():
        if "build" not in entry.stages:
            entry.stages["build"] = Stage("build", SKIPPED, 0.0, "the definition does not load")
        if "tests" not in entry.stages:
            entry.stages["tests"] = Stage("tests", SKIPPED, 0.0, "no image to test")
        if not push:
            entry.stages["push"] = Stage("push", SKIPPED, 0.0, "not asked for (--push)")
            continue
        failed = entry.failed_before("push")
        if entry.relock is not None:
            entry.stages["push"] = Stage(
                "push", SKIPPED, 0.0, "not pushed: the relock is a proposal to review"
            )
            continue
        if failed or folder not in built:
            why = ", ".join(failed) or "build"
            entry.stages["push"] = Stage("push", SKIPPED, 0.0, f"not pushed: {why} failed")
            continue
        assert remote is not None
        resolved = built[folder][0]
        entry.stages["push"] = _timed("push", partial(_push, entry, resolved, remote, engine, log))
    publish_started = time.monotonic()
    from envbuild.lock.model import conda_store

    try:
        drift = pub.check(
            catalog,
            published,
            platform=settings.platform,
            conda_store=conda_store(settings.home),
            home=settings.home,
        )
        status = FAILED if drift else PASSED
        message = (
            f"{published} differs from a fresh render ({len(drift)} files):\n"
            + "\n".join(d.render() for d in drift)
            + f"\nrun `envbuild publish --catalog {catalog}` and commit {published}/"
            if drift
            else f"{published} is up to date"
        )
    except EnvbuildError as exc:
        status, message = FAILED, exc.render()
    report.stages["publish"] = Stage("publish", status, time.monotonic() - publish_started, message)
    report.seconds = time.monotonic() - started
    return report


def _version_guard(
    report: CiReport,
    catalog: Path,
    *,
    since: str | None,
    published: Path,
    envs: dict[Path, EnvReport],
    loaded: dict[Path, Environment],
) -> None:
    """``envbuild check``: each environment's verdict, and the baseline as a catalog stage.

    ``loaded``: the definitions the validate stage loaded (not loaded again).
    """
    from envbuild.catalog.check import check_catalog

    started = time.monotonic()
    try:
        baseline, findings = check_catalog(catalog, published=published, since=since, loaded=loaded)
    except EnvbuildError as exc:
        report.stages["version"] = Stage(
            "version", FAILED, time.monotonic() - started, exc.render()
        )
        for each in envs.values():
            each.stages["version"] = Stage("version", SKIPPED, 0.0, "the version guard failed")
        return
    seconds = time.monotonic() - started
    report.stages["version"] = Stage(
        "version", PASSED, seconds, "\n".join((f"against {baseline.description}", *baseline.notes))
    )
    by_name = {e.name: e for e in envs.values()}
    for finding in findings:
        entry = by_name.get(finding.name)
        if entry is None:  # deleted: information only
            continue
        message = finding.message + (f"\nhint: {finding.hint}" if finding.hint else "")
        status = FAILED if finding.failed else PASSED
        entry.stages["version"] = Stage("version", status, 0.0, message)


def _locks(env: Environment, settings: Settings) -> tuple[str, str]:
    """``envbuild lock --check``."""
    import envbuild.lock as locking

    reasons = locking.check(env, settings.platform)
    if not reasons:
        return PASSED, "locks are current"
    return FAILED, (
        f"{env.path}: locks are stale:\n"
        + "\n".join(f"  - {r}" for r in reasons)
        + f"\nhint: run `envbuild lock {env.path}` and commit the lock files"
    )


def _base(
    entry: EnvReport,
    env: Environment,
    engine: RunEngine,
    settings: Settings,
    relock: bool,
    log: Log,
) -> tuple[str, str]:
    """The build's base check: the base the engine (or the pin's registry) gives is the pin.

    With ``relock``, a drifted base is relocked and the version raised in the working
    tree (``envbuild lock ENV --bump``), recorded in ``entry.relock``; the stage fails.
    """
    import envbuild.lock as locking

    locks = locking.read(env.path)
    if locks is None or locks.base is None:
        return SKIPPED, "the base is not locked"
    try:
        locking.check_base(locks.base, engine, env_path=env.path, log=log)
    except EnvbuildError as exc:
        if not relock:
            raise
        drift = locking.check_base(locks.base, engine, env_path=env.path, allow_drift=True)
        if drift is None:  # pragma: no cover - the first check just said it moved
            raise
        message = exc.render()
        try:
            entry.relock = _relock(env, settings, engine, log)
        except EnvbuildError as failed:
            return FAILED, f"{message}\n--relock could not propose a fix: {failed.render()}"
        return FAILED, f"{drift.reason}\n{entry.relock.describe()}"
    return PASSED, f"{locks.base.image} is the pinned {locks.base.id}"


def _relock(env: Environment, settings: Settings, engine: RunEngine, log: Log) -> Relock:
    """``envbuild lock ENV --bump``: the locks made again on the engine's base, the version
    raised when a lock file changed; what was written."""
    import envbuild.lock as locking
    from envbuild.definition.model import bump_version

    log(f"envbuild ci: relocking {env.path} on the base at hand (--relock)")
    result = locking.lock(env, settings=settings, engine=engine, log=log)
    files = [str(env.path / name) for name in result.written]
    version = env.version
    if result.written:
        version = bump_version(env)
        files.append(str(env.definition_file))
    return Relock(tuple(files), (env.version, version))


def _build(
    good: dict[Path, Environment],
    envs: dict[Path, EnvReport],
    *,
    settings: Settings,
    engine: RunEngine,
    remote: Remote | None,
    log: Log,
) -> dict[Path, tuple[Resolved, BuildResult]]:
    """``envbuild build`` of every loaded environment, parents first, past failures."""
    from envbuild.build.builder import build, resolve
    from envbuild.catalog.order import build_all

    built: dict[Path, tuple[Resolved, BuildResult]] = {}
    by_path = {env.path: folder for folder, env in good.items()}

    def build_one(env: Environment) -> BuildResult:
        resolved = resolve(env, settings=settings, engine=engine)
        result = build(  # a drifted base is never built on here: CI publishes
            resolved,
            settings=settings,
            engine=engine,
            log=log,
            warn=log,
            remote=remote,
            base_drift="fail",
        )
        built[by_path[env.path]] = (resolved, result)
        return result

    for outcome in build_all(list(good), build_one, log=log, loaded=good):
        entry = envs[Path(outcome.env)]
        if outcome.ok:
            _, result = built[Path(outcome.env)]
            entry.tier, entry.image, entry.hash = result.answered_by, result.image, result.hash
            entry.digest = result.digest
            entry.stages["build"] = Stage(
                "build", PASSED, outcome.seconds, f"{result.image} ({result.answered_by})"
            )
        else:
            entry.stages["build"] = Stage("build", FAILED, outcome.seconds, outcome.error or "")
    return built


def _tests(
    entry: EnvReport,
    resolved: Resolved,
    result: BuildResult,
    engine: RunEngine,
    settings: Settings,
    log: Log,
) -> tuple[str, str]:
    """``envbuild test``: the environment's ``[[tests]]`` in its image."""
    from envbuild.catalog.test import run_tests

    tests = resolved.env.tests
    if not tests:
        return SKIPPED, "no [[tests]]"
    log(f"envbuild ci: testing {result.image} ({len(tests)} checks)")
    entry.tests = run_tests(
        engine, image=result.image, image_id=result.id, tests=tests, home=settings.home, log=log
    )
    bad = [r for r in entry.tests.results if not r.passed]
    summary = f"{len(tests) - len(bad)}/{len(tests)} checks passed"
    if not bad:
        return PASSED, summary + (" (recorded)" if entry.tests.reused else "")
    details = []
    for r in bad:
        details.append(f"{r.name}: {r.reason}")
        details.extend(f"    {line}" for line in r.output_tail[-5:])
    return FAILED, summary + ":\n" + "\n".join(details)


def _push(
    entry: EnvReport, resolved: Resolved, remote: Remote, engine: RunEngine, log: Log
) -> tuple[str, str]:
    """``envbuild push``: both tags, the registry's digest verified."""
    from envbuild.build.travel import push

    pushed = push(resolved, remote=remote, engine=engine, log=log)
    entry.digest = pushed.digest
    what = "pushed" if pushed.pushed else "already in the registry"
    return PASSED, f"{pushed.refs[0]}@{pushed.digest} ({what})"
