"""``envbuild check``: a curated environment changes only with a new version.

An environment's *definition* is its ``env.toml``, the lock files beside it and
its base Dockerfile, and those of every parent it extends
(:func:`envbuild.catalog.order.definition_digest`). Against a baseline — the
published index (the digest recorded for each name and version), or the
catalog as it was at a git revision — each environment of the catalog is:

* ``new``: the baseline does not know its name;
* ``unchanged``: same version, same definition;
* ``bumped``: a higher version than any the baseline holds;
* **failing** when its definition changed but its version did not, or when its
  version went down: versions only go up.

Names the baseline knows and the catalog no longer holds are reported as
information (``deleted``): published versions stay published.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envbuild.catalog.order import definition_digest, definition_file_digests, discover
from envbuild.definition.model import Environment, load
from envbuild.errors import DefinitionError, EngineError, EnvbuildError, UsageError


@dataclass(frozen=True)
class Known:
    """What the baseline knows of one environment at one version."""

    name: str
    version: int
    digest: str
    files: Mapping[str, str] | None = None  # "<folder>/<file>" -> sha256, when recorded


@dataclass(frozen=True)
class Finding:
    """The verdict on one environment."""

    name: str
    status: str  # "new", "unchanged", "bumped", "changed", "decreased", "deleted"
    version: int | None
    message: str
    folder: str | None = None  # the env folder, as a person names it
    files: tuple[str, ...] = ()  # definition files that changed
    hint: str | None = None

    @property
    def failed(self) -> bool:
        """True for the findings that make ``envbuild check`` fail."""
        return self.status in ("changed", "decreased")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "name": self.name,
            "status": self.status,
            "failed": self.failed,
            "version": self.version,
            "message": self.message,
            "folder": self.folder,
            "files": list(self.files),
            "hint": self.hint,
        }


@dataclass(frozen=True)
class Baseline:
    """What the catalog is compared with."""

    description: str  # "the published index at published/" or "git revision HEAD~1"
    known: tuple[Known, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------


def published_baseline(published: Path) -> Baseline:
    """The published index: every name and version with its recorded definition."""
    from envbuild.catalog.publish import INDEX_JSON, MANIFEST, guard_out, read_json, version_folders

    where = f"the published index at {published}"
    guard_out(published)
    index = published / INDEX_JSON
    if not index.is_file():
        return Baseline(where, notes=(f"{index} does not exist: every environment is new",))
    try:
        rows = read_json(index)["environments"]
        known = []
        folders = version_folders(published)
        for row in rows:
            name, version = str(row["name"]), int(row["version"])
            files = None
            folder = folders.get((name, version))
            if folder is not None:
                files = read_json(folder / MANIFEST).get("definition", {}).get("files")
            known.append(Known(name, version, str(row["definition_digest"]), files))
    except (EnvbuildError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(
            f"{index}: cannot be read ({exc})",
            hint="run `envbuild publish --check` to see what is wrong with the published folder",
        ) from exc
    return Baseline(where, tuple(known))


def _git(cwd: Path, *args: str) -> bytes:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
    except OSError as exc:
        raise EngineError(f"cannot run git: {exc}", hint="install git") from exc
    if proc.returncode != 0:
        raise EngineError(
            f"git {' '.join(args)} failed: {proc.stderr.decode(errors='replace').strip()}"
        )
    return proc.stdout


def _materialise(toplevel: Path, ref: str, rel: str, dest: Path) -> int:
    """Write the files of ``rel`` (a folder of the repository) at ``ref`` under ``dest``."""
    listing = _git(toplevel, "ls-tree", "-r", "-z", "--full-tree", ref, "--", rel)
    count = 0
    for entry in listing.split(b"\0"):
        if not entry:
            continue
        meta, _, path_bytes = entry.partition(b"\t")
        mode, kind, obj = meta.split()
        if kind != b"blob" or mode == b"120000":  # submodules and symlinks are not definitions
            continue
        path = path_bytes.decode("utf-8", "replace")
        parts = path.split("/")
        if path.startswith("/") or any(p in ("", ".", "..", ".git") for p in parts):
            raise UsageError(
                f"{ref}: the tree holds the path {path!r}, which a checkout cannot hold",
                hint="the commit was not made by git from a working tree; compare with "
                "another revision",
            )
        target = dest.joinpath(*parts)
        if not target.resolve().is_relative_to(dest.resolve()):
            raise UsageError(f"{ref}: the path {path!r} leads out of the checkout")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_git(toplevel, "cat-file", "blob", obj.decode()))
        count += 1
    return count


def git_baseline(catalog: Path, ref: str, envs: Sequence[Environment], tmp: Path) -> Baseline:
    """The catalog (and the parents its environments extend) as they were at ``ref``."""
    root = catalog.resolve()
    try:
        top = _git(root, "rev-parse", "--show-toplevel").decode().strip()
    except EnvbuildError as exc:
        raise UsageError(
            f"--since needs a git repository: {exc.message}",
            hint=f"run it inside the repository that holds {catalog}, or compare with "
            "the published index (leave out --since)",
        ) from None
    toplevel = Path(top).resolve()
    try:
        _git(toplevel, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except EnvbuildError:
        raise UsageError(
            f"--since {ref}: no such commit in {toplevel.name}",
            hint="name a commit, branch or tag, e.g. --since origin/main or --since HEAD~1",
        ) from None
    folders = {root}
    folders.update(p.resolve() for env in envs for p in env.parents)
    for folder in sorted(folders):
        try:
            rel = folder.relative_to(toplevel).as_posix()
        except ValueError:
            continue  # outside the repository: nothing to compare with
        _materialise(toplevel, ref, rel, tmp)
    old_root = tmp / root.relative_to(toplevel)
    known: list[Known] = []
    notes: list[str] = []
    if old_root.is_dir():
        for folder in discover(old_root):
            try:
                env = load(folder)
            except DefinitionError as exc:
                notes.append(f"{folder.name} at {ref} does not load ({exc.problems[0].message})")
                continue
            known.append(
                Known(env.name, env.version, definition_digest(env), definition_file_digests(env))
            )
    else:
        notes.append(f"{root.name}/ does not exist at {ref}: every environment is new")
    return Baseline(f"git revision {ref}", tuple(known), tuple(notes))


# --------------------------------------------------------------------------
# The verdict
# --------------------------------------------------------------------------


def _changed_files(now: Mapping[str, str], then: Mapping[str, str] | None) -> tuple[str, ...]:
    if then is None:
        return ()
    names = sorted(set(now) | set(then))
    return tuple(n for n in names if now.get(n) != then.get(n))


def _describe(files: Sequence[str], env: Environment) -> str:
    own = env.path.name
    parts = []
    for name in files:
        folder = name.split("/", 1)[0]
        parts.append(name if folder == own else f"{name} (extended parent)")
    return ", ".join(parts)


def judge(
    envs: Sequence[Environment], baseline: Baseline, *, show: Path | None = None
) -> list[Finding]:
    """Compare each environment with ``baseline``; sorted by name, deletions last."""
    by_name: dict[str, list[Known]] = {}
    for item in baseline.known:
        by_name.setdefault(item.name, []).append(item)
    findings: list[Finding] = []
    for env in sorted(envs, key=lambda e: e.name):
        shown = _shown(env.path, show)
        toml = f"{shown}/env.toml"
        known = by_name.get(env.name, [])
        if not known:
            findings.append(Finding(env.name, "new", env.version, "new environment", shown))
            continue
        highest = max(k.version for k in known)
        same = next((k for k in known if k.version == env.version), None)
        if env.version < highest:
            findings.append(
                Finding(
                    env.name,
                    "decreased",
                    env.version,
                    f"version went down from {highest} to {env.version}: versions only go up",
                    shown,
                    hint=f"set `version = {highest + 1}` in {toml}",
                )
            )
        elif same is None:
            bumped = f"version {highest} -> {env.version}"
            findings.append(Finding(env.name, "bumped", env.version, bumped, shown))
        elif definition_digest(env) == same.digest:
            findings.append(Finding(env.name, "unchanged", env.version, "unchanged", shown))
        else:
            files = _changed_files(definition_file_digests(env), same.files)
            what = _describe(files, env) if files else "its definition files"
            findings.append(
                Finding(
                    env.name,
                    "changed",
                    env.version,
                    f"changed without a version bump (still version {env.version}): {what}",
                    shown,
                    files,
                    hint=f"bump `version` in {toml} to {highest + 1}",
                )
            )
    names = {e.name for e in envs}
    for name in sorted(set(by_name) - names):
        highest = max(k.version for k in by_name[name])
        findings.append(
            Finding(
                name,
                "deleted",
                highest,
                f"no longer in the catalog (was version {highest} in {baseline.description})",
            )
        )
    return findings


def _shown(path: Path, base: Path | None) -> str:
    base = base or Path.cwd()
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path)


def _known(loaded: Mapping[Path, Environment], folder: Path) -> Environment | None:
    env = loaded.get(folder)
    return env if env is not None and env.path == folder else None


def check_catalog(
    catalog: Path,
    *,
    published: Path | None = None,
    since: str | None = None,
    loaded: Mapping[Path, Environment] | None = None,
) -> tuple[Baseline, list[Finding]]:
    """Judge every environment of ``catalog`` against git ``since`` or the ``published`` index.

    ``loaded``: environments the caller already loaded, by folder as :func:`discover`
    names it (any other folder, or one loaded from another path, is loaded here).
    """
    known = loaded or {}
    envs = [_known(known, folder) or load(folder) for folder in discover(catalog)]
    if since is not None:
        with tempfile.TemporaryDirectory(prefix="envbuild-check-") as tmp:
            baseline = git_baseline(catalog, since, envs, Path(tmp))
            return baseline, judge(envs, baseline)
    if published is None:
        from envbuild.catalog.publish import default_out

        published = default_out(catalog)
    baseline = published_baseline(published)
    return baseline, judge(envs, baseline)
