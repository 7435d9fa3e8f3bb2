"""One map from error to exit code; internal failures, and the user's files, have their own."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import envbuild
from envbuild.build.builder import build, resolve
from envbuild.cli.main import main
from envbuild.cli.run_fast import fast_run
from envbuild.errors import (
    EXIT_CODES,
    EXIT_INTERNAL,
    EXIT_MEANINGS,
    EXIT_USAGE,
    EnvbuildError,
    UsageError,
    exit_code_for,
)
from envbuild.settings import load_settings
from tests.fakes import FakeEngine

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "envs" / "hello"


def _all_subclasses(cls: type) -> set[type]:
    found: set[type] = set()
    subclasses: list[type] = cls.__subclasses__()
    for sub in subclasses:
        found |= {sub, *_all_subclasses(sub)}
    return found


def test_every_envbuild_error_lives_in_the_one_hierarchy() -> None:
    for info in pkgutil.walk_packages(envbuild.__path__, "envbuild."):
        if info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except ImportError:  # an optional dependency (py-rattler) absent here
            continue
    classes = {c for c in _all_subclasses(EnvbuildError) if c.__module__.startswith("envbuild")}
    assert classes, "no error classes found"
    elsewhere = sorted(
        f"{c.__module__}.{c.__name__}" for c in classes if c.__module__ != "envbuild.errors"
    )
    assert elsewhere == []
    for cls in classes:
        assert "exit_code" not in vars(cls), f"{cls.__name__} sets its own exit code"


def test_the_root_error_is_not_a_check_saying_no() -> None:
    assert EnvbuildError("x").exit_code == EXIT_INTERNAL != 1
    assert exit_code_for(RuntimeError("boom")) == EXIT_INTERNAL
    assert exit_code_for(RuntimeError("boom"), run=True) == 125
    assert exit_code_for(KeyboardInterrupt(), run=True) == 130
    assert set(EXIT_CODES.values()) - {125, 126, 127} <= set(EXIT_MEANINGS)


def test_nothing_raises_the_root_error_itself() -> None:
    """An error raised on purpose says whose problem it is; the bare root means a bug."""
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted((ROOT / "builder" / "envbuild").rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"raise EnvbuildError\(", line)
    ]
    assert offenders == []


def test_readme_lists_the_exit_codes_of_the_map() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", section, flags=re.MULTILINE))
    assert rows == {str(code): meaning for code, meaning in EXIT_MEANINGS.items()}


def test_help_lists_the_same_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for code, meaning in EXIT_MEANINGS.items():
        assert re.search(rf"{code}\s+{re.escape(meaning)}", out), (code, out)


@pytest.fixture
def broken_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    from envbuild.definition import model

    def boom(env: object) -> None:
        raise ValueError("surprise\nsecond line")

    monkeypatch.setattr(model, "load", boom)


@pytest.mark.usefixtures("broken_validate")
def test_an_internal_failure_is_one_line_and_its_own_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["validate", str(HELLO)]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("\n") == 1
    assert err.startswith("error: internal error in envbuild: ValueError: surprise second line (")
    assert "--debug" in err


@pytest.mark.usefixtures("broken_validate")
def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--debug", "validate", str(HELLO)]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "Traceback" in err and "ValueError" in err


def test_an_internal_failure_of_run_is_125_on_both_paths(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from envbuild.run import config

    def boom(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(config, "config_from_options", boom)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.py").write_text("")
    assert fast_run(["run", "image:x", "t.py"]) == 125
    fast = capsys.readouterr().err
    assert main(["run", "image:x", "t.py"]) == 125
    assert capsys.readouterr().err == fast
    assert fast.startswith("error: internal error in envbuild: ZeroDivisionError: oops")


@pytest.mark.parametrize("option", ["--ca-bundle", "--netrc"])
@pytest.mark.parametrize("problem", ["missing", "folder"])
def test_an_unusable_user_file_is_a_usage_error_before_the_engine(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, option: str, problem: str
) -> None:
    path = tmp_path / "missing.pem"
    if problem == "folder":
        path.mkdir()
    # No engine in unit tests: before, the cache lookup failed first (5).
    assert main(["build", option, str(path), str(HELLO)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert option in err and str(path) in err and "engine" not in err


@pytest.mark.parametrize("keyword", ["ca_bundle", "netrc"])
def test_a_cache_hit_does_not_ignore_a_missing_user_file(tmp_path: Path, keyword: str) -> None:
    settings = load_settings()
    engine = FakeEngine()
    build(HELLO, settings=settings, engine=engine)
    engine.calls.clear()
    with pytest.raises(UsageError) as caught:
        build(HELLO, settings=settings, engine=engine, **{keyword: tmp_path / "missing"})  # type: ignore[arg-type]
    assert caught.value.exit_code == EXIT_USAGE
    assert engine.calls == []  # checked before the cache lookup
    assert resolve(HELLO, settings=settings, engine=engine).hash  # the definition itself is fine


def test_lock_checks_its_ca_bundle_first(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["lock", "--ca-bundle", str(tmp_path / "nope.pem"), str(HELLO)]) == EXIT_USAGE
    assert "--ca-bundle" in capsys.readouterr().err


def test_a_platform_envbuild_cannot_install_for_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A setting's problem (ENVBUILD_PLATFORM), not a bug in envbuild (70)."""
    monkeypatch.setenv("ENVBUILD_PLATFORM", "linux/s390x")
    assert main(["render", str(HELLO)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "'linux/s390x'" in err and "internal error" not in err
