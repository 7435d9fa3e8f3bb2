"""Push, fetch and the registry tier of build, against the fake engine's registry."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from envbuild.build import travel
from envbuild.build.builder import HASH_LABEL, Resolved, build, resolve
from envbuild.engine.protocols import BuildRequest, ImageInfo
from envbuild.engine.registry import Registry, image_path
from envbuild.errors import RegistryError
from envbuild.identity import BASE_DRIFT_LOCKED_LABEL
from envbuild.lock import makers
from envbuild.lock.model import LockError, Locks, render_index
from envbuild.settings import load_settings
from tests.fakes import BASE, FakeEngine, with_base

HELLO = Path(__file__).resolve().parents[2] / "envs" / "hello"
REGISTRY = "127.0.0.1:5000/team"


def _remote(engine: FakeEngine) -> travel.Remote:
    return travel.Remote(Registry("127.0.0.1:5000", "team"), engine)


def _built() -> tuple[FakeEngine, travel.Remote, Resolved]:
    settings = load_settings()
    engine = FakeEngine()
    build(HELLO, settings=settings, engine=engine)
    return engine, _remote(engine), resolve(HELLO, settings=settings, engine=engine)


def test_push_tags_hash_first_and_verifies_then_a_repush_is_heads_only() -> None:
    engine, remote, resolved = _built()
    engine.calls.clear()
    result = travel.push(resolved, remote=remote, engine=engine, log=lambda line: None)
    hash_ref = f"{REGISTRY}/hello:{resolved.hash[:12]}"
    assert result.pushed and result.refs == (hash_ref, f"{REGISTRY}/hello:1")
    pushes = [ref for kind, ref in engine.calls if kind == "push"]
    assert pushes == [hash_ref, f"{REGISTRY}/hello:1"]  # the moving tag only after the hash tag
    engine.calls.clear()
    again = travel.push(resolved, remote=remote, engine=engine, log=lambda line: None)
    assert not again.pushed and again.digest == result.digest
    assert [kind for kind, _ in engine.calls] == ["inspect", "head", "head"]


def test_a_failed_push_leaves_no_registry_tag() -> None:
    engine, remote, resolved = _built()
    engine.refuse = "unauthorized: authentication required"
    with pytest.raises(RegistryError, match="unauthorized"):
        travel.push(resolved, remote=remote, engine=engine, log=lambda line: None)
    assert not [ref for ref in engine.images if ref.startswith(REGISTRY)]
    assert engine.registry == {}


def test_build_answers_from_the_registry_without_building() -> None:
    engine, remote, resolved = _built()
    travel.push(resolved, remote=remote, engine=engine, log=lambda line: None)
    pushed_id = engine.images[resolved.hash_tag].id
    empty = FakeEngine(registry=dict(engine.registry))  # another machine, same registry
    result = build(HELLO, settings=load_settings(), engine=empty, remote=_remote(empty))
    assert (result.answered_by, result.id) == ("registry", pushed_id)
    assert not [kind for kind, _ in empty.calls if kind == "build"]
    assert empty.images[resolved.hash_tag].id == pushed_id
    assert empty.calls[-1] == ("tag", resolved.hash_tag)  # the hash tag last


def test_a_tampered_registry_image_is_refused_and_nothing_is_tagged() -> None:
    engine, remote, resolved = _built()
    travel.push(resolved, remote=remote, engine=engine, log=lambda line: None)
    for ref, (digest, info) in list(engine.registry.items()):
        engine.registry[ref] = (digest, type(info)(id=info.id, labels={HASH_LABEL: "0" * 64}))
    empty = FakeEngine(registry=dict(engine.registry))
    with pytest.raises(RegistryError, match="refused") as error:
        build(HELLO, settings=load_settings(), engine=empty, remote=_remote(empty))
    assert "0" * 64 in error.value.message
    assert not [kind for kind, _ in empty.calls if kind in ("tag", "build")]
    # no reference but the base the other machine held already
    assert [ref for ref in empty.images if not ref.startswith("sha256:")] == [BASE]


def test_a_miss_everywhere_builds_with_the_inline_cache_of_the_earlier_version() -> None:
    settings = load_settings()
    engine = FakeEngine()
    requests = []
    real_build = engine.build

    def spy(request, log):
        requests.append(request)
        return real_build(request, log)

    engine.build = spy  # type: ignore[method-assign]
    started = time.monotonic()
    result = build(HELLO, settings=settings, engine=engine, remote=_remote(engine))
    assert result.answered_by == "built" and time.monotonic() - started < 30
    assert requests[0].build_args["BUILDKIT_INLINE_CACHE"] == "1"
    assert requests[0].cache_from == ()  # the registry holds no version of it yet


# -- bases pinned in a registry ----------------------------------------------------------


def test_image_path_drops_the_registry_and_library() -> None:
    assert image_path("debian:bookworm-slim") == ("debian", "bookworm-slim")
    assert image_path("docker.io/library/ubuntu") == ("ubuntu", "latest")
    assert image_path("localhost:5000/org/img:2@sha256:" + "a" * 64) == ("org/img", "2")


def test_a_base_pinned_in_a_registry_round_trips_and_is_pulled_when_missing() -> None:
    base = "debian:bookworm-slim"
    engine = FakeEngine(images={base: ImageInfo(id="sha256:" + "b" * 64, tags=(base,))})
    engine.images[engine.images[base].id] = engine.images[base]
    remote = _remote(engine)
    pushed = travel.push_base(base, remote=remote, engine=engine, log=lambda line: None)
    assert pushed.pinned == f"{REGISTRY}/debian@{pushed.digest}"
    pin = makers.pin_base(base, engine, remote.registry, engine)
    assert (pin.kind, pin.id, pin.source) == ("digest", pushed.digest, f"{REGISTRY}/debian")
    assert pin.from_ref == pushed.pinned
    text = render_index(Locks(base=pin))
    assert f'source = "{REGISTRY}/debian"' in text

    fresh = FakeEngine(registry=dict(engine.registry))  # a machine without the base
    makers.check_base(pin, fresh)
    assert ("pull", pushed.pinned) in fresh.calls


def test_a_registry_holding_another_base_is_a_clear_lock_error() -> None:
    base = "debian:bookworm-slim"
    engine = FakeEngine(images={base: ImageInfo(id="sha256:" + "b" * 64, tags=(base,))})
    engine.registry[f"{REGISTRY}/debian:bookworm-slim"] = ("sha256:" + "c" * 64, ImageInfo("x"))
    with pytest.raises(LockError, match="which is not the engine's") as error:
        makers.pin_base(base, engine, _remote(engine).registry, engine)
    assert "envbuild base push debian:bookworm-slim --registry" in (error.value.hint or "")


def test_a_cache_import_that_buildkit_skipped_is_reported() -> None:
    engine, remote, resolved = _built()
    travel.push(resolved, remote=remote, engine=engine, log=lambda line: None)
    settings = load_settings()
    changed = FakeEngine(registry=dict(engine.registry))
    real_build = changed.build
    source = f"{REGISTRY}/hello:1"

    def skipping(request: BuildRequest, log: Callable[[str], None]) -> str:
        assert request.cache_from == (source,)
        for line in (
            f"#6 importing cache manifest from {source}",
            f"#6 ERROR: {source}: not found",
        ):
            log(line)
        return real_build(request, log)

    changed.build = skipping  # type: ignore[method-assign]
    warnings: list[str] = []
    result = build(
        HELLO,
        settings=settings,
        engine=changed,
        remote=travel.Remote(Registry("127.0.0.1:5000", "team"), _NoHashTag(changed)),
        warn=warnings.append,
    )
    assert result.answered_by == "built"
    assert [w for w in warnings if "could not be imported" in w] == [
        f"envbuild: warning: the layer cache of {source} could not be imported "
        f"({source}: not found); built without it"
    ]


class _NoHashTag:
    """A registry API that holds the version tag but not this hash (a changed definition)."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def manifest_digest(self, name: str, reference: str) -> str | None:
        return self.engine.manifest_digest(name, reference) if reference == "1" else None


def test_a_repush_answers_without_click_like_the_full_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from envbuild.cli.launcher import pushed_already
    from envbuild.cli.main import main
    from envbuild.engine.docker import DockerEngine
    from envbuild.engine.registry import RegistryClient

    settings = load_settings()
    fake = FakeEngine(images=with_base())
    monkeypatch.setattr(DockerEngine, "inspect_image", lambda self, ref: fake.inspect_image(ref))
    monkeypatch.setattr(DockerEngine, "tag", lambda self, image_id, ref: fake.tag(image_id, ref))
    monkeypatch.setattr(DockerEngine, "push_image", lambda self, *a: fake.push_image(*a))
    monkeypatch.setattr(
        RegistryClient, "manifest_digest", lambda self, name, ref: fake.manifest_digest(name, ref)
    )
    argv = ["push", str(HELLO), "--registry", "127.0.0.1:5000/team", "--json", "-q"]
    assert pushed_already(argv) is None  # no memo yet: the full command line
    result = build(HELLO, settings=settings, engine=fake)
    # An image built on a drifted base: the full command line, which refuses it.
    info = fake.images[result.image]
    drifted = info._replace(labels={**info.labels, BASE_DRIFT_LOCKED_LABEL: "x"})
    fake.images[result.image] = drifted
    assert pushed_already(argv) is None
    assert fake.registry == {}
    fake.images[result.image] = info
    # The registry lacks it: pushed here, as the full path pushes (hash tag first).
    fake.calls.clear()
    assert pushed_already(argv) == 0
    pushed = json.loads(capsys.readouterr().out)
    assert pushed["pushed"] is True
    assert [ref for kind, ref in fake.calls if kind == "push"] == list(pushed["refs"])
    assert pushed["digest"] == fake.manifest_digest("hello", "1")
    fake.calls.clear()
    assert pushed_already(argv) == 0
    assert [kind for kind, _ in fake.calls] == ["inspect", "inspect", "head", "head"]
    fast = json.loads(capsys.readouterr().out)
    assert main(argv) == 0
    full = json.loads(capsys.readouterr().out)
    assert fast.pop("seconds") < 1 and full.pop("seconds") < 1
    pushed.pop("seconds")
    assert fast == full == {**pushed, "pushed": False}
    assert fast["pushed"] is False and fast["digest"] == pushed["digest"]


def test_base_pull_gives_the_pushed_image_id_under_the_base_name() -> None:
    base = "debian:bookworm-slim"
    image_id = "sha256:" + "b" * 64
    engine = FakeEngine(images={base: ImageInfo(id=image_id, tags=(base,))})
    engine.images[image_id] = engine.images[base]
    remote = _remote(engine)
    pushed = travel.push_base(base, remote=remote, engine=engine, log=lambda line: None)
    fresh = FakeEngine(images={}, registry=dict(engine.registry))  # a machine without it
    pulled = travel.pull_base(base, remote=_remote(fresh), engine=fresh, log=lambda line: None)
    assert (pulled.pulled, pulled.id) == (pushed.pinned, image_id)
    info = fresh.inspect_image(base)
    assert info is not None and info.id == image_id
    # A lock that pins the image ID is satisfied there now.
    assert makers.check_base(makers.pin_base(base, engine), fresh) is None
    with pytest.raises(RegistryError) as err:
        travel.pull_base("ubuntu:20.04", remote=_remote(fresh), engine=fresh, log=print)
    assert "holds no 127.0.0.1:5000/team/ubuntu:20.04" in err.value.message
    assert "envbuild base push ubuntu:20.04 --registry 127.0.0.1:5000/team" in (
        err.value.hint or ""
    )


def test_an_image_built_on_a_drifted_base_is_never_pushed(tmp_path: Path) -> None:
    from envbuild.lock.model import BasePin

    settings = load_settings()
    folder = tmp_path / "hello"
    folder.mkdir()
    (folder / "env.toml").write_text('schema = 1\nname = "hello"\n[python]\nversion = "3.11"\n')
    pin = BasePin("debian:bookworm-slim", "image-id", "sha256:" + "a" * 64)
    (folder / "env.lock.toml").write_text(render_index(Locks(base=pin)))
    engine = FakeEngine()
    result = build(folder, settings=settings, engine=engine, base_drift="allow")
    assert result.base_drift is not None
    drifted = resolve(folder, settings=settings, engine=engine, memo=False, drift=result.base_drift)
    # As the engine would, the image carries its Dockerfile's labels.
    labels = dict(engine.images[result.image].labels)
    labels["io.envbuild.base.drift.locked"] = pin.id
    engine.images[result.image] = ImageInfo(result.id, (result.image,), labels)
    with pytest.raises(LockError, match="is not pushed: the base debian:bookworm-slim drifted"):
        travel.push(drifted, remote=_remote(engine), engine=engine, log=lambda line: None)
    assert engine.registry == {}


def _drive(monkeypatch: pytest.MonkeyPatch, fake: FakeEngine) -> None:
    """The real engine class and registry client, answering from ``fake``."""
    from envbuild.engine.docker import DockerEngine
    from envbuild.engine.registry import RegistryClient

    for method in ("inspect_image", "tag", "pull_image", "push_image", "remove_image", "build"):
        monkeypatch.setattr(DockerEngine, method, lambda self, *a, _m=method: getattr(fake, _m)(*a))
    monkeypatch.setattr(
        RegistryClient, "manifest_digest", lambda self, name, ref: fake.manifest_digest(name, ref)
    )


def test_a_registry_hit_answers_without_click_like_the_full_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from envbuild.cli.launcher import cached_build
    from envbuild.cli.main import main

    engine, remote, resolved = _built()  # the memo knows the hash now
    travel.push(resolved, remote=remote, engine=engine, log=lambda line: None)
    pushed_id = engine.images[resolved.hash_tag].id
    argv = ["build", str(HELLO), "--registry", REGISTRY, "--json", "-q"]

    def machine() -> FakeEngine:  # another engine: the base, and the same registry
        fresh = FakeEngine(registry=dict(engine.registry))
        _drive(monkeypatch, fresh)
        return fresh

    fast_engine = machine()
    assert cached_build(argv) == 0
    fast = json.loads(capsys.readouterr().out)
    kinds = [kind for kind, _ in fast_engine.calls]
    assert "build" not in kinds and kinds.count("head") == 1 and kinds.count("pull") == 1
    assert fast_engine.calls[-1] == ("tag", resolved.hash_tag)  # the hash tag last
    machine()
    assert main(argv) == 0
    full = json.loads(capsys.readouterr().out)
    assert fast.pop("seconds") < 1 and full.pop("seconds") < 1
    assert fast == full
    assert (fast["tier"], fast["id"], fast["hash"]) == ("registry", pushed_id, resolved.hash)

    # A registry that lacks the image: the full command line (which builds).
    empty = FakeEngine()
    _drive(monkeypatch, empty)
    assert cached_build(argv) is None
    assert not [kind for kind, _ in empty.calls if kind in ("pull", "tag", "build")]

    # A tampered image: refused as the full path refuses it (exit 6), nothing tagged.
    for ref, (digest, info) in list(engine.registry.items()):
        engine.registry[ref] = (digest, info._replace(labels={HASH_LABEL: "0" * 64}))
    tampered = machine()
    assert cached_build(argv) == 6
    assert "refused" in capsys.readouterr().err
    assert resolved.hash_tag not in tampered.images
    assert resolved.version_tag not in tampered.images


def test_a_failed_base_push_leaves_no_registry_tag() -> None:
    """Bases, job images and environments share one push-and-verify step."""
    base = "debian:bookworm-slim"
    engine = FakeEngine(images={base: ImageInfo(id="sha256:" + "b" * 64, tags=(base,))})
    engine.images[engine.images[base].id] = engine.images[base]
    engine.refuse = "denied: requested access to the resource is denied"
    with pytest.raises(RegistryError, match="denied"):
        travel.push_base(base, remote=_remote(engine), engine=engine, log=lambda line: None)
    assert not [ref for ref in engine.images if ref.startswith(REGISTRY)]
    assert engine.registry == {}
