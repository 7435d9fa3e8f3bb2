"""Shell completion of ENV arguments: the environment folders under the typed path.

Completion itself is click's (``_ENVBUILD_COMPLETE=bash_source envbuild``, see
the README); this module only says which words an ENV may be: a folder that
holds an ``env.toml``, offered with its path as typed, and the environment
folders one level inside a folder that holds none (``cur`` offers
``curated/python-3.11``, ...), so a catalog completes in one step.
"""

from __future__ import annotations

from pathlib import Path

import click
from click.shell_completion import CompletionItem

from envbuild.cache.memo import DEFINITION_FILE


def _folders(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir())
    except OSError:  # unreadable, or gone while listing: nothing to offer
        return []


def _is_env(path: Path) -> bool:
    return (path / DEFINITION_FILE).is_file()


def env_folders(incomplete: str, *, cwd: Path | None = None) -> list[str]:
    """The environment folders whose path starts with ``incomplete``, as the user types them.

    ``cwd`` (default: the current folder) is where a relative ``incomplete``
    starts. Hidden folders are offered only when ``incomplete`` names a dot.
    """
    head, _, prefix = incomplete.rpartition("/")
    typed = f"{head}/" if head or incomplete.startswith("/") else ""
    base = Path(typed or ".")
    if not base.is_absolute() and cwd is not None:
        base = cwd / base
    found: list[str] = []
    for child in _folders(base):
        name = child.name
        if not name.startswith(prefix) or (name.startswith(".") and not prefix.startswith(".")):
            continue
        if _is_env(child):
            found.append(f"{typed}{name}")
            continue
        found.extend(
            f"{typed}{name}/{inner.name}"
            for inner in _folders(child)
            if not inner.name.startswith(".") and _is_env(inner)
        )
    return found


def complete_env(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """click's ``shell_complete`` for ENV arguments (see :func:`env_folders`)."""
    return [CompletionItem(path) for path in env_folders(incomplete)]
