"""A property-based sweep over generated definitions: a clear error, or the template's skeleton.

Each generated ``env.toml`` (known keys with valid values, hostile strings
(newlines, quotes, backslashes, ``$``, Dockerfile keywords, control and
bidi characters), wrong types, unknown keys, paths that leave the folder) is
written to a real folder and loaded. Either loading fails with a
:class:`DefinitionError` whose every problem names the file and prints no raw
control character, or the definition renders, and the rendered Dockerfile's
*instruction skeleton* (its instruction keywords in order, as Docker's own
parser reads them) equals the skeleton of the same template rendered from a
*shadow* definition: the same sections and counts, every user string
replaced by a plain valid one. So no value can add, remove or reorder an
instruction. Any other exception fails the sweep.

The default suite runs 1,200 examples (about 20 s); the ``slow`` test runs
10,000 more (minutes), only when asked for:
``pytest -m slow tests/unit/test_fuzz_definitions.py``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dockerfile
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envbuild.definition.model import PYTHON_SOURCES, load
from envbuild.errors import DefinitionError
from envbuild.render.dockerfile import render

# -- values ----------------------------------------------------------------------------

HOSTILE = [
    "\n",
    "\r",
    "\\",
    '"',
    "'",
    "$",
    "${PATH}",
    "`",
    " ",
    "#",
    "\t",
    "\x00",
    "\x1b[2J",
    "\u2028",
    "\u202e",
    "RUN ",
    "\nRUN echo pwned",
    "\\\nRUN x",
    "&&",
    ";",
    "|",
    "../",
    "/",
    "==",
    ">=",
    "@",
    ":",
    "=",
    "é",
    "²",
]

VALID: dict[str, list[str]] = {
    "name": ["fuzz", "a", "py-3.11", "x.y_z"],
    "image": ["debian:bookworm-slim", "ubuntu:22.04", "python:3.11-slim", "registry.io/a/b:1"],
    "python": ["3.11", "3.8", "3.12"],
    "apt": ["curl", "git", "libgomp1", "ca-certificates"],
    "channel": ["conda-forge", "defaults"],
    "conda": ["numpy", "mkl=2020.2", "python=3.11"],
    "pip": ["six", "six==1.16.0", "torch>=1.6", "numpy[extra]==2.0", "a-b_c.d~=1.0"],
    "url": ["https://pypi.org/simple", "http://localhost:8080/simple"],
    "var": ["OMP_NUM_THREADS", "A", "MY_VAR_2"],
    "value": ["1", "hello world", "a=b", "", "$HOME"],
    "cuda": ["10.2", "11.8", "12.1"],
    "workdir": ["/workspace", "/w", "/home/x/y"],
    "shm": ["2g", "512m", "1G"],
    "text": ["a description", "PyTorch 1.6", ""],
    "path": ["base.Dockerfile", "docker/base.Dockerfile", "env.toml"],
    "extends": ["../parent", "../fuzz"],
}

# The plain value each kind of string becomes in the shadow definition.
PLAIN = {kind: values[0] for kind, values in VALID.items()}
PLAIN["value"] = "v"
PLAIN["text"] = "d"


PRINTABLE_HOSTILE = [h for h in HOSTILE if h.isprintable() and "\u202e" not in h]


def hostile_text() -> st.SearchStrategy[str]:
    pieces = st.one_of(
        st.sampled_from(HOSTILE),
        st.text(st.characters(codec="utf-8"), max_size=6),
        st.sampled_from([v for values in VALID.values() for v in values]),
    )
    return st.lists(pieces, min_size=1, max_size=4).map("".join)


def printable_text() -> st.SearchStrategy[str]:
    """Free text that validation lets through: quotes, ``$``, backslashes, keywords."""
    pieces = st.one_of(
        st.sampled_from(PRINTABLE_HOSTILE),
        st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Zs"]), max_size=6),
    )
    return st.lists(pieces, min_size=0, max_size=5).map("".join)


def wrong_type() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.integers(min_value=-(2**70), max_value=2**70),
        st.booleans(),
        st.floats(allow_nan=False),
        st.just([]),
        st.just({}),
        st.lists(st.integers(), max_size=2),
    )


FREE_TEXT = ("text", "value")


def definitions(hostile: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Generated definitions: ``hostile`` ones break rules everywhere; the others rarely.

    The others use valid values, except in free text (descriptions, variable
    values, checks), which is as hostile as validation allows: those are the
    definitions that render, and whose skeleton must not move.
    """

    def maybe_wrong(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(*[strategy] * 9, wrong_type()) if hostile else strategy

    def string_of(kind: str) -> st.SearchStrategy[Any]:
        valid = st.sampled_from(VALID[kind])
        if kind in FREE_TEXT:
            valid = st.one_of(valid, printable_text())
        if not hostile:
            return valid
        return st.one_of(*[valid] * 7, hostile_text(), wrong_type())

    def list_of(kind: str) -> st.SearchStrategy[Any]:
        return maybe_wrong(st.lists(string_of(kind), max_size=4))

    def table(
        fields: dict[str, st.SearchStrategy[Any]], required: tuple[str, ...] = ()
    ) -> st.SearchStrategy[dict[str, Any]]:
        known = st.fixed_dictionaries(
            {k: v for k, v in fields.items() if k in required},
            optional={k: v for k, v in fields.items() if k not in required},
        )
        if not hostile:
            return known
        extra = st.dictionaries(hostile_text(), st.integers(), max_size=1)
        none: st.SearchStrategy[dict[str, Any]] = st.just({})
        return st.tuples(known, st.one_of(*[none] * 4, extra)).map(lambda kv: {**kv[1], **kv[0]})

    valid_var = st.sampled_from(VALID["var"])
    var_names = st.one_of(valid_var, valid_var, valid_var, hostile_text()) if hostile else valid_var
    check = table(
        {
            "run": st.lists(string_of("text"), min_size=1, max_size=3),
            "expect": string_of("text"),
            "name": string_of("text"),
            "timeout": maybe_wrong(st.integers(min_value=1 - 5 * hostile, max_value=10**7)),
        },
        required=("run",),
    )
    versions = st.integers(0, 100)
    if hostile:
        versions = st.one_of(versions, st.integers(min_value=-3, max_value=2**65))
    sources = st.sampled_from(PYTHON_SOURCES)
    return table(
        {
            "schema": maybe_wrong(st.just(1)),
            "name": string_of("name"),
            "version": maybe_wrong(versions),
            "description": string_of("text"),
            "extends": string_of("extends"),
            "base": maybe_wrong(
                st.one_of(
                    table({"image": string_of("image")}),
                    table({"dockerfile": string_of("path")}),
                    *(
                        [table({"image": string_of("image"), "dockerfile": string_of("path")})]
                        if hostile
                        else []
                    ),
                )
            ),
            "python": maybe_wrong(
                table(
                    {
                        "version": string_of("python"),
                        "source": st.one_of(sources, sources, hostile_text())
                        if hostile
                        else sources,
                    }
                )
            ),
            "system": maybe_wrong(table({"packages": list_of("apt")})),
            "conda": maybe_wrong(
                table({"channels": list_of("channel"), "packages": list_of("conda")})
            ),
            "pip": maybe_wrong(
                table(
                    {
                        "packages": list_of("pip"),
                        "index_url": string_of("url"),
                        "extra_index_urls": list_of("url"),
                    }
                )
            ),
            "variables": maybe_wrong(st.dictionaries(var_names, string_of("value"), max_size=4)),
            "gpu": maybe_wrong(table({"cuda": string_of("cuda")})),
            "run": maybe_wrong(
                table({"workdir": string_of("workdir"), "shm_size": string_of("shm")})
            ),
            "tests": maybe_wrong(st.lists(check, max_size=2)),
        },
        required=("schema", "name"),
    )


DEFINITIONS = st.one_of(definitions(hostile=False), definitions(hostile=True))


# -- writing TOML (strings as JSON strings, which TOML reads as basic strings) ----------


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if not isinstance(value, float) or value == value else "nan"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise AssertionError(type(value))


def to_toml(data: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(key)} = {_value(value)}\n" for key, value in data.items())


# -- the shadow: same structure, plain values ---------------------------------------------

KINDS = {
    ("name",): "name",
    ("description",): "text",
    ("base", "image"): "image",
    ("python", "version"): "python",
    ("system", "packages"): "apt",
    ("conda", "channels"): "channel",
    ("conda", "packages"): "conda",
    ("pip", "packages"): "pip",
    ("pip", "index_url"): "url",
    ("pip", "extra_index_urls"): "url",
    ("gpu", "cuda"): "cuda",
    ("run", "workdir"): "workdir",
    ("run", "shm_size"): "shm",
}


def shadow(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (which validated) with every user string replaced by a plain valid one.

    ``[base] dockerfile`` is kept: the shadow folder holds the same base
    Dockerfiles, whose instructions are part of the template's output.
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "variables":
            out[key] = {sub: _plain(KINDS.get((key, sub)), item) for sub, item in value.items()}
        elif key == "variables":
            out[key] = {f"V{i}": "v" for i in range(len(value))}
        elif key == "tests":
            out[key] = [{"run": ["true"]} for _ in value]
        else:
            out[key] = _plain(KINDS.get((key,)), value)
    return out


def _plain(kind: str | None, value: Any) -> Any:
    if kind is None:
        return value  # a choice, an integer or the schema: kept as it is
    if isinstance(value, list):
        return [PLAIN[kind]] * min(len(value), 1)  # packages render as one list either way
    return PLAIN[kind]


def skeleton(text: str) -> list[str]:
    """The instruction keywords of a Dockerfile, in order, as Docker's parser reads them."""
    return [command.cmd.upper() for command in dockerfile.parse_string(text)]


# -- the property ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="envbuild-fuzz-"))
    (root / "fuzz").mkdir()
    (root / "fuzz" / "base.Dockerfile").write_text("FROM debian:bookworm-slim\n")
    (root / "fuzz" / "docker").mkdir()
    (root / "fuzz" / "docker" / "base.Dockerfile").write_text("ARG X=1\nFROM debian\n")
    (root / "parent").mkdir()
    (root / "parent" / "env.toml").write_text('schema = 1\nname = "parent"\n')
    (root / "shadow").mkdir()
    for name in ("base.Dockerfile", "docker"):
        source = root / "fuzz" / name
        if source.is_dir():
            shutil.copytree(source, root / "shadow" / name)
        else:
            shutil.copy(source, root / "shadow" / name)
    yield root
    shutil.rmtree(root)


def check_one(root: Path, data: dict[str, Any]) -> str:
    """Load and render one definition; "invalid" or "rendered"; any other outcome fails."""
    env_dir = root / "fuzz"
    (env_dir / "env.toml").write_text(to_toml(data), encoding="utf-8")
    try:
        env = load(env_dir)
    except DefinitionError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.file and problem.message
        text = exc.render()
        assert all(c.isprintable() or c in "\n" for c in text), repr(text)
        return "invalid"
    rendered = render(env).dockerfile
    (root / "shadow" / "env.toml").write_text(to_toml(shadow(data)), encoding="utf-8")
    expected = render(load(root / "shadow")).dockerfile
    assert skeleton(rendered) == skeleton(expected), (to_toml(data), rendered)
    return "rendered"


COMMON = settings(
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


def examples(count: int, *, derandomize: bool = True) -> settings:
    return settings(COMMON, max_examples=count, derandomize=derandomize)


@examples(1_000)
@given(data=DEFINITIONS)
def test_generated_definitions_fail_clearly_or_keep_the_skeleton(
    folder: Path, data: dict[str, Any]
) -> None:
    check_one(folder, data)


@pytest.mark.slow
@examples(10_000, derandomize=False)
@given(data=DEFINITIONS)
def test_ten_thousand_generated_definitions(folder: Path, data: dict[str, Any]) -> None:
    check_one(folder, data)


@pytest.fixture(autouse=True)
def _slow_on_request(request: pytest.FixtureRequest) -> None:
    """The 10,000-example sweep (minutes) runs when asked for: ``pytest -m slow``."""
    if request.node.get_closest_marker("slow") and "slow" not in (
        request.config.option.markexpr or ""
    ):
        pytest.skip("10,000 examples take minutes: run `pytest -m slow` for this sweep")


def test_the_sweep_renders_some_and_refuses_some(folder: Path) -> None:
    """The generator reaches both outcomes, each often (a sweep that only fails proves nothing)."""
    seen: Counter[str] = Counter()

    @examples(200)
    @given(data=DEFINITIONS)
    def sample(data: dict[str, Any]) -> None:
        seen[check_one(folder, data)] += 1

    sample()
    assert seen["invalid"] >= 40 and seen["rendered"] >= 40, seen
