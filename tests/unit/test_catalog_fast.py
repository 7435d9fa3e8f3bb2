"""The console script's catalog fast path (`build --all DIR` answered from the memo) and
the full command line: the same answer whenever the fast path answers, and an answer
exactly when every environment is a cache hit."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envbuild.build.builder import resolve
from envbuild.cache import memo
from envbuild.catalog.order import build_order
from envbuild.catalog.results import discover, parents_first
from envbuild.cli.launcher import cached_catalog
from envbuild.engine.docker import DockerEngine
from envbuild.engine.records import ImageInfo
from envbuild.settings import load_settings
from tests.fakes import FakeEngine, with_base

ROOT = Path(__file__).resolve().parents[2]
# A child that sorts before its parent, a grandchild, and one on its own.
CATALOG = {
    "zz-base": 'schema = 1\nname = "zz-base"\n[base]\nimage = "debian:bookworm-slim"\n',
    "aa-child": 'schema = 1\nname = "aa-child"\nversion = 2\nextends = "../zz-base"\n'
    '[system]\npackages = ["curl"]\n',
    "bb-grandchild": 'schema = 1\nname = "bb-grandchild"\nextends = "../aa-child"\n'
    '[variables]\nA = "1"\n',
    "mm-alone": 'schema = 1\nname = "mm-alone"\n[base]\nimage = "debian:bookworm-slim"\n',
}
STATES = ("hit", "missing", "wrong-label", "version-tag-elsewhere", "no-memo", "edited")


def _catalog(root: Path) -> Path:
    shutil.rmtree(root, ignore_errors=True)
    for name, text in CATALOG.items():
        (root / name).mkdir(parents=True)
        (root / name / "env.toml").write_text(text)
    (root / "not-an-env").mkdir()
    return root


def _patch(monkeypatch: pytest.MonkeyPatch, fake: FakeEngine) -> None:
    monkeypatch.setattr(DockerEngine, "inspect_image", lambda self, ref: fake.inspect_image(ref))
    monkeypatch.setattr(
        DockerEngine, "inspect_images", lambda self, refs: [fake.inspect_image(r) for r in refs]
    )
    monkeypatch.setattr(DockerEngine, "tag", lambda self, image_id, ref: fake.tag(image_id, ref))


def _prepare(root: Path, fake: FakeEngine, states: dict[str, str]) -> None:
    """Resolve each environment (which records its memo), then put the engine and the
    files in the state drawn for it."""
    settings = load_settings()
    for number, name in enumerate(CATALOG):
        resolved = resolve(root / name, settings=settings, engine=fake)
        state = states[name]
        image_id = f"sha256:{number:064x}"
        labels = {"io.envbuild.hash": resolved.hash if state != "wrong-label" else "0" * 64}
        tags = (resolved.hash_tag,) if state == "version-tag-elsewhere" else (
            resolved.hash_tag, resolved.version_tag)  # fmt: skip
        info = ImageInfo(id=image_id, tags=tags, labels=labels)
        if state != "missing":
            fake.images[image_id] = fake.images[resolved.hash_tag] = info
            if state != "version-tag-elsewhere":
                fake.images[resolved.version_tag] = info
        if state == "version-tag-elsewhere":
            other = ImageInfo(id="sha256:" + "e" * 64, tags=(resolved.version_tag,))
            fake.images[other.id] = fake.images[resolved.version_tag] = other
        if state == "no-memo":
            memo.forget(settings.home, (root / name).absolute(), settings.platform)
        if state == "edited":
            path = root / name / "env.toml"
            path.write_text(path.read_text() + "# edited\n")


def _run(argv: list[str], fast: bool) -> tuple[int | None, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        if fast:
            code = cached_catalog(argv)
        else:
            from envbuild.cli.main import main

            code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _without_seconds(text: str) -> object:
    data = json.loads(text)
    for item in data:
        item.pop("seconds")
    return data


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    # Mostly hits, so that whole catalogs of hits (the fast path's answers) are drawn too.
    st.fixed_dictionaries(
        {name: st.one_of(st.sampled_from(STATES[:2]), st.sampled_from(STATES)) for name in CATALOG}
    ),
    st.sampled_from([[], ["--json"], ["-q"], ["--json", "-q"]]),
)
def test_the_fast_path_answers_as_the_full_path_or_not_at_all(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    states: dict[str, str],
    flags: list[str],
) -> None:
    _agree(tmp_path_factory, monkeypatch, states, flags)


@pytest.mark.parametrize("flags", [[], ["--json"], ["-q", "--json"]])
@pytest.mark.parametrize("moved", [False, True])
def test_a_catalog_of_hits_is_answered_as_the_full_path_answers(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
    moved: bool,
) -> None:
    states = dict.fromkeys(CATALOG, "hit")
    if moved:
        states["aa-child"] = "version-tag-elsewhere"
    assert _agree(tmp_path_factory, monkeypatch, states, flags) == 0


def _agree(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    states: dict[str, str],
    flags: list[str],
) -> int | None:
    tmp = tmp_path_factory.mktemp("catalog")
    monkeypatch.setenv("ENVBUILD_HOME", str(tmp / "home"))
    root = _catalog(tmp / "catalog")
    fake = FakeEngine(images=with_base())
    _patch(monkeypatch, fake)
    _prepare(root, fake, states)
    argv = ["build", "--all", str(root), *flags]
    code, out, err = _run(argv, fast=True)
    every_hit = all(s in ("hit", "version-tag-elsewhere") for s in states.values())
    assert (code == 0) == every_hit, (states, code, err)
    if code is None:
        return None
    assert not any(call[0] == "build" for call in fake.calls)
    full_code, full_out, full_err = _run(argv, fast=False)
    assert full_code == 0
    assert err == full_err
    if "--json" in flags:
        assert _without_seconds(out) == _without_seconds(full_out)
    else:
        assert out == full_out == ""
    return code


def test_one_batch_of_inspects_answers_the_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _catalog(tmp_path / "catalog")
    fake = FakeEngine(images=with_base())
    _patch(monkeypatch, fake)
    _prepare(root, fake, dict.fromkeys(CATALOG, "hit"))
    batches: list[list[str]] = []

    def batch(self: DockerEngine, refs: list[str]) -> list[ImageInfo | None]:
        batches.append(list(refs))
        return [fake.images.get(r) for r in refs]

    monkeypatch.setattr(DockerEngine, "inspect_images", batch)
    fake.calls.clear()
    code, _, err = _run(["build", "--all", str(root)], fast=True)
    assert code == 0
    assert len(batches) == 1 and len(batches[0]) == len(CATALOG)
    # Parents first, by name otherwise, as the full path orders them.
    shown = [line.split("] ")[1] for line in err.splitlines() if line.startswith("envbuild: [")]
    assert shown == [p.name for p in build_order(discover(root))]
    assert shown == ["zz-base", "aa-child", "bb-grandchild", "mm-alone"]
    # The unlocked base's identity: one inspect per environment, nothing else.
    assert {call for call in fake.calls} == {("inspect", "debian:bookworm-slim")}


@pytest.mark.parametrize(
    "argv",
    [
        ["build", "--all"],
        ["build", "--all", "DIR", "envs/hello"],
        ["build", "--all", "DIR", "--rebuild"],
        ["build", "--all", "DIR", "--all", "DIR"],
        ["build", "--all=DIR"],
        ["build", "--all", "--json"],
        ["push", "--all", "DIR"],
    ],
)
def test_other_command_lines_go_to_the_full_path(argv: list[str], tmp_path: Path) -> None:
    root = _catalog(tmp_path / "catalog")
    assert cached_catalog([a.replace("DIR", str(root)) for a in argv]) is None


def test_a_registry_setting_goes_to_the_full_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _catalog(tmp_path / "catalog")
    fake = FakeEngine(images=with_base())
    _patch(monkeypatch, fake)
    _prepare(root, fake, dict.fromkeys(CATALOG, "hit"))
    assert _run(["build", "--all", str(root)], fast=True)[0] == 0
    monkeypatch.setenv("ENVBUILD_REGISTRY", "localhost:5000")
    assert _run(["build", "--all", str(root)], fast=True)[0] is None


def test_the_parents_the_memo_records_give_the_order_of_build_order(tmp_path: Path) -> None:
    root = _catalog(tmp_path / "catalog")
    folders = discover(root)
    settings = load_settings()
    fake = FakeEngine(images=with_base())
    recalled = {}
    for folder in folders:
        resolve(folder, settings=settings, engine=fake)
        found = memo.recall(
            settings.home,
            memo.env_folder(folder),
            settings.platform,
            base_id=lambda ref: fake.images[ref].id,
        )
        assert found is not None
        recalled[folder] = [Path(p) for p in found.parents]
    assert recalled[root / "bb-grandchild"] == [root / "aa-child", root / "zz-base"]
    assert parents_first(folders, recalled.__getitem__) == build_order(folders)
