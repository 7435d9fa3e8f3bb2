"""`envbuild check`: a changed definition needs a version bump; versions only go up.

Each test works on a temporary copy of the curated catalog, against the
published index (publish into the copy first) or against git (--since).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from envbuild.catalog import publish as pub
from envbuild.catalog.check import check_catalog
from envbuild.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = "linux/amd64"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of curated/ in tmp_path/repo/curated."""
    shutil.copytree(ROOT / "curated", tmp_path / "repo" / "curated")
    return tmp_path / "repo"


def edit(env_toml: Path, *, version: int | None = None, change: bool = False) -> None:
    """Set the version and/or change the definition (its description)."""
    text = env_toml.read_text(encoding="utf-8")
    if version is not None:
        text = re.sub(r"(?m)^version = \d+$", f"version = {version}", text)
    if change:
        text = text.replace('description = "', 'description = "(changed) ', 1)
    env_toml.write_text(text, encoding="utf-8")


def version_of(env_toml: Path) -> int:
    """The version an env.toml declares now (the catalog's versions move on)."""
    found = re.search(r"(?m)^version = (\d+)$", env_toml.read_text(encoding="utf-8"))
    assert found is not None
    return int(found.group(1))


def run_check(
    repo: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, dict[str, Any]]:
    capsys.readouterr()
    code = main(["check", "--json", "--catalog", str(repo / "curated"), *args])
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    return code, captured.err, {f["name"]: f for f in data["findings"]}


# --------------------------------------------------------------------------
# Against the published index (the default)
# --------------------------------------------------------------------------


@pytest.fixture
def published(repo: Path) -> Path:
    pub.publish(repo / "curated", repo / "published", platform=PLATFORM)
    return repo / "published"


def test_unchanged_passes(repo: Path, published: Path, capsys) -> None:
    code, err, findings = run_check(repo, capsys)
    assert code == 0
    assert {f["status"] for f in findings.values()} == {"unchanged"}
    assert "against the published index" in err


def test_unbumped_change_is_caught(repo: Path, published: Path, capsys) -> None:
    version = version_of(repo / "curated/pytorch-1.6-gpu/env.toml")
    edit(repo / "curated/pytorch-1.6-gpu/env.toml", change=True)
    code, err, findings = run_check(repo, capsys)
    assert code == 1
    bad = findings["pytorch-1.6-gpu"]
    assert bad["status"] == "changed" and bad["failed"]
    assert bad["files"] == ["pytorch-1.6-gpu/env.toml"]
    assert (
        f"changed without a version bump (still version {version}): pytorch-1.6-gpu/env.toml" in err
    )
    assert "hint: bump `version` in " in err and f"pytorch-1.6-gpu/env.toml to {version + 1}" in err
    assert findings["python-3.8"]["status"] == "unchanged"


def test_a_new_lock_file_is_a_change(repo: Path, published: Path, capsys) -> None:
    (repo / "curated/sklearn-1.5-cpu/requirements.lock").write_text("scikit-learn==1.5.2\n")
    code, _, findings = run_check(repo, capsys)
    assert code == 1
    assert findings["sklearn-1.5-cpu"]["files"] == ["sklearn-1.5-cpu/requirements.lock"]


def test_parent_change_needs_the_children_bumped_too(repo: Path, published: Path, capsys) -> None:
    version = version_of(repo / "curated/python-3.8/env.toml")
    edit(repo / "curated/python-3.8/env.toml", version=version + 1, change=True)
    code, _, findings = run_check(repo, capsys)
    assert code == 1
    assert findings["python-3.8"]["status"] == "bumped"
    child = findings["pytorch-1.6-gpu"]
    assert child["status"] == "changed"
    assert "python-3.8/env.toml (extended parent)" in child["message"]


def test_bumped_change_passes(repo: Path, published: Path, capsys) -> None:
    version = version_of(repo / "curated/pytorch-1.6-gpu/env.toml")
    edit(repo / "curated/pytorch-1.6-gpu/env.toml", version=version + 1, change=True)
    code, _, findings = run_check(repo, capsys)
    assert code == 0
    assert findings["pytorch-1.6-gpu"]["status"] == "bumped"
    assert findings["pytorch-1.6-gpu"]["message"] == f"version {version} -> {version + 1}"
    # Once published, the new version is the baseline and the old one stays history.
    pub.publish(repo / "curated", published, platform=PLATFORM)
    assert (published / f"pytorch-1.6-gpu/{version}/Dockerfile").is_file()
    code, _, findings = run_check(repo, capsys)
    assert code == 0 and findings["pytorch-1.6-gpu"]["status"] == "unchanged"


def test_version_decrease_is_caught(repo: Path, published: Path, capsys) -> None:
    version = version_of(repo / "curated/python-3.11/env.toml")
    edit(repo / "curated/python-3.11/env.toml", version=version + 1)
    pub.publish(repo / "curated", published, platform=PLATFORM)
    edit(repo / "curated/python-3.11/env.toml", version=version)  # back to the old definition
    code, err, findings = run_check(repo, capsys)
    assert code == 1
    assert findings["python-3.11"]["status"] == "decreased"
    assert f"version went down from {version + 1} to {version}: versions only go up" in err
    assert findings["python-3.11"]["hint"].startswith(f"set `version = {version + 2}` in ")


def test_new_and_deleted_environments(repo: Path, published: Path, capsys) -> None:
    shutil.copytree(repo / "curated/python-3.11", repo / "curated/python-3.11-extra")
    edit(repo / "curated/python-3.11-extra/env.toml")
    toml = repo / "curated/python-3.11-extra/env.toml"
    toml.write_text(toml.read_text().replace('name = "python-3.11"', 'name = "py-extra"'))
    shutil.rmtree(repo / "curated/tensorflow-2.16-cpu")
    code, err, findings = run_check(repo, capsys)
    assert code == 0
    assert findings["py-extra"]["status"] == "new"
    assert findings["tensorflow-2.16-cpu"]["status"] == "deleted"
    assert "info  tensorflow-2.16-cpu" in err


def test_no_published_index_means_everything_is_new(repo: Path, capsys) -> None:
    code, err, findings = run_check(repo, capsys)
    assert code == 0 and {f["status"] for f in findings.values()} == {"new"}
    assert "index.json does not exist" in err


# --------------------------------------------------------------------------
# Against git: --since REF
# --------------------------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.fixture
def git_repo(repo: Path) -> Path:
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "curated")
    git(repo, "commit", "-q", "-m", "catalog")
    return repo


def test_since_unchanged_passes(git_repo: Path, capsys) -> None:
    code, err, findings = run_check(git_repo, capsys, "--since", "HEAD")
    assert code == 0 and {f["status"] for f in findings.values()} == {"unchanged"}
    assert "against git revision HEAD" in err


def test_since_unbumped_change_is_caught(git_repo: Path, capsys) -> None:
    edit(git_repo / "curated/sklearn-1.5-cpu/env.toml", change=True)
    code, _, findings = run_check(git_repo, capsys, "--since", "HEAD")
    assert code == 1
    assert findings["sklearn-1.5-cpu"]["status"] == "changed"
    assert findings["sklearn-1.5-cpu"]["files"] == ["sklearn-1.5-cpu/env.toml"]
    # committed or not, the change is measured from REF
    git(git_repo, "commit", "-qam", "change")
    code, _, findings = run_check(git_repo, capsys, "--since", "HEAD~1")
    assert code == 1 and findings["sklearn-1.5-cpu"]["status"] == "changed"


def test_since_bumped_change_passes(git_repo: Path, capsys) -> None:
    version = version_of(git_repo / "curated/sklearn-1.5-cpu/env.toml")
    edit(git_repo / "curated/sklearn-1.5-cpu/env.toml", version=version + 1, change=True)
    code, _, findings = run_check(git_repo, capsys, "--since", "HEAD")
    assert code == 0 and findings["sklearn-1.5-cpu"]["status"] == "bumped"


def test_since_version_decrease_is_caught(git_repo: Path, capsys) -> None:
    edit(git_repo / "curated/python-3.8/env.toml", version=0)
    code, _, findings = run_check(git_repo, capsys, "--since", "HEAD")
    assert code == 1 and findings["python-3.8"]["status"] == "decreased"


def test_since_new_and_deleted(git_repo: Path, capsys) -> None:
    children = {
        p.parent.name
        for p in (git_repo / "curated").glob("*/env.toml")
        if 'extends = "../python-3.11"' in p.read_text()
    }
    assert {"sklearn-1.5-cpu", "tensorflow-2.16-cpu"} <= children
    shutil.rmtree(git_repo / "curated/python-3.11")
    for child in children:  # they cannot load without their parent
        shutil.rmtree(git_repo / "curated" / child)
    code, _, findings = run_check(git_repo, capsys, "--since", "HEAD")
    assert code == 0
    assert {n for n, f in findings.items() if f["status"] == "deleted"} == {
        "python-3.11",
        *children,
    }


def test_since_a_bad_revision(git_repo: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["check", "--catalog", str(git_repo / "curated"), "--since", "nope"]) == 2
    assert "--since nope: no such commit" in capsys.readouterr().err


def test_library_api(git_repo: Path) -> None:
    baseline, findings = check_catalog(git_repo / "curated", since="HEAD")
    assert baseline.description == "git revision HEAD"
    assert [f.name for f in findings] == sorted(f.name for f in findings)
    assert not any(f.failed for f in findings)
