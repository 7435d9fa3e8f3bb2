"""Images travel: built and pushed on one engine, answered from the registry on another.

The other engine is a second dockerd with an empty store, in a container of
the first, with a registry beside it that both engines reach as 127.0.0.1:P
(tests/integration/engines.py). ``envbuild build --registry
R`` there must give the image with the same hash and the same image ID as the
engine that pushed it, from the registry tier, without building (that engine
could not build it anyway: its RUN steps fail).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import engines
from tests.integration.test_build import Envbuild, write_env
from tests.integration.test_registry import Session, session

pytestmark = pytest.mark.docker

CURATED = Path(__file__).resolve().parents[2] / "curated"


@pytest.fixture(scope="module")
def engine_image(docker_cli: str) -> Iterator[str]:
    """The second engine's image, built from the host's binaries; removed afterwards."""
    reason = engines.available()
    if reason is not None:
        if os.environ.get("ENVBUILD_REQUIRE_DOCKER"):
            pytest.fail(f"{reason} (ENVBUILD_REQUIRE_DOCKER is set)", pytrace=False)
        pytest.skip(reason)
    tag = engines.build_image(docker_cli)
    yield tag
    subprocess.run([docker_cli, "rmi", tag], capture_output=True, check=False, timeout=120)


@pytest.fixture
def eb(docker_cli: str, tmp_path: Path) -> Iterator[Session]:
    yield from session(docker_cli, tmp_path / "home")


@pytest.fixture
def second(docker_cli: str, engine_image: str) -> Iterator[engines.SecondEngine]:
    with engines.running(docker_cli, engine_image) as engine:
        yield engine


def on(engine: engines.SecondEngine, tool: Envbuild, home: Path) -> Envbuild:
    """``tool`` driving ``engine`` instead, with a state folder of its own (another machine)."""
    other = Envbuild(tool.docker, tool.prefix, home)
    other.env.update(tool.env)
    other.env.update(DOCKER_HOST=engine.host, ENVBUILD_HOME=str(home))
    return other


def _assert_answered_from_the_registry(
    here: dict[str, object],
    there: dict[str, object],
    engine: engines.SecondEngine,
    repository: str,
    version: int,
) -> None:
    assert there["tier"] == "registry"
    assert (there["hash"], there["id"], there["digest"]) == (
        here["hash"],
        here["id"],
        here["digest"],
    )
    image = str(there["image"])
    prefix = image.rsplit(":", 1)[0]
    # Exactly the pulled image, tagged as a build tags it: nothing else came or was built.
    assert engine.images() == sorted(
        [image, f"{prefix}:{version}", f"{repository}@{here['digest']}"]
    )
    labels = json.loads(
        engine.client("image", "inspect", "--format", "{{json .Config.Labels}}", image)
    )
    assert labels["io.envbuild.hash"] == here["hash"]


def test_a_second_engine_with_an_empty_store_gets_the_same_image_from_the_registry(
    eb: Session,
    second: engines.SecondEngine,
    tmp_path: Path,
) -> None:
    assert second.images() == []  # empty store
    name = f"travel-{uuid.uuid4().hex[:8]}"
    folder = write_env(
        tmp_path / name,
        f'schema = 1\nname = "{name}"\nversion = 3\n[base]\nimage = "debian:bookworm-slim"\n'
        '[variables]\nMESSAGE = "travelled"\n',
    )
    eb("lock", "-q", str(folder))  # the base pinned: the hash needs no engine
    target = f"{second.registry}/{eb.namespace}"
    here = json.loads(
        eb("build", "--json", "-q", "--registry", target, "--push", str(folder)).stdout
    )
    assert here["tier"] == "built" and here["digest"]

    there_tool = on(second, eb, tmp_path / "other-home")
    there = json.loads(
        there_tool("build", "--json", "-q", "--registry", target, str(folder)).stdout
    )
    _assert_answered_from_the_registry(here, there, second, f"{target}/{name}", 3)
    # Now the second engine holds it: the next build answers locally.
    again = json.loads(
        there_tool("build", "--json", "-q", "--registry", target, str(folder)).stdout
    )
    assert (again["tier"], again["id"]) == ("local", here["id"])

    # What the registry does not hold, the second engine cannot make (it lacks the base):
    # the answer above was the registry's, not a build.
    held = second.images()
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    text = (other / "env.toml").read_text(encoding="utf-8").replace("travelled", "stayed")
    (other / "env.toml").write_text(text, encoding="utf-8")
    eb("lock", "-q", str(other))
    proc = there_tool("build", "--json", "-q", "--registry", target, str(other), check=False)
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr
    assert second.images() == held


@pytest.mark.slow
@pytest.mark.catalog
def test_curated_pytorch_travels_to_an_engine_with_an_empty_store(
    docker_cli: str,
    second: engines.SecondEngine,
    tmp_path: Path,
) -> None:
    """The issue's own case: curated/pytorch-1.6-gpu (1.7 GB) under the default prefix."""
    folder = CURATED / "pytorch-1.6-gpu"
    here_tool = Envbuild(docker_cli, "envbuild", tmp_path / "home")
    namespace = f"t{uuid.uuid4().hex[:10]}"
    target = f"{second.registry}/{namespace}"
    repository = f"{target}/pytorch-1.6-gpu"
    try:
        here = json.loads(
            here_tool("build", "--json", "-q", "--registry", target, "--push", str(folder)).stdout
        )
        there_tool = on(second, here_tool, tmp_path / "other-home")
        there = json.loads(
            there_tool("build", "--json", "-q", "--registry", target, str(folder)).stdout
        )
        _assert_answered_from_the_registry(here, there, second, repository, 5)
    finally:
        # Only this test's registry tags, by name: the envbuild/* images stay.
        out = subprocess.run(
            [docker_cli, "images", "--format", "{{.Repository}}:{{.Tag}}", repository],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        for ref in out.split():
            subprocess.run([docker_cli, "rmi", ref], capture_output=True, check=False)
