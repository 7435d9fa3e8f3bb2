"""docs/env.schema.json: generated from the validation model, and agreeing with it."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from envbuild.definition.model import json_schema, json_schema_text, load
from tests.unit.test_definition_errors import CASES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "env.schema.json"
DEFINITIONS = sorted([*ROOT.glob("envs/*/env.toml"), *ROOT.glob("curated/*/env.toml")])

# The bad-definition cases a JSON Schema cannot reject: they need the file
# system, a rule between keys, or a grammar rule beyond a pattern. Every other
# case (every type error among them) must be rejected by the schema too.
NEEDS_ENVBUILD = {
    "base-dockerfile-missing",  # the file system
    "workdir-dotdot",  # ".." in a path: a rule beside the pattern
    "base-dockerfile-escape",
    "conda-python-without-version",  # rules between keys (and across extends)
    "uv-python-without-version",
    "conda-packages-without-conda-python",
    "conda-packages-with-uv-python",
}


def _validator() -> jsonschema.protocols.Validator:
    schema = json_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _errors(text: str) -> list[str]:
    return [e.message for e in _validator().iter_errors(tomllib.loads(text))]


def test_committed_schema_is_what_envbuild_generates() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == json_schema_text(), (
        "docs/env.schema.json is stale: python3 -m envbuild schema > docs/env.schema.json"
    )


def test_schema_command_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    from envbuild.cli.main import main

    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json_schema()


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def _patterns(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return found + [p for value in node.values() for p in _patterns(value)]
    if isinstance(node, list):
        return [p for value in node for p in _patterns(value)]
    return []


def test_patterns_are_portable() -> None:
    """No lookaround or inline flags: taplo's Rust regex and ECMA-262 read them too."""
    patterns = _patterns(json_schema())
    assert len(patterns) >= 15
    for pattern in patterns:
        re.compile(pattern)
        assert not re.search(r"\(\?[=!<iLmsux]", pattern), pattern
        assert pattern.startswith("^") and pattern.endswith("$"), pattern


@pytest.mark.parametrize("path", DEFINITIONS, ids=lambda p: str(p.parent.relative_to(ROOT)))
def test_every_definition_in_the_repository_validates(path: Path) -> None:
    assert list(_validator().iter_errors(tomllib.loads(path.read_text(encoding="utf-8")))) == []


def test_the_repository_has_definitions() -> None:
    assert len(DEFINITIONS) >= 6


SCHEMA_CASES = [c for c in CASES if c[0] not in NEEDS_ENVBUILD]


@pytest.mark.parametrize(
    ("case", "text", "expected"), SCHEMA_CASES, ids=[c[0] for c in SCHEMA_CASES]
)
def test_bad_definitions_are_rejected_by_the_schema(
    case: str, text: str, expected: list[str]
) -> None:
    assert _errors(text), f"{case}: the schema accepts it"


def test_every_type_error_of_the_table_is_checked_by_the_schema() -> None:
    type_errors = [c[0] for c in CASES if any("expected a" in f for f in c[2])]
    assert len(type_errors) >= 6
    assert not set(type_errors) & NEEDS_ENVBUILD
    assert {c[0] for c in CASES} >= NEEDS_ENVBUILD, "a name in NEEDS_ENVBUILD left the table"


@pytest.mark.parametrize(
    "text",
    [
        'schema = 1\nname = "t"\n[[tests]]\nrun = ["x"]\ntimeout = 0\n',
        'schema = 1\nname = "t"\n[variables]\nDOCKER_HOST = "x"\n',
        'schema = 1\nname = "t"\n[pip]\nindex_url = "https://u:p@h/simple"\n',
        'schema = 1\nname = "t"\n[pip]\nindex_url = "https://h/simple?x=1"\n',
        'schema = 1\nname = "t"\n[python]\nversion = 3.11\n',
        'schema = 1\nname = "t"\n[gpu]\ncuda = 10.2\n',
        'schema = 1\nname = "t"\ntests = [1]\n',
    ],
)
def test_more_type_and_grammar_errors_are_rejected(text: str) -> None:
    assert _errors(text)


def test_a_full_definition_is_accepted() -> None:
    text = (
        "schema = 1\n"
        'name = "full"\nversion = 3\ndescription = "a\\tb"\nextends = "../python-3.11"\n'
        '[base]\nimage = "registry.example.com:5000/team/base:1.0"\n'
        '[python]\nversion = "3.11"\nsource = "conda"\n'
        '[system]\npackages = ["libgomp1", "git=1:2.39.5-0+deb12u1"]\n'
        '[conda]\nchannels = ["conda-forge", "https://c.example.com/x"]\n'
        'packages = ["mkl=2020.2", "conda-forge::numpy>=1.26"]\n'
        '[pip]\npackages = ["numpy>=1.26", \'pkg[extra]==1.0; python_version<"3.12"\']\n'
        'index_url = "https://pypi.org/simple"\nextra_index_urls = ["http://h:8080/a@b/simple"]\n'
        '[variables]\nOMP_NUM_THREADS = "1"\n'
        '[gpu]\ncuda = "12.1"\n'
        '[run]\nworkdir = "/workspace"\nshm_size = "8g"\n'
        '[[tests]]\nname = "n"\nrun = ["python", "-c", "1"]\nexpect = ""\ntimeout = 60\n'
    )
    assert _errors(text) == []


def test_schema_comment_does_not_change_loading(write_env) -> None:
    """The `#:schema` line editors read (taplo, Even Better TOML) is a TOML comment."""
    text = 'schema = 1\nname = "t"\nversion = 2\n'
    plain = load(write_env(text, folder="plain"))
    commented = load(write_env("#:schema ../docs/env.schema.json\n" + text, folder="commented"))
    assert (commented.name, commented.version) == (plain.name, plain.version)


def _keys(schema: dict[str, Any], path: str = "") -> list[str]:
    found = []
    for name, sub in schema.get("properties", {}).items():
        key = f"{path}.{name}" if path else name
        found.append(key)
        found += _keys(sub.get("items", sub) if sub.get("type") == "array" else sub, key)
    return found


def test_every_key_is_described_and_only_those() -> None:
    from envbuild.definition.model import DESCRIPTIONS

    keys = _keys(json_schema())
    assert sorted(keys) == sorted(DESCRIPTIONS)
    assert "tests.timeout" in keys
    assert json_schema()["properties"]["run"]["properties"]["workdir"]["description"]


def test_generated_definitions_envbuild_accepts_the_schema_accepts(tmp_path: Path) -> None:
    """The schema is never stricter than validation: no editor error on a good definition."""
    from hypothesis import given

    from envbuild.errors import DefinitionError
    from tests.unit.test_fuzz_definitions import DEFINITIONS, examples, to_toml

    validator = _validator()
    seen = {"accepted": 0, "refused": 0}
    folder = tmp_path / "gen"
    folder.mkdir()

    @examples(400)
    @given(data=DEFINITIONS)
    def sample(data: dict[str, Any]) -> None:
        text = to_toml(data)
        (folder / "env.toml").write_text(text, encoding="utf-8")
        try:
            load(folder)
        except DefinitionError:
            seen["refused"] += 1
            return
        seen["accepted"] += 1
        errors = [e.message for e in validator.iter_errors(tomllib.loads(text))]
        assert errors == [], text

    sample()
    assert seen["accepted"] >= 50 and seen["refused"] >= 50, seen
