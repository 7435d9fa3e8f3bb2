"""What a remembered catalog check depended on, listed and checked again cheaply.

A check that found nothing wrong is remembered with every file it depended on
(``publish --check``'s record, :mod:`envbuild.catalog.publish`; the record of a
green ``ci`` job, :mod:`envbuild.catalog.ci_record`): the catalog's environment
folders, the files of each (and of the folders they extend) and of the
published folder, each with its executable bit. :func:`listings_hold` says
whether those listings still hold. Standard library only: the console
script's ``ci`` fast path uses it without the definition model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from envbuild.catalog.results import discover
from envbuild.errors import EnvbuildError


def default_out(catalog: Path) -> Path:
    """The published folder beside ``catalog``: ``curated`` -> ``published``."""
    if catalog.name in ("", ".", ".."):  # "." or "..": name the real parent
        return catalog.resolve().parent / "published"
    return catalog.parent / "published"


def is_executable(path: Path) -> bool:
    """Whether ``path`` has an executable bit."""
    return bool(path.stat().st_mode & 0o111)


def files_under(folder: Path) -> dict[str, Path]:
    """Every file under ``folder`` by POSIX path relative to it (hidden files too)."""
    found: dict[str, Path] = {}
    for root, _, names in os.walk(folder):  # never descends into a symlinked folder
        for name in names:
            path = Path(root) / name
            found[path.relative_to(folder).as_posix()] = path
    return dict(sorted(found.items()))


def folder_listing(folder: Path) -> dict[str, bool]:
    """Every file under ``folder``: relative path -> whether it is executable."""
    return {rel: is_executable(path) for rel, path in files_under(folder).items()}


def listings_hold(data: Mapping[str, object], catalog: Path, out: Path) -> bool:
    """Whether the listings a record holds are still true: the same environment folders
    in ``catalog`` (``data["catalog"]``), the same files and executable bits in each
    folder of ``data["folders"]`` and in the published folder ``out``
    (``data["published"]``). Anything unreadable is ``False``; the recorded files'
    contents are :func:`envbuild.cache.memo.unchanged`'s to check.
    """
    try:
        if data["catalog"] != [str(folder) for folder in discover(catalog)]:
            return False
        folders = data["folders"]
        if not isinstance(folders, dict):
            return False
        for folder, listing in folders.items():
            if folder_listing(Path(folder)) != listing:
                return False
        return (folder_listing(out) if out.is_dir() else {}) == data["published"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EnvbuildError):
        return False
