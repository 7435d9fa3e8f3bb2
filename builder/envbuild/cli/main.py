"""The ``envbuild`` command line: parse arguments, call the library, print.

Data goes to stdout (``render`` prints the Dockerfile, ``hash`` the hash,
``--json`` documents); progress and logs go to stderr. Every failure is
reported in one place (:class:`_Group`, through :mod:`envbuild.cli.exits`,
with the codes of :data:`envbuild.errors.EXIT_CODES`), with a traceback only
under ``--debug``. Library modules are imported inside the commands so that each
command pays only for what it uses.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from envbuild import __version__
from envbuild.cli.completion import complete_env
from envbuild.cli.registry import open_remote, registry_options
from envbuild.errors import EXIT_MEANINGS, UsageError

_EXIT_CODES_HELP = "\b\nExit codes:\n" + "\n".join(
    f"  {code:<3} {meaning}" for code, meaning in EXIT_MEANINGS.items()
)


class _Group(click.Group):
    """Reports every failure of a command in one place (:func:`envbuild.cli.exits.report`)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except (Exception, KeyboardInterrupt) as exc:
            from envbuild.cli.exits import report

            debug = bool(ctx.obj and ctx.obj.get("debug"))
            ctx.exit(report(exc, run=ctx.invoked_subcommand == "run", debug=debug))


def _settings() -> Any:
    from envbuild.settings import load_settings

    return load_settings()


def _emit_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


@click.group(
    cls=_Group, epilog=_EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="envbuild")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Turn transparent env.toml definitions into images, and build them.

    ENV is an environment folder holding an env.toml (e.g. envs/hello or
    curated/pytorch-1.6-gpu). Settings come from ENVBUILD_* variables or
    ~/.config/envbuild/config.toml (docker, prefix, home, mirrors).
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


ENV_ARG = click.argument("env", type=click.Path(path_type=Path), shell_complete=complete_env)


@cli.command()
@ENV_ARG
def validate(env: Path) -> None:
    """Check ENV's definition and report every problem at once."""
    from envbuild.definition.model import load

    environment = load(env)
    click.echo(
        f"{environment.definition_file}: ok ({environment.name}, version {environment.version})",
        err=True,
    )


@cli.command()
def schema() -> None:
    """Print the JSON Schema of env.toml (docs/env.schema.json), for editors and CI.

    It is generated from the checks `validate` runs: keys, types and each
    value's grammar. `validate` also checks what a schema cannot (extends,
    a base Dockerfile, the rules between keys).
    """
    from envbuild.definition.model import json_schema_text

    click.echo(json_schema_text(), nl=False)


@cli.command()
@ENV_ARG
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Write the whole build context (Dockerfile and files) to this new folder.",
)
def render(env: Path, output: Path | None) -> None:
    """Print ENV's Dockerfile, or write its whole build context with -o.

    Works without the engine: the context holds no base identity (an unlocked
    base's image ID enters only the hash).
    """
    from envbuild.definition.model import load
    from envbuild.lock.model import conda_store
    from envbuild.render.dockerfile import render as render_context

    environment = load(env)
    settings = _settings()
    context = render_context(
        environment, platform=settings.platform, conda_store=conda_store(settings.home)
    )
    if output is None:
        click.echo(context.dockerfile, nl=False)
        return
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise UsageError(
            f"{output} exists and is not an empty folder",
            hint="name a new folder, or remove this one first",
        )
    context.write(output)
    click.echo(f"wrote the build context of {environment.name} to {output}", err=True)


@cli.command(name="hash")
@ENV_ARG
@click.option("--manifest", is_flag=True, help="Print the hashed manifest (JSON) instead.")
def hash_(env: Path, manifest: bool) -> None:
    """Print ENV's content hash (what names its image).

    A locked ENV is hashed offline. The hash of an unlocked one covers the
    image the engine holds for its base (one inspect): without an engine that
    is an error, with the hint to lock it.
    """
    from envbuild.build.builder import resolve
    from envbuild.cache.hashing import manifest as make_manifest

    settings = _settings()
    resolved = resolve(env, settings=settings)
    if manifest:
        _emit_json(make_manifest(resolved.context, platform=settings.platform))
    else:
        click.echo(resolved.hash)


class _Progress:
    """Build log to stderr: a live display on a terminal, the plain log elsewhere."""

    def __init__(self, quiet: bool) -> None:
        from envbuild.build.progress import BuildProgress

        self.quiet = quiet
        self.display = BuildProgress(
            lambda text: click.echo(text, err=True, nl=False), tty=sys.stderr.isatty()
        )

    def __call__(self, line: str) -> None:
        if not self.quiet:
            self.display(line)


@cli.command()
@click.argument(
    "envs",
    metavar="ENV...",
    nargs=-1,
    type=click.Path(path_type=Path),
    shell_complete=complete_env,
)
@click.option(
    "--all",
    "all_dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="Build every environment in this folder (e.g. curated), parents first.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print {"image", "hash", "cached", "tier", "id", "seconds"} to stdout (for several, '
    'a list of {"env", "ok", "tier", "image", "hash", "error", ...}).',
)
@click.option("--rebuild", is_flag=True, help="Build even if the image exists (no layer cache).")
@click.option("-q", "--quiet", is_flag=True, help="Do not show the build log.")
@click.option(
    "--ca-bundle",
    type=click.Path(path_type=Path, dir_okay=False),
    help="CA bundle for package downloads (default: $PIP_CERT, $REQUESTS_CA_BUNDLE, "
    "$SSL_CERT_FILE); given to the build as a secret, never stored in the image.",
)
@click.option(
    "--netrc",
    type=click.Path(path_type=Path, dir_okay=False),
    help="netrc with private index credentials (default: $NETRC); given to the package "
    "steps as a secret, never stored in the image.",
)
@click.option(
    "--strict", is_flag=True, help="Refuse to build an ENV that is not locked (`envbuild lock`)."
)
@click.option(
    "--base-drift",
    type=click.Choice(["fail", "allow"]),
    default=None,
    help="When a locked base is no longer the image its lock pins: fail (the default; "
    "the error says how to fix it), or allow: build on the base at hand an image labelled "
    "with both base IDs, with its own hash and no version tag, never pushed "
    "(default: the base_drift setting, $ENVBUILD_BASE_DRIFT).",
)
@registry_options
@click.option(
    "--push",
    "push_after",
    is_flag=True,
    help="Push the image to the registry afterwards (see `envbuild push`).",
)
def build(
    envs: tuple[Path, ...],
    all_dir: Path | None,
    as_json: bool,
    rebuild: bool,
    quiet: bool,
    ca_bundle: Path | None,
    netrc: Path | None,
    strict: bool,
    base_drift: str | None,
    registry: str | None,
    registry_ca: Path | None,
    registry_insecure: bool,
    push_after: bool,
) -> None:
    """Build each ENV's image, unless an image with its content hash exists.

    The image is tagged <prefix>/<name>:<hash12> and <prefix>/<name>:<version>
    only after the build succeeded. With several ENVs (or --all DIR) they are
    built parents first; a failure does not stop the others, and every result
    is reported at the end.

    With a registry (--registry, or the registry setting), an image the engine
    lacks is pulled from <registry>/<name>:<hash12> when the registry holds it
    (and its hash label matches), else built with the registry's earlier image
    of the environment as layer cache; --push pushes the result.

    A locked base that moved away from its pin stops the build with the
    commands that fix it. --base-drift=allow builds on it anyway: the image is
    labelled io.envbuild.base.drift.locked/.actual, hashed on the base it was
    built on (so it never carries the locked hash), takes no version tag, is
    never pushed, and --json reports "base_drift": {"image", "locked", "actual"}.
    """
    from envbuild.build.builder import build as do_build
    from envbuild.build.builder import find_ca_bundle, find_netrc, report, resolve
    from envbuild.engine.docker import DockerEngine

    find_ca_bundle(ca_bundle)  # a file named here that cannot be read is a usage error, first
    find_netrc(netrc)
    settings = _settings()
    engine = DockerEngine(settings.docker, state=settings.home)
    folders = list(envs)
    if all_dir is not None:
        from envbuild.catalog.order import discover

        folders.extend(discover(all_dir))
    if not folders:
        raise click.UsageError("name at least one ENV, or --all DIR")
    remote = open_remote(settings, registry, registry_ca, registry_insecure, required=push_after)

    def one(env: Any) -> Any:  # a folder, or an Environment already loaded
        resolved = resolve(env, settings=settings, engine=engine)
        progress = _Progress(quiet)
        result = do_build(
            resolved,
            settings=settings,
            engine=engine,
            rebuild=rebuild,
            ca_bundle=ca_bundle,
            netrc=netrc,
            strict=strict,
            log=progress,
            remote=remote,
            base_drift=base_drift,
        )
        if push_after and remote is not None:
            from envbuild.build.travel import push, refuse_drifted

            if result.base_drift is not None:
                refuse_drifted(result.image, result.base_drift)
            pushed = push(resolved, remote=remote, engine=engine, log=progress)
            result = result._replace(digest=pushed.digest)
        return result

    if len(folders) == 1 and all_dir is None:
        report(one(folders[0]), as_json=as_json, quiet=quiet)
        return
    _build_many(folders, one, as_json=as_json)


def _build_many(folders: list[Path], one: Any, *, as_json: bool) -> None:
    from envbuild.catalog.order import build_all
    from envbuild.catalog.results import print_results

    results = build_all(folders, one, log=lambda line: click.echo(line, err=True))
    print_results(results, as_json=as_json)
    failed = [r for r in results if not r.ok]
    if failed:
        click.get_current_context().exit(failed[0].exit_code)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def images(as_json: bool) -> None:
    """List the images envbuild built: name, version, hash and size."""
    from envbuild.engine.docker import DockerEngine
    from envbuild.identity import HASH_LABEL, NAME_LABEL, VERSION_LABEL

    settings = _settings()
    rows: list[dict[str, Any]] = []
    for info in DockerEngine(settings.docker).list_images(HASH_LABEL):
        rows.append(
            {
                "name": info.labels.get(NAME_LABEL, ""),
                "version": info.labels.get(VERSION_LABEL, ""),
                "hash": info.labels.get(HASH_LABEL, ""),
                "id": info.id,
                "tags": sorted(info.tags),
                "size": info.size,
            }
        )
    rows.sort(key=lambda r: (r["name"], r["version"], r["hash"]))
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        click.echo("no envbuild images", err=True)
        return
    click.echo(f"{'NAME':<28} {'VERSION':<8} {'HASH':<12} {'SIZE':>9}")
    for row in rows:
        size = f"{int(row['size']) / 1e6:.1f}MB"
        click.echo(f"{row['name']:<28} {row['version']:<8} {str(row['hash'])[:12]:<12} {size:>9}")


@cli.group()
def base() -> None:
    """Base images: build them from a distribution's package archive."""


@base.command()
@click.argument("ref")
@click.option(
    "--mirror",
    help="Package archive URL (default: the debian/ubuntu mirror setting). A snapshot "
    "mirror (http://snapshot.debian.org/archive/debian/20240601T000000Z) serves one "
    "archive state forever: the same image ID on any machine.",
)
@click.option(
    "--keyring",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Archive keyring to verify the archive with (default: envbuild's pinned one).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bootstrap(ref: str, mirror: str | None, keyring: Path | None, as_json: bool) -> None:
    """Build the base image REF (e.g. debian:bookworm-slim, ubuntu:20.04) with mmdebstrap.

    The image is tagged REF in the local engine only after the whole pipeline
    succeeded, so definitions keep naming the real public base. The archive
    state it was made from (distribution, suite, mirror, each pocket's Release
    Date) is recorded in its labels, and `envbuild lock` copies it into the lock.
    """
    from envbuild.build.bases import bootstrap as do_bootstrap

    settings = _settings()
    result = do_bootstrap(
        ref,
        mirror=mirror,
        keyring=keyring,
        settings=settings,
        log=lambda line: click.echo(line, err=True),
    )
    if as_json:
        _emit_json(
            {
                "ref": result.ref,
                "id": result.image_id,
                "size": result.size,
                "seconds": round(result.seconds, 3),
                "archive": result.archive.to_json() if result.archive else None,
            }
        )
    else:
        click.echo(f"{result.ref} {result.image_id}")


def _register_run_commands() -> None:
    """Add the run layer's commands (run, runs, logs), defined in envbuild.cli.run."""
    try:
        from envbuild.cli import run as cli_run
    except ImportError:  # pragma: no cover - only while the run layer is absent
        return
    cli_run.register(cli)


_register_run_commands()

from envbuild.cli import lock as cli_lock  # noqa: E402 - added once the group is complete

cli_lock.register(cli)

from envbuild.cli import catalog as cli_catalog  # noqa: E402 - registers onto the group defined above

cli_catalog.register(cli)

from envbuild.cli import registry as cli_registry  # noqa: E402 - registers onto the group above

cli_registry.register(cli)

from envbuild.cli import doctor as cli_doctor  # noqa: E402 - registers onto the group above

cli_doctor.register(cli)

from envbuild.cli import ci as cli_ci  # noqa: E402 - registers onto the group above

cli_ci.register(cli)

from envbuild.cli import export as cli_export  # noqa: E402 - registers onto the group above

cli_export.register(cli)

from envbuild.cli import importer as cli_importer  # noqa: E402 - registers onto the group above

cli_importer.register(cli)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv``; return the exit code (for tests and scripts)."""
    try:
        cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="envbuild",
            standalone_mode=True,
        )
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
