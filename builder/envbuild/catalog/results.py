"""A catalog's environments, their order and how a catalog build reports them, cheap to import.

The parts of :mod:`envbuild.catalog.order` that need no definition model:
which folders a catalog holds (:func:`discover`), parents first
(:func:`parents_first`), one environment's outcome (:class:`CatalogResult`)
and the report ``build --all`` prints (:func:`progress_line`,
:func:`print_results`). The console script answers a catalog build that is
all cache hits from the memo with these (:mod:`envbuild.cli.launcher`),
without loading a definition; ``build --all`` itself uses the same ones.
Standard library and :mod:`envbuild.errors` only: no :mod:`dataclasses`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple, TextIO

from envbuild.cache.memo import DEFINITION_FILE
from envbuild.errors import DefinitionError, Problem


def discover(root: Path) -> list[Path]:
    """Every environment folder directly under ``root``, sorted by name."""
    if (root / DEFINITION_FILE).is_file():
        return [root.absolute()]
    if not root.is_dir():
        raise DefinitionError([Problem(str(root), "", "is not a folder of environments")])
    return sorted(p.absolute() for p in root.iterdir() if (p / DEFINITION_FILE).is_file())


def parents_first(
    folders: Iterable[Path], parents_of: Callable[[Path], Iterable[Path]]
) -> list[Path]:
    """``folders`` with every parent before its children (stable: by name otherwise).

    ``parents_of(folder)`` names the folders ``folder`` extends (as given). A
    parent outside ``folders`` is not added: it is built as part of its child.
    """
    wanted = {p.resolve(): p for p in folders}
    parents = {
        key: [r for r in (p.resolve() for p in parents_of(given)) if r in wanted]
        for key, given in wanted.items()
    }
    order: list[Path] = []
    done: set[Path] = set()

    def visit(node: Path) -> None:
        if node in done:
            return
        done.add(node)
        for parent in parents[node]:
            visit(parent)
        order.append(wanted[node])

    for key in sorted(wanted, key=lambda p: p.name):
        visit(key)
    return order


def progress_line(index: int, total: int, folder: Path, verb: str = "") -> str:
    """The line a catalog-wide command logs as it starts the ``index``-th environment (from 1)."""
    return f"envbuild: [{index}/{total}] {verb}{folder.name}"


class CatalogResult(NamedTuple):
    """One environment's outcome in a catalog build."""

    env: str  # the folder as given
    ok: bool
    cached: bool = False
    image: str | None = None
    hash: str | None = None
    seconds: float = 0.0
    error: str | None = None
    exit_code: int = 0
    tier: str | None = None  # who answered: "local", "registry" or "built"
    digest: str | None = None  # the registry digest, when a registry answered

    def to_json(self) -> dict[str, object]:
        """A JSON-ready mapping of this result."""
        data: dict[str, object] = {
            "env": self.env,
            "ok": self.ok,
            "cached": self.cached,
            "tier": self.tier,
            "image": self.image,
            "hash": self.hash,
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }
        if self.digest:
            data["digest"] = self.digest
        return data


def print_results(
    results: Sequence[CatalogResult],
    *,
    as_json: bool,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> None:
    """Print what ``build --all`` prints at the end: the JSON list (with ``as_json``) to
    ``out``, a line per environment and the count to ``err``."""
    out = out or sys.stdout
    err = err or sys.stderr
    if as_json:
        out.write(json.dumps([r.to_json() for r in results], indent=2, sort_keys=True) + "\n")
        out.flush()
    lines = [""]
    for r in results:
        status = "ok    " if r.ok else "FAILED"
        if not r.ok:
            what = r.error or ""
        elif r.tier == "registry":
            what = f"pulled {r.seconds:.1f}s"
        else:
            what = "cached" if r.cached else f"built {r.seconds:.1f}s"
        lines.append(f"{status} {Path(r.env).name:<28} {r.image or '':<45} {what.splitlines()[0]}")
    failed = [r for r in results if not r.ok]
    lines.append(f"{len(results) - len(failed)} built or cached, {len(failed)} failed")
    err.write("\n".join(lines) + "\n")
    err.flush()
