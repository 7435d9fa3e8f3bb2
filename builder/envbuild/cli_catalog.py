"""Catalog commands: ``test`` (and the registry CI commands: publish, check, diff).

Library modules are imported inside the commands: every envbuild invocation
imports this module.
"""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.argument("envs", metavar="ENV...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Run the checks even if this image passed them before.")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON to stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Do not show the build log.")
def test(envs: tuple[Path, ...], force: bool, as_json: bool, quiet: bool) -> None:
    """Build each ENV if needed, then run its [[tests]] inside the image.

    A check passes when it exits 0 and, with `expect`, a line of its output
    equals `expect` or matches it as a regular expression. Results are kept
    per image: an unchanged image is not tested again unless --force.
    """
    from envbuild.build import build, resolve
    from envbuild.engine import DockerEngine
    from envbuild.settings import load_settings
    from envbuild.testing import run_tests

    settings = load_settings()
    engine = DockerEngine(settings.docker)
    reports = []
    for env in envs:
        resolved = resolve(env, settings)

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


def register(group: click.Group) -> None:
    """Add the catalog commands to the ``envbuild`` group."""
    group.add_command(test)
