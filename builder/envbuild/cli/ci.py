"""The ``ci`` command: the whole job of an image registry's CI (:mod:`envbuild.catalog.ci`).

Library modules are imported inside the command: every envbuild invocation
imports this module.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from envbuild.cli.registry import open_remote, registry_options
from envbuild.errors import EXIT_FAILURE


@click.command()
@click.argument("catalog", type=click.Path(path_type=Path, file_okay=False, exists=True))
@registry_options
@click.option(
    "--since",
    metavar="REF",
    help="Version guard against the catalog at this git revision (default: the published index).",
)
@click.option(
    "--published",
    type=click.Path(path_type=Path, file_okay=False),
    help="The published folder (default: published/ beside the catalog).",
)
@click.option("--push", is_flag=True, help="Push every image that passed, digests verified.")
@click.option(
    "--relock",
    is_flag=True,
    help="For each base that moved from its lock, propose the fix: relock on the base at "
    "hand and raise the version (`envbuild lock ENV --bump`), written to the working tree "
    "for review, never committed; the proposal is built and tested, never pushed.",
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write summary.md, report.json and junit.xml into this folder.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print report.json to stdout instead of the summary."
)
@click.option("-q", "--quiet", is_flag=True, help="Do not show the build and test log.")
def ci(
    catalog: Path,
    registry: str | None,
    registry_ca: Path | None,
    registry_insecure: bool,
    since: str | None,
    published: Path | None,
    push: bool,
    relock: bool,
    report_dir: Path | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Run an image registry's whole CI job on CATALOG, and report every failure at once.

    \b
    validate   every definition loads
    version    a changed environment has a new version (`envbuild check`)
    locks      the locks are current (`envbuild lock --check`)
    base       each locked base is still the image its lock pins (--relock:
               propose the fix of one that moved, in the working tree)
    build      what the engine and the registry do not hold, parents first
    tests      each environment's [[tests]] in its image (`envbuild test`)
    push       with --push, each image that passed (`envbuild push`)
    publish    the published folder is current (`envbuild publish --check`)

    A failure does not stop the other environments. The Markdown summary goes
    to stdout (report.json with --json); exit code 1 when anything failed.
    """
    from envbuild.catalog.ci import run_ci
    from envbuild.engine.docker import DockerEngine
    from envbuild.settings import load_settings

    settings = load_settings()
    if push and not (registry or settings.registry):
        raise click.UsageError(
            "--push needs a registry: name it with --registry HOST[:PORT][/NAMESPACE] "
            "(or the registry setting, $ENVBUILD_REGISTRY)"
        )
    remote = open_remote(settings, registry, registry_ca, registry_insecure, required=push)
    report = run_ci(
        catalog,
        settings=settings,
        engine=DockerEngine(settings.docker, state=settings.home),
        remote=remote,
        since=since,
        published=published,
        push=push,
        relock=relock,
        log=(lambda line: None) if quiet else (lambda line: click.echo(line, err=True)),
    )
    if report_dir is not None:
        for path in report.write(report_dir):
            click.echo(f"envbuild ci: wrote {path}", err=True)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        click.echo(report.markdown(), nl=False)
    if not report.ok:
        click.get_current_context().exit(EXIT_FAILURE)


def register(group: click.Group) -> None:
    """Add ``ci`` to the ``envbuild`` group."""
    group.add_command(ci)
