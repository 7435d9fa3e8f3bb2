"""Integration tests run against the real engine, through the docker CLI envbuild is set to drive.

Tests marked ``docker`` are skipped when no engine answers, unless
``ENVBUILD_REQUIRE_DOCKER`` is set (CI sets it): then a missing engine fails them
loudly instead of letting the suite pass without having tested anything.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest

from envbuild.settings import load_settings
from tests.integration import registry as registries


@pytest.fixture(scope="session")
def docker_cli() -> str:
    """The docker client envbuild drives, once ``docker info`` answered through it."""
    client = load_settings().docker
    try:
        proc = subprocess.run(
            [client, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        reason = proc.stderr.strip().splitlines()[-1:] if proc.returncode else None
    except (OSError, subprocess.TimeoutExpired) as exc:
        reason = [str(exc)]
    if reason is not None:
        message = f"no Docker engine answers `{client} info`: {' '.join(reason) or 'no output'}"
        if os.environ.get("ENVBUILD_REQUIRE_DOCKER"):
            pytest.fail(f"{message} (ENVBUILD_REQUIRE_DOCKER is set)", pytrace=False)
        pytest.skip(message)
    return client


@pytest.fixture(autouse=True)
def _engine_for_docker_tests(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("docker") is not None:
        request.getfixturevalue("docker_cli")


@pytest.fixture
def unique_tag(docker_cli: str) -> Iterator[Callable[[str], str]]:
    """Make ``envbuild-test/<name>:<random>`` tags; every one is removed after the test."""
    made: list[str] = []

    def make(name: str) -> str:
        tag = f"envbuild-test/{name}:{uuid.uuid4().hex[:12]}"
        made.append(tag)
        return tag

    yield make
    for tag in made:
        subprocess.run([docker_cli, "rmi", tag], capture_output=True, check=False)


# A password no test ever prints: every registry test greps what envbuild printed
# and stored for it, so a credential that leaks anywhere fails the test.
CANARY_PASSWORD = "canary-7f3c9e-do-not-print"
REGISTRY_USER = "envbuild-ci"


def _need_registry() -> None:
    reason = registries.available()
    if reason is not None:
        if os.environ.get("ENVBUILD_REQUIRE_DOCKER"):
            pytest.fail(f"{reason} (ENVBUILD_REQUIRE_DOCKER is set)", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[registries.LoopbackRegistry]:
    """A plain registry on 127.0.0.1 (no auth), for the whole session."""
    _need_registry()
    with registries.running(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture(scope="session")
def auth_registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[registries.LoopbackRegistry]:
    """A registry on 127.0.0.1 with htpasswd (bcrypt) auth: one user, the canary password."""
    _need_registry()
    root = tmp_path_factory.mktemp("auth-registry")
    with registries.running(root, username=REGISTRY_USER, password=CANARY_PASSWORD) as running:
        yield running
