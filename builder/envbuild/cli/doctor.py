"""``envbuild doctor``: check this host for what envbuild needs (the checks live in
:mod:`envbuild.catalog.doctor`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from envbuild.errors import EXIT_FAILURE


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option(
    "--gpu",
    "gpu_required",
    is_flag=True,
    help="A missing or too old NVIDIA driver fails (default: it is a warning).",
)
@click.option(
    "--catalog",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("curated"),
    show_default=True,
    help="The environments whose [gpu] cuda the host's driver is checked against.",
)
def doctor(as_json: bool, gpu_required: bool, catalog: Path) -> None:
    """Check the engine, the BuildKit client, mmdebstrap and keyrings, the registry,
    free disk and the NVIDIA driver; print a table with the fix for each problem.

    Exits 1 when something envbuild needs is missing; a warning alone exits 0.
    """
    from envbuild.catalog.doctor import diagnose

    report = diagnose(catalog=catalog, gpu_required=gpu_required)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        click.echo(report.table())
    if not report.ok:
        raise SystemExit(EXIT_FAILURE)


def register(group: click.Group) -> None:
    """Add ``doctor`` to the ``envbuild`` command group."""
    group.add_command(doctor)
