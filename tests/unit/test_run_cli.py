"""`envbuild run`, `runs`, `logs` on the command line, without an engine."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from envbuild.cli.main import main
from envbuild.run.history import History
from envbuild.settings import load_settings
from tests.unit.test_run_history import record

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "envs" / "hello"


@pytest.fixture
def src(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "train.py").write_text("")
    (folder / "plain.sh").write_text("echo hi\n")
    return folder


def dry(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(["run", "--dry-run", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_everything_after_script_is_the_scripts(
    capsys: pytest.CaptureFixture[str], src: Path
) -> None:
    args = ["a b", "-e", "x", "--", "--help", "--dry-run", "$HOME", "ü", "--source-dir", "/"]
    doc = dry(capsys, "--source-dir", str(src), "image:example:1", "train.py", *args)
    assert doc["argv"] == ["python", "/workspace/train.py", *args]


def test_options_become_the_plan(
    capsys: pytest.CaptureFixture[str], src: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env_file = tmp_path / "vars.env"
    env_file.write_text("FROM_FILE=1\n")
    os.environ["ENVBUILD_TEST_PASSED"] = "yes"
    try:
        doc = dry(
            capsys,
            "--source-dir",
            str(src),
            "-e",
            "A=1",
            "--env",
            "ENVBUILD_TEST_PASSED",
            "--env-file",
            str(env_file),
            "--mount",
            f"{data}:/ref",
            "--input",
            f"data={data}:download",
            "--output",
            f"model={tmp_path / 'out'}",
            "--gpus",
            "2",
            "--shm-size",
            "1g",
            "--workdir",
            "/tmp",
            "--user",
            "1000:1000",
            "--timeout",
            "60",
            "--name",
            "my-run",
            "image:example:1",
            "train.py",
            "--data",
            "${{inputs.data}}",
            "--out",
            "${{outputs.model}}",
        )
    finally:
        del os.environ["ENVBUILD_TEST_PASSED"]
    assert doc["argv"] == [
        "python",
        "/workspace/train.py",
        "--data",
        "/inputs/data",
        "--out",
        "/outputs/model",
    ]
    variables = doc["variables"]  # the names only: values may be secrets
    assert isinstance(variables, list)
    assert {"A", "ENVBUILD_TEST_PASSED", "FROM_FILE"} <= set(variables)
    assert "NVIDIA_VISIBLE_DEVICES" not in variables
    assert doc["gpus"] == {"count": 2}
    assert (doc["shm_size"], doc["workdir"], doc["user"]) == ("1g", "/tmp", "1000:1000")
    assert (doc["timeout"], doc["name"]) == (60.0, "my-run")
    assert {"source": str(data.resolve()), "target": "/ref", "read_only": True} in doc["mounts"]  # type: ignore[operator]
    assert not (tmp_path / "out").exists()  # a dry run creates nothing


def test_dry_run_text(
    capsys: pytest.CaptureFixture[str], src: Path, engine_holds_base: None
) -> None:
    assert main(["run", "--dry-run", "--source-dir", str(src), str(HELLO), "train.py", "x"]) == 0
    text = capsys.readouterr().out
    assert "environment  hello v1" in text
    assert 'argv         ["python", "/workspace/train.py", "x"]' in text
    assert "gpus         none (hidden)" in text


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--bogus", "image:x", "train.py"], 125, "No such option"),
        (["image:x"], 125, "Missing argument"),
        (["image:x", "missing.py"], 127, "not found"),
        (["image:x", "plain.sh"], 126, "not executable"),
        (["image:x", "train.py", "${{inputs.nope}}"], 125, "placeholder"),
        (["--mount", "/etc:/host-etc", "image:x", "train.py"], 125, "refusing to mount /etc"),
        (["--mount", "/nonexistent-path:/x", "image:x", "train.py"], 125, "does not exist"),
        (["--gpus", "0", "image:x", "train.py"], 125, "at least one GPU"),
        (["--timeout", "0", "image:x", "train.py"], 125, "--timeout"),
        (["/nonexistent-env", "train.py"], 125, "no such environment definition"),
        (["image:x", "train.py"], 125, "cannot reach the Docker engine"),  # no engine here
    ],
)
def test_exit_codes_follow_docker_run(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    src: Path,
    argv: list[str],
    code: int,
    message: str,
) -> None:
    monkeypatch.chdir(src)
    assert main(["run", *argv]) == code
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_allow_dangerous_mount_warns(capsys: pytest.CaptureFixture[str], src: Path) -> None:
    argv = ["--allow-dangerous-mount", "--mount", "/etc:/host-etc", "--source-dir", str(src)]
    doc = dry(capsys, *argv, "image:x", "train.py")
    assert doc["warnings"] and "mounting /etc" in doc["warnings"][0]  # type: ignore[index]


def test_run_help_lists_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--help"]) == 0
    text = capsys.readouterr().out
    assert "127  the script was not found" in text and "${{inputs.data}}" in text


def test_runs_and_logs(capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings()
    history = History.at(settings)
    log = settings.home / "runs" / "abcdef123456.log"
    log.parent.mkdir(parents=True)
    log.write_bytes(b"hello\n\xff raw bytes\n")
    history.start(record("abcdef123456", log_path=str(log)))
    history.finish("abcdef123456", status="exited", exit_code=3, duration=2.5, finished=1.0)
    history.start(record("bbbbbb000000", log_path=str(log)))

    assert main(["runs"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("ID")
    assert any(line.startswith("abcdef123456") and " 3 " in line for line in table)

    assert main(["runs", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["id"] for r in rows) == ["abcdef123456", "bbbbbb000000"]

    assert main(["runs", "show", "abcd", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["exit_code"] == 3 and shown["variables"] == ["MESSAGE"]

    assert main(["runs", "show", "nope"]) == 2
    assert "no run 'nope'" in capsys.readouterr().err


def test_logs_prints_raw_bytes(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    settings = load_settings()
    log = settings.home / "runs" / "abcdef123456.log"
    log.parent.mkdir(parents=True)
    log.write_bytes(b"hello\n\xff raw bytes\n")
    History.at(settings).start(record("abcdef123456", log_path=str(log)))
    assert main(["logs", "abcdef"]) == 0
    assert capfdbinary.readouterr().out == b"hello\n\xff raw bytes\n"


def test_runs_without_history(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs"]) == 0
    assert "no runs recorded" in capsys.readouterr().err
    assert main(["logs", "abc"]) == 2
