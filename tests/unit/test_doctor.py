"""envbuild doctor's verdicts, with a fake engine and driver-version fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from envbuild.catalog import doctor
from envbuild.cli.main import main
from envbuild.engine.protocols import EngineInfo
from envbuild.errors import EngineError
from envbuild.settings import load_settings
from tests.unit.test_gpu import PROC_TEXTS

ROOT = Path(__file__).resolve().parents[2]
CURATED = ROOT / "curated"


class InfoEngine:
    """Answers ``info`` (or fails it, as a dead engine does)."""

    def __init__(self, root: Path | None, *, down: bool = False) -> None:
        self.root = root
        self.down = down

    def info(self) -> EngineInfo:
        if self.down:
            raise EngineError("cannot reach the Docker engine: refused", hint="start the engine")
        return EngineInfo(version="27.0.1", root_dir=str(self.root or ""))


def _proc(tmp_path: Path, version: str) -> Path:
    path = tmp_path / f"nvidia-{version}"
    path.write_text(PROC_TEXTS[version])
    return path


def _report(tmp_path: Path, **kwargs: object) -> doctor.Report:
    values: dict[str, object] = {
        "settings": load_settings(),
        "engine": InfoEngine(tmp_path),
        "catalog": CURATED,
        "proc_path": tmp_path / "no-driver",
        "nvidia_smi": "",
    }
    values.update(kwargs)
    return doctor.diagnose(**values)  # type: ignore[arg-type]


def _line(report: doctor.Report, name: str) -> doctor.Check:
    (found,) = [c for c in report.checks if c.name == name]
    return found


def test_a_dead_engine_fails_with_the_fix(tmp_path: Path) -> None:
    report = _report(tmp_path, engine=InfoEngine(None, down=True))
    engine = _line(report, "engine")
    assert engine.status == "fail" and engine.fix == "start the engine"
    assert not report.ok
    assert "fix: start the engine" in report.table()


def test_the_unit_suites_docker_client_is_missing(tmp_path: Path) -> None:
    # tests/unit/conftest.py points ENVBUILD_DOCKER at a file that does not exist
    line = _line(_report(tmp_path), "buildkit client")
    assert line.status == "fail" and "was not found" in line.detail
    assert "ENVBUILD_DOCKER" in line.fix


def test_mmdebstrap_missing_from_path_fails_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    line = _line(_report(tmp_path), "mmdebstrap")
    assert line.status == "fail" and line.fix == "apt-get install mmdebstrap"


def test_the_engine_version_and_disk(tmp_path: Path) -> None:
    report = _report(tmp_path)
    assert _line(report, "engine").detail == "Docker 27.0.1 answers"
    disk = _line(report, "disk: engine data")
    assert disk.status in ("ok", "warn", "fail") and str(tmp_path) in disk.detail
    home = _line(report, "disk: ENVBUILD_HOME")
    assert str(load_settings().home) in home.detail  # not made: the nearest existing parent


def test_little_disk_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "DISK_FAIL", 2**62)
    monkeypatch.setattr(doctor, "DISK_WARN", 2**63)
    line = _line(_report(tmp_path), "disk: engine data")
    assert line.status == "fail" and "docker image prune" in line.fix


def test_registry_not_configured_is_skipped(tmp_path: Path) -> None:
    line = _line(_report(tmp_path), "registry")
    assert line.status == "skip" and "not configured" in line.detail


@pytest.mark.parametrize(
    ("found", "gpu_required", "status"),
    [
        (None, False, "warn"),  # no GPU is a warning ...
        (None, True, "fail"),  # ... unless asked
        ("418.87", False, "warn"),  # too old for pytorch-1.6-gpu's CUDA 10.2
        ("418.87", True, "fail"),
        ("440.33.01", True, "ok"),
        ("550.54.14", False, "ok"),  # the open kernel module's text
    ],
)
def test_the_driver_against_the_curated_cuda(
    tmp_path: Path, found: str | None, gpu_required: bool, status: str
) -> None:
    proc = _proc(tmp_path, found) if found else tmp_path / "no-driver"
    report = _report(tmp_path, proc_path=proc, gpu_required=gpu_required)
    line = _line(report, "gpu: pytorch-1.6-gpu")
    assert line.status == status
    assert "440.33" in line.detail
    if found:
        assert found in line.detail
    assert report.ok is (status != "fail" and _others_ok(report))


def _others_ok(report: doctor.Report) -> bool:
    return all(c.status != "fail" for c in report.checks if not c.name.startswith("gpu"))


def test_a_catalog_without_cuda_skips_the_driver(tmp_path: Path) -> None:
    report = _report(tmp_path, catalog=ROOT / "envs")
    line = _line(report, "gpu driver")
    assert line.status == "skip"


def test_cli_json_and_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    # The unit suite's engine and docker client do not exist: both lines fail, exit 1.
    assert main(["doctor", "--json", "--catalog", str(CURATED)]) == 1
    data = json.loads(capsys.readouterr().out)
    statuses = {c["name"]: c["status"] for c in data["checks"]}
    assert statuses["engine"] == "fail" and statuses["buildkit client"] == "fail"
    assert data["ok"] is False and "gpu: pytorch-1.6-gpu" in statuses


def test_cli_table(capsys: pytest.CaptureFixture[str]) -> None:
    main(["doctor", "--catalog", str(CURATED)])
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["CHECK", "STATUS", "DETAIL"]
    assert "fix: start the engine" in out
