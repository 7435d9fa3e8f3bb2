"""The click-free `run` path means exactly what the full command line means."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import pytest

from envbuild import run as runner
from envbuild.cli.main import main
from envbuild.cli.run_fast import fast_run, parse
from envbuild.run.config import RunConfig, RunResult


@pytest.fixture
def src(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "train.py").write_text("")
    (folder / "vars.env").write_text("FROM_FILE=1\nA=from-file\n")
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("INHERITED", "yes")
    return folder


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[RunConfig]:
    configs: list[RunConfig] = []

    def fake_run(config: RunConfig, **kwargs: object) -> RunResult:
        configs.append(config)
        return RunResult("r", 7, "exited", 0.0, tmp_path / "log", MappingProxyType({}), "i", "i")

    monkeypatch.setattr(runner, "run", fake_run)
    return configs


SAME = [
    ["image:x", "train.py"],
    ["image:x", "train.py", "a b", "-e", "x", "--", "--help", "--dry-run", "${{inputs.d}}"],
    ["-e", "A=1", "--env", "INHERITED", "-e", "UNSET_HERE", "image:x", "train.py"],
    ["--env-file", "vars.env", "-e", "A=2", "image:x", "train.py"],
    ["--source-dir", ".", "--mount", "../data:/d:rw", "--mount", "../data:/e", "image:x", "t.py"],
    ["--input", "d=../data:download", "--output", "o=../out", "image:x", "train.py"],
    ["--gpus", "0,1", "--shm-size", "1g", "-w", "/tmp", "-u", "1:2", "image:x", "train.py"],
    ["--workdir", "/w", "--user", "me", "--timeout", "2.5", "--name", "n1", "image:x", "t.py"],
    ["-q", "--allow-dangerous-mount", "--name", "a", "--name", "b", "image:x", "train.py"],
    ["--privileges", "default", "--cap-add", "NET_RAW", "--cap-add", "mknod", "image:x", "t.py"],
]


@pytest.mark.parametrize("argv", SAME)
def test_both_paths_build_the_same_run(
    src: Path, captured: list[RunConfig], argv: list[str]
) -> None:
    assert parse(["run", *argv]) is not None
    fast = fast_run(["run", *argv])
    full = main(["run", *argv])
    assert fast == full == 7
    assert len(captured) == 2
    assert captured[0] == captured[1]


@pytest.mark.parametrize(
    "argv",
    [
        ["--dry-run", "image:x", "train.py"],
        ["--help"],
        ["--source-dir=.", "image:x", "train.py"],
        ["--", "image:x", "train.py"],
        ["--timeout", "soon", "image:x", "train.py"],
        ["--timeout", "0", "image:x", "train.py"],
        ["--bogus", "image:x", "train.py"],
        ["-eA=1", "image:x", "train.py"],
        ["image:x"],
        ["-e"],
        [],
    ],
)
def test_everything_else_goes_to_the_full_command_line(argv: list[str]) -> None:
    assert parse(["run", *argv]) is None
    assert fast_run(["run", *argv]) is None


def test_other_commands_are_not_taken() -> None:
    assert parse(["build", "envs/hello"]) is None
    assert parse(["--debug", "run", "image:x", "train.py"]) is None


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["image:x", "missing.py"], 127),
        (["--mount", "/etc:/e", "image:x", "train.py"], 125),
        (["image:x", "train.py", "${{inputs.nope}}"], 125),
        (["--gpus", "0", "image:x", "train.py"], 125),
        (["image:x", "train.py"], 125),  # no engine in unit tests
    ],
)
def test_errors_read_the_same(
    src: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int
) -> None:
    assert fast_run(["run", *argv]) == code
    fast_err = capsys.readouterr().err
    assert main(["run", *argv]) == code
    full_err = capsys.readouterr().err
    assert fast_err == full_err
    assert fast_err.startswith("error: ")
