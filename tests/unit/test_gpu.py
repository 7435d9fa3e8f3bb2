"""The host's NVIDIA driver against an image's CUDA: parsing, the table, the verdict, the run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from envbuild.engine.protocols import ImageInfo
from envbuild.errors import EXIT_RUN_ENGINE, GpuDriverError, exit_code_for
from envbuild.run import gpu
from envbuild.run.config import RunConfig
from envbuild.run.local import run
from envbuild.settings import load_settings
from tests.run_fakes import IMAGE_ID, FakeRunEngine

# The text of /proc/driver/nvidia/version as the kernel modules write it.
PROC_TEXTS = {
    "535.104.05": (
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  "
        "Sat Aug 19 01:15:15 UTC 2023\n"
        "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14) \n"
    ),
    "550.54.14": (
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.14  "
        "Release Build  (dvs-builder@U16-I3-B03-4-3)  Thu Feb 22 01:25:25 UTC 2024\n"
        "GCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04) \n"
    ),
    "560.35.03": (
        "NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  560.35.03  "
        "Release Build  (dvs-builder@U16-I1-N08-12-3)  Fri Aug 16 21:22:33 UTC 2024\n"
        "GCC version:  gcc version 11.4.0 (Ubuntu 11.4.0-1ubuntu1~22.04) \n"
    ),
    "440.33.01": (
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  440.33.01  "
        "Wed Nov 13 00:00:22 UTC 2019\n"
        "GCC version:  gcc version 7.4.0 (Ubuntu 7.4.0-1ubuntu1~18.04.1) \n"
    ),
    "418.87": (
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  418.87.00  "
        "Thu Aug  8 15:35:46 CDT 2019\n"
        "GCC version:  gcc version 7.4.0 (Ubuntu 7.4.0-1ubuntu1~18.04.1) \n"
    ).replace("418.87.00", "418.87"),
}


@pytest.mark.parametrize("expected", sorted(PROC_TEXTS))
def test_proc_texts_parse(expected: str) -> None:
    assert gpu.parse_proc_version(PROC_TEXTS[expected]) == expected


@pytest.mark.parametrize("text", ["", "GCC version: gcc 12\n", "NVRM version: something else\n"])
def test_text_without_a_version_is_none(text: str) -> None:
    assert gpu.parse_proc_version(text) is None


@pytest.mark.parametrize(
    ("cuda", "minimum"),
    [
        ("10.2", "440.33"),
        ("11.0", "450.36.06"),
        ("11.8", "520.61.05"),
        ("11.8.0", "520.61.05"),
        ("12.0", "525.60.13"),
        ("12.7", "525.60.13"),  # not a release: the 12.x minor-compatibility floor
        ("12.99", "525.60.13"),  # newer than any row: the same floor
        ("99.0", None),  # an unknown major: nothing documented
    ],
)
def test_minimum_driver(cuda: str, minimum: str | None) -> None:
    assert gpu.minimum_driver(cuda) == minimum


def test_the_table_is_ordered_like_the_releases() -> None:
    rows = list(gpu.MIN_DRIVER.items())
    assert rows == sorted(rows, key=lambda row: gpu.version_key(row[0]))
    drivers = [gpu.version_key(d) for _, d in rows]
    assert drivers == sorted(drivers), "a later CUDA never needs an older driver"


def _driver(tmp_path: Path, text: str | None) -> gpu.HostDriver:
    proc = tmp_path / "version"
    if text is not None:
        proc.write_text(text)
    return gpu.host_driver(proc_path=proc, nvidia_smi="")


@pytest.mark.parametrize(
    ("found", "cuda", "ok"),
    [
        ("535.104.05", "12.2", True),
        ("535.104.05", "12.3", False),
        ("440.33.01", "10.2", True),
        ("418.87", "10.2", False),
        ("550.54.14", "10.2", True),
        ("560.35.03", "12.6", True),
    ],
)
def test_verdict_from_fixtures(tmp_path: Path, found: str, cuda: str, ok: bool) -> None:
    driver = _driver(tmp_path, PROC_TEXTS[found])
    assert driver.version == found and driver.source == str(tmp_path / "version")
    verdict = gpu.check_driver(cuda, driver)
    assert verdict.ok is ok
    assert verdict.minimum == gpu.MIN_DRIVER[cuda]
    assert verdict.minimum in verdict.message and found in verdict.message


def test_no_driver_is_a_clear_error(tmp_path: Path) -> None:
    driver = _driver(tmp_path, None)
    assert driver.version is None
    with pytest.raises(GpuDriverError) as caught:
        gpu.require_driver("10.2", gpus="all", driver=driver)
    error = caught.value
    assert "needs NVIDIA driver >= 440.33" in error.message
    assert "no NVIDIA driver found" in error.message
    assert error.minimum == "440.33" and error.found is None and error.cuda == "10.2"
    assert exit_code_for(error, run=True) == EXIT_RUN_ENGINE
    assert error.exit_code == EXIT_RUN_ENGINE


def test_too_old_names_both_versions(tmp_path: Path) -> None:
    with pytest.raises(
        GpuDriverError, match=r"needs NVIDIA driver >= 440\.33; this host has 418\.87"
    ):
        gpu.require_driver("10.2", gpus="all", driver=_driver(tmp_path, PROC_TEXTS["418.87"]))


def test_unknown_cuda_passes(tmp_path: Path) -> None:
    gpu.require_driver("99.0", gpus="all", driver=_driver(tmp_path, PROC_TEXTS["535.104.05"]))


def _fake_smi(tmp_path: Path, script: str) -> str:
    program = tmp_path / "nvidia-smi"
    program.write_text("#!/bin/sh\n" + script)
    program.chmod(0o755)
    return str(program)


def test_nvidia_smi_answers_when_the_file_is_absent(tmp_path: Path) -> None:
    smi = _fake_smi(tmp_path, 'echo "535.104.05"\necho "535.104.05"\n')
    driver = gpu.host_driver(proc_path=tmp_path / "absent", nvidia_smi=smi)
    assert driver == gpu.HostDriver("535.104.05", smi)


def test_nvidia_smi_that_fails_is_no_driver(tmp_path: Path) -> None:
    smi = _fake_smi(tmp_path, 'echo "NVIDIA-SMI has failed" >&2\nexit 9\n')
    driver = gpu.host_driver(proc_path=tmp_path / "absent", nvidia_smi=smi)
    assert driver.version is None and "NVIDIA-SMI has failed" in driver.detail


# -- the run layer checks first ----------------------------------------------------


@pytest.fixture
def no_driver(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(gpu, "PROC_VERSION", tmp_path / "no-nvidia-version")
    monkeypatch.setattr(gpu, "NVIDIA_SMI", "")


def _cuda_engine(cuda: str | None) -> FakeRunEngine:
    engine = FakeRunEngine()
    labels = {"io.envbuild.cuda": cuda} if cuda else {}
    engine.images["example:1"] = ImageInfo(id=IMAGE_ID, labels=labels)
    return engine


def _config(tmp_path: Path, gpus: str | None) -> RunConfig:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "train.py").write_text("")
    return RunConfig(
        environment="image:example:1", script="train.py", source_directory=src, gpus=gpus
    )


def test_a_cuda_image_with_gpus_and_no_driver_creates_nothing(
    tmp_path: Path, no_driver: None
) -> None:
    engine = _cuda_engine("10.2")
    settings = load_settings()
    with pytest.raises(GpuDriverError, match=r"needs NVIDIA driver >= 440\.33"):
        run(_config(tmp_path, "all"), settings=settings, engine=engine, log=lambda line: None)
    assert engine.ops == [] and not engine.specs
    assert not (settings.home / "runs").exists()  # no log, no history row: nothing began


def test_a_driver_too_old_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proc = tmp_path / "version"
    proc.write_text(PROC_TEXTS["418.87"])
    monkeypatch.setattr(gpu, "PROC_VERSION", proc)
    engine = _cuda_engine("10.2")
    with pytest.raises(GpuDriverError, match=r"this host has 418\.87"):
        run(_config(tmp_path, "1"), settings=load_settings(), engine=engine, log=lambda _: None)
    assert engine.ops == []


@pytest.mark.parametrize(("cuda", "gpus"), [("10.2", None), (None, "all")])
def test_no_check_without_gpus_or_without_cuda(
    tmp_path: Path, no_driver: None, cuda: str | None, gpus: str | None
) -> None:
    engine = _cuda_engine(cuda)
    result = run(
        _config(tmp_path, gpus), settings=load_settings(), engine=engine, log=lambda _: None
    )
    assert result.exit_code == 0 and engine.ops[0] == "create"


def test_a_remote_engine_is_not_checked_against_this_host(
    tmp_path: Path, no_driver: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://gpu-box.example:2376")
    engine = _cuda_engine("10.2")
    run(_config(tmp_path, "all"), settings=load_settings(), engine=engine, log=lambda _: None)
    assert engine.ops[0] == "create"


def test_an_environment_folder_is_checked_before_it_is_built(
    tmp_path: Path, no_driver: None
) -> None:
    engine = FakeRunEngine()
    folder = Path(__file__).resolve().parents[2] / "curated" / "pytorch-1.6-gpu"
    config = dataclasses.replace(_config(tmp_path, "all"), environment=str(folder))
    with pytest.raises(GpuDriverError, match=r"CUDA 10\.2 needs NVIDIA driver >= 440\.33"):
        run(config, settings=load_settings(), engine=engine, log=lambda _: None)
    assert engine.ops == [] and not [c for c in engine.calls if c[0] == "build"]
