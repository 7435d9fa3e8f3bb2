"""envbuild export kubernetes: manifests from the run plan, validated offline, golden."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from envbuild.cli.main import main
from envbuild.engine.protocols import ImageInfo
from envbuild.errors import RunConfigError
from envbuild.run.config import PyTorch, RunConfig
from envbuild.run.distributed import node_plan
from envbuild.run.kubernetes import (
    INDEX_ANNOTATION,
    check_image_ref,
    check_job_name,
    manifests,
    parse_volume,
    to_yaml,
)
from envbuild.run.planning import plan

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "k8s"
MPIJOB_SCHEMA = ROOT / "tests" / "fixtures" / "k8s" / "mpijob-v2beta1.schema.json"
K8S_VERSION = "1.33"  # a current Kubernetes release
DIGEST = "sha256:" + "ab" * 32
IMAGE = f"registry.example/envbuild/train@{DIGEST}"

CASES: dict[str, list[str]] = {
    "pytorch-2x2": ["--distribution", "pytorch", "--nodes", "2", "--procs-per-node", "2"],
    "pytorch-launch-gpu": [
        *("--distribution", "pytorch", "--nodes", "2", "--procs-per-node", "4"),
        *("--torch-launcher", "launch", "--backend", "nccl", "--gpus", "4", "--shm-size", "8g"),
    ],
    "tensorflow-2w-1ps": [
        "--distribution",
        "tensorflow",
        "--nodes",
        "2",
        "--parameter-servers",
        "1",
    ],
    "mpi-2x2": ["--distribution", "mpi", "--nodes", "2", "--procs-per-node", "2", "-u", "0:0"],
}


@pytest.fixture
def src(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "train.py").write_text("print('hi')\n")
    monkeypatch.chdir(folder)
    return folder


def _export(args: list[str], out: Path) -> list[dict[str, Any]]:
    argv = [
        *("export", "kubernetes", "-o", str(out), "--image-ref", IMAGE, "--name", "train"),
        *("-u", "1000:1000", "--timeout", "3600", "-e", "PRICE=$5"),
        *("--input", "data=pvc:datasets/mnist", "--output", "model=pvc:results"),
        *args,
        *("image:x", "train.py", "--data", "${{inputs.data}}", "--out", "${{outputs.model}}"),
        "$(HOME)",  # a literal argument: Kubernetes must not expand it
    ]
    assert main(argv) == 0
    text = (out / "train.yaml").read_text()
    return list(yaml.safe_load_all(text))


def _validate(document: dict[str, Any]) -> None:
    if document["kind"] == "MPIJob":
        schema = json.loads(MPIJOB_SCHEMA.read_text())
        jsonschema.validate(document, schema)
        for role, replica in document["spec"]["mpiReplicaSpecs"].items():
            template = {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": f"{document['metadata']['name']}-{role.lower()}"},
                "template": replica["template"],
            }
            kubernetes_validate.validate(template, K8S_VERSION, strict=True)
    else:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_manifests_validate_and_match_golden(
    case: str, src: Path, tmp_path: Path, update_golden: bool
) -> None:
    documents = _export(CASES[case], tmp_path / "out")
    for document in documents:
        _validate(document)
    text = (tmp_path / "out" / "train.yaml").read_text()
    golden = GOLDEN / f"{case}.yaml"
    if update_golden or not golden.exists():
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text(), f"rerun with --update-golden and review {golden}"


def test_the_validators_catch_what_they_should(src: Path, tmp_path: Path) -> None:
    _, job = _export(CASES["pytorch-2x2"], tmp_path / "p")
    job["spec"]["template"]["spec"]["containers"][0]["bogus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    (mpijob,) = _export(CASES["mpi-2x2"], tmp_path / "m")
    mpijob["spec"]["slotsPerWorkers"] = 2
    with pytest.raises(jsonschema.ValidationError):
        _validate(mpijob)


def test_pytorch_pods_take_their_rank_from_the_completion_index(src: Path, tmp_path: Path) -> None:
    service, job = _export(CASES["pytorch-2x2"], tmp_path)
    assert service["spec"]["clusterIP"] == "None"
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"] == "train"
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        f"metadata.annotations['{INDEX_ANNOTATION}']"
    )
    assert container["env"][0]["name"] == "NODE_RANK"  # defined before $(NODE_RANK) is used
    assert env["PRICE"]["value"] == "$$5"  # Kubernetes gives the script "$5"
    # The same function as the local executor, with the rank left to Kubernetes.
    config = RunConfig(
        "image:x",
        "train.py",
        arguments=("--data", "/inputs/data", "--out", "/outputs/model", "$$(HOME)"),
        source_directory=src,
        distribution=PyTorch(2, 2),
    )
    expected = node_plan(
        PyTorch(2, 2),
        ["train-0.train", "train-1.train"],
        plan(config).argv,
        "$(NODE_RANK)",
        root=False,
    )
    assert tuple(container["command"]) == expected.argv
    for key, value in expected.environment:
        if key != "NODE_RANK":
            assert env[key]["value"] == value
    assert {m["mountPath"]: m["readOnly"] for m in container["volumeMounts"][1:]} == {
        "/inputs/data": True,
        "/outputs/model": False,
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    assert volumes["in-data"]["persistentVolumeClaim"]["claimName"] == "datasets"


def test_gpus_and_shm(src: Path, tmp_path: Path) -> None:
    _, job = _export(CASES["pytorch-launch-gpu"], tmp_path)
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {"limits": {"nvidia.com/gpu": 4}}
    assert pod["volumes"][0]["emptyDir"]["sizeLimit"] == "8Gi"


def test_tensorflow_tasks_pick_their_tf_config(src: Path, tmp_path: Path) -> None:
    _, job = _export(CASES["tensorflow-2w-1ps"], tmp_path)
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert job["spec"]["completions"] == 3
    configs = [json.loads(env[f"TF_CONFIG_{i}"]) for i in range(3)]
    assert [c["task"] for c in configs] == [
        {"type": "worker", "index": 0},
        {"type": "worker", "index": 1},
        {"type": "ps", "index": 0},
    ]
    assert configs[0]["cluster"] == {
        "worker": ["train-0.train:2222", "train-1.train:2222"],
        "ps": ["train-2.train:2222"],
    }
    assert container["command"][:2] == ["sh", "-c"]
    assert '$$(printenv "TF_CONFIG_$$JOB_COMPLETION_INDEX")' in container["command"][2]
    assert container["command"][-1] == "$$(HOME)"


def test_mpi_is_an_mpijob(src: Path, tmp_path: Path) -> None:
    (job,) = _export(CASES["mpi-2x2"], tmp_path)
    spec = job["spec"]
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v2beta1", "MPIJob")
    assert spec["slotsPerWorker"] == 2 and spec["sshAuthMountPath"] == "/run/envbuild/ssh"
    launcher = spec["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    worker = spec["mpiReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 2
    assert launcher["command"][:3] == ["mpirun", "-np", "4"] and "--host" not in launcher["command"]
    assert "--allow-run-as-root" in launcher["command"]
    container = worker["template"]["spec"]["containers"][0]
    # As root: sshd's privilege separation folder first, and SYS_CHROOT for it.
    assert container["command"][:2] == ["sh", "-c"] and "/usr/sbin/sshd" in container["command"]
    assert "SYS_CHROOT" not in container["securityContext"]["capabilities"]["drop"]
    assert "SYS_CHROOT" in launcher["securityContext"]["capabilities"]["drop"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--input", "data=./data"], "a host path cannot be expressed in Kubernetes"),
        (["--input", "data=pvc:d:download"], "a download input cannot be expressed"),
        (["--output", "m=/tmp/out"], "a host path cannot be expressed"),
        (["--input", "data=pvc:Bad_Claim"], "expected pvc:CLAIM[/sub/path]"),
        (["--input", "data=pvc:c/../x"], "without '..'"),
        (["--mount", "/tmp:/t"], "--mount /tmp:/t: a host path cannot be expressed"),
        (["--gpus", "all"], "by count only"),
        (["-u", "me"], "numeric uid"),
        (["--name", "Train"], "not a Kubernetes job name"),
        (["--snapshot"], "--snapshot cannot be expressed in Kubernetes"),
        (["--azureml-context"], "--azureml-context cannot be expressed in Kubernetes"),
    ],
)
def test_what_cannot_be_expressed_is_a_clear_error(
    src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    (tmp_path / "data").mkdir()
    argv = [
        *("export", "kubernetes", "-o", str(tmp_path / "o"), "--image-ref", IMAGE),
        *("--distribution", "pytorch", "--nodes", "2"),
        *args,
        *("image:x", "train.py"),
    ]
    assert main(argv) == 125
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_a_single_container_run_is_not_exported(
    src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Said before the image is looked up: no engine, no digest needed to learn it.
    assert main(["export", "kubernetes", "-o", str(tmp_path), "image:x", "train.py"]) == 125
    assert "writes distributed jobs" in capsys.readouterr().err
    with pytest.raises(RunConfigError, match="distributed jobs"):
        manifests(
            plan(RunConfig("image:x", "train.py", source_directory=src)),
            name="train",
            image_ref=IMAGE,
        )


@pytest.mark.parametrize(
    ("repo_digests", "words"),
    [((), "has no registry digest"), (None, "is not on this engine")],
)
def test_the_image_must_have_a_registry_digest(
    src: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    repo_digests: tuple[str, ...] | None,
    words: str,
) -> None:
    from envbuild.engine.docker import DockerEngine

    info = None if repo_digests is None else ImageInfo("sha256:1", repo_digests=repo_digests)
    monkeypatch.setattr(DockerEngine, "inspect_image", lambda self, ref: info)
    argv = ["export", "kubernetes", "-o", str(tmp_path / "o"), "--distribution", "mpi"]
    assert main([*argv, "image:x", "train.py"]) == 125
    err = capsys.readouterr().err
    assert words in err and "--image-ref" in err and "Traceback" not in err


def test_without_a_registry_the_environments_digest_is_used_and_said(
    src: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from envbuild.engine.docker import DockerEngine

    monkeypatch.delenv("ENVBUILD_REGISTRY", raising=False)
    info = ImageInfo("sha256:1", repo_digests=(IMAGE,))
    monkeypatch.setattr(DockerEngine, "inspect_image", lambda self, ref: info)
    argv = ["export", "kubernetes", "-o", str(tmp_path), "--distribution", "mpi", "--name", "j"]
    assert main([*argv, "image:x", "train.py"]) == 0
    (job,) = yaml.safe_load_all((tmp_path / "j.yaml").read_text())
    launcher = job["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    assert launcher["image"] == IMAGE
    # No job image without a registry: what the manifests name, and how to do better.
    err = " ".join(capsys.readouterr().err.split())
    assert f"the manifests reference {IMAGE}" in err
    assert "does not hold the source directory" in err and "/workspace" in err
    assert "--registry HOST[:PORT]" in err and "--image-ref" in err


def test_an_image_ref_is_used_as_given_without_the_engine(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from envbuild.engine.docker import DockerEngine

    def refuse(self: object, ref: str) -> None:
        raise AssertionError("the engine was asked")

    monkeypatch.setattr(DockerEngine, "inspect_image", refuse)
    argv = ["export", "kubernetes", "-o", str(tmp_path), "--distribution", "mpi", "--name", "j"]
    ref = ["--image-ref", IMAGE, "--registry", "127.0.0.1:1"]
    assert main([*argv, *ref, "image:x", "train.py"]) == 0
    (job,) = yaml.safe_load_all((tmp_path / "j.yaml").read_text())
    worker = job["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    assert worker["image"] == IMAGE


def test_checks() -> None:
    assert check_image_ref(IMAGE) == IMAGE
    for bad in ("registry.example/x:1", "x@sha256:abc"):
        with pytest.raises(RunConfigError):
            check_image_ref(bad)
    assert check_job_name("train-1") == "train-1"
    for bad in ("1train", "a" * 51, "a_b", "train-"):
        with pytest.raises(RunConfigError):
            check_job_name(bad)
    assert parse_volume("pvc:c/a/b/", what="--input", name="d", read_only=True).sub_path == "a/b"


@pytest.mark.parametrize(
    "document",
    [
        {"a": "yes", "no": "on", "b": [1, True, None, "1.0", {"c": []}, [], {}], "": "x"},
        {"k: v": "# not a comment", "list": [{"x": 1, "y": [2, 3]}, [["n"]]], "u": "é\n\t"},
    ],
)
def test_yaml_round_trips(document: dict[str, Any]) -> None:
    assert list(yaml.safe_load_all(to_yaml([document, {"second": 2}]))) == [
        document,
        {"second": 2},
    ]


def test_what_cannot_be_expressed_is_refused_before_a_job_image_is_built(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from envbuild.build import jobimage
    from envbuild.engine.docker import DockerEngine

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a job image was built")

    monkeypatch.setattr(jobimage, "build_and_push", refuse)
    info = ImageInfo("sha256:1", repo_digests=(IMAGE,))
    monkeypatch.setattr(DockerEngine, "inspect_image", lambda self, ref: info)
    argv = ["export", "kubernetes", "-o", str(tmp_path / "o"), "--registry", "127.0.0.1:1"]
    argv += ["--distribution", "pytorch", "--nodes", "2", "--gpus", "all", "image:x", "train.py"]
    assert main(argv) == 125
    assert "by count only" in capsys.readouterr().err
