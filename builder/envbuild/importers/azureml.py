"""Azure ML environments turned into ``env.toml`` (``envbuild import azureml``).

Azure ML SDK v1 reached its end of support on 2026-06-30 and the Dockerfiles
of its curated images were never public. This module reads what its users
have and writes an envbuild definition, saying what it could not carry over:

===========================  ==============================================
source                       entry point
===========================  ==============================================
SDK v1 environment folder    :func:`from_v1_directory` (``Environment.save_to_directory()``,
                             ``az ml environment download``: ``azureml_environment.json``,
                             ``conda_dependencies.yml``, ``BaseDockerfile``)
its JSON as a mapping        :func:`from_v1_definition` (for code holding an SDK-shaped object)
SDK/CLI v2 environment YAML  :func:`from_v2_yaml`
a curated environment name   :func:`from_curated_name` (``AzureML-PyTorch-1.6-GPU``, ...;
                             the table is :data:`envbuild.azureml.curated.CURATED_NAMES`)
a conda file                 :func:`from_conda_file` / :func:`from_conda_spec`
a v1 run configuration       :func:`from_runconfig` (``.azureml/NAME.runconfig``: its environment,
                             and its run as :class:`RunCommand`, ``run.sh``)
any of the above by path     :func:`import_source` (what the command line calls)
===========================  ==============================================

Each returns an :class:`ImportResult`: the ``env.toml`` text, the extra files
(a base Dockerfile), the warnings (every field not carried over, with its
path in the source, e.g. ``docker.baseImageRegistry.password``) and notes (how
a field was mapped). Nothing is written until :meth:`ImportResult.write`,
which writes atomically and validates with :func:`envbuild.definition.model.load`.

The mapping, in short (docs/import-azureml.md has the whole table):

* Azure's base images (``mcr.microsoft.com/azureml/openmpi*-ubuntuXX.04``)
  become the matching Ubuntu base that ``envbuild base bootstrap`` builds
  (18.04 and older: 20.04, the oldest one it has), plus Open MPI and ssh from
  apt for ``openmpi`` images, and ``[gpu] cuda`` for ``cuda`` images;
* a conda file holding only ``python=X`` and a ``pip:`` list becomes
  ``[python] version = "X"`` and ``[pip]`` (the base's own Python when it is
  X, else ``source = "uv"``), unless ``keep_conda``; with other conda packages
  it becomes ``[conda]`` with ``source = "conda"``;
* the Azure ML SDK's own pip packages (``azureml-*``) are left out with a
  warning unless ``keep_azureml_packages``: they talk to a workspace;
* credentials (a registry's username and password, an index URL's user
  info) are never written anywhere, not even into a warning.

Bad input (malformed JSON or YAML, a value of the wrong type) raises a
:class:`~envbuild.errors.DefinitionError` naming the file, the field (and the
line, for syntax errors) and what was expected, every problem at once.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from envbuild import files
from envbuild.azureml.environment import AZURE_IMAGE_PREFIX, DEFAULT_CPU_IMAGE
from envbuild.definition import grammar, writer
from envbuild.definition.model import DEFAULT_SHM_SIZE, DEFINITION_FILE, SCHEMA_VERSION
from envbuild.errors import DefinitionError, EnvbuildError, Problem, UsageError

__all__ = [
    "AZURE_DEFAULT_CPU_IMAGE",
    "BASE_DOCKERFILE",
    "MPI_PACKAGES",
    "MPI_VARIABLES",
    "V1_CONDA_FILE",
    "V1_DEFINITION_FILE",
    "Finding",
    "ImportResult",
    "InEnvFolder",
    "RunCommand",
    "from_conda_file",
    "from_conda_spec",
    "from_curated_name",
    "from_runconfig",
    "from_v1_definition",
    "from_v1_directory",
    "from_v2_yaml",
    "import_source",
    "is_azureml_package",
    "resolve_curated",
]

#: The files ``Environment.save_to_directory()`` writes (azureml-core's own names).
V1_DEFINITION_FILE = "azureml_environment.json"
V1_CONDA_FILE = "conda_dependencies.yml"
V1_BASE_DOCKERFILES = ("BaseDockerfile", "Dockerfile")
#: The base Dockerfile an import writes beside env.toml (``[base] dockerfile``).
BASE_DOCKERFILE = "base.Dockerfile"
#: The script a run configuration's import writes beside env.toml: its ``envbuild run``.
RUN_SCRIPT = "run.sh"
#: Azure ML SDK v1's default base image (``azureml.core.environment.DEFAULT_CPU_IMAGE``),
#: as ``envbuild.azureml`` names it.
AZURE_DEFAULT_CPU_IMAGE = DEFAULT_CPU_IMAGE
#: What Azure's ``openmpi`` images carried for MPI jobs, from the Ubuntu archive: mpirun
#: and its libraries, and the ssh that ``envbuild run --distribution mpi`` uses between
#: nodes (as ``curated/mpi-4.1-cpu``, less its Debian mpi4py; a unit test holds the two
#: together).
MPI_PACKAGES = ("openmpi-bin", "openssh-client", "openssh-server")
#: The variables ``curated/mpi-4.1-cpu`` sets for Open MPI in a container (several
#: ranks on one node copy through shared memory: cross-memory attach needs a capability
#: a container lacks).
MPI_VARIABLES: Mapping[str, str] = MappingProxyType(
    {"OMPI_MCA_btl_vader_single_copy_mechanism": "none"}
)
#: Python a conda environment gets when its file names none (Azure ML's default).
DEFAULT_CONDA_PYTHON = "3.8"

_AZURE_REGISTRY = AZURE_IMAGE_PREFIX  # every image under it is one of Azure's
_UBUNTU_BASES = {"20.04": "ubuntu:20.04", "22.04": "ubuntu:22.04", "24.04": "ubuntu:24.04"}
_OLDEST_UBUNTU = "20.04"
_SYSTEM_PYTHON = {  # the base images whose python3 is known (lock.model.DISTRO_PYTHON)
    "ubuntu:20.04": ("ubuntu", "20.04"),
    "ubuntu:22.04": ("ubuntu", "22.04"),
    "ubuntu:24.04": ("ubuntu", "24.04"),
    "debian:bookworm-slim": ("debian", "12"),
}
_AZUREML_PACKAGE = re.compile(r"azureml(?:[-_.][A-Za-z0-9._-]*)?(?=$|[^A-Za-z0-9._-])", re.I)


def is_azureml_package(requirement: str) -> bool:
    """Whether the pip requirement ``requirement`` is one of the Azure ML SDK's packages
    (``azureml-defaults``, ``azureml-core[...]==1.x``, ...), which talk to a workspace."""
    return bool(_AZUREML_PACKAGE.match(requirement.strip()))


# python, python=3.8.5, python==3.8, "python 3.8", python=3.8.*=h1234, python>=3.7 (a
# range: group 4); never python-dateutil, which is another package.
_PYTHON_SPEC = re.compile(
    r"(?:[A-Za-z0-9_.-]+::)?python"
    r"(?:\s*(==?|\s)\s*(3)\.(\d{1,2})(?:\.[0-9*]+)*(?:=\S+)?|\s*([=<>!~].*))?",
    re.I,
)
_PIP_SPEC = re.compile(r"(?:[A-Za-z0-9_.-]+::)?pip(?:\s*[=<>!~].*)?", re.I)
_NAME_BAD = re.compile(r"[^a-z0-9._-]+")


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """Something an import says about one field of its source: where, and what."""

    file: str
    field: str  # the field's path in the source, e.g. "docker.baseImageRegistry.password"
    message: str

    def render(self) -> str:
        """``file: field: message``, as the command line prints it."""
        where = f"{self.file}: {self.field}" if self.field else self.file
        return f"{where}: {self.message}"

    def to_json(self) -> dict[str, str]:
        """This finding as a JSON object."""
        return {"file": self.file, "field": self.field, "message": self.message}


@dataclass(frozen=True)
class InEnvFolder:
    """A path inside the environment folder an import is written to (``data/mnist``)."""

    relative: str


Part = str | InEnvFolder


@dataclass(frozen=True)
class RunCommand:
    """The ``envbuild run`` a v1 run configuration describes.

    Paths are kept absolute (the source directory) or relative to the
    environment folder (:class:`InEnvFolder`: the placeholders for data that
    lived in the workspace), and rendered relative to where the command runs.
    """

    source_dir: Path  # absolute
    script: str
    arguments: tuple[str, ...] = ()
    options: tuple[tuple[str, tuple[Part, ...]], ...] = ()  # (option, value parts; () a flag)

    def argv(self, folder: Path, base: Path) -> list[str]:
        """The command line for the environment in ``folder``, run from ``base``."""

        def render(parts: tuple[Part, ...]) -> str:
            return "".join(
                p if isinstance(p, str) else _relative(Path(folder) / p.relative, base)
                for p in parts
            )

        argv = ["envbuild", "run", "--source-dir", _relative(self.source_dir, base)]
        for flag, parts in self.options:
            argv += [flag, render(parts)] if parts else [flag]  # no parts: a flag
        return [*argv, _relative(folder, base), self.script, *self.arguments]

    def script_text(self, folder: Path, origin: str) -> str:
        """``run.sh``: change to the source directory, then exec the run (extra ARGS appended)."""
        words = self.argv(folder, self.source_dir)
        return "\n".join(
            [
                "#!/bin/sh",
                writer.comment(
                    f"Generated by `envbuild import azureml` from {origin}: "
                    "the run it configured.\n"
                    "Data that lived in the workspace has a placeholder under data/ beside this "
                    "script:\nput the data there (see the import's warnings). Extra arguments "
                    "are passed on."
                ),
                "set -eu",
                'cd "$(dirname "$0")"',
                f"cd {shlex.quote(_relative(self.source_dir, folder))}",
                "exec " + shlex.join(words) + ' "$@"',
                "",
            ]
        )


@dataclass(frozen=True)
class ImportResult:
    """An imported environment: its definition, its files, and what was not carried over.

    ``document`` is the ``env.toml`` content as plain data (``extends`` apart:
    it is a path, made relative to the folder the definition is written to).
    ``files`` are the other files of the environment folder (name -> text).
    ``warnings`` list every field that was not carried over or changed
    meaning; ``notes`` say how fields were mapped.
    """

    kind: (
        str  # "v1-directory" | "v1-definition" | "v2-yaml" | "curated" | "conda-file" | "runconfig"
    )
    source: str
    document: Mapping[str, Any]
    folder: Path
    extends: Path | None = None
    files: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[Finding, ...] = ()
    notes: tuple[Finding, ...] = ()
    run: RunCommand | None = None  # a run configuration's run (then files_for has run.sh)

    @property
    def name(self) -> str:
        """The environment's name."""
        return str(self.document["name"])

    @property
    def env_toml(self) -> str:
        """The ``env.toml`` text, for :attr:`folder`."""
        return self.env_toml_for(self.folder)

    def env_toml_for(self, folder: Path) -> str:
        """The ``env.toml`` text for a definition written to ``folder``."""
        document: dict[str, Any] = {}
        for key, value in self.document.items():
            document[key] = value
            if key == "description" and self.extends is not None:
                document["extends"] = _relative(self.extends, folder)
        if self.extends is not None and "extends" not in document:
            document["extends"] = _relative(self.extends, folder)
        header = (
            f"Imported from Azure ML by `envbuild import azureml` ({self.kind}: {self.source}).\n"
            "Review it, then `envbuild lock` this folder."
        )
        return writer.dumps(document, header=header)

    def files_for(self, folder: Path) -> dict[str, str]:
        """The files beside ``env.toml`` for the folder ``folder`` (``run.sh`` included)."""
        out = dict(self.files)
        if self.run is not None:
            out[RUN_SCRIPT] = self.run.script_text(folder, self.source)
        return out

    def command(self, base: Path | None = None) -> list[str] | None:
        """A run configuration's ``envbuild run`` command line, run from ``base`` (the cwd)."""
        if self.run is None:
            return None
        return self.run.argv(self.folder, base if base is not None else Path.cwd())

    def to_json(self, folder: Path | None = None) -> dict[str, Any]:
        """What ``--json`` prints: kind, source, folder, files, warnings, notes, command."""
        where = folder if folder is not None else self.folder
        result = self if folder is None else replace(self, folder=folder)
        command = result.command()
        return {
            "kind": self.kind,
            "source": self.source,
            "name": self.name,
            "folder": str(where),
            "files": sorted([DEFINITION_FILE, *result.files_for(where)]),
            "warnings": [w.to_json() for w in self.warnings],
            "notes": [n.to_json() for n in self.notes],
            "command": command,
            "command_line": shlex.join(command) if command is not None else None,
        }

    def write(self, folder: Path, *, force: bool = False) -> Path:
        """Write the environment folder ``folder`` atomically and validate it; return it.

        The files go to a new folder beside ``folder``, are validated there
        (:func:`envbuild.definition.model.load`) and only then renamed into
        place: a failure, Ctrl-C included, leaves nothing half-written.
        An existing ``folder`` must be empty; with ``force``, an environment
        folder (one holding an ``env.toml``) is replaced as a whole.
        """
        return _write_atomically(self, Path(folder), force=force)


# --------------------------------------------------------------------------
# The curated names
# --------------------------------------------------------------------------


def _curated_key(reference: str) -> str:
    """The bare name in an environment reference: ``azureml:NAME:1``, ``NAME@latest``, ..."""
    text = reference.strip()
    registry = re.fullmatch(
        r"azureml://registries/[^/]+/environments/([^/]+)(?:/(?:versions|labels)/[^/]+)?",
        text,
        re.I,
    )
    if registry:
        text = registry.group(1)
    text = re.sub(r"^azureml:", "", text, flags=re.I)
    text = re.split(r"[@:]", text, maxsplit=1)[0]
    return text.lower()


def resolve_curated(reference: str) -> tuple[str, str]:
    """``(Azure's name, curated folder)`` for an Azure ML curated name or a reference to one.

    Accepts ``AzureML-PyTorch-1.6-GPU``, ``azureml:AzureML-sklearn-1.5:1``,
    ``AzureML-sklearn-1.5@latest`` and registry URIs
    (``azureml://registries/azureml/environments/sklearn-1.5/labels/latest``),
    in any case. The table is :data:`envbuild.azureml.curated.CURATED_NAMES`;
    an unknown name is a :class:`UsageError` listing the known ones.
    """
    from envbuild.azureml.curated import CURATED_NAMES

    key = _curated_key(reference)
    for azure, folder in CURATED_NAMES.items():
        if azure.casefold() in (key, f"azureml-{key}"):
            return azure, folder
    known = {azure.casefold(): azure for azure in CURATED_NAMES}
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    hint = f"did you mean {known[close[0]]}? " if close else ""
    raise UsageError(
        f"{reference!r} is not an Azure ML curated environment envbuild knows",
        hint=hint + "known: " + ", ".join(sorted(CURATED_NAMES)),
    )


# --------------------------------------------------------------------------
# Reading the sources
# --------------------------------------------------------------------------


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _read(path: Path, shown: str) -> str:
    try:
        return files.read_text(path, inside=None)
    except files.FileMissing:
        raise DefinitionError([Problem(shown, "", "no such file")]) from None
    except files.UnsafeRead as exc:
        raise DefinitionError([Problem(shown, "", exc.reason, exc.hint)]) from None


def _parse_json(text: str, shown: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DefinitionError(
            [
                Problem(
                    shown,
                    "",
                    f"JSON syntax error: {exc.msg}",
                    "check the JSON syntax at that position",
                    line=exc.lineno,
                    column=exc.colno,
                )
            ]
        ) from None
    except RecursionError:
        raise DefinitionError([Problem(shown, "", "JSON nested too deeply")]) from None


def _parse_yaml(text: str, shown: str) -> Any:
    import yaml  # only the importers read YAML

    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise DefinitionError(
            [
                Problem(
                    shown,
                    "",
                    f"YAML syntax error: {exc.problem or exc.context or 'malformed'}",
                    "check the YAML syntax at that position (indentation, quotes, colons)",
                    line=mark.line + 1 if mark is not None else None,
                    column=mark.column + 1 if mark is not None else None,
                )
            ]
        ) from None
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        raise DefinitionError([Problem(shown, "", f"YAML error: {str(exc)[:200]}")]) from None


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


def _empty(value: object) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _strip_credentials(url: str) -> str:
    """``url`` without its user info: what a warning may show of it."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an URL that cannot be parsed)"
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _has_credentials(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return bool(parts.username or parts.password)


def _relative(target: Path, folder: Path) -> str:
    return Path(os.path.relpath(target.resolve(), Path(folder).absolute().resolve())).as_posix()


# --------------------------------------------------------------------------
# The converter: one per import, collecting the document and what it says
# --------------------------------------------------------------------------


@dataclass
class _Conda:
    """What a conda specification holds, sorted into envbuild's sections."""

    python: str | None = None  # major.minor
    channels: list[str] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)  # neither python nor pip
    pip: list[str] = field(default_factory=list)
    index_url: str | None = None
    extra_index_urls: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    file: str = ""
    prefix: str = ""  # the specification's path in its file ("" for a conda file)


class _Converter:
    """Collects the sections of the document, the problems, warnings and notes of one import."""

    def __init__(self, *, keep_conda: bool, keep_azureml_packages: bool) -> None:
        self.keep_conda = keep_conda
        self.keep_azureml_packages = keep_azureml_packages
        self.problems: list[Problem] = []
        self.warnings: list[Finding] = []
        self.notes: list[Finding] = []
        self.top: dict[str, Any] = {"schema": SCHEMA_VERSION}
        self.base: dict[str, str] = {}
        self.python: dict[str, str] = {}
        self.system: list[str] = []
        self.conda: dict[str, list[str]] = {}
        self.pip: dict[str, Any] = {}
        self.variables: dict[str, str] = {}
        self.gpu: dict[str, str] = {}
        self.run: dict[str, str] = {}
        self.files: dict[str, str] = {}

    # -- reporting -----------------------------------------------------------

    def problem(self, file: str, path: str, message: str, hint: str | None = None) -> None:
        self.problems.append(Problem(file, path, message, hint))

    def warn(self, file: str, path: str, message: str) -> None:
        self.warnings.append(Finding(file, path, message))

    def note(self, file: str, path: str, message: str) -> None:
        self.notes.append(Finding(file, path, message))

    def check(self) -> None:
        if self.problems:
            raise DefinitionError(self.problems)

    # -- typed access ----------------------------------------------------------

    def mapping(self, file: str, path: str, value: object) -> Mapping[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.problem(file, path, f"expected a mapping, got {_type_name(value)}")
            return None
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            self.problem(file, path, f"has a key that is not a string: {bad[0]!r}")
            return None
        return value

    def text(self, file: str, path: str, value: object, *, numbers: bool = False) -> str | None:
        if value is None:
            return None
        if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            self.problem(file, path, f"expected a string, got {_type_name(value)}")
            return None
        return value

    def strings(self, file: str, path: str, value: object) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(file, path, f"expected a list of strings, got {_type_name(value)}")
            return []
        out = []
        for i, item in enumerate(value):
            checked = self.text(file, _join(path, i), item, numbers=True)
            if checked is not None:
                out.append(checked)
        return out

    def flag(self, file: str, path: str, value: object) -> bool | None:
        if value is None or isinstance(value, bool):
            return value
        self.problem(file, path, f"expected true or false, got {_type_name(value)}")
        return None

    def unknown(self, file: str, prefix: str, data: Mapping[str, Any], known: set[str]) -> None:
        for key, value in data.items():
            if key not in known and not _empty(value):
                self.warn(
                    file, _join(prefix, key), "unknown to envbuild's importer: not carried over"
                )

    # -- sections --------------------------------------------------------------

    def set_name(self, file: str, path: str, raw: str | None, fallback: str) -> None:
        wanted = raw if raw else fallback
        name = _NAME_BAD.sub("-", wanted.lower()).strip("-._")[:128] or "imported"
        if not re.match(r"[a-z0-9]", name):
            name = f"env-{name}"[:128]
        if raw and name != raw:
            self.note(file, path, f"{raw!r} becomes the envbuild name {name!r}")
        self.top["name"] = name

    def set_version(self, file: str, path: str, raw: object) -> None:
        if raw is None:
            self.top["version"] = 1
            return
        text = str(raw).strip() if isinstance(raw, (str, int)) and not isinstance(raw, bool) else ""
        if text.isdigit() and int(text) <= 2**63 - 1:
            self.top["version"] = int(text)
            return
        if not isinstance(raw, (str, int)) or isinstance(raw, bool):
            self.problem(file, path, f"expected a version, got {_type_name(raw)}")
            return
        self.top["version"] = 1
        self.warn(file, path, f"{text!r} is not an integer version: the definition starts at 1")

    def set_description(self, file: str, path: str, raw: str | None) -> None:
        if not raw:
            return
        text = raw.replace("\r\n", "\n").replace("\n", " ").strip()
        if grammar.control_chars(text, allow_tab=True):
            text = "".join(c if c == "\t" or c.isprintable() else " " for c in text)
            self.note(file, path, "control characters in the description became spaces")
        self.top["description"] = text

    def add_variable(self, file: str, path: str, name: object, value: object) -> None:
        if not isinstance(name, str):
            self.problem(file, path, f"a variable name must be a string, got {_type_name(name)}")
            return
        bad = grammar.check_variable_name(name)
        if bad:
            self.warn(file, path, f"not carried over: {bad[0]}")
            return
        if value is None:
            self.warn(file, path, "has no value (null): not carried over")
            return
        if isinstance(value, (int, float, bool)):
            text = json.dumps(value)
            self.note(file, path, f"the {_type_name(value)[2:].strip()} {text} becomes the string")
        elif isinstance(value, str):
            text = value
        else:
            self.problem(file, path, f"expected a string value, got {_type_name(value)}")
            return
        bad = grammar.control_chars(text, allow_tab=True)
        if bad:
            self.warn(file, path, f"not carried over: the value {bad[0]}")
            return
        self.variables[name] = text

    def add_system(self, packages: Sequence[str]) -> None:
        for package in packages:
            if package not in self.system:
                self.system.append(package)

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = dict(self.top)
        doc["base"] = dict(self.base)
        doc["python"] = dict(self.python)
        doc["system"] = {"packages": list(self.system)} if self.system else {}
        doc["conda"] = {k: v for k, v in self.conda.items() if v}
        doc["pip"] = {k: v for k, v in self.pip.items() if v}
        doc["variables"] = dict(self.variables)
        doc["gpu"] = dict(self.gpu)
        doc["run"] = dict(self.run)
        return doc

    def result(
        self, kind: str, source: str, folder: Path, extends: Path | None = None
    ) -> ImportResult:
        self.check()
        return ImportResult(
            kind=kind,
            source=source,
            document=self.document(),
            folder=folder,
            extends=extends,
            files=dict(self.files),
            warnings=tuple(self.warnings),
            notes=tuple(self.notes),
        )


# --------------------------------------------------------------------------
# Conda specifications
# --------------------------------------------------------------------------


def _conda_spec(conv: _Converter, data: object, file: str, prefix: str = "") -> _Conda:
    """Sort a conda specification (``name``, ``channels``, ``dependencies``) into sections."""
    spec = _Conda(file=file, prefix=prefix)
    mapping = conv.mapping(file, prefix, data)
    if mapping is None:
        if data is None:
            conv.problem(file, prefix, "is empty", "a conda file lists `dependencies:`")
        return spec
    for key, value in mapping.items():
        path = _join(prefix, key)
        if key == "name":
            if not _empty(value):
                conv.note(file, path, "the conda environment's name is not needed in an image")
        elif key == "channels":
            for i, channel in enumerate(conv.strings(file, path, value)):
                _add_channel(conv, spec, file, _join(path, i), channel)
        elif key == "dependencies":
            _conda_dependencies(conv, spec, file, path, value)
        elif key == "variables":
            variables = conv.mapping(file, path, value)
            for name, item in (variables or {}).items():
                _set_conda_variable(conv, spec, file, _join(path, name), name, item)
        elif not _empty(value):
            conv.warn(file, path, "not carried over (envbuild reads name, channels, dependencies)")
    return spec


def _set_conda_variable(
    conv: _Converter, spec: _Conda, file: str, path: str, name: str, value: object
) -> None:
    before = dict(conv.variables)
    conv.add_variable(file, path, name, value)
    if name in conv.variables:
        spec.variables[name] = conv.variables[name]
    conv.variables.clear()
    conv.variables.update(before)


def _add_channel(conv: _Converter, spec: _Conda, file: str, path: str, channel: str) -> None:
    if _has_credentials(channel):
        conv.warn(
            file,
            path,
            f"a channel with credentials ({_strip_credentials(channel)}): not carried over; "
            "credentials never go into env.toml",
        )
        return
    bad = grammar.check_conda_channel(channel)
    if bad:
        conv.warn(file, path, f"not carried over: {bad[0]}")
        return
    spec.channels.append(channel)


def _conda_dependencies(
    conv: _Converter, spec: _Conda, file: str, path: str, value: object
) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        conv.problem(file, path, f"expected a list, got {_type_name(value)}")
        return
    for i, item in enumerate(value):
        where = _join(path, i)
        if isinstance(item, Mapping):
            for key, sub in item.items():
                if key == "pip":
                    for j, line in enumerate(conv.strings(file, _join(where, "pip"), sub)):
                        _pip_line(conv, spec, file, _join(_join(where, "pip"), j), line)
                else:
                    conv.warn(file, _join(where, str(key)), "not carried over (only pip: is read)")
            continue
        text = conv.text(file, where, item, numbers=True)
        if text is None:
            continue
        text = text.strip()
        python = _PYTHON_SPEC.fullmatch(text)
        if python:
            _conda_python(conv, spec, file, where, text, python)
        elif _PIP_SPEC.fullmatch(text):
            if text.lower() != "pip":
                conv.note(file, where, f"{text!r}: the pip of the environment is envbuild's")
        else:
            bad = grammar.check_conda_package(text)
            if bad:
                conv.warn(file, where, f"not carried over: {bad[0]}")
            else:
                spec.packages.append(text)


def _conda_python(
    conv: _Converter, spec: _Conda, file: str, where: str, text: str, match: re.Match[str]
) -> None:
    if match.group(2):
        spec.python = f"{match.group(2)}.{match.group(3)}"
        if text.count(".") > 1 or "=" in text[match.end(1) :]:
            conv.note(file, where, f"{text!r}: envbuild pins Python by minor version")
        return
    rest = (match.group(4) or "").strip()
    if rest:
        conv.warn(file, where, f"{text!r} is a range: name one version, e.g. python=3.8")
    else:
        conv.note(file, where, "python without a version")


def _pip_line(conv: _Converter, spec: _Conda, file: str, where: str, line: str) -> None:
    text = re.sub(r"(?:^|\s+)#.*$", "", line).strip()  # a requirements-file comment
    if not text:
        return
    option = re.fullmatch(r"(--index-url|-i|--extra-index-url)(?:\s*=\s*|\s+)(\S+)", text)
    if option:
        url = option.group(2)
        if _has_credentials(url):
            conv.warn(
                file,
                where,
                f"an index URL with credentials ({_strip_credentials(url)}): not carried over; "
                "credentials never go into env.toml: give them to the build as a secret "
                "(docs/import-azureml.md)",
            )
            return
        bad = grammar.check_index_url(url)
        if bad:
            conv.warn(file, where, f"not carried over: {bad[0]}")
        elif option.group(1) == "--extra-index-url":
            spec.extra_index_urls.append(url)
        elif spec.index_url and spec.index_url != url:
            conv.warn(file, where, "a second --index-url: not carried over")
        else:
            spec.index_url = url
        return
    if text.startswith("-"):
        shown = text.split()[0].split("=")[0]
        conv.warn(file, where, f"the pip option {shown} is not carried over")
        return
    if _AZUREML_PACKAGE.match(text) and not conv.keep_azureml_packages:
        conv.warn(
            file,
            where,
            f"{text!r}: an Azure ML SDK package (it talks to a workspace): left out "
            "(--keep-azureml-packages keeps it)",
        )
        return
    bad = grammar.check_pip_requirement(text)
    if bad:
        conv.warn(file, where, f"not carried over: {bad[0]}")
        return
    spec.pip.append(text)


# --------------------------------------------------------------------------
# Base images and Python
# --------------------------------------------------------------------------


def _azure_base(conv: _Converter, file: str, path: str, image: str) -> str:
    """The bootstrapped Ubuntu base for one of Azure's images; notes what it carried."""
    lower = image.lower()
    curated = re.match(r"mcr\.microsoft\.com/azureml/curated/([^:@/]+)", lower)
    if curated:
        try:
            azure, folder = resolve_curated(curated.group(1))
        except UsageError:
            pass
        else:
            conv.warn(
                file,
                path,
                f"{image} is the image of Azure's curated {azure}: "
                f"`envbuild import azureml {azure}` extends envbuild's curated {folder} instead",
            )
    ubuntu = re.search(r"ubuntu(\d{2})\.?(\d{2})", lower)
    version = f"{ubuntu.group(1)}.{ubuntu.group(2)}" if ubuntu else None
    if version in _UBUNTU_BASES:
        base = _UBUNTU_BASES[version]
    else:
        base = _UBUNTU_BASES[_OLDEST_UBUNTU]
        why = f"Ubuntu {version}" if version else "an unknown Ubuntu"
        conv.warn(
            file,
            path,
            f"{image} is {why}: {base} instead, the oldest Ubuntu `envbuild base bootstrap` builds",
        )
    carried = []
    if "openmpi" in lower:
        conv.add_system(MPI_PACKAGES)
        for name, value in MPI_VARIABLES.items():
            conv.variables.setdefault(name, value)
        carried.append(
            "Open MPI and ssh from apt (" + ", ".join(MPI_PACKAGES) + "; no compiler or MPI "
            "headers: add build-essential and libopenmpi-dev to build mpi4py or horovod)"
        )
    if "intelmpi" in lower:
        conv.warn(file, path, f"{image} carried Intel MPI, which envbuild does not install")
    cuda = re.search(r"cuda(\d{1,2}\.\d{1,2})", lower)
    if cuda:
        conv.gpu["cuda"] = cuda.group(1)
        carried.append(
            f"[gpu] cuda = {cuda.group(1)!r} (the host driver is checked for it; the CUDA "
            "libraries come with the framework's wheels, not with the base)"
        )
    conv.note(
        file,
        path,
        f"Azure's own image {image} becomes {base} (`envbuild base bootstrap {base}` builds it)"
        + (", with " + " and ".join(carried) if carried else "")
        + "; its Miniconda is not carried: conda comes only with python.source = conda",
    )
    return base


def _base_image(
    conv: _Converter, file: str, path: str, image: str, registry: str | None = None
) -> None:
    ref = image
    first = image.split("/", 1)[0]
    has_domain = "/" in image and ("." in first or ":" in first or first == "localhost")
    if registry and not has_domain:
        ref = f"{registry.rstrip('/')}/{image}"
    if ref.lower().startswith(_AZURE_REGISTRY):
        conv.base["image"] = _azure_base(conv, file, path, ref)
        return
    bad = grammar.check_image_ref(ref)
    if bad:
        conv.problem(file, path, bad[0], bad[1])
        return
    conv.base["image"] = ref


def _base_dockerfile(conv: _Converter, file: str, path: str, text: str) -> None:
    lines = text.replace("\r\n", "\n").split("\n")
    for i, line in enumerate(lines):
        match = re.match(r"(\s*FROM\s+)(?:--platform=\S+\s+)?(\S+)(.*)$", line, re.I)
        if match and match.group(2).lower().startswith(_AZURE_REGISTRY):
            base = _azure_base(conv, file, path, match.group(2))
            lines[i] = f"{match.group(1)}{base}{match.group(3)}"
            conv.warn(
                file,
                path,
                f"its FROM named Azure's image {match.group(2)}, now {base}: steps that used "
                "Azure's Miniconda (conda, /opt/miniconda) need editing",
            )
        elif re.match(r"\s*(COPY|ADD)\s", line, re.I):
            conv.warn(
                file,
                _join(path, f"line {i + 1}") if path else f"line {i + 1}",
                "COPY/ADD in a base Dockerfile: the files of Azure's build context are not "
                "carried; put them in the image another way",
            )
    conv.files[BASE_DOCKERFILE] = "\n".join(lines)
    conv.base.clear()
    conv.base["dockerfile"] = BASE_DOCKERFILE


def _python_section(
    conv: _Converter, spec: _Conda | None, *, user_managed: bool, file: str, path: str
) -> None:
    """[python], [conda] and [pip] from a conda specification and the chosen base."""
    for name, value in (spec.variables if spec else {}).items():
        conv.variables.setdefault(name, value)
    if user_managed:
        conv.python["source"] = "system"
        conv.note(
            file,
            path,
            "userManagedDependencies: the base image's own python3 in a venv, nothing installed",
        )
        if spec and (spec.packages or spec.pip):
            conv.warn(
                spec.file,
                _join(spec.prefix, "dependencies"),
                "ignored, as Azure ML ignored it with userManagedDependencies = true",
            )
        return
    if spec is None:
        return
    if spec.packages or conv.keep_conda:
        version = spec.python
        if version is None:
            version = DEFAULT_CONDA_PYTHON
            conv.warn(
                spec.file,
                _join(spec.prefix, "dependencies"),
                f"names no python: {version} (Azure's default)",
            )
        conv.python.update({"version": version, "source": "conda"})
        conv.conda["channels"] = spec.channels
        conv.conda["packages"] = spec.packages
    else:
        if spec.channels:
            conv.note(
                spec.file,
                _join(spec.prefix, "channels"),
                "not needed: no conda package besides python and pip",
            )
        _python_without_conda(conv, spec.python, spec.file, _join(spec.prefix, "dependencies"))
    conv.pip["packages"] = spec.pip
    if spec.index_url:
        conv.pip["index_url"] = spec.index_url
    conv.pip["extra_index_urls"] = spec.extra_index_urls


def _python_without_conda(conv: _Converter, version: str | None, file: str, where: str) -> None:
    from envbuild.lock.model import DISTRO_PYTHON

    base = conv.base.get("image")
    distro = _SYSTEM_PYTHON.get(base) if base else None
    system = DISTRO_PYTHON.get(distro) if distro else None
    if version is None:
        conv.python["source"] = "system"
        return
    if system == version:
        conv.python.update({"version": version, "source": "system"})
        conv.note(file, where, f"Python {version} is {base}'s own python3 (no conda)")
        return
    conv.python.update({"version": version, "source": "uv"})
    conv.note(file, where, f"Python {version} installed by uv (no conda)")
    if version in ("3.6", "3.7"):
        conv.warn(
            file,
            where,
            f"Python {version} is past its end of life and uv may not provide it: consider 3.8",
        )


# --------------------------------------------------------------------------
# SDK v1: azureml_environment.json (+ conda_dependencies.yml, BaseDockerfile)
# --------------------------------------------------------------------------

_V1_KNOWN = {
    "name",
    "version",
    "environmentVariables",
    "python",
    "docker",
    "spark",
    "databricks",
    "r",
    "inferencingStackVersion",
    "assetId",
}


def from_v1_directory(
    path: str | Path,
    *,
    into: Path | None = None,
    keep_conda: bool = False,
    keep_azureml_packages: bool = False,
) -> ImportResult:
    """Import an SDK v1 environment folder (``Environment.save_to_directory()``).

    Reads ``azureml_environment.json``, ``conda_dependencies.yml`` when present
    (else the JSON's inline ``python.condaDependencies``) and ``BaseDockerfile``
    (or ``Dockerfile``) when present. ``into`` is the folder the definition
    will be written to (default: a folder named after the environment).
    """
    folder = Path(path)
    definition = folder / V1_DEFINITION_FILE
    shown = _display(definition)
    data = _parse_json(_read(definition, shown), shown)
    conda: tuple[object, str] | None = None
    conda_path = folder / V1_CONDA_FILE
    if conda_path.exists():
        conda_shown = _display(conda_path)
        conda = (_parse_yaml(_read(conda_path, conda_shown), conda_shown), conda_shown)
    dockerfile: tuple[str, str] | None = None
    for candidate in V1_BASE_DOCKERFILES:
        if (folder / candidate).exists():
            docker_shown = _display(folder / candidate)
            dockerfile = (_read(folder / candidate, docker_shown), docker_shown)
            break
    return _v1(
        data,
        shown=shown,
        folder=folder,
        conda=conda,
        dockerfile=dockerfile,
        into=into,
        kind="v1-directory",
        source=_display(folder),
        keep_conda=keep_conda,
        keep_azureml_packages=keep_azureml_packages,
    )


def from_v1_definition(
    data: Mapping[str, Any],
    *,
    conda: Mapping[str, Any] | None = None,
    base_dockerfile: str | None = None,
    into: Path | None = None,
    source: str = "<environment>",
    keep_conda: bool = False,
    keep_azureml_packages: bool = False,
) -> ImportResult:
    """Import an SDK v1 environment given as data: the JSON of ``azureml_environment.json``.

    For code that holds an SDK-shaped environment (``envbuild.azureml``'s
    ``Environment``): ``data`` uses the SDK's serialized (camelCase) keys;
    ``conda`` is the conda specification (else ``python.condaDependencies``),
    ``base_dockerfile`` the base Dockerfile's text (else
    ``docker.baseDockerfile``). Findings name ``source`` as their file.
    """
    return _v1(
        data,
        shown=source,
        folder=Path.cwd(),
        conda=(conda, f"{source} (conda)") if conda is not None else None,
        dockerfile=(base_dockerfile, f"{source} (base Dockerfile)") if base_dockerfile else None,
        into=into,
        kind="v1-definition",
        source=source,
        keep_conda=keep_conda,
        keep_azureml_packages=keep_azureml_packages,
    )


def _v1(
    data: object,
    *,
    shown: str,
    folder: Path,
    conda: tuple[object, str] | None,
    dockerfile: tuple[str, str] | None,
    into: Path | None,
    kind: str,
    source: str,
    keep_conda: bool,
    keep_azureml_packages: bool,
) -> ImportResult:
    conv = _Converter(keep_conda=keep_conda, keep_azureml_packages=keep_azureml_packages)
    root = conv.mapping(shown, "", data)
    if root is None:
        if data is None:
            conv.problem(shown, "", "is empty", "an Azure ML environment is a JSON object")
        conv.check()
        raise AssertionError("unreachable")
    _v1_environment(
        conv,
        root,
        shown=shown,
        folder=folder,
        conda=conda,
        dockerfile=dockerfile,
        fallback_name="imported" if kind == "v1-definition" else None,
    )
    conv.check()
    target = into if into is not None else Path(conv.top["name"])
    return conv.result(kind, source, target)


def _v1_environment(
    conv: _Converter,
    root: Mapping[str, Any],
    *,
    shown: str,
    folder: Path,
    conda: tuple[object, str] | None,
    dockerfile: tuple[str, str] | None,
    prefix: str = "",
    search: Sequence[Path] = (),
    fallback_name: str | None = None,
) -> None:
    """Convert one SDK v1 environment mapping (also a run configuration's ``environment``).

    A ``python.condaDependenciesFile`` is looked for in ``folder``, then in ``search``.
    """

    def at(key: str) -> str:
        return _join(prefix, key)

    name = conv.text(shown, at("name"), root.get("name"))
    conv.set_name(shown, at("name"), name, fallback_name or folder.resolve().name or "imported")
    conv.set_version(shown, at("version"), root.get("version"))
    if name:
        conv.set_description(shown, at("name"), f"Imported from the Azure ML environment {name}")
    variables = conv.mapping(shown, at("environmentVariables"), root.get("environmentVariables"))
    for key, value in (variables or {}).items():
        conv.add_variable(shown, _join(at("environmentVariables"), key), key, value)

    docker = conv.mapping(shown, at("docker"), root.get("docker")) or {}
    _v1_docker(conv, docker, shown=shown, prefix=at("docker"), dockerfile=dockerfile)

    python = conv.mapping(shown, at("python"), root.get("python")) or {}
    user_managed = bool(
        conv.flag(
            shown,
            _join(at("python"), "userManagedDependencies"),
            python.get("userManagedDependencies"),
        )
    )
    spec: _Conda | None = None
    inline = python.get("condaDependencies")
    if conda is not None:
        spec = _conda_spec(conv, conda[0], conda[1])
        if not _empty(inline):
            conv.warn(
                shown, _join(at("python"), "condaDependencies"), f"ignored: {conda[1]} is read"
            )
    elif not _empty(inline):
        spec = _conda_spec(conv, inline, shown, _join(at("python"), "condaDependencies"))
    file_ref = conv.text(
        shown, _join(at("python"), "condaDependenciesFile"), python.get("condaDependenciesFile")
    )
    if file_ref and spec is None:
        found = [f / file_ref for f in (folder, *search) if (f / file_ref).is_file()]
        conda_path = found[0] if found else folder / file_ref
        if found:
            conda_shown = _display(conda_path)
            spec = _conda_spec(
                conv, _parse_yaml(_read(conda_path, conda_shown), conda_shown), conda_shown
            )
        else:
            conv.warn(shown, _join(at("python"), "condaDependenciesFile"), f"{file_ref} not found")
    interpreter = conv.text(
        shown, _join(at("python"), "interpreterPath"), python.get("interpreterPath")
    )
    if interpreter and interpreter != "python":
        conv.warn(
            shown,
            _join(at("python"), "interpreterPath"),
            f"{interpreter!r} is not carried over: envbuild runs the environment's venv python",
        )
    base_conda = python.get("baseCondaEnvironment")
    if not _empty(base_conda):
        conv.warn(shown, _join(at("python"), "baseCondaEnvironment"), "not carried over")
    conv.unknown(
        shown,
        at("python"),
        python,
        {
            "userManagedDependencies",
            "interpreterPath",
            "condaDependencies",
            "condaDependenciesFile",
            "baseCondaEnvironment",
        },
    )
    _python_section(conv, spec, user_managed=user_managed, file=shown, path=at("python"))

    for key, why in (
        ("spark", "Spark settings are not carried over: envbuild runs no Spark"),
        ("databricks", "Databricks libraries are not carried over"),
        ("r", "the R section is not carried over: envbuild installs no R"),
        ("inferencingStackVersion", "Azure's inferencing stack is not carried over"),
        ("assetId", "a workspace asset id: not carried over"),
    ):
        value = root.get(key)
        if key == "spark" and isinstance(value, Mapping):
            value = {k: v for k, v in value.items() if not (k == "precachePackages" and v is True)}
            value = {k: v for k, v in value.items() if not _empty(v)}
        if key == "databricks" and isinstance(value, Mapping):
            value = {k: v for k, v in value.items() if not _empty(v)}
        if not _empty(value):
            conv.warn(shown, at(key), why)
    conv.unknown(shown, prefix, root, _V1_KNOWN | {"docker", "python"})


def _v1_docker(
    conv: _Converter,
    docker: Mapping[str, Any],
    *,
    shown: str,
    prefix: str,
    dockerfile: tuple[str, str] | None,
) -> None:

    def at(key: str) -> str:
        return _join(prefix, key)

    registry = conv.mapping(shown, at("baseImageRegistry"), docker.get("baseImageRegistry")) or {}
    address = conv.text(shown, _join(at("baseImageRegistry"), "address"), registry.get("address"))
    for secret in ("username", "password", "registryIdentity"):
        if not _empty(registry.get(secret)):
            conv.warn(
                shown,
                _join(at("baseImageRegistry"), secret),
                "registry credentials are never written: log in with `docker login "
                f"{address or 'REGISTRY'}` before `envbuild build`",
            )
    conv.unknown(
        shown,
        at("baseImageRegistry"),
        registry,
        {"address", "username", "password", "registryIdentity"},
    )
    inline = conv.text(shown, at("baseDockerfile"), docker.get("baseDockerfile"))
    image = conv.text(shown, at("baseImage"), docker.get("baseImage"))
    if dockerfile is not None:
        _base_dockerfile(conv, dockerfile[1], "", dockerfile[0])
        if inline:
            conv.warn(shown, at("baseDockerfile"), f"ignored: {dockerfile[1]} is read")
        if image:
            conv.note(shown, at("baseImage"), f"not used: {dockerfile[1]} is the base")
    elif inline:
        _base_dockerfile(conv, shown, at("baseDockerfile"), inline)
        if image:
            conv.note(shown, at("baseImage"), "not used: docker.baseDockerfile is the base")
    elif image:
        _base_image(conv, shown, at("baseImage"), image, address)
    else:
        build = docker.get("buildContext")
        if _empty(build):
            conv.base["image"] = _azure_base(conv, shown, at("baseImage"), AZURE_DEFAULT_CPU_IMAGE)
    if not _empty(docker.get("buildContext")):
        conv.warn(
            shown,
            at("buildContext"),
            "a build context in workspace storage or git is not carried over: "
            "download it and import its Dockerfile (an SDK v2 YAML with build.path)",
        )
        if "image" not in conv.base and "dockerfile" not in conv.base:
            conv.base["image"] = _azure_base(conv, shown, at("baseImage"), AZURE_DEFAULT_CPU_IMAGE)
    shm = conv.text(shown, at("shmSize"), docker.get("shmSize"))
    if shm:
        _shm(conv, shown, at("shmSize"), shm)
    arguments = conv.strings(shown, at("arguments"), docker.get("arguments"))
    _docker_arguments(conv, shown, at("arguments"), arguments)
    enabled = conv.flag(shown, at("enabled"), docker.get("enabled"))
    if enabled is False:
        conv.note(shown, at("enabled"), "envbuild always runs in a container")
    platform = conv.mapping(shown, at("platform"), docker.get("platform")) or {}
    os_name = platform.get("os")
    if not _empty(os_name) and str(os_name).lower() != "linux":
        conv.warn(shown, _join(at("platform"), "os"), f"{os_name}: envbuild builds Linux images")
    arch = platform.get("architecture")
    if not _empty(arch) and str(arch).lower() not in ("amd64", "x86_64"):
        conv.warn(
            shown,
            _join(at("platform"), "architecture"),
            f"{arch}: not carried over; envbuild builds for its platform setting",
        )
    shared = docker.get("sharedVolumes")
    if shared is False:
        conv.warn(shown, at("sharedVolumes"), "a Docker-for-Windows workaround: not carried over")
    if docker.get("gpuSupport"):
        conv.note(shown, at("gpuSupport"), "GPUs are given per run: `envbuild run --gpus all`")
    conv.unknown(
        shown,
        prefix,
        docker,
        {
            "enabled",
            "baseImage",
            "baseDockerfile",
            "buildContext",
            "baseImageRegistry",
            "sharedVolumes",
            "shmSize",
            "arguments",
            "platform",
            "gpuSupport",
        },
    )


def _shm(conv: _Converter, file: str, path: str, shm: str) -> None:
    size = shm.strip().lower()
    size = size[:-1] if size.endswith("b") and size[-2:-1].isalpha() else size
    bad = grammar.check_shm_size(size)
    if bad:
        conv.warn(file, path, f"not carried over: {bad[0]}")
    elif size != DEFAULT_SHM_SIZE:
        conv.run["shm_size"] = size


def _docker_arguments(conv: _Converter, file: str, path: str, arguments: list[str]) -> None:
    rest: list[str] = []
    i = 0
    while i < len(arguments):
        argument = arguments[i]
        if argument.startswith("--shm-size="):
            _shm(conv, file, _join(path, i), argument.split("=", 1)[1])
        elif argument == "--shm-size" and i + 1 < len(arguments):
            _shm(conv, file, _join(path, i + 1), arguments[i + 1])
            i += 1
        elif argument.startswith("-"):
            rest.append(argument.split("=", 1)[0])
        i += 1
    if rest:
        conv.warn(
            file,
            path,
            "docker run options not carried over (values not shown): "
            + ", ".join(dict.fromkeys(rest))
            + "; give what a run needs to `envbuild run` (--gpus, --mount, -e, --shm-size)",
        )


# --------------------------------------------------------------------------
# SDK v2 / CLI v2 environment YAML
# --------------------------------------------------------------------------

_V2_KNOWN = {"$schema", "name", "version", "description", "image", "conda_file", "build"}
# What `az ml environment show` adds about the asset itself (no meaning for the image).
_V2_METADATA = {
    "tags",
    "id",
    "creation_context",
    "properties",
    "latest_version",
    "is_anonymous",
    "stage",
    "auto_rebuild",
    "resourceGroup",
}
_V2_MARKERS = _V2_KNOWN - {"$schema", "name", "version", "description"}  # v2, not conda


def from_v2_yaml(
    path: str | Path,
    *,
    into: Path | None = None,
    keep_conda: bool = False,
    keep_azureml_packages: bool = False,
) -> ImportResult:
    """Import an SDK/CLI v2 environment YAML (``az ml environment create --file``).

    Reads ``name``, ``version``, ``description``, ``image``, ``conda_file`` (a
    path beside the YAML, or inline) and ``build`` (``path`` and
    ``dockerfile_path``: the Dockerfile becomes the base Dockerfile).
    """
    file = Path(path)
    shown = _display(file)
    data = _parse_yaml(_read(file, shown), shown)
    conv = _Converter(keep_conda=keep_conda, keep_azureml_packages=keep_azureml_packages)
    root = conv.mapping(shown, "", data)
    if root is None:
        if data is None:
            conv.problem(shown, "", "is empty", "an environment YAML has image: or build:")
        conv.check()
        raise AssertionError("unreachable")
    folder = file.parent
    name = conv.text(shown, "name", root.get("name"), numbers=True)
    conv.set_name(shown, "name", name, file.stem)
    conv.set_version(shown, "version", root.get("version"))
    description = conv.text(shown, "description", root.get("description"))
    conv.set_description(
        shown,
        "description",
        description or (f"Imported from the Azure ML environment {name}" if name else None),
    )
    image = conv.text(shown, "image", root.get("image"))
    build = conv.mapping(shown, "build", root.get("build"))
    if build:
        _v2_build(conv, build, shown=shown, folder=folder)
        if image:
            conv.warn(shown, "image", "ignored: build is the base (Azure ML refuses both)")
    elif image:
        _base_image(conv, shown, "image", image)
    else:
        conv.problem(shown, "", "has neither image nor build", "an environment YAML needs one")
    conda = root.get("conda_file")
    spec: _Conda | None = None
    if isinstance(conda, str):
        conda_path = folder / conda
        conda_shown = _display(conda_path)
        spec = _conda_spec(
            conv, _parse_yaml(_read(conda_path, conda_shown), conda_shown), conda_shown
        )
    elif isinstance(conda, Mapping):
        spec = _conda_spec(conv, conda, shown, "conda_file")
    elif conda is not None:
        conv.problem(shown, "conda_file", f"expected a path or a mapping, got {_type_name(conda)}")
    _python_section(conv, spec, user_managed=False, file=shown, path="conda_file")
    for key, value in root.items():
        if key in _V2_KNOWN or _empty(value):
            continue
        if key in _V2_METADATA:
            conv.note(shown, key, "the workspace's metadata of the asset: not carried over")
        elif key == "os_type" and str(value).lower() == "linux":
            continue
        elif key == "inference_config":
            conv.warn(shown, key, "Azure's inference server settings are not carried over")
        else:
            conv.warn(shown, key, "not carried over")
    conv.check()
    return conv.result("v2-yaml", shown, into if into is not None else Path(conv.top["name"]))


def _v2_build(conv: _Converter, build: Mapping[str, Any], *, shown: str, folder: Path) -> None:
    context = conv.text(shown, "build.path", build.get("path"))
    dockerfile = (
        conv.text(shown, "build.dockerfile_path", build.get("dockerfile_path")) or "Dockerfile"
    )
    if not context:
        conv.problem(shown, "build.path", "is required with build")
        return
    if re.match(r"[a-z][a-z0-9+.-]*://", context, re.I):
        conv.problem(
            shown,
            "build.path",
            "a remote build context is not read",
            "clone or download it, then point build.path at the local folder",
        )
        return
    path = folder / context / dockerfile
    docker_shown = _display(path)
    _base_dockerfile(conv, docker_shown, "", _read(path, docker_shown))
    conv.note(shown, "build", f"{docker_shown} becomes the base Dockerfile ({BASE_DOCKERFILE})")
    for key in build:
        if key not in ("path", "dockerfile_path") and not _empty(build[key]):
            conv.warn(shown, f"build.{key}", "not carried over")


# --------------------------------------------------------------------------
# Conda files, curated names
# --------------------------------------------------------------------------


def from_conda_spec(
    spec: Mapping[str, Any],
    *,
    name: str,
    base_image: str | None = None,
    into: Path | None = None,
    source: str = "<conda specification>",
    keep_conda: bool = False,
    keep_azureml_packages: bool = False,
) -> ImportResult:
    """An environment named ``name`` from a conda specification (``name``, ``channels``,
    ``dependencies`` with its ``pip:`` list), on ``base_image`` (default: Azure's default
    CPU image, mapped as every Azure image is)."""
    conv = _Converter(keep_conda=keep_conda, keep_azureml_packages=keep_azureml_packages)
    conv.set_name(source, "name", name, "imported")
    conv.top["version"] = 1
    _base_image(conv, source, "base_image", base_image or AZURE_DEFAULT_CPU_IMAGE)
    parsed = _conda_spec(conv, spec, source)
    _python_section(conv, parsed, user_managed=False, file=source, path="")
    conv.check()
    return conv.result("conda-file", source, into if into is not None else Path(conv.top["name"]))


def from_conda_file(
    path: str | Path,
    *,
    name: str | None = None,
    base_image: str | None = None,
    into: Path | None = None,
    keep_conda: bool = False,
    keep_azureml_packages: bool = False,
) -> ImportResult:
    """An environment from a conda file (``Environment.from_conda_specification``)."""
    file = Path(path)
    shown = _display(file)
    data = _parse_yaml(_read(file, shown), shown)
    if not isinstance(data, Mapping):
        raise DefinitionError(
            [
                Problem(
                    shown,
                    "",
                    f"expected a mapping, got {_type_name(data)}",
                    "a conda file lists dependencies:",
                )
            ]
        )
    fallback = (
        name or (data.get("name") if isinstance(data.get("name"), str) else None) or file.stem
    )
    return from_conda_spec(
        data,
        name=str(fallback),
        base_image=base_image,
        into=into,
        source=shown,
        keep_conda=keep_conda,
        keep_azureml_packages=keep_azureml_packages,
    )


def from_curated_name(
    reference: str, *, catalog: Path | None = None, into: Path | None = None
) -> ImportResult:
    """A definition that ``extends`` the curated environment an Azure ML curated name becomes.

    ``catalog`` is the curated catalog folder (default:
    :func:`envbuild.azureml.curated.catalog_root`); the environment must be in
    it. An unknown name is a :class:`UsageError` listing the known ones.
    """
    from envbuild.azureml.curated import NOTES, catalog_root

    azure, folder = resolve_curated(reference)
    parent = (catalog if catalog is not None else catalog_root()) / folder
    if not (parent / DEFINITION_FILE).is_file():
        raise UsageError(
            f"the curated environment {folder} is not in {_display(parent.parent)}",
            hint="name the catalog folder with --catalog (curated/ in envbuild's repository)",
        )
    conv = _Converter(keep_conda=False, keep_azureml_packages=False)
    conv.set_name(reference, "", azure, azure)
    conv.top["version"] = 1
    conv.top["description"] = f"Azure ML's {azure}, as envbuild's curated {folder}"
    conv.note(reference, "", f"extends the curated environment {folder}")
    if azure in NOTES:
        conv.note(reference, "", NOTES[azure])
    target = into if into is not None else Path(conv.top["name"])
    return conv.result("curated", azure, target, parent.absolute())


# --------------------------------------------------------------------------
# SDK v1 run configurations (.azureml/*.runconfig)
# --------------------------------------------------------------------------

_RUNCONFIG_KNOWN = {
    "script",
    "command",
    "arguments",
    "target",
    "framework",
    "communicator",
    "environment",
    "environmentVariables",
    "nodeCount",
    "mpi",
    "pytorch",
    "tensorflow",
    "data",
    "outputData",
    "dataReferences",
    "maxRunDurationSeconds",
    "docker",
    "history",
    "jobName",
}
# Azure's compute and service settings: they say where Azure ran the job, not what it ran.
_COMPUTE_KEYS = {
    "amlcompute",
    "containerInstance",
    "kubernetesCompute",
    "aiSuperComputer",
    "instanceTypes",
    "priority",
    "credentialPassthrough",
    "sourceDirectoryDataStore",
    "globalJobDispatcher",
    "applicationEndpoints",
    "exposedPorts",
    "services",
    "commandReturnCodeConfig",
    "paralleltask",
    "parallelTask",
}
# Sections every saved run configuration has, at these values when unused.
_UNUSED_SECTIONS: Mapping[str, tuple[object, ...]] = {
    "spark": (
        {
            "configuration": {
                "spark.app.name": "Azure ML Experiment",
                "spark.yarn.maxAppAttempts": 1,
            }
        },
    ),
    "hdi": ({"yarnDeployMode": "Cluster"},),
}
_MPI_COMMUNICATORS = {"mpi", "intelmpi", "openmpi"}
_TORCH_COMMUNICATORS = {"gloo", "nccl"}
_INPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_RUN_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DATA_ARGUMENT = re.compile(
    r"(DatasetConsumptionConfig|DatasetOutputConfig|OutputDatasetConfig):(.+)"
)
_DATA_REFERENCE = re.compile(r"\$AZUREML_DATAREFERENCE_([A-Za-z0-9_-]+)")
#: Where a run configuration's data gets a placeholder, inside the imported folder.
DATA_FOLDER = "data"
#: Where its uploaded data references and output datasets go, inside the imported folder.
OUTPUTS_FOLDER = "outputs"


@dataclass
class _Run:
    """The ``envbuild run`` being assembled from a run configuration."""

    options: list[tuple[str, tuple[Part, ...]]] = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)  # Azure name -> input name
    outputs: dict[str, str] = field(default_factory=dict)
    mounted: dict[str, str] = field(default_factory=dict)  # Azure name -> its path in the container


def _input_name(conv: _Converter, file: str, path: str, name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "data"
    if not re.match(r"[A-Za-z_]", cleaned):
        cleaned = f"_{cleaned}"[:64]
    if cleaned != name:
        conv.note(file, path, f"{name!r} becomes the input name {cleaned!r}")
    return cleaned


def _project_folder(runconfig: Path) -> Path:
    """The source directory a run configuration belongs to (the parent of ``.azureml``)."""
    folder = runconfig.absolute().parent
    return folder.parent if folder.name in (".azureml", "aml_config") else folder


def from_runconfig(
    path: str | Path,
    *,
    into: Path | None = None,
    source_dir: Path | None = None,
    catalog: Path | None = None,
    keep_conda: bool = False,
    keep_azureml_packages: bool = False,
) -> ImportResult:
    """Import an SDK v1 run configuration (``.azureml/NAME.runconfig``, YAML or JSON).

    Its ``environment`` becomes the definition (inline, as in
    ``azureml_environment.json``; a curated name extends the catalog), and the
    rest the :class:`RunCommand` (:attr:`ImportResult.run`): ``script`` and
    ``arguments``, ``environmentVariables`` (``-e``), ``data`` and
    ``dataReferences`` (``--input``, or ``--mount`` at their ``pathOnCompute``;
    placeholders under ``data/`` of the folder, with warnings), upload
    references and ``outputData`` (``--output``), ``docker.shmSize``,
    ``maxRunDurationSeconds`` (``--timeout``), and the distributed settings
    (``communicator``, ``nodeCount``, ``mpi``, ``pytorch``, ``tensorflow``).
    The source directory is the folder holding ``.azureml`` unless ``source_dir``.
    """
    file = Path(path)
    shown = _display(file)
    text = _read(file, shown)
    data = _parse_json(text, shown) if file.suffix == ".json" else _parse_yaml(text, shown)
    conv = _Converter(keep_conda=keep_conda, keep_azureml_packages=keep_azureml_packages)
    root = conv.mapping(shown, "", data)
    if root is None:
        if data is None:
            conv.problem(shown, "", "is empty", "a run configuration names at least a script")
        conv.check()
        raise AssertionError("unreachable")
    project = (source_dir or _project_folder(file)).absolute()
    extends = _runconfig_environment(
        conv, root, shown=shown, file=file, project=project, catalog=catalog
    )
    run = _Run()
    # Azure ML's conventions: a writable snapshot of the source, ./outputs and
    # ./logs kept with the run, and the script's own Run.get_context() logging.
    run.options.append(("--azureml-context", ()))
    script, arguments = _runconfig_script(conv, root, shown)
    _runconfig_data(conv, run, root, shown)
    arguments = [_runconfig_argument(conv, run, shown, i, a) for i, a in enumerate(arguments)]
    _runconfig_settings(conv, run, root, shown)
    _runconfig_distribution(conv, run, root, shown, extends)
    _runconfig_unused(conv, root, shown)
    conv.check()
    target = into if into is not None else Path(file.stem)
    result = conv.result("runconfig", shown, target, extends)
    command = RunCommand(
        source_dir=project,
        script=script,
        arguments=tuple(arguments),
        options=tuple(run.options),
    )
    return replace(result, run=command)


def _runconfig_environment(
    conv: _Converter,
    root: Mapping[str, Any],
    *,
    shown: str,
    file: Path,
    project: Path,
    catalog: Path | None,
) -> Path | None:
    """Fill ``conv`` with the run's environment; the curated folder it extends, if any."""
    environment = root.get("environment")
    if isinstance(environment, str):
        try:
            azure, _ = resolve_curated(environment)
        except UsageError:
            conv.warn(
                shown,
                "environment",
                f"{environment!r} names an environment registered in the workspace: Azure ML's "
                "default environment instead; download it (`az ml environment download`) "
                "and import that folder",
            )
            _v1_environment(
                conv,
                {},
                shown=shown,
                folder=project,
                conda=None,
                dockerfile=None,
                fallback_name=file.stem,
            )
            return None
        from envbuild.azureml.curated import catalog_root

        curated = from_curated_name(
            azure, catalog=catalog if catalog is not None else catalog_root()
        )
        conv.top.update({k: curated.document[k] for k in ("name", "version", "description")})
        conv.notes.extend(curated.notes)
        conv.warnings.extend(curated.warnings)
        return curated.extends
    mapping = conv.mapping(shown, "environment", environment)
    if mapping is None:
        if environment is None:
            conv.note(shown, "environment", "none named: Azure ML's default environment")
        mapping = {}
    _v1_environment(
        conv,
        mapping,
        shown=shown,
        folder=project,
        conda=None,
        dockerfile=None,
        prefix="environment",
        search=(file.absolute().parent,),
        fallback_name=file.stem,
    )
    return None


def _runconfig_script(
    conv: _Converter, root: Mapping[str, Any], shown: str
) -> tuple[str, list[str]]:
    script = conv.text(shown, "script", root.get("script"))
    arguments = conv.strings(shown, "arguments", root.get("arguments"))
    command = root.get("command")
    if not script and command:
        words = (
            shlex.split(command)
            if isinstance(command, str)
            else conv.strings(shown, "command", command)
        )
        if words and re.fullmatch(r"python[0-9.]*", words[0]) and len(words) > 1:
            words = words[1:]
        if words:
            conv.note(shown, "command", "its first word is the script, the rest its arguments")
            return words[0], [*words[1:], *arguments]
    elif command and script:
        conv.warn(shown, "command", "ignored: script is set")
    if not script:
        if root.get("script") is None:
            conv.problem(shown, "script", "is required", "name the script the run starts")
        return "", arguments
    return script, arguments


def _runconfig_data(conv: _Converter, run: _Run, root: Mapping[str, Any], shown: str) -> None:
    from envbuild.run.config import INPUTS_ROOT, OUTPUTS_ROOT

    datasets = conv.mapping(shown, "data", root.get("data")) or {}
    for azure, item in datasets.items():
        path = _join("data", azure)
        spec = conv.mapping(shown, path, item) or {}
        name = _input_name(conv, shown, path, azure)
        mechanism = str(spec.get("mechanism") or "mount").lower()
        if mechanism not in ("mount", "download"):
            conv.warn(
                shown,
                _join(path, "mechanism"),
                f"{mechanism!r} is not carried over: the data is mounted",
            )
            mechanism = "mount"
        location = conv.mapping(shown, _join(path, "dataLocation"), spec.get("dataLocation")) or {}
        dataset = (
            conv.mapping(shown, _join(path, "dataLocation.dataset"), location.get("dataset")) or {}
        )
        where = (
            f"the dataset {dataset.get('name') or dataset.get('id')!s}"
            if dataset
            else f"{_strip_credentials(str(location.get('uri')))}"
            if location.get("uri")
            else "the workspace"
        )
        target = _data_target(conv, run, shown, path, spec, azure, name, mechanism, INPUTS_ROOT)
        conv.warn(
            shown,
            path,
            f"its data lives in {where}: put a copy at {DATA_FOLDER}/{name} beside run.sh "
            "(the placeholder the run uses)",
        )
        variable = conv.text(
            shown, _join(path, "environmentVariableName"), spec.get("environmentVariableName")
        )
        if variable:
            _run_variable(
                conv, run, shown, _join(path, "environmentVariableName"), variable, target
            )
        for key in ("overwrite", "options", "createOutputDirectories"):
            if spec.get(key) not in (None, False, {}, []):
                conv.warn(shown, _join(path, key), "not carried over")
    references = conv.mapping(shown, "dataReferences", root.get("dataReferences")) or {}
    for azure, item in references.items():
        path = _join("dataReferences", azure)
        spec = conv.mapping(shown, path, item) or {}
        name = _input_name(conv, shown, path, azure)
        mode = str(spec.get("mode") or "mount").lower()
        store = spec.get("dataStoreName") or "the datastore"
        on_store = spec.get("pathOnDataStore") or ""
        variable = f"AZUREML_DATAREFERENCE_{azure}"
        if mode == "upload":
            run.options.append(("--output", (f"{name}=", InEnvFolder(f"{OUTPUTS_FOLDER}/{name}"))))
            run.outputs[azure] = name
            conv.note(
                shown,
                path,
                f"uploaded to {store} by Azure ML: here --output {name}, kept under "
                f"{OUTPUTS_FOLDER}/{name} beside run.sh",
            )
            target = f"{OUTPUTS_ROOT}/{name}"
        else:
            if mode not in ("mount", "download"):
                conv.warn(shown, _join(path, "mode"), f"{mode!r} is not carried over: mounted")
                mode = "mount"
            target = _data_target(conv, run, shown, path, spec, azure, name, mode, INPUTS_ROOT)
            conv.warn(
                shown,
                path,
                f"its data lives in {store}:{on_store}: put a copy at {DATA_FOLDER}/{name} "
                "beside run.sh (the placeholder the run uses)",
            )
        if _RUN_VARIABLE.fullmatch(variable):
            run.options.append(("-e", (f"{variable}={target}",)))
        if spec.get("overwrite"):
            conv.warn(shown, _join(path, "overwrite"), "not carried over")
    outputs = conv.mapping(shown, "outputData", root.get("outputData")) or {}
    for azure, item in outputs.items():
        path = _join("outputData", azure)
        conv.mapping(shown, path, item)
        name = _input_name(conv, shown, path, azure)
        run.options.append(("--output", (f"{name}=", InEnvFolder(f"{OUTPUTS_FOLDER}/{name}"))))
        run.outputs[azure] = name
        conv.note(shown, path, f"an output dataset: --output {name}, under {OUTPUTS_FOLDER}/{name}")


def _data_target(
    conv: _Converter,
    run: _Run,
    shown: str,
    path: str,
    spec: Mapping[str, Any],
    azure: str,
    name: str,
    mode: str,
    inputs_root: str,
) -> str:
    """Add the input (or mount) for one piece of data; return its path in the container."""
    on_compute = conv.text(shown, _join(path, "pathOnCompute"), spec.get("pathOnCompute"))
    placeholder = InEnvFolder(f"{DATA_FOLDER}/{name}")
    if on_compute:
        if on_compute.startswith("/") and not grammar.check_abs_path(on_compute):
            run.options.append(("--mount", (placeholder, f":{on_compute}:ro")))
            if mode == "download":
                conv.warn(shown, path, "download at a pathOnCompute: mounted read-only instead")
            run.mounted[azure] = on_compute
            return on_compute
        conv.warn(
            shown,
            _join(path, "pathOnCompute"),
            f"{on_compute!r} is not carried over: the data is at {inputs_root}/{name}",
        )
    run.options.append(("--input", (f"{name}=", placeholder, f":{mode}")))
    run.inputs[azure] = name
    return f"{inputs_root}/{name}"


def _run_variable(
    conv: _Converter, run: _Run, shown: str, path: str, name: str, value: str
) -> None:
    if not _RUN_VARIABLE.fullmatch(name) or grammar.check_variable_name(name):
        conv.warn(shown, path, f"{name!r} is not a variable name envbuild passes: not carried over")
        return
    if grammar.control_chars(value, allow_tab=True):
        conv.warn(shown, path, "a value with control characters: not carried over")
        return
    run.options.append(("-e", (f"{name}={value}",)))


def _runconfig_argument(conv: _Converter, run: _Run, shown: str, index: int, argument: str) -> str:
    path = _join("arguments", index)
    match = _DATA_ARGUMENT.fullmatch(argument)
    if match:
        kind, azure = match.groups()
        table, group = (
            (run.inputs, "inputs")
            if kind == "DatasetConsumptionConfig"
            else (run.outputs, "outputs")
        )
        if azure in table:
            return f"${{{{{group}.{table[azure]}}}}}"
        if azure in run.mounted and group == "inputs":
            return run.mounted[azure]
        conv.warn(shown, path, f"{argument!r} names no {group[:-1]} of the run: kept as it is")
        return argument

    def reference(found: re.Match[str]) -> str:
        azure = found.group(1)
        if azure in run.inputs:
            return f"${{{{inputs.{run.inputs[azure]}}}}}"
        if azure in run.outputs:
            return f"${{{{outputs.{run.outputs[azure]}}}}}"
        if azure in run.mounted:
            return run.mounted[azure]
        conv.warn(shown, path, f"{found.group(0)} names no data reference of the run")
        return found.group(0)

    return _DATA_REFERENCE.sub(reference, argument)


def _runconfig_settings(conv: _Converter, run: _Run, root: Mapping[str, Any], shown: str) -> None:
    variables = conv.mapping(shown, "environmentVariables", root.get("environmentVariables")) or {}
    for name, value in variables.items():
        path = _join("environmentVariables", name)
        text = conv.text(shown, path, value, numbers=True)
        if text is not None:
            _run_variable(conv, run, shown, path, name, text)
    docker = conv.mapping(shown, "docker", root.get("docker")) or {}
    shm = conv.text(shown, "docker.shmSize", docker.get("shmSize"))
    if shm:
        run.options.append(("--shm-size", (shm,)))
    arguments = conv.strings(shown, "docker.arguments", docker.get("arguments"))
    if arguments:
        conv.warn(
            shown,
            "docker.arguments",
            "docker run options not carried over (values not shown): "
            + ", ".join(dict.fromkeys(a.split("=", 1)[0] for a in arguments if a.startswith("-"))),
        )
    if docker.get("useDocker") is False:
        conv.note(shown, "docker.useDocker", "envbuild always runs in a container")
    conv.unknown(shown, "docker", docker, {"useDocker", "shmSize", "arguments", "sharedVolumes"})
    timeout = root.get("maxRunDurationSeconds")
    if timeout is not None:
        if (
            isinstance(timeout, (int, str))
            and not isinstance(timeout, bool)
            and str(timeout).isdigit()
        ):
            run.options.append(("--timeout", (str(int(timeout)),)))
        else:
            conv.problem(
                shown, "maxRunDurationSeconds", f"expected seconds, got {_type_name(timeout)}"
            )
    target = conv.text(shown, "target", root.get("target"))
    if target and target != "local":
        conv.note(shown, "target", f"the compute {target!r}: the run uses the local engine")
    framework = conv.text(shown, "framework", root.get("framework"))
    if framework and framework.lower() == "pyspark":
        conv.warn(shown, "framework", "PySpark is not carried over: the script runs with Python")
    history = conv.mapping(shown, "history", root.get("history")) or {}
    watched = history.get("directoriesToWatch")
    if watched not in (None, [], ["logs"]):
        conv.warn(
            shown,
            "history.directoriesToWatch",
            "not carried over: a run keeps what the script writes under ./outputs and ./logs",
        )
    job = root.get("jobName")
    if not _empty(job):
        conv.note(shown, "jobName", "not carried over: `envbuild run --name` names the container")


def _runconfig_unused(conv: _Converter, root: Mapping[str, Any], shown: str) -> None:
    """Say what a run configuration holds that a local run does not use."""
    compute = sorted(k for k in _COMPUTE_KEYS if not _empty(root.get(k)))
    if compute:
        conv.note(shown, ", ".join(compute), "Azure's compute settings: not used by a local run")
    for key, unused in _UNUSED_SECTIONS.items():
        value = root.get(key)
        if not _empty(value) and value not in unused:
            conv.warn(shown, key, f"the {key} settings are not carried over: the run is Python")
    conv.unknown(shown, "", root, _RUNCONFIG_KNOWN | _COMPUTE_KEYS | set(_UNUSED_SECTIONS))


def _torch_before_1_10(conv: _Converter, extends: Path | None) -> bool:
    """Whether the run's environment pins a torch older than 1.10 (no torchrun)."""
    packages = list(conv.pip.get("packages", []))
    if extends is not None:
        from envbuild.definition.model import load

        packages += load(extends).pip.packages
    for package in packages:
        match = re.fullmatch(r"torch\s*==\s*1\.(\d+)(?:\.\S*)?", package.strip())
        if match and int(match.group(1)) < 10:
            return True
    return False


def _runconfig_distribution(
    conv: _Converter, run: _Run, root: Mapping[str, Any], shown: str, extends: Path | None
) -> None:
    communicator = str(root.get("communicator") or "None").lower()
    nodes_raw = root.get("nodeCount")
    nodes = nodes_raw if isinstance(nodes_raw, int) and not isinstance(nodes_raw, bool) else 1
    if nodes_raw is not None and nodes is not nodes_raw:
        conv.problem(shown, "nodeCount", f"expected an integer, got {_type_name(nodes_raw)}")
    pytorch = conv.mapping(shown, "pytorch", root.get("pytorch")) or {}
    tensorflow = conv.mapping(shown, "tensorflow", root.get("tensorflow")) or {}
    mpi = conv.mapping(shown, "mpi", root.get("mpi")) or {}

    def count(section: Mapping[str, Any], key: str, where: str, default: int) -> int:
        value = section.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            conv.problem(shown, where, f"expected a positive integer, got {value!r}")
            return default
        return value

    if communicator in _MPI_COMMUNICATORS:
        per_node = count(mpi, "processCountPerNode", "mpi.processCountPerNode", 1)
        run.options += [
            ("--distribution", ("mpi",)),
            ("--nodes", (str(nodes),)),
            ("--procs-per-node", (str(per_node),)),
        ]
        if communicator == "intelmpi":
            conv.warn(shown, "communicator", "IntelMpi: the run uses Open MPI's mpirun")
    elif communicator in _TORCH_COMMUNICATORS or pytorch.get("processCount"):
        total = count(pytorch, "processCount", "pytorch.processCount", nodes)
        pytorch_nodes = count(pytorch, "nodeCount", "pytorch.nodeCount", nodes)
        if total % pytorch_nodes:
            conv.problem(
                shown,
                "pytorch.processCount",
                f"{total} processes do not divide over {pytorch_nodes} nodes",
                "envbuild runs the same number of processes on every node",
            )
        backend = str(pytorch.get("communicationBackend") or communicator).lower()
        if backend not in ("gloo", "nccl", "mpi"):
            backend = "nccl" if communicator == "nccl" else "gloo"
        run.options += [
            ("--distribution", ("pytorch",)),
            ("--nodes", (str(pytorch_nodes),)),
            ("--procs-per-node", (str(max(1, total // max(1, pytorch_nodes))),)),
            ("--backend", (backend,)),
        ]
        if _torch_before_1_10(conv, extends):
            run.options.append(("--torch-launcher", ("launch",)))
            conv.note(shown, "pytorch", "torch < 1.10 has no torchrun: --torch-launcher launch")
        else:
            conv.note(
                shown,
                "pytorch",
                "torchrun launches the processes; for torch < 1.10 add --torch-launcher launch",
            )
    elif communicator == "parameterserver":
        workers = count(tensorflow, "workerCount", "tensorflow.workerCount", nodes)
        servers = count(tensorflow, "parameterServerCount", "tensorflow.parameterServerCount", 1)
        run.options += [
            ("--distribution", ("tensorflow",)),
            ("--nodes", (str(workers),)),
            ("--parameter-servers", (str(servers),)),
        ]
    elif communicator != "none":
        conv.warn(shown, "communicator", f"{communicator!r} is not carried over: one process")
    elif nodes > 1:
        conv.warn(
            shown,
            "nodeCount",
            f"{nodes} nodes without a communicator: the script runs once, on one container",
        )


# --------------------------------------------------------------------------
# Any source, by what it is
# --------------------------------------------------------------------------


def import_source(
    source: str,
    *,
    into: Path | None = None,
    catalog: Path | None = None,
    source_dir: Path | None = None,
    keep_conda: bool = False,
    keep_azureml_packages: bool = False,
) -> ImportResult:
    """Import ``source``, whatever it is: a folder, a file or a curated name.

    A folder holding ``azureml_environment.json`` (or that file) is an SDK v1
    environment; a YAML file with ``image``/``build``/``conda_file`` an SDK v2
    environment; a YAML file with ``dependencies`` a conda file; a
    ``.runconfig`` file (or YAML with ``script``) an SDK v1 run configuration;
    a name that is no path, an Azure ML curated environment.
    """
    options: dict[str, Any] = {
        "into": into,
        "keep_conda": keep_conda,
        "keep_azureml_packages": keep_azureml_packages,
    }
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / V1_DEFINITION_FILE).is_file():
            return from_v1_directory(path, **options)
        raise UsageError(
            f"{source} holds no {V1_DEFINITION_FILE}",
            hint="name an SDK v1 environment folder (Environment.save_to_directory), "
            "an environment YAML, a conda file or a curated name",
        )
    if path.is_file():
        if path.name == V1_DEFINITION_FILE:
            return from_v1_directory(path.parent, **options)
        if path.suffix == ".runconfig":
            return from_runconfig(path, catalog=catalog, source_dir=source_dir, **options)
        return _import_file(path, options, catalog=catalog, source_dir=source_dir)
    if (
        path.exists()
        or "/" in source
        or os.sep in source
        or source.endswith((".yml", ".yaml", ".json"))
    ):
        raise UsageError(f"{source}: no such file or folder")
    try:
        return from_curated_name(source, catalog=catalog, into=into)
    except UsageError as exc:
        if exc.hint and "did you mean" in exc.hint:
            raise
        raise UsageError(
            f"{source}: no such file or folder, and not an Azure ML curated environment",
            hint=exc.hint,
        ) from None


def _import_file(
    path: Path, options: dict[str, Any], *, catalog: Path | None, source_dir: Path | None
) -> ImportResult:
    shown = _display(path)
    text = _read(path, shown)
    data = _parse_json(text, shown) if path.suffix == ".json" else _parse_yaml(text, shown)
    if isinstance(data, Mapping):
        if "script" in data or "communicator" in data or "framework" in data:
            return from_runconfig(path, catalog=catalog, source_dir=source_dir, **options)
        if any(k in data for k in _V2_MARKERS) or "environment" in str(data.get("$schema", "")):
            return from_v2_yaml(path, **options)
        if "dependencies" in data:
            return from_conda_file(path, **options)
        if "python" in data or "docker" in data:
            return _v1(
                data,
                shown=shown,
                folder=path.parent,
                conda=None,
                dockerfile=None,
                kind="v1-definition",
                source=shown,
                **options,
            )
    raise UsageError(
        f"{shown} is not an Azure ML environment envbuild can read",
        hint="expected an SDK v2 environment YAML (image:, build:, conda_file:), "
        "a conda file (dependencies:) or an SDK v1 azureml_environment.json",
    )


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def _contains(outer: Path, inner: Path) -> bool:
    try:
        inner.resolve().relative_to(outer.resolve())
    except ValueError:
        return False
    return True


def _write_atomically(result: ImportResult, folder: Path, *, force: bool) -> Path:
    folder = folder.absolute()
    replace = False
    if folder.exists() or folder.is_symlink():
        if not folder.is_dir() or folder.is_symlink():
            raise UsageError(f"{folder} exists and is not a folder", hint="name a new folder")
        if any(folder.iterdir()):
            if not force:
                raise UsageError(
                    f"{folder} is not empty",
                    hint="name a new folder, or pass --force to replace the environment there",
                )
            if not (folder / DEFINITION_FILE).is_file():
                raise UsageError(
                    f"{folder} holds no {DEFINITION_FILE}: "
                    "--force replaces only an environment folder",
                    hint="name a new folder",
                )
            if _contains(folder, Path.cwd()):
                raise UsageError(f"{folder} holds the working directory: it is not replaced")
            replace = True
    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    # mkdir (not mkdtemp, whose 0700 the folder would keep) under a unique name
    staging = parent / f".{folder.name}.import-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    old: Path | None = None
    try:
        (staging / DEFINITION_FILE).write_text(result.env_toml_for(folder), encoding="utf-8")
        for name, text in result.files_for(folder).items():
            (staging / name).write_text(text, encoding="utf-8")
            if name == RUN_SCRIPT:
                (staging / name).chmod(0o755)
        _validate(staging, result)
        if replace:
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=parent))
            folder.replace(old / "env")
        elif folder.exists():
            folder.rmdir()  # empty: checked above
        staging.replace(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None and (old / "env").exists() and not folder.exists():
            (old / "env").replace(folder)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def _validate(staging: Path, result: ImportResult) -> None:
    """Load what was written, as ``envbuild validate`` would; a problem names the source."""
    from envbuild.definition.model import load

    try:
        load(staging)
    except DefinitionError as exc:
        raise DefinitionError(
            [
                Problem(
                    result.source,
                    f"imported {p.key}" if p.key else "imported env.toml",
                    p.message,
                    p.hint,
                )
                for p in exc.problems
            ]
        ) from None
    except EnvbuildError:
        raise
