"""Shared pytest configuration: the golden-file update flag, the pinned hashes, helpers.

``pytest --update-golden`` rewrites the golden build contexts
(``tests/golden/<case>/context/``) and the pinned content hashes
(``tests/pinned-hashes.json``) from the current renderer, instead of comparing
against them. Review the diff before committing it: a changed pin means every
image of that definition changes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PINNED_HASHES = ROOT / "tests" / "pinned-hashes.json"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/*/context/ and tests/pinned-hashes.json from the current renderer",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


class Pins:
    """The pinned content hashes of ``tests/pinned-hashes.json``, by group and name.

    :meth:`check` asserts a hash equals its pin; with ``--update-golden`` it
    records the hash instead, and the file is rewritten when the session ends.
    """

    def __init__(self, path: Path, update: bool) -> None:
        self.path = path
        self.update = update
        self.data: dict[str, dict[str, str]] = json.loads(path.read_text(encoding="utf-8"))
        self.changed = False

    def group(self, group: str) -> dict[str, str]:
        """The pins of ``group`` (e.g. ``"golden"``, ``"curated"``), by name."""
        return dict(self.data.get(group, {}))

    def check(self, group: str, name: str, actual: str) -> None:
        """Assert ``actual`` is the pin of ``group``/``name`` (or record it when updating)."""
        if self.update:
            if self.data.setdefault(group, {}).get(name) != actual:
                self.data[group][name] = actual
                self.changed = True
            return
        expected = self.data.get(group, {}).get(name)
        assert actual == expected, (
            f"the content hash of {group}/{name} is {actual}, pinned {expected} in "
            f"{self.path}: if the change is intended, run "
            "`pytest --update-golden` and review the diff"
        )

    def keep_only(self, group: str, names: set[str]) -> None:
        """When updating, drop the pins of ``group`` whose names are no longer there."""
        if self.update:
            kept = {k: v for k, v in self.data.get(group, {}).items() if k in names}
            if kept != self.data.get(group, {}):
                self.data[group] = kept
                self.changed = True

    def save(self) -> None:
        """Write the pins back (sorted), if an update changed them."""
        if self.changed:
            text = json.dumps(self.data, indent=2, sort_keys=True) + "\n"
            self.path.write_text(text, encoding="utf-8")


@pytest.fixture(scope="session")
def pins(request: pytest.FixtureRequest) -> Iterator[Pins]:
    found = Pins(PINNED_HASHES, bool(request.config.getoption("--update-golden")))
    yield found
    found.save()


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
