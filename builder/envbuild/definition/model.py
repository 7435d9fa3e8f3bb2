"""Load and validate ``env.toml`` into a frozen :class:`Environment`.

Parse -> validate -> merge (``extends``) -> complete, as in cog's loader:

* parsing turns TOML into a plain mapping (a syntax error names line and column);
* validation walks that mapping against :data:`SCHEMA`, collecting *every*
  problem with its file, key path, what was expected and a hint, and returns
  only the keys that were present (a "partial");
* partials of a parent chain are merged, the child winning;
* completion fills defaults and returns frozen dataclasses.

Nothing downstream sees a raw dict or ``None``-means-unset.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from envbuild import files, reads
from envbuild.definition import grammar as grammar
from envbuild.errors import DefinitionError, Problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DEFINITION_FILE = "env.toml"
SCHEMA_VERSION = 1
PYTHON_SOURCES = ("system", "uv", "conda")
DEFAULT_BASE = "debian:bookworm-slim"
DEFAULT_WORKDIR = "/workspace"
DEFAULT_SHM_SIZE = "2g"
MAX_INT = 2**63 - 1  # integers are stored as signed 64-bit (the run history, labels)
MAX_TEST_TIMEOUT = 7 * 24 * 3600  # a check's timeout in seconds: a week at most


# --------------------------------------------------------------------------
# The validated model
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    """The base of the image: an image reference or a user Dockerfile."""

    image: str | None = None
    dockerfile: Path | None = None  # absolute path of the user's base Dockerfile
    dockerfile_text: str | None = None  # its content, as read (once) when loading


@dataclass(frozen=True)
class BaseDockerfile:
    """A ``[base] dockerfile`` as loaded: where it is and what it said when read."""

    path: Path  # absolute, symlinks resolved (inside the environment's folder)
    text: str


@dataclass(frozen=True)
class Python:
    """Where the environment's Python comes from."""

    version: str | None = None
    source: str = "system"


@dataclass(frozen=True)
class Pip:
    """pip requirements and indexes (credentials never live here)."""

    packages: tuple[str, ...] = ()
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class Conda:
    """conda channels and packages."""

    channels: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()


@dataclass(frozen=True)
class Gpu:
    """What the environment expects of the host's GPU driver."""

    cuda: str | None = None


@dataclass(frozen=True)
class RunDefaults:
    """Defaults for ``envbuild run``."""

    workdir: str = DEFAULT_WORKDIR
    shm_size: str = DEFAULT_SHM_SIZE


@dataclass(frozen=True)
class TestSpec:
    """One check run inside the built image by ``envbuild test``."""

    run: tuple[str, ...]
    expect: str | None = None
    name: str | None = None
    timeout: int = 300


@dataclass(frozen=True)
class Environment:
    """A validated, complete environment definition (``extends`` resolved)."""

    path: Path  # the environment's folder, absolute
    name: str
    version: int
    description: str = ""
    schema: int = SCHEMA_VERSION
    base: Base = field(default_factory=lambda: Base(image=DEFAULT_BASE))
    python: Python = field(default_factory=Python)
    system_packages: tuple[str, ...] = ()
    conda: Conda = field(default_factory=Conda)
    pip: Pip = field(default_factory=Pip)
    variables: tuple[tuple[str, str], ...] = ()  # sorted by name
    gpu: Gpu = field(default_factory=Gpu)
    run: RunDefaults = field(default_factory=RunDefaults)
    tests: tuple[TestSpec, ...] = ()
    parents: tuple[Path, ...] = ()  # the folders this one extends, nearest first
    # Every file loading read (absolute path, sha256 or None if absent): what the
    # memo checks before it answers a hash without loading (envbuild.reads).
    sources: tuple[tuple[str, str | None], ...] = field(default=(), compare=False, repr=False)

    @property
    def definition_file(self) -> Path:
        """The ``env.toml`` this environment was loaded from."""
        return self.path / DEFINITION_FILE


# --------------------------------------------------------------------------
# Validation: a small schema walked once, collecting every problem
# --------------------------------------------------------------------------

Check = Callable[[str], grammar.Verdict]


class _Ctx:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def add(self, key: str, message: str, hint: str | None = None) -> None:
        self.problems.append(Problem(self.file, key, message, hint))


def _close_matches(word: str, candidates: Any, n: int = 1) -> list[str]:
    import difflib  # only on the error path

    return difflib.get_close_matches(word, list(candidates), n=n)


def _type_name(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


class _Str:
    __slots__ = ("allow_tab", "check")

    def __init__(self, check: Check | None = None, *, allow_tab: bool = False) -> None:
        self.check = check
        self.allow_tab = allow_tab

    def __call__(self, ctx: _Ctx, key: str, value: object) -> object:
        if not isinstance(value, str):
            ctx.add(key, f"expected a string, got {_type_name(value)}", _quote_hint(key, value))
            return None
        verdict = (
            self.check(value)
            if self.check
            else grammar.control_chars(value, allow_tab=self.allow_tab)
        )
        if verdict:
            ctx.add(key, verdict[0], verdict[1])
            return None
        return value

    def json_schema(self) -> dict[str, Any]:
        """This check as JSON Schema: a string, with its grammar's pattern."""
        if self.check is None:
            return {"type": "string", "pattern": grammar.text_pattern(allow_tab=self.allow_tab)}
        return {"type": "string", "pattern": grammar.JSON_PATTERNS[self.check]}


class _Int:
    __slots__ = ("choices", "maximum", "minimum")

    def __init__(
        self, minimum: int = 0, choices: tuple[int, ...] = (), maximum: int = MAX_INT
    ) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.choices = choices

    def __call__(self, ctx: _Ctx, key: str, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int):
            ctx.add(key, f"expected an integer, got {_type_name(value)}")
            return None
        if value > self.maximum:
            ctx.add(key, f"expected an integer <= {self.maximum}, got a larger one")
            return None
        if self.choices and value not in self.choices:
            ctx.add(key, f"{value} is not supported", f"use one of: {self.choices}")
            return None
        if value < self.minimum:
            ctx.add(key, f"expected an integer >= {self.minimum}, got {value}")
            return None
        return value

    def json_schema(self) -> dict[str, Any]:
        """This check as JSON Schema."""
        if self.choices:
            return {"type": "integer", "enum": list(self.choices)}
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}


class _Choice:
    __slots__ = ("choices",)

    def __init__(self, choices: tuple[str, ...]) -> None:
        self.choices = choices

    def __call__(self, ctx: _Ctx, key: str, value: object) -> object:
        if not isinstance(value, str):
            ctx.add(key, f"expected a string, got {_type_name(value)}")
            return None
        if value not in self.choices:
            close = _close_matches(value, self.choices, n=1)
            hint = f"did you mean {close[0]!r}?" if close else None
            ctx.add(
                key, f"expected one of {', '.join(map(repr, self.choices))}, got {value!r}", hint
            )
            return None
        return value

    def json_schema(self) -> dict[str, Any]:
        """This check as JSON Schema."""
        return {"type": "string", "enum": list(self.choices)}


class _List:
    __slots__ = ("item", "non_empty")

    def __init__(self, item: _Str, *, non_empty: bool = False) -> None:
        self.item = item
        self.non_empty = non_empty

    def __call__(self, ctx: _Ctx, key: str, value: object) -> object:
        if not isinstance(value, list):
            ctx.add(
                key,
                f"expected an array of strings, got {_type_name(value)}",
                f'write it like {key.rsplit(".", 1)[-1]} = ["..."]',
            )
            return None
        if self.non_empty and not value:
            ctx.add(key, "must not be empty")
            return None
        out = []
        ok = True
        for i, item in enumerate(value):
            checked = self.item(ctx, f"{key}[{i}]", item)
            ok = ok and checked is not None
            out.append(checked)
        return tuple(out) if ok else None

    def json_schema(self) -> dict[str, Any]:
        """This check as JSON Schema."""
        schema: dict[str, Any] = {"type": "array", "items": self.item.json_schema()}
        if self.non_empty:
            schema["minItems"] = 1
        return schema


class _Table:
    __slots__ = ("exclusive", "fields", "required")

    def __init__(
        self,
        fields: Mapping[str, Any],
        required: tuple[str, ...] = (),
        exclusive: tuple[str, ...] = (),
    ) -> None:
        self.fields = fields
        self.required = required
        self.exclusive = exclusive  # keys of which at most one may be set

    def __call__(self, ctx: _Ctx, key: str, value: object) -> object:
        if not isinstance(value, dict):
            ctx.add(key, f"expected a table, got {_type_name(value)}")
            return None
        out: dict[str, object] = {}
        for name, item in value.items():
            sub = f"{key}.{name}" if key else name
            if name not in self.fields:
                close = _close_matches(name, list(self.fields), n=1)
                known = ", ".join(sorted(self.fields))
                hint = f"did you mean {close[0]!r}?" if close else f"known keys here: {known}"
                ctx.add(sub, "unknown key", hint)
                continue
            checked = self.fields[name](ctx, sub, item)
            if checked is not None:
                out[name] = checked
        for name in self.required:
            if name not in value:
                ctx.add(f"{key}.{name}" if key else name, "is required")
        if self.exclusive and all(name in value for name in self.exclusive):
            ctx.add(key, f"sets both {' and '.join(self.exclusive)}", "keep one of them")
        return out

    def json_schema(self) -> dict[str, Any]:
        """This check as JSON Schema: every key's own, no other key."""
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {name: check.json_schema() for name, check in self.fields.items()},
            "additionalProperties": False,
        }
        if self.required:
            schema["required"] = list(self.required)
        if self.exclusive:
            schema["not"] = {"required": list(self.exclusive)}
        return schema


class _Variables:
    value = _Str(allow_tab=True)

    def __call__(self, ctx: _Ctx, key: str, value: object) -> object:
        if not isinstance(value, dict):
            ctx.add(key, f'expected a table of NAME = "value", got {_type_name(value)}')
            return None
        out: dict[str, str] = {}
        for name, item in value.items():
            sub = f"{key}.{name}"
            verdict = grammar.check_variable_name(name)
            if verdict:
                ctx.add(sub, verdict[0], verdict[1])
                continue
            checked = self.value(ctx, sub, item)
            if isinstance(checked, str):
                out[name] = checked
        return out

    def json_schema(self) -> dict[str, Any]:
        """This check as JSON Schema."""
        return {
            "type": "object",
            "propertyNames": dict(grammar.VARIABLE_NAME_SCHEMA),
            "additionalProperties": self.value.json_schema(),
        }


class _Tests:
    table = _Table(
        {
            "run": _List(_Str(), non_empty=True),
            "expect": _Str(allow_tab=True),
            "name": _Str(),
            "timeout": _Int(minimum=1, maximum=MAX_TEST_TIMEOUT),
        },
        required=("run",),
    )

    def __call__(self, ctx: _Ctx, key: str, value: object) -> object:
        if not isinstance(value, list):
            ctx.add(key, f"expected an array of tables ([[tests]]), got {_type_name(value)}")
            return None
        out = []
        for i, item in enumerate(value):
            checked = self.table(ctx, f"{key}[{i}]", item)
            if isinstance(checked, dict) and "run" in checked:
                out.append(checked)
        return tuple(out)

    def json_schema(self) -> dict[str, Any]:
        """This check as JSON Schema."""
        return {"type": "array", "items": self.table.json_schema()}


def _quote_hint(key: str, value: object) -> str | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'quote it: {key.rsplit(".", 1)[-1]} = "{value}"'
    return None


SCHEMA = _Table(
    {
        "schema": _Int(choices=(SCHEMA_VERSION,)),
        "name": _Str(grammar.check_name),
        "version": _Int(minimum=0),
        "description": _Str(allow_tab=True),
        "extends": _Str(grammar.check_extends),
        "base": _Table(
            {"image": _Str(grammar.check_image_ref), "dockerfile": _Str(grammar.check_rel_path)},
            exclusive=("image", "dockerfile"),
        ),
        "python": _Table(
            {"version": _Str(grammar.check_python_version), "source": _Choice(PYTHON_SOURCES)}
        ),
        "system": _Table({"packages": _List(_Str(grammar.check_apt_package))}),
        "conda": _Table(
            {
                "channels": _List(_Str(grammar.check_conda_channel)),
                "packages": _List(_Str(grammar.check_conda_package)),
            }
        ),
        "pip": _Table(
            {
                "packages": _List(_Str(grammar.check_pip_requirement)),
                "index_url": _Str(grammar.check_index_url),
                "extra_index_urls": _List(_Str(grammar.check_index_url)),
            }
        ),
        "variables": _Variables(),
        "gpu": _Table({"cuda": _Str(grammar.check_cuda_version)}),
        "run": _Table(
            {"workdir": _Str(grammar.check_abs_path), "shm_size": _Str(grammar.check_shm_size)}
        ),
        "tests": _Tests(),
    },
    required=("schema", "name"),
)


JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# What each key means, shown by editors beside the schema's checks (hover,
# completion). Keyed by the key's path in :data:`SCHEMA`; a test holds that
# every key has one and no other is described.
DESCRIPTIONS: Mapping[str, str] = {
    "schema": f"The env.toml format version: {SCHEMA_VERSION}.",
    "name": "The environment's name: lowercase letters, digits, '.', '_', '-' (the image name).",
    "version": "The environment's version, raised on every change (curated: `envbuild check`).",
    "description": "One line saying what the environment is for (an image label).",
    "extends": "A parent environment's folder, relative to this one: its keys are merged first.",
    "base": "The image to build on: an image reference, or a Dockerfile in this folder.",
    "base.image": f"The base image reference (default {DEFAULT_BASE!r}).",
    "base.dockerfile": "A Dockerfile in this folder whose stage is the base.",
    "python": "Where the environment's Python comes from.",
    "python.version": "The Python minor version, e.g. '3.11' (required for uv and conda).",
    "python.source": "'system': the base's python3 in a venv (default); 'uv'; 'conda'.",
    "system": "Distribution (apt) packages.",
    "system.packages": "apt package names, optionally pinned with '=version'.",
    "conda": "conda channels and packages (python.source = 'conda').",
    "conda.channels": "conda channels by name or URL, in priority order.",
    "conda.packages": "conda match specs, e.g. 'mkl=2020.2'.",
    "pip": "pip requirements and package indexes (credentials never go here).",
    "pip.packages": "PEP 508 requirements, e.g. 'torch==1.6.0'; `envbuild lock` pins them.",
    "pip.index_url": "The package index to use instead of PyPI (http(s), no credentials).",
    "pip.extra_index_urls": "More package indexes (http(s), no credentials).",
    "variables": 'Environment variables of the image: NAME = "value", strings only.',
    "gpu": "What the environment needs of the host's GPU.",
    "gpu.cuda": "The CUDA version the environment is built for; `run --gpus` checks the driver.",
    "run": "Defaults for `envbuild run`.",
    "run.workdir": f"The working directory in the container (default {DEFAULT_WORKDIR!r}).",
    "run.shm_size": f"The size of /dev/shm, e.g. '8g' (default {DEFAULT_SHM_SIZE!r}).",
    "tests": "Checks `envbuild test` runs in the built image ([[tests]]).",
    "tests.run": "The command to run, as an argument list.",
    "tests.expect": "A line the output must have (or a regex one line fully matches).",
    "tests.name": "The check's name in reports.",
    "tests.timeout": "Seconds the check may take (default 300).",
}


def _describe(schema: dict[str, Any], path: str = "") -> dict[str, Any]:
    """``schema`` with each key's description from :data:`DESCRIPTIONS`."""
    for name, sub in schema.get("properties", {}).items():
        key = f"{path}.{name}" if path else name
        target = (
            sub["items"]
            if sub.get("type") == "array" and "properties" in sub.get("items", {})
            else sub
        )
        _describe(target, key)
        sub["description"] = DESCRIPTIONS[key]
    return schema


def json_schema() -> dict[str, Any]:
    """:data:`SCHEMA` as a JSON Schema (draft 2020-12), for editors and other tools.

    Generated from the same checks validation runs, so the two cannot drift.
    It checks keys, types and each value's grammar; rules that need more than
    one file or the file system (``extends`` chains, a base Dockerfile's
    content, the rules between keys) stay with ``envbuild validate``.
    """
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "envbuild environment definition (env.toml)",
        "description": (
            f"schema = {SCHEMA_VERSION} of env.toml. Generated by `envbuild schema` from "
            "envbuild's own validation; `envbuild validate` checks the rest."
        ),
        **_describe(SCHEMA.json_schema()),
    }


def json_schema_text() -> str:
    """:func:`json_schema` as the text of ``docs/env.schema.json`` (stable, one newline)."""
    import json

    return json.dumps(json_schema(), indent=2, ensure_ascii=True) + "\n"


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def definition_path(env: str | Path) -> Path:
    """The ``env.toml`` named by ``env`` (a folder or the file itself)."""
    path = Path(env).expanduser()
    if path.is_dir() or path.name != DEFINITION_FILE:
        path = path / DEFINITION_FILE
    return path.absolute()


def parse_file(path: Path) -> dict[str, Any]:
    """Read and parse one ``env.toml``; syntax errors name line and column.

    The file is read through :func:`envbuild.files.read_text`: a regular file
    inside its folder (symlinks resolved), of bounded size, UTF-8.
    """
    shown = _display(path)
    try:
        text = files.read_text(path, inside=path.parent)
    except files.FileMissing:
        hint = None
        if path.parent.is_dir():
            hint = f"the folder {_display(path.parent)} has no {DEFINITION_FILE}"
        else:
            hint = "name an environment folder that holds an env.toml, e.g. envs/hello"
        raise DefinitionError(
            [Problem(shown, "", "no such environment definition", hint)]
        ) from None
    except files.UnsafeRead as exc:
        raise DefinitionError([Problem(shown, "", exc.reason, exc.hint)]) from None
    try:
        data: dict[str, Any] = tomllib.loads(text)
        return data
    except RecursionError:
        raise DefinitionError(
            [Problem(shown, "", "TOML syntax error: nested too deeply", "flatten the arrays")]
        ) from None
    except tomllib.TOMLDecodeError as exc:
        # Python < 3.14 has the position only in the message: "... (at line 3, column 5)".
        where = re.search(r"\s*\(at line (\d+), column (\d+)\)$", str(exc))
        line = int(where.group(1)) if where else None
        col = int(where.group(2)) if where else None
        msg = str(exc)[: where.start()] if where else str(exc)
        raise DefinitionError(
            [
                Problem(
                    shown,
                    "",
                    f"TOML syntax error: {msg}",
                    "check the TOML syntax at that position",
                    line=line,
                    column=col,
                )
            ]
        ) from None
    except ValueError as exc:  # not a TOMLDecodeError: an integer of > 4300 digits
        raise DefinitionError(
            [Problem(shown, "", f"TOML value out of range: {str(exc)[:80]}")]
        ) from None


def _validate_file(path: Path) -> tuple[dict[str, Any], list[Problem]]:
    raw = parse_file(path)
    ctx = _Ctx(_display(path))
    partial = SCHEMA(ctx, "", raw)
    assert isinstance(partial, dict)
    base = partial.get("base", {})
    if "dockerfile" in base:
        base["dockerfile"] = _read_base_dockerfile(ctx, path.parent, base["dockerfile"])
        if base["dockerfile"] is None:
            del base["dockerfile"]
    return partial, ctx.problems


def _read_base_dockerfile(ctx: _Ctx, folder: Path, rel: str) -> BaseDockerfile | None:
    """Read and check ``[base] dockerfile`` (inside ``folder``, a regular file, bounded)."""
    try:
        text = files.read_text(folder / rel, inside=folder)
    except files.FileMissing:
        ctx.add("base.dockerfile", f"{rel!r} does not exist in {_display(folder)}")
        return None
    except files.UnsafeRead as exc:
        ctx.add("base.dockerfile", f"{rel!r} {exc.reason}", exc.hint)
        return None
    if _check_base_dockerfile(ctx, text):
        return BaseDockerfile((folder / rel).resolve(), text)
    return None


def _check_base_dockerfile(ctx: _Ctx, text: str) -> bool:
    """Whether ``text`` can be the base stage; each problem is added to ``ctx``."""
    before = len(ctx.problems)
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]
    if not lines or not lines[0].upper().startswith(("FROM ", "ARG ")):
        ctx.add("base.dockerfile", "must start with FROM", "a base Dockerfile is a complete stage")
    elif lines[-1].endswith("\\"):
        ctx.add(
            "base.dockerfile",
            "ends with a line continuation",
            "remove the trailing backslash: envbuild's instructions follow this file",
        )
    if "\r" in text:
        ctx.add("base.dockerfile", "contains carriage returns", "save it with Unix line endings")
    return len(ctx.problems) == before


_LIST_MERGE = {
    ("system", "packages"),
    ("conda", "channels"),
    ("conda", "packages"),
    ("pip", "packages"),
    ("pip", "extra_index_urls"),
}
_OWN_KEYS = ("schema", "name", "version", "description", "extends")


def _merge(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """Merge two partials: the child wins; package lists and variables merge."""
    out: dict[str, Any] = {k: v for k, v in parent.items() if k not in _OWN_KEYS}
    for key, value in child.items():
        if key == "tests":
            out["tests"] = tuple(parent.get("tests", ())) + tuple(value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            merged = dict(out[key])
            for sub, item in value.items():
                if (key, sub) in _LIST_MERGE:
                    merged[sub] = tuple(merged.get(sub, ())) + tuple(item)
                elif key == "base":
                    merged = {sub: item}  # image and dockerfile exclude each other
                else:
                    merged[sub] = item
            out[key] = merged
        else:
            out[key] = value
    return out


def _between_keys(file: str, merged: Mapping[str, Any], found: list[Problem]) -> list[Problem]:
    """The rules that tie keys together, checked on the merged chain (``extends`` included).

    A rule is skipped when a key it reads already has a problem: the value it
    would see is not the one the person wrote.
    """
    ctx = _Ctx(file)

    def clean(*sections: str) -> bool:
        return not any(
            p.key == s or p.key.startswith((f"{s}.", f"{s}[")) for p in found for s in sections
        )

    python = merged.get("python", {})
    source = python.get("source", "system")
    if clean("python") and source in ("uv", "conda") and not python.get("version"):
        ctx.add(
            "python.version",
            f"is required with python.source = {source!r}",
            'name the Python version, e.g. version = "3.11"',
        )
    if clean("python", "conda") and merged.get("conda", {}).get("packages") and source != "conda":
        ctx.add(
            "conda.packages",
            f"need python.source = 'conda' (it is {source!r})",
            'set [python] source = "conda", or install these packages with [pip]',
        )
    return ctx.problems


def _dedupe(items: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def load(env: str | Path) -> Environment:
    """Load, validate and complete the environment at ``env`` (folder or env.toml).

    Raises :class:`DefinitionError` listing every problem found, across the
    whole ``extends`` chain. The result's ``sources`` name every file read.
    """
    with reads.recording() as seen:
        environment = _load(env)
    return replace(environment, sources=tuple(sorted(seen.files.items())))


def _load(env: str | Path) -> Environment:
    path = definition_path(env)
    chain: list[tuple[Path, dict[str, Any]]] = []
    problems: list[Problem] = []
    seen: list[Path] = []
    current: Path | None = path
    while current is not None:
        try:
            resolved = files.resolve_inside(current, None)
        except files.FileMissing:
            resolved = current  # parse_file says it is missing, with a hint
        except files.UnsafeRead as exc:
            where = _display(chain[-1][0]) if chain else _display(current)
            problems.append(
                Problem(where, "extends" if chain else "", f"{_display(current)} {exc.reason}")
            )
            break
        if resolved in seen:
            cycle = " -> ".join(_display(p.parent) for p in [*seen, resolved])
            problems.append(
                Problem(
                    _display(chain[-1][0]),
                    "extends",
                    f"forms a cycle: {cycle}",
                    "an environment cannot extend itself, directly or not",
                )
            )
            break
        seen.append(resolved)
        try:
            partial, found = _validate_file(current)
        except DefinitionError as exc:
            if chain:
                raise DefinitionError(
                    [
                        Problem(
                            _display(chain[-1][0]),
                            "extends",
                            f"the parent {_display(current.parent)} cannot be loaded",
                        ),
                        *exc.problems,
                    ]
                ) from None
            raise
        problems.extend(found)
        chain.append((current, partial))
        parent = partial.get("extends")
        current = definition_path(current.parent.resolve() / parent) if parent else None

    merged: dict[str, Any] = {}
    for _, partial in reversed(chain):
        merged = _merge(merged, partial) if merged else dict(partial)
    problems.extend(_between_keys(_display(path), merged, problems))
    if problems:
        raise DefinitionError(problems)
    own = chain[0][1]
    return _complete(path.parent, own, merged, tuple(p.parent.resolve() for p, _ in chain[1:]))


def _complete_base(base: dict[str, Any]) -> Base:
    if not base:
        return Base(image=DEFAULT_BASE)
    dockerfile = base.get("dockerfile")
    if isinstance(dockerfile, BaseDockerfile):
        return Base(dockerfile=dockerfile.path, dockerfile_text=dockerfile.text)
    return Base(image=base.get("image"))


def _complete(
    folder: Path, own: dict[str, Any], merged: dict[str, Any], parents: tuple[Path, ...]
) -> Environment:
    base = merged.get("base", {})
    python = merged.get("python", {})
    pip = merged.get("pip", {})
    conda = merged.get("conda", {})
    run = merged.get("run", {})
    variables = merged.get("variables", {})
    tests = tuple(
        TestSpec(
            run=t["run"], expect=t.get("expect"), name=t.get("name"), timeout=t.get("timeout", 300)
        )
        for t in merged.get("tests", ())
    )
    return Environment(
        path=folder,
        name=own["name"],
        version=own.get("version", 1),
        description=own.get("description", ""),
        schema=own["schema"],
        base=_complete_base(base),
        python=Python(version=python.get("version"), source=python.get("source", "system")),
        system_packages=_dedupe(merged.get("system", {}).get("packages", ())),
        conda=Conda(
            channels=_dedupe(conda.get("channels", ())), packages=_dedupe(conda.get("packages", ()))
        ),
        pip=Pip(
            packages=_dedupe(pip.get("packages", ())),
            index_url=pip.get("index_url"),
            extra_index_urls=_dedupe(pip.get("extra_index_urls", ())),
        ),
        variables=tuple(sorted(variables.items())),
        gpu=Gpu(cuda=merged.get("gpu", {}).get("cuda")),
        run=RunDefaults(
            workdir=run.get("workdir", DEFAULT_WORKDIR),
            shm_size=run.get("shm_size", DEFAULT_SHM_SIZE),
        ),
        tests=tests,
        parents=parents,
    )


# --------------------------------------------------------------------------
# Raising the version (`envbuild lock --bump`, `envbuild ci --relock`)
# --------------------------------------------------------------------------

_VERSION_LINE = re.compile(r"^(\s*version\s*=\s*)(\d+)(.*)$")
_NAME_LINE = re.compile(r"^\s*name\s*=")


def bump_version(env: Environment) -> int:
    """Raise ``version`` in ``env``'s own ``env.toml`` by one, in place; the new version.

    Only the top-level ``version = N`` line changes (comments and layout stay);
    a definition without one (version 1) gets ``version = 2`` after its
    ``name``. The file is written whole (a temporary file, then renamed) and
    loaded again: what was written must be a valid definition of that version.
    """
    path = env.definition_file
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    new = env.version + 1
    top = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[")), len(lines))
    for i in range(top):
        match = _VERSION_LINE.match(lines[i].rstrip("\n"))
        if match:
            ending = lines[i][len(lines[i].rstrip("\n")) :]
            lines[i] = f"{match.group(1)}{new}{match.group(3)}{ending}"
            break
    else:
        at = next((i + 1 for i in range(top) if _NAME_LINE.match(lines[i])), 0)
        lines.insert(at, f"version = {new}\n")
    partial = path.with_name(f".{path.name}.bump.tmp")
    partial.write_text("".join(lines), encoding="utf-8")
    partial.replace(path)
    if load(env.path).version != new:  # pragma: no cover - the edit above is the rule
        raise DefinitionError(
            [Problem(str(path), "version", f"could not raise the version to {new}")]
        )
    return new
