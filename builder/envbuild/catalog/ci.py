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

A green job that changed nothing (the engine asked only questions, every
build answered locally, every test result reused, every push found in the
registry) is remembered with everything it depended on
(:mod:`envbuild.catalog.ci_record`); the console script answers the same job
from that record while all of it still holds
(:func:`envbuild.cli.launcher.ci_recorded`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from envbuild.catalog.ci_report import (
    CATALOG_STAGES,
    ENV_STAGES,
    FAILED,
    PASSED,
    SKIPPED,
    CiReport,
    EnvReport,
    Relock,
    Stage,
)
from envbuild.errors import DefinitionError, EnvbuildError, UsageError
from envbuild.log import Log

if TYPE_CHECKING:
    from envbuild.build.builder import Resolved
    from envbuild.build.result import BuildResult
    from envbuild.build.travel import Remote
    from envbuild.definition.model import Environment
    from envbuild.engine.protocols import RunEngine
    from envbuild.settings import Settings

__all__ = [
    "CATALOG_STAGES",
    "ENV_STAGES",
    "FAILED",
    "PASSED",
    "SKIPPED",
    "CiReport",
    "EnvReport",
    "Relock",
    "Stage",
    "run_ci",
]


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
    from envbuild.catalog import ci_record
    from envbuild.catalog import publish as pub
    from envbuild.catalog.order import build_order, discover
    from envbuild.definition.model import load

    started, started_ns = time.monotonic(), time.time_ns()
    commit = ci_record.since_commit(catalog, since) if since is not None else None
    published = published if published is not None else pub.default_out(catalog)
    watched = _Watched(engine)
    engine = cast("RunEngine", watched)  # every stage asks the engine through it
    lines: list[str] = []
    shown = log

    def logged(line: str) -> None:  # every line is also the record's (see _remember)
        lines.append(line)
        shown(line)

    log = logged
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
    ident = ci_record.identity(
        catalog=catalog,
        published=published,
        registry=report.registry,
        since=since,
        push=push,
        relock=relock,
        settings=settings,
    )
    job = _Job(catalog, published, settings, remote, push, relock, commit, started_ns, ident)
    if watched.changed or not _remember(job, report, built, engine, lines) or watched.changed:
        ci_record.forget(settings.home, ident)
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
    tested = run_tests(
        engine, image=result.image, image_id=result.id, tests=tests, home=settings.home, log=log
    )
    entry.tests = tested
    bad = [r for r in tested.results if not r.passed]
    summary = f"{len(tests) - len(bad)}/{len(tests)} checks passed"
    if not bad:
        return PASSED, summary + (" (recorded)" if tested.reused else "")
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


class _Watched:
    """The engine as a job asks it, noting whether anything but a question was asked
    (a build, a pull, a push, a tag, a container): a job that changed nothing is
    remembered (:mod:`envbuild.catalog.ci_record`), one that did is not."""

    QUESTIONS = frozenset(
        {"inspect_image", "inspect_images", "list_images", "list_labelled", "list_owned"}
    )

    def __init__(self, engine: RunEngine) -> None:
        self.engine = engine
        self.changed = False

    def __getattr__(self, name: str) -> Any:
        if name not in self.QUESTIONS:
            self.changed = True
        return getattr(self.engine, name)


class _Job(NamedTuple):
    """What selected a job, as :func:`_remember` needs it."""

    catalog: Path
    published: Path
    settings: Settings
    remote: Remote | None
    push: bool
    relock: bool
    commit: str | None  # the commit --since named when the job started
    started_ns: int
    ident: str


def _remember(
    job: _Job,
    report: CiReport,
    built: dict[Path, tuple[Resolved, BuildResult]],
    engine: RunEngine,
    lines: list[str],
) -> bool:
    """Record a green job that changed nothing (:mod:`envbuild.catalog.ci_record`):
    every build answered by the engine, every test result reused, every push found
    in the registry already, no relock; whether it was recorded."""
    import os

    import envbuild.lock as locking
    from envbuild.cache import memo
    from envbuild.catalog import ci_record
    from envbuild.catalog import publish as pub
    from envbuild.catalog.test import record_path
    from envbuild.lock.model import conda_store

    settings, remote = job.settings, job.remote
    if not report.ok or job.relock or len(built) != len(report.envs):
        return False
    by_folder = {Path(entry.folder): entry for entry in report.envs}
    for entry in report.envs:
        tests, pushed = entry.stages["tests"], entry.stages["push"]
        if entry.tier != "local" or entry.relock is not None:
            return False
        if tests.status != SKIPPED and (
            entry.tests is None or entry.tests.to_json().get("reused") is not True
        ):
            return False
        if job.push and not (
            pushed.status == PASSED and pushed.message.endswith("(already in the registry)")
        ):
            return False
    if job.commit != (ci_record.since_commit(job.catalog, report.since) if report.since else None):
        return False  # --since moved while the job ran
    listings = pub.check_record(
        settings.home, job.catalog, job.published, settings.platform, conda_store(settings.home)
    )
    if listings is None:
        return False
    images: dict[str, str] = {}
    repo_digests: dict[str, list[str]] = {}
    heads: list[tuple[str, str, str]] = []
    depends: list[Path] = []
    for folder, (resolved, result) in built.items():
        env, entry = resolved.env, by_folder[folder]
        depends.append(memo.record_path(settings.home, env.path, settings.platform))
        if env.tests:
            depends.append(record_path(settings.home, result.id, env.tests))
        for tag in (resolved.hash_tag, resolved.version_tag):
            info = engine.inspect_image(tag)
            if info is None or info.id != result.id:
                return False  # moved while the job ran
            images[tag] = info.id
        if resolved.base_id is not None and env.base.image:
            images[env.base.image] = resolved.base_id
        locks = locking.read(env.path)
        if locks is not None and locks.base is not None:
            pin = locks.base
            ref = pin.from_ref if pin.kind == "digest" else pin.image
            try:
                if locking.check_base(pin, engine, env_path=env.path) is not None:
                    return False
            except EnvbuildError:
                return False
            info = engine.inspect_image(ref)
            if info is None:
                return False
            images[ref] = info.id
        if job.push:
            assert remote is not None
            repo_digests[resolved.hash_tag] = [remote.digest_ref(env.name, entry.digest)]
            heads.append((env.name, resolved.hash[:12], entry.digest))
            heads.append((env.name, str(env.version), entry.digest))
    wanted = {
        str(path): memo.file_digest(str(path)) if os.path.lexists(path) else None
        for path in depends
    }
    if any(wanted[str(path)] is None and os.path.lexists(path) for path in depends):
        return False
    records = memo.file_entries(wanted.items(), sources=())  # envbuild's own records
    sources = memo.file_entries((), sources=ci_record.SOURCES)
    if records is None or sources is None:
        return False
    return ci_record.remember(
        settings.home,
        job.ident,
        report=report.to_json(),
        log=lines,
        listings=listings,
        inputs=list({entry[0]: entry for entry in [*listings["files"], *sources]}.values()),
        records=records,
        engine=ci_record.Engine(images, repo_digests),
        registry=heads,
        since=job.commit,
        started_ns=job.started_ns,
    )
