"""`envbuild import azureml`: each source format, what is not carried over, bad input, writing.

The fixtures under tests/fixtures/azureml/ are written by this project from
Azure ML's public documentation of the formats (azureml_environment.json as
`Environment.save_to_directory()` writes it, the CLI v2 environment YAML).
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envbuild.azureml.curated import CURATED_NAMES
from envbuild.cli.main import main
from envbuild.definition import writer
from envbuild.definition.model import json_schema, load
from envbuild.errors import DefinitionError, UsageError
from envbuild.importers import azureml
from envbuild.importers.azureml import (
    MPI_PACKAGES,
    MPI_VARIABLES,
    ImportResult,
    from_conda_spec,
    from_curated_name,
    from_runconfig,
    from_v1_definition,
    from_v1_directory,
    from_v2_yaml,
    import_source,
    resolve_curated,
)
from envbuild.run.config import Mpi, PyTorch, RunConfig, TensorFlow

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "azureml"
CATALOG = ROOT / "curated"
SECRETS = ("s3cr3t-registry-password", "pullbot", "ghp_topsecret", "builder:", "abc123")


def _fields(findings) -> set[str]:
    return {f.field for f in findings}


def _written(result: ImportResult, tmp_path: Path) -> dict[str, Any]:
    folder = result.write(tmp_path / "env")
    load(folder)  # what `envbuild validate` runs
    doc: dict[str, Any] = tomllib.loads((folder / "env.toml").read_text())
    return doc


# --------------------------------------------------------------------------
# SDK v1 folders
# --------------------------------------------------------------------------


def test_v1_pip_only_becomes_python_and_pip_on_the_azure_ubuntu(tmp_path):
    result = from_v1_directory(FIXTURES / "v1-pip-only")
    doc = _written(result, tmp_path)
    assert doc["name"] == "tiny"
    assert doc["version"] == 1
    assert doc["base"] == {"image": "ubuntu:20.04"}
    # ubuntu 20.04's python3 is 3.8: the system one, no conda
    assert doc["python"] == {"version": "3.8", "source": "system"}
    assert "conda" not in doc
    assert doc["pip"] == {"packages": ["six==1.16.0"]}
    assert doc["system"]["packages"] == list(MPI_PACKAGES)
    assert doc["variables"] == {"EXAMPLE_ENV_VAR": "EXAMPLE_VALUE", **MPI_VARIABLES}
    assert result.warnings == ()
    assert any("openmpi4.1.0-ubuntu20.04" in n.message for n in result.notes)


def test_v1_keep_conda_keeps_conda(tmp_path):
    doc = _written(from_v1_directory(FIXTURES / "v1-pip-only", keep_conda=True), tmp_path)
    assert doc["python"] == {"version": "3.8", "source": "conda"}
    assert doc["conda"] == {"channels": ["anaconda"]}
    assert doc["pip"] == {"packages": ["six==1.16.0"]}


def test_v1_full_environment(tmp_path):
    result = from_v1_directory(FIXTURES / "v1-pytorch")
    doc = _written(result, tmp_path)
    assert doc["name"] == "mnist-train_env"
    assert doc["version"] == 3
    # a conda package besides python and pip: conda stays
    assert doc["python"] == {"version": "3.8", "source": "conda"}
    assert doc["conda"] == {"channels": ["anaconda", "conda-forge"], "packages": ["numpy=1.19.2"]}
    assert doc["pip"] == {
        "packages": ["torch==1.6.0", "torchvision==0.7.0"],
        "extra_index_urls": ["https://download.pytorch.org/whl/cu102"],
    }
    assert doc["variables"] == {
        "MESSAGE": "Hello from Azure ML",
        "OMP_NUM_THREADS": "4",
        **MPI_VARIABLES,
    }
    assert doc["run"] == {"shm_size": "8g"}
    # the registry address does not prefix an image that names its own registry;
    # Azure's 18.04 image becomes the oldest bootstrapped Ubuntu, with its CUDA
    assert doc["base"] == {"image": "ubuntu:20.04"}
    assert doc["gpu"] == {"cuda": "10.2"}
    fields = _fields(result.warnings)
    assert {
        "environmentVariables.PATH",
        "docker.baseImageRegistry.username",
        "docker.baseImageRegistry.password",
        "docker.arguments",
        "docker.baseImage",
        "r",
        "inferencingStackVersion",
        "assetId",
        "dependencies[2].pip[1]",  # --index-url with credentials
        "dependencies[2].pip[2]",  # azureml-defaults
        "dependencies[2].pip[5]",  # a git URL
    } <= fields


def test_credentials_are_never_written_nor_shown(tmp_path):
    result = from_v1_directory(FIXTURES / "v1-pytorch")
    folder = result.write(tmp_path / "env")
    text = "".join(p.read_text() for p in folder.iterdir())
    shown = json.dumps(result.to_json()) + "".join(f.render() for f in result.warnings)
    shown += "".join(f.render() for f in result.notes)
    for secret in SECRETS:
        assert secret not in text
        assert secret not in shown
    # the index URL itself is named without its credentials
    assert "https://pkgs.example.com/simple" in shown


def test_keep_azureml_packages(tmp_path):
    result = from_v1_directory(FIXTURES / "v1-pytorch", keep_azureml_packages=True)
    assert "azureml-defaults" in result.document["pip"]["packages"]
    assert "dependencies[2].pip[2]" not in _fields(result.warnings)


def test_v1_base_dockerfile_from_an_azure_image(tmp_path):
    result = from_v1_directory(FIXTURES / "v1-dockerfile")
    doc = _written(result, tmp_path)
    assert doc["base"] == {"dockerfile": "base.Dockerfile"}
    dockerfile = (tmp_path / "env" / "base.Dockerfile").read_text()
    assert dockerfile.startswith("FROM ubuntu:22.04\n")
    assert "apt-get install -y --no-install-recommends curl" in dockerfile
    assert doc["python"] == {"source": "system"}  # userManagedDependencies
    assert {"python.interpreterPath"} <= _fields(result.warnings)
    assert doc["system"]["packages"] == list(MPI_PACKAGES)


def test_v1_user_managed_ignores_the_conda_dependencies(tmp_path):
    result = from_v1_directory(FIXTURES / "v1-user-managed")
    doc = _written(result, tmp_path)
    assert doc["base"] == {"image": "python:3.11-slim"}
    assert doc["python"] == {"source": "system"}
    assert "pip" not in doc
    assert "python.condaDependencies.dependencies" in _fields(result.warnings)


def test_v1_definition_as_data_with_inline_dockerfile(tmp_path):
    result = from_v1_definition(
        {
            "name": "Shim Env",
            "environmentVariables": {"MESSAGE": 'say "hi"\tthere'},
            "docker": {"baseDockerfile": "FROM debian:bookworm-slim\nRUN echo ok\n"},
            "python": {"condaDependencies": {"dependencies": ["python=3.11", {"pip": ["six"]}]}},
        },
        source="Environment(name='Shim Env')",
    )
    assert result.kind == "v1-definition"
    doc = _written(result, tmp_path)
    assert doc["name"] == "shim-env"
    assert doc["variables"] == {"MESSAGE": 'say "hi"\tthere'}
    assert doc["base"] == {"dockerfile": "base.Dockerfile"}
    # a Dockerfile base: its python3 is unknown, so uv installs the version asked
    assert doc["python"] == {"version": "3.11", "source": "uv"}


def test_default_base_is_azures_default_image():
    result = from_v1_definition({"name": "x", "python": {}})
    assert result.document["base"] == {"image": "ubuntu:20.04"}
    assert any(azureml.AZURE_DEFAULT_CPU_IMAGE in n.message for n in result.notes)


def test_a_private_registry_prefixes_a_bare_image():
    result = from_v1_definition(
        {
            "name": "x",
            "docker": {
                "baseImage": "team/base:1.0",
                "baseImageRegistry": {"address": "myregistry.azurecr.io", "password": "pw"},
            },
        }
    )
    assert result.document["base"] == {"image": "myregistry.azurecr.io/team/base:1.0"}
    assert "docker.baseImageRegistry.password" in _fields(result.warnings)


@pytest.mark.parametrize(
    ("image", "base", "cuda", "mpi"),
    [
        ("mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04", "ubuntu:20.04", None, True),
        ("mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest", "ubuntu:22.04", None, True),
        (
            "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04",
            "ubuntu:22.04",
            "11.8",
            True,
        ),
        ("mcr.microsoft.com/azureml/openmpi3.1.2-ubuntu18.04", "ubuntu:20.04", None, True),
        ("mcr.microsoft.com/azureml/base:intelmpi2018.3-ubuntu16.04", "ubuntu:20.04", None, False),
        ("mcr.microsoft.com/azureml/minimal-ubuntu24.04-py312-cpu", "ubuntu:24.04", None, False),
    ],
)
def test_azure_base_images(image, base, cuda, mpi):
    result = from_v1_definition({"name": "x", "docker": {"baseImage": image}})
    assert result.document["base"] == {"image": base}
    assert result.document["gpu"] == ({"cuda": cuda} if cuda else {})
    packages = result.document["system"].get("packages", [])
    assert (packages == list(MPI_PACKAGES)) is mpi
    old = "18.04" in image or "16.04" in image or "intelmpi" in image
    assert bool(result.warnings) is old


def test_mpi_is_what_the_curated_mpi_environment_has():
    mpi = load(CATALOG / "mpi-4.1-cpu")
    # its Debian mpi4py (and the PYTHONPATH that shows it to the venv) and its parent's
    # ca-certificates apart
    assert set(mpi.system_packages) - {"python3-mpi4py", "ca-certificates"} == set(MPI_PACKAGES)
    assert set(MPI_VARIABLES.items()) <= set(mpi.variables)


def test_an_azure_curated_image_names_the_curated_environment():
    result = from_v1_definition(
        {"name": "x", "docker": {"baseImage": "mcr.microsoft.com/azureml/curated/sklearn-1.5:3"}}
    )
    (warning, *_) = [w for w in result.warnings if "curated" in w.message]
    assert warning.field == "docker.baseImage"
    assert "`envbuild import azureml AzureML-sklearn-1.5`" in warning.message
    assert "sklearn-1.5-cpu" in warning.message


def test_bootstrapped_bases_are_the_ones_bases_builds():
    from envbuild.build.bases import SUPPORTED

    assert set(azureml._UBUNTU_BASES.values()) <= set(SUPPORTED)


# --------------------------------------------------------------------------
# SDK v2 YAML
# --------------------------------------------------------------------------


def test_v2_image_and_conda_file(tmp_path):
    result = from_v2_yaml(FIXTURES / "v2" / "env-image-conda.yml")
    doc = _written(result, tmp_path)
    assert doc["name"] == "docker-image-plus-conda-example"
    assert doc["version"] == 7
    assert doc["description"] == "Environment created from a Docker image plus Conda environment."
    assert doc["base"] == {"image": "ubuntu:22.04"}
    assert doc["python"] == {"version": "3.10", "source": "system"}  # jammy's python3
    assert doc["pip"] == {"packages": ["pandas==2.2.3", "scikit-learn==1.5.2"]}
    assert "tags" in _fields(result.notes)


def test_v2_as_az_ml_environment_show_prints_it(tmp_path):
    result = import_source(str(FIXTURES / "v2" / "show.json"))
    assert result.kind == "v2-yaml"
    doc = _written(result, tmp_path)
    assert (doc["name"], doc["version"]) == ("shown", 2)
    assert doc["python"] == {"version": "3.10", "source": "system"}
    assert doc["pip"] == {"packages": ["requests==2.32.3"]}
    assert result.warnings == ()
    assert {"id", "creation_context", "resourceGroup"} <= _fields(result.notes)


def test_v2_build_context(tmp_path):
    result = from_v2_yaml(FIXTURES / "v2" / "env-build.yml")
    doc = _written(result, tmp_path)
    assert doc["base"] == {"dockerfile": "base.Dockerfile"}
    assert (tmp_path / "env" / "base.Dockerfile").read_text().startswith("FROM python:3.11-slim")
    assert "line 2" in _fields(result.warnings)  # its COPY needs the context


def test_v2_inline_conda_with_conda_packages(tmp_path):
    doc = _written(from_v2_yaml(FIXTURES / "v2" / "env-conda-packages.yml"), tmp_path)
    assert doc["python"] == {"version": "3.9", "source": "conda"}
    assert doc["conda"] == {"channels": ["conda-forge"], "packages": ["mkl=2020.2"]}
    assert doc["pip"] == {"packages": ["numpy==1.26.4"]}


@pytest.mark.parametrize(
    ("dependencies", "python", "conda", "pip"),
    [
        (["python 3.8", {"pip": ["six  # pinned later"]}], "3.8", [], ["six"]),
        (["python=3.8.*=h1234_cpython", "python-dateutil"], "3.8", ["python-dateutil"], []),
        (
            ["conda-forge::python==3.11", "pip=23.1", {"pip": ["# only a comment", ""]}],
            "3.11",
            [],
            [],
        ),
    ],
)
def test_conda_python_and_package_forms(dependencies, python, conda, pip):
    result = from_conda_spec({"dependencies": dependencies}, name="x")
    assert result.document["python"]["version"] == python
    assert result.document["conda"].get("packages", []) == conda
    assert result.document["pip"].get("packages", []) == pip
    assert result.warnings == ()


def test_a_python_range_is_a_warning():
    result = from_conda_spec({"dependencies": ["python>=3.7,<3.9"]}, name="x")
    assert [w.field for w in result.warnings] == ["dependencies[0]"]
    assert result.document["python"] == {"source": "system"}


def test_conda_spec_with_python_not_the_bases_uses_uv():
    result = from_conda_spec(
        {"dependencies": ["python=3.11", {"pip": ["six"]}]}, name="x", base_image="ubuntu:22.04"
    )
    assert result.document["python"] == {"version": "3.11", "source": "uv"}


# --------------------------------------------------------------------------
# Curated names
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reference",
    [
        "AzureML-PyTorch-1.6-GPU",
        "azureml-pytorch-1.6-gpu",
        "azureml:AzureML-PyTorch-1.6-GPU:3",
        "AzureML-PyTorch-1.6-GPU@latest",
    ],
)
def test_curated_references(reference):
    assert resolve_curated(reference) == ("AzureML-PyTorch-1.6-GPU", "pytorch-1.6-gpu")


def test_curated_registry_uri():
    uri = "azureml://registries/azureml/environments/sklearn-1.5/labels/latest"
    assert resolve_curated(uri) == ("AzureML-sklearn-1.5", "sklearn-1.5-cpu")


def test_curated_name_extends_the_catalog(tmp_path):
    result = from_curated_name("AzureML-PyTorch-1.6-GPU", catalog=CATALOG)
    folder = result.write(tmp_path / "deep" / "pt")
    doc = tomllib.loads((folder / "env.toml").read_text())
    assert not doc["extends"].startswith("/")
    assert (folder / doc["extends"]).resolve() == (CATALOG / "pytorch-1.6-gpu").resolve()
    environment = load(folder)
    assert environment.name == "azureml-pytorch-1.6-gpu"
    assert "torch==1.6.0" in environment.pip.packages
    assert environment.gpu.cuda == "10.2"


@pytest.mark.parametrize("azure", sorted(CURATED_NAMES))
def test_every_curated_name_imports_and_validates(azure, tmp_path):
    result = from_curated_name(azure)  # the default catalog: curated/ beside the source
    load(result.write(tmp_path / "env"))


def test_unknown_curated_name_lists_the_known_ones():
    with pytest.raises(UsageError) as caught:
        from_curated_name("AzureML-PyTorch-1.7-GPU", catalog=CATALOG)
    text = caught.value.render()
    assert "AzureML-PyTorch-1.7-GPU" in text
    assert "did you mean AzureML-PyTorch-1.6-GPU" in text
    for azure in CURATED_NAMES:
        assert azure in text


def test_a_catalog_without_the_environment(tmp_path):
    with pytest.raises(UsageError, match="not in"):
        from_curated_name("AzureML-PyTorch-1.6-GPU", catalog=tmp_path)


# --------------------------------------------------------------------------
# Bad input: the file and the field, every problem at once
# --------------------------------------------------------------------------


def test_malformed_json_names_file_and_line():
    with pytest.raises(DefinitionError) as caught:
        from_v1_directory(FIXTURES / "v1-malformed")
    (problem,) = caught.value.problems
    assert problem.file.endswith("v1-malformed/azureml_environment.json")
    assert problem.line == 3
    assert "JSON syntax error" in problem.message


def test_malformed_yaml_names_file_and_line():
    with pytest.raises(DefinitionError) as caught:
        from_v2_yaml(FIXTURES / "v2" / "malformed.yml")
    (problem,) = caught.value.problems
    assert problem.file.endswith("v2/malformed.yml")
    assert problem.line == 4
    assert "YAML syntax error" in problem.message


def test_wrong_types_name_each_field():
    with pytest.raises(DefinitionError) as caught:
        from_v1_directory(FIXTURES / "v1-wrong-types")
    found = {(Path(p.file).name, p.key) for p in caught.value.problems}
    assert found == {
        ("azureml_environment.json", "environmentVariables"),
        ("azureml_environment.json", "python.userManagedDependencies"),
        ("azureml_environment.json", "docker.baseImage"),
        ("azureml_environment.json", "docker.arguments"),
        ("conda_dependencies.yml", "dependencies[1].pip"),
    }
    text = caught.value.render()
    assert "expected a mapping, got a list" in text
    assert "expected a list of strings, got a mapping" in text


def test_not_an_environment_file(tmp_path):
    other = tmp_path / "other.yml"
    other.write_text("hello: world\n")
    with pytest.raises(UsageError, match="not an Azure ML environment"):
        import_source(str(other))


def test_missing_path_is_not_taken_for_a_curated_name(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        import_source(str(tmp_path / "nope" / "env.yml"))
    with pytest.raises(UsageError, match="no such file or folder, and not an Azure ML curated"):
        import_source("my-env-folder")


def test_an_unnamed_environment_is_named_imported():
    assert from_v1_definition({"python": {}}).name == "imported"


# --------------------------------------------------------------------------
# Writing: atomic, never over something else, valid
# --------------------------------------------------------------------------


def test_refuses_a_non_empty_folder_and_force_replaces_an_environment(tmp_path):
    result = from_v1_directory(FIXTURES / "v1-pip-only")
    target = tmp_path / "env"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        result.write(target)
    with pytest.raises(UsageError, match=r"holds no env\.toml"):
        result.write(target, force=True)  # not an environment: never replaced
    assert (target / "notes.txt").read_text() == "mine"
    (target / "notes.txt").unlink()
    result.write(target)  # empty: fine
    from_v2_yaml(FIXTURES / "v2" / "env-build.yml").write(target, force=True)
    assert sorted(p.name for p in target.iterdir()) == ["base.Dockerfile", "env.toml"]
    assert [p.name for p in tmp_path.iterdir()] == ["env"]  # no staging left behind


def test_a_failure_leaves_nothing(tmp_path, monkeypatch):
    result = from_v1_directory(FIXTURES / "v1-pip-only")

    def broken(staging, result):
        raise KeyboardInterrupt

    monkeypatch.setattr(azureml, "_validate", broken)
    with pytest.raises(KeyboardInterrupt):
        result.write(tmp_path / "env")
    assert list(tmp_path.iterdir()) == []


def test_a_definition_that_does_not_validate_names_the_source(tmp_path):
    result = from_v1_definition(
        {"name": "x", "docker": {"baseDockerfile": "RUN echo no FROM\n"}}, source="here.json"
    )
    with pytest.raises(DefinitionError) as caught:
        result.write(tmp_path / "env")
    assert caught.value.problems[0].file == "here.json"
    assert "base.dockerfile" in caught.value.problems[0].key
    assert not (tmp_path / "env").exists()


SOURCES = [
    FIXTURES / "v1-pytorch",
    FIXTURES / "v1-pip-only",
    FIXTURES / "v1-dockerfile",
    FIXTURES / "v1-user-managed",
    FIXTURES / "v1-tiny-build",
    FIXTURES / "v2" / "env-image-conda.yml",
    FIXTURES / "v2" / "env-build.yml",
    FIXTURES / "v2" / "env-conda-packages.yml",
    FIXTURES / "v2" / "show.json",
    FIXTURES / "project" / ".azureml" / "train.runconfig",
    FIXTURES / "project" / ".azureml" / "pytorch.runconfig",
    FIXTURES / "project" / ".azureml" / "tf.runconfig",
    FIXTURES / "tiny-project" / ".azureml" / "hello.runconfig",
]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_every_import_validates_and_matches_the_json_schema(source, tmp_path):
    result = import_source(str(source))
    folder = result.write(tmp_path / "env")
    load(folder)
    jsonschema.validate(tomllib.loads((folder / "env.toml").read_text()), json_schema())


# --------------------------------------------------------------------------
# The TOML writer: no string changes the document's shape
# --------------------------------------------------------------------------

_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@settings(max_examples=300, deadline=None)
@given(name=_TEXT, value=_TEXT, items=st.lists(_TEXT, max_size=4), comment=_TEXT)
def test_writer_round_trips_any_string(name, value, items, comment):
    document = {"name": value, "table": {name: value, "list": items}, "n": 3}
    text = writer.dumps(document, header=comment)
    assert tomllib.loads(text) == document


def test_writer_refuses_lone_surrogates():
    with pytest.raises(ValueError, match="surrogate"):
        writer.string("\ud800")


# --------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------


def test_cli_writes_and_reports(tmp_path, capsys):
    out = tmp_path / "mnist"
    assert main(["import", "azureml", str(FIXTURES / "v1-pytorch"), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err
    assert "docker.baseImageRegistry.password" in captured.err
    assert f"wrote {out / 'env.toml'}" in captured.err
    for secret in SECRETS:
        assert secret not in captured.err + captured.out
    assert main(["validate", str(out)]) == 0
    # again: the folder is not empty
    assert main(["import", "azureml", str(FIXTURES / "v1-pytorch"), "-o", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["import", "azureml", str(FIXTURES / "v1-pytorch"), "-o", str(out), "--force"]) == 0


def test_cli_json(tmp_path, capsys):
    out = tmp_path / "pt"
    argv = ["import", "azureml", "azureml:AzureML-PyTorch-1.6-GPU:1", "-o", str(out), "--json"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "curated"
    assert data["name"] == "azureml-pytorch-1.6-gpu"
    assert data["files"] == ["env.toml"]
    assert data["folder"] == str(out)
    assert data["warnings"] == []


def test_cli_bad_input_is_a_clear_error(tmp_path, capsys):
    code = main(["import", "azureml", str(FIXTURES / "v1-malformed"), "-o", str(tmp_path / "x")])
    assert code == 3  # an invalid definition
    err = capsys.readouterr().err
    assert "azureml_environment.json:3:" in err
    assert "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_cli_unknown_curated_name(tmp_path, capsys):
    code = main(["import", "azureml", "AzureML-Nope", "-o", str(tmp_path / "x")])
    assert code == 2
    assert "known: AzureML-" in capsys.readouterr().err


def test_fixtures_are_not_changed_by_an_import(tmp_path):
    copy = tmp_path / "src"
    shutil.copytree(FIXTURES / "v1-pytorch", copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    import_source(str(copy)).write(tmp_path / "out")
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before


# --------------------------------------------------------------------------
# SDK v1 run configurations
# --------------------------------------------------------------------------

PROJECT = FIXTURES / "project"
RUNCONFIGS = PROJECT / ".azureml"


def _parsed_run(argv: list[str] | None) -> RunConfig:
    """``envbuild run``'s own parsing of ``argv`` (its click command, then run_config)."""
    from envbuild.cli.run import run
    from envbuild.cli.run_options import run_config

    assert argv is not None
    assert argv[:2] == ["envbuild", "run"]
    context = run.make_context("run", argv[2:])
    params = context.params
    return run_config(params["env"], params["script"], tuple(params["args"]), params)


def test_runconfig_becomes_an_environment_and_a_run(tmp_path, monkeypatch):
    result = from_runconfig(RUNCONFIGS / "train.runconfig", into=tmp_path / "train")
    doc = _written(result, tmp_path)
    assert doc["name"] == "mnist-train"
    assert doc["version"] == 4
    assert doc["python"] == {"version": "3.8", "source": "system"}  # conda file found in .azureml
    assert doc["pip"] == {"packages": ["numpy==1.24.4"]}
    assert doc["variables"] == {"MESSAGE": "Hello from the environment", **MPI_VARIABLES}
    folder = tmp_path / "env"
    for name in ("mnist", "labels"):
        (folder / "data" / name).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    argv = replace_folder(result, folder).command()
    config = _parsed_run(argv)
    assert config.script == "train.py"
    assert config.source_directory is not None
    assert config.source_directory.resolve() == PROJECT.resolve()
    assert config.azureml_context and config.snapshot
    assert {i.name: (Path(i.path).resolve(), i.mode) for i in config.inputs} == {
        "mnist": ((folder / "data" / "mnist").resolve(), "mount")
    }
    assert [(Path(m.source).resolve(), m.target, m.read_only) for m in config.mounts] == [
        ((folder / "data" / "labels").resolve(), "/mnt/labels", True)
    ]
    assert [o.name for o in config.outputs] == ["results"]
    assert dict(config.environment_variables) == {
        "MNIST_PATH": "/inputs/mnist",
        "AZUREML_DATAREFERENCE_labels": "/mnt/labels",
        "AZUREML_DATAREFERENCE_results": "/outputs/results",
        "RUN_MODE": "training",
        "EPOCHS": "10",
    }
    assert config.arguments == (
        "--data-folder",
        "${{inputs.mnist}}",
        "--labels",
        "/mnt/labels/y.csv",
        "--out",
        "${{outputs.results}}",
        "--epochs",
        "10",
        "--note",
        'it\'s "quoted" $HOME',
    )
    assert config.timeout == 3600
    assert isinstance(config.distribution, Mpi)
    assert (config.distribution.nodes, config.distribution.processes_per_node) == (2, 2)
    fields = _fields(result.warnings)
    assert {"data.mnist", "dataReferences.labels", "docker.arguments"} <= fields
    assert "dependencies[1].pip[0]" in fields  # azureml-defaults, in the conda file


def replace_folder(result: ImportResult, folder: Path) -> ImportResult:
    import dataclasses

    return dataclasses.replace(result, folder=folder)


def test_runconfig_placeholders_are_the_runs_own(tmp_path):
    from envbuild.run.planning import substitute

    result = from_runconfig(RUNCONFIGS / "train.runconfig", into=tmp_path / "env")
    for name in ("mnist", "labels"):
        (tmp_path / "env" / "data" / name).mkdir(parents=True)
    config = _parsed_run(result.command(tmp_path))
    paths = substitute(
        config.arguments,
        {i.name: f"/inputs/{i.name}" for i in config.inputs},
        {o.name: f"/outputs/{o.name}" for o in config.outputs},
    )
    assert paths[1] == "/inputs/mnist"
    assert paths[5] == "/outputs/results"


def test_runconfig_script_runs_from_its_folder(tmp_path):
    result = from_runconfig(RUNCONFIGS / "train.runconfig", into=tmp_path / "env")
    folder = result.write(tmp_path / "env")
    script = folder / "run.sh"
    assert script.stat().st_mode & 0o111
    text = script.read_text()
    assert text.startswith("#!/bin/sh\n")
    lines = text.splitlines()
    assert lines[-1].startswith("exec envbuild run --source-dir . ")
    assert lines[-1].endswith(' "$@"')
    words = shlex.split(lines[-2].removeprefix("cd "))
    assert (folder / words[0]).resolve() == PROJECT.resolve()
    argv = shlex.split(lines[-1].removeprefix("exec ").removesuffix(' "$@"'))
    assert "'it'\"'\"'s \"quoted\" $HOME'" in lines[-1]  # one word, not expanded
    assert argv[-1] == 'it\'s "quoted" $HOME'
    assert (PROJECT / argv[argv.index("train.py") - 1]).resolve() == folder.resolve()


def test_runconfig_with_a_curated_environment_and_pytorch(tmp_path):
    result = from_runconfig(RUNCONFIGS / "pytorch.runconfig", into=tmp_path / "pt")
    load(result.write(tmp_path / "pt"))
    assert result.extends is not None and result.extends.name == "pytorch-1.6-gpu"
    config = _parsed_run(result.command(tmp_path))
    assert isinstance(config.distribution, PyTorch)
    assert (config.distribution.nodes, config.distribution.processes_per_node) == (2, 2)
    assert config.distribution.backend == "nccl"
    # the curated environment's torch 1.6 has no torchrun
    assert config.distribution.launcher == "launch"


def test_runconfig_tensorflow_parameter_server(tmp_path):
    result = from_runconfig(RUNCONFIGS / "tf.runconfig", into=tmp_path / "tf")
    load(result.write(tmp_path / "tf"))
    config = _parsed_run(result.command(tmp_path))
    assert isinstance(config.distribution, TensorFlow)
    assert (config.distribution.workers, config.distribution.parameter_servers) == (2, 1)


def test_runconfig_wrong_types_name_each_field():
    with pytest.raises(DefinitionError) as caught:
        from_runconfig(RUNCONFIGS / "broken.runconfig")
    assert {p.key for p in caught.value.problems} == {
        "script",
        "arguments",
        "nodeCount",
        "mpi.processCountPerNode",
        "maxRunDurationSeconds",
    }


def test_runconfig_defaults_say_nothing(tmp_path):
    runconfig = tmp_path / "plain.runconfig"
    runconfig.write_text(
        "script: train.py\ncommunicator: None\nnodeCount: 1\nmpi: {processCountPerNode: 1}\n"
        "tensorflow: {workerCount: 1, parameterServerCount: 1}\n"
        "spark: {configuration: {spark.app.name: Azure ML Experiment, spark.yarn.maxAppAttempts: 1}}\n"
        "hdi: {yarnDeployMode: Cluster}\n"
        "amlcompute: {vmSize: STANDARD_D2_V2, retainCluster: false}\n"
        "environment:\n  docker: {baseImage: debian:bookworm-slim}\n"
    )
    result = from_runconfig(runconfig, source_dir=tmp_path, into=tmp_path / "plain")
    assert result.warnings == ()
    assert "amlcompute" in _fields(result.notes)
    assert result.command(tmp_path) == [
        "envbuild",
        "run",
        "--source-dir",
        ".",
        "--azureml-context",
        "plain",
        "train.py",
    ]


def test_runconfig_named_workspace_environment_is_a_warning(tmp_path):
    runconfig = tmp_path / "x.runconfig"
    runconfig.write_text(
        "script: train.py\nenvironment: my-registered-env\n"
        "data:\n  raw:\n    dataLocation:\n"
        "      uri: https://acct.blob.core.windows.net/c/raw?sv=2020&sig=SASSECRET\n"
        "    mechanism: download\n"
    )
    result = from_runconfig(runconfig, into=tmp_path / "x")
    assert "environment" in _fields(result.warnings)
    assert result.document["base"] == {"image": "ubuntu:20.04"}  # Azure's default
    shown = "".join(f.render() for f in (*result.warnings, *result.notes))
    assert "https://acct.blob.core.windows.net/c/raw" in shown
    assert "SASSECRET" not in shown + json.dumps(result.to_json())
    config = _parsed_run(_with_placeholders(result, tmp_path / "x", "raw"))
    assert [(i.name, i.mode) for i in config.inputs] == [("raw", "download")]


def _with_placeholders(result: ImportResult, folder: Path, *names: str) -> list[str]:
    for name in names:
        (folder / "data" / name).mkdir(parents=True, exist_ok=True)
    command = result.command(folder.parent)
    assert command is not None
    return command


def test_cli_runconfig_prints_the_command(tmp_path, capsys):
    out = tmp_path / "train"
    assert main(["import", "azureml", str(RUNCONFIGS / "train.runconfig"), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    line = captured.out.strip()
    assert line.startswith("envbuild run --source-dir ")
    assert "--distribution mpi --nodes 2 --procs-per-node 2" in line
    assert (out / "run.sh").is_file()
    assert (
        main(
            [
                "import",
                "azureml",
                str(RUNCONFIGS / "train.runconfig"),
                "-o",
                str(tmp_path / "j"),
                "--json",
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["files"] == ["env.toml", "run.sh"]
    assert data["command"][:2] == ["envbuild", "run"]
    assert shlex.split(data["command_line"]) == data["command"]


# --------------------------------------------------------------------------
# Any input: a clear error or a definition that validates, never a traceback
# --------------------------------------------------------------------------

_ANY_TEXT = st.text(max_size=30)
_JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**20), _ANY_TEXT)
_JSON = st.recursive(
    _JSON_LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(_ANY_TEXT, inner, max_size=4)
    ),
    max_leaves=12,
)
_PIP_LINE = st.one_of(
    _ANY_TEXT,
    st.sampled_from(
        [
            "numpy==1.26.4",
            "--index-url https://u:p@example.com/simple",
            "--extra-index-url https://example.com/simple",
            "azureml-core",
            "pkg @ https://example.com/pkg.whl",
        ]
    ),
)
_ENVIRONMENT = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(_ANY_TEXT, _JSON),
        "version": _JSON_LEAF,
        "environmentVariables": st.one_of(st.dictionaries(_ANY_TEXT, _JSON_LEAF), _JSON),
        "docker": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "baseImage": st.one_of(
                        _ANY_TEXT,
                        st.sampled_from(
                            [
                                "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-ubuntu22.04",
                                "python:3.11-slim",
                            ]
                        ),
                    ),
                    "shmSize": _JSON_LEAF,
                    "arguments": st.one_of(st.lists(_ANY_TEXT, max_size=3), _JSON),
                    "baseImageRegistry": _JSON,
                },
            ),
            _JSON,
        ),
        "python": st.fixed_dictionaries(
            {},
            optional={
                "userManagedDependencies": _JSON_LEAF,
                "condaDependencies": st.one_of(
                    st.fixed_dictionaries(
                        {
                            "dependencies": st.lists(
                                st.one_of(
                                    st.sampled_from(["python=3.8", "python=3.11.4", "pip"]),
                                    _ANY_TEXT,
                                    st.fixed_dictionaries({"pip": st.lists(_PIP_LINE, max_size=4)}),
                                ),
                                max_size=5,
                            )
                        },
                        optional={"channels": st.lists(_ANY_TEXT, max_size=2)},
                    ),
                    _JSON,
                ),
            },
        ),
        "spark": _JSON,
        "r": _JSON,
    },
)


@settings(max_examples=150, deadline=None)
@given(data=_ENVIRONMENT)
def test_any_environment_is_a_clear_error_or_a_valid_definition(data, tmp_path_factory):
    try:
        result = from_v1_definition(data, source="fuzz.json")
    except DefinitionError as exc:
        assert all(p.file == "fuzz.json" for p in exc.problems)
        return
    folder = result.write(tmp_path_factory.mktemp("fuzz") / "env")
    load(folder)
    text = (folder / "env.toml").read_text()
    assert "u:p@" not in text
