"""Distributed runs: the model, its checks, the command line, and each rank's contract."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from envbuild.engine.protocols import BindMount
from envbuild.errors import RunConfigError
from envbuild.identity import NODE_LABEL
from envbuild.run.config import (
    DEFAULT_RENDEZVOUS_TIMEOUT,
    Mpi,
    PyTorch,
    RunConfig,
    TensorFlow,
    check_distribution,
    config_from_options,
    parse_distribution,
)
from envbuild.run.distributed import (
    SSH_DIR,
    SSH_KEY,
    SSH_PORT,
    is_root,
    node_count,
    node_names,
    node_plan,
    node_plans,
    world_size,
)
from envbuild.run.planning import DRY_RUN_ID, plan


@pytest.fixture
def src(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "train.py").write_text("print('hi')\n")
    return folder


def test_options_give_the_model() -> None:
    assert parse_distribution(None) is None
    assert parse_distribution("pytorch", nodes="2", procs_per_node="4") == PyTorch(2, 4)
    assert parse_distribution(
        "pytorch", backend="nccl", launcher="launch", rendezvous_timeout=30.0
    ) == PyTorch(1, 1, "nccl", "launch", 30.0)
    assert parse_distribution("mpi", nodes="3", procs_per_node="2") == Mpi(3, 2)
    assert parse_distribution("tensorflow", nodes="2", parameter_servers="1") == TensorFlow(2, 1)
    assert Mpi().rendezvous_timeout == DEFAULT_RENDEZVOUS_TIMEOUT


@pytest.mark.parametrize(
    ("kind", "options", "words"),
    [
        (None, {"nodes": "2"}, "--nodes is for distributed runs"),
        ("horovod", {}, "--distribution 'horovod': expected one of mpi, pytorch, tensorflow"),
        ("pytorch", {"nodes": "0"}, "--nodes 0: expected a whole number from 1 to 256"),
        ("pytorch", {"nodes": "257"}, "from 1 to 256"),
        ("pytorch", {"nodes": "two"}, "--nodes 'two': expected a whole number"),
        ("pytorch", {"nodes": "-1"}, "expected a whole number"),
        ("mpi", {"procs_per_node": "0"}, "--procs-per-node 0"),
        ("pytorch", {"backend": "tcp"}, "--backend 'tcp': expected one of gloo, nccl, mpi"),
        ("pytorch", {"launcher": "mpirun"}, "--torch-launcher 'mpirun'"),
        ("pytorch", {"parameter_servers": "1"}, "--parameter-servers does not apply"),
        ("mpi", {"backend": "gloo"}, "--backend does not apply to --distribution mpi"),
        ("tensorflow", {"procs_per_node": "2"}, "--procs-per-node does not apply"),
        ("tensorflow", {"nodes": "200", "parameter_servers": "100"}, "at most 256 tasks"),
        ("mpi", {"rendezvous_timeout": 0.0}, "--rendezvous-timeout 0.0"),
        ("mpi", {"rendezvous_timeout": float("nan")}, "--rendezvous-timeout nan"),
    ],
)
def test_bad_options_are_named(kind: str | None, options: dict[str, object], words: str) -> None:
    with pytest.raises(RunConfigError) as info:
        parse_distribution(kind, **options)  # type: ignore[arg-type]
    assert words in info.value.message


@pytest.mark.parametrize(
    "distribution",
    ["mpi", Mpi(nodes=True), PyTorch(nodes=2.0), TensorFlow(workers=0), Mpi(rendezvous_timeout=-1)],  # type: ignore[arg-type]
)
def test_the_api_is_checked_too(src: Path, distribution: object) -> None:
    with pytest.raises(RunConfigError):
        check_distribution(distribution)
    config = RunConfig("image:x", "train.py", source_directory=src, distribution=distribution)  # type: ignore[arg-type]
    with pytest.raises(RunConfigError):
        plan(config)


def test_config_from_options_carries_the_distribution(src: Path) -> None:
    config = config_from_options(
        "image:x", "train.py", source_dir=src, distribution="mpi", nodes="2", procs_per_node="2"
    )
    assert config.distribution == Mpi(2, 2)
    assert plan(config).config.distribution == Mpi(2, 2)


# --------------------------------------------------------------------------
# Each framework's contract, exactly, for 2 nodes x 2 processes
# --------------------------------------------------------------------------

HOSTS = ("envbuild-abc-0", "envbuild-abc-1")
ARGV = ("python", "/workspace/train.py", "--lr", "0.1")


@pytest.mark.parametrize(
    ("launcher", "head", "own_timeout"),
    [
        # torchrun's static rendezvous takes the job's deadline as its join timeout
        ("torchrun", ["torchrun"], ["--rdzv_conf=timeout=91"]),
        ("launch", ["python", "-m", "torch.distributed.launch"], []),
    ],
)
def test_pytorch_2x2(launcher: str, head: list[str], own_timeout: list[str]) -> None:
    distribution = PyTorch(2, 2, "gloo", launcher, rendezvous_timeout=90.5)
    plans = node_plans(distribution, HOSTS, ARGV, root=False)
    assert [p.role for p in plans] == ["master", "worker"]
    for i, p in enumerate(plans):
        assert p.host == HOSTS[i]
        assert list(p.argv) == [
            *head,
            "--nnodes=2",
            "--nproc_per_node=2",
            f"--node_rank={i}",
            "--master_addr=envbuild-abc-0",
            "--master_port=29500",
            *own_timeout,
            "/workspace/train.py",
            "--lr",
            "0.1",
        ]
        assert dict(p.environment) == {
            "MASTER_ADDR": "envbuild-abc-0",
            "MASTER_PORT": "29500",
            "WORLD_SIZE": "4",
            "NODE_RANK": str(i),
            "LOCAL_WORLD_SIZE": "2",
            "ENVBUILD_TORCH_BACKEND": "gloo",
        }


def test_pytorch_runs_other_scripts_without_python() -> None:
    torchrun = node_plan(PyTorch(2, 1), HOSTS, ("/workspace/run.sh", "x"), 0, root=False)
    assert torchrun.argv[-3:] == ("--no-python", "/workspace/run.sh", "x")
    launch = node_plan(PyTorch(2, 1, launcher="launch"), HOSTS, ("/w/run.sh",), 1, root=False)
    # torch 1.6's launch refuses --no_python without --use_env
    assert launch.argv[-3:] == ("--no_python", "--use_env", "/w/run.sh")


def test_pytorch_rank_shim_goes_before_a_python_script_only() -> None:
    shim = "/run/envbuild/rank.py"
    for launcher in ("torchrun", "launch"):
        p = node_plan(PyTorch(2, 1, launcher=launcher), HOSTS, ARGV, 0, root=False, rank_shim=shim)
        assert p.argv[-4:] == (shim, "/workspace/train.py", "--lr", "0.1")
        other = node_plan(
            PyTorch(2, 1, launcher=launcher), HOSTS, ("/w/run.sh",), 0, root=False, rank_shim=shim
        )
        assert shim not in other.argv


def test_pytorch_template_for_a_node_known_where_it_runs() -> None:
    p = node_plan(PyTorch(2, 2), ("job-0.svc", "job-1.svc"), ARGV, "$(NODE_RANK)", root=False)
    assert "--node_rank=$(NODE_RANK)" in p.argv
    assert dict(p.environment)["NODE_RANK"] == "$(NODE_RANK)"
    assert dict(p.environment)["MASTER_ADDR"] == "job-0.svc"
    with pytest.raises(ValueError):
        node_plan(Mpi(2, 2), HOSTS, ARGV, "$(X)", root=False)


@pytest.mark.parametrize("root", [True, False])
def test_mpi_2x2(root: bool) -> None:
    launcher, worker = node_plans(Mpi(2, 2), HOSTS, ARGV, root=root, forward=["A", "B"])
    assert launcher.role == "launcher" and worker.role == "worker"
    assert list(launcher.argv) == [
        "mpirun",
        "-np",
        "4",
        "--tag-output",
        "--host",
        "envbuild-abc-0:2,envbuild-abc-1:2",
        "--mca",
        "btl_tcp_if_include",
        "eth0",
        "--mca",
        "oob_tcp_if_include",
        "eth0",
        "--mca",
        "plm_rsh_args",
        f"-p {SSH_PORT} -i {SSH_KEY} -o StrictHostKeyChecking=no "
        "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectionAttempts=300",
        *(["--allow-run-as-root"] if root else []),
        "-x",
        "A",
        "-x",
        "B",
        *ARGV,
    ]
    sshd = worker.argv[4:] if root else worker.argv
    assert sshd[:5] == ("/usr/sbin/sshd", "-D", "-e", "-p", str(SSH_PORT))
    assert f"AuthorizedKeysFile={SSH_DIR}/authorized_keys" in worker.argv
    assert dict(launcher.environment) == {"ENVBUILD_NODE_RANK": "0"}
    assert dict(worker.environment) == {"ENVBUILD_NODE_RANK": "1"}
    assert launcher.capabilities == ()


def test_mpi_root_worker_makes_sshds_folder_and_gets_chroot_back() -> None:
    # OpenSSH as root refuses to start without /run/sshd, and its
    # pre-authentication child chroots there (reduced privileges drop SYS_CHROOT).
    worker = node_plan(Mpi(2, 2), HOSTS, ARGV, 1, root=True)
    assert worker.argv[:4] == ("sh", "-c", 'mkdir -p /run/sshd && exec "$@"', "envbuild-sshd")
    assert worker.capabilities == ("SYS_CHROOT",)
    user = node_plan(Mpi(2, 2), HOSTS, ARGV, 1, root=False)
    assert user.argv[0] == "/usr/sbin/sshd" and user.capabilities == ()


def test_mpi_launcher_retries_ssh_for_the_rendezvous_timeout() -> None:
    launcher = node_plan(Mpi(2, 1, rendezvous_timeout=7.5), HOSTS, ARGV, 0, root=False)
    assert "-o ConnectionAttempts=8" in launcher.argv[launcher.argv.index("plm_rsh_args") + 1]


def test_mpi_under_an_operator_gets_no_host_list() -> None:
    launcher = node_plan(Mpi(2, 2), None, ARGV, 0, root=True)
    assert "--host" not in launcher.argv and launcher.argv[:4] == (
        "mpirun",
        "-np",
        "4",
        "--tag-output",
    )


def test_tensorflow_2_workers_1_ps() -> None:
    hosts = (*HOSTS, "envbuild-abc-2")
    plans = node_plans(TensorFlow(2, 1), hosts, ARGV, root=False)
    assert [p.role for p in plans] == ["chief", "worker", "ps"]
    cluster = {
        "worker": ["envbuild-abc-0:2222", "envbuild-abc-1:2222"],
        "ps": ["envbuild-abc-2:2222"],
    }
    tasks = [("worker", 0), ("worker", 1), ("ps", 0)]
    for p, (kind, index) in zip(plans, tasks, strict=True):
        assert p.argv == ARGV
        assert json.loads(dict(p.environment)["TF_CONFIG"]) == {
            "cluster": cluster,
            "task": {"type": kind, "index": index},
        }


def test_tensorflow_without_parameter_servers_names_no_ps() -> None:
    (plan_,) = node_plans(TensorFlow(1, 0), HOSTS[:1], ARGV, root=False)
    assert json.loads(dict(plan_.environment)["TF_CONFIG"]) == {
        "cluster": {"worker": ["envbuild-abc-0:2222"]},
        "task": {"type": "worker", "index": 0},
    }


def test_counts_and_names() -> None:
    assert (node_count(TensorFlow(3, 2)), world_size(TensorFlow(3, 2))) == (5, 5)
    assert (node_count(PyTorch(2, 4)), world_size(Mpi(2, 4))) == (2, 8)
    assert node_names("envbuild-r1", 2) == ("envbuild-r1-0", "envbuild-r1-1")
    assert [is_root(u) for u in ("0", "0:0", "root", "root:x", "1000:1000", "me")] == [
        True,
        True,
        True,
        True,
        False,
        False,
    ]


# --------------------------------------------------------------------------
# The dry run shows every node
# --------------------------------------------------------------------------


def test_dry_run_json_shows_every_node(src: Path) -> None:
    p = plan(
        RunConfig(
            "image:x",
            "train.py",
            arguments=["--lr", "0.1"],
            source_directory=src,
            environment_variables={"SECRET": "do-not-print"},
            user="1000:1000",
            distribution=PyTorch(2, 2),
        )
    )
    doc = p.to_json()["distribution"]
    assert doc == {
        "kind": "pytorch",
        "nodes": 2,
        "processes_per_node": 2,
        "backend": "gloo",
        "launcher": "torchrun",
        "rendezvous_timeout": DEFAULT_RENDEZVOUS_TIMEOUT,
        "world_size": 4,
        "network": f"envbuild-{DRY_RUN_ID}",
        "containers": [
            {"container": f"envbuild-{DRY_RUN_ID}-{i}", **n.to_json()}
            for i, n in enumerate(p.nodes(DRY_RUN_ID))
        ],
    }
    assert [c["environment"]["NODE_RANK"] for c in doc["containers"]] == ["0", "1"]
    assert "do-not-print" not in json.dumps(doc)
    # A real run's names come from its run id (or --name).
    assert [n.host for n in p.nodes("f00")] == ["envbuild-f00-0", "envbuild-f00-1"]


def test_dry_run_from_the_command_line(
    src: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from envbuild.cli.main import main

    monkeypatch.chdir(src)
    argv = ["run", "--dry-run", "--json", "--distribution", "mpi", "--nodes", "2"]
    assert main([*argv, "--procs-per-node", "2", "--name", "job", "image:x", "train.py"]) == 0
    doc = json.loads(capsys.readouterr().out)["distribution"]
    assert [c["container"] for c in doc["containers"]] == ["job-0", "job-1"]
    assert doc["containers"][0]["argv"][:6] == [
        "mpirun",
        "-np",
        "4",
        "--tag-output",
        "--host",
        "job-0:2,job-1:2",
    ]
    assert main(["run", "--dry-run", "--distribution", "pytorch", "image:x", "train.py"]) == 0
    text = capsys.readouterr().out
    assert "distribution pytorch: 1 nodes, world size 1" in text
    assert "node 0       envbuild-RUNID-0 (master)" in text
    # --launcher is --torch-launcher's short name
    for option in ("--torch-launcher", "--launcher"):
        argv = ["run", "--dry-run", "--json", "--distribution", "pytorch", option, "launch"]
        assert main([*argv, "image:x", "train.py"]) == 0
        doc = json.loads(capsys.readouterr().out)["distribution"]
        assert doc["launcher"] == "launch"
        assert doc["containers"][0]["argv"][:3] == ["python", "-m", "torch.distributed.launch"]


# --------------------------------------------------------------------------
# The containers a distributed run is made of
# --------------------------------------------------------------------------


def test_node_specs_are_the_runs_container_per_node(src: Path) -> None:
    p = plan(
        RunConfig(
            "image:x",
            "train.py",
            source_directory=src,
            environment_variables={"A": "1"},
            shm_size="1g",
            distribution=TensorFlow(2, 1),
        )
    )
    single = p.container_spec("sha256:i", "r1")
    specs = p.node_specs("sha256:i", "r1")
    assert [s.name for s in specs] == ["envbuild-r1-0", "envbuild-r1-1", "envbuild-r1-2"]
    for index, (spec, node) in enumerate(zip(specs, p.nodes("r1"), strict=True)):
        assert spec.network == "envbuild-r1"
        assert spec.labels == {**single.labels, NODE_LABEL: str(index)}
        assert spec.argv == node.argv
        assert spec.env == (*single.env, *node.environment)
        assert (spec.mounts, spec.user, spec.shm_size, spec.cap_drop, spec.image) == (
            single.mounts,
            single.user,
            single.shm_size,
            single.cap_drop,
            "sha256:i",
        )


def test_mpi_node_specs_mount_the_runs_key_read_only(src: Path) -> None:
    config = RunConfig("image:x", "train.py", source_directory=src, distribution=Mpi(2, 2))
    p = plan(dataclasses.replace(config, user="1000:1000"))
    with pytest.raises(ValueError, match="ssh key"):
        p.node_specs("sha256:i", "r1")
    specs = p.node_specs("sha256:i", "r1", ssh_dir="/tmp/key")
    for spec in specs:
        assert spec.mounts[-1] == BindMount("/tmp/key", SSH_DIR, read_only=True)
    assert specs[0].argv[0] == "mpirun" and specs[1].argv[0] == "/usr/sbin/sshd"


@pytest.mark.parametrize("user", ["0:0", "1000:0"])
def test_mpi_node_specs_give_a_root_sshd_its_capability_only(src: Path, user: str) -> None:
    p = plan(
        RunConfig("image:x", "train.py", source_directory=src, distribution=Mpi(2, 2), user=user)
    )
    launcher, worker = p.node_specs("sha256:i", "r1", ssh_dir="/tmp/key")
    assert launcher.cap_drop == p.cap_drop and "SYS_CHROOT" in p.cap_drop
    if user == "0:0":
        assert worker.cap_drop == tuple(c for c in p.cap_drop if c != "SYS_CHROOT")
    else:
        assert worker.cap_drop == p.cap_drop


def test_mpi_forwards_the_images_variables_to_every_rank(src: Path) -> None:
    # A rank started through ssh gets sshd's environment: without -x PATH it
    # would not find the venv's python, without PYTHONPATH not Debian's mpi4py.
    from envbuild.settings import Settings

    folder = Path(__file__).resolve().parents[2] / "curated" / "mpi-4.1-cpu"
    config = RunConfig(folder, "train.py", source_directory=src, distribution=Mpi(2, 2), user="0:0")
    p = plan(config, settings=Settings(home=src.parent / "home"))
    launcher = p.nodes("r1")[0]
    forwarded = {launcher.argv[i + 1] for i, a in enumerate(launcher.argv) if a == "-x"}
    assert {"PATH", "VIRTUAL_ENV", "HOME", "PYTHONPATH", "ENVBUILD_RUN_ID"} <= forwarded
    assert {"OMPI_MCA_btl_vader_single_copy_mechanism", "PYTHONUNBUFFERED"} <= forwarded
    image = plan(RunConfig("image:x", "train.py", source_directory=src, distribution=Mpi(2, 2)))
    assert "PATH" in image.forwarded_variables()
    assert "VIRTUAL_ENV" not in image.forwarded_variables()  # unknown for an image:REF
