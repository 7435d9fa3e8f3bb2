"""The wheel ships the templates: build it, install it into a fresh venv, render from there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_renders_from_a_fresh_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(dist),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(dist.glob("envbuild-*.whl"))
    venv = tmp_path / "venv"
    # System site-packages provide the dependencies; the wheel itself is installed alone.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    probe = subprocess.run(
        [
            str(py),
            "-c",
            "import envbuild.render.dockerfile as r; print(r.templates_dir())",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert str(venv) in probe.stdout, probe.stdout
    rendered = subprocess.run(
        [str(venv / "bin" / "envbuild"), "render", str(ROOT / "envs" / "hello")],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert "FROM debian:bookworm-slim" in rendered.stdout
