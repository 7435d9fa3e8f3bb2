"""The cache against the real engine: a hit is only ever the image of what the inputs are now.

Each test drives the real command line (the console script's code, as
``python -m envbuild``) under its own image prefix and state folder, and
removes every image it made.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker


class Envbuild:
    """The real envbuild command line with an isolated prefix and state folder."""

    def __init__(self, docker: str, prefix: str, home: Path) -> None:
        self.docker = docker
        self.prefix = prefix
        self.env = {**os.environ, "ENVBUILD_PREFIX": prefix, "ENVBUILD_HOME": str(home)}
        self.made: list[str] = []  # image IDs made outside envbuild, removed last

    def __call__(self, *args: str, home: Path | None = None) -> str:
        env = self.env if home is None else {**self.env, "ENVBUILD_HOME": str(home)}
        proc = subprocess.run(
            [sys.executable, "-m", "envbuild", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
            check=False,
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"envbuild {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
            )
        return proc.stdout

    def build(self, folder: Path, *extra: str) -> dict[str, object]:
        result: dict[str, object] = json.loads(self("build", "--json", "-q", *extra, str(folder)))
        return result

    def docker_out(self, *args: str) -> str:
        return subprocess.run(
            [self.docker, *args], capture_output=True, text=True, check=True, timeout=600
        ).stdout

    def docker_build(self, tag: str, dockerfile: str, folder: Path) -> str:
        """``docker build`` (BuildKit) of ``dockerfile`` tagged ``tag``; its image ID."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "Dockerfile").write_text(dockerfile, encoding="utf-8")
        iid = folder / "iid"
        subprocess.run(
            [self.docker, "build", "-q", "--iidfile", str(iid), "-t", tag, str(folder)],
            capture_output=True,
            check=True,
            timeout=600,
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
        )
        image_id = iid.read_text().strip()
        self.made.append(image_id)
        return image_id

    def image_id(self, ref: str) -> str:
        return self.docker_out("image", "inspect", "--format", "{{.Id}}", ref).strip()

    def labels(self, ref: str) -> dict[str, str]:
        data: dict[str, str] = json.loads(
            self.docker_out("image", "inspect", "--format", "{{json .Config.Labels}}", ref)
        )
        return data

    def tags(self) -> list[str]:
        out = self.docker_out(
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "--filter",
            f"reference={self.prefix}/*",
        )
        return sorted(line for line in out.splitlines() if line)


@pytest.fixture
def eb(docker_cli: str, tmp_path: Path) -> Iterator[Envbuild]:
    tool = Envbuild(docker_cli, f"envbuild-test-{uuid.uuid4().hex[:10]}", tmp_path / "home")
    yield tool
    for tag in [*tool.tags(), *(f"{tool.prefix}/base:{n}" for n in ("one", "two", "now"))]:
        subprocess.run([docker_cli, "rmi", tag], capture_output=True, check=False)
    for image_id in tool.made:
        subprocess.run([docker_cli, "rmi", image_id], capture_output=True, check=False)


def _write(folder: Path, text: str, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "env.toml").write_text(text, encoding="utf-8")
    for name, content in files.items():
        (folder / name).write_text(content, encoding="utf-8")
    return folder


def test_finding_1_an_edited_parent_base_dockerfile_under_an_empty_base_table(
    eb: Envbuild, tmp_path: Path
) -> None:
    """A child extends a parent and has an empty [base] table; the parent's base
    Dockerfile changes: the child's hash changes (as a fresh state folder says) and
    build builds the new base, never answering cached with the old image."""
    _write(
        tmp_path / "parent",
        'schema = 1\nname = "parent"\n[base]\ndockerfile = "base.Dockerfile"\n',
        **{"base.Dockerfile": "FROM debian:bookworm-slim\nLABEL io.example.marker=one\n"},
    )
    child = _write(
        tmp_path / "child", 'schema = 1\nname = "child"\nextends = "../parent"\n[base]\n'
    )
    first = eb.build(child)
    assert eb("hash", str(child)).strip() == first["hash"]
    assert eb.build(child)["cached"] is True

    (tmp_path / "parent" / "base.Dockerfile").write_text(
        "FROM debian:bookworm-slim\nLABEL io.example.marker=two\n", encoding="utf-8"
    )
    fresh = eb("hash", str(child), home=tmp_path / "fresh-home").strip()
    assert fresh != first["hash"]
    assert eb("hash", str(child)).strip() == fresh
    second = eb.build(child)
    assert second["cached"] is False
    assert second["hash"] == fresh
    assert eb.labels(str(second["image"]))["io.example.marker"] == "two"
    assert eb.build(child)["cached"] is True  # and the new record answers next time


def test_finding_2_a_retagged_unlocked_base_is_another_hash(eb: Envbuild, tmp_path: Path) -> None:
    """Retag the base an unlocked environment names: another hash, a build on the new
    base, the old hash tag untouched, explain names the base; back on the old base,
    the old image is the hit again."""
    base = f"{eb.prefix}/base:now"
    one = eb.docker_build(
        base, "FROM debian:bookworm-slim\nRUN echo one > /marker\n", tmp_path / "b1"
    )
    folder = _write(
        tmp_path / "env",
        f'schema = 1\nname = "onbase"\n[base]\nimage = "{base}"\n[python]\nsource = "system"\n',
    )
    first = eb.build(folder)
    assert first["cached"] is False
    marker = ["run", "--rm", "--network", "none", "--entrypoint", "cat"]
    assert eb.docker_out(*marker, str(first["image"]), "/marker").strip() == "one"
    assert eb.build(folder)["cached"] is True

    eb.docker_build(base, "FROM debian:bookworm-slim\nRUN echo two > /marker\n", tmp_path / "b2")
    moved = eb("hash", str(folder)).strip()
    assert moved != first["hash"]
    explained = eb("explain", "--against", str(first["image"]), str(folder))
    assert f"base_pin: the base image {base} changed" in explained
    assert one.removeprefix("sha256:")[:12] in explained
    second = eb.build(folder)
    assert second["cached"] is False
    assert second["hash"] == moved
    assert eb.docker_out(*marker, str(second["image"]), "/marker").strip() == "two"
    assert eb.image_id(str(first["image"])) == first["id"]  # the old hash tag did not move

    rebuilt = eb.build(folder, "--rebuild")  # on the base the engine holds now
    assert rebuilt["hash"] == moved
    assert eb.image_id(str(first["image"])) == first["id"]

    eb.docker_out("tag", one, base)  # back to the first base: its image is the hit
    again = eb.build(folder)
    assert (again["cached"], again["hash"], again["id"]) == (True, first["hash"], first["id"])
    assert f"{eb.prefix}/onbase:1" in eb.tags()
    assert eb.image_id(f"{eb.prefix}/onbase:1") == first["id"]  # the version tag moved back
