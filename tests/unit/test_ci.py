"""``envbuild ci`` composed against the fake engine: order, failures, push, the report files."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import envbuild.lock as locking
from envbuild.build import travel
from envbuild.catalog import publish as pub
from envbuild.catalog.ci import FAILED, PASSED, SKIPPED, CiReport, run_ci
from envbuild.cli.main import main
from envbuild.definition.model import load
from envbuild.engine.protocols import STDOUT, BuildRequest, ContainerSpec
from envbuild.engine.registry import Registry
from envbuild.errors import BuildError, UsageError
from envbuild.log import Log
from envbuild.settings import load_settings
from tests.run_fakes import FakeRunEngine

PARENT = """schema = 1
name = "ci-parent"
version = 1
[base]
image = "debian:bookworm-slim"
[variables]
MESSAGE = "hi"
[[tests]]
run = ["sh", "-c", "echo $MESSAGE"]
expect = "hi"
"""
CHILD = """schema = 1
name = "ci-child"
version = 1
extends = "../parent"
[variables]
OTHER = "x"
"""
BROKEN = """schema = 1
name = "ci-broken"
version = 1
[base]
image = "debian:bookworm-slim"
[variables]
BREAK_THE_BUILD = "1"
"""


def _answer(spec: ContainerSpec) -> list[tuple[int, bytes]]:
    """Every check prints "hi": the parent's passes, a check expecting else fails."""
    return [(STDOUT, b"hi\n")]


class Engine(FakeRunEngine):
    """A fake engine on which the build of ``ci-broken`` fails, and whose builds are listed."""

    def build(self, request: BuildRequest, log: Log) -> str:
        dockerfile = (request.context_dir / "Dockerfile").read_text(encoding="utf-8")
        if "BREAK_THE_BUILD" in dockerfile:
            self.calls.append(("build", "ci-broken"))
            raise BuildError("the image build failed", step="[1/1] RUN false", step_exit_code=1)
        return super().build(request, log)


@pytest.fixture
def engine() -> Engine:
    return Engine(answer=_answer)


@pytest.fixture
def catalog(tmp_path: Path, engine: Engine) -> Path:
    root = tmp_path / "catalog"
    for folder, text in (("parent", PARENT), ("child", CHILD), ("broken", BROKEN)):
        (root / folder).mkdir(parents=True)
        (root / folder / "env.toml").write_text(text, encoding="utf-8")
    settings = load_settings()
    for folder in ("parent", "child", "broken"):  # the base pinned: locks are current
        locking.lock(load(root / folder), settings=settings, engine=engine)
    pub.publish(root, pub.default_out(root), platform=settings.platform)
    return root


def _remote(engine: Engine) -> travel.Remote:
    return travel.Remote(Registry("127.0.0.1:5000", "team"), engine)


def _statuses(report: CiReport) -> dict[str, dict[str, str]]:
    return {e.name: {n: s.status for n, s in e.stages.items()} for e in report.envs}


def test_a_failing_build_does_not_stop_the_others_and_parents_go_first(
    catalog: Path, engine: Engine
) -> None:
    report = run_ci(catalog, settings=load_settings(), engine=engine)
    assert not report.ok
    # Parents first: the child (sorted before "parent") comes after it.
    assert [e.name for e in report.envs] == ["ci-broken", "ci-parent", "ci-child"]
    builds = [what for kind, what in engine.calls if kind == "build"]
    assert builds[0] == "ci-broken" and len(builds) == 3
    statuses = _statuses(report)
    assert statuses["ci-broken"]["build"] == FAILED
    assert statuses["ci-broken"]["tests"] == SKIPPED
    for name in ("ci-parent", "ci-child"):
        assert statuses[name] == {
            "validate": PASSED,
            "version": PASSED,
            "locks": PASSED,
            "base": PASSED,
            "build": PASSED,
            "tests": PASSED,
            "push": SKIPPED,
        }
    assert report.stages["publish"].status == PASSED
    child = report.envs[2]
    assert child.tier == "built"
    assert child.tests is not None and len(child.tests.results) == 1  # inherited from its parent
    assert [(where, s.name) for where, s in report.failures()] == [("ci-broken", "build")]
    assert "RUN false" in report.failures()[0][1].message


def test_a_changed_but_unbumped_environment_fails_its_version_stage(
    catalog: Path, engine: Engine
) -> None:
    child = catalog / "child" / "env.toml"
    child.write_text(CHILD.replace('"x"', '"y"'), encoding="utf-8")
    report = run_ci(catalog, settings=load_settings(), engine=engine)
    statuses = _statuses(report)
    assert statuses["ci-child"]["version"] == FAILED
    assert statuses["ci-parent"]["version"] == PASSED
    assert report.stages["publish"].status == FAILED  # the published folder is stale too
    message = next(
        s.message
        for e in report.envs
        for s in e.stages.values()
        if s.name == "version" and s.status == FAILED
    )
    assert "without a version bump" in message
    assert "bump `version`" in message
    summary = report.markdown()
    assert "**ci-child**, version:" in summary


def test_push_verifies_digests_and_skips_what_failed(catalog: Path, engine: Engine) -> None:
    remote = _remote(engine)
    report = run_ci(catalog, settings=load_settings(), engine=engine, remote=remote, push=True)
    statuses = _statuses(report)
    assert statuses["ci-parent"]["push"] == PASSED
    assert statuses["ci-child"]["push"] == PASSED
    assert statuses["ci-broken"]["push"] == SKIPPED
    parent = report.envs[1]
    assert parent.digest.startswith("sha256:")
    assert parent.digest == engine.manifest_digest("ci-parent", parent.hash[:12])
    assert report.registry == "127.0.0.1:5000/team"

    # The registry now answers: an engine that lost the images pulls instead of building.
    for ref in [r for r in engine.images if "ci-parent" in r or "ci-child" in r]:
        del engine.images[ref]
    again = run_ci(catalog, settings=load_settings(), engine=engine, remote=remote)
    assert [e.tier for e in again.envs[1:]] == ["registry", "registry"]


def test_push_without_a_registry_is_refused(catalog: Path, engine: Engine) -> None:
    with pytest.raises(UsageError, match="--push needs a registry"):
        run_ci(catalog, settings=load_settings(), engine=engine, push=True)


def test_the_command_refuses_push_without_a_registry(
    catalog: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ci", str(catalog), "--push"]) == 2
    assert "--push needs a registry" in capsys.readouterr().err


def test_the_report_files(catalog: Path, engine: Engine, tmp_path: Path) -> None:
    report = run_ci(catalog, settings=load_settings(), engine=engine)
    written = report.write(tmp_path / "report")
    assert [p.name for p in written] == ["summary.md", "report.json", "junit.xml"]

    summary = (tmp_path / "report" / "summary.md").read_text(encoding="utf-8")
    assert summary.startswith("## envbuild ci: failed (1 failures)")
    assert (
        "| Environment | Version | Validate | Version | Locks | Base | Build | Tests |" in summary
    )
    assert "| `ci-parent` | 1 | ok | ok | ok | ok | ok | ok 1/1 | - | built |" in summary
    assert "**ci-broken**, build:" in summary
    assert "RUN false" in summary

    data = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    assert data["ok"] is False
    assert [e["name"] for e in data["environments"]] == ["ci-broken", "ci-parent", "ci-child"]
    parent = data["environments"][1]
    assert parent["tier"] == "built" and parent["hash"] and parent["image"]
    assert parent["stages"]["tests"]["status"] == "passed"
    assert parent["tests"]["results"][0]["passed"] is True

    root = ET.parse(tmp_path / "report" / "junit.xml").getroot()
    assert root.tag == "testsuites"
    (suite,) = list(root)
    assert suite.tag == "testsuite"
    cases = suite.findall("testcase")
    assert int(suite.get("tests", "")) == len(cases) == 2 + 3 * 7
    assert int(suite.get("failures", "")) == 1
    failed = [c for c in cases if c.find("failure") is not None]
    assert [(c.get("classname"), c.get("name")) for c in failed] == [("ci-broken", "build")]
    failure = failed[0].find("failure")
    assert failure is not None and failure.get("message") and "RUN false" in (failure.text or "")
    assert all(float(c.get("time", "")) >= 0 for c in cases)


def test_a_moved_base_fails_the_base_stage_of_each_environment_on_it(
    catalog: Path, engine: Engine
) -> None:
    from envbuild.engine.protocols import ImageInfo
    from tests.fakes import BASE

    engine.images[BASE] = ImageInfo(id="sha256:" + "0d" * 32, tags=(BASE,))
    report = run_ci(catalog, settings=load_settings(), engine=engine)
    for env in report.envs:
        base = env.stages["base"]
        assert base.status == FAILED
        assert "base changed since lock" in base.message
        assert "sha256:" + "0d" * 32 in base.message  # what it is now
        assert env.stages["build"].status == FAILED  # nothing builds on a moved base
    assert report.stages["publish"].status == PASSED


def test_a_definition_that_does_not_load_fails_validate_and_the_others_go_on(
    catalog: Path, engine: Engine
) -> None:
    (catalog / "broken" / "env.toml").write_text(
        BROKEN.replace("version = 1", 'version = "one"'), encoding="utf-8"
    )
    report = run_ci(catalog, settings=load_settings(), engine=engine)
    broken = next(e for e in report.envs if e.folder.endswith("broken"))
    assert broken.stages["validate"].status == FAILED
    assert "version" in broken.stages["validate"].message
    assert broken.stages["build"].status == SKIPPED
    assert report.stages["version"].status == FAILED  # the guard loads every definition
    assert {e.stages["version"].status for e in report.envs} == {SKIPPED}
    statuses = _statuses(report)
    assert statuses["ci-parent"]["build"] == statuses["ci-child"]["tests"] == PASSED


def test_a_message_with_a_code_fence_stays_inside_its_block() -> None:
    from envbuild.catalog.ci import EnvReport, Stage

    env = EnvReport("f", "fenced", 1, {"build": Stage("build", FAILED, 0.0, "a\n```\nb")})
    summary = CiReport("cat", envs=[env]).markdown()
    assert "\n````\na\n```\nb\n````\n" in summary


def test_relock_proposes_the_fix_of_a_moved_base_in_the_working_tree(
    catalog: Path, engine: Engine, tmp_path: Path
) -> None:
    import subprocess

    from envbuild.engine.protocols import ImageInfo
    from tests.fakes import BASE

    # The catalog is a git checkout: the proposal is written, never committed.
    subprocess.run(["git", "init", "-q", str(catalog)], check=True)
    git = ["git", "-C", str(catalog), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "catalog"], check=True)
    moved = "sha256:" + "0d" * 32
    engine.images[BASE] = ImageInfo(id=moved, tags=(BASE,))
    report = run_ci(
        catalog,
        settings=load_settings(),
        engine=engine,
        remote=_remote(engine),
        push=True,
        relock=True,
    )
    assert not report.ok
    for env in report.envs:
        base = env.stages["base"]
        assert base.status == FAILED and "drifted from its lock" in base.message
        assert env.relock is not None and env.relock.version == (1, 2)
        folder = Path(env.folder)
        assert env.relock.files == (str(folder / "env.lock.toml"), str(folder / "env.toml"))
        assert "proposed fix written to the working tree" in base.message
        # The proposal is in the working tree: the new pin and the raised version.
        locks = locking.read(folder)
        assert locks is not None and locks.base is not None and locks.base.id == moved
        assert load(folder).version == 2
        # ... built and tested like any environment (ci-broken's build breaks on purpose),
        # and never pushed.
        if env.name != "ci-broken":
            assert env.stages["build"].status == PASSED, env.stages["build"].message
            assert env.stages["tests"].status == PASSED
        assert env.stages["push"].status == SKIPPED
        assert "proposal" in env.stages["push"].message
    assert engine.registry == {}  # asked to push: the proposals are not pushed
    assert report.to_json()["relock"] is True
    assert report.envs[0].to_json()["relock"] == {
        "files": list(report.envs[0].relock.files),  # type: ignore[union-attr]
        "version": [1, 2],
    }
    summary = report.markdown()
    assert "### Proposed fixes (`--relock`: in the working tree, not committed)" in summary
    assert "`ci-parent`: version 1 \u2192 2" in summary
    status = subprocess.run(
        ["git", "-C", str(catalog), "status", "--porcelain"], capture_output=True, text=True
    ).stdout
    assert " M parent/env.toml" in status and " M parent/env.lock.toml" in status
    log = subprocess.run(
        ["git", "-C", str(catalog), "log", "--oneline"], capture_output=True, text=True
    ).stdout
    assert len(log.splitlines()) == 1  # nothing committed


def test_each_definition_is_loaded_once(
    catalog: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from envbuild.catalog import check as check_mod
    from envbuild.catalog import order as order_mod

    loads: list[Path] = []

    def counted(real: object) -> object:
        def load_counted(folder: Path) -> object:
            loads.append(Path(folder).resolve())
            return real(folder)  # type: ignore[operator]

        return load_counted

    monkeypatch.setattr(order_mod, "load", counted(load))
    monkeypatch.setattr(check_mod, "load", counted(load))
    report = run_ci(catalog, settings=load_settings(), engine=engine)
    assert report.stages["version"].status == PASSED
    for folder in ("child", "broken"):  # extended by none: loaded by validate only
        assert loads.count((catalog / folder).resolve()) == 1


def test_the_publish_stage_sees_a_change_after_a_clean_run(
    catalog: Path, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENVBUILD_HOME", str(tmp_path / "home"))
    settings = load_settings()
    assert run_ci(catalog, settings=settings, engine=engine).stages["publish"].status == PASSED
    assert run_ci(catalog, settings=settings, engine=engine).stages["publish"].status == PASSED
    index = pub.default_out(catalog) / "index.md"
    index.write_text(index.read_text(encoding="utf-8") + "edited\n", encoding="utf-8")
    stage = run_ci(catalog, settings=settings, engine=engine).stages["publish"]
    assert stage.status == FAILED and "changed  index.md" in stage.message
