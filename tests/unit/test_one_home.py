"""Rules with one home: the ``Log`` type, the default platform, the secret ids, lock file names.

Each is defined in one module and imported everywhere else; a second
definition (a copy that can drift) fails here. The source is read, not run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from envbuild.lock.model import INDEX_FILE, PIP_LOCK_FILE
from envbuild.log import Log, quiet
from envbuild.render.dockerfile import CA_SECRET, NETRC_SECRET, SECRETS
from envbuild.settings import DEFAULT_PLATFORM, Settings

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "builder" / "envbuild"
TEMPLATES = ROOT / "templates"


def _modules() -> list[tuple[str, ast.Module]]:
    return [
        (path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(encoding="utf-8")))
        for path in sorted(PACKAGE.rglob("*.py"))
    ]


def _dict_keys(tree: ast.AST) -> set[int]:
    return {id(key) for node in ast.walk(tree) if isinstance(node, ast.Dict) for key in node.keys}


def _homes_of_constant(value: str) -> set[str]:
    """The modules with ``value`` as a string constant other than a dict key."""
    found = set()
    for name, tree in _modules():
        keys = _dict_keys(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value == value and id(node) not in keys:
                found.add(name)
    return found


def test_the_log_type_is_defined_once() -> None:
    homes = {
        name
        for name, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        and any(
            isinstance(target, ast.Name) and target.id == "Log"
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        )
    }
    assert homes == {"log.py"}
    drop: Log = quiet
    drop("a line")  # a Log that drops every line


def test_the_default_platform_is_defined_once() -> None:
    assert _homes_of_constant(DEFAULT_PLATFORM) == {"settings.py"}
    assert Settings().platform == DEFAULT_PLATFORM


@pytest.mark.parametrize("secret", [CA_SECRET, NETRC_SECRET])
def test_each_secret_id_is_defined_once(secret: str) -> None:
    assert _homes_of_constant(secret) == {"render/dockerfile.py"}


def test_templates_receive_the_secret_ids_as_data() -> None:
    literal = [
        path.relative_to(ROOT).as_posix()
        for path in sorted(TEMPLATES.rglob("*"))
        if path.is_file()
        and any(secret in path.read_text(encoding="utf-8") for secret in (CA_SECRET, NETRC_SECRET))
    ]
    assert literal == []
    assert SECRETS["ca_path"] == f"/run/secrets/{CA_SECRET}"


@pytest.mark.parametrize("name", [INDEX_FILE, PIP_LOCK_FILE])
def test_each_lock_file_name_is_defined_once(name: str) -> None:
    assert _homes_of_constant(name) == {"lock/model.py"}
