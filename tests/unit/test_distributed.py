"""Distributed runs: the model, its checks, the command line, and each rank's contract."""

from __future__ import annotations

from pathlib import Path

import pytest

from envbuild.errors import RunConfigError
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
from envbuild.run.planning import plan


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


def test_a_distributed_run_is_refused_locally_never_run_on_one_container(src: Path) -> None:
    from envbuild.run.local import run

    class NoEngine:
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"the engine was asked for {name}")

    config = RunConfig("image:x", "train.py", source_directory=src, distribution=PyTorch(2, 2))
    with pytest.raises(RunConfigError) as info:
        run(config, engine=NoEngine())  # type: ignore[arg-type]
    assert "not yet supported locally" in info.value.message
    assert "export kubernetes" in (info.value.hint or "")
