"""The public API: `import envbuild`, its names, one signature convention, docs/api.md."""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import envbuild
from envbuild.settings import Settings, load_settings
from tests.run_fakes import FakeRunEngine

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "envs" / "hello"
DOCUMENTED = {
    "load",
    "Environment",
    "Settings",
    "load_settings",
    "resolve",
    "build",
    "BuildResult",
    "lock",
    "RunConfig",
    "Input",
    "Output",
    "Mount",
    "plan",
    "run",
    "RunResult",
    "EnvbuildError",
}


def test_import_envbuild_loads_nothing_heavy() -> None:
    """The console script's cache-hit path imports the package: it must cost nothing."""
    # importlib and typing are what the lazy loader itself uses; an interpreter
    # whose site hooks load them already (this machine's pyenv does) must not
    # pass where a clean virtual environment fails, so they are loaded first.
    code = (
        "import sys, importlib, typing\n"
        "before = set(sys.modules)\n"
        "import envbuild\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out == "['envbuild']\n"


def test_the_documented_names_are_there() -> None:
    assert set(envbuild.__all__) >= DOCUMENTED
    for name in envbuild.__all__:
        assert getattr(envbuild, name) is not None, name
    assert set(dir(envbuild)) >= DOCUMENTED
    with pytest.raises(AttributeError):
        _ = envbuild.nothing_like_this
    assert issubclass(envbuild.RunError, envbuild.EnvbuildError)


@pytest.mark.parametrize("name", ["build", "lock", "run"])
def test_names_of_subpackages_are_callable_subpackages(name: str) -> None:
    package = getattr(envbuild, name)
    assert callable(package)
    assert package.__name__ == f"envbuild.{name}"  # the subpackage, with all it holds


def test_calling_the_run_package_runs(tmp_path: Path) -> None:
    engine = FakeRunEngine().with_image()
    (tmp_path / "t.py").write_text("")
    config = envbuild.RunConfig(
        environment="image:example:1", script="t.py", source_directory=tmp_path
    )
    result = envbuild.run(config, engine=engine, handle_signals=False)
    assert result.exit_code == 0 and engine.specs


def _api_functions() -> dict[str, Any]:
    from envbuild.build.builder import build
    from envbuild.lock.makers import lock
    from envbuild.run.local import run

    return {
        "resolve": envbuild.resolve,
        "build": build,
        "lock": lock,
        "plan": envbuild.plan,
        "run": run,
    }


@pytest.mark.parametrize("name", ["resolve", "build", "lock", "plan", "run"])
def test_one_signature_convention(name: str) -> None:
    parameters = inspect.signature(_api_functions()[name]).parameters
    assert "settings" in parameters
    for key in ("settings", "engine", "log"):
        if key in parameters:
            assert parameters[key].kind is inspect.Parameter.KEYWORD_ONLY, (name, key)
            assert parameters[key].default is None, (name, key)
    if name not in ("resolve", "plan"):  # the two that never touch the engine
        assert {"engine", "log"} <= set(parameters)


def test_settings_are_passed_down_never_read_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = load_settings()
    mine = Settings(home=tmp_path / "my-home", prefix="mine", docker=settings.docker)

    def forbidden(*args: object, **kwargs: object) -> Settings:
        raise AssertionError("load_settings() was called behind the caller")

    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("envbuild") and hasattr(
            module, "load_settings"
        ):
            monkeypatch.setattr(module, "load_settings", forbidden)
    engine = FakeRunEngine()
    resolved = envbuild.resolve(HELLO, settings=mine, engine=engine)
    built = envbuild.build(HELLO, settings=mine, engine=engine)
    assert built.image.startswith("mine/hello:") and resolved.hash == built.hash
    assert (tmp_path / "my-home").is_dir()  # the memo and the build lock live there
    source = tmp_path / "src"
    source.mkdir()
    (source / "train.py").write_text("")
    config = envbuild.RunConfig(environment=HELLO, script="train.py", source_directory=source)
    assert envbuild.plan(config, settings=mine, engine=engine).image == built.image
    result = envbuild.run(config, settings=mine, engine=engine, handle_signals=False)
    assert result.exit_code == 0 and result.image == built.image


def doc_blocks() -> list[str]:
    """The Python code blocks of docs/api.md, in order."""
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def doc_workspace(folder: Path) -> None:
    """What the example starts from: envs/hello, and a script and data of one's own."""
    shutil.copytree(HELLO, folder / "envs" / "hello")
    (folder / "src").mkdir()
    shutil.copy(HELLO / "train.py", folder / "src" / "train.py")
    (folder / "data").mkdir()
    (folder / "data" / "numbers.txt").write_text("1 2 3\n")


def test_the_docs_example_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/api.md's code, run as written, with the Docker engine replaced by a fake."""
    import envbuild.engine.docker as docker_engine
    import envbuild.run.local as run_local

    engine = FakeRunEngine()
    monkeypatch.setattr(docker_engine, "DockerEngine", lambda *a, **k: engine)
    monkeypatch.setattr(run_local, "DockerEngine", lambda *a, **k: engine)
    doc_workspace(tmp_path)
    monkeypatch.chdir(tmp_path)
    blocks = doc_blocks()
    assert len(blocks) == 3
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, "docs/api.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "hello 1 ('six==1.16.0',)" in out
    assert "('python', '/workspace/train.py', '--data', '/inputs/data')" in out
    assert "exit code 0" in out
    assert "ScriptNotFoundError 127" in out
    assert any(kind == "build" for kind, _ in engine.calls)
