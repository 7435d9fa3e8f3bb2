"""Unit tests never reach a Docker engine: every route to one points nowhere."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _no_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    monkeypatch.setenv("ENVBUILD_DOCKER", str(tmp_path / "no-docker-client"))
    monkeypatch.setenv("ENVBUILD_HOME", str(tmp_path / "envbuild-home"))
    monkeypatch.setenv("ENVBUILD_CONFIG", str(tmp_path / "no-config.toml"))
    for var in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "ENVBUILD_PREFIX"):
        monkeypatch.delenv(var, raising=False)
    for var in ("ENVBUILD_REGISTRY", "ENVBUILD_REGISTRY_CA", "ENVBUILD_REGISTRY_USERNAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("ENVBUILD_REGISTRY_PASSWORD", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))


@pytest.fixture
def engine_holds_base(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine (reached through :class:`DockerEngine`) holds the fake base image and
    nothing else: what resolving an unlocked environment asks it."""
    from envbuild.engine.docker import DockerEngine
    from tests.fakes import FakeEngine

    fake = FakeEngine()
    monkeypatch.setattr(DockerEngine, "inspect_image", lambda self, ref: fake.inspect_image(ref))
