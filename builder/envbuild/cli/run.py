"""The run layer's commands: ``envbuild run``, ``envbuild runs``, ``envbuild logs``.

A thin layer over :mod:`envbuild.run` and :mod:`envbuild.run.history`, which are
imported inside the commands: every envbuild invocation imports this module.

``envbuild run`` follows ``docker run``: options before ENV are envbuild's;
everything after SCRIPT goes to the script verbatim (``-e x`` included, no
``--`` needed); its exit code is the script's, else 125 (envbuild or the
engine failed, bad usage included), 126 (the script cannot be executed), 127
(the script does not exist), 124 (``--timeout``), 130/143 (interrupted).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from envbuild.cli.completion import complete_env
from envbuild.cli.run_options import RUN_OPTIONS, run_config
from envbuild.errors import EXIT_RUN_ENGINE, HistoryError

_RUN_EPILOG = """\b
Inputs, outputs and placeholders:
  --input data=./mnist            read-only at /inputs/data
  --input data=./mnist:download   copied in before the script starts
  --output model=./out            writable at /outputs/model, files owned by you
  ARGS may say ${{inputs.data}} and ${{outputs.model}}: they become those paths.

\b
Exit codes:
  the script's own (128+N if it died of signal N)
  124  --timeout expired
  125  envbuild or the engine failed (bad usage included); nothing was left behind
  126  the script cannot be executed
  127  the script was not found
  130/143  interrupted (SIGINT/SIGTERM); the container was removed
"""


class _RunCommand(click.Command):
    """``docker run``'s convention: a usage error is envbuild's failure, 125, not 2."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            # click 8.5 declares exit_code a ClassVar; the instance attribute still
            # wins where click reads it (older clicks have no ClassVar).
            exc.exit_code = EXIT_RUN_ENGINE  # type: ignore[misc,unused-ignore]
            raise


def declare_run_options(command: Any, *, config_only: bool = False) -> Any:
    """Add :data:`~envbuild.cli.run_options.RUN_OPTIONS` to ``command``, in their order
    (with ``config_only``, only those that become part of the run's configuration)."""
    for option in reversed(RUN_OPTIONS):
        if config_only and not option.config:
            continue
        command = click.option(
            *option.names,
            option.dest,
            is_flag=option.flag,
            multiple=option.multiple,
            default=option.initial,
            show_default=option.show_default,
            metavar=option.metavar,
            help=option.help,
        )(command)
    return command


@click.command(
    cls=_RunCommand,
    epilog=_RUN_EPILOG,
    context_settings={
        # Options end at ENV: what follows SCRIPT is the script's, `-e x` included.
        "allow_interspersed_args": False,
        "help_option_names": ["-h", "--help"],
    },
)
@click.argument("env", shell_complete=complete_env)
@click.argument("script")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@declare_run_options
def run(env: str, script: str, args: tuple[str, ...], **options: Any) -> None:
    """Run SCRIPT with ARGS in the environment ENV (a folder, or image:REF).

    ENV is built first if its image does not exist. Everything after SCRIPT
    goes to the script as it is.
    """
    import envbuild.run as runner

    config = run_config(env, script, args, options)
    if options["dry_run"]:
        resolved = runner.plan(config)
        for warning in resolved.warnings:
            click.echo(warning, err=True)
        _print_plan(resolved.to_json(), options["as_json"])
        return
    result = runner.run(config, log=_Log(options["quiet"]))
    click.get_current_context().exit(result.exit_code)


class _Log:
    """envbuild's messages to stderr; build-log lines only without --quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, line: str) -> None:
        if self.quiet and not line.startswith(("envbuild:", "warning:")):
            return
        click.echo(line, err=True)


def _print_plan(doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    env = doc["environment"]
    what = f"{env['name']} v{env['version']} ({env['hash'][:12]})" if env["name"] else "-"
    lines = [
        f"environment  {what}",
        f"image        {doc['image']}",
        f"argv         {json.dumps(doc['argv'], ensure_ascii=False)}",
        f"workdir      {doc['workdir']}",
        f"user         {doc['user']}",
        f"variables    {', '.join(doc['variables'])}",
        f"shm size     {doc['shm_size']}",
        f"gpus         {json.dumps(doc['gpus']) if doc['gpus'] else 'none (hidden)'}",
    ]
    for mount in doc["mounts"]:
        mode = "ro" if mount["read_only"] else "rw"
        lines.append(f"mount        {mount['source']} -> {mount['target']} ({mode})")
    for name, item in doc["inputs"].items():
        if item["mode"] == "download":
            lines.append(f"input        {name}: {item['host']} copied to {item['container']}")
    snapshot = doc.get("snapshot")
    if snapshot:
        lines.append(f"snapshot     {snapshot['source']} copied to {snapshot['path']} (writable)")
        lines.append(f"  keeps      {', '.join(snapshot['kept'])}")
        if snapshot["azureml_context"]:
            lines.append(f"  metrics    {snapshot['metrics_file']} (azureml.core on PYTHONPATH)")
    if doc["timeout"]:
        lines.append(f"timeout      {doc['timeout']}s")
    privileges = doc["privileges"]
    dropped = ", ".join(privileges["cap_drop"]) or "none"
    nnp = ", no-new-privileges" if privileges["no_new_privileges"] else ""
    lines.append(f"privileges   {privileges['mode']}: drops {dropped}{nnp}")
    distribution = doc["distribution"]
    if distribution:
        lines.append(
            f"distribution {distribution['kind']}: {len(distribution['containers'])} nodes, "
            f"world size {distribution['world_size']}"
        )
        for node in distribution["containers"]:
            variables = " ".join(f"{k}={v}" for k, v in node["environment"].items())
            lines.append(f"node {node['index']:<7} {node['container']} ({node['role']})")
            lines.append(f"  argv       {json.dumps(node['argv'], ensure_ascii=False)}")
            lines.append(f"  adds       {variables}")
    click.echo("\n".join(lines))


def _history(*, reap: bool = False) -> Any:
    """The run history; with ``reap``, first settle what dead envbuild processes left."""
    from envbuild.run.history import History
    from envbuild.settings import load_settings

    settings = load_settings()
    if reap:
        from envbuild.engine.docker import DockerEngine
        from envbuild.run.reaper import reap as reap_leftovers

        reap_leftovers(DockerEngine(settings.docker), settings.home)
    return History.at(settings)


def _duration(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 120 else f"{value / 60:.1f}m"


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.option("-n", "--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--all", "show_all", is_flag=True, help="Every recorded run.")
@click.pass_context
def runs(ctx: click.Context, as_json: bool, limit: int, show_all: bool) -> None:
    """List recent runs (newest first); `runs show ID` for one run."""
    if ctx.invoked_subcommand is not None:
        return
    records = _history(reap=True).list(None if show_all else limit)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in records], indent=2, sort_keys=True))
        return
    if not records:
        click.echo("no runs recorded", err=True)
        return
    click.echo(f"{'ID':<12}  {'STARTED (UTC)':<19}  {'ENV':<20}  {'SCRIPT':<24}  EXIT  DURATION")
    for r in records:
        env = f"{r.env_name}:{r.env_version}" if r.env_name else r.image
        exit_code = "-" if r.exit_code is None else str(r.exit_code)
        if r.status not in ("exited", "running"):
            exit_code += f" ({r.status})"
        script = r.script or " ".join(r.argv)
        click.echo(
            f"{r.id:<12}  {r.started_at[:19].replace('T', ' '):<19}  {env[:20]:<20}  "
            f"{script[:24]:<24}  {exit_code:<4}  {_duration(r.duration)}"
        )


@runs.command("show")
@click.argument("run_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def runs_show(run_id: str, as_json: bool) -> None:
    """Everything recorded about run ID (a unique prefix is enough)."""
    record = _history(reap=True).get(run_id)
    doc = record.to_json()
    kept = _kept_files(record.id) if record.files_dir else []
    if as_json:
        click.echo(json.dumps({**doc, "files": kept}, indent=2, sort_keys=True))
        return
    sections = ("metrics", "tags")
    for key, value in doc.items():
        if key in sections:
            continue
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        click.echo(f"{key:<12} {shown}")
    for key in sections:
        for name, value in sorted(doc[key].items()):
            shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            click.echo(f"{key[:-1]:<12} {name}: {shown}")
    for name in kept:
        click.echo(f"{'file':<12} {name}")


def _kept_files(run_id: str) -> list[str]:
    from envbuild.run.files import kept_files

    return kept_files(run_id)


@runs.command("files")
@click.argument("run_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def runs_files(run_id: str, as_json: bool) -> None:
    """List the files run ID kept (what it wrote under ./outputs and ./logs).

    Runs keep files with `envbuild run --snapshot` or `--azureml-context`.
    """
    from envbuild.run.files import kept_files

    record = _history().get(run_id)
    names = kept_files(record.id)
    if as_json:
        doc = {"id": record.id, "files_dir": record.files_dir, "files": names}
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    for name in names:
        click.echo(name)


@runs.command("download")
@click.argument("run_id", metavar="ID")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option(
    "-o",
    "--output",
    "destination",
    metavar="PATH",
    help="Where to: a folder (made if missing; end it with / for one NAME), or a file "
    "name for one NAME. "
    "Default: the current folder.",
)
@click.option(
    "--prefix", default="", metavar="PREFIX", help="Every kept file whose name starts so."
)
def runs_download(
    run_id: str, names: tuple[str, ...], destination: str | None, prefix: str
) -> None:
    """Copy files run ID kept (names as `envbuild runs files ID` lists them).

    With no NAME, every kept file (or those under --prefix) is copied with its
    path, e.g. PATH/outputs/model.txt.
    """
    from envbuild.run.files import fetch, fetch_all

    record = _history().get(run_id)
    target = Path(destination) if destination else Path()
    if names and prefix:
        raise click.UsageError("give NAMEs or --prefix, not both")
    if not names:
        copies = fetch_all(record.id, target, prefix)
    else:
        if len(names) > 1 or target.is_dir() or destination is None or destination.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
        copies = [fetch(record.id, name, target) for name in names]
    for copy in copies:
        click.echo(str(copy))


@click.command("logs")
@click.argument("run_id", metavar="ID")
def logs(run_id: str) -> None:
    """Print the whole output of run ID (stdout and stderr, as they came)."""
    record = _history().get(run_id)
    path = Path(record.log_path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise HistoryError(f"cannot read the log of run {record.id}: {exc}") from exc
    with handle:
        out = sys.stdout.buffer
        while chunk := handle.read(1 << 20):
            out.write(chunk)
        out.flush()


def register(group: click.Group) -> None:
    """Add ``run``, ``runs`` and ``logs`` to the envbuild command group."""
    for command in (run, runs, logs):
        group.add_command(command)
