"""The quoting filters, and that templates cannot emit an unquoted value."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import dockerfile
import pytest

from envbuild.definition.model import load
from envbuild.errors import RenderError
from envbuild.render import quoting as quoting
from envbuild.render.dockerfile import render

GOLDEN = Path(__file__).resolve().parents[1] / "golden"

INJECTIONS = [
    "a\nRUN touch /pwned",
    "a\r\nRUN touch /pwned",
    "a\rRUN touch /pwned",
    "a\x00b",
    "a\x0bb",
    "a\x1b[31mred",
    "a\u2028RUN touch /pwned",
]


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize("name", ["dq", "shq", "path", "ident", "imageref"])
def test_filters_refuse_control_characters(name: str, value: str) -> None:
    with pytest.raises(quoting.UnsafeValueError):
        quoting.FILTERS[name](value)


def test_dq_escapes_quote_backslash_dollar() -> None:
    assert quoting.dq('a"b\\c $HOME') == '"a\\"b\\\\c \\$HOME"'


def test_jsonlist_is_json() -> None:
    assert quoting.jsonlist(["python", "-c", "print('x')"]) == '["python", "-c", "print(\'x\')"]'
    with pytest.raises(quoting.UnsafeValueError):
        quoting.jsonlist("python")  # a str is a Sequence[str] to the type checker


def test_shq() -> None:
    assert quoting.shq("a b") == "'a b'"
    assert quoting.shq("$(id)") == "'$(id)'"


def test_finalize_refuses_unquoted_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from envbuild.render import dockerfile as render_mod

    root = tmp_path / "templates"
    (root / "files").mkdir(parents=True)
    for f in ("setup-python.sh", "pip-install.sh"):
        (root / "files" / f).write_text("#!/bin/sh\n")
    (root / "Dockerfile.j2").write_text("FROM {{ base_image }}\n")
    monkeypatch.setattr(render_mod, "templates_dir", lambda: root)
    with pytest.raises(RenderError) as info:
        render(load(GOLDEN / "minimal"))
    assert "without a quoting filter" in info.value.render()


@pytest.mark.parametrize("value", INJECTIONS)
def test_unvalidated_value_cannot_inject(value: str) -> None:
    """Even a model that skipped validation cannot add an instruction."""
    env = load(GOLDEN / "minimal")
    bad = dataclasses.replace(env, variables=(("A", value),))
    with pytest.raises(RenderError):
        render(bad)
    bad_label = dataclasses.replace(env, description=value)
    with pytest.raises(RenderError):
        render(bad_label)


def _skeleton(text: str) -> list[str]:
    return [c.cmd for c in dockerfile.parse_string(text)]


AWKWARD = [
    'a"b\\c',
    "'single'",
    '"',
    '\\"',
    "trailing space ",
    "=leading",
    "key=value",
    "$HOME ${PATH} $(id) `id`",
    "\\",
    "tab\there",
    "ünïcødé ✓",
]


@pytest.mark.parametrize("value", AWKWARD)
def test_awkward_values_keep_the_skeleton(value: str) -> None:
    env = load(GOLDEN / "minimal")
    plain = render(dataclasses.replace(env, variables=(("A", "x"),), description="d")).dockerfile
    odd = render(dataclasses.replace(env, variables=(("A", value),), description=value)).dockerfile
    assert _skeleton(odd) == _skeleton(plain)
