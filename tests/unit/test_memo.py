"""The memo (a dependency record of each render) and the console script's hit path on it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import envbuild.lock as locking
from envbuild.build.builder import resolve
from envbuild.cache import memo as memo
from envbuild.cli.launcher import cached_build
from envbuild.definition.model import load
from envbuild.engine.docker import DockerEngine, ImageInfo
from envbuild.settings import Settings, load_settings
from tests.fakes import BASE, BASE_ID, FakeEngine, with_base

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = sorted(
    p
    for base in (ROOT / "tests" / "golden", ROOT / "envs", ROOT / "curated")
    for p in base.iterdir()
    if (p / "env.toml").is_file()
)


def _recall(settings: Settings, folder: Path, base_id: str | None = BASE_ID) -> memo.Memo | None:
    return memo.recall(
        settings.home, folder.absolute(), settings.platform, base_id=lambda _: base_id
    )


@pytest.mark.parametrize("folder", FOLDERS, ids=[f"{p.parent.name}/{p.name}" for p in FOLDERS])
def test_memo_names_the_hash_a_render_gives(folder: Path) -> None:
    settings = load_settings()
    engine = FakeEngine(images=with_base(**{"ubuntu:20.04": ImageInfo(id="sha256:" + "2" * 64)}))
    fresh = resolve(folder, settings=settings, memo=False, engine=engine)
    first = resolve(folder, settings=settings, engine=engine)  # renders, remembers
    assert first.rendered is not None
    again = resolve(folder, settings=settings, engine=engine)
    assert fresh.hash == first.hash == again.hash
    if locking.needs_conda(fresh.env):  # not memoised: rendered every time
        assert again.rendered is not None
        assert _recall(settings, folder) is None
        return
    assert again.rendered is None  # from the memo, no render
    found = memo.recall(
        settings.home, folder, settings.platform, base_id=lambda ref: engine.images[ref].id
    )
    parents = tuple(str(p.resolve()) for p in fresh.env.parents)
    run: dict[str, str | None] = {
        "workdir": fresh.env.run.workdir,
        "shm_size": fresh.env.run.shm_size,
        "cuda": fresh.env.gpu.cuda,
    }
    assert found == memo.Memo(fresh.hash, fresh.env.name, fresh.env.version, parents, run)


def _copy(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(ROOT / "curated" / name, target)
    shutil.copytree(ROOT / "curated" / "python-3.11", tmp_path / "python-3.11")
    return target


@pytest.mark.parametrize(
    "change",
    ["env.toml", "requirements.lock", "env.lock.toml", "parent", "template"],
)
def test_any_input_change_is_a_miss(
    tmp_path: Path, change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if change == "template":
        templates = tmp_path / "templates"
        shutil.copytree(memo.templates_dir() or "", templates)
        monkeypatch.setattr(memo, "templates_dir", lambda: templates)
    folder = _copy(tmp_path, "sklearn-1.5-cpu")
    settings = load_settings()
    resolve(folder, settings=settings)
    assert _recall(settings, folder) is not None
    target = {
        "parent": tmp_path / "python-3.11" / "env.toml",
        "template": tmp_path / "templates" / "partials" / "pip.j2",
    }.get(change, folder / change)
    target.write_text(target.read_text() + "\n# changed\n")
    assert _recall(settings, folder) is None


def test_a_file_that_was_absent_and_appears_is_a_miss(write_env) -> None:
    folder = write_env('schema = 1\nname = "a"\n[base]\ndockerfile = "base.Dockerfile"\n',
                       base__Dockerfile="FROM debian:bookworm-slim\n")  # fmt: skip
    settings = load_settings()
    resolve(folder, settings=settings)
    assert _recall(settings, folder) is not None
    (folder / locking.INDEX_FILE).write_text("# not a lock\n")  # rendering looked for it
    assert _recall(settings, folder) is None


def test_a_missing_recorded_file_is_a_miss(write_env) -> None:
    folder = write_env('schema = 1\nname = "a"\n[base]\ndockerfile = "base.Dockerfile"\n',
                       base__Dockerfile="FROM debian:bookworm-slim\n")  # fmt: skip
    settings = load_settings()
    resolve(folder, settings=settings)
    (folder / "base.Dockerfile").unlink()
    assert _recall(settings, folder) is None


def test_same_size_same_mtime_rewrite_is_a_miss(write_env) -> None:
    """The stat is a shortcut, never the proof: an edit that keeps size and mtime is seen."""
    folder = write_env('schema = 1\nname = "a"\n[base]\ndockerfile = "base.Dockerfile"\n',
                       base__Dockerfile="FROM debian:bookworm-slim\nRUN echo 1\n")  # fmt: skip
    path = folder / "base.Dockerfile"
    os.utime(path, ns=(10**18, 10**18))  # long ago: the stat is trusted
    settings = load_settings()
    resolve(folder, settings=settings)
    assert _recall(settings, folder) is not None
    path.write_text("FROM debian:bookworm-slim\nRUN echo 2\n")
    os.utime(path, ns=(10**18, 10**18))
    assert _recall(settings, folder) is None


def test_a_file_rewritten_unchanged_is_read_once(
    write_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkout rewrites files without changing them: the first hit compares their
    content and records their new stat, so later hits need only the stat again."""
    monkeypatch.setattr(memo, "RACY_NS", 0)  # trust every stat (the files are new)
    folder = write_env('schema = 1\nname = "a"\n[base]\ndockerfile = "base.Dockerfile"\n',
                       base__Dockerfile="FROM debian:bookworm-slim\n")  # fmt: skip
    settings = load_settings()
    resolve(folder, settings=settings)
    path = folder / "base.Dockerfile"
    content = path.read_bytes()
    path.unlink()
    path.write_bytes(content)  # another inode and ctime, the same content
    reads: list[str] = []
    digest = memo.file_digest

    def counted(name: str) -> str | None:
        reads.append(name)
        return digest(name)

    monkeypatch.setattr(memo, "file_digest", counted)
    assert _recall(settings, folder) is not None
    assert str(path) in reads  # compared by content
    reads.clear()
    assert _recall(settings, folder) is not None
    assert reads == []  # the record holds the new stat
    path.write_text("FROM debian:bookworm-slim\nRUN echo 2\n")
    assert _recall(settings, folder) is None


def test_finding_1_parent_base_dockerfile_under_an_empty_base_table(write_env) -> None:
    """A child extending a parent, with an empty [base] table: an edit of the
    parent's base Dockerfile is a miss, and the hash is the one a fresh render gives."""
    write_env('schema = 1\nname = "parent"\n[base]\ndockerfile = "base.Dockerfile"\n',
              folder="parent", base__Dockerfile="FROM debian:bookworm-slim\n")  # fmt: skip
    child = write_env('schema = 1\nname = "child"\nextends = "../parent"\n[base]\n', folder="child")
    settings = load_settings()
    before = resolve(child, settings=settings).hash
    (child.parent / "parent" / "base.Dockerfile").write_text(
        "FROM debian:bookworm-slim\nRUN true\n"
    )
    after = resolve(child, settings=settings)
    assert after.rendered is not None  # not from the memo
    assert after.hash != before
    assert after.hash == resolve(child, settings=settings, memo=False).hash


def test_conda_environments_are_not_memoised(write_env, tmp_path: Path) -> None:
    folder = write_env(
        'schema = 1\nname = "c"\n[python]\nsource = "conda"\nversion = "3.11"\n'
        '[conda]\nchannels = ["x"]\npackages = ["numpy"]\n'
    )
    settings = load_settings()
    resolve(folder, settings=settings, engine=FakeEngine())
    assert _recall(settings, folder) is None


def test_another_platform_has_its_own_record(write_env) -> None:
    folder = write_env('schema = 1\nname = "a"\n[base]\ndockerfile = "base.Dockerfile"\n',
                       base__Dockerfile="FROM debian:bookworm-slim\n")  # fmt: skip
    settings = load_settings()
    resolve(folder, settings=settings)
    assert memo.recall(settings.home, folder, "linux/arm64") is None


def test_the_unlocked_base_is_part_of_the_record(write_env) -> None:
    folder = write_env('schema = 1\nname = "u"\n')
    settings = load_settings()
    first = resolve(folder, settings=settings, engine=FakeEngine())
    found = _recall(settings, folder)
    assert found is not None and found[:3] == (first.hash, "u", 1)
    assert _recall(settings, folder, base_id="sha256:" + "9" * 64) is None  # retagged
    assert memo.recall(settings.home, folder, settings.platform) is None  # nobody to ask
    moved = FakeEngine(images={BASE: ImageInfo(id="sha256:" + "9" * 64)})
    assert resolve(folder, settings=settings, engine=moved).hash != first.hash


def test_a_record_names_what_rendering_read(tmp_path: Path) -> None:
    folder = _copy(tmp_path, "sklearn-1.5-cpu")
    settings = load_settings()
    resolve(folder, settings=settings)
    data = json.loads(memo.record_path(settings.home, folder, settings.platform).read_bytes())
    paths = {str(Path(entry[0]).resolve()) for entry in data["files"]}
    parent = tmp_path / "python-3.11"
    for expected in (
        folder / "env.toml",
        folder / "env.lock.toml",
        folder / "requirements.lock",
        parent / "env.toml",
        (memo.templates_dir() or Path()) / "Dockerfile.j2",
        ROOT / "builder" / "envbuild" / "render" / "dockerfile.py",
    ):
        assert str(expected) in paths
    assert load(folder).sources  # loading says what it read


def _engine_holding(monkeypatch: pytest.MonkeyPatch, **images: ImageInfo) -> FakeEngine:
    fake = FakeEngine(images=with_base(**images))
    monkeypatch.setattr(DockerEngine, "inspect_image", lambda self, ref: fake.inspect_image(ref))
    monkeypatch.setattr(DockerEngine, "tag", lambda self, image_id, ref: fake.tag(image_id, ref))
    return fake


def test_fast_path_answers_like_the_full_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hello = ROOT / "envs" / "hello"
    settings = load_settings()
    fake = _engine_holding(monkeypatch)
    assert cached_build(["build", str(hello), "--json"]) is None  # no memo yet: full CLI
    resolved = resolve(hello, settings=settings, engine=fake)
    image = ImageInfo(
        id="sha256:" + "1" * 64,
        tags=(resolved.hash_tag,),
        labels={"io.envbuild.hash": resolved.hash},
    )
    fake.images[resolved.hash_tag] = fake.images[image.id] = image
    fake.calls.clear()
    assert cached_build(["build", str(hello), "--json"]) == 0
    assert fake.calls == [  # the base's identity, the lookup, the version tag moved
        ("inspect", BASE),
        ("inspect", resolved.hash_tag),
        ("tag", resolved.version_tag),
    ]
    fast = json.loads(capsys.readouterr().out)

    from envbuild.cli.main import main

    assert main(["build", str(hello), "--json"]) == 0
    full = json.loads(capsys.readouterr().out)
    fast.pop("seconds")
    full.pop("seconds")
    assert (
        fast
        == full
        == {
            "image": resolved.hash_tag,
            "hash": resolved.hash,
            "cached": True,
            "tier": "local",
            "id": image.id,
            "tags": [resolved.hash_tag, resolved.version_tag],
        }
    )


def test_fast_path_misses_when_the_image_is_not_the_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    hello = ROOT / "envs" / "hello"
    fake = _engine_holding(monkeypatch)
    resolved = resolve(hello, settings=load_settings(), engine=fake)
    fake.images[resolved.hash_tag] = ImageInfo(
        id="sha256:" + "2" * 64, labels={"io.envbuild.hash": "0" * 64}
    )
    assert cached_build(["build", str(hello)]) is None


def test_fast_path_misses_when_the_base_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    hello = ROOT / "envs" / "hello"
    fake = _engine_holding(monkeypatch)
    resolved = resolve(hello, settings=load_settings(), engine=fake)
    fake.images[resolved.hash_tag] = ImageInfo(
        id="sha256:" + "3" * 64, labels={"io.envbuild.hash": resolved.hash}
    )
    fake.images[BASE] = ImageInfo(id="sha256:" + "4" * 64)  # `docker tag other debian:…`
    assert cached_build(["build", str(hello)]) is None


def test_a_record_of_another_folder_is_a_miss(
    write_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Record files are named by a checksum; one that collides names another folder."""
    shared = tmp_path / "one-record.json"
    monkeypatch.setattr(memo, "record_path", lambda home, folder, platform: shared)
    text = 'schema = 1\nname = "a"\n[base]\ndockerfile = "base.Dockerfile"\n'
    one = write_env(text, folder="one", base__Dockerfile="FROM debian:bookworm-slim\n")
    two = write_env(text, folder="two", base__Dockerfile="FROM debian:bookworm-slim\n")
    settings = load_settings()
    resolve(one, settings=settings)
    assert _recall(settings, one) is not None
    assert _recall(settings, two) is None


@pytest.mark.parametrize("module", ["lock/makers.py", "render/quoting.py", "files.py"])
def test_an_edited_rendering_module_is_a_miss(
    write_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str
) -> None:
    """Every source file of the rendering packages is an input, loaded by this render or not."""
    package = tmp_path / "installed" / "envbuild"
    shutil.copytree(
        ROOT / "builder" / "envbuild", package, ignore=shutil.ignore_patterns("__pycache__")
    )
    templates = memo.templates_dir()
    monkeypatch.setattr(memo, "templates_dir", lambda: templates)
    monkeypatch.setattr(memo, "_PACKAGE", package)
    folder = write_env('schema = 1\nname = "a"\n[base]\ndockerfile = "base.Dockerfile"\n',
                       base__Dockerfile="FROM debian:bookworm-slim\n")  # fmt: skip
    settings = load_settings()
    resolve(folder, settings=settings)
    assert _recall(settings, folder) is not None
    target = package / module
    target.write_text(target.read_text() + "\n# edited\n")
    assert _recall(settings, folder) is None


def test_a_record_replaced_by_a_fifo_is_a_miss_without_blocking(tmp_path: Path) -> None:
    settings = load_settings()
    folder = tmp_path / "python-3.11"
    shutil.copytree(ROOT / "curated" / "python-3.11", folder)
    resolve(folder, settings=settings, engine=FakeEngine(images=with_base()))
    record = memo.record_path(settings.home, folder.absolute(), settings.platform)
    assert _recall(settings, folder) is not None
    record.unlink()
    os.mkfifo(record)  # nobody writes it: reading it would block forever
    with pytest.raises(OSError, match="not a regular file"):
        memo.read_record(record)
    assert _recall(settings, folder) is None


def test_a_file_replaced_by_a_symlink_to_the_same_bytes_is_a_miss(tmp_path: Path) -> None:
    """A lock file that now leads out of its folder: the full render refuses it, so
    the memo (the console script's cached build) must not answer it."""
    from envbuild.errors import EnvbuildError

    settings = load_settings()
    folder = tmp_path / "python-3.11"
    shutil.copytree(ROOT / "curated" / "python-3.11", folder)
    engine = FakeEngine(images=with_base())
    resolve(folder, settings=settings, engine=engine)
    assert _recall(settings, folder) is not None
    lock = folder / "env.lock.toml"
    outside = tmp_path / "outside.lock.toml"
    shutil.copy2(lock, outside)
    lock.unlink()
    lock.symlink_to(outside)
    assert _recall(settings, folder) is None
    with pytest.raises(EnvbuildError, match="outside"):
        resolve(folder, settings=settings, engine=engine)


def test_another_installation_of_the_same_version_has_its_own_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings()
    folder = tmp_path / "python-3.11"
    shutil.copytree(ROOT / "curated" / "python-3.11", folder)
    resolve(folder, settings=settings, engine=FakeEngine(images=with_base()))
    assert _recall(settings, folder) is not None
    monkeypatch.setattr(memo, "_PACKAGE", tmp_path / "other-checkout" / "envbuild")
    assert _recall(settings, folder) is None
