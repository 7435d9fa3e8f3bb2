"""Catalog commands: ``test``, and the registry CI commands ``publish``, ``check``, ``diff``.

Library modules are imported inside the commands: every envbuild invocation
imports this module.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from envbuild.cli.completion import complete_env


@click.command()
@click.argument(
    "envs",
    metavar="ENV...",
    nargs=-1,
    required=True,
    type=click.Path(path_type=Path),
    shell_complete=complete_env,
)
@click.option("--force", is_flag=True, help="Run the checks even if this image passed them before.")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON to stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Do not show the build log.")
def test(envs: tuple[Path, ...], force: bool, as_json: bool, quiet: bool) -> None:
    """Build each ENV if needed, then run its [[tests]] inside the image.

    A check passes when it exits 0 and, with `expect`, a line of its output
    equals `expect` or matches it as a regular expression. Results are kept
    per image: an unchanged image is not tested again unless --force.
    """
    from envbuild.build.builder import build, resolve
    from envbuild.catalog.test import run_tests
    from envbuild.engine.docker import DockerEngine
    from envbuild.settings import load_settings

    settings = load_settings()
    engine = DockerEngine(settings.docker, state=settings.home)
    reports = []
    for env in envs:
        resolved = resolve(env, settings=settings)

        def progress(line: str) -> None:
            if not quiet:
                click.echo(line, err=True)

        built = build(resolved, settings=settings, engine=engine, log=progress)
        tests = resolved.env.tests
        click.echo(f"envbuild: testing {built.image} ({len(tests)} checks)", err=True)
        if not tests:
            click.echo(f"envbuild: {resolved.env.name} has no [[tests]]", err=True)
        report = run_tests(
            engine,
            image=built.image,
            image_id=built.id,
            tests=tests,
            home=settings.home,
            force=force,
            log=lambda line: click.echo(line, err=True),
        )
        if report.reused:
            for r in report.results:
                click.echo(f"  {'ok  ' if r.passed else 'FAIL'} {r.name} (recorded)", err=True)
        for r in report.results:
            if not r.passed:
                click.echo(f"  --- {r.name}: {r.reason}; last output:", err=True)
                for line in r.output_tail:
                    click.echo(f"      {line}", err=True)
        reports.append(report)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in reports], indent=2, sort_keys=True))
    failed = [r for r in reports if not r.passed and r.results]
    total = sum(len(r.results) for r in reports)
    bad = sum(1 for r in reports for c in r.results if not c.passed)
    click.echo(f"{total - bad} passed, {bad} failed", err=True)
    if failed:
        click.get_current_context().exit(1)


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


CATALOG_OPTION = click.option(
    "--catalog",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("curated"),
    show_default=True,
    help="The catalog: a folder of environment folders.",
)


@click.command()
@CATALOG_OPTION
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    help="The published folder (default: published/ beside the catalog).",
)
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Write nothing; fail if the published folder differs from a fresh render.",
)
@click.option(
    "--with-images",
    is_flag=True,
    help="Also write image.json (ID, size, packages read from inside) for local images.",
)
def publish(catalog: Path, out: Path | None, check_only: bool, with_images: bool) -> None:
    """Publish every catalog environment: Dockerfile, context, locks, manifest, packages.

    Writes <out>/<name>/<version>/ for each environment's current version, and
    <out>/index.json and <out>/index.md listing every version. Older versions
    already published are kept as they are. With --check nothing is written:
    every difference from a fresh render is listed and the exit code is 1.
    """
    from envbuild.catalog import publish as pub
    from envbuild.lock.model import conda_store
    from envbuild.settings import load_settings

    if check_only and with_images:
        raise click.UsageError("--check compares no image.json: leave out --with-images")
    settings = load_settings()
    out = out if out is not None else pub.default_out(catalog)
    shown = _shown(out)
    if check_only:
        drift = pub.check(
            catalog,
            out,
            platform=settings.platform,
            conda_store=conda_store(settings.home),
            home=settings.home,
        )
        if not drift:
            click.echo(f"envbuild: {shown}/ is up to date with {_shown(catalog)}/", err=True)
            return
        click.echo(
            f"envbuild: {shown}/ differs from a fresh render of {_shown(catalog)}/ "
            f"({len(drift)} files):",
            err=True,
        )
        for item in drift:
            click.echo(f"  {item.render()}", err=True)
        if any(d.kind == "corrupt" for d in drift):
            click.echo(
                "published versions are immutable: restore the corrupt files from git", err=True
            )
        click.echo(f"run `envbuild publish` and commit {shown}/", err=True)
        click.get_current_context().exit(1)
    reader = None
    if with_images:
        from envbuild.engine.docker import DockerEngine

        reader = pub.image_reader(DockerEngine(settings.docker, state=settings.home), settings)
    report = pub.publish(
        catalog,
        out,
        platform=settings.platform,
        conda_store=conda_store(settings.home),
        read_image=reader,
        log=lambda line: click.echo(line, err=True),
    )
    for rel in report.written:
        click.echo(f"  wrote   {shown}/{rel}", err=True)
    for rel in report.removed:
        click.echo(f"  removed {shown}/{rel}", err=True)
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(
        f"envbuild: {len(report.written)} written, {len(report.removed)} removed, "
        f"{report.unchanged} unchanged in {shown}/"
        + (f"; image.json for {len(report.images)}" if with_images else ""),
        err=True,
    )


@click.command()
@CATALOG_OPTION
@click.option(
    "--since",
    metavar="REF",
    help="Compare with the catalog at this git revision (default: the published index).",
)
@click.option(
    "--published",
    type=click.Path(path_type=Path, file_okay=False),
    help="The published folder whose index is the baseline (default: published/ beside "
    "the catalog).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON to stdout.")
def check(catalog: Path, since: str | None, published: Path | None, as_json: bool) -> None:
    """Fail when an environment changed without a version bump, or its version went down.

    An environment's definition is its env.toml, the lock files beside it and
    its base Dockerfile, and those of the parents it extends. The baseline is
    the published index (the definition recorded for each name and version),
    or with --since REF the catalog as it was at that git revision.
    """
    from envbuild.catalog.check import check_catalog

    baseline, findings = check_catalog(catalog, published=published, since=since)
    click.echo(f"envbuild: checking {_shown(catalog)}/ against {baseline.description}", err=True)
    for note in baseline.notes:
        click.echo(f"  note: {note}", err=True)
    width = max((len(f.name) for f in findings), default=0)
    for f in findings:
        mark = "FAIL" if f.failed else ("info" if f.status == "deleted" else "ok  ")
        version = "-" if f.version is None else str(f.version)
        click.echo(f"  {mark}  {f.name:<{width}}  {version:>3}  {f.message}", err=True)
        if f.hint:
            click.echo(f"        hint: {f.hint}", err=True)
    failed = [f for f in findings if f.failed]
    if as_json:
        click.echo(
            json.dumps(
                {"baseline": baseline.description, "findings": [f.to_json() for f in findings]},
                indent=2,
                sort_keys=True,
            )
        )
    click.echo(f"{len(findings) - len(failed)} ok, {len(failed)} failed", err=True)
    if failed:
        click.get_current_context().exit(1)


@click.command()
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help="Print the diff as JSON.")
@click.option(
    "--published",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("published"),
    show_default=True,
    help="Where NAME@VERSION is read from.",
)
@click.option("--exit-code", is_flag=True, help="Exit with 1 when A and B differ.")
def diff(a: str, b: str, as_json: bool, published: Path, exit_code: bool) -> None:
    """Show which packages differ from A to B: added, removed, changed, and the base.

    A and B are each an environment folder (its declared or locked packages),
    NAME@VERSION (a published version) or image:REF (a local image: the
    packages installed in it, read with dpkg-query, pip list and conda list).
    """
    from envbuild.catalog import diff as d
    from envbuild.engine.docker import DockerEngine
    from envbuild.lock.model import conda_store
    from envbuild.settings import load_settings

    settings = load_settings()
    engines: list[DockerEngine] = []

    def engine() -> DockerEngine:
        if not engines:
            engines.append(DockerEngine(settings.docker, state=settings.home))
        return engines[0]

    store = conda_store(settings.home)
    result = d.diff(
        d.read_side(a, published=published, engine=engine, conda_store=store),
        d.read_side(b, published=published, engine=engine, conda_store=store),
    )
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, sort_keys=True))
    else:
        click.echo(d.render_text(result), nl=False)
    if exit_code and not result.identical:
        click.get_current_context().exit(1)


@click.command()
@click.argument("target", metavar="ENV|image:REF")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["cyclonedx", "spdx"]),
    default="cyclonedx",
    show_default=True,
    help="CycloneDX 1.6 JSON or SPDX 2.3 JSON.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the SBOM to this file (default: stdout).",
)
@click.option("-q", "--quiet", is_flag=True, help="Do not show the build log.")
def sbom(target: str, fmt: str, output: Path | None, quiet: bool) -> None:
    """Write a software bill of materials of ENV's image (built if needed) or image:REF.

    Lists every Debian package in dpkg's status database, every pip and conda
    distribution with its version, and the base image with its pin, each with
    its package URL. The output is deterministic for an image: its serial
    number comes from the image ID, its timestamp from the image's creation.
    """
    from envbuild.catalog import sbom as bom
    from envbuild.catalog.diff import IMAGE_PREFIX
    from envbuild.catalog.packages import from_image
    from envbuild.engine.docker import DockerEngine
    from envbuild.errors import UsageError
    from envbuild.settings import load_settings

    settings = load_settings()
    engine = DockerEngine(settings.docker, state=settings.home)
    if target.startswith(IMAGE_PREFIX):
        ref = target[len(IMAGE_PREFIX) :]
        if not ref:
            raise UsageError("image: needs a reference, e.g. image:envbuild/hello:1")
    else:
        from envbuild.build.builder import build, resolve

        def progress(line: str) -> None:
            if not quiet:
                click.echo(line, err=True)

        resolved = resolve(Path(target), settings=settings)
        ref = build(resolved, settings=settings, engine=engine, log=progress).image
    info = engine.inspect_image(ref)
    if info is None:
        raise UsageError(
            f"{target}: no such image in the local engine",
            hint="build it first (envbuild build ENV), or pull it",
        )
    packages = from_image(engine, ref, info.labels)
    text = bom.dumps(bom.document(packages, bom.Subject(ref, info.id, info.created), fmt))
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    count = len(bom.items(packages))
    click.echo(f"envbuild: wrote {_shown(output)} ({fmt}, {count} packages)", err=True)


def register(group: click.Group) -> None:
    """Add the catalog commands to the ``envbuild`` group."""
    for command in (test, publish, check, diff, sbom):
        group.add_command(command)
