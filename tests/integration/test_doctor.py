"""`envbuild doctor` against the real engine: its answers, a tool missing from PATH, a registry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from envbuild.catalog.doctor import diagnose
from envbuild.engine.docker import DockerEngine
from envbuild.settings import load_settings
from tests.integration.conftest import CANARY_PASSWORD, REGISTRY_USER
from tests.integration.registry import LoopbackRegistry
from tests.unit.test_gpu import PROC_TEXTS

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]


def _doctor(tmp_path: Path, *args: str, **env: str) -> tuple[int, dict[str, Any], str]:
    environ = {**os.environ, "ENVBUILD_HOME": str(tmp_path / "home"), **env}
    proc = subprocess.run(
        [sys.executable, "-m", "envbuild", "doctor", "--json", *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    return proc.returncode, json.loads(proc.stdout), proc.stdout + proc.stderr


def _statuses(data: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in data["checks"]}


def test_the_real_engine_and_client_answer(tmp_path: Path) -> None:
    code, data, _ = _doctor(tmp_path)
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["engine"]["status"] == "ok"
    assert checks["engine"]["detail"].startswith("Docker ")
    assert checks["buildkit client"]["status"] == "ok"
    assert checks["disk: engine data"]["status"] in ("ok", "warn", "skip")
    assert "gpu: pytorch-1.6-gpu" in checks  # the curated CUDA environment is checked
    assert code == (0 if data["ok"] else 1)


def test_mmdebstrap_missing_from_path(tmp_path: Path) -> None:
    # A PATH holding the docker client alone: the engine and BuildKit still answer.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = shutil.which(load_settings().docker)
    assert docker is not None
    (bin_dir / "docker").symlink_to(docker)
    code, data, text = _doctor(tmp_path, PATH=str(bin_dir), ENVBUILD_DOCKER="docker")
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["mmdebstrap"]["status"] == "fail"
    assert checks["mmdebstrap"]["fix"] == "apt-get install mmdebstrap"
    assert checks["engine"]["status"] == "ok" and checks["buildkit client"]["status"] == "ok"
    assert code == 1 and data["ok"] is False, text


def test_the_driver_from_fixtures_against_the_real_engine(tmp_path: Path) -> None:
    proc = tmp_path / "version"
    proc.write_text(PROC_TEXTS["418.87"])
    report = diagnose(
        engine=DockerEngine(load_settings().docker),
        catalog=ROOT / "curated",
        proc_path=proc,
        nvidia_smi="",
        gpu_required=True,
    )
    (line,) = [c for c in report.checks if c.name == "gpu: pytorch-1.6-gpu"]
    assert line.status == "fail"
    assert "needs NVIDIA driver >= 440.33; this host has 418.87" in line.detail
    assert not report.ok


def test_a_registry_that_accepts_the_credentials(
    tmp_path: Path, auth_registry: LoopbackRegistry
) -> None:
    good = {
        "ENVBUILD_REGISTRY": auth_registry.host,
        "ENVBUILD_REGISTRY_USERNAME": REGISTRY_USER,
        "ENVBUILD_REGISTRY_PASSWORD": CANARY_PASSWORD,
    }
    _, data, text = _doctor(tmp_path, **good)
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["registry"]["status"] == "ok", checks["registry"]
    assert REGISTRY_USER in checks["registry"]["detail"]
    assert CANARY_PASSWORD not in text

    wrong = {**good, "ENVBUILD_REGISTRY_PASSWORD": CANARY_PASSWORD + "-wrong"}
    code, data, text = _doctor(tmp_path, **wrong)
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["registry"]["status"] == "fail"
    assert "refused the credentials" in checks["registry"]["detail"]
    assert code == 1 and CANARY_PASSWORD not in text
