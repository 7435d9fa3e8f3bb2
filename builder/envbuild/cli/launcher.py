"""The ``envbuild`` console script, with a fast path for cached builds.

``envbuild build ENV`` on an image that already exists is the command a job
runner calls before every run, and its whole cost is interpreter start plus
imports: click alone costs about as much as the single engine call the answer
needs. So a plain ``build ENV [--registry R] [--json] [-q]`` first tries to
answer from the cache without importing click, then (with a registry, named
or set) from the registry tier as the full path would (pull by digest, hash
label verified); ``build --all DIR [--json] [-q]`` (a registry's CI on an
unchanged catalog) likewise when every environment is a hit; anything else
(another command, another option, a miss, any error) goes to the full command
line in :mod:`envbuild.cli.main`, which does the work and reports errors as
usual.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the fast paths import lazily
    from envbuild.build.result import BuildResult
    from envbuild.cache.memo import Memo
    from envbuild.catalog.ci_report import CiReport
    from envbuild.engine.docker import DockerEngine
    from envbuild.engine.records import ImageInfo
    from envbuild.settings import Settings

_FLAGS = {"--json": "json", "-q": "quiet", "--quiet": "quiet"}


def _parse_plain_build(argv: Sequence[str]) -> tuple[str, set[str]] | None:
    """``(ENV, flags)`` for ``build ENV [--json] [-q]``, else ``None``."""
    if len(argv) < 2 or argv[0] != "build":
        return None
    env: str | None = None
    flags: set[str] = set()
    for arg in argv[1:]:
        if arg in _FLAGS:
            flags.add(_FLAGS[arg])
        elif arg.startswith("-") or env is not None:
            return None
        else:
            env = arg
    return (env, flags) if env else None


def _take_registry(argv: Sequence[str]) -> tuple[list[str], str | None] | None:
    """``argv`` without ``--registry R``, and ``R`` (``None`` when not given); ``None``
    for a form the fast paths leave to the full command line (``--registry=R``, no R)."""
    rest = list(argv)
    if any(arg.startswith("--registry=") for arg in rest):
        return None
    if "--registry" not in rest:
        return rest, None
    at = rest.index("--registry")
    if at + 1 >= len(rest) or rest[at + 1].startswith("-"):
        return None
    registry = rest[at + 1]
    del rest[at : at + 2]
    return rest, registry


def _recall(env: str, settings: Settings, engine: DockerEngine) -> Memo | None:
    """What the memo knows of ``env``: the hash an earlier render found, if still true.

    The base's image ID (part of an unlocked environment's hash) is asked of
    ``engine``; the fast paths below share this, ``build`` uses the same
    :func:`envbuild.cache.memo.recall`, and a run's plan the same
    :func:`envbuild.cache.memo.recall_with`.
    """
    from envbuild.cache import memo

    return memo.recall_with(engine, settings.home, memo.env_folder(env), settings.platform)


def cached_build(argv: Sequence[str]) -> int | None:
    """Answer a plain ``build`` from the cache; ``None`` means "use the full CLI".

    Only the memo (:mod:`envbuild.cache.memo`: the files an earlier validated
    render read, with their digests, and the hash it found), the settings and
    the cache lookup (:mod:`envbuild.cache.lookup`, the one ``build`` uses) are
    used: one engine request, two for an unlocked base image (whose identity
    is part of the hash); neither the definition model nor rendering is
    imported. A memo miss, an image that is not there, or anything odd goes
    to the full command line, which does the whole work.
    """
    taken = _take_registry(argv)
    parsed = _parse_plain_build(taken[0]) if taken is not None else None
    if taken is None or parsed is None:
        return None
    env, flags = parsed
    from envbuild.errors import RegistryError  # light: the settings import it anyway

    try:
        import time

        started = time.monotonic()
        from envbuild.engine.docker import DockerEngine
        from envbuild.settings import load_settings

        settings = load_settings()
        engine = DockerEngine(settings.docker)
        found = _recall(env, settings, engine)
        if found is None:
            return None
        from envbuild.build.result import BuildResult, report
        from envbuild.cache.lookup import lookup

        hit = lookup(
            engine,
            prefix=settings.prefix,
            name=found.name,
            version=found.version,
            digest=found.hash,
        )
        if hit is not None:
            result = BuildResult(
                hit.image, found.hash, True, hit.id, time.monotonic() - started, hit.tags
            )
        else:
            fetched = _from_registry(
                found, taken[1], settings, engine, started, quiet="quiet" in flags
            )
            if fetched is None:
                return None
            result = fetched
    except (RegistryError, KeyboardInterrupt) as exc:
        from envbuild.cli.exits import report as report_error

        return report_error(exc)
    except Exception:  # the full CLI redoes this and reports the error properly
        return None
    report(result, as_json="json" in flags, quiet="quiet" in flags)
    return 0


def _parse_catalog_build(argv: Sequence[str]) -> tuple[str, set[str]] | None:
    """``(DIR, flags)`` for ``build --all DIR [--json] [-q]`` (in any order), else ``None``."""
    if len(argv) < 3 or argv[0] != "build":
        return None
    rest = list(argv[1:])
    if rest.count("--all") != 1:
        return None
    at = rest.index("--all")
    if at + 1 >= len(rest) or rest[at + 1].startswith("-"):
        return None
    catalog = rest[at + 1]
    del rest[at : at + 2]
    flags: set[str] = set()
    for arg in rest:
        if arg not in _FLAGS:
            return None  # an ENV beside --all, another option: the full CLI
        flags.add(_FLAGS[arg])
    return catalog, flags


class _Answered:
    """An image store whose inspects were answered in one batch beforehand (tags go
    to ``engine``): what lets :func:`envbuild.cache.lookup.lookup` itself judge
    every environment of a catalog from one round of requests."""

    def __init__(self, engine: DockerEngine, answers: dict[str, ImageInfo | None]) -> None:
        self.engine = engine
        self.answers = answers

    def inspect_image(self, ref: str) -> ImageInfo | None:
        return self.answers[ref]

    def tag(self, image_id: str, ref: str) -> None:
        self.engine.tag(image_id, ref)


def cached_catalog(argv: Sequence[str]) -> int | None:
    """Answer ``build --all DIR`` from the cache when every environment is a hit;
    ``None`` means "use the full CLI" (any miss, any error, any other option).

    What ``build --all`` does on an all-hit catalog, without click or the
    definition model: :func:`~envbuild.catalog.results.discover`, the memo of
    each folder (:func:`_recall`, as a single ``build`` on the fast path), the
    build order from the parents each memo names
    (:func:`~envbuild.catalog.results.parents_first`), the hash tags inspected
    in one batch, :func:`~envbuild.cache.lookup.lookup` on those answers, and
    the same report (:func:`~envbuild.catalog.results.print_results`).
    """
    parsed = _parse_catalog_build(argv)
    if parsed is None:
        return None
    catalog, flags = parsed
    try:
        import time
        from pathlib import Path

        from envbuild.catalog.results import CatalogResult, discover, parents_first
        from envbuild.engine.docker import DockerEngine
        from envbuild.identity import hash_tag
        from envbuild.settings import load_settings

        settings = load_settings()
        if settings.registry:
            return None  # the registry tier and its checks: the full CLI
        engine = DockerEngine(settings.docker)
        folders = discover(Path(catalog))
        found: dict[Path, Memo] = {}
        seconds: dict[Path, float] = {}
        for folder in folders:
            started = time.monotonic()
            memo = _recall(str(folder), settings, engine)
            if memo is None:
                return None
            found[folder] = memo
            seconds[folder] = time.monotonic() - started
        order = parents_first(folders, lambda folder: [Path(p) for p in found[folder].parents])
        started = time.monotonic()
        tags = [hash_tag(settings.prefix, found[f].name, found[f].hash) for f in order]
        store = _Answered(engine, dict(zip(tags, engine.inspect_images(tags), strict=True)))
        shared = (time.monotonic() - started) / max(len(order), 1)
        from envbuild.cache.lookup import lookup

        results = []
        for folder in order:
            memo = found[folder]
            started = time.monotonic()
            hit = lookup(
                store,
                prefix=settings.prefix,
                name=memo.name,
                version=memo.version,
                digest=memo.hash,
            )
            if hit is None:
                return None
            took = seconds[folder] + shared + time.monotonic() - started
            results.append(
                CatalogResult(str(folder), True, True, hit.image, memo.hash, took, tier="local")
            )
    except Exception:  # the full CLI redoes this and reports the error properly
        return None
    from envbuild.catalog.results import print_results, progress_line

    for index, folder in enumerate(order, 1):
        sys.stderr.write(progress_line(index, len(order), folder) + "\n")
    print_results(results, as_json="json" in flags)
    return 0


def _from_registry(
    found: Memo,
    registry: str | None,
    settings: Settings,
    engine: DockerEngine,
    started: float,
    *,
    quiet: bool,
) -> BuildResult | None:
    """The registry tier of ``build`` for an image the memo names and the engine lacks:
    :func:`envbuild.build.travel.fetch_image`, as the full path calls it, under the same
    per-hash build lock. ``None`` leaves it to the full command line: no registry, a
    private CA, a build of this hash in progress, or a registry without the image (which
    the full path then builds)."""
    registry = registry or settings.registry
    if not registry or settings.registry_ca:
        return None
    import fcntl

    from envbuild import identity
    from envbuild.build import travel
    from envbuild.engine.registry import registry_from

    remote = travel.Remote.open(registry_from(registry))
    settings.locks_dir.mkdir(parents=True, exist_ok=True)
    with (settings.locks_dir / f"{found.hash}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another envbuild builds it: the full path waits for it
            return None
        return travel.fetch_image(  # its RegistryError is the full path's: reported as is
            remote,
            engine,
            name=found.name,
            digest_hex=found.hash,
            tags=(
                identity.hash_tag(settings.prefix, found.name, found.hash),
                identity.version_tag(settings.prefix, found.name, found.version),
            ),
            log=(lambda line: None) if quiet else (lambda line: print(line, file=sys.stderr)),
            started=started,
        )


def _parse_plain_push(argv: Sequence[str]) -> tuple[str, str | None, set[str]] | None:
    """``(ENV, registry, flags)`` for ``push ENV [--registry R] [--json] [-q]``, else ``None``."""
    if len(argv) < 2 or argv[0] != "push":
        return None
    taken = _take_registry(argv[1:])
    if taken is None:
        return None
    rest, registry = taken
    parsed = _parse_plain_build(["build", *rest])
    return (parsed[0], registry, parsed[1]) if parsed else None


def pushed_already(argv: Sequence[str]) -> int | None:
    """Answer a plain ``push`` of an image the memo names and the engine holds; ``None``
    means "use the full CLI" (which reports what this path does not handle).

    The main path's own steps on the hash the memo names, without click or the
    definition model: :func:`envbuild.build.travel.already_pushed` (one
    inspect, two manifest HEADs: a re-push costs what the registry needs to say
    so), else :func:`envbuild.build.travel.push_tags`. An image built on a
    drifted base, a private CA or anything odd goes to the full path; a
    registry's refusal is reported as the full path reports it.
    """
    parsed = _parse_plain_push(argv)
    if parsed is None:
        return None
    env, registry, flags = parsed
    from envbuild.errors import RegistryError  # light: the settings import it anyway

    try:
        import time

        from envbuild.engine.docker import DockerEngine
        from envbuild.settings import load_settings

        settings = load_settings()
        registry = registry or settings.registry
        if not registry or settings.registry_ca:
            return None
        engine = DockerEngine(settings.docker)
        found = _recall(env, settings, engine)
        if found is None:
            return None
        from envbuild import identity
        from envbuild.build import travel
        from envbuild.engine.registry import registry_from

        remote = travel.Remote.open(registry_from(registry))
        started = time.monotonic()  # as the full path counts: the check, not the start-up
        info, done = travel.already_pushed(
            remote,
            engine,
            prefix=settings.prefix,
            name=found.name,
            version=found.version,
            digest=found.hash,
            started=started,
        )
        if info is None or identity.is_drifted(info):
            return None
        if done is None:
            quiet = "quiet" in flags
            done = travel.push_tags(  # its RegistryError is the full path's: reported as is
                remote,
                engine,
                info,
                name=found.name,
                version=found.version,
                digest_hex=found.hash,
                local_tag=identity.hash_tag(settings.prefix, found.name, found.hash),
                log=(lambda line: None) if quiet else (lambda line: print(line, file=sys.stderr)),
                started=started,
            )
    except (RegistryError, KeyboardInterrupt) as exc:
        from envbuild.cli.exits import report as report_error

        return report_error(exc)
    except Exception:  # the full CLI redoes this and reports the error properly
        return None
    travel.report_push(done, as_json="json" in flags)
    return 0


def exit_now(code: int) -> None:
    """End the process with ``code`` at once, without the interpreter's teardown, when
    nothing is left for the teardown to do; otherwise return (the caller exits as usual).

    A fast path that has answered has closed its files and its run history and
    joined its threads; what the teardown would still do is free every module
    and object one by one, about 10 ms of a ~300 ms ``envbuild run`` (as much as
    a whole cache hit's own work). So the exit handlers run (``atexit``, which
    ``weakref.finalize`` uses too), the output is flushed, and the process ends.
    The usual exit is kept whenever it would do more: a thread that is not a
    daemon (the interpreter waits for it), output that cannot be flushed (a
    closed pipe: Python's own message and exit status), or a code outside 0-255.
    """
    import atexit
    import os

    run_handlers = getattr(atexit, "_run_exitfuncs", None)
    if not 0 <= code <= 255 or run_handlers is None:
        return
    threading = sys.modules.get("threading")  # not imported: no thread was started
    if threading is not None and any(
        thread.is_alive() and not thread.daemon and thread is not threading.main_thread()
        for thread in threading.enumerate()
    ):
        return
    run_handlers()  # in the order the usual exit runs them; each one once (they are cleared)
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            return
    os._exit(code)


_CI_OPTIONS = {"--registry", "--since", "--report", "--published"}
_CI_FLAGS = {"--push": "push", "--json": "json", "-q": "quiet", "--quiet": "quiet"}


def _parse_ci(argv: Sequence[str]) -> tuple[str, dict[str, str], set[str]] | None:
    """``(CATALOG, options, flags)`` for ``ci CATALOG [--registry R] [--since REF]
    [--published DIR] [--report DIR] [--push] [--json] [-q]``, else ``None``."""
    if len(argv) < 2 or argv[0] != "ci":
        return None
    catalog: str | None = None
    options: dict[str, str] = {}
    flags: set[str] = set()
    rest = iter(argv[1:])
    for arg in rest:
        if arg in _CI_OPTIONS:
            value = next(rest, None)
            if arg in options or not value or value.startswith("-"):
                return None  # repeated, missing or odd: the full command line says
            options[arg] = value
        elif arg in _CI_FLAGS:
            flags.add(_CI_FLAGS[arg])
        elif arg.startswith("-") or catalog is not None or not arg:
            return None  # --relock, --registry-ca, --x=y, a second CATALOG ...
        else:
            catalog = arg
    return (catalog, options, flags) if catalog else None


def _trace(line: str) -> None:
    """A line on stderr when ``ENVBUILD_TRACE`` is set: which way a fast path went."""
    import os

    if os.environ.get("ENVBUILD_TRACE"):
        sys.stderr.write(f"envbuild: trace: {line}\n")


def ci_recorded(argv: Sequence[str]) -> int | None:
    """Answer ``ci`` from the record of the same job, green and changing nothing, when
    everything it depended on is as recorded; ``None`` means "use the full CLI".

    :mod:`envbuild.catalog.ci_record` keeps the report of such a job with every file,
    image and registry digest it depended on and checks them again: the files by
    stat, the engine in one batch of inspects, the registry in one batch of manifest
    HEADs (as the push stage asks them, with the same credentials:
    :func:`envbuild.engine.registry.registry_from`), git once for ``--since``. The
    report is printed as the full path prints it (:class:`envbuild.catalog.ci_report.CiReport`,
    the same log lines, ``--report`` files and exit code), with this run's timings.
    Any other option (``--relock``, ``--registry-ca``, ``--registry-insecure``), a
    CA setting, anything that differs or cannot be checked: the full job runs.
    ``ENVBUILD_TRACE=1`` says on stderr which way it went.
    """
    parsed = _parse_ci(argv)
    if parsed is None:
        return None
    catalog_text, options, flags = parsed
    try:
        import time
        from pathlib import Path

        started = time.monotonic()
        from envbuild.catalog import ci_record
        from envbuild.catalog.listing import default_out
        from envbuild.engine.docker import DockerEngine
        from envbuild.settings import load_settings

        settings = load_settings()
        registry_text, source = options.get("--registry"), "--registry"
        if not registry_text and settings.registry:
            registry_text, source = settings.registry, "the registry setting"
        if settings.registry_ca or ("push" in flags and not registry_text):
            return None
        catalog = Path(catalog_text)
        published = Path(options["--published"]) if "--published" in options else None
        client = None
        prefix = ""
        if registry_text:  # checked and its credentials found as the full path does
            from envbuild.engine.registry import RegistryClient, registry_from

            registry = registry_from(registry_text, source=source)
            client, prefix = RegistryClient(registry), registry.prefix
        ident = ci_record.identity(
            catalog=catalog,
            published=published if published is not None else default_out(catalog),
            registry=prefix,
            since=options.get("--since"),
            push="push" in flags,
            relock=False,
            settings=settings,
        )
        found = ci_record.recall(
            settings.home,
            ident,
            catalog=catalog,
            published=published if published is not None else default_out(catalog),
            since=options.get("--since"),
            inspect=DockerEngine(settings.docker).inspect_images,
            heads=client.manifest_digests if client is not None else None,
        )
        if isinstance(found, str):
            _trace(f"ci runs the whole job: {found}")
            return None
        from envbuild.catalog.ci_report import CiReport

        report = CiReport.from_json(found.report)
        _retime(report, found.spent, time.monotonic() - started)
        written = report.write(Path(options["--report"])) if "--report" in options else []
    except KeyboardInterrupt as exc:  # nothing to undo: the checks only read
        from envbuild.cli.exits import report as report_error

        return report_error(exc)
    except Exception:  # the full CLI redoes this and reports the error properly
        return None
    import json

    _trace(f"ci answered from the record {ci_record.record_path(settings.home, ident)}")
    if "quiet" not in flags:
        for line in found.log:
            sys.stderr.write(line + "\n")
    for path in written:
        sys.stderr.write(f"envbuild ci: wrote {path}\n")
    if "json" in flags:
        sys.stdout.write(json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(report.markdown())
    sys.stdout.flush()
    return 0 if report.ok else 1


def _retime(report: CiReport, spent: dict[str, float], total: float) -> None:
    """Give ``report`` (rebuilt from a record) the timings of this run: what each
    kind of check took, shared among the stages it stands for; a stage the job
    timed at zero stays at zero."""
    stands_for = {
        "files": "validate version locks tests publish",
        "engine": "base build",
        "registry": "push",
        "git": "version",
    }
    share: dict[str, float] = {}
    for kind, names in stands_for.items():
        for name in names.split():
            share[name] = share.get(name, 0.0) + spent.get(kind, 0.0) / len(names.split())
    count = max(len(report.envs), 1)
    for stage in report.stages.values():
        if stage.seconds:
            stage.seconds = share.get(stage.name, 0.0)
    for env in report.envs:
        for stage in env.stages.values():
            if stage.seconds:
                stage.seconds = share.get(stage.name, 0.0) / count
    report.seconds = total


def _fast_paths(argv: Sequence[str]) -> int | None:
    """The exit code of the fast path that answers ``argv``; ``None``: the full CLI."""
    code = cached_build(argv)
    if code is None and argv[:1] == ["build"]:
        code = cached_catalog(argv)
    if code is None and argv[:1] == ["push"]:
        code = pushed_already(argv)
    if code is None and argv[:1] == ["ci"]:
        code = ci_recorded(argv)
    if code is None and argv[:1] == ["run"]:
        from envbuild.cli.run_fast import fast_run  # plain `run` forms, also without click

        code = fast_run(argv)
    return code


def entry() -> None:
    """The console script ``envbuild``."""
    try:
        code = _fast_paths(sys.argv[1:])
    except (Exception, KeyboardInterrupt) as exc:  # e.g. an answer stdout no longer takes
        from envbuild.cli.exits import report

        code = report(exc, run=sys.argv[1:2] == ["run"])  # as the full command line does
    if code is not None:  # a fast path answered: its work is done
        exit_now(code)
    if code is None:
        from envbuild.cli.main import main

        code = main()
    sys.exit(code)
