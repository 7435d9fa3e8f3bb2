"""Azure ML's ``Environment`` and ``CondaDependencies``, turned into envbuild definitions.

An :class:`Environment` says what the seed's code said (conda and pip
packages, a Python version, a base image or Dockerfile, variables). When a
run needs it, :func:`resolve_environment` answers what envbuild runs:

* a curated environment left as it is: its ``curated/`` folder, so the image
  is the catalog's own (a cache hit where the catalog was built);
* anything else: an ``env.toml`` generated from it, written to a folder under
  ``ENVBUILD_HOME`` named by the content's hash (the same environment always
  gives the same folder, hence the same memo and image), and built by the
  normal pipeline;
* ``python.user_managed_dependencies = True`` with an image of one's own:
  that image, run as it is (``image:REF``).

``environment_variables`` are the run's variables, as in Azure ML, where they
are set on the script's process: they never change the image.

Azure ML's defaults (its ``mcr.microsoft.com/azureml/...`` base images, its
conda Python, its ``azureml-defaults`` package) have no meaning here: each is
mapped to a local default, and the mapping is said once.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envbuild.azureml._common import Shim, notice, unsupported
from envbuild.azureml.curated import catalog_root, curated_folder
from envbuild.errors import UsageError

if TYPE_CHECKING:
    from envbuild.azureml.workspace import Workspace

#: Azure ML's default images (``azureml.core.runconfig``); any ``mcr.microsoft.com/azureml/``
#: image is one of Azure's and maps to a local default.
DEFAULT_CPU_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04"
DEFAULT_GPU_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.1-cudnn8-ubuntu20.04"
AZURE_IMAGE_PREFIX = "mcr.microsoft.com/azureml/"

#: Python versions with a curated environment of their own: the local default for each.
CURATED_PYTHONS: Mapping[str, str] = {"3.8": "python-3.8", "3.11": "python-3.11"}
DEFAULT_PYTHON = "3.11"
#: The curated MPI environment (Python 3.11): MPI jobs on Azure ML's default image run in it.
CURATED_MPI = "mpi-4.1-cpu"

GENERATED_FOLDER = "azureml/environments"  # under ENVBUILD_HOME
OWN_KEYS = ("schema", "name", "version", "description")  # what every generated definition has
NAME_PREFIX = "azureml-"  # generated environments never take a curated name (or its tags)

_REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_ENV_NAME_BAD = re.compile(r"[^a-z0-9._-]+")
_CONDA_PYTHON = re.compile(r"python\s*(?:[=<>!~]=?\s*)?([0-9][0-9.*]*)?\s*$")


def _requirement_name(spec: str) -> str:
    match = _REQUIREMENT_NAME.match(spec)
    return match.group(1).lower().replace("_", "-") if match else spec.strip().lower()


def _minor(version: str) -> str:
    """``3.8.13`` -> ``3.8``."""
    return ".".join(version.split(".")[:2])


# --------------------------------------------------------------------------
# CondaDependencies
# --------------------------------------------------------------------------


class CondaDependencies(Shim):
    """Azure ML's ``CondaDependencies``: a Python version, conda and pip packages, channels.

    ``CondaDependencies.create(pip_packages=[...], conda_packages=[...],
    python_version="3.8")`` is the usual way in. Unlike Azure ML's, nothing is
    added behind the caller's back: no ``azureml-defaults`` (the run's
    ``azureml.core`` is envbuild's own) and no Python version (the local
    default then applies, see :func:`resolve_environment`).
    """

    def __init__(self, conda_dependencies_file_path: str | os.PathLike[str] | None = None) -> None:
        self._python: str | None = None
        self._conda: list[str] = []
        self._pip: list[str] = []
        self._channels: list[str] = []
        self._pip_options: list[str] = []
        if conda_dependencies_file_path is not None:
            unsupported(
                "CondaDependencies(conda_dependencies_file_path=...)",
                "Environment.from_conda_specification(name, file), or "
                "`envbuild import azureml FILE -o DIR`",
            )

    @classmethod
    def create(
        cls,
        pip_indexurl: str | None = None,
        pip_packages: Iterable[str] | None = None,
        conda_packages: Iterable[str] | None = None,
        python_version: str | None = None,
        pin_sdk_version: bool = True,
    ) -> CondaDependencies:
        """A new set of dependencies (``pin_sdk_version`` is accepted and has no effect)."""
        deps = cls()
        if python_version:
            deps.set_python_version(python_version)
        if pip_indexurl:
            deps.set_pip_index_url(f"--index-url {pip_indexurl}")
        for spec in conda_packages or ():
            deps.add_conda_package(spec)
        for spec in pip_packages or ():
            deps.add_pip_package(spec)
        return deps

    def set_python_version(self, version: str) -> None:
        """The Python version (``"3.8"``; a patch level is accepted and dropped)."""
        self._python = str(version).strip()

    def get_python_version(self) -> str | None:
        """The Python version asked for, ``None`` when none was."""
        return self._python

    def add_conda_package(self, conda_package: str) -> None:
        """Add a conda match spec; ``python=X`` sets the Python version instead."""
        spec = str(conda_package).strip()
        python = _CONDA_PYTHON.fullmatch(spec)
        if python:
            if python.group(1):
                self._python = python.group(1).rstrip(".*")
            return
        if spec not in self._conda:
            self._conda.append(spec)

    def add_pip_package(self, pip_package: str) -> None:
        """Add a pip requirement."""
        spec = str(pip_package).strip()
        if spec not in self._pip:
            self._pip.append(spec)

    def add_channel(self, channel: str) -> None:
        """Add a conda channel."""
        if channel not in self._channels:
            self._channels.append(str(channel))

    def remove_pip_package(self, pip_package: str) -> None:
        """Remove the pip requirements naming ``pip_package``."""
        name = _requirement_name(pip_package)
        self._pip = [p for p in self._pip if _requirement_name(p) != name]

    def remove_conda_package(self, conda_package: str) -> None:
        """Remove the conda specs naming ``conda_package``."""
        name = _requirement_name(conda_package)
        self._conda = [p for p in self._conda if _requirement_name(p) != name]

    def set_pip_option(self, pip_option: str) -> None:
        """``--index-url URL`` or ``--extra-index-url URL``; other options are unsupported."""
        option = str(pip_option).strip()
        flag = option.split(None, 1)[0] if option else ""
        if flag not in ("--index-url", "--extra-index-url", "-i"):
            unsupported(
                f"CondaDependencies.set_pip_option({option!r})",
                "[pip] index_url / extra_index_urls in env.toml; other pip options are not "
                "part of an envbuild definition",
            )
        if option not in self._pip_options:
            self._pip_options.append(option)

    def set_pip_index_url(self, index_url: str) -> None:
        """Azure ML's spelling of ``set_pip_option("--index-url URL")``."""
        self.set_pip_option(index_url if index_url.startswith("-") else f"--index-url {index_url}")

    @property
    def pip_packages(self) -> Iterator[str]:
        """The pip requirements."""
        return iter(list(self._pip))

    @property
    def conda_packages(self) -> Iterator[str]:
        """The conda specs (Python itself not among them)."""
        return iter(list(self._conda))

    @property
    def conda_channels(self) -> Iterator[str]:
        """The conda channels."""
        return iter(list(self._channels))

    @property
    def pip_options(self) -> Iterator[str]:
        """The pip options (index URLs)."""
        return iter(list(self._pip_options))

    def _state(self) -> tuple[Any, ...]:
        return (self._python, self._conda, self._pip, self._channels, self._pip_options)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CondaDependencies) and self._state() == other._state()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def serialize_to_string(self) -> str:
        """The dependencies as a conda environment file."""
        lines = ["name: project_environment"]
        if self._channels:
            lines.append("channels:")
            lines += [f"  - {c}" for c in self._channels]
        lines.append("dependencies:")
        if self._python:
            lines.append(f"  - python={self._python}")
        lines += [f"  - {c}" for c in self._conda]
        if self._pip or self._pip_options:
            lines += ["  - pip", "  - pip:"]
            lines += [f"    - {p}" for p in [*self._pip_options, *self._pip]]
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------


class PythonSection(Shim):
    """``env.python``: the conda dependencies, or ``user_managed_dependencies``."""

    def __init__(self) -> None:
        self.user_managed_dependencies = False
        self.conda_dependencies: CondaDependencies | None = None
        self.interpreter_path = "python"


class DockerSection(Shim):
    """``env.docker``: the base image or Dockerfile (``enabled`` is always true here)."""

    def __init__(self) -> None:
        self.base_image: str | None = DEFAULT_CPU_IMAGE
        self.base_dockerfile: str | None = None
        self.enabled = True
        self.shm_size: str | None = None
        self.arguments: list[str] = []
        self.base_image_registry: object = None


class Environment(Shim):
    """Azure ML's ``Environment``, run by envbuild (see the module's docstring).

    Attributes as in Azure ML: ``name``, ``version``, ``python``
    (:class:`PythonSection`), ``docker`` (:class:`DockerSection`),
    ``environment_variables`` (the run's variables).
    """

    def __init__(self, name: str, version: str | None = None) -> None:
        if not isinstance(name, str) or not name.strip():
            raise UsageError(
                f"Environment(name={name!r}): expected a name", hint='e.g. Environment("myenv")'
            )
        self.name = name
        self.version = version
        self.python = PythonSection()
        self.docker = DockerSection()
        self.environment_variables: dict[str, str] = {}
        self.spark: object = None
        self.r: object = None
        self.inferencing_stack_version: str | None = None
        # A curated environment: its folder, and its dependencies as loaded (to tell a change).
        self._curated: Path | None = None
        self._curated_deps: CondaDependencies | None = None

    def __repr__(self) -> str:
        return f"Environment(name={self.name!r}, version={self.version!r})"

    # -- Azure ML's ways in ---------------------------------------------------------------

    @classmethod
    def get(
        cls, workspace: Workspace, name: str, version: str | None = None, label: str | None = None
    ) -> Environment:
        """A registered environment of ``workspace``, or Azure ML's curated one of that name.

        A curated name (``AzureML-PyTorch-1.6-GPU``) answers the environment of
        ``curated/`` that replaces it (the table in ``docs/catalog.md``).
        """
        registered = workspace._environments.get(name)
        if registered is not None:
            return copy.deepcopy(registered)
        try:
            folder = curated_folder(name, workspace.catalog)
        except UsageError as exc:
            raise UsageError(
                f"Environment.get: no environment {name!r}: it is neither registered in this "
                "workspace nor one of Azure ML's curated names envbuild replaces",
                hint=f"{exc.hint}; or register it first (env.register(workspace=ws))",
            ) from exc
        return cls._from_curated(name, folder)

    @classmethod
    def _from_curated(cls, name: str, folder: Path) -> Environment:
        from envbuild.definition.model import load

        definition = load(folder)
        env = cls(name, version=str(definition.version))
        deps = CondaDependencies()
        if definition.python.version:
            deps.set_python_version(definition.python.version)
        for spec in definition.conda.packages:
            deps.add_conda_package(spec)
        for spec in definition.pip.packages:
            deps.add_pip_package(spec)
        env.python.conda_dependencies = deps
        env.docker.base_image = None
        env._curated = folder
        env._curated_deps = copy.deepcopy(deps)
        return env

    @classmethod
    def from_pip_requirements(
        cls, name: str, file_path: str | os.PathLike[str], pip_version: str | None = None
    ) -> Environment:
        """An environment whose pip packages are a requirements file's lines.

        ``--index-url`` / ``--extra-index-url`` lines become the index settings;
        ``-r``/``-c`` includes and other options are unsupported (named with the line).
        """
        path = Path(file_path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the requirements file {path}: {exc}") from exc
        deps = CondaDependencies()
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split(" #", 1)[0].strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("-"):
                flag = line.split(None, 1)[0].split("=", 1)[0]
                if flag in ("--index-url", "-i", "--extra-index-url"):
                    deps.set_pip_option(line.replace("=", " ", 1) if "=" in flag else line)
                    continue
                unsupported(
                    f"{path}:{number}: the requirements option {flag}",
                    "list the packages themselves, or write [pip] in an env.toml",
                )
            deps.add_pip_package(line)
        env = cls(name)
        env.python.conda_dependencies = deps
        return env

    @classmethod
    def from_conda_specification(cls, name: str, file_path: str | os.PathLike[str]) -> Environment:
        """An environment from a conda environment file (``environment.yml``).

        The file is read by ``envbuild import azureml``'s reader: a malformed one is
        a :class:`~envbuild.errors.DefinitionError` naming the file and the field;
        what cannot be carried over (``azureml-*`` packages, ...) is said once each.
        """
        env = cls(name)
        env.python.conda_dependencies, env.environment_variables = _read_conda_file(file_path)
        return env

    @classmethod
    def from_dockerfile(
        cls,
        name: str,
        dockerfile: str | os.PathLike[str],
        conda_specification: str | os.PathLike[str] | None = None,
        pip_requirements: str | os.PathLike[str] | None = None,
    ) -> Environment:
        """An environment built on a Dockerfile: its text, or the path of a file holding it."""
        text = str(dockerfile)
        path = Path(text) if "\n" not in text and len(text) < 4096 else None
        if path is not None and path.is_file():
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"cannot read the Dockerfile {path}: {exc}") from exc
        env = (
            cls.from_pip_requirements(name, pip_requirements)
            if pip_requirements is not None
            else cls(name)
        )
        if conda_specification is not None:
            env.python.conda_dependencies, variables = _read_conda_file(conda_specification)
            env.environment_variables.update(variables)
        env.docker.base_image = None
        env.docker.base_dockerfile = text
        return env

    @classmethod
    def from_docker_image(
        cls,
        name: str,
        image: str,
        container_registry: object = None,
        conda_specification: str | os.PathLike[str] | None = None,
        pip_requirements: str | os.PathLike[str] | None = None,
    ) -> Environment:
        """An environment built on ``image``."""
        if container_registry is not None:
            _unsupported_registry()
        env = (
            cls.from_pip_requirements(name, pip_requirements)
            if pip_requirements is not None
            else cls(name)
        )
        if conda_specification is not None:
            env.python.conda_dependencies, variables = _read_conda_file(conda_specification)
            env.environment_variables.update(variables)
        env.docker.base_image = image
        return env

    @classmethod
    def from_existing_conda_environment(cls, name: str, conda_environment_name: str) -> Environment:
        """Unsupported: a conda environment of this machine is not a definition."""
        unsupported(
            "Environment.from_existing_conda_environment",
            "export it (conda env export) and list its packages with CondaDependencies.create, "
            "or write an env.toml",
        )

    @staticmethod
    def list(workspace: Workspace) -> dict[str, Environment]:
        """The environments registered in ``workspace`` (this process's)."""
        return {name: copy.deepcopy(env) for name, env in workspace._environments.items()}

    def clone(self, new_name: str) -> Environment:
        """A copy under another name (a curated one stops being "as curated" only when changed)."""
        twin = copy.deepcopy(self)
        twin.name = new_name
        return twin

    def register(self, workspace: Workspace) -> Environment:
        """Keep this environment in ``workspace`` so that ``Environment.get`` finds it."""
        workspace._environments[self.name] = copy.deepcopy(self)
        return self

    def save_to_directory(self, path: str | os.PathLike[str], overwrite: bool = False) -> None:
        """Write the environment as Azure ML's SDK v1 did: ``azureml_environment.json``,
        ``conda_dependencies.yml`` and, for a Dockerfile, ``BaseDockerfile``.

        ``envbuild import azureml PATH -o DIR`` turns the folder into an
        ``env.toml`` of your own (with Azure's base images mapped as it maps them).
        """
        import json

        from envbuild.importers.azureml import (
            V1_BASE_DOCKERFILES,
            V1_CONDA_FILE,
            V1_DEFINITION_FILE,
        )

        folder = Path(path)
        names = (V1_DEFINITION_FILE, V1_CONDA_FILE, V1_BASE_DOCKERFILES[0])
        if not overwrite and any((folder / name).exists() for name in names):
            raise UsageError(
                f"Environment.save_to_directory: {folder} holds a saved environment already",
                hint="pass overwrite=True, or another folder",
            )
        deps = self.python.conda_dependencies
        definition: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "environmentVariables": dict(self.environment_variables),
            "python": {
                "userManagedDependencies": self.python.user_managed_dependencies,
                "interpreterPath": self.python.interpreter_path,
            },
            "docker": {"baseImage": self.docker.base_image, "shmSize": self.docker.shm_size},
        }
        folder.mkdir(parents=True, exist_ok=True)
        (folder / V1_DEFINITION_FILE).write_text(
            json.dumps(definition, indent=4) + "\n", encoding="utf-8"
        )
        if deps is not None:
            (folder / V1_CONDA_FILE).write_text(deps.serialize_to_string(), encoding="utf-8")
        if self.docker.base_dockerfile is not None:
            (folder / V1_BASE_DOCKERFILES[0]).write_text(
                self.docker.base_dockerfile, encoding="utf-8"
            )

    def build(self, workspace: Workspace, image_build_compute: object = None) -> LocalBuild:
        """Build the environment's image on the local engine (a cache hit when it exists)."""
        if image_build_compute is not None:
            notice("image-build-compute", "image_build_compute: images build on the local engine")
        return LocalBuild(self, workspace)

    def build_local(
        self, workspace: Workspace, platform: str | None = None, **kwargs: object
    ) -> LocalBuild:
        """The same as :meth:`build`: every build is local here."""
        return LocalBuild(self, workspace)


class LocalBuild(Shim):
    """What ``Environment.build`` answers: ``wait_for_completion()`` builds (or finds) the image."""

    def __init__(self, environment: Environment, workspace: Workspace) -> None:
        self._environment = environment
        self._workspace = workspace
        self.image: str | None = None

    def wait_for_completion(self, show_output: bool = False) -> str:
        """Build the image (its build log on stderr with ``show_output``); return its tag."""
        from envbuild.build.builder import build

        target = resolve_environment(self._environment, self._workspace.catalog, self._workspace)
        if target.image is not None:
            self.image = target.image
            return self.image
        assert target.folder is not None
        result = build(
            target.folder,
            settings=self._workspace.settings,
            engine=self._workspace.engine,
            log=None if show_output else (lambda line: None),
        )
        self.image = result.image
        return self.image


def _read_conda_file(path: str | os.PathLike[str]) -> tuple[CondaDependencies, dict[str, str]]:
    """The dependencies and variables of a conda file, read as ``envbuild import azureml`` does."""
    from envbuild.importers.azureml import from_conda_file

    # The base is the local default's, so that the reading says nothing of Azure's
    # images (the Environment's docker section decides the base) and keeps the version.
    imported = from_conda_file(Path(path), name="conda", base_image="debian:bookworm-slim")
    for finding in imported.warnings:
        notice(f"conda-file:{finding.render()}", finding.render())
    document = imported.document
    deps = CondaDependencies()
    python, conda, pip = (dict(document.get(k) or {}) for k in ("python", "conda", "pip"))
    if python.get("version"):
        deps.set_python_version(python["version"])
    for channel in conda.get("channels", ()):
        deps.add_channel(channel)
    for spec in conda.get("packages", ()):
        deps.add_conda_package(spec)
    for spec in pip.get("packages", ()):
        deps.add_pip_package(spec)
    if pip.get("index_url"):
        deps.set_pip_option(f"--index-url {pip['index_url']}")
    for url in pip.get("extra_index_urls", ()):
        deps.set_pip_option(f"--extra-index-url {url}")
    return deps, {str(k): str(v) for k, v in (document.get("variables") or {}).items()}


def _unsupported_registry() -> None:
    unsupported(
        "a private container registry's credentials (docker.base_image_registry)",
        "`docker login REGISTRY` on this machine, then name the image in docker.base_image: "
        "credentials never go into a definition",
    )


# --------------------------------------------------------------------------
# Environment -> what envbuild runs
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What a run uses for an :class:`Environment`: a definition folder, or an image as it is."""

    folder: Path | None = None
    image: str | None = None
    env_toml: str | None = None  # the generated definition's text (None: a curated folder or image)

    @property
    def run_environment(self) -> str:
        """``RunConfig.environment``: the folder, or ``image:REF``."""
        if self.image is not None:
            return f"image:{self.image}"
        assert self.folder is not None
        return str(self.folder)


def envbuild_name(azure_name: str) -> str:
    """An envbuild environment name for Azure ML's ``azure_name``: ``azureml-<lowercased>``."""
    cleaned = _ENV_NAME_BAD.sub("-", azure_name.lower()).strip("-._")
    if cleaned.startswith(NAME_PREFIX):
        cleaned = cleaned[len(NAME_PREFIX) :]
    return (NAME_PREFIX + cleaned)[:100].rstrip("-._") or "azureml-environment"


def _version(env: Environment) -> int:
    text = str(env.version or "").strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) < 15 else 1


def check_environment(env: Environment) -> None:
    """Raise :class:`UnsupportedAzureMLFeature` for the settings that have no local meaning."""
    if env.spark is not None:
        unsupported("Environment.spark", "run Spark jobs outside envbuild")
    if env.r is not None:
        unsupported("Environment.r (R environments)", "an env.toml with [system] r-base packages")
    if env.docker.base_image_registry is not None and getattr(
        env.docker.base_image_registry, "address", None
    ):
        _unsupported_registry()
    if env.docker.arguments:
        unsupported(
            "Environment.docker.arguments (docker build arguments)",
            "write the values into the Dockerfile or the env.toml",
        )
    if env.docker.enabled is False:
        unsupported(
            "Environment.docker.enabled = False (running on the host's Python)",
            "envbuild always runs in a container; run the script with python directly otherwise",
        )
    if env.inferencing_stack_version is not None:
        unsupported("Environment.inferencing_stack_version", "an env.toml with your server's pip")


def resolve_environment(
    env: Environment, catalog: Path | None, workspace: Workspace | None = None, *, mpi: bool = False
) -> Target:
    """What envbuild runs for ``env`` (see the module's docstring); writes a generated
    definition under ``ENVBUILD_HOME/azureml/environments/<hash>`` when one is needed.

    ``mpi``: the run is an MPI job. Azure ML's default images carried Open MPI,
    so an environment on them gets it here too: ``curated/mpi-4.1-cpu`` for
    Python 3.11 (the default), Open MPI and ssh from apt for another curated Python.
    """
    check_environment(env)
    deps = env.python.conda_dependencies
    unchanged = deps is None or deps == env._curated_deps
    no_base = env.docker.base_image is None and env.docker.base_dockerfile is None
    if env._curated is not None and unchanged and no_base:
        return Target(folder=env._curated)
    if env.python.user_managed_dependencies:
        return _user_managed(env, deps, catalog)
    document, files = definition_document(env, catalog, mpi=mpi)
    if not files and set(document) - set(OWN_KEYS) == {"extends"}:
        return Target(folder=Path(document["extends"]))  # nothing added: the parent itself
    return _write_generated(document, files, workspace)


def _user_managed(env: Environment, deps: CondaDependencies | None, catalog: Path | None) -> Target:
    if deps is not None and (list(deps.pip_packages) or list(deps.conda_packages)):
        notice(
            "user-managed-deps",
            "python.user_managed_dependencies = True: the conda dependencies are not installed "
            "(as in Azure ML)",
        )
    image = env.docker.base_image
    if env.docker.base_dockerfile is not None:
        unsupported(
            "a Dockerfile with python.user_managed_dependencies = True",
            "build it yourself (docker build -t NAME .) and use "
            "Environment.from_docker_image(name, NAME) with user_managed_dependencies = True, "
            "or leave user_managed_dependencies False: envbuild then adds a virtual "
            "environment of the Dockerfile's python3",
        )
    if image is None or image.startswith(AZURE_IMAGE_PREFIX):
        folder = _python_folder(None)
        notice(
            "user-managed-default",
            f"python.user_managed_dependencies = True on Azure ML's default image: runs use "
            f"curated/{folder} as it is",
        )
        return Target(folder=(catalog or catalog_root()) / folder)
    return Target(image=image)


def _python_folder(version: str | None) -> str:
    """The curated Python environment for ``version`` (``None``: the local default)."""
    return CURATED_PYTHONS[_minor(version) if version else DEFAULT_PYTHON]


def definition_document(
    env: Environment, catalog: Path | None, *, mpi: bool = False
) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``env.toml`` (as a mapping) and the extra files of ``env``'s generated definition.

    Pure but for reading the curated catalog's location; the mapping's
    ``extends`` is an absolute path, made relative when written.
    """
    from envbuild.importers.azureml import is_azureml_package

    deps = env.python.conda_dependencies or CondaDependencies()
    pip = [p for p in deps.pip_packages if not is_azureml_package(p)]
    dropped = [p for p in deps.pip_packages if is_azureml_package(p)]
    if dropped:
        notice(
            "azureml-sdk",
            f"not installed: {', '.join(dropped)} (a run's azureml.core is envbuild's own)",
        )
    conda = list(deps.conda_packages)
    python = deps.get_python_version()
    document: dict[str, Any] = {
        "schema": 1,
        "name": envbuild_name(env.name),
        "version": _version(env),
        "description": f"Azure ML environment {env.name!r}, generated by envbuild.azureml",
    }
    files: dict[str, str] = {}
    base_image, dockerfile = env.docker.base_image, env.docker.base_dockerfile
    if env._curated is not None:
        parent = _curated_change(env, deps, pip, conda)
        document["extends"] = str(parent)
        pip = [p for p in pip if p not in (env._curated_deps or CondaDependencies())._pip]
        conda = []
    elif dockerfile is not None:
        document["base"] = {"dockerfile": "Dockerfile"}
        files["Dockerfile"] = dockerfile if dockerfile.endswith("\n") else dockerfile + "\n"
        document["python"] = {"version": _minor(python)} if python else {}
    elif base_image is not None and not base_image.startswith(AZURE_IMAGE_PREFIX):
        document["base"] = {"image": base_image}
        document["python"] = {"version": _minor(python)} if python else {}
    elif conda:
        # conda packages need conda's Python: envbuild's conda source, on the default base.
        version = _minor(python) if python else DEFAULT_PYTHON
        if not python:
            _say_default_python()
        document["python"] = {"version": version, "source": "conda"}
    else:
        minor = _minor(python) if python else None
        if minor is None or minor in CURATED_PYTHONS:
            folder = _python_folder(minor)
            root = catalog or catalog_root()
            if mpi and folder == CURATED_PYTHONS[DEFAULT_PYTHON]:
                if (root / CURATED_MPI / "env.toml").is_file():
                    folder = CURATED_MPI
                    _say_mpi(f"curated/{CURATED_MPI}")
            elif mpi:
                _add_mpi(document)
                _say_mpi(f"curated/{folder} with Open MPI and ssh from apt")
            if base_image is not None:
                _say_default_image(folder)
            if minor is None:
                _say_default_python()
            document["extends"] = str(root / folder)
        else:
            # A Python with no curated environment: uv installs it on the default base.
            document["python"] = {"version": minor, "source": "uv"}
    if conda:
        if (document.get("python") or {}).get("source") != "conda":
            document.setdefault("python", {})["source"] = "conda"
            if "version" not in document["python"]:
                document["python"]["version"] = _minor(python) if python else DEFAULT_PYTHON
        document["conda"] = {"channels": list(deps.conda_channels), "packages": conda}
    pip_table: dict[str, Any] = {}
    if pip:
        pip_table["packages"] = pip
    extra: list[str] = []
    for option in deps.pip_options:
        flag, _, url = option.replace("=", " ", 1).partition(" ")
        if flag in ("--index-url", "-i"):
            pip_table["index_url"] = url.strip()
        else:
            extra.append(url.strip())
    if extra:
        pip_table["extra_index_urls"] = extra
    if pip_table:
        document["pip"] = pip_table
    if env.docker.shm_size:
        document["run"] = {"shm_size": str(env.docker.shm_size)}
    return document, files


def _curated_change(
    env: Environment, deps: CondaDependencies, pip: Sequence[str], conda: Sequence[str]
) -> Path:
    """The curated folder a changed curated environment extends; what cannot change raises."""
    assert env._curated is not None
    before = env._curated_deps or CondaDependencies()
    removed = [p for p in before._pip if p not in deps._pip]
    if removed or deps.get_python_version() != before.get_python_version() or conda:
        unsupported(
            f"changing the Python version, conda packages or removing packages of the curated "
            f"environment {env.name!r}",
            "add pip packages only, or start from CondaDependencies.create(...) with the "
            "packages you need",
        )
    if env.docker.base_image is not None or env.docker.base_dockerfile is not None:
        unsupported(
            f"another base image under the curated environment {env.name!r}",
            "Environment.from_docker_image(name, image) or an env.toml of your own",
        )
    return env._curated


def _add_mpi(document: dict[str, Any]) -> None:
    """What Azure's openmpi images carried, as ``envbuild import azureml`` adds it."""
    from envbuild.importers.azureml import MPI_PACKAGES, MPI_VARIABLES

    document["system"] = {"packages": list(MPI_PACKAGES)}
    document["variables"] = dict(MPI_VARIABLES)


def _say_mpi(what: str) -> None:
    notice(
        "mpi-default",
        f"MpiConfiguration on Azure ML's default image (which carried Open MPI): {what}",
    )


def _say_default_python() -> None:
    notice(
        "default-python",
        f"no Python version given: Python {DEFAULT_PYTHON} (curated/"
        f"{CURATED_PYTHONS[DEFAULT_PYTHON]}); CondaDependencies.create(python_version='3.8') "
        "gives Python 3.8 on Ubuntu 20.04",
    )


def _say_default_image(folder: str) -> None:
    notice(
        "default-image",
        f"Azure ML's base images are not used: environments build on curated/{folder} "
        "(its Dockerfile is published under published/)",
    )


HEADER = (
    "Generated by envbuild.azureml from an Azure ML Environment: do not edit.\n"
    "Copy it into a folder of your own to keep it (and make `extends` relative to it)."
)


def generated_root(workspace: Workspace | None) -> Path:
    """Where generated definitions live: ``ENVBUILD_HOME/azureml/environments``."""
    if workspace is not None:
        home = workspace.settings.home
    else:
        from envbuild.settings import load_settings

        home = load_settings().home
    return home / GENERATED_FOLDER


def render_definition(document: Mapping[str, Any], folder: Path) -> str:
    """The ``env.toml`` text of ``document`` written in ``folder`` (``extends`` made relative)."""
    shown = dict(document)
    if "extends" in shown:
        shown["extends"] = os.path.relpath(shown["extends"], folder)
    from envbuild.definition import writer

    return writer.dumps(shown, header=HEADER)


def _write_generated(
    document: Mapping[str, Any], files: Mapping[str, str], workspace: Workspace | None
) -> Target:
    """Write the definition to its content-addressed folder (once, atomically) and load it."""
    from envbuild.definition.model import load

    root = generated_root(workspace)
    # The folder's name is the hash of what it holds, with extends as an absolute path:
    # the same environment lands in the same folder, another never does.
    from envbuild.definition import writer

    digest = hashlib.sha256(
        writer.dumps(document).encode()
        + b"".join(f"{k}\0{v}\0".encode() for k, v in sorted(files.items()))
    ).hexdigest()[:16]
    folder = root / digest
    text = render_definition(document, folder)
    if not (folder / "env.toml").is_file():
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".new-", dir=root))
        try:
            (staging / "env.toml").write_text(text, encoding="utf-8")
            for name, content in files.items():
                (staging / name).write_text(content, encoding="utf-8")
            try:
                staging.rename(folder)
            except OSError:
                if not (folder / "env.toml").is_file():  # not a concurrent twin: a real failure
                    raise
        finally:
            if staging.exists():
                import shutil

                shutil.rmtree(staging, ignore_errors=True)
    load(folder)  # validated now: a bad package spec is an error before any run
    return Target(folder=folder, env_toml=text)
