"""Planning a run without the engine: argv, placeholders, variables, mounts, the dry-run shape."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from envbuild.engine.docker import BindMount, ContainerSpec, GpuRequest, container_config
from envbuild.errors import (
    EXIT_RUN_CANNOT_INVOKE,
    EXIT_RUN_NOT_FOUND,
    RunConfigError,
    ScriptNotExecutableError,
    ScriptNotFoundError,
)
from envbuild.run.config import DOCKER_DEFAULT_CAPS, DROPPED_CAPS, Input, Mount, Output, RunConfig
from envbuild.run.planning import plan, substitute
from envbuild.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "envs" / "hello"


@pytest.fixture
def src(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "train.py").write_text("print('hi')\n")
    (folder / "tool.sh").write_text("#!/bin/sh\necho hi\n")
    (folder / "tool.sh").chmod(0o755)
    (folder / "plain.sh").write_text("echo not executable\n")
    (folder / "pkg").mkdir()
    (folder / "pkg" / "main.py").write_text("")
    return folder


def config(src: Path, **overrides: object) -> RunConfig:
    values: dict[str, object] = {
        "environment": "image:example:1",
        "script": "train.py",
        "source_directory": src,
    }
    values.update(overrides)
    return RunConfig(**values)  # type: ignore[arg-type]


def test_python_script_runs_with_the_environments_python(src: Path) -> None:
    p = plan(config(src, arguments=["--lr", "0.1"]))
    assert p.argv == ("python", "/workspace/train.py", "--lr", "0.1")
    assert p.workdir == "/workspace"
    assert p.source == BindMount(str(src.resolve()), "/workspace", read_only=True)
    assert p.image == "example:1"


def test_other_scripts_run_as_given(src: Path) -> None:
    assert plan(config(src, script="tool.sh")).argv == ("/workspace/tool.sh",)
    assert plan(config(src, script="pkg/main.py")).argv == ("python", "/workspace/pkg/main.py")


def test_missing_script_is_127_before_anything_starts(src: Path) -> None:
    with pytest.raises(ScriptNotFoundError) as caught:
        plan(config(src, script="nope.py"))
    assert caught.value.exit_code == EXIT_RUN_NOT_FOUND == 127


@pytest.mark.parametrize("script", ["plain.sh", "pkg"])
def test_unexecutable_script_is_126(src: Path, script: str) -> None:
    with pytest.raises(ScriptNotExecutableError) as caught:
        plan(config(src, script=script))
    assert caught.value.exit_code == EXIT_RUN_CANNOT_INVOKE == 126


@pytest.mark.parametrize("script", ["/etc/passwd", "../outside.py", "a/../../b.py", ""])
def test_script_must_stay_in_the_source(src: Path, script: str) -> None:
    with pytest.raises(RunConfigError, match="relative to the source directory"):
        plan(config(src, script=script))


def test_arguments_are_kept_verbatim(src: Path) -> None:
    awkward = ["two words", "'single'", '"double"', "$HOME", "`id`", "ünïcödé ✓", "-e", "x", "--"]
    assert plan(config(src, arguments=awkward)).arguments == tuple(awkward)


def test_placeholders_become_container_paths(src: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    p = plan(
        config(
            src,
            arguments=[
                "--data-folder",
                "${{inputs.data}}",
                "--out=${{ outputs.model }}/final",
                "${{inputs.data}}:${{inputs.data}}",
            ],
            inputs=[Input("data", data)],
            outputs=[Output("model", tmp_path / "out")],
        )
    )
    assert p.arguments == (
        "--data-folder",
        "/inputs/data",
        "--out=/outputs/model/final",
        "/inputs/data:/inputs/data",
    )


@pytest.mark.parametrize(
    "argument",
    ["${{inputs.missing}}", "${{outputs.data}}", "${{secrets.x}}", "${{inputs}}", "${{ oops"],
)
def test_unknown_placeholder_is_an_error(src: Path, tmp_path: Path, argument: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(RunConfigError, match="placeholder") as caught:
        plan(config(src, arguments=[argument], inputs=[Input("data", data)]))
    assert "${{inputs.data}}" in (caught.value.hint or "")


def test_substitute_reports_every_problem_at_once() -> None:
    with pytest.raises(RunConfigError) as caught:
        substitute(["${{inputs.a}}", "${{outputs.b}}"], {}, {})
    assert "inputs.a" in caught.value.message and "outputs.b" in caught.value.message


def test_mounts_inputs_outputs(src: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    p = plan(
        config(
            src,
            mounts=[Mount(scratch, "/scratch", read_only=False), Mount(data, "/ref")],
            inputs=[Input("a", data), Input("b", data, "download")],
            outputs=[Output("model", tmp_path / "not" / "yet")],
        )
    )
    assert p.mounts == (
        BindMount(str(src.resolve()), "/workspace", True),
        BindMount(str(scratch.resolve()), "/scratch", False),
        BindMount(str(data.resolve()), "/ref", True),
        BindMount(str(data.resolve()), "/inputs/a", True),
        BindMount(str((tmp_path / "not" / "yet").resolve()), "/outputs/model", False),
    )
    assert p.downloads == ((data.resolve(), "/inputs/b"),)
    assert not (tmp_path / "not").exists()  # planning creates nothing


def test_duplicate_targets_and_names(src: Path, tmp_path: Path) -> None:
    with pytest.raises(RunConfigError, match="share the container path /x"):
        plan(config(src, mounts=[Mount(tmp_path, "/x"), Mount(tmp_path, "/x")]))
    with pytest.raises(RunConfigError, match="given twice"):
        plan(config(src, inputs=[Input("a", tmp_path), Input("a", tmp_path)]))
    with pytest.raises(RunConfigError, match="not a valid name"):
        plan(config(src, inputs=[Input("a b", tmp_path)]))


@pytest.mark.parametrize("target", ["relative", "/", "/a/../b", "/a\nb"])
def test_bad_mount_targets(src: Path, tmp_path: Path, target: str) -> None:
    with pytest.raises(RunConfigError):
        plan(config(src, mounts=[Mount(tmp_path, target)]))


def test_dangerous_source_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RunConfigError, match="refusing to mount /etc"):
        plan(RunConfig(environment="image:x", script="passwd", source_directory=Path("/etc")))


def test_output_under_a_dangerous_path_is_refused(src: Path) -> None:
    with pytest.raises(RunConfigError, match="refusing"):
        plan(config(src, outputs=[Output("o", Path("/etc/envbuild-out"))]))


def test_variables_gpus_hidden_and_unbuffered(src: Path) -> None:
    p = plan(config(src, environment_variables={"A": "x y", "PYTHONUNBUFFERED": "0"}))
    assert dict(p.variables) == {
        "PYTHONUNBUFFERED": "0",  # the user's value wins
        "NVIDIA_VISIBLE_DEVICES": "void",
        "A": "x y",
    }
    assert p.gpus is None


def test_gpus_requested(src: Path) -> None:
    p = plan(config(src, gpus="all"))
    assert p.gpus == GpuRequest(count=-1)
    assert "NVIDIA_VISIBLE_DEVICES" not in dict(p.variables)


def test_defaults_user_shm_workdir(src: Path) -> None:
    p = plan(config(src))
    assert p.user == f"{os.getuid()}:{os.getgid()}"
    assert p.shm_size == "2g"
    p = plan(config(src, user="1234:5", shm_size="512m", workdir="/tmp/w"))
    assert (p.user, p.shm_size, p.workdir) == ("1234:5", "512m", "/tmp/w")


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": "bad name"},
        {"user": "a b"},
        {"timeout": 0},
        {"timeout": float("inf")},
        {"timeout": float("nan")},
        {"timeout": 1e300},  # beyond what a timer can wait
        {"stop_timeout": float("inf")},
        {"stop_timeout": float("nan")},
        {"shm_size": "lots"},
        {"environment": "image:"},
        {"distribution": "mpi"},
        {"command": ["python"]},  # both script and command
    ],
)
def test_bad_options(src: Path, overrides: dict[str, object]) -> None:
    with pytest.raises(RunConfigError):
        plan(config(src, **overrides))


def test_command_instead_of_script(tmp_path: Path) -> None:
    p = plan(
        RunConfig(
            environment="image:x", command=["echo", "a b"], arguments=["c"], source_directory=None
        )
    )
    assert p.argv == ("echo", "a b", "c")
    assert p.source is None and p.mounts == ()


def test_environment_folder_gives_the_hash_tag_and_run_defaults(
    src: Path, write_env: object, engine_holds_base: None
) -> None:
    env_dir = write_env(  # type: ignore[operator]
        'schema = 1\nname = "demo"\nversion = 3\n[run]\nworkdir = "/code"\nshm_size = "1g"\n'
    )
    p = plan(RunConfig(environment=env_dir, script="train.py", source_directory=src))
    assert p.image.startswith("envbuild/demo:") and len(p.image.split(":")[1]) == 12
    assert (p.env_name, p.env_version) == ("demo", 3)
    assert p.env_hash and p.image.endswith(p.env_hash[:12])
    assert p.argv == ("python", "/code/train.py")
    assert (p.workdir, p.shm_size) == ("/code", "1g")


def test_dry_run_json_shape(src: Path, tmp_path: Path, engine_holds_base: None) -> None:
    data = tmp_path / "data"
    data.mkdir()
    p = plan(
        RunConfig(
            environment=HELLO,
            script="train.py",
            arguments=["${{inputs.data}}"],
            source_directory=src,
            environment_variables={"SECRET": "do-not-print"},
            inputs=[Input("data", data, "download")],
            outputs=[Output("model", tmp_path / "out")],
            timeout=30,
        ),
        settings=load_settings(),
    )
    doc = p.to_json()
    assert set(doc) == {
        "schema",
        "environment",
        "image",
        "script",
        "argv",
        "arguments",
        "workdir",
        "source",
        "user",
        "variables",
        "mounts",
        "inputs",
        "outputs",
        "gpus",
        "shm_size",
        "timeout",
        "stop_timeout",
        "name",
        "init",
        "privileges",
        "labels",
        "distribution",
        "snapshot",
        "warnings",
    }
    assert doc["schema"] == 1
    assert doc["environment"]["name"] == "hello"
    assert doc["argv"] == ["python", "/workspace/train.py", "/inputs/data"]
    assert doc["inputs"]["data"]["mode"] == "download"
    assert doc["outputs"]["model"]["container"] == "/outputs/model"
    assert doc["variables"] == [
        "ENVBUILD_RUN_ID",
        "NVIDIA_VISIBLE_DEVICES",
        "PYTHONUNBUFFERED",
        "SECRET",
    ]
    assert "do-not-print" not in json.dumps(doc)  # names, never values
    assert doc["init"] is True and doc["labels"] == ["io.envbuild.run", "io.envbuild.owner"]
    assert doc["distribution"] is None


def test_container_spec_and_engine_body(src: Path) -> None:
    p = plan(config(src, environment_variables={"A": "1"}, gpus="0,1", name="mine"))
    spec = p.container_spec("sha256:abc", "r1")
    assert spec == ContainerSpec(
        image="sha256:abc",
        argv=("python", "/workspace/train.py"),
        env=(("PYTHONUNBUFFERED", "1"), ("A", "1"), ("ENVBUILD_RUN_ID", "r1")),
        labels={"io.envbuild.run": "r1"},
        user=p.user,
        workdir="/workspace",
        mounts=p.mounts,
        shm_size=2 << 30,
        gpus=GpuRequest(device_ids=("0", "1")),
        init=True,
        name="mine",
        cap_drop=DROPPED_CAPS,
        no_new_privileges=True,
    )
    body = container_config(spec)
    assert body["Cmd"] == ["python", "/workspace/train.py"]
    assert "Entrypoint" not in body  # the image's entrypoint, as docker run
    assert body["Env"] == ["PYTHONUNBUFFERED=1", "A=1", "ENVBUILD_RUN_ID=r1"]
    assert body["Labels"] == spec.labels
    assert body["Tty"] is False and body["OpenStdin"] is False
    host = body["HostConfig"]
    assert host["Init"] is True and host["AutoRemove"] is False
    assert host["ShmSize"] == 2 << 30
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["CapDrop"] == list(DROPPED_CAPS) and "CapAdd" not in host
    assert host["DeviceRequests"] == [
        {
            "Driver": "",
            "Count": 0,
            "DeviceIDs": ["0", "1"],
            "Capabilities": [["gpu"]],
            "Options": {},
        }
    ]
    assert host["Mounts"][0] == {
        "Type": "bind",
        "Source": str(src.resolve()),
        "Target": "/workspace",
        "ReadOnly": True,
        "BindOptions": {"Propagation": "rprivate"},
    }


def test_engine_body_all_gpus_and_none() -> None:
    spec = ContainerSpec(image="i", argv=("a",), gpus=GpuRequest(count=-1))
    assert container_config(spec)["HostConfig"]["DeviceRequests"][0]["Count"] == -1
    assert (
        "DeviceRequests"
        not in container_config(ContainerSpec(image="i", argv=("a",)))["HostConfig"]
    )


def test_run_config_is_frozen_and_normalised(src: Path) -> None:
    cfg = config(src, arguments=["a"], environment_variables={"A": "1"})
    assert cfg.arguments == ("a",)
    with pytest.raises(AttributeError):
        cfg.script = "other.py"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.environment_variables["B"] = "2"  # type: ignore[index]


def test_output_under_a_file_is_a_clear_error(src: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunConfigError, match="exists and is not a folder"):
        plan(config(src, outputs=[Output("x", tmp_path / "file" / "sub" / "deeper")]))
    with pytest.raises(RunConfigError, match="exists and is not a folder"):
        plan(config(src, outputs=[Output("x", tmp_path / "file")]))


def test_privileges_reduced_by_default_and_restorable(src: Path) -> None:
    assert set(DROPPED_CAPS) < DOCKER_DEFAULT_CAPS
    assert {"NET_RAW", "MKNOD", "SYS_CHROOT", "SETFCAP"} <= set(DROPPED_CAPS)
    assert not {"CHOWN", "SETUID", "SETGID", "DAC_OVERRIDE", "KILL"} & set(DROPPED_CAPS)
    reduced = plan(config(src))
    assert reduced.no_new_privileges and reduced.cap_drop == DROPPED_CAPS
    assert reduced.to_json()["privileges"] == {
        "mode": "reduced",
        "no_new_privileges": True,
        "cap_drop": list(DROPPED_CAPS),
    }
    some = plan(config(src, cap_add=["net_raw", "CAP_MKNOD", "CHOWN"]))
    assert "NET_RAW" not in some.cap_drop and "MKNOD" not in some.cap_drop
    assert "SYS_CHROOT" in some.cap_drop and some.no_new_privileges
    default = plan(config(src, privileges="default"))
    assert default.cap_drop == () and not default.no_new_privileges
    host = container_config(default.container_spec("i", "r"))["HostConfig"]
    assert "CapDrop" not in host and "SecurityOpt" not in host


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cap_add": ["SYS_ADMIN"]}, "only Docker's default capabilities"),
        ({"cap_add": ["ALL"]}, "only Docker's default capabilities"),
        ({"privileges": "privileged"}, "expected one of reduced, default"),
    ],
)
def test_privileges_cannot_go_beyond_dockers_defaults(
    src: Path, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(RunConfigError, match=message):
        plan(config(src, **overrides))
