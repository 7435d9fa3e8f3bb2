"""Files a definition or lock names are read only inside their folder, regular, bounded.

Real files, real symlinks and real FIFOs (``os.mkfifo``): each case below read
a file outside the environment, blocked on a FIFO or device, or raised a
traceback before :mod:`envbuild.files` was the one way to read them. FIFO
cases run under a ``SIGALRM`` deadline so that a regression fails instead of
hanging the suite.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

import envbuild.lock as locking
from envbuild import files
from envbuild.build.builder import build
from envbuild.cli.main import main
from envbuild.definition.model import load
from envbuild.engine.docker import ImageInfo
from envbuild.errors import DefinitionError
from envbuild.settings import load_settings
from tests.fakes import FakeEngine

PLATFORM = "linux/amd64"
BASE_ID = "sha256:" + "a" * 64

DOCKERFILE_ENV = """\
schema = 1
name = "own-base"

[base]
dockerfile = "{path}"
"""

SIX_ENV = """\
schema = 1
name = "{name}"

[base]
image = "debian:bookworm-slim"

[python]
version = "3.11"

[pip]
packages = ["six=={version}"]
"""


@pytest.fixture(autouse=True)
def deadline() -> Iterator[None]:
    """Fail (not hang) a test that blocks on a FIFO or a device."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError("blocked reading a file: a FIFO or device was opened")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(20)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _problems(folder: Path) -> str:
    with pytest.raises(DefinitionError) as info:
        load(folder)
    return info.value.render()


# -- the helper ------------------------------------------------------------------


def test_reads_a_regular_file_inside(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("hello")
    (tmp_path / "link").symlink_to("sub/a.txt")
    assert files.read_text(tmp_path / "sub" / "a.txt", inside=tmp_path) == "hello"
    assert files.read_bytes(tmp_path / "link", inside=tmp_path) == b"hello"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: (d / "f").symlink_to("/etc/hostname"), "outside"),
        (lambda d: (d / "f").symlink_to("../outside.txt"), "outside"),
        (lambda d: os.mkfifo(d / "f"), "FIFO"),
        (lambda d: (d / "f").symlink_to("/dev/zero"), "outside"),
        (lambda d: (d / "f").mkdir(), "folder"),
        (lambda d: (d / "f").write_bytes(b"x" * 101), "more than 100"),
        (lambda d: ((d / "f").symlink_to("g"), (d / "g").symlink_to("f")), "symlink loop"),
    ],
    ids=["abs-symlink", "dotdot-symlink", "fifo", "dev-zero", "folder", "too-large", "loop"],
)
def test_refuses(tmp_path: Path, make, reason: str) -> None:
    (tmp_path / "outside.txt").write_text("secret")
    folder = tmp_path / "env"
    folder.mkdir()
    make(folder)
    with pytest.raises(files.UnsafeRead, match=reason):
        files.read_bytes(folder / "f", inside=folder, limit=100)


def test_devices_are_refused_without_a_folder(tmp_path: Path) -> None:
    for device in ("/dev/zero", "/dev/stdin", "/dev/null"):
        if Path(device).exists():
            with pytest.raises(files.UnsafeRead, match="not a regular file"):
                files.read_bytes(Path(device), inside=None)


def test_missing_and_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(files.FileMissing):
        files.read_bytes(tmp_path / "nope", inside=tmp_path)
    (tmp_path / "latin1").write_bytes(b"caf\xe9")
    with pytest.raises(files.UnsafeRead, match="not UTF-8"):
        files.read_text(tmp_path / "latin1", inside=tmp_path)


# -- env.toml and extends (defects 6 and 10) --------------------------------------


def test_a_fifo_as_env_toml_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "env.toml")
    assert "FIFO" in _problems(tmp_path)
    assert main(["validate", str(tmp_path)]) == 3


def test_a_fifo_as_an_extends_target_is_refused(write_env, tmp_path: Path) -> None:
    (tmp_path / "parent").mkdir()
    os.mkfifo(tmp_path / "parent" / "env.toml")
    child = write_env('schema = 1\nname = "child"\nextends = "../parent"\n', folder="child")
    text = _problems(child)
    assert "the parent" in text and "FIFO" in text


def test_env_toml_symlinked_out_of_its_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.toml").write_text('schema = 1\nname = "x"\n')
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "env.toml").symlink_to(tmp_path / "elsewhere.toml")
    assert "outside" in _problems(tmp_path / "env")


def test_symlink_loops_are_definition_errors(tmp_path: Path, capsys) -> None:
    (tmp_path / "loop").mkdir()
    (tmp_path / "loop" / "env.toml").symlink_to("env.toml")
    assert "symlink loop" in _problems(tmp_path / "loop")
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    (tmp_path / "child").mkdir()
    (tmp_path / "child" / "env.toml").write_text('schema = 1\nname = "c"\nextends = "../a"\n')
    assert "symlink loop" in _problems(tmp_path / "child")
    assert main(["validate", str(tmp_path / "child")]) == 3
    assert "Traceback" not in capsys.readouterr().err


def test_toml_nested_50000_deep_is_a_definition_error(tmp_path: Path) -> None:
    (tmp_path / "env.toml").write_text('schema = 1\nname = "x"\nv = ' + "[" * 50000)
    assert "TOML" in _problems(tmp_path)


# -- [base] dockerfile (defects 2 and 6) -------------------------------------------


@pytest.mark.parametrize(
    ("path", "setup", "expected"),
    [
        (
            "base.Dockerfile",
            lambda d: (d / "base.Dockerfile").symlink_to("/etc/hostname"),
            "outside",
        ),
        ("base.Dockerfile", lambda d: os.mkfifo(d / "base.Dockerfile"), "FIFO"),
        ("base.Dockerfile", lambda d: (d / "base.Dockerfile").symlink_to("/dev/stdin"), "outside"),
        ("base.Dockerfile", lambda d: (d / "base.Dockerfile").symlink_to("/dev/zero"), "outside"),
        ("sub", lambda d: (d / "sub").symlink_to(d.parent), "outside"),
    ],
    ids=["symlink-out", "fifo", "stdin", "zero", "folder-link"],
)
def test_base_dockerfile_must_be_a_regular_file_inside(
    write_env, path: str, setup, expected: str
) -> None:
    folder = write_env(DOCKERFILE_ENV.format(path=path if path != "sub" else "sub/x"))
    setup(folder)
    (folder.parent / "x").write_text("FROM debian\n")
    text = _problems(folder)
    assert "base.dockerfile" in text and expected in text


def test_base_dockerfile_is_read_once_when_loading(write_env) -> None:
    folder = write_env(DOCKERFILE_ENV.format(path="docker/base.Dockerfile"))
    (folder / "docker").mkdir()
    (folder / "docker" / "base.Dockerfile").write_text("FROM debian:bookworm-slim\n")
    env = load(folder)
    assert env.base.dockerfile_text == "FROM debian:bookworm-slim\n"
    (folder / "docker" / "base.Dockerfile").unlink()
    os.mkfifo(folder / "docker" / "base.Dockerfile")  # swapped after loading
    from envbuild.render.dockerfile import render

    assert "FROM debian:bookworm-slim" in render(env).dockerfile


# -- env.lock.toml and the lock files (defects 1, 2 and 10) ------------------------


def _engine() -> FakeEngine:
    return FakeEngine(images={"debian:bookworm-slim": ImageInfo(id=BASE_ID, repo_digests=())})


def _lock(folder: Path, version: str) -> None:
    env = load(folder)
    target = locking.platform_tag(PLATFORM)
    data = (locking.GENERATED + f"six=={version} \\\n    --hash=sha256:{'1' * 64}\n").encode()
    locks = locking.Locks(
        base=locking.pin_base("debian:bookworm-slim", _engine()),
        python="3.11",
        pip=locking.PipLock(
            requested=tuple(sorted(env.pip.packages)),
            inputs=locking.pip_inputs(env, "3.11", target),
            python="3.11",
            platform=target,
            resolver="uv 0.13.9",
            data=data,
        ),
    )
    (folder / locking.INDEX_FILE).write_text(locking.render_index(locks), encoding="utf-8")
    (folder / locking.PIP_LOCK_FILE).write_bytes(data)


@pytest.fixture
def two_locked(write_env) -> tuple[Path, Path]:
    new = write_env(SIX_ENV.format(name="new", version="1.16.0"), folder="new")
    old = write_env(SIX_ENV.format(name="old", version="1.15.0"), folder="old")
    _lock(new, "1.16.0")
    _lock(old, "1.15.0")
    return new, old


def test_a_lock_copied_from_another_environment_is_refused(two_locked, capsys) -> None:
    new, old = two_locked
    assert locking.check(load(new), PLATFORM) == []
    shutil.copy(old / locking.PIP_LOCK_FILE, new / locking.PIP_LOCK_FILE)
    with pytest.raises(locking.LockError, match=r"requirements\.lock is not the file"):
        locking.check(load(new), PLATFORM)
    capsys.readouterr()
    assert main(["lock", "--check", str(new)]) != 0
    err = capsys.readouterr().err
    assert "requirements.lock" in err and "copied from another environment" in err
    with pytest.raises(locking.LockError, match=r"requirements\.lock"):
        build(new, settings=load_settings(), engine=_engine(), strict=True)


def test_a_whole_lock_copied_from_another_environment_is_stale(two_locked) -> None:
    new, old = two_locked
    for name in (locking.INDEX_FILE, locking.PIP_LOCK_FILE):
        shutil.copy(old / name, new / name)
    reasons = locking.check(load(new), PLATFORM)
    assert reasons and "six==1.16.0" in reasons[0]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("../../../../etc/hostname", "expected 'requirements.lock'"),
        ("/etc/hostname", "expected 'requirements.lock'"),
    ],
)
def test_lock_file_names_outside_the_folder_are_refused(
    two_locked, target: str, expected: str
) -> None:
    new, _ = two_locked
    index = new / locking.INDEX_FILE
    index.write_text(index.read_text().replace('"requirements.lock"', f'"{target}"'))
    with pytest.raises(locking.LockError, match=expected):
        locking.read(new)


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p.symlink_to("/etc/hostname"),
        lambda p: p.symlink_to("/dev/zero"),
        lambda p: os.mkfifo(p),
    ],
    ids=["symlink-out", "dev-zero", "fifo"],
)
def test_lock_files_must_be_regular_files_inside(two_locked, make) -> None:
    new, _ = two_locked
    (new / locking.PIP_LOCK_FILE).unlink()
    make(new / locking.PIP_LOCK_FILE)
    with pytest.raises(locking.LockError, match=r"requirements\.lock"):
        locking.read(new)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.encode("utf-8") + b"\n# caf\xe9\n", "not UTF-8"),
        (lambda t: t.replace("[python]\n", "python = 3\n[x]\n").encode(), "expected a table"),
        (lambda t: t.replace('pin = "image-id"', "pin = 7").encode(), "base.pin"),
        (lambda t: t.replace("requested = [", "requested = 5\nx = [").encode(), "requested"),
        (lambda t: t.replace('file = "requirements.lock"', "file = []").encode(), "pip.file"),
        (lambda t: ("x = " + "[" * 50000).encode(), "not valid TOML"),
    ],
    ids=["latin1", "python-not-table", "pin-int", "requested-int", "file-list", "deep"],
)
def test_a_broken_index_is_a_lock_error(two_locked, edit, expected: str, capsys) -> None:
    new, _ = two_locked
    index = new / locking.INDEX_FILE
    index.write_bytes(edit(index.read_text()))
    with pytest.raises(locking.LockError, match=expected):
        locking.read(new)
    capsys.readouterr()
    assert main(["lock", "--check", str(new)]) == 1
    assert "Traceback" not in capsys.readouterr().err


# -- version beyond 64 bits, huge integers, escapes in messages (defects 10, 11) ----


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("version = 18446744073709551616", "version: expected an integer <= 9223372036854775807"),
        ("version = " + "9" * 5000, "out of range"),
    ],
)
def test_integers_beyond_64_bits_are_refused(tmp_path: Path, line: str, expected: str) -> None:
    (tmp_path / "env.toml").write_text(f'schema = 1\nname = "x"\n{line}\n')
    assert expected in _problems(tmp_path)


def test_control_characters_in_user_text_are_escaped(tmp_path: Path, capsys) -> None:
    (tmp_path / "env.toml").write_text(
        'schema = 1\nname = "x"\n"\\u001b]0;pwned\\u0007\\u001b[2J" = 1\n'
        '[variables]\n"A\\u202eB" = "1"\n'
    )
    capsys.readouterr()
    assert main(["validate", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "\u202e" not in err
    assert "\\x1b]0;pwned\\x07\\x1b[2J: unknown key" in err
    assert "A\\u202eB" in err


# -- the build fast path (defect 6) ----------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda p: os.mkfifo(p),
        lambda p: p.symlink_to("/dev/zero"),
        lambda p: p.symlink_to("/dev/stdin"),
        lambda p: p.symlink_to("/etc/hostname"),
    ],
    ids=["fifo", "dev-zero", "dev-stdin", "outside"],
)
def test_plain_build_reads_nothing_before_it_validates(write_env, tmp_path: Path, make) -> None:
    """`envbuild build ENV` (the console script's cache-hit path first) on a base
    Dockerfile that is a FIFO or a device: a definition error, no hang, no engine."""
    import subprocess
    import sys

    folder = write_env(DOCKERFILE_ENV.format(path="base.Dockerfile"))
    make(folder / "base.Dockerfile")
    env = {
        **os.environ,
        "ENVBUILD_HOME": str(tmp_path / "home"),
        "DOCKER_HOST": "unix:///nonexistent",
    }
    done = subprocess.run(
        [sys.executable, "-m", "envbuild", "build", str(folder)],
        stdin=subprocess.PIPE,  # /dev/stdin: a pipe nobody writes to
        capture_output=True,
        text=True,
        timeout=15,
        env=env,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert "base.dockerfile" in done.stderr


def test_a_recorded_file_swapped_for_a_fifo_is_a_miss(write_env) -> None:
    """The memo's hit path digests recorded files only as bounded regular files."""
    from envbuild.build.builder import resolve
    from envbuild.cache import memo

    folder = write_env(DOCKERFILE_ENV.format(path="base.Dockerfile"),
                       base__Dockerfile="FROM debian:bookworm-slim\n")  # fmt: skip
    settings = load_settings()
    resolve(folder, settings=settings)

    def recall() -> object:
        return memo.recall(
            settings.home, folder.absolute(), settings.platform, base_id=lambda _: None
        )

    assert recall() is not None
    (folder / "base.Dockerfile").unlink()
    os.mkfifo(folder / "base.Dockerfile")
    assert recall() is None
    (folder / "base.Dockerfile").unlink()
    (folder / "base.Dockerfile").symlink_to("/dev/zero")
    assert recall() is None
