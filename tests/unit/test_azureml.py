"""envbuild.azureml: Azure ML's API translated to envbuild definitions and run configurations.

Unit tests: no engine (the run tests use the fake run engine). The real
engine runs the seed's samples in tests/integration/test_azureml.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from envbuild.azureml import (
    CondaDependencies,
    Dataset,
    Datastore,
    Environment,
    Experiment,
    MpiConfiguration,
    PyTorchConfiguration,
    Run,
    ScriptRunConfig,
    TensorflowConfiguration,
    Workspace,
)
from envbuild.azureml._common import forget_notices
from envbuild.azureml.environment import resolve_environment
from envbuild.definition.model import load
from envbuild.engine.protocols import ContainerSpec
from envbuild.errors import (
    RunConfigError,
    RunFailed,
    UnsupportedAzureMLAttribute,
    UnsupportedAzureMLFeature,
    UsageError,
)
from envbuild.run.config import Input, Mount, Mpi, PyTorch, TensorFlow
from envbuild.settings import load_settings
from tests.run_fakes import FakeRunEngine, out

ROOT = Path(__file__).resolve().parents[2]
CURATED = ROOT / "curated"


@pytest.fixture(autouse=True)
def _fresh_notices() -> None:
    forget_notices()


@pytest.fixture
def ws() -> Workspace:
    return Workspace.from_config()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "train.py").write_text("print('hi')\n")
    return folder


# --------------------------------------------------------------------------
# Workspace and notices
# --------------------------------------------------------------------------


def test_the_workspace_is_the_local_engine_said_once(
    capsys: pytest.CaptureFixture[str], source: Path
) -> None:
    from envbuild.azureml import ComputeTarget

    first = Workspace.from_config()
    Workspace(subscription_id="sub", resource_group="rg", workspace_name="ws1")
    ComputeTarget(first, "gpu-cluster")
    ScriptRunConfig(
        str(source), script="train.py", compute_target="cpu", environment=Environment("e")
    ).to_envbuild(first)
    err = capsys.readouterr().err
    assert err.count("envbuild.azureml: the Azure ML workspace and its compute targets") == 1
    assert first.name == "local"


def test_from_config_reads_the_workspace_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".azureml").mkdir()
    (tmp_path / ".azureml" / "config.json").write_text('{"workspace_name": "team-ws"}')
    monkeypatch.chdir(tmp_path)
    assert Workspace.from_config().name == "team-ws"


def test_unknown_azure_attributes_are_named_errors(ws: Workspace) -> None:
    with pytest.raises(UnsupportedAzureMLAttribute, match=r"Workspace\.private_endpoints") as e:
        _ = ws.private_endpoints
    assert "docs/migrating-from-azureml.md" in (e.value.hint or "")
    assert not hasattr(ws, "private_endpoints")  # an AttributeError too
    with pytest.raises(UnsupportedAzureMLFeature, match=r"Workspace\.create"):
        Workspace.create("x")


def test_importing_loads_neither_docker_nor_click() -> None:
    code = (
        "import sys, importlib, typing\n"
        "before = set(sys.modules)\n"
        "from envbuild.azureml import Workspace, Environment, ScriptRunConfig, Experiment, "
        "Dataset, Datastore, MpiConfiguration, PyTorchConfiguration, TensorflowConfiguration, "
        "CondaDependencies, Run\n"
        "from envbuild.azureml.core.runconfig import MpiConfiguration, DEFAULT_GPU_IMAGE\n"
        "from envbuild.azureml.core.conda_dependencies import CondaDependencies\n"
        "from envbuild.azureml.data.data_reference import DataReference\n"
        "loaded = set(sys.modules) - before\n"
        "print(sorted(m for m in loaded if m.split('.')[0] in ('docker', 'click', 'jinja2')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out == "[]\n"


def test_the_mirrored_modules_hold_the_same_names() -> None:
    import envbuild.azureml as top
    from envbuild.azureml.core import Environment as CoreEnvironment
    from envbuild.azureml.core.conda_dependencies import CondaDependencies as CoreDeps
    from envbuild.azureml.core.runconfig import MpiConfiguration as CoreMpi

    assert CoreEnvironment is Environment and CoreDeps is CondaDependencies
    assert CoreMpi is MpiConfiguration
    for name in top.__all__:
        assert getattr(top, name) is not None
    with pytest.raises(AttributeError):
        _ = top.Estimator


# --------------------------------------------------------------------------
# Environment -> definition
# --------------------------------------------------------------------------


def test_an_environment_with_nothing_added_is_the_curated_default(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    target = resolve_environment(Environment("myenv"), None, ws)
    assert target.folder == CURATED / "python-3.11"
    err = capsys.readouterr().err
    assert "no Python version given: Python 3.11" in err
    assert "Azure ML's base images are not used" in err
    resolve_environment(Environment("other"), None, ws)
    assert capsys.readouterr().err == ""  # said once


def test_conda_dependencies_become_a_generated_definition(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    env = Environment("My Env")
    env.python.conda_dependencies = CondaDependencies.create(
        pip_packages=["azureml-defaults", "azureml-core[notebooks]==1.48", "six==1.16.0"],
        python_version="3.8.13",
    )
    target = resolve_environment(env, None, ws)
    assert target.folder is not None and target.env_toml is not None
    assert target.folder.parent == load_settings().home / "azureml" / "environments"
    text = (target.folder / "env.toml").read_text()
    assert text == target.env_toml
    assert 'extends = "' in text and "curated/python-3.8" in text
    definition = load(target.folder)
    assert definition.name == "azureml-my-env"
    assert definition.python.version == "3.8"
    assert definition.pip.packages == ("six==1.16.0",)  # azureml-defaults left out
    assert "not installed: azureml-defaults, azureml-core[notebooks]==1.48" in (
        capsys.readouterr().err
    )
    # Content-addressed: the same environment, the same folder; another, another.
    assert resolve_environment(env, None, ws).folder == target.folder
    env.python.conda_dependencies.add_pip_package("packaging==24.1")
    assert resolve_environment(env, None, ws).folder != target.folder


def test_variables_are_the_runs_never_the_images(ws: Workspace, source: Path) -> None:
    env = Environment("myenv")
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=["six"])
    env.environment_variables = {"MESSAGE": "Hello"}
    config = ScriptRunConfig(str(source), script="train.py", environment=env).to_envbuild(ws)
    assert dict(config.environment_variables) == {"MESSAGE": "Hello"}
    assert "MESSAGE" not in Path(config.environment, "env.toml").read_text()


def test_conda_packages_need_conda_python(ws: Workspace) -> None:
    env = Environment("condaenv")
    deps = CondaDependencies.create(conda_packages=["python=3.10", "mkl=2020.2"])
    deps.add_channel("conda-forge")
    env.python.conda_dependencies = deps
    target = resolve_environment(env, None, ws)
    assert target.folder is not None
    definition = load(target.folder)
    assert (definition.python.source, definition.python.version) == ("conda", "3.10")
    assert definition.conda.packages == ("mkl=2020.2",)
    assert definition.conda.channels == ("conda-forge",)


def test_a_python_without_a_curated_environment_comes_from_uv(ws: Workspace) -> None:
    env = Environment("py310")
    env.python.conda_dependencies = CondaDependencies.create(python_version="3.10")
    target = resolve_environment(env, None, ws)
    assert target.folder is not None
    definition = load(target.folder)
    assert (definition.python.source, definition.python.version) == ("uv", "3.10")


def test_curated_names_give_the_curated_folder(ws: Workspace) -> None:
    env = Environment.get(workspace=ws, name="AzureML-PyTorch-1.6-GPU")
    assert resolve_environment(env, None, ws).folder == CURATED / "pytorch-1.6-gpu"
    assert env.python.conda_dependencies is not None
    assert "torch==1.6.0" in list(env.python.conda_dependencies.pip_packages)
    with pytest.raises(UsageError, match=r"AzureML-PyTorch-1\.7") as caught:
        Environment.get(workspace=ws, name="AzureML-PyTorch-1.7-GPU")
    assert "did you mean AzureML-PyTorch-1.6-GPU" in (caught.value.hint or "")


def test_a_curated_environment_with_a_package_added_extends_it(ws: Workspace) -> None:
    env = Environment.get(workspace=ws, name="AzureML-PyTorch-1.6-GPU").clone("torch-plus")
    assert env.python.conda_dependencies is not None
    env.python.conda_dependencies.add_pip_package("tqdm==4.66.5")
    target = resolve_environment(env, None, ws)
    assert target.folder is not None
    text = (target.folder / "env.toml").read_text()
    assert 'packages = ["tqdm==4.66.5"]' in text and "pytorch-1.6-gpu" in text
    assert load(target.folder).pip.packages[-1] == "tqdm==4.66.5"
    env.python.conda_dependencies.remove_pip_package("torch")
    with pytest.raises(UnsupportedAzureMLFeature, match="curated environment"):
        resolve_environment(env, None, ws)


def test_registered_environments_are_found_by_name(ws: Workspace) -> None:
    env = Environment("mine")
    env.environment_variables = {"A": "1"}
    env.register(workspace=ws)
    found = Environment.get(ws, "mine")
    assert found.environment_variables == {"A": "1"} and found is not env


def test_pip_requirements(ws: Workspace, tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        "# comment\n--index-url https://pypi.example.org/simple\nsix==1.16.0  # pinned\n"
    )
    target = resolve_environment(Environment.from_pip_requirements("req", requirements), None, ws)
    assert target.folder is not None
    definition = load(target.folder)
    assert definition.pip.packages == ("six==1.16.0",)
    assert definition.pip.index_url == "https://pypi.example.org/simple"
    requirements.write_text("six\n-r other.txt\n")
    with pytest.raises(UnsupportedAzureMLFeature, match=r"requirements.txt:2: .* -r"):
        Environment.from_pip_requirements("req", requirements)


def test_conda_specification(
    ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conda_file = tmp_path / "environment.yml"
    conda_file.write_text(
        "name: project_environment\n"
        "channels:\n  - conda-forge\n"
        "dependencies:\n"
        "  - python=3.8\n"
        "  - pip\n"
        "  - pip:\n"
        "    - azureml-defaults\n"
        "    - six==1.16.0\n"
        "variables:\n  MODE: fast\n"
    )
    env = Environment.from_conda_specification(name="condafile", file_path=str(conda_file))
    assert env.environment_variables == {"MODE": "fast"}
    target = resolve_environment(env, None, ws)
    assert target.folder is not None
    definition = load(target.folder)
    assert definition.python.version == "3.8" and definition.pip.packages == ("six==1.16.0",)
    assert "azureml-defaults" in capsys.readouterr().err  # said, not dropped silently
    conda_file.write_text("dependencies: [python=3.8\n")
    from envbuild.errors import DefinitionError

    with pytest.raises(DefinitionError, match=r"environment\.yml"):
        Environment.from_conda_specification("bad", str(conda_file))


def test_mpi_jobs_on_the_default_image_get_open_mpi(
    ws: Workspace, source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def environment(env: Environment) -> str:
        src = ScriptRunConfig(
            str(source),
            script="train.py",
            environment=env,
            distributed_job_config=MpiConfiguration(node_count=2, process_count_per_node=2),
        )
        return str(src.to_envbuild(ws).environment)

    assert environment(Environment("mpi")) == str(CURATED / "mpi-4.1-cpu")
    assert "which carried Open MPI" in capsys.readouterr().err
    py38 = Environment("mpi38")
    py38.python.conda_dependencies = CondaDependencies.create(python_version="3.8")
    definition = load(environment(py38))
    assert "openmpi-bin" in definition.system_packages and definition.python.version == "3.8"
    assert dict(definition.variables)["OMPI_MCA_btl_vader_single_copy_mechanism"] == "none"


def test_save_to_directory_is_what_envbuild_import_azureml_reads(
    tmp_path: Path, ws: Workspace
) -> None:
    from envbuild.importers.azureml import from_v1_directory

    env = Environment("saved")
    deps = CondaDependencies.create(
        pip_packages=["six==1.16.0"], python_version="3.8", pip_indexurl="https://pypi.org/simple"
    )
    env.python.conda_dependencies = deps
    env.environment_variables = {"MESSAGE": "Hello"}
    env.save_to_directory(str(tmp_path / "saved"))
    with pytest.raises(UsageError, match="holds a saved environment") as caught:
        env.save_to_directory(str(tmp_path / "saved"))
    assert "overwrite=True" in (caught.value.hint or "")
    imported = from_v1_directory(tmp_path / "saved")
    definition = load(imported.write(tmp_path / "env"))
    assert definition.name == "saved" and definition.python.version == "3.8"
    assert definition.pip.packages == ("six==1.16.0",)
    assert definition.pip.index_url == "https://pypi.org/simple"
    assert dict(definition.variables)["MESSAGE"] == "Hello"
    dockerfile = Environment.from_dockerfile("dock", "FROM debian:bookworm-slim\n")
    dockerfile.save_to_directory(str(tmp_path / "dock"))
    definition = load(from_v1_directory(tmp_path / "dock").write(tmp_path / "dock-env"))
    assert definition.base.dockerfile_text is not None
    assert definition.base.dockerfile_text.startswith("FROM debian:bookworm-slim")


def test_a_dockerfile_becomes_the_base(ws: Workspace, tmp_path: Path) -> None:
    dockerfile = "FROM debian:bookworm-slim\nRUN apt-get update\n"
    env = Environment.from_dockerfile("dock", dockerfile)
    target = resolve_environment(env, None, ws)
    assert target.folder is not None
    assert (target.folder / "Dockerfile").read_text() == dockerfile
    assert load(target.folder).base.dockerfile_text == dockerfile
    (tmp_path / "Dockerfile").write_text(dockerfile)
    from_file = Environment.from_dockerfile("dock", str(tmp_path / "Dockerfile"))
    assert resolve_environment(from_file, None, ws).folder == target.folder


def test_user_managed_dependencies(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    env = Environment.from_docker_image("own", "registry.example.com/team/train:3")
    env.python.user_managed_dependencies = True
    assert resolve_environment(env, None, ws).run_environment == (
        "image:registry.example.com/team/train:3"
    )
    default = Environment("azure-default")
    default.python.user_managed_dependencies = True
    assert resolve_environment(default, None, ws).folder == CURATED / "python-3.11"
    assert "user_managed_dependencies = True on Azure ML's default image" in capsys.readouterr().err
    dockerfile = Environment.from_dockerfile("d", "FROM x\n")
    dockerfile.python.user_managed_dependencies = True
    with pytest.raises(UnsupportedAzureMLFeature, match="Dockerfile"):
        resolve_environment(dockerfile, None, ws)


@pytest.mark.parametrize(
    ("change", "feature"),
    [
        (lambda e: setattr(e.docker, "arguments", ["--build-arg", "X=1"]), "docker.arguments"),
        (lambda e: setattr(e, "r", object()), "R environments"),
        (lambda e: setattr(e, "spark", object()), "spark"),
        (lambda e: setattr(e.docker, "enabled", False), "docker.enabled"),
    ],
)
def test_settings_without_local_meaning_are_refused(ws: Workspace, change, feature) -> None:
    env = Environment("x")
    change(env)
    with pytest.raises(UnsupportedAzureMLFeature, match=feature) as caught:
        resolve_environment(env, None, ws)
    assert caught.value.hint  # the alternative


def test_a_bad_package_is_a_definition_error_before_any_run(ws: Workspace) -> None:
    from envbuild.errors import DefinitionError

    env = Environment("bad")
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=["six; rm -rf /"])
    with pytest.raises(DefinitionError, match=r"pip\.packages"):
        resolve_environment(env, None, ws)


# --------------------------------------------------------------------------
# ScriptRunConfig -> RunConfig
# --------------------------------------------------------------------------


def test_script_arguments_and_compute_target(
    ws: Workspace, source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = ScriptRunConfig(
        source_directory=str(source),
        script="train.py",
        arguments=["--lr", 0.01, "--epochs", 3, "--flag"],
        compute_target="gpu-cluster",
        environment=Environment("e"),
        max_run_duration_seconds=600,
    )
    assert src.run_config.target == "gpu-cluster"
    config = src.to_envbuild(ws)
    assert config.script == "train.py" and config.source_directory == source
    assert config.arguments == ("--lr", "0.01", "--epochs", "3", "--flag")
    assert config.timeout == 600.0 and config.distribution is None
    assert "runs go to the local Docker engine" not in capsys.readouterr().err  # said: the ws


def test_a_compute_target_with_gpus(ws: Workspace, source: Path) -> None:
    from envbuild.azureml import ComputeTarget

    plain = ScriptRunConfig(
        str(source), script="train.py", compute_target="gpu-cluster", environment=Environment("e")
    )
    assert plain.to_envbuild(ws).gpus is None  # hidden unless asked
    gpu_target = ComputeTarget(ws, "gpu-cluster", gpus="all")
    src = ScriptRunConfig(
        str(source), script="train.py", compute_target=gpu_target, environment=Environment("e")
    )
    assert src.to_envbuild(ws).gpus == "all"


def test_run_config_changes_reach_the_run(ws: Workspace, source: Path) -> None:
    src = ScriptRunConfig(str(source), script="train.py", environment=Environment("e"))
    src.run_config.environment_variables["B"] = "2"
    src.run_config.docker.shm_size = "4g"
    src.run_config.arguments = ["--x", "1"]
    config = src.to_envbuild(ws)
    assert config.environment_variables["B"] == "2"
    assert config.shm_size == "4g" and config.arguments == ("--x", "1")


def test_datasets_as_mount_and_download(ws: Workspace, source: Path, tmp_path: Path) -> None:
    data = tmp_path / "mnist"
    data.mkdir()
    (data / "a.txt").write_text("1")
    dataset = Dataset.File.from_files(path=str(data))
    assert dataset.to_path() == ["/a.txt"]
    src = ScriptRunConfig(
        str(source),
        script="train.py",
        arguments=[
            "--data-folder",
            dataset.as_mount(),
            "--copy",
            dataset.as_named_input("mnist").as_download(),
        ],
        environment=Environment("e"),
    )
    config = src.to_envbuild(ws)
    assert config.arguments == (
        "--data-folder",
        "${{inputs.dataset}}",
        "--copy",
        "${{inputs.mnist}}",
    )
    assert config.inputs == (
        Input("dataset", data.resolve(), "mount"),
        Input("mnist", data.resolve(), "download"),
    )


def test_a_dataset_mounted_at_a_path_on_compute(
    ws: Workspace, source: Path, tmp_path: Path
) -> None:
    dataset = Dataset.File.from_files(str(tmp_path))
    src = ScriptRunConfig(
        str(source),
        script="train.py",
        arguments=["--data", dataset.as_mount(path_on_compute="/mnt/data")],
        environment=Environment("e"),
    )
    config = src.to_envbuild(ws)
    assert config.arguments == ("--data", "/mnt/data")
    assert config.mounts == (Mount(tmp_path.resolve(), "/mnt/data", read_only=True),)
    src.run_config.arguments = ["--data", dataset.as_download(path_on_compute="/mnt/data")]
    with pytest.raises(UnsupportedAzureMLFeature, match="path_on_compute"):
        src.to_envbuild(ws)


def test_dataset_sources_that_are_not_one_local_folder(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedAzureMLFeature, match="URL"):
        Dataset.File.from_files("https://example.org/mnist/")
    with pytest.raises(UnsupportedAzureMLFeature, match="wildcard"):
        Dataset.File.from_files(str(tmp_path / "*.gz"))
    with pytest.raises(UsageError, match="does not exist"):
        Dataset.File.from_files(str(tmp_path / "missing"))
    with pytest.raises(UnsupportedAzureMLFeature, match="Tabular"):
        Dataset.Tabular.from_delimited_files("x.csv")


def test_datastore_paths_as_data_references(ws: Workspace, source: Path, tmp_path: Path) -> None:
    store = ws.get_default_datastore()
    assert store.root == load_settings().home / "azureml" / "datastores" / "workspaceblobstore"
    upload = tmp_path / "up"
    (upload / "sub").mkdir(parents=True)
    (upload / "sub" / "x.txt").write_text("x")
    store.upload(src_dir=str(upload), target_path="foo")
    assert (store.root / "foo" / "sub" / "x.txt").read_text() == "x"
    ref = store.path("./foo").as_mount()
    assert str(ref) == "$AZUREML_DATAREFERENCE_workspaceblobstore_foo"
    src = ScriptRunConfig(
        str(source), script="train.py", arguments=["--data", ref], environment=Environment("e")
    )
    config = src.to_envbuild(ws)
    assert config.arguments == ("--data", "${{inputs.workspaceblobstore_foo}}")
    assert config.inputs == (Input("workspaceblobstore_foo", store.root / "foo", "mount"),)
    assert config.environment_variables["AZUREML_DATAREFERENCE_workspaceblobstore_foo"] == (
        "/inputs/workspaceblobstore_foo"
    )
    # The legacy way: run_config.data_references and the reference's string in the arguments.
    legacy = ScriptRunConfig(
        str(source),
        script="train.py",
        arguments=["--data", "$AZUREML_DATAREFERENCE_data"],
        environment=Environment("e"),
    )
    download = store.path("foo", data_reference_name="data").as_download()
    legacy.run_config.data_references = {"data": download.to_config()}
    config = legacy.to_envbuild(ws)
    assert config.arguments == ("--data", "${{inputs.data}}")
    assert config.inputs == (Input("data", store.root / "foo", "download"),)
    with pytest.raises(UsageError, match="inside the datastore"):
        store.path("../etc")


def test_dataset_registration(ws: Workspace, tmp_path: Path) -> None:
    registered = Dataset.File.from_files(str(tmp_path)).register(ws, "mnist")
    assert Dataset.get_by_name(ws, "mnist").path == registered.path == tmp_path.resolve()
    with pytest.raises(UsageError, match=r"no dataset .cifar.") as caught:
        Dataset.get_by_name(ws, "cifar")
    assert "register it first" in (caught.value.hint or "")
    assert Datastore.get(ws, "workspaceblobstore").name == "workspaceblobstore"


def test_distributed_configurations(ws: Workspace, source: Path) -> None:
    def distribution(config: object, env: Environment | None = None) -> object:
        src = ScriptRunConfig(
            str(source),
            script="train.py",
            environment=env or Environment("e"),
            distributed_job_config=config,  # type: ignore[arg-type]
        )
        return src.to_envbuild(ws).distribution

    assert distribution(MpiConfiguration(node_count=2, process_count_per_node=2)) == Mpi(2, 2)
    torch_env = Environment.get(workspace=ws, name="AzureML-PyTorch-1.6-GPU")
    assert distribution(
        PyTorchConfiguration(communication_backend="Nccl", process_count=4, node_count=2),
        torch_env,
    ) == PyTorch(2, 2, backend="nccl", launcher="launch")  # torch 1.6 has no torchrun
    assert distribution(PyTorchConfiguration(communication_backend="Gloo", node_count=2)) == (
        PyTorch(2, 1, backend="gloo", launcher="torchrun")
    )
    assert distribution(TensorflowConfiguration(worker_count=2, parameter_server_count=1)) == (
        TensorFlow(2, 1)
    )
    with pytest.raises(UsageError, match="multiple of node_count"):
        distribution(PyTorchConfiguration(process_count=3, node_count=2))


def test_the_run_configuration_keeps_the_distributed_settings(source: Path) -> None:
    src = ScriptRunConfig(
        str(source),
        script="train.py",
        distributed_job_config=MpiConfiguration(node_count=2, process_count_per_node=2),
    )
    assert src.run_config.node_count == 2 and src.run_config.communicator == "Mpi"
    assert src.run_config.mpi is not None and src.run_config.mpi.process_count_per_node == 2


# --------------------------------------------------------------------------
# Experiment.submit -> a Run (fake engine)
# --------------------------------------------------------------------------


def _image_env(ref: str = "example:1") -> Environment:
    env = Environment.from_docker_image("img", ref)
    env.python.user_managed_dependencies = True
    return env


def test_submit_returns_a_run_that_completes(
    source: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    engine = FakeRunEngine(frames=[out("hello from the script")]).with_image()
    ws = Workspace(engine=engine)
    src = ScriptRunConfig(str(source), script="train.py", environment=_image_env())
    run = Experiment(workspace=ws, name="exp").submit(src, tags={"team": "a"})
    assert isinstance(run, Run) and len(run.id) == 12
    details = run.wait_for_completion(show_output=True)
    assert "hello from the script" in capfd.readouterr().out
    assert run.get_status() == "Completed" == details["status"]
    assert details["runId"] == run.id and details["properties"] == {"team": "a"}
    assert details["envbuild"]["exitCode"] == 0
    assert details["runDefinition"]["script"] == "train.py"
    # The run's resources carry the id the Run answered from the start.
    labels = [spec.labels for spec in engine.specs.values()]
    assert labels and all(label["io.envbuild.run"] == run.id for label in labels)
    from envbuild.run.history import History

    assert History.at(load_settings()).get(run.id).exit_code == 0


def _script_that_logs(spec: ContainerSpec) -> list[tuple[int, bytes]]:
    """What a script logging two losses, a tag and a model file leaves (the fake engine asks
    twice: at attach and at start)."""
    env = dict(spec.env)
    metrics = env["ENVBUILD_METRICS_FILE"]
    lines = [
        {"v": 1, "kind": "log", "name": "loss", "value": 0.5, "time": 1.0, "rank": "0"},
        {"v": 1, "kind": "log", "name": "loss", "value": 0.25, "time": 2.0, "rank": "0"},
        {"v": 1, "kind": "tag", "name": "model", "value": "cnn", "time": 3.0, "rank": "0"},
    ]
    for mount in spec.mounts:
        if metrics.startswith(mount.target + "/"):
            host = Path(mount.source) / metrics[len(mount.target) + 1 :]
            host.write_text("".join(json.dumps(line) + "\n" for line in lines))
        if mount.target == spec.workdir:  # the snapshot, writable
            (Path(mount.source) / "outputs").mkdir(exist_ok=True)
            (Path(mount.source) / "outputs" / "model.txt").write_text("weights")
            (Path(mount.source) / "scratch.txt").write_text("not kept")
    return [out(f"experiment {env.get('ENVBUILD_EXPERIMENT')}")]


def test_metrics_files_and_tags_of_a_run(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeRunEngine(answer=_script_that_logs).with_image()
    ws = Workspace(engine=engine)
    src = ScriptRunConfig(str(source), script="train.py", environment=_image_env())
    assert src.to_envbuild(ws).azureml_context  # Azure ML's conventions for every run
    run = Experiment(ws, "metrics-exp").submit(src, tags={"team": "a"})
    with pytest.raises(UsageError, match="has not ended"):
        run.get_file_names()
    run.wait_for_completion()
    assert run.get_metrics() == {"loss": [0.5, 0.25]}
    assert run.get_metrics("loss") == {"loss": [0.5, 0.25]} and run.get_metrics("x") == {}
    assert run.get_tags() == {"team": "a", "model": "cnn"}
    assert run.get_file_names() == ["outputs/model.txt"]
    monkeypatch.chdir(tmp_path)
    run.download_file("outputs/model.txt")
    assert (tmp_path / "model.txt").read_text() == "weights"
    run.download_file("outputs/model.txt", output_file_path=str(tmp_path / "m" / "w.txt"))
    assert (tmp_path / "m" / "w.txt").read_text() == "weights"
    run.download_files(prefix="outputs", output_directory=str(tmp_path / "all"))
    assert (tmp_path / "all" / "outputs" / "model.txt").read_text() == "weights"
    run.download_files(prefix="outputs/", output_directory="flat", append_prefix=False)
    assert (tmp_path / "flat" / "model.txt").read_text() == "weights"
    assert source.joinpath("outputs").exists() is False  # the user's folder never changes
    # The same run, read back from the history by id.
    again = Run.get(ws, run.id)
    assert again.get_status() == "Completed" and again.get_metrics() == run.get_metrics()
    assert again.get_file_names() == ["outputs/model.txt"]
    assert again.get_details()["envbuild"]["exitCode"] == 0
    assert again.wait_for_completion()["runId"] == run.id


def test_the_experiment_name_reaches_the_script(
    source: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    engine = FakeRunEngine(answer=_script_that_logs).with_image()
    run = Experiment(Workspace(engine=engine), "named").submit(
        ScriptRunConfig(str(source), script="train.py", environment=_image_env())
    )
    run.wait_for_completion(show_output=True)
    assert "experiment named" in capfd.readouterr().out
    context = ROOT / "builder/envbuild/run/azureml_context/azureml/core/run.py"
    from envbuild.azureml.experiment import EXPERIMENT_VARIABLE

    assert f'EXPERIMENT_VARIABLE = "{EXPERIMENT_VARIABLE}"' in context.read_text()


def test_a_failing_script_raises_on_wait(source: Path) -> None:
    engine = FakeRunEngine(exit_code=3).with_image()
    ws = Workspace(engine=engine)
    src = ScriptRunConfig(str(source), script="train.py", environment=_image_env())
    run = Experiment(ws, "exp").submit(src)
    with pytest.raises(RunFailed, match="exited with code 3") as caught:
        run.wait_for_completion()
    assert caught.value.script_exit_code == 3 and caught.value.run_id == run.id
    assert run.wait_for_completion(raise_on_error=False)["status"] == "Failed"


def test_a_bad_configuration_raises_at_submit(ws: Workspace, source: Path) -> None:
    src = ScriptRunConfig(str(source), script="missing.py", environment=_image_env())
    from envbuild.errors import ScriptNotFoundError

    with pytest.raises(ScriptNotFoundError):
        Experiment(ws, "exp").submit(src)
    with pytest.raises(UnsupportedAzureMLFeature, match=r"Experiment\.submit"):
        Experiment(ws, "exp").submit(object())


def test_a_distributed_run_runs_one_container_per_node(source: Path) -> None:
    from tests.unit.test_run_multi import NodeEngine

    engine = NodeEngine().with_image()
    ws = Workspace(engine=engine)
    src = ScriptRunConfig(
        str(source),
        script="train.py",
        environment=_image_env(),
        distributed_job_config=TensorflowConfiguration(worker_count=2, parameter_server_count=1),
    )
    run = Experiment(ws, "exp").submit(src)
    details = run.wait_for_completion()
    assert details["runDefinition"]["nodeCount"] == 3
    specs = list(engine.specs.values())
    assert len(specs) == 3  # never a single process
    assert all(spec.labels["io.envbuild.run"] == run.id for spec in specs)
    assert all("TF_CONFIG" in dict(spec.env) for spec in specs)


def test_cancel_stops_the_container(source: Path) -> None:
    engine = FakeRunEngine(block=True).with_image()
    ws = Workspace(engine=engine)
    run = Experiment(ws, "exp").submit(
        ScriptRunConfig(str(source), script="train.py", environment=_image_env())
    )
    deadline = time.monotonic() + 10
    while not engine.live and time.monotonic() < deadline:
        time.sleep(0.01)
    run.cancel()
    run.wait_for_completion(raise_on_error=False)
    assert run.get_status() == "Canceled"
    assert engine.stopped and not engine.live


def test_ctrl_c_while_waiting_stops_the_run(source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import envbuild.azureml.experiment as experiment

    engine = FakeRunEngine(frames=[out("epoch 1")], block=True).with_image()
    run = Experiment(Workspace(engine=engine), "exp").submit(
        ScriptRunConfig(str(source), script="train.py", environment=_image_env())
    )

    def interrupted(chunks: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "_write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run.wait_for_completion(show_output=True)
    assert run.get_status() == "Canceled"
    assert engine.stopped and not engine.live  # stopped, then removed by the run itself


def test_sigterm_while_waiting_stops_the_run(source: Path) -> None:
    import os
    import signal
    import threading

    from envbuild.errors import Interrupted

    engine = FakeRunEngine(block=True).with_image()
    run = Experiment(Workspace(engine=engine), "exp").submit(
        ScriptRunConfig(str(source), script="train.py", environment=_image_env())
    )
    before = signal.getsignal(signal.SIGTERM)

    def terminate() -> None:
        # Only once the container runs and the wait has taken SIGTERM over: before,
        # the signal's default action would end the test process itself.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if engine.live and signal.getsignal(signal.SIGTERM) is not before:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.01)

    threading.Thread(target=terminate, daemon=True).start()
    with pytest.raises(Interrupted) as caught:
        run.wait_for_completion()
    assert caught.value.signum == signal.SIGTERM
    assert run.get_status() == "Canceled" and engine.stopped and not engine.live
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back


EXIT_SCRIPT = """
import atexit, sys
from pathlib import Path
from envbuild.azureml import Environment, Experiment, ScriptRunConfig, Workspace
from tests.run_fakes import FakeRunEngine, out

engine = FakeRunEngine(frames=[out("hello")], block=sys.argv[2] == "block").with_image()
# Registered first, so it runs last: after envbuild.azureml's own exit handler.
atexit.register(lambda: print("stopped", bool(engine.stopped), "live", len(engine.live)))
env = Environment.from_docker_image("img", "example:1")
env.python.user_managed_dependencies = True
run = Experiment(Workspace(engine=engine), "exit").submit(
    ScriptRunConfig(sys.argv[1], script="train.py", environment=env)
)
print("submitted", run.id, flush=True)
"""


@pytest.mark.parametrize("mode", ["quick", "block"])
def test_a_run_nobody_waited_for_is_waited_for_at_exit(
    source: Path, tmp_path: Path, mode: str
) -> None:
    import os
    import signal

    script = tmp_path / "submit.py"
    script.write_text(EXIT_SCRIPT)
    environ = {**os.environ, "PYTHONPATH": f"{ROOT / 'builder'}{os.pathsep}{ROOT}"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(source), mode],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if mode == "block":  # Ctrl-C while the program waits at its exit
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        while "waiting for run" not in proc.stderr.readline():
            assert time.monotonic() < deadline
        proc.send_signal(signal.SIGINT)
    out_text, err_text = proc.communicate(timeout=60)
    assert "submitted" in out_text
    if mode == "quick":
        assert proc.returncode == 0 and "stopped False live 0" in out_text
    else:  # the interrupt stopped the run's container: nothing left running
        assert "stopped True live 0" in out_text, err_text


def test_a_run_id_given_to_envbuild_run_is_checked(source: Path) -> None:
    import envbuild

    config = envbuild.RunConfig(
        environment="image:example:1", script="train.py", source_directory=source
    )
    engine = FakeRunEngine().with_image()
    with pytest.raises(RunConfigError, match="run id"):
        envbuild.run(config, engine=engine, handle_signals=False, run_id="../x")
    result = envbuild.run(config, engine=engine, handle_signals=False, run_id="0123456789ab")
    assert result.run_id == "0123456789ab"
