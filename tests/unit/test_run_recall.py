"""`envbuild run` of an environment folder the memo still answers: planned from the memo,
without loading the definition, and the same run as the full path's (plan, container,
image, result), which it falls back to when the image is not there."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import envbuild.definition.model as model
from envbuild.build.builder import resolve
from envbuild.cache import memo
from envbuild.engine.records import ImageInfo
from envbuild.run.config import RunConfig
from envbuild.run.local import run
from envbuild.run.planning import plan
from envbuild.settings import Settings
from tests.fakes import with_base
from tests.run_fakes import FakeRunEngine

ROOT = Path(__file__).resolve().parents[2]
GPU_ENV = (
    'schema = 1\nname = "gpu"\n[base]\nimage = "debian:bookworm-slim"\n'
    '[gpu]\ncuda = "11.8"\n[run]\nworkdir = "/srv"\nshm_size = "4g"\n'
)


def _folder(tmp_path: Path, which: str) -> Path:
    folder = tmp_path / which
    if which == "hello":
        shutil.copytree(ROOT / "envs" / "hello", folder)
    else:
        folder.mkdir()
        (folder / "env.toml").write_text(GPU_ENV)
    return folder


def _engine_with_image(folder: Path, settings_: Settings) -> tuple[FakeRunEngine, str]:
    engine = FakeRunEngine(images=with_base())
    resolved = resolve(folder, settings=settings_, engine=engine)  # records the memo
    image = ImageInfo(
        id="sha256:" + "c" * 64,
        tags=(resolved.hash_tag, resolved.version_tag),
        labels={"io.envbuild.hash": resolved.hash},
    )
    engine.images[resolved.hash_tag] = engine.images[image.id] = image
    engine.images[resolved.version_tag] = image
    return engine, resolved.hash


def _no_fields(the_plan: object) -> dict[str, object]:
    skip = {"resolved", "recalled"}
    return {
        f.name: getattr(the_plan, f.name)
        for f in dataclasses.fields(the_plan)  # type: ignore[arg-type]
        if f.name not in skip
    }


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    which=st.sampled_from(["hello", "gpu"]),
    workdir=st.sampled_from([None, "/work"]),
    shm=st.sampled_from([None, "1g"]),
    variables=st.sampled_from([{}, {"A": "1"}]),
    arguments=st.sampled_from([(), ("--x", "y")]),
)
def test_the_recalled_plan_is_the_full_plan(
    tmp_path_factory: pytest.TempPathFactory,
    which: str,
    workdir: str | None,
    shm: str | None,
    variables: dict[str, str],
    arguments: tuple[str, ...],
) -> None:
    tmp = tmp_path_factory.mktemp("recall")
    settings_ = Settings(home=tmp / "home")
    folder = _folder(tmp, which)
    (tmp / "src").mkdir()
    (tmp / "src" / "train.py").write_text("")
    engine, digest = _engine_with_image(folder, settings_)
    config = RunConfig(
        environment=str(folder),
        script="train.py",
        arguments=arguments,
        source_directory=tmp / "src",
        workdir=workdir,
        shm_size=shm,
        environment_variables=variables,
    )
    recalled = plan(config, settings=settings_, engine=engine, recall=True)
    full = plan(config, settings=settings_, engine=engine)
    assert recalled.recalled is not None and recalled.resolved is None
    assert full.resolved is not None and full.recalled is None
    assert recalled.recalled.hash == full.resolved.hash == digest
    assert _no_fields(recalled) == _no_fields(full)
    assert recalled.container_spec("sha256:1", "0" * 12) == full.container_spec(
        "sha256:1", "0" * 12
    )


def _run(folder: Path, settings_: Settings, engine: FakeRunEngine, src: Path) -> object:
    config = RunConfig(environment=str(folder), script="train.py", source_directory=src)
    return run(
        config, settings=settings_, engine=engine, output=lambda s, d: None, log=lambda line: None
    )


@pytest.mark.parametrize("which", ["hello", "gpu"])
def test_a_recalled_run_is_the_full_run_without_loading_the_definition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    settings_ = Settings(home=tmp_path / "home")
    folder = _folder(tmp_path, which)
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text("")
    monkeypatch.setattr("envbuild.run.local._check_gpu_driver", lambda the_plan, cuda: None)
    engine, _digest = _engine_with_image(folder, settings_)
    full_engine, _ = _engine_with_image(folder, Settings(home=tmp_path / "other-home"))
    memo.forget(tmp_path / "other-home", folder.absolute(), settings_.platform)  # full path there

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the definition was loaded")

    with monkeypatch.context() as patched:
        patched.setattr(model, "load", no_load)
        patched.setattr("envbuild.build.builder.load", no_load)
        recalled = _run(folder, settings_, engine, src)
    full = _run(folder, Settings(home=tmp_path / "other-home"), full_engine, src)
    assert (recalled.image, recalled.image_id, recalled.exit_code) == (  # type: ignore[attr-defined]
        full.image, full.image_id, full.exit_code)  # type: ignore[attr-defined]  # fmt: skip
    (spec,) = engine.specs.values()
    (full_spec,) = full_engine.specs.values()
    assert dataclasses.replace(spec, labels={}, env=(), name=None) == dataclasses.replace(
        full_spec, labels={}, env=(), name=None
    )
    assert [k for k, _ in spec.env] == [k for k, _ in full_spec.env]


def test_a_recalled_plan_whose_image_is_gone_runs_the_whole_way(tmp_path: Path) -> None:
    settings_ = Settings(home=tmp_path / "home")
    folder = _folder(tmp_path, "hello")
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text("")
    engine, digest = _engine_with_image(folder, settings_)
    for ref in [r for r in engine.images if r.startswith("envbuild/hello:")]:
        del engine.images[ref]  # the image was removed: `build` builds it again
    result = _run(folder, settings_, engine, src)
    assert next(c[:1] for c in engine.calls if c[0] == "build") == ("build",)
    assert result.image.endswith(digest[:12])  # type: ignore[attr-defined]
