"""The build orchestration against a fake engine: cache hits, tagging, failures."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import envbuild.lock as locking
from envbuild.build.builder import HASH_LABEL, build, find_ca_bundle, resolve
from envbuild.engine.docker import ImageInfo
from envbuild.errors import BuildError, EngineError, UsageError
from envbuild.settings import load_settings
from tests.fakes import BASE, BASE_ID, FakeEngine, with_base

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "envs" / "hello"


def test_miss_builds_then_tags_hash_last() -> None:
    settings = load_settings()
    engine = FakeEngine()
    result = build(HELLO, settings=settings, engine=engine)
    assert not result.cached
    kinds = [kind for kind, _ in engine.calls]
    # the unlocked base's identity, the lookup, the lookup again under the build
    # lock, the base again (it must not have moved since it was hashed)
    assert kinds == ["inspect", "inspect", "inspect", "inspect", "build", "tag", "tag"]
    calls = list(engine.calls)
    resolved = resolve(HELLO, settings=settings, engine=engine)
    assert calls[-1] == ("tag", resolved.hash_tag)
    assert calls[-2] == ("tag", resolved.version_tag)
    assert result.image == f"envbuild/hello:{resolved.hash[:12]}"
    assert engine.images[resolved.hash_tag].labels[HASH_LABEL] == resolved.hash


def test_hit_is_one_engine_call_and_one_more_for_an_unlocked_base() -> None:
    settings = load_settings()
    engine = FakeEngine()
    build(HELLO, settings=settings, engine=engine)
    engine.calls.clear()
    result = build(HELLO, settings=settings, engine=engine)
    assert result.cached
    assert engine.calls == [("inspect", BASE), ("inspect", result.image)]
    locked = ROOT / "curated" / "python-3.11"  # its base is pinned by the lock
    pin = locking.read(locked)
    assert pin is not None and pin.base is not None
    engine = FakeEngine(images={BASE: ImageInfo(id=pin.base.id)})
    build(locked, settings=settings, engine=engine)
    engine.calls.clear()
    result = build(locked, settings=settings, engine=engine)
    assert result.cached
    assert engine.calls == [("inspect", result.image)]


def test_hash12_collision_is_not_a_hit() -> None:
    settings = load_settings()
    resolved = resolve(HELLO, settings=settings, engine=FakeEngine())
    engine = FakeEngine(
        images=with_base(
            **{resolved.hash_tag: ImageInfo(id="sha256:x", labels={HASH_LABEL: "0" * 64})}
        )
    )
    assert not build(HELLO, settings=settings, engine=engine).cached


def test_failed_build_leaves_no_tag() -> None:
    settings = load_settings()
    engine = FakeEngine(fail_build=True)
    with pytest.raises(BuildError):
        build(HELLO, settings=settings, engine=engine)
    assert not any(kind == "tag" for kind, _ in engine.calls)
    assert engine.images == with_base()


def test_rebuild_skips_the_cache() -> None:
    settings = load_settings()
    engine = FakeEngine()
    build(HELLO, settings=settings, engine=engine)
    engine.calls.clear()
    result = build(HELLO, settings=settings, engine=engine, rebuild=True)
    assert not result.cached
    # the base's identity, the check that it did not move, the build
    assert [kind for kind, _ in engine.calls][:3] == ["inspect", "inspect", "build"]


def test_waiting_process_reuses_the_image() -> None:
    """A second build of the same hash waits for the lock, then reuses the image."""
    settings = load_settings()
    release = threading.Event()
    started = threading.Event()

    class SlowEngine(FakeEngine):
        def build(self, request, log):
            started.set()
            release.wait(10)
            return super().build(request, log)

    engine = SlowEngine()
    results = []
    first = threading.Thread(
        target=lambda: results.append(build(HELLO, settings=settings, engine=engine))
    )
    first.start()
    started.wait(5)
    messages: list[str] = []
    second = threading.Thread(
        target=lambda: results.append(
            build(HELLO, settings=settings, engine=engine, log=messages.append)
        )
    )
    second.start()
    release.set()
    first.join(10)
    second.join(10)
    assert sum(1 for kind, _ in engine.calls if kind == "build") == 1
    assert sorted(r.cached for r in results) == [False, True]


def test_ca_bundle_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("x")
    monkeypatch.setenv("PIP_CERT", str(bundle))
    assert find_ca_bundle() == bundle
    with pytest.raises(UsageError):
        find_ca_bundle(tmp_path / "missing.pem")


def test_ca_bundle_is_not_hashed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    before = resolve(HELLO, settings=settings, engine=FakeEngine()).hash
    bundle = tmp_path / "ca.pem"
    bundle.write_text("rotated")
    monkeypatch.setenv("PIP_CERT", str(bundle))
    engine = FakeEngine()
    result = build(HELLO, settings=settings, engine=engine)
    assert result.hash == before


def test_hit_moves_the_version_tag_to_the_image_it_answers(write_env) -> None:
    """Two folders with the same name and version, built alternately: each answer's
    tags, the version tag included, name the image it returns."""
    settings = load_settings()
    engine = FakeEngine()
    one = write_env('schema = 1\nname = "twin"\nversion = 3\n', folder="one")
    two = write_env('schema = 1\nname = "twin"\nversion = 3\n[variables]\nX = "2"\n', folder="two")
    first = build(one, settings=settings, engine=engine)
    second = build(two, settings=settings, engine=engine)
    assert first.id != second.id
    again = build(one, settings=settings, engine=engine)
    assert again.cached
    assert again.tags == (first.image, "envbuild/twin:3")
    assert engine.images["envbuild/twin:3"].id == first.id == again.id
    engine.calls.clear()
    assert build(one, settings=settings, engine=engine).cached
    # the base's identity, the lookup; the version tag is already there: no request
    assert engine.calls == [("inspect", BASE), ("inspect", first.image)]


def test_finding_2_a_retagged_unlocked_base_is_another_hash(write_env) -> None:
    """Retag the base an unlocked environment names: another hash, a new build,
    the old hash tag untouched (also by --rebuild), and explain says the base changed."""
    from envbuild.cache.hashing import manifest
    from envbuild.catalog.explain import explain

    settings = load_settings()
    engine = FakeEngine()
    folder = write_env('schema = 1\nname = "u"\n')
    first = build(folder, settings=settings, engine=engine)
    engine.images[BASE] = ImageInfo(id="sha256:" + "7" * 64, tags=(BASE,))  # docker tag X base
    second = build(folder, settings=settings, engine=engine)
    assert not second.cached
    assert second.hash != first.hash
    assert engine.images[first.image].id == first.id != second.id
    engine.images[BASE] = ImageInfo(id="sha256:" + "8" * 64, tags=(BASE,))
    third = build(folder, settings=settings, engine=engine, rebuild=True)
    assert third.hash not in (first.hash, second.hash)
    assert engine.images[second.image].id == second.id  # not re-pointed
    resolved = resolve(folder, settings=settings, engine=engine)
    context = resolved.context
    result = explain(
        context,
        resolved.hash,
        platform=settings.platform,
        manifest=manifest(context, platform=settings.platform),
        image=engine.images[first.image],
        image_ref=first.image,
    )
    text = result.render()
    assert "base_pin: the base image debian:bookworm-slim changed" in text
    assert "sha256:777777777777" not in text  # first was built on the original base
    assert f"the engine's image {BASE_ID[:19]} (not locked)" in text
    assert "the engine's image sha256:888888888888 (not locked)" in text


def test_the_base_moving_during_a_build_is_refused(write_env) -> None:
    settings = load_settings()
    engine = FakeEngine()
    folder = write_env('schema = 1\nname = "u"\n')
    resolved = resolve(folder, settings=settings, engine=engine)
    engine.images[BASE] = ImageInfo(id="sha256:" + "7" * 64)
    with pytest.raises(EngineError, match="changed while u was being resolved"):
        build(resolved, settings=settings, engine=engine)
    assert not any(kind in ("build", "tag") for kind, _ in engine.calls)


def test_a_failed_tag_leaves_no_tag_and_no_untagged_image() -> None:
    from envbuild.errors import EngineError

    settings = load_settings()
    engine = FakeEngine()
    resolved = resolve(HELLO, settings=settings, engine=engine)
    real_tag = engine.tag

    def tag(image_id: str, ref: str) -> None:
        if ref == resolved.hash_tag:
            raise EngineError("cannot tag: the engine answered 500")
        real_tag(image_id, ref)

    engine.tag = tag  # type: ignore[method-assign]
    with pytest.raises(EngineError):
        build(HELLO, settings=settings, engine=engine)
    assert set(engine.images) == {BASE}  # the version tag taken back, the image removed by ID
    assert [kind for kind, _ in engine.calls][-2:] == ["remove", "remove"]


def test_sigterm_during_a_build_unwinds_and_leaves_no_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import signal
    import tempfile

    from envbuild.errors import Interrupted

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    settings = load_settings()
    engine = FakeEngine()
    seen: list[Path] = []

    def slow_build(request, log):
        seen.append(request.context_dir)
        os.kill(os.getpid(), signal.SIGTERM)  # what `kill PID` does mid-build
        raise AssertionError("SIGTERM did not interrupt the build")

    engine.build = slow_build  # type: ignore[method-assign]
    with pytest.raises(Interrupted) as info:
        build(HELLO, settings=settings, engine=engine)
    assert info.value.signum == signal.SIGTERM
    assert seen and not seen[0].exists()  # the context folder is gone
    assert not any(kind == "tag" for kind, _ in engine.calls)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
    from envbuild.errors import exit_code_for

    assert exit_code_for(info.value) == 143


def test_a_state_folder_without_room_for_locks_still_builds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "locks").write_text("a file where the locks go")
    monkeypatch.setenv("ENVBUILD_HOME", str(home))
    warnings: list[str] = []
    result = build(HELLO, settings=load_settings(), engine=FakeEngine(), warn=warnings.append)
    assert not result.cached
    assert any("cannot take the build lock" in w for w in warnings)


def test_an_unlocked_base_the_engine_lacks_is_pulled_then_hashed(write_env) -> None:
    """As `docker build` would, build pulls a missing unlocked base; the hash names
    the image pulled. `hash` does not pull: it says what to do."""

    class Pulling(FakeEngine):
        def pull_image(self, ref, auth, log):
            self.calls.append(("pull", ref))
            self.images[BASE] = ImageInfo(id=BASE_ID, tags=(BASE,))

    settings = load_settings()
    engine = Pulling(images={})
    folder = write_env('schema = 1\nname = "fresh"\n')
    with pytest.raises(EngineError, match="the engine does not hold it"):
        resolve(folder, settings=settings, engine=engine)
    result = build(folder, settings=settings, engine=engine)
    assert ("pull", BASE) in engine.calls
    assert result.hash == resolve(folder, settings=settings, engine=engine).hash
