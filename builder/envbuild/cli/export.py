"""``envbuild export kubernetes``: a distributed run written as Kubernetes manifests.

Takes ``envbuild run``'s options (the same table,
:data:`~envbuild.cli.run_options.RUN_OPTIONS`), plans the run as ``envbuild
run`` would, and hands the plan to :func:`envbuild.run.kubernetes.manifests`.
Inputs and outputs name volume claims (``--input data=pvc:CLAIM/path``); a
host path is refused, since no cluster can see it. Failures are reported by
:func:`envbuild.cli.exits.report` (exit 125 for a bad option, as ``run``).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import click

from envbuild.cli.completion import complete_env
from envbuild.cli.registry import registry_options
from envbuild.cli.run import declare_run_options
from envbuild.cli.run_options import run_config

# A reference by digest that stands in for the job image while the manifests are checked.
_PLACEHOLDER = "envbuild.invalid/job@sha256:" + "0" * 64
_REF = re.compile(r"\$\{\{\s*(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_-]*)\s*\}\}")


@click.group("export")
def export() -> None:
    """Write a run for another executor (Kubernetes)."""


@export.command(
    "kubernetes",
    context_settings={"allow_interspersed_args": False, "help_option_names": ["-h", "--help"]},
)
@click.argument("env", shell_complete=complete_env)
@click.argument("script")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "-o",
    "--out-dir",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder the manifests are written to (created).",
)
@click.option(
    "--image-ref",
    metavar="REPO@sha256:DIGEST",
    help="The job's image by digest, used as it is (it must hold the script at the workdir).",
)
@registry_options
@functools.partial(declare_run_options, config_only=True)
def kubernetes(
    env: str,
    script: str,
    args: tuple[str, ...],
    out_dir: Path,
    image_ref: str | None,
    registry: str | None,
    registry_ca: Path | None,
    registry_insecure: bool,
    **options: Any,
) -> None:
    """Write the distributed run of SCRIPT in ENV as Kubernetes manifests.

    PyTorch and TensorFlow become an Indexed Job and a headless Service, MPI a
    Kubeflow MPIJob (v2beta1). Inputs and outputs must name volume claims:
    --input data=pvc:CLAIM[/path], --output model=pvc:CLAIM[/path].

    With a registry (--registry or the registry setting) the source directory
    goes into a job image built on ENV's image (FROM it, the source copied to
    the workdir), pushed as REGISTRY/<env>-job:<job name>; the manifests name
    it by the digest the registry serves. Without one they name ENV's own
    image by its registry digest, which does not hold the source: the job
    then expects the script in the image at the workdir (a warning says so).
    """
    import envbuild.run as runner
    from envbuild.run.kubernetes import check_job_name, manifests, parse_volume, to_yaml

    volumes = []
    for text in options["inputs"]:
        name, _, rest = text.partition("=")
        if rest.endswith((":mount", ":download")):
            rest, _, mode = rest.rpartition(":")
            if mode == "download":
                from envbuild.errors import RunConfigError

                raise RunConfigError(
                    f"--input {text}: a download input cannot be expressed in Kubernetes",
                    hint=f"mount a volume claim: --input {name}=pvc:CLAIM[/path]",
                )
        volumes.append(parse_volume(rest, what="--input", name=name, read_only=True))
    for text in options["outputs"]:
        name, _, rest = text.partition("=")
        volumes.append(parse_volume(rest, what="--output", name=name, read_only=False))
    if options["mounts"]:
        from envbuild.errors import RunConfigError

        raise RunConfigError(
            f"--mount {options['mounts'][0]}: a host path cannot be expressed in Kubernetes",
            hint="map data to volume claims with --input NAME=pvc:CLAIM[/path]",
        )
    paths = {("inputs" if v.read_only else "outputs", v.name): v.target for v in volumes}

    def substitute(match: re.Match[str]) -> str:
        return paths.get((match.group(1), match.group(2)), match.group(0))

    arguments = tuple(_REF.sub(substitute, a) for a in args)
    values = {**options, "inputs": (), "outputs": ()}
    config = run_config(env, script, arguments, values)
    the_plan = runner.plan(config)
    for warning in the_plan.warnings:
        click.echo(warning, err=True)
    if config.distribution is None:
        from envbuild.errors import RunConfigError

        raise RunConfigError(
            "envbuild export kubernetes writes distributed jobs",
            hint="add --distribution mpi|pytorch|tensorflow --nodes N",
        )
    name = check_job_name(config.name or _default_name(the_plan))
    # Everything a cluster cannot express is refused before a job image is built and pushed.
    manifests(the_plan, name=name, image_ref=image_ref or _PLACEHOLDER, volumes=volumes)
    ref = image_ref or _job_image(the_plan, name, registry, registry_ca, registry_insecure)
    documents = manifests(the_plan, name=name, image_ref=ref, volumes=volumes)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.yaml"
    path.write_text(to_yaml(documents), encoding="utf-8")
    click.echo(str(path))


def _default_name(the_plan: Any) -> str:
    from envbuild.run.local import new_run_id

    return f"envbuild-{new_run_id()}"


def _job_image(
    the_plan: Any,
    name: str,
    registry: str | None,
    registry_ca: Path | None,
    registry_insecure: bool,
) -> str:
    """The reference by digest the manifests name: the job image pushed to the registry,
    or, with no registry, ENV's own image (and a warning that it lacks the source)."""
    from envbuild.build.jobimage import build_and_push
    from envbuild.cli.registry import open_remote
    from envbuild.engine.docker import DockerEngine
    from envbuild.errors import RunConfigError
    from envbuild.settings import load_settings

    settings = load_settings()
    engine = DockerEngine(settings.docker)
    info = engine.inspect_image(the_plan.image)
    if info is None:
        raise RunConfigError(
            f"image {the_plan.image} is not on this engine",
            hint="build it first: envbuild build ENV (or give --image-ref)",
        )
    remote = open_remote(settings, registry, registry_ca, registry_insecure, required=False)
    if remote is not None:
        job = build_and_push(
            base=the_plan.image,
            base_id=info.id,
            env_name=the_plan.env_name or name,
            tag=name,
            source=Path(the_plan.source.source),
            workdir=the_plan.source.target,
            remote=remote,
            engine=engine,
            log=lambda line: click.echo(line, err=True),
        )
        click.echo(f"envbuild: job image {job.ref} (source in {the_plan.source.target})", err=True)
        return job.ref
    ref = _image_digest(the_plan.image, info)
    click.echo(
        f"envbuild: warning: the manifests reference {ref}, ENV's own image, which does not "
        f"hold the source directory: the job expects {the_plan.config.script} under "
        f"{the_plan.source.target} in the image. Give --registry HOST[:PORT] to build and push "
        "a job image holding the source, or --image-ref an image of your own.",
        err=True,
    )
    return ref


def _image_digest(image: str, info: Any) -> str:
    """``REPO@sha256:...`` of ``image`` from the engine's RepoDigests."""
    from envbuild.errors import RunConfigError

    if not info.repo_digests:
        raise RunConfigError(
            f"image {image} has no registry digest: a cluster cannot pull it",
            hint="push it with envbuild push / envbuild build --push --registry HOST, "
            "or give --image-ref REPO@sha256:...",
        )
    return str(info.repo_digests[0])


def register(group: click.Group) -> None:
    """Add ``export`` to the envbuild command group."""
    group.add_command(export)
