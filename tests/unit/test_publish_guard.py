"""The version guard sees every file that reaches the context; publish follows no symlink.

Real files, real symlinks, a real FIFO and a commit whose tree holds ``..``
(made with ``git mktree``): each case below fooled ``check`` or made
``publish`` / ``check --since`` read or write outside their folders.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from envbuild.catalog import publish as pub
from envbuild.catalog.check import check_catalog
from envbuild.cli.main import main
from envbuild.errors import EnvbuildError

PLATFORM = "linux/amd64"

OWN_BASE = """\
schema = 1
name = "own"
version = 1

[base]
dockerfile = "{path}"
"""


@pytest.fixture(autouse=True)
def deadline() -> Iterator[None]:
    """Fail (not hang) a test that blocks on a FIFO."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError("blocked reading a FIFO or device")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(30)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _catalog(tmp_path: Path, path: str) -> Path:
    catalog = tmp_path / "cat"
    (catalog / "own").mkdir(parents=True)
    (catalog / "own" / "env.toml").write_text(OWN_BASE.format(path=path))
    return catalog


def _status(catalog: Path, out: Path) -> str:
    _, findings = check_catalog(catalog, published=out)
    return {f.name: f for f in findings}["own"].status


# -- defect 3: the guard covers the base Dockerfile wherever it lies ----------------


def test_a_base_dockerfile_in_a_subfolder_is_guarded(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path, "docker/base.Dockerfile")
    (catalog / "own" / "docker").mkdir()
    dockerfile = catalog / "own" / "docker" / "base.Dockerfile"
    dockerfile.write_text("FROM debian:bookworm-slim\n")
    out = tmp_path / "published"
    pub.publish(catalog, out, platform=PLATFORM)
    assert _status(catalog, out) == "unchanged"
    dockerfile.write_text("FROM debian:bookworm-slim\nRUN true\n")
    assert _status(catalog, out) == "changed"
    _, findings = check_catalog(catalog, published=out)
    assert findings[0].files == ("own/docker/base.Dockerfile",)


def test_a_base_dockerfile_behind_a_symlink_is_guarded(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path, "base.Dockerfile")
    (catalog / "own" / "real").mkdir()
    target = catalog / "own" / "real" / "base.Dockerfile"
    target.write_text("FROM debian:bookworm-slim\n")
    (catalog / "own" / "base.Dockerfile").symlink_to("real/base.Dockerfile")
    out = tmp_path / "published"
    pub.publish(catalog, out, platform=PLATFORM)
    assert _status(catalog, out) == "unchanged"
    target.write_text("FROM debian:bookworm-slim\nRUN true\n")
    assert _status(catalog, out) == "changed"


def test_a_lock_symlinked_out_of_the_folder_is_refused_not_published(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path, "base.Dockerfile")
    (catalog / "own" / "base.Dockerfile").write_text("FROM debian:bookworm-slim\n")
    (catalog / "own" / "extra.lock").symlink_to("/etc/hostname")
    out = tmp_path / "published"
    with pytest.raises(EnvbuildError, match="outside"):
        pub.publish(catalog, out, platform=PLATFORM)
    assert not list(out.rglob("extra.lock"))


# -- defect 4 and 10: publish never follows a symlink in its output tree -----------------


@pytest.fixture
def published(tmp_path: Path) -> tuple[Path, Path]:
    catalog = _catalog(tmp_path, "base.Dockerfile")
    (catalog / "own" / "base.Dockerfile").write_text("FROM debian:bookworm-slim\n")
    out = tmp_path / "published"
    pub.publish(catalog, out, platform=PLATFORM)
    return catalog, out


def test_a_release_folder_that_is_a_symlink_is_refused(
    published: tuple[Path, Path], tmp_path: Path
) -> None:
    catalog, out = published
    victim = tmp_path / "victim"
    (out / "own" / "1").rename(victim)
    (victim / "keep.txt").write_text("mine")
    (out / "own" / "1").symlink_to(victim)
    before = sorted(p.name for p in victim.iterdir())
    with pytest.raises(EnvbuildError, match="symlink"):
        pub.publish(catalog, out, platform=PLATFORM)
    with pytest.raises(EnvbuildError, match="symlink"):
        pub.check(catalog, out, platform=PLATFORM)
    assert sorted(p.name for p in victim.iterdir()) == before


@pytest.mark.parametrize(
    "make",
    [
        lambda d: (d / "Dockerfile").symlink_to("/dev/zero"),
        lambda d: (d / "stolen").symlink_to("/etc/hostname"),
        lambda d: os.mkfifo(d / "pipe"),
        lambda d: (d / "dangling").symlink_to(d / "nothing-here"),
    ],
    ids=["dev-zero", "etc-hostname", "fifo", "dangling"],
)
def test_links_and_fifos_in_older_releases_are_refused(published: tuple[Path, Path], make) -> None:
    catalog, out = published
    old = out / "own" / "0"
    old.mkdir()
    (old / "manifest.json").write_text("{}")
    make(old)
    with pytest.raises(EnvbuildError, match="does not follow"):
        pub.publish(catalog, out, platform=PLATFORM)
    assert not (out / "own" / "0" / "stolen").is_file() or (old / "stolen").is_symlink()


def test_publish_refuses_folders_it_did_not_write(
    published: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    catalog, _ = published
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("# mine\n")
    (tmp_path / "linked").symlink_to(home)
    for out in (home, tmp_path / "linked", Path("/proc/self")):
        for argv in (["publish"], ["publish", "--check"]):
            capsys.readouterr()
            assert main([*argv, "--catalog", str(catalog), "--out", str(out)]) == 2
            err = capsys.readouterr().err
            assert "Traceback" not in err and str(out) in err
    assert sorted(p.name for p in home.iterdir()) == [".bashrc"]
    # `--out /` is refused by the same rule, before anything is read or written
    # (checked on the guard itself: a regression must not write into /).
    for root in (Path("/"), Path("/etc")):
        with pytest.raises(EnvbuildError, match="neither empty nor a published folder"):
            pub.guard_out(root)


def test_a_folder_named_superscript_two_is_not_a_version(published: tuple[Path, Path]) -> None:
    catalog, out = published
    (out / "own" / "²").mkdir()
    (out / "own" / "²" / "manifest.json").write_text("{}")
    assert pub.version_folders(out) == {("own", 1): out / "own" / "1"}
    pub.publish(catalog, out, platform=PLATFORM)
    assert _status(catalog, out) == "unchanged"


# -- defect 5: check --since materialises no name that leaves its folder -------------


def _git(repo: Path, *args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=repo,
        input=stdin,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_since_a_tree_with_dotdot_entries_writes_nothing_outside(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The checkout's temporary folder is made under tmp_path/t, so that what
    # escapes it (two levels up) would land in tmp_path, never elsewhere.
    (tmp_path / "t").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "t"))
    repo = tmp_path / "repo"
    catalog = _catalog(repo, "base.Dockerfile")
    (catalog / "own" / "base.Dockerfile").write_text("FROM debian:bookworm-slim\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "catalog")
    marker = f"envbuild-escaped-{os.getpid()}"
    blob = _git(repo, "hash-object", "-w", "--stdin", stdin="pwned\n")
    leaf = _git(repo, "mktree", stdin=f"100644 blob {blob}\t{marker}\n")
    up1 = _git(repo, "mktree", stdin=f"040000 tree {leaf}\t..\n")
    own = _git(repo, "rev-parse", "HEAD:cat/own")
    cat = _git(repo, "mktree", stdin=f"040000 tree {own}\town\n040000 tree {up1}\t..\n")
    root = _git(repo, "mktree", stdin=f"040000 tree {cat}\tcat\n")
    commit = _git(repo, "commit-tree", root, "-m", "evil")
    listing = _git(repo, "ls-tree", "-r", "--name-only", commit)
    assert f"cat/../../{marker}" in listing
    capsys.readouterr()
    code = main(["check", "--catalog", str(catalog), "--since", commit])
    err = capsys.readouterr().err
    assert code == 2 and "which a checkout cannot hold" in err and "Traceback" not in err
    assert not list(tmp_path.rglob(marker))
