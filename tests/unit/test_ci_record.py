"""The record of a green no-op ``envbuild ci`` job and the console script's ``ci`` fast path.

The fast path (:func:`envbuild.cli.launcher.ci_recorded`) must answer exactly what
the full command line answers (timings aside), and only while everything the
recorded job depended on is as recorded: each test below changes one thing
after a recorded job and expects the full job to run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

import envbuild.lock as locking
from envbuild.cache import memo
from envbuild.catalog import ci_record
from envbuild.catalog import publish as pub
from envbuild.catalog.ci_report import CiReport
from envbuild.cli.launcher import _parse_ci, ci_recorded
from envbuild.cli.main import main
from envbuild.definition.model import load
from envbuild.engine.protocols import ImageInfo
from envbuild.engine.registry import RegistryClient
from envbuild.errors import EnvbuildError, RegistryError
from envbuild.settings import load_settings
from tests.fakes import BASE
from tests.unit.test_ci import CHILD, PARENT, Engine, _answer

REGISTRY = "127.0.0.1:5000/team"


class CiEngine(Engine):
    """The unit tests' ci engine, also asked in batches as the fast path asks."""

    def inspect_images(self, refs: Sequence[str]) -> list[ImageInfo | None]:
        return [self.inspect_image(ref) for ref in refs]


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> CiEngine:
    """The fake engine, reached by both paths through ``DockerEngine``; the registry's
    API answered by the fake's registry (through :class:`RegistryClient`)."""
    fake = CiEngine(answer=_answer)
    monkeypatch.setattr("envbuild.engine.docker.DockerEngine", lambda *a, **k: fake)
    monkeypatch.setattr(
        RegistryClient, "manifest_digest", lambda self, name, ref: fake.manifest_digest(name, ref)
    )
    monkeypatch.setattr(
        RegistryClient,
        "manifest_digests",
        lambda self, wanted: [fake.manifest_digest(n, r) for n, r in wanted],
    )
    return fake


@pytest.fixture
def repo(tmp_path: Path, engine: CiEngine) -> Path:
    """A git repository holding a catalog of two environments (locked, published)."""
    root = tmp_path / "repo"
    catalog = root / "catalog"
    for folder, text in (("parent", PARENT), ("child", CHILD)):
        (catalog / folder).mkdir(parents=True)
        (catalog / folder / "env.toml").write_text(text, encoding="utf-8")
    settings = load_settings()
    for folder in ("parent", "child"):
        locking.lock(load(catalog / folder), settings=settings, engine=engine)
    pub.publish(catalog, pub.default_out(catalog), platform=settings.platform)
    _git(root, "init", "-q", ".")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "catalog")
    return root


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True
    )


def _argv(repo: Path, *extra: str) -> list[str]:
    return ["ci", str(repo / "catalog"), "--registry", REGISTRY, "--push", *extra]


def _full(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _fast(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int | None, str, str]:
    capsys.readouterr()
    code = ci_recorded(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _recorded(repo: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> list[str]:
    """Run the job until it changes nothing (the first run builds, tests and pushes):
    its record is then written; the fast path answers."""
    argv = _argv(repo, *extra)
    assert _full(argv, capsys)[0] == 0
    assert _fast(argv, capsys)[0] is None  # that run built, tested and pushed
    assert _full(argv, capsys)[0] == 0  # a no-op: recorded
    assert _fast(argv, capsys)[0] == 0
    return argv


def _seconds_out(text: str) -> str:
    text = re.sub(r"[0-9]+\.[0-9]s\b", "Ns", text)  # the summary's times
    return re.sub(r'time="[0-9.]+"', 'time="N"', text)  # JUnit's


def _no_seconds(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _no_seconds(v) for k, v in data.items() if k != "seconds"}
    if isinstance(data, list):
        return [_no_seconds(v) for v in data]
    return data


@pytest.mark.parametrize("extra", [(), ("--json",), ("-q",), ("--since", "HEAD")])
def test_the_fast_path_prints_what_the_full_path_prints(
    repo: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, extra: tuple[str, ...]
) -> None:
    argv = _recorded(repo, capsys, *extra)
    fast_dir, full_dir = tmp_path / "fast", tmp_path / "full"
    code, out, err = _fast([*argv, "--report", str(fast_dir)], capsys)
    full_code, full_out, full_err = _full([*argv, "--report", str(full_dir)], capsys)
    assert code == full_code == 0
    assert err.replace(str(fast_dir), "DIR") == full_err.replace(str(full_dir), "DIR")
    if "--json" in extra:
        assert _no_seconds(json.loads(out)) == _no_seconds(json.loads(full_out))
    else:
        assert _seconds_out(out) == _seconds_out(full_out)
        assert "## envbuild ci: passed" in out
    for name in ("summary.md", "junit.xml"):
        fast_text = (fast_dir / name).read_text(encoding="utf-8")
        assert _seconds_out(fast_text) == _seconds_out((full_dir / name).read_text("utf-8"))
    assert _no_seconds(json.loads((fast_dir / "report.json").read_text("utf-8"))) == _no_seconds(
        json.loads((full_dir / "report.json").read_text("utf-8"))
    )
    if "-q" not in extra:
        assert "envbuild ci: 2 environments in" in err


def test_the_fast_path_asks_the_engine_and_the_registry_in_one_batch_each(
    repo: Path,
    capsys: pytest.CaptureFixture[str],
    engine: CiEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = _recorded(repo, capsys)
    batches: list[list[str]] = []
    heads: list[list[tuple[str, str]]] = []

    def inspect_images(refs: Sequence[str]) -> list[ImageInfo | None]:
        batches.append(list(refs))
        return [engine.images.get(ref) for ref in refs]

    def manifest_digests(self: RegistryClient, wanted: Sequence[tuple[str, str]]) -> list[Any]:
        heads.append(list(wanted))
        return [engine.manifest_digest(n, r) for n, r in wanted]

    monkeypatch.setattr(engine, "inspect_images", inspect_images)
    monkeypatch.setattr(RegistryClient, "manifest_digests", manifest_digests)
    monkeypatch.setenv("ENVBUILD_TRACE", "1")
    engine.calls.clear()
    code, _, err = _fast(argv, capsys)
    assert code == 0
    assert "envbuild: trace: ci answered from the record" in err
    assert len(batches) == 1 and len(batches[0]) == 2 * 2 + 1  # two tags each, one base
    assert BASE in batches[0]
    hash12s = [r.rsplit(":", 1)[1] for r in batches[0] if "/ci-" in r and not r.endswith(":1")]
    assert len(heads) == 1 and sorted(t for _, t in heads[0]) == sorted([*hash12s, "1", "1"])
    assert [call for call in engine.calls if call[0] != "head"] == []  # nothing but those


def _edit(path: Path) -> None:
    path.write_text(path.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")


def _published(repo: Path) -> Path:
    return pub.default_out(repo / "catalog") / "ci-parent" / "1" / "Dockerfile"


def _moved_image(engine: CiEngine, which: str) -> None:
    ref = next(r for r in engine.images if "ci-child" in r and r.endswith(which))
    other = ImageInfo(id="sha256:" + "0e" * 32)
    engine.images[other.id] = other
    engine.tag(other.id, ref)  # as `docker tag` moves it


def _other_digest(engine: CiEngine) -> None:
    tagged = next(t for t in engine.registry if "ci-parent" in t and t.endswith(":1"))
    _, image = engine.registry[tagged]
    engine.registry[tagged] = ("sha256:" + "0f" * 32, image)


def _registry_down(monkeypatch: pytest.MonkeyPatch) -> None:
    def down(self: RegistryClient, wanted: object) -> list[str | None]:
        raise RegistryError("cannot reach the registry 127.0.0.1:5000: Connection refused")

    monkeypatch.setattr(RegistryClient, "manifest_digests", down)


CHANGES: dict[str, tuple[Callable[[Path, CiEngine, pytest.MonkeyPatch], object], str]] = {
    "a definition file": (
        lambda repo, engine, mp: _edit(repo / "catalog" / "child" / "env.toml"),
        "file the job depended on changed",
    ),
    "a published file": (
        lambda repo, engine, mp: _edit(_published(repo)),
        "file the job depended on changed",
    ),
    "a published file's mode": (
        lambda repo, engine, mp: _published(repo).chmod(0o755),
        "came or went",
    ),
    "a new environment folder": (
        lambda repo, engine, mp: shutil.copytree(
            repo / "catalog" / "child", repo / "catalog" / "other"
        ),
        "came or went",
    ),
    "a new file in an environment folder": (
        lambda repo, engine, mp: (repo / "catalog" / "child" / "notes.txt").write_text("x"),
        "came or went",
    ),
    "a test result record": (
        lambda repo, engine, mp: _edit(
            next((Path(load_settings().home) / "test-results").glob("*.json"))
        ),
        "file the job depended on changed",
    ),
    "an image moved to another ID (re-tagged)": (
        lambda repo, engine, mp: _moved_image(engine, ":1"),
        "is no longer the image the job found",
    ),
    "the hash tag's image": (
        lambda repo, engine, mp: _moved_image(engine, ""),
        "is no longer the image the job found",
    ),
    "the base's image ID": (
        lambda repo, engine, mp: engine.images.__setitem__(
            BASE, ImageInfo(id="sha256:" + "0d" * 32, tags=(BASE,))
        ),
        f"{BASE} is no longer the image",
    ),
    "a registry digest": (
        lambda repo, engine, mp: _other_digest(engine),
        "is no longer sha256:",
    ),
    "a registry that is down": (
        lambda repo, engine, mp: _registry_down(mp),
        "the registry did not answer: RegistryError",
    ),
    "a test result record deleted": (
        lambda repo, engine, mp: next(
            (Path(load_settings().home) / "test-results").glob("*.json")
        ).unlink(),
        "file the job depended on changed",
    ),
    "a parent's lock file": (
        lambda repo, engine, mp: _edit(repo / "catalog" / "parent" / "env.lock.toml"),
        "file the job depended on changed",
    ),
    "the record truncated": (
        lambda repo, engine, mp: _truncate(_record()),
        "the record cannot be read: JSONDecodeError",
    ),
    "the record of another job in its place": (
        lambda repo, engine, mp: _record().write_text(
            json.dumps({**json.loads(_record().read_text("utf-8")), "for": "another"})
        ),
        "the record is another job's",
    ),
    "another platform": (
        lambda repo, engine, mp: mp.setenv("ENVBUILD_PLATFORM", "linux/arm64"),
        "no record of this job",
    ),
    "another engine CLI": (
        lambda repo, engine, mp: mp.setenv("ENVBUILD_DOCKER", "/usr/local/bin/docker"),
        "no record of this job",
    ),
    "a file in the catalog folder beside the environments (a catalog of one)": (
        lambda repo, engine, mp: shutil.copy(
            repo / "catalog" / "child" / "env.toml", repo / "catalog" / "env.toml"
        ),
        "came or went",
    ),
}


def _record() -> Path:
    (record,) = (load_settings().home / "cache" / "ci").glob("*.json")
    return record


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("change", list(CHANGES))
def test_any_change_runs_the_whole_job(
    repo: Path,
    capsys: pytest.CaptureFixture[str],
    engine: CiEngine,
    monkeypatch: pytest.MonkeyPatch,
    change: str,
) -> None:
    argv = _recorded(repo, capsys)
    make, why = CHANGES[change]
    make(repo, engine, monkeypatch)
    monkeypatch.setenv("ENVBUILD_TRACE", "1")
    code, out, err = _fast(argv, capsys)
    assert (code, out) == (None, "")
    assert "envbuild: trace: ci runs the whole job: " in err and why in err, err


def test_the_record_holds_every_envbuild_module_and_a_changed_one_is_a_miss(
    repo: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    package = Path(memo.__file__).resolve().parents[1]
    # One more source, in a copy this test may change (the package itself stays as it is).
    extra = tmp_path / "extra"
    shutil.copytree(package / "catalog", extra, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(ci_record, "SOURCES", (*ci_record.SOURCES, str(extra)))
    argv = _recorded(repo, capsys)
    (record,) = (load_settings().home / "cache" / "ci").glob("*.json")
    recorded = {entry[0] for entry in json.loads(record.read_text("utf-8"))["files"]}
    assert {str(p) for p in package.rglob("*.py") if "__pycache__" not in p.parts} <= recorded
    _edit(extra / "ci.py")
    monkeypatch.setenv("ENVBUILD_TRACE", "1")
    code, _, err = _fast(argv, capsys)
    assert code is None and "a file the job depended on changed" in err


def test_another_since_commit_runs_the_whole_job(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = _recorded(repo, capsys, "--since", "HEAD")
    (repo / "README").write_text("outside the catalog\n")
    _git(repo, "add", "README")
    _git(repo, "commit", "-qm", "another commit")
    monkeypatch.setenv("ENVBUILD_TRACE", "1")
    code, _, err = _fast(argv, capsys)
    assert code is None and "--since HEAD names another commit" in err
    assert _full(argv, capsys)[0] == 0  # green: recorded for the new commit
    assert _fast(argv, capsys)[0] == 0
    # Another job (without --since) has no record of its own.
    assert _fast(_argv(repo), capsys)[0] is None


def test_a_red_job_is_not_recorded_and_drops_the_record(
    repo: Path, capsys: pytest.CaptureFixture[str], engine: CiEngine
) -> None:
    argv = _recorded(repo, capsys)
    home = load_settings().home
    assert list((home / "cache" / "ci").glob("*.json"))
    _edit(repo / "catalog" / "child" / "env.toml")  # changed, not bumped: red
    assert _full(argv, capsys)[0] == 1
    assert list((home / "cache" / "ci").glob("*.json")) == []
    assert _fast(argv, capsys)[0] is None


def test_a_job_that_built_or_pushed_is_not_recorded(
    repo: Path, capsys: pytest.CaptureFixture[str], engine: CiEngine
) -> None:
    argv = _recorded(repo, capsys)  # the first run built, tested and pushed: not recorded
    engine.registry.clear()  # the registry lost the images
    code, out, _ = _full([*argv, "--json"], capsys)
    assert code == 0 and "(pushed)" in out
    assert _fast(argv, capsys)[0] is None  # that job pushed: not recorded


def test_a_retagged_version_is_tagged_back_by_the_full_job_then_recorded(
    repo: Path,
    capsys: pytest.CaptureFixture[str],
    engine: CiEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = _recorded(repo, capsys)
    _moved_image(engine, ":1")
    assert _fast(argv, capsys)[0] is None
    assert _full(argv, capsys)[0] == 0  # the version tag is tagged back: a change
    assert _fast(argv, capsys)[0] is None
    assert _full(argv, capsys)[0] == 0
    monkeypatch.setenv("ENVBUILD_TRACE", "1")
    got = _fast(argv, capsys)
    assert got[0] == 0, got[2]


@pytest.mark.parametrize(
    "argv",
    [
        ["ci"],
        ["ci", "CAT", "--relock"],
        ["ci", "CAT", "--registry-ca", "ca.pem"],
        ["ci", "CAT", "--registry-insecure"],
        ["ci", "CAT", "--registry=127.0.0.1:5000"],
        ["ci", "CAT", "--registry"],
        ["ci", "CAT", "--since", "HEAD", "--since", "HEAD~1"],
        ["ci", "CAT", "OTHER"],
        ["ci", "CAT", "--help"],
        ["build", "CAT"],
    ],
)
def test_other_command_lines_go_to_the_full_path(argv: list[str]) -> None:
    assert _parse_ci(argv) is None
    assert ci_recorded(argv) is None


def test_the_plain_forms_are_parsed() -> None:
    assert _parse_ci(
        ["ci", "cat", "--registry", "r:5000/ns", "--push", "-q", "--json", "--since", "HEAD"]
    ) == ("cat", {"--registry": "r:5000/ns", "--since": "HEAD"}, {"push", "quiet", "json"})


def test_a_report_rebuilt_from_its_json_renders_the_same(
    repo: Path, capsys: pytest.CaptureFixture[str], engine: CiEngine
) -> None:
    from envbuild.catalog.ci import run_ci

    (repo / "catalog" / "broken").mkdir()
    (repo / "catalog" / "broken" / "env.toml").write_text('schema = 1\nname = "x"\nversion = "a"\n')
    report = run_ci(repo / "catalog", settings=load_settings(), engine=engine)
    assert not report.ok
    data = json.loads(json.dumps(report.to_json()))
    again = CiReport.from_json(data)
    assert _no_seconds(again.to_json()) == _no_seconds(data)  # an env's: the sum of its stages'
    assert _seconds_out(again.markdown()) == _seconds_out(report.markdown())
    assert _seconds_out(again.junit()) == _seconds_out(report.junit())


def test_the_record_holds_no_credentials(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENVBUILD_REGISTRY_USERNAME", "ci-user")
    monkeypatch.setenv("ENVBUILD_REGISTRY_PASSWORD", "s3cret-canary")
    argv = _recorded(repo, capsys)
    home = load_settings().home
    (record,) = (home / "cache" / "ci").glob("*.json")
    assert "s3cret-canary" not in record.read_text(encoding="utf-8")
    # Credentials are checked as the full path checks them: half of them is its error.
    monkeypatch.delenv("ENVBUILD_REGISTRY_PASSWORD")
    assert _fast(argv, capsys)[0] is None
    code, _, err = _full(argv, capsys)
    assert code == 2 and "ENVBUILD_REGISTRY_PASSWORD is not set" in err


def test_the_record_is_kept_per_job(tmp_path: Path) -> None:
    settings = load_settings()
    common: dict[str, Any] = dict(
        catalog=tmp_path / "c",
        published=tmp_path / "p",
        registry=REGISTRY,
        since=None,
        push=True,
        relock=False,
        settings=settings,
    )
    base = ci_record.identity(**common)
    others: list[dict[str, Any]] = [
        {"registry": "127.0.0.1:5001"},
        {"since": "HEAD"},
        {"push": False},
        {"published": tmp_path / "q"},
        {"settings": settings._replace(platform="linux/arm64")},
        {"settings": settings._replace(prefix="other")},
    ]
    paths = {ci_record.record_path(settings.home, base)}
    for other in others:
        ident = ci_record.identity(**{**common, **other})
        assert ident != base
        paths.add(ci_record.record_path(settings.home, ident))
    assert len(paths) == len(others) + 1


def test_a_file_rewritten_unchanged_is_compared_by_content_then_by_its_new_stat(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memo, "RACY_NS", 0)  # every stat may stand for its content
    argv = _recorded(repo, capsys)
    path = repo / "catalog" / "child" / "env.toml"
    path.write_bytes(path.read_bytes())  # as a checkout does: the same bytes, another stat
    (record,) = (load_settings().home / "cache" / "ci").glob("*.json")

    def stat_of() -> object:
        entries = json.loads(record.read_text("utf-8"))["files"]
        return next(stat for p, _, stat in entries if p == str(path))

    before = stat_of()
    assert _fast(argv, capsys)[0] == 0  # the content is the same
    after = stat_of()
    assert after != before and after is not None  # the next run trusts the new stat
    assert _fast(argv, capsys)[0] == 0


def test_an_input_changed_while_the_job_ran_is_not_recorded(tmp_path: Path) -> None:
    import time

    started = time.time_ns()
    changed = tmp_path / "env.toml"
    changed.write_text("edited while the job ran\n")
    entries = memo.file_entries([(str(changed), memo.file_digest(str(changed)))], sources=())
    assert entries is not None
    listings: dict[str, object] = {"catalog": [], "folders": {}, "published": {}}
    common: dict[str, Any] = dict(
        report={}, log=[], listings=listings, records=[], registry=[], since=None
    )
    engine = ci_record.Engine({}, {})
    home = tmp_path / "home"
    assert not ci_record.remember(
        home, "job", inputs=entries, engine=engine, started_ns=started, **common
    )
    assert ci_record.remember(
        home, "job", inputs=entries, engine=engine, started_ns=time.time_ns(), **common
    )


def test_an_interrupted_check_exits_as_an_interrupted_command(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from envbuild.cli.exits import report

    argv = _recorded(repo, capsys)

    def interrupted(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(ci_record, "recall", interrupted)
    code, out, err = _fast(argv, capsys)
    assert code == report(KeyboardInterrupt()) and code != 0
    assert out == "" and "Traceback" not in err


def _linked_out(path: Path, tmp_path: Path) -> None:
    """``path`` replaced by a symlink to a copy of it outside its folder (same bytes)."""
    copy = tmp_path / f"outside-{path.name}"
    shutil.copy2(path, copy)
    path.unlink()
    path.symlink_to(copy)


def _linked_folder(path: Path, tmp_path: Path) -> None:
    """A symlinked folder beside ``path``'s (os.walk does not descend into it)."""
    target = tmp_path / "elsewhere"
    target.mkdir(exist_ok=True)
    (path.parent / "linked").symlink_to(target, target_is_directory=True)


LINKS: dict[str, Callable[[Path, Path], object]] = {
    "a published file": lambda repo, tmp: _linked_out(_published(repo), tmp),
    "a lock file": lambda repo, tmp: _linked_out(repo / "catalog" / "child" / "env.lock.toml", tmp),
    "a folder in the published folder": lambda repo, tmp: _linked_folder(_published(repo), tmp),
    "a FIFO in the published folder": lambda repo, tmp: os.mkfifo(_published(repo).parent / "fifo"),
}


@pytest.mark.parametrize("where", list(LINKS))
def test_a_symlink_or_fifo_with_the_same_bytes_runs_the_whole_job_which_is_red(
    repo: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    where: str,
) -> None:
    """A file replaced by a symlink to the same bytes (or a symlinked folder, a FIFO)
    leaves every listed name and every content as recorded; the full job refuses it
    (publish follows no symlink; a definition's files stay inside its folder)."""
    argv = _recorded(repo, capsys)
    LINKS[where](repo, tmp_path)
    monkeypatch.setenv("ENVBUILD_TRACE", "1")
    code, out, err = _fast(argv, capsys)
    assert (code, out) == (None, ""), err
    assert _full(argv, capsys)[0] != 0
    with pytest.raises(EnvbuildError):  # publish --check's own record: a miss too
        pub.check(
            repo / "catalog",
            pub.default_out(repo / "catalog"),
            platform=load_settings().platform,
            home=load_settings().home,
        )


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_record_replaced_by_a_fifo_or_a_folder_is_a_miss_without_blocking(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    import signal

    argv = _recorded(repo, capsys)
    (record,) = (load_settings().home / "cache" / "ci").glob("*.json")
    record.unlink()
    if kind == "fifo":
        os.mkfifo(record)  # nobody writes it: reading it would block forever
    else:
        record.mkdir()

    def stuck(signum: int, frame: object) -> None:
        raise AssertionError("the fast path blocked on the record")

    previous = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(10)
    try:
        monkeypatch.setenv("ENVBUILD_TRACE", "1")
        code, out, err = _fast(argv, capsys)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert (code, out) == (None, "") and "the record cannot be read: " in err
    assert _full(argv, capsys)[0] == 0  # the record cannot be written there: nothing left over
    assert sorted(p.name for p in record.parent.iterdir()) == [record.name]


def test_the_same_catalog_text_from_another_folder_is_another_job(
    repo: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    other = tmp_path / "other"
    shutil.copytree(repo, other, symlinks=True)
    _edit(other / "catalog" / "child" / "env.toml")  # changed, not bumped: red
    monkeypatch.chdir(repo)
    argv = ["ci", "catalog", "--registry", REGISTRY, "--push"]
    for _ in range(2):
        assert _full(argv, capsys)[0] == 0
    assert _fast(argv, capsys)[0] == 0
    monkeypatch.chdir(other)
    assert _fast(argv, capsys)[0] is None
    assert _full(argv, capsys)[0] == 1


def test_a_report_folder_that_cannot_be_written_is_the_full_paths_to_report(
    repo: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = _recorded(repo, capsys)
    afile = tmp_path / "a-file"
    afile.write_text("not a folder\n")
    code, out, _ = _fast([*argv, "--report", str(afile)], capsys)
    assert (code, out) == (None, "")
    assert afile.read_text() == "not a folder\n"
    code, _, err = _full([*argv, "--report", str(afile)], capsys)
    assert code == 2 and "is a file" in err
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "junit.xml").mkdir()  # the last of the three cannot be written
    assert _fast([*argv, "--report", str(blocked)], capsys)[:2] == (None, "")


def test_another_installation_of_the_same_version_is_another_job(
    repo: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A record lists the sources of the envbuild that wrote it: another checkout (here
    a copy of the package whose ci module differs) must not answer from it."""
    argv = _recorded(repo, capsys)
    copy = tmp_path / "other-checkout" / "envbuild"
    shutil.copytree(
        Path(memo.__file__).resolve().parents[1],
        copy,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    _edit(copy / "catalog" / "ci.py")
    original = memo._PACKAGE
    monkeypatch.setattr(memo, "_PACKAGE", copy)
    monkeypatch.setenv("ENVBUILD_TRACE", "1")
    code, _, err = _fast(argv, capsys)
    assert code is None and "no record of this job" in err
    from envbuild.lock.model import conda_store

    settings = load_settings()
    catalog = repo / "catalog"
    out, store = pub.default_out(catalog), conda_store(settings.home)
    assert pub.check_record(settings.home, catalog, out, settings.platform, store) is None
    monkeypatch.setattr(memo, "_PACKAGE", original)  # the one that wrote them: both answer
    assert pub.check_record(settings.home, catalog, out, settings.platform, store) is not None
    assert _fast(argv, capsys)[0] == 0


def test_a_symlinked_catalog_pointed_elsewhere_is_another_job(
    repo: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    link = tmp_path / "links" / "catalog"  # the name the published index was made with
    link.parent.mkdir()
    link.symlink_to(repo / "catalog", target_is_directory=True)
    argv = [
        "ci",
        str(link),
        "--registry",
        REGISTRY,
        "--push",
        "--published",
        str(repo / "published"),
    ]
    for _ in range(2):
        code, out, err = _full(argv, capsys)
        assert code == 0, out + err
    assert _fast(argv, capsys)[0] == 0
    other = tmp_path / "other-catalog"
    shutil.copytree(repo / "catalog", other)
    _edit(other / "child" / "env.toml")  # changed, not bumped: red
    link.unlink()
    link.symlink_to(other, target_is_directory=True)
    assert _fast(argv, capsys)[0] is None
    assert _full(argv, capsys)[0] == 1
