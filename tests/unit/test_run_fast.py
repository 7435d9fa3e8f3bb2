"""The click-free `run` path means exactly what the full command line means."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import envbuild.run as runner
from envbuild.cli.main import main
from envbuild.cli.run import run as run_command
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
    ["--distribution", "pytorch", "--nodes", "2", "--procs-per-node", "2", "image:x", "train.py"],
    ["--distribution", "tensorflow", "--nodes", "2", "--parameter-servers", "1", "image:x", "t.py"],
    ["--distribution", "mpi", "--rendezvous-timeout", "30", "image:x", "train.py"],
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
        (["--source-dir", "train.py", "image:x", "train.py"], 125),  # a file, not a folder
        (["--env-file", ".", "image:x", "train.py"], 125),
        (["--timeout", "soon", "image:x", "train.py"], 125),
        (["--timeout", "0", "image:x", "train.py"], 125),
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


def test_a_source_dir_that_is_a_file_reads_the_same_on_both_paths(
    src: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--source-dir", "train.py", "image:x", "train.py"]
    assert parse(argv) is not None
    assert fast_run(argv) == 125
    fast_err = capsys.readouterr().err
    assert main(argv) == 125
    assert capsys.readouterr().err == fast_err == "error: --source-dir: train.py is not a folder\n"


# --------------------------------------------------------------------------
# Property: on command lines made from the click command's own parameters,
# the console script (fast path first, click when it declines) and the click
# command alone build the same run, or fail with the same words and code.
# --------------------------------------------------------------------------

VALUES = [
    ".",
    "..",
    "train.py",
    "vars.env",
    "missing.py",
    "../data",
    "../nowhere",
    "A=1",
    "INHERITED",
    "UNSET_HERE",
    "1A=x",
    "1g",
    "lots",
    "0",
    "-1",
    "2.5",
    "soon",
    "inf",
    "nan",
    "1e99",
    "all",
    "0,1",
    "1:2",
    "me",
    "/tmp",
    "d=../data",
    "d=../data:download",
    "d=../data:copy",
    "o=../out",
    "o=../data",
    "../data:/d:rw",
    "../data:/d",
    "/etc:/e",
    "reduced",
    "default",
    "NET_RAW",
    "cap_mknod",
    "SYS_ADMIN",
    "",
    " ",
    "a b",
    "-x",
    "--help",
    "--dry-run",
    "${{inputs.d}}",
    "${{outputs.o}}",
    "mpi",
    "pytorch",
    "tensorflow",
    "2",
    "gloo",
    "nccl",
    "launch",
]
OPTIONS = [p for p in run_command.params if isinstance(p, click.Option)]
FIRST, SECOND = (p for p in run_command.params if p.name in ("env", "script"))


def _option_words(option: click.Option) -> st.SearchStrategy[list[str]]:
    name = st.sampled_from([*option.opts, *option.secondary_opts])
    if option.is_flag:
        return name.map(lambda n: [n])
    joined = [o for o in option.opts if o.startswith("--")]
    forms = [st.tuples(name, st.sampled_from(VALUES)).map(list)]
    if joined:
        forms.append(
            st.tuples(st.sampled_from(joined), st.sampled_from(VALUES)).map(
                lambda t: [f"{t[0]}={t[1]}"]
            )
        )
    return st.one_of(*forms)


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    words: list[str] = ["run"]
    for chunk in draw(st.lists(st.sampled_from(OPTIONS).flatmap(_option_words), max_size=6)):
        words += chunk
    if draw(st.booleans()) and draw(st.booleans()):
        words.append(draw(st.sampled_from(["--", "--bogus", "-qe", "--help", "-e", "--name"])))
    positional = draw(
        st.lists(
            st.sampled_from(["image:x", "image:", "/nonexistent-env", "train.py", "missing.py"]),
            max_size=2,
        )
    )
    assert FIRST.name == "env" and SECOND.name == "script"  # the order the lists follow
    words += positional
    if len(positional) == 2:
        words += draw(st.lists(st.sampled_from([*VALUES, "-e", "--", "-q"]), max_size=3))
    return words


def _outcome(
    call: object, argv: list[str], captured: list[RunConfig], capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[str], str, str]:
    captured.clear()
    code = call(argv)  # type: ignore[operator]
    out = capsys.readouterr()
    return code, [repr(c) for c in captured], out.out, out.err  # repr: nan == nan


def _console(argv: list[str]) -> int:
    """What the console script does: the fast path, else the full command line."""
    code = fast_run(argv)
    return main(argv[:]) if code is None else code


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(argv=command_lines())
def test_fast_and_click_paths_agree(
    src: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    captured: list[RunConfig] = []

    def fake_run(config: RunConfig, **kwargs: object) -> RunResult:
        captured.append(config)
        runner.plan(config)  # the checks a real run makes before the engine
        return RunResult("r", 7, "exited", 0.0, src / "log", MappingProxyType({}), "i", "i")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "run", fake_run)
        console = _outcome(_console, argv, captured, capsys)
        full = _outcome(lambda a: main(list(a)), argv, captured, capsys)
    assert console == full, argv
