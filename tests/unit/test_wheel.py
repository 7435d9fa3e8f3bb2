"""The wheel ships the templates: build it, install it into a fresh venv, render from there."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
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
    # The in-container azureml.core is data beside the run layer: it must ship.
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    for name in ("__init__.py", "core/__init__.py", "core/run.py"):
        assert f"envbuild/run/azureml_context/azureml/{name}" in shipped
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # The dependencies come from the interpreter running the tests, appended
    # after the venv's own site-packages (a plain path line: the .pth files
    # there, such as an editable envbuild's, are not processed). Not
    # --system-site-packages: when the tests run in a virtual environment, that
    # names the base interpreter's packages, which may hold anything.
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (Path(purelib) / "test-deps.pth").write_text("\n".join(sorted(ours)) + "\n")
    # Nothing of the checkout may leak in through the environment.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
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
        env=env,
    )
    assert str(venv) in probe.stdout, probe.stdout
    context = subprocess.run(
        [str(py), "-c", "from envbuild.run.files import context_dir; print(context_dir())"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=env,
    ).stdout.strip()
    assert context.startswith(str(venv)), context
    assert (Path(context) / "azureml" / "core" / "run.py").is_file()
    rendered = subprocess.run(
        [str(venv / "bin" / "envbuild"), "render", str(ROOT / "envs" / "hello")],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=env,
    )
    assert "FROM debian:bookworm-slim" in rendered.stdout
