"""Registry commands (``push``, ``pull``) and the registry options ``build`` shares.

Library modules are imported inside the commands: every envbuild invocation
imports this module.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from envbuild.cli.completion import complete_env

if TYPE_CHECKING:
    from envbuild.build.travel import Remote
    from envbuild.engine.docker import DockerEngine
    from envbuild.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def registry_options(func: F) -> F:
    """Add ``--registry``, ``--registry-ca`` and ``--registry-insecure`` to a command."""
    func = click.option(
        "--registry-insecure",
        is_flag=True,
        help="Allow plain http to a registry that is not on loopback (loopback always may).",
    )(func)
    func = click.option(
        "--registry-ca",
        type=click.Path(path_type=Path, dir_okay=False),
        help="CA bundle (PEM) for the registry's TLS (default: the registry_ca setting, "
        "$ENVBUILD_REGISTRY_CA).",
    )(func)
    return click.option(
        "--registry",
        metavar="HOST[:PORT][/NAMESPACE]",
        help="Image registry (default: the registry setting, $ENVBUILD_REGISTRY). Credentials "
        "come from ENVBUILD_REGISTRY_USERNAME/_PASSWORD or the docker client's config "
        "(`docker login`).",
    )(func)


def open_remote(
    settings: Settings,
    registry: str | None,
    registry_ca: Path | None,
    registry_insecure: bool,
    *,
    required: bool,
) -> Remote | None:
    """The registry the options or settings name, ready to use (``None`` when none is named
    and none is ``required``)."""
    from envbuild.build.travel import Remote
    from envbuild.engine.registry import registry_from

    source = "--registry"
    if not registry and settings.registry:
        registry, source = settings.registry, "the registry setting"
    if not registry:
        if required:
            raise click.UsageError("name the registry: --registry HOST[:PORT][/NAMESPACE]")
        return None
    if registry_ca is None and settings.registry_ca:
        registry_ca = Path(settings.registry_ca).expanduser()
    found = registry_from(registry, ca_file=registry_ca, insecure=registry_insecure, source=source)
    return Remote.open(found)


def _emit_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def _folders(envs: tuple[Path, ...], all_dir: Path | None) -> list[Path]:
    folders = list(envs)
    if all_dir is not None:
        from envbuild.catalog.order import discover

        folders.extend(discover(all_dir))
    if not folders:
        raise click.UsageError("name at least one ENV, or --all DIR")
    return folders


@click.command()
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
    help="Push every environment in this folder (e.g. curated), parents first.",
)
@registry_options
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print refs, digest and whether it was pushed (for several, a list with "
    '"env", "ok" and "error").',
)
@click.option("-q", "--quiet", is_flag=True, help="Do not show the push progress.")
def push(
    envs: tuple[Path, ...],
    all_dir: Path | None,
    registry: str | None,
    registry_ca: Path | None,
    registry_insecure: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Push each ENV's built image to the registry as <registry>/<name>:<hash12> and
    :<version>, and verify that the registry serves the digest that was pushed.

    An image the registry already holds is not pushed again. ENV must be built
    (`envbuild build ENV`); a failed push exits 6 and leaves no tag behind.
    With several ENVs (or --all DIR) a failure does not stop the others: every
    environment is reported at the end, and the exit code is the first
    failure's.
    """
    from envbuild.build import travel
    from envbuild.build.builder import resolve
    from envbuild.catalog.order import in_order
    from envbuild.engine.docker import DockerEngine
    from envbuild.settings import load_settings

    settings = load_settings()
    engine = DockerEngine(settings.docker, state=settings.home)
    folders = _folders(envs, all_dir)
    remote = open_remote(settings, registry, registry_ca, registry_insecure, required=True)
    assert remote is not None

    def log(line: str) -> None:
        if not quiet:
            click.echo(line, err=True)

    def push_one(env: Any) -> travel.PushResult:
        resolved = resolve(env, settings=settings, engine=engine)
        return travel.push(resolved, remote=remote, engine=engine, log=log)

    if len(folders) == 1 and all_dir is None:
        travel.report_push(push_one(folders[0]), as_json=as_json)
        return
    attempts = in_order(folders, push_one, log=lambda line: click.echo(line, err=True))
    if as_json:
        entries: list[dict[str, object]] = []
        for a in attempts:
            entry: dict[str, object] = {"env": str(a.folder), "ok": a.error is None}
            if a.value is not None:
                entry.update(a.value.to_json())
            if a.error is not None:
                entry.update(error=a.error.render(), exit_code=a.error.exit_code)
            entries.append(entry)
        _emit_json(entries)
    else:
        for a in attempts:
            if a.value is not None:
                travel.report_push(a.value, as_json=False)
    failed = [a for a in attempts if a.error is not None]
    for a in failed:
        assert a.error is not None
        click.echo(f"FAILED {a.folder.name}: {a.error.render().splitlines()[0]}", err=True)
    click.echo(
        f"{len(attempts) - len(failed)} pushed or already there, {len(failed)} failed", err=True
    )
    if failed:
        assert failed[0].error is not None
        click.get_current_context().exit(failed[0].error.exit_code)


@click.command()
@click.argument("env", type=click.Path(path_type=Path), shell_complete=complete_env)
@registry_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (with tier).")
@click.option("-q", "--quiet", is_flag=True, help="Do not show the pull progress.")
def pull(
    env: Path,
    registry: str | None,
    registry_ca: Path | None,
    registry_insecure: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Fetch ENV's image from the registry, never building it.

    The image <registry>/<name>:<hash12> is pulled by digest, accepted only if
    its io.envbuild.hash label holds ENV's hash, and tagged like a build's.
    An image the engine already holds answers at once.
    """
    import time

    from envbuild.build import travel
    from envbuild.build.builder import cached, report, resolve
    from envbuild.engine.docker import DockerEngine
    from envbuild.errors import RegistryError
    from envbuild.settings import load_settings

    started = time.monotonic()
    settings = load_settings()
    engine = DockerEngine(settings.docker, state=settings.home)
    resolved = resolve(env, settings=settings)
    result = cached(resolved, settings, engine)
    if result is None:
        remote = open_remote(settings, registry, registry_ca, registry_insecure, required=True)
        assert remote is not None

        def log(line: str) -> None:
            if not quiet:
                click.echo(line, err=True)

        result = travel.fetch(resolved, remote=remote, engine=engine, log=log, started=started)
        if result is None:
            raise RegistryError(
                f"the registry {remote.registry.prefix} holds no image of {resolved.env.name} "
                f"with hash {resolved.hash[:12]}",
                hint=f"build it (envbuild build {env}) or push it from where it was built",
            )
    report(result, as_json=as_json, quiet=quiet)


def _base_session(
    registry: str | None, registry_ca: Path | None, registry_insecure: bool, quiet: bool
) -> tuple[DockerEngine, Remote, Callable[[str], None]]:
    """The engine, the registry (required) and the progress log of ``base push``/``pull``."""
    from envbuild.engine.docker import DockerEngine
    from envbuild.settings import load_settings

    settings = load_settings()
    engine = DockerEngine(settings.docker, state=settings.home)
    remote = open_remote(settings, registry, registry_ca, registry_insecure, required=True)
    assert remote is not None

    def log(line: str) -> None:
        if not quiet:
            click.echo(line, err=True)

    return engine, remote, log


@click.command(name="push")
@click.argument("ref")
@registry_options
@click.option("--json", "as_json", is_flag=True, help="Print where it went and its digest.")
@click.option("-q", "--quiet", is_flag=True, help="Do not show the push progress.")
def base_push(
    ref: str,
    registry: str | None,
    registry_ca: Path | None,
    registry_insecure: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Push the base image REF (e.g. debian:bookworm-slim) to the registry, so that
    locks can pin it there (`envbuild lock ENV --registry R`) and every machine
    builds on exactly this base.

    It goes to <registry>/<repository>:<tag> (debian:bookworm-slim becomes
    R/debian:bookworm-slim) and is verified like `envbuild push`.
    """
    from envbuild.build import travel

    engine, remote, log = _base_session(registry, registry_ca, registry_insecure, quiet)
    result = travel.push_base(ref, remote=remote, engine=engine, log=log)
    if as_json:
        _emit_json(result.to_json())
        return
    what = "pushed" if result.pushed else "already in the registry"
    click.echo(f"envbuild: {ref} is {result.pinned} ({what})", err=True)
    click.echo(result.pinned)


@click.command(name="pull")
@click.argument("ref")
@registry_options
@click.option("--json", "as_json", is_flag=True, help="Print what was pulled and its image ID.")
@click.option("-q", "--quiet", is_flag=True, help="Do not show the pull progress.")
def base_pull(
    ref: str,
    registry: str | None,
    registry_ca: Path | None,
    registry_insecure: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Fetch the base image REF that `envbuild base push` put in the registry, and tag
    it REF here.

    It comes from <registry>/<repository>:<tag>, pulled by the digest the
    registry serves, with the image ID it had where it was pushed from: a
    lock that pins that base is satisfied on this machine too.
    """
    from envbuild.build import travel

    engine, remote, log = _base_session(registry, registry_ca, registry_insecure, quiet)
    result = travel.pull_base(ref, remote=remote, engine=engine, log=log)
    if as_json:
        _emit_json(result.to_json())
        return
    click.echo(f"envbuild: {ref} is {result.pulled}", err=True)
    click.echo(f"{ref} {result.id}")


def register(group: click.Group) -> None:
    """Add the registry commands to the ``envbuild`` group (and ``base push``)."""
    for command in (push, pull):
        group.add_command(command)
    base = group.commands.get("base")
    if isinstance(base, click.Group):
        base.add_command(base_push)
        base.add_command(base_pull)
