"""Shell completion of ENV: environment folders, through click's own mechanism."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from envbuild.cli.completion import env_folders

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for folder in ("envs/hello", "envs/world", "curated/a-1", "curated/b-2", "solo", ".hidden-env"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "env.toml").write_text("")
    (tmp_path / "curated" / "notes").mkdir()  # no env.toml: never offered
    (tmp_path / "docs").mkdir()  # no environment inside: never offered
    (tmp_path / "env.toml-not-a-folder").write_text("")
    return tmp_path


@pytest.mark.parametrize(
    ("incomplete", "expected"),
    [
        ("", ["curated/a-1", "curated/b-2", "envs/hello", "envs/world", "solo"]),
        ("cur", ["curated/a-1", "curated/b-2"]),
        ("curated/", ["curated/a-1", "curated/b-2"]),
        ("curated/b", ["curated/b-2"]),
        ("so", ["solo"]),
        (".h", [".hidden-env"]),
        ("docs", []),
        ("nothing/", []),
    ],
)
def test_env_folders(tree: Path, incomplete: str, expected: list[str]) -> None:
    assert env_folders(incomplete, cwd=tree) == expected


def test_an_absolute_path_completes_as_typed(tree: Path) -> None:
    assert env_folders(f"{tree}/envs/h") == [f"{tree}/envs/hello"]


@pytest.mark.parametrize(
    "words", ["envbuild build cur", "envbuild run --gpus all cur", "envbuild lock cur"]
)
def test_click_completes_env_arguments(words: str) -> None:
    env = {
        **os.environ,
        "_ENVBUILD_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - 1),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "envbuild"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "plain,curated/python-3.11" in proc.stdout.splitlines()
