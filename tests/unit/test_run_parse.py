"""The run layer's option strings: variables, env files, mounts, inputs, outputs, sizes, GPUs."""

from __future__ import annotations

from pathlib import Path

import pytest

from envbuild.engine.docker import GpuRequest
from envbuild.errors import RunConfigError
from envbuild.run.config import (
    Input,
    Mount,
    Output,
    parse_env_file,
    parse_gpus,
    parse_input,
    parse_mount,
    parse_output,
    parse_shm_size,
    parse_variable,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1", ("A", "1")),
        ("A=", ("A", "")),
        ("A==b=c", ("A", "=b=c")),
        ("A=two words", ("A", "two words")),
        ("A='quoted'", ("A", "'quoted'")),  # literal, as docker
        ("A=$HOME", ("A", "$HOME")),
        ("A=line1\nline2", ("A", "line1\nline2")),
        ("lower.dotted-name=x", ("lower.dotted-name", "x")),
    ],
)
def test_parse_variable(text: str, expected: tuple[str, str]) -> None:
    assert parse_variable(text, environ={}) == expected


def test_parse_variable_name_alone_passes_the_callers_value() -> None:
    assert parse_variable("TOKEN", environ={"TOKEN": "s3cret"}) == ("TOKEN", "s3cret")
    assert parse_variable("TOKEN", environ={}) is None  # unset: left out, as docker does


@pytest.mark.parametrize("text", ["=1", "1A=x", "A B=x", "", "-e=x"])
def test_parse_variable_rejects_bad_names(text: str) -> None:
    with pytest.raises(RunConfigError, match="not a variable name"):
        parse_variable(text, environ={})


def test_parse_env_file(tmp_path: Path) -> None:
    path = tmp_path / "vars.env"
    path.write_text(
        '# a comment\n\nA=1\n  B=two words\nC="kept quotes"\nINHERIT\nMISSING\n', "utf-8"
    )
    assert parse_env_file(path, environ={"INHERIT": "yes"}) == [
        ("A", "1"),
        ("B", "two words"),
        ("C", '"kept quotes"'),
        ("INHERIT", "yes"),
    ]


def test_parse_env_file_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "vars.env"
    path.write_text("A=1\n2B=x\n", "utf-8")
    with pytest.raises(RunConfigError, match=r"vars.env:2: "):
        parse_env_file(path, environ={})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("./data:/data", Mount(Path("./data"), "/data", read_only=True)),
        ("/srv/x:/x:ro", Mount(Path("/srv/x"), "/x", read_only=True)),
        ("/srv/x:/x:rw", Mount(Path("/srv/x"), "/x", read_only=False)),
        ("/a:b/c:/c", Mount(Path("/a:b/c"), "/c", read_only=True)),
    ],
)
def test_parse_mount(text: str, expected: Mount) -> None:
    assert parse_mount(text) == expected


@pytest.mark.parametrize("text", ["/data", ":/data", "/data:", "/data:ro"])
def test_parse_mount_rejects(text: str) -> None:
    with pytest.raises(RunConfigError, match="SRC:DST"):
        parse_mount(text)


def test_parse_input_and_output() -> None:
    assert parse_input("data=./mnist") == Input("data", Path("./mnist"), "mount")
    assert parse_input("data=./mnist:mount") == Input("data", Path("./mnist"), "mount")
    assert parse_input("data=./mnist:download") == Input("data", Path("./mnist"), "download")
    assert parse_output("model=out/m") == Output("model", Path("out/m"))
    for bad in ("data", "data="):
        with pytest.raises(RunConfigError, match="NAME=PATH"):
            parse_input(bad)
    for bad in ("model", "model="):
        with pytest.raises(RunConfigError, match="NAME=DIR"):
            parse_output(bad)


@pytest.mark.parametrize(
    ("text", "size"),
    [("2g", 2 << 30), ("512m", 512 << 20), ("64k", 64 << 10), ("1024", 1024), ("2GB", 2 << 30)],
)
def test_parse_shm_size(text: str, size: int) -> None:
    assert parse_shm_size(text) == size


@pytest.mark.parametrize("text", ["0", "-1g", "2x", "g", ""])
def test_parse_shm_size_rejects(text: str) -> None:
    with pytest.raises(RunConfigError):
        parse_shm_size(text)


@pytest.mark.parametrize(
    ("text", "request_"),
    [
        ("all", GpuRequest(count=-1)),
        ("2", GpuRequest(count=2)),
        ("0,1", GpuRequest(device_ids=("0", "1"))),
        ("device=1", GpuRequest(device_ids=("1",))),
        ("GPU-3a2b", GpuRequest(device_ids=("GPU-3a2b",))),
    ],
)
def test_parse_gpus(text: str, request_: GpuRequest) -> None:
    assert parse_gpus(text) == request_


@pytest.mark.parametrize("text", ["0", "", "a b", "1,,2", "device=", "²", "1²", "device=²", "٣"])
def test_parse_gpus_rejects(text: str) -> None:
    with pytest.raises(RunConfigError):
        parse_gpus(text)
