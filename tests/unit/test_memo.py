"""The hash memo and the console script's cache-hit path built on it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from envbuild.build.builder import resolve
from envbuild.cache import memo as memo
from envbuild.cli.launcher import cached_build
from envbuild.engine.docker import DockerEngine, ImageInfo
from envbuild.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = sorted(
    p
    for base in (ROOT / "tests" / "golden", ROOT / "envs", ROOT / "curated")
    for p in base.iterdir()
    if (p / "env.toml").is_file()
)


@pytest.mark.parametrize("folder", FOLDERS, ids=[f"{p.parent.name}/{p.name}" for p in FOLDERS])
def test_memo_names_the_hash_a_render_gives(folder: Path) -> None:
    settings = load_settings()
    fresh = resolve(folder, settings, memo=False)
    first = resolve(folder, settings)  # renders, remembers
    assert first.rendered is not None
    again = resolve(folder, settings)  # from the memo, no render
    assert again.rendered is None
    assert fresh.hash == first.hash == again.hash
    found = memo.recall(settings.home, memo.key(folder, settings.platform) or "")
    assert found == {"hash": fresh.hash, "name": fresh.env.name, "version": fresh.env.version}


def _copy(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(ROOT / "curated" / name, target)
    shutil.copytree(ROOT / "curated" / "python-3.8", tmp_path / "python-3.8")
    return target


@pytest.mark.parametrize(
    "change",
    ["env.toml", "requirements.lock", "env.lock.toml", "parent", "template"],
)
def test_any_input_changes_the_key(
    tmp_path: Path, change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _copy(tmp_path, "pytorch-1.6-gpu")
    before = memo.key(folder, "linux/amd64")
    if change == "parent":
        target = tmp_path / "python-3.8" / "env.toml"
    elif change == "template":
        templates = tmp_path / "templates"
        shutil.copytree(memo.templates_dir() or "", templates)
        monkeypatch.setattr(memo, "templates_dir", lambda: templates)
        target = templates / "partials" / "pip.j2"
    else:
        target = folder / change
    target.write_text(target.read_text() + "\n# changed\n")
    assert memo.key(folder, "linux/amd64") != before


def test_platform_and_base_dockerfile_change_the_key(write_env) -> None:
    folder = write_env(
        'schema = 1\nname = "b"\n[base]\ndockerfile = "base.Dockerfile"\n',
        base__Dockerfile="FROM debian:bookworm-slim\n",
    )
    key = memo.key(folder, "linux/amd64")
    assert key != memo.key(folder, "linux/arm64")
    (folder / "base.Dockerfile").write_text("FROM debian:bookworm-slim\nRUN true\n")
    assert memo.key(folder, "linux/amd64") != key
    (folder / "base.Dockerfile").unlink()
    assert memo.key(folder, "linux/amd64") is None


def test_conda_environments_are_not_memoised(write_env) -> None:
    folder = write_env('schema = 1\nname = "c"\n[conda]\nchannels = ["x"]\npackages = ["numpy"]\n')
    assert memo.key(folder, "linux/amd64") is None


def test_unreadable_chains_are_not_memoised(write_env, tmp_path: Path) -> None:
    assert memo.key(write_env('schema = 1\nname = "x"\nextends = "../nowhere"\n'), "p") is None
    write_env('schema = 1\nname = "a"\nextends = "../b"\n', folder="a")
    write_env('schema = 1\nname = "b"\nextends = "../a"\n', folder="b")
    assert memo.key(tmp_path / "a", "p") is None
    assert memo.key(write_env("schema = [\n"), "p") is None


def test_fast_path_answers_like_the_full_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hello = ROOT / "envs" / "hello"
    settings = load_settings()
    assert cached_build(["build", str(hello), "--json"]) is None  # no memo yet: full CLI
    resolved = resolve(hello, settings)
    image = ImageInfo(
        id="sha256:" + "1" * 64,
        tags=(resolved.hash_tag, resolved.version_tag),
        labels={"io.envbuild.hash": resolved.hash},
    )
    monkeypatch.setattr(
        DockerEngine, "inspect_image", lambda self, ref: image if ref == resolved.hash_tag else None
    )
    assert cached_build(["build", str(hello), "--json"]) == 0
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
    resolve(hello, load_settings())
    stale = ImageInfo(id="sha256:" + "2" * 64, labels={"io.envbuild.hash": "0" * 64})
    monkeypatch.setattr(DockerEngine, "inspect_image", lambda self, ref: stale)
    assert cached_build(["build", str(hello)]) is None
