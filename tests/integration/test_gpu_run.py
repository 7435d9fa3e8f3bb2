"""`envbuild run --gpus` on a CUDA-labelled image, against the real engine, on a host with no
NVIDIA driver: the driver error comes before any container exists."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from envbuild.engine.docker import DockerEngine
from envbuild.engine.protocols import BuildRequest
from envbuild.errors import EXIT_RUN_ENGINE
from envbuild.identity import CUDA_LABEL
from envbuild.run.gpu import host_driver
from envbuild.settings import load_settings

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(host_driver().version is not None, reason="this host has an NVIDIA driver"),
]


def test_a_cuda_image_with_gpus_fails_before_a_container_exists(
    unique_tag: Callable[[str], str], tmp_path: Path
) -> None:
    settings = load_settings()
    engine = DockerEngine(settings.docker)
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM debian:bookworm-slim\n")
    image_id = engine.build(
        BuildRequest(context_dir=context, labels={CUDA_LABEL: "10.2"}), log=lambda _: None
    )
    tag = unique_tag("cuda-label")
    engine.tag(image_id, tag)
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello.py").write_text("print('never runs')\n")
    home = tmp_path / "home"
    env = {**os.environ, "ENVBUILD_HOME": str(home)}
    argv = ["run", "--gpus", "all", "--source-dir", str(src), f"image:{tag}", "hello.py"]
    proc = subprocess.run(
        [sys.executable, "-m", "envbuild", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == EXIT_RUN_ENGINE, proc.stderr
    assert "CUDA 10.2 needs NVIDIA driver >= 440.33" in proc.stderr
    assert "no NVIDIA driver found" in proc.stderr
    assert "never runs" not in proc.stdout
    # No run began: it has no log file and no history row.
    assert not (home / "runs").exists()
