"""``envbuild import azureml``: Azure ML environments written as envbuild definitions.

The conversion is :mod:`envbuild.importers.azureml`; this module parses the
options, writes the folder (atomically, through the result's ``write``) and
prints: warnings and notes to stderr, ``--json`` documents to stdout.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

# `import` is a Python keyword: the group's function has another name.


@click.group("import")
def import_group() -> None:
    """Turn another tool's environments into envbuild definitions."""


@import_group.command("azureml")
@click.argument("source")
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="The environment folder to write (new, or empty; --force replaces an environment).",
)
@click.option("--force", is_flag=True, help="Replace the environment folder OUTPUT if it has one.")
@click.option(
    "--keep-conda",
    is_flag=True,
    help="Keep conda even when the conda file holds only python and a pip: list.",
)
@click.option(
    "--keep-azureml-packages",
    is_flag=True,
    help="Keep the Azure ML SDK's own pip packages (azureml-*), left out by default.",
)
@click.option(
    "--catalog",
    type=click.Path(path_type=Path, file_okay=False),
    metavar="DIR",
    help="The curated catalog a curated name's definition extends "
    "(default: curated/ beside envbuild's source, else in the working directory).",
)
@click.option(
    "--source-dir",
    type=click.Path(path_type=Path, file_okay=False),
    metavar="DIR",
    help="With a .runconfig: the run's source directory (default: the folder holding .azureml).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def azureml(
    source: str,
    output: Path,
    force: bool,
    keep_conda: bool,
    keep_azureml_packages: bool,
    catalog: Path | None,
    source_dir: Path | None,
    as_json: bool,
) -> None:
    """Write an env.toml in OUTPUT from the Azure ML environment SOURCE.

    \b
    SOURCE is one of:
      a folder from Environment.save_to_directory() or `az ml environment
        download` (azureml_environment.json, conda_dependencies.yml,
        BaseDockerfile), or that JSON file;
      an SDK v2 / CLI v2 environment YAML (image, conda_file, build);
      a conda file (dependencies: with a pip: list);
      a curated environment name, e.g. AzureML-PyTorch-1.6-GPU;
      a v1 run configuration (.azureml/NAME.runconfig): its environment is
        written to OUTPUT, and its run as the `envbuild run` command line,
        printed on stdout and written to OUTPUT/run.sh.

    Every field that is not carried over is listed as a warning with its
    path; credentials are never written. Nothing is written on error.
    """
    from envbuild.importers.azureml import import_source

    result = import_source(
        source,
        into=output,
        catalog=catalog,
        source_dir=source_dir,
        keep_conda=keep_conda,
        keep_azureml_packages=keep_azureml_packages,
    )
    folder = result.write(output, force=force)
    for note in result.notes:
        click.echo(f"note: {note.render()}", err=True)
    for warning in result.warnings:
        click.echo(f"warning: {warning.render()}", err=True)
    if as_json:
        click.echo(json.dumps(result.to_json(folder), indent=2, sort_keys=True))
        return
    command = result.command()
    if command is not None:
        import shlex

        click.echo(shlex.join(command))
    count = len(result.warnings)
    said = f"{count} warning{'s' if count != 1 else ''}" if count else "no warnings"
    click.echo(
        f"wrote {folder / 'env.toml'} ({result.name}; {said}); next: envbuild lock {output}"
        + (f"; the run: {folder / 'run.sh'}" if command is not None else ""),
        err=True,
    )


def register(group: click.Group) -> None:
    """Add ``import`` to the envbuild command group."""
    group.add_command(import_group)
