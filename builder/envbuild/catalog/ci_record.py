"""The record of a green ``envbuild ci`` job that changed nothing, and its recall.

A registry's CI runs ``ci`` on every change, and most runs find nothing to
do: every image is in the engine and the registry, every test result is
recorded, the published folder is current. Such a job (its report green,
every build answered by the engine, nothing pushed, built, pulled or tested
again, no relock) is remembered by :func:`remember`, keyed on everything that
selects the job (:func:`identity`), with

* its report (``report.json``) and the log lines it wrote;
* every file it depended on, each with its stat and digest
  (:func:`envbuild.cache.memo.file_entries`): what the renders read, every
  environment folder's files and the published folder's, with the listings of
  the catalog, of each folder and of the published folder (the record of
  ``publish --check``, :mod:`envbuild.catalog.listing`), the test results the
  tests stage reused, each environment's memo record, and envbuild's source;
* the engine's state: each image's hash and version tag with the image ID it
  names (and the registry digest the push stage found among its repo
  digests), each locked base reference with its image ID, each unlocked base
  with the ID its hash holds;
* the registry's state: the digest each manifest HEAD of the push stage
  answered;
* with ``--since REF``, the commit REF named.

:func:`recall` checks all of it again (the files by stat, by content when a
stat differs; the engine in one batch of inspects; the registry in one batch
of HEADs; git once) and answers the report only when everything is as
recorded: any difference, or a question that cannot be answered, is a miss,
and the full job runs. Standard library only: the console script's ``ci``
fast path (:func:`envbuild.cli.launcher.ci_recorded`) uses it without the
definition model or click.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from envbuild import __version__
from envbuild.cache import memo
from envbuild.catalog.listing import listings_hold

if TYPE_CHECKING:
    from envbuild.settings import Settings

RECORD_FORMAT = 1
# Every module of envbuild: what any stage does (or reports) is decided somewhere in it.
SOURCES = ("",)


class _Image(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def repo_digests(self) -> tuple[str, ...]: ...


Inspect = Callable[[Sequence[str]], Sequence["_Image | None"]]  # refs -> the engine's images
Heads = Callable[[Sequence[tuple[str, str]]], Sequence["str | None"]]  # (name, tag) -> digest


def identity(
    *,
    catalog: Path,
    published: Path,
    registry: str,
    since: str | None,
    push: bool,
    relock: bool,
    settings: Settings,
) -> str:
    """What selects a job: the catalog and published folder (as named, and where they
    are), the registry, ``since``, ``push``, ``relock``, the settings that change a
    result, and this envbuild (version, interpreter and package folder)."""
    return "\0".join(
        [
            str(RECORD_FORMAT),
            __version__,
            memo.installation(),
            os.getcwd(),  # noqa: PTH109 - no Path on the fast path's way
            str(catalog),
            os.path.realpath(catalog),
            str(published),
            os.path.realpath(published),
            registry,
            "" if since is None else f"since={since}",
            f"push={push}",
            f"relock={relock}",
            settings.platform,
            settings.docker,
            str(settings.home),
            settings.prefix,
        ]
    )


def record_path(home: Path, ident: str) -> Path:
    """Where the record of the job ``ident`` names is kept (one file per job)."""
    data = ident.encode()
    # A checksum, not a digest (as the memo's): the record holds its identity.
    return home / "cache" / "ci" / f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}.json"


def since_commit(catalog: Path, ref: str) -> str | None:
    """The commit ``ref`` names in the repository holding ``catalog`` (``None`` if none)."""
    import subprocess

    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
            cwd=os.path.realpath(catalog),
            capture_output=True,
            check=False,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = proc.stdout.decode("ascii", "replace").strip()
    return commit if proc.returncode == 0 and commit else None


class Engine(NamedTuple):
    """The engine state a recorded job found."""

    images: dict[str, str]  # reference -> the image ID it named
    repo_digests: dict[str, list[str]]  # reference -> repo digests its image must list


def remember(
    home: Path,
    ident: str,
    *,
    report: Mapping[str, object],
    log: Sequence[str],
    listings: Mapping[str, object],
    inputs: list[list[object]],
    records: list[list[object]],
    engine: Engine,
    registry: Sequence[tuple[str, str, str]],
    since: str | None,
    started_ns: int,
) -> bool:
    """Write the record of the green no-op job ``ident``; whether it was written.

    ``listings``: the catalog's folders, each folder's files and the published folder's
    (``catalog``, ``folders``, ``published``, as :func:`listings_hold` reads them);
    ``inputs`` and ``records``: :func:`envbuild.cache.memo.file_entries` of every file
    it depended on: its inputs (definitions, published files, templates, envbuild's
    source), and envbuild's own records it read (memo, test results);
    ``registry``: ``(name, tag, digest)`` each manifest HEAD answered; ``since``: the
    commit ``--since`` named. Nothing is written when an input was changed after the
    job started (``started_ns``, wall clock): the report may predate the change.
    (A record may be rewritten during a job, a memo's stats refreshed: the content
    recorded is the one to find again.)
    """
    for entry in inputs:
        try:
            stat = os.stat(str(entry[0]))  # noqa: PTH116
        except FileNotFoundError:
            continue
        except OSError:
            return False
        if max(stat.st_mtime_ns, stat.st_ctime_ns) >= started_ns:
            return False
    record = {
        "for": ident,
        "report": dict(report),
        "log": list(log),
        "catalog": listings["catalog"],
        "folders": listings["folders"],
        "published": listings["published"],
        "files": [*inputs, *records],
        "images": engine.images,
        "repo_digests": engine.repo_digests,
        "registry": [list(item) for item in registry],
        "since": since,
    }
    return memo.write_record(record_path(home, ident), record)


def forget(home: Path, ident: str) -> None:
    """Drop the record of ``ident`` (a job that was not a green no-op replaces it)."""
    with contextlib.suppress(OSError):
        record_path(home, ident).unlink()


class Recalled(NamedTuple):
    """A recorded job still true: its report's JSON, its log lines, and what the
    checks took (seconds by kind: ``files``, ``engine``, ``registry``, ``git``)."""

    report: dict[str, Any]
    log: list[str]
    spent: dict[str, float]


def recall(
    home: Path,
    ident: str,
    *,
    catalog: Path,
    published: Path,
    since: str | None,
    inspect: Inspect,
    heads: Heads | None,
) -> Recalled | str:
    """The recorded job ``ident`` names, if everything it depended on is as recorded;
    else why not (a line for ``ENVBUILD_TRACE``).

    ``inspect`` asks the engine for several references at once; ``heads`` the
    registry for several manifests at once (``None``: no registry is named, and a
    record that needs one is a miss). An error of either is a miss too.
    """
    spent: dict[str, float] = {}
    clock = time.monotonic()
    try:
        data = json.loads(memo.read_record(record_path(home, ident)))
    except FileNotFoundError:
        return "no record of this job"
    except (OSError, ValueError) as exc:
        return f"the record cannot be read: {type(exc).__name__}"
    try:
        if data["for"] != ident:
            return "the record is another job's"
        if not listings_hold(data, catalog, published):
            return (
                "an environment folder, or a file in one or in the published folder, came or went"
            )
        restat = memo.unchanged(data["files"])
        if restat is None:
            return "a file the job depended on changed"
        spent["files"] = time.monotonic() - clock
        clock = time.monotonic()
        images: dict[str, str] = data["images"]
        wanted: dict[str, list[str]] = data["repo_digests"]
        refs = list(images)
        try:
            found = inspect(refs)
        except Exception as exc:
            return f"the engine did not answer: {type(exc).__name__}"
        for ref, info in zip(refs, found, strict=True):
            if info is None or info.id != images[ref]:
                return f"{ref} is no longer the image the job found"
            if not set(wanted.get(ref, ())) <= set(info.repo_digests):
                return f"{ref} no longer lists the registry digest the job found"
        spent["engine"] = time.monotonic() - clock
        clock = time.monotonic()
        asked = [(str(name), str(tag)) for name, tag, _ in data["registry"]]
        if asked:
            if heads is None:
                return "the job asked a registry, and none is named"
            try:
                answers = heads(asked)
            except Exception as exc:
                return f"the registry did not answer: {type(exc).__name__}"
            for (name, tag, digest), answer in zip(data["registry"], answers, strict=True):
                if answer != digest:
                    return f"the registry's {name}:{tag} is no longer {digest}"
        spent["registry"] = time.monotonic() - clock
        clock = time.monotonic()
        if data["since"] != (since_commit(catalog, since) if since is not None else None):
            return f"--since {since} names another commit"
        spent["git"] = time.monotonic() - clock
        report, log = data["report"], data["log"]
        if not isinstance(report, dict) or not isinstance(log, list):
            return "the record is malformed"
        if restat:  # e.g. after a checkout: the next run need not read the files again
            memo.write_record(
                record_path(home, ident), {**data, "files": memo.refreshed(data["files"])}
            )
        return Recalled(report, [str(line) for line in log], spent)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return f"the record is malformed: {type(exc).__name__}"
