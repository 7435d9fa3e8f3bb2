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
import stat
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
    return _walk(folder)[0]


def unfollowed(folder: Path) -> list[str]:
    """Every entry under ``folder`` that is neither a folder nor a regular file (a
    symlink, a FIFO, a device, a socket), as ``"PATH (a symlink)"`` or ``"PATH (not a
    regular file)"``: what publish refuses in its output folder, and what a recorded
    check never stands for (a symlink may lead out of its folder)."""
    return _walk(folder)[1]


def _walk(folder: Path) -> tuple[dict[str, bool], list[str]]:
    """:func:`folder_listing` and :func:`unfollowed` of ``folder``, in one walk."""
    found: dict[str, bool] = {}
    odd: list[str] = []
    for root, dirs, names in os.walk(folder):  # never descends into a symlinked folder
        for name in dirs:
            path = Path(root) / name
            if path.is_symlink():
                odd.append(f"{path} (a symlink)")
        for name in names:
            path = Path(root) / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                odd.append(f"{path} (a symlink)")
                try:
                    mode = path.stat().st_mode  # listed with its target's bits
                except OSError:  # a dangling link: named in ``odd`` all the same
                    mode = 0
            elif not stat.S_ISREG(mode):
                odd.append(f"{path} (not a regular file)")
            found[path.relative_to(folder).as_posix()] = bool(mode & 0o111)
    return dict(sorted(found.items())), odd


def listings_hold(data: Mapping[str, object], catalog: Path, out: Path) -> bool:
    """Whether the listings a record holds are still true: the same environment folders
    in ``catalog`` (``data["catalog"]``), the same files and executable bits in each
    folder of ``data["folders"]`` and in the published folder ``out``
    (``data["published"]``), none of them holding a symlink or anything but folders
    and regular files (:func:`unfollowed`: the full check decides about those).
    Anything unreadable is ``False``; the recorded files' contents are
    :func:`envbuild.cache.memo.unchanged`'s to check.
    """
    try:
        if data["catalog"] != [str(folder) for folder in discover(catalog)]:
            return False
        folders = data["folders"]
        if not isinstance(folders, dict):
            return False
        for folder, listing in folders.items():
            if _walk(Path(folder)) != (listing, []):
                return False
        if out.is_symlink():
            return False
        return (_walk(out) if out.is_dir() else ({}, [])) == (data["published"], [])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EnvbuildError):
        return False
