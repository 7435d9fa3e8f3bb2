"""The ``lock`` and ``explain`` commands (registered on the main group by envbuild.cli.main)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from envbuild.cli.completion import complete_env
from envbuild.cli.registry import registry_options
from envbuild.errors import EXIT_FAILURE

ENV_ARG = click.argument("env", type=click.Path(path_type=Path), shell_complete=complete_env)


def _emit_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def _settings() -> Any:
    from envbuild.settings import load_settings

    return load_settings()


@click.command()
@ENV_ARG
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing: exit 1 if a lock is missing or stale (offline; for CI).",
)
@click.option(
    "--ca-bundle",
    type=click.Path(path_type=Path, dir_okay=False),
    help="CA bundle for the package indexes (default: $PIP_CERT, $REQUESTS_CA_BUNDLE, "
    "$SSL_CERT_FILE).",
)
@click.option(
    "--bump",
    is_flag=True,
    help="Raise `version` in env.toml by one when a lock file changed (the image changes "
    "with its locks): the fix for a base that moved since the lock.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was locked as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Do not show progress.")
@registry_options
def lock(
    env: Path,
    check: bool,
    bump: bool,
    ca_bundle: Path | None,
    as_json: bool,
    quiet: bool,
    registry: str | None,
    registry_ca: Path | None,
    registry_insecure: bool,
) -> None:
    """Pin ENV's inputs in lock files beside its env.toml (commit them).

    \b
    env.lock.toml       the index: the base image pinned (registry digest, or
                        image ID when the engine holds no digest) and what
                        each lock was made from
    requirements.lock   pip requirements with hashes, resolved by uv for the
                        environment's Python version and platform
    conda-linux-64.lock conda-lock's explicit lock of [conda]

    Builds then install exactly these pins (pip with --require-hashes).
    With --registry (or the registry setting) holding the base (`envbuild
    base push`), the base is pinned by its digest there, and a machine that
    lacks it pulls exactly that base.
    """
    import envbuild.lock as locking
    from envbuild.build.builder import find_ca_bundle
    from envbuild.definition.model import load

    find_ca_bundle(ca_bundle)  # a file named here that cannot be read is a usage error, first
    settings = _settings()
    environment = load(env)
    if check and bump:
        raise click.UsageError("--check writes nothing: it cannot --bump")
    if check:
        reasons = locking.check(environment, settings.platform)
        if as_json:
            _emit_json({"folder": str(environment.path), "stale": reasons, "ok": not reasons})
        if reasons:
            if not as_json:
                click.echo(
                    f"{environment.path}: locks are stale:\n"
                    + "\n".join(f"  - {r}" for r in reasons)
                    + f"\n  hint: run `envbuild lock {env}` and commit the lock files",
                    err=True,
                )
            raise SystemExit(EXIT_FAILURE)
        if not as_json:
            click.echo(f"{environment.path}: locks are current", err=True)
        return
    from envbuild.cli.registry import open_remote
    from envbuild.engine.docker import DockerEngine

    remote = open_remote(settings, registry, registry_ca, registry_insecure, required=False)
    result = locking.lock(
        environment,
        settings=settings,
        engine=DockerEngine(settings.docker),
        ca_bundle=find_ca_bundle(ca_bundle),
        log=(lambda line: None) if quiet else (lambda line: click.echo(line, err=True)),
        registry=remote.registry if remote else None,
        client=remote.client if remote else None,
    )
    version = None
    if bump and result.written:
        from envbuild.definition.model import bump_version

        version = bump_version(environment)
    if as_json:
        _emit_json({**result.to_json(), "version": version or environment.version})
        return
    for name in result.written:
        click.echo(f"wrote {environment.path / name}", err=True)
    if version is not None:
        click.echo(
            f"raised version {environment.version} -> {version} in {environment.definition_file}",
            err=True,
        )
    if result.unchanged and not result.written:
        click.echo(f"{environment.path}: locks unchanged", err=True)


@click.command()
@ENV_ARG
@click.option(
    "--against",
    "against",
    metavar="IMAGE",
    help="Compare with this image (default: the last image built for ENV).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the explanation as JSON.")
def explain(env: Path, against: str | None, as_json: bool) -> None:
    """Print the inputs of ENV's hash, and which of them changed since an image.

    Without --against, ENV is compared with the last image built for it (found
    by its labels); changes are named down to the pin, e.g.
    "requirements.lock: six 1.16.0 -> 1.15.0".
    """
    import envbuild.lock as locking
    from envbuild.build.builder import resolve
    from envbuild.cache.hashing import manifest
    from envbuild.catalog.explain import explain as do_explain
    from envbuild.catalog.explain import last_image
    from envbuild.engine.docker import DockerEngine
    from envbuild.errors import EngineError

    settings = _settings()
    engine = DockerEngine(settings.docker)
    resolved = resolve(env, settings=settings, engine=engine)  # an unlocked base: its identity
    context = resolved.context
    image = None
    if against is not None:
        image = engine.inspect_image(against)
        if image is None:
            raise EngineError(f"no image {against} in the engine")
    else:
        image = last_image(engine, resolved.env.name, settings.prefix)
    result = do_explain(
        context,
        resolved.hash,
        platform=settings.platform,
        manifest=manifest(context, platform=settings.platform),
        image=image,
        image_ref=against,
        unlocked=tuple(locking.unlocked_reasons(resolved.env, locking.read(resolved.env.path))),
    )
    if as_json:
        _emit_json(result.to_json())
    else:
        click.echo(result.render(), nl=False)


def register(group: click.Group) -> None:
    """Add ``lock`` and ``explain`` to the main command group."""
    group.add_command(lock)
    group.add_command(explain)
