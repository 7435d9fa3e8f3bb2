"""Shared pytest configuration: the golden-file update flag and helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/*/Dockerfile from the current renderer",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def write_env(tmp_path: Path):
    """Write an env.toml (and extra files) into a fresh folder; return the folder."""
    counter = {"n": 0}

    def write(text: str, folder: str | None = None, **files: str) -> Path:
        counter["n"] += 1
        env_dir = tmp_path / (folder or f"env{counter['n']}")
        env_dir.mkdir(parents=True, exist_ok=True)
        (env_dir / "env.toml").write_text(text, encoding="utf-8")
        for name, content in files.items():
            (env_dir / name.replace("__", ".")).write_text(content, encoding="utf-8")
        return env_dir

    return write
