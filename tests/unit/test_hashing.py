"""The content hash: pinned vectors, invariance and sensitivity."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from envbuild.cache.hashing import HASH_SCHEMA, content_hash, manifest
from envbuild.definition.model import load
from envbuild.render.dockerfile import render
from tests.conftest import Pins

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
PLATFORM = "linux/amd64"

# Every golden case's hash is pinned in tests/pinned-hashes.json: a change to a
# template, a helper script or what is hashed changes them on purpose (update
# them with `pytest --update-golden`, and HASH_SCHEMA when what is hashed changed).
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "env.toml").is_file())

BASE = """\
schema = 1
name = "inv"
version = 2
description = "invariance"

[pip]
packages = ["six==1.16.0", "attrs==23.1.0"]

[variables]
A = "1"
B = "2"
"""

# The same definition: other key order, comments, formatting.
REORDERED = """\
# a comment that changes nothing
[variables]
B = "2"   # trailing comment
A = "1"

[pip]
packages = [
  "six==1.16.0",
  "attrs==23.1.0",
]

version = 2
"""


def _hash(folder: Path) -> str:
    return content_hash(render(load(folder)), platform=PLATFORM)


@pytest.mark.parametrize("case", CASES)
def test_pinned_vectors(case: str, pins: Pins) -> None:
    pins.check("golden", case, _hash(GOLDEN / case))


def test_every_golden_case_is_pinned(pins: Pins) -> None:
    pins.keep_only("golden", set(CASES))
    if not pins.update:
        assert sorted(pins.group("golden")) == CASES


def test_schema_version_is_hashed() -> None:
    data = manifest(render(load(GOLDEN / "minimal")), platform=PLATFORM)
    assert data["hash_schema"] == HASH_SCHEMA
    assert [f["path"] for f in data["files"]] == sorted(f["path"] for f in data["files"])


def test_invariant_to_comments_order_folder_and_mtime(write_env, tmp_path: Path) -> None:
    one = write_env(BASE, folder="one")
    # TOML needs top-level keys before tables; move them, then reorder the rest.
    two = write_env(
        'schema = 1\nname = "inv"\ndescription = "invariance"\n'
        + REORDERED.replace("version = 2\n", "").replace("# a comment", "version = 2\n# a comment"),
        folder="deep/two",
    )
    os.utime(one / "env.toml", (0, 0))
    assert _hash(one) == _hash(two)
    moved = tmp_path / "elsewhere"
    shutil.copytree(one, moved)
    assert _hash(moved) == _hash(one)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('"six==1.16.0"', '"six==1.15.0"'),
        ('A = "1"', 'A = "1 "'),
        ('B = "2"', 'B = "2"\nC = "3"'),
        ("version = 2", "version = 3"),
        ('description = "invariance"', 'description = "other"'),
        ("[pip]", '[system]\npackages = ["git"]\n\n[pip]'),
        ("[pip]", '[base]\nimage = "ubuntu:22.04"\n\n[pip]'),
        ("[pip]", '[run]\nworkdir = "/w"\n\n[pip]'),
    ],
)
def test_sensitive_to_every_input(write_env, old: str, new: str) -> None:
    assert old in BASE
    assert _hash(write_env(BASE)) != _hash(write_env(BASE.replace(old, new)))


def test_sensitive_to_platform(write_env) -> None:
    context = render(load(write_env(BASE)))
    assert content_hash(context, platform="linux/amd64") != content_hash(
        context, platform="linux/arm64"
    )


@pytest.mark.parametrize("template", ["partials/pip.j2", "files/pip-install.sh", "Dockerfile.j2"])
def test_sensitive_to_template_bytes(
    write_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, template: str
) -> None:
    from envbuild.render import dockerfile as render_mod

    env = load(write_env(BASE))
    before = content_hash(render(env), platform=PLATFORM)
    copy = tmp_path / "templates"
    shutil.copytree(render_mod.templates_dir(), copy)
    with (copy / template).open("a") as handle:
        handle.write("\n")
    render_mod._jinja_env.cache_clear()
    monkeypatch.setattr(render_mod, "templates_dir", lambda: copy)
    try:
        assert content_hash(render(env), platform=PLATFORM) != before
    finally:
        render_mod._jinja_env.cache_clear()


def test_exec_bit_is_hashed() -> None:
    import dataclasses

    from envbuild.render.context import BuildContext

    context = render(load(GOLDEN / "minimal"))
    files = dict(context.files)
    files["Dockerfile"] = dataclasses.replace(files["Dockerfile"], executable=True)
    flipped = BuildContext(files=files, base_image=context.base_image)
    assert content_hash(flipped, platform=PLATFORM) != content_hash(context, platform=PLATFORM)


def test_update_golden_rewrites_the_pins(tmp_path: Path) -> None:
    """`--update-golden` records new hashes and rewrites the data file; without it, a mismatch fails."""
    import json

    path = tmp_path / "pins.json"
    path.write_text(json.dumps({"golden": {"a": "1" * 64, "gone": "2" * 64}}))
    strict = Pins(path, update=False)
    with pytest.raises(AssertionError, match="--update-golden"):
        strict.check("golden", "a", "3" * 64)
    updating = Pins(path, update=True)
    updating.check("golden", "a", "3" * 64)
    updating.check("curated", "b", "4" * 64)
    updating.keep_only("golden", {"a"})
    updating.save()
    assert json.loads(path.read_text()) == {"curated": {"b": "4" * 64}, "golden": {"a": "3" * 64}}
    Pins(path, update=False).check("golden", "a", "3" * 64)


def test_the_engine_identity_of_an_unlocked_base_is_hashed() -> None:
    """An unlocked base image enters as the image ID the engine holds (render is told it);
    a locked one as its pin, whatever the engine says."""
    env = load(GOLDEN / "minimal")
    one = render(env, platform=PLATFORM, base_id="sha256:" + "1" * 64)
    two = render(env, platform=PLATFORM, base_id="sha256:" + "2" * 64)
    assert one.base_pin == "engine-id:sha256:" + "1" * 64
    assert one.files == two.files  # the context itself holds no base identity
    assert content_hash(one, platform=PLATFORM) != content_hash(two, platform=PLATFORM)
    assert manifest(one, platform=PLATFORM)["base_pin"] == one.base_pin
