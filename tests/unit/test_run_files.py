"""Snapshot runs: the copy (links, FIFOs, limits), what is kept, and reading it back by run id."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from envbuild.engine.protocols import ContainerSpec
from envbuild.errors import HistoryError, RunConfigError
from envbuild.run.config import RunConfig, RunResult
from envbuild.run.files import (
    CONTEXT_TARGET,
    METRICS_TARGET,
    Prepared,
    RunFiles,
    context_dir,
    fetch,
    fetch_all,
    kept_file,
    kept_files,
)
from envbuild.run.history import History
from envbuild.run.local import run
from envbuild.run.planning import plan
from envbuild.run.snapshot import _Copier, copy_tree, limits, remove_tree
from envbuild.settings import Settings, load_settings
from tests.run_fakes import FakeRunEngine, out
from tests.unit.test_run_history import record


@pytest.fixture
def settings() -> Settings:
    return load_settings()


@pytest.fixture
def src(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    (folder / "pkg").mkdir(parents=True)
    (folder / "train.py").write_text("print('hi')\n")
    (folder / "pkg" / "data.txt").write_text("data")
    (folder / "run.sh").write_text("#!/bin/sh\n")
    (folder / "run.sh").chmod(0o755)
    return folder


def listing(root: Path) -> dict[str, str]:
    result = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if path.is_symlink():
            result[name] = "-> " + os.readlink(path)
        elif path.is_dir():
            result[name] = "dir"
        else:
            result[name] = path.read_text()
    return result


# The copy
# --------------------------------------------------------------------------


def test_a_plain_tree_is_copied_with_its_modes(src: Path, tmp_path: Path) -> None:
    copied = copy_tree(src, tmp_path / "snap")
    assert listing(tmp_path / "snap") == listing(src)
    assert os.access(tmp_path / "snap" / "run.sh", os.X_OK)
    assert (copied.files, copied.bytes, copied.skipped) == (3, 26, ())


def test_symlinks_inside_are_kept_outside_left_out(src: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    (src / "inside.py").symlink_to("train.py")
    (src / "pkg" / "up.txt").symlink_to("../train.py")  # still inside
    (src / "pkgdir").symlink_to("pkg")
    (src / "absolute").symlink_to(secret)
    (src / "escape").symlink_to("../secret.txt")
    (src / "pkg" / "escape2").symlink_to("../../secret.txt")
    (src / "dangling").symlink_to("nowhere")
    (src / "hop").symlink_to("pkgdir/../../secret.txt")  # lexically inside, resolves outside
    messages: list[str] = []
    copied = copy_tree(src, tmp_path / "snap", log=messages.append)
    snap = listing(tmp_path / "snap")
    assert snap["inside.py"] == "-> train.py" and snap["pkg/up.txt"] == "-> ../train.py"
    assert snap["pkgdir"] == "-> pkg" and snap["dangling"] == "-> nowhere"
    for gone in ("absolute", "escape", "pkg/escape2", "hop"):
        assert gone not in snap
        assert any(line.startswith(f"{gone}: left out") for line in copied.skipped), gone
    assert "host secret" not in json.dumps(snap)
    assert len(messages) == 4 and all("snapshot of" in m for m in messages)


def test_a_fifo_is_left_out_without_blocking(src: Path, tmp_path: Path) -> None:
    os.mkfifo(src / "pipe")
    done: list[object] = []
    worker = threading.Thread(target=lambda: done.append(copy_tree(src, tmp_path / "snap")))
    worker.start()
    worker.join(timeout=10)
    assert done, "copying a FIFO blocked"
    assert not (tmp_path / "snap" / "pipe").exists()
    assert "pipe: left out: a FIFO" in done[0].skipped  # type: ignore[attr-defined]


def test_a_file_swapped_for_a_fifo_is_never_opened_blocking(src: Path, tmp_path: Path) -> None:
    # Listed as a file, then swapped before it is opened: the open itself must not block
    # (O_NONBLOCK) nor follow a link (O_NOFOLLOW).
    os.mkfifo(tmp_path / "fifo")
    worker = _Copier(src, 1 << 30, 1000)
    (tmp_path / "out").mkdir()
    worker.file(tmp_path / "fifo", tmp_path / "out" / "fifo", "fifo")
    assert worker.skipped == ["fifo: left out: a FIFO"]
    (tmp_path / "link").symlink_to(src / "train.py")
    worker.file(tmp_path / "link", tmp_path / "out" / "link", "link")  # swapped for a symlink
    assert "link: cannot be read" in worker.skipped[1]


def test_over_the_limit_is_refused_and_nothing_stays(src: Path, tmp_path: Path) -> None:
    (src / "big.bin").write_bytes(b"x" * 1000)
    with pytest.raises(RunConfigError, match="more than 500 bytes") as info:
        copy_tree(src, tmp_path / "snap", limit_bytes=500)
    assert "--input" in (info.value.hint or "")
    assert not (tmp_path / "snap").exists()
    with pytest.raises(RunConfigError, match="more than 2 files"):
        copy_tree(src, tmp_path / "snap", limit_files=2)


def test_the_limits_come_from_the_environment() -> None:
    assert limits({}) == (2 << 30, 200_000)
    assert limits({"ENVBUILD_SNAPSHOT_MAX_BYTES": "10", "ENVBUILD_SNAPSHOT_MAX_FILES": "3"}) == (
        10,
        3,
    )
    with pytest.raises(RunConfigError, match="ENVBUILD_SNAPSHOT_MAX_BYTES"):
        limits({"ENVBUILD_SNAPSHOT_MAX_BYTES": "lots"})


def test_the_sources_own_outputs_and_logs_are_not_copied(src: Path, tmp_path: Path) -> None:
    for name in ("outputs", "logs"):
        (src / name).mkdir()
        (src / name / "old.txt").write_text("stale")
    (src / "pkg" / "outputs").mkdir()  # only the top level is the run's
    copy_tree(src, tmp_path / "snap")
    assert not (tmp_path / "snap" / "outputs").exists()
    assert not (tmp_path / "snap" / "logs").exists()
    assert (tmp_path / "snap" / "pkg" / "outputs").is_dir()


def test_the_ignore_file_leaves_paths_out(src: Path, tmp_path: Path) -> None:
    (src / ".gitignore").write_text("*.txt\n")  # only when there is no .amlignore
    (src / ".amlignore").write_text(
        "# as Azure ML reads it\ndata/\n/build\n*.ckpt\n!best.ckpt\n**/__pycache__\n"
    )
    for folder in ("data", "build", "pkg/build", "pkg/__pycache__"):
        (src / folder).mkdir(parents=True)
        (src / folder / "f.bin").write_bytes(b"x" * 100)
    for name in ("a.ckpt", "best.ckpt", "pkg/b.ckpt"):
        (src / name).write_text("c")
    messages: list[str] = []
    copied = copy_tree(src, tmp_path / "snap", log=messages.append)
    snap = listing(tmp_path / "snap")
    for gone in ("data", "build", "a.ckpt", "pkg/b.ckpt", "pkg/__pycache__"):
        assert gone not in snap, gone
    for kept in ("best.ckpt", "pkg/build/f.bin", "pkg/data.txt", ".amlignore", ".gitignore"):
        assert kept in snap, kept
    assert (copied.ignored, copied.ignore_file) == (5, ".amlignore")
    assert messages == [f"envbuild: snapshot of {src}: 5 paths left out by .amlignore"]
    (src / ".amlignore").unlink()
    copied = copy_tree(src, tmp_path / "snap2")
    assert copied.ignore_file == ".gitignore" and "pkg/data.txt" not in listing(tmp_path / "snap2")


def test_an_ignore_file_that_is_not_a_file_is_an_error(src: Path, tmp_path: Path) -> None:
    os.mkfifo(src / ".amlignore")
    with pytest.raises(RunConfigError, match=r"\.amlignore"):
        copy_tree(src, tmp_path / "snap")
    assert not (tmp_path / "snap").exists()


def test_envbuild_home_inside_the_source_is_never_copied_into_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "me"
    home = source / ".local" / "share" / "envbuild"
    (home / "runs").mkdir(parents=True)
    (source / "train.py").write_text("x")
    monkeypatch.setenv("ENVBUILD_HOME", str(home))
    files = RunFiles(home=home, source=str(source), target="/workspace")
    messages: list[str] = []
    Prepared.make(files, "r1", messages.append)
    snap = listing(files.snapshot_dir("r1"))
    assert snap == {".local": "dir", ".local/share": "dir", "train.py": "x"}
    assert any("ENVBUILD_HOME" in m for m in messages)


def test_remove_tree_clears_read_only_folders_and_never_follows_links(tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious").write_text("x")
    tree = tmp_path / "tree"
    (tree / "ro" / "deeper").mkdir(parents=True)
    (tree / "ro" / "deeper" / "f").write_text("x")
    (tree / "link").symlink_to(keep)
    (tree / "ro" / "deeper").chmod(0o500)
    (tree / "ro").chmod(0o000)
    assert remove_tree(tree) is True
    assert not tree.exists() and (keep / "precious").exists()


# The plan: the snapshot in place of the source
# --------------------------------------------------------------------------


def test_the_plan_mounts_the_snapshot_never_the_source(src: Path, settings: Settings) -> None:
    p = plan(
        RunConfig(environment="image:example:1", script="train.py", source_directory=src),
        settings=settings,
    )
    assert p.run_files is None  # the default run is untouched
    p = plan(
        RunConfig(
            environment="image:example:1",
            script="train.py",
            source_directory=src,
            snapshot=True,
        ),
        settings=settings,
    )
    spec = p.container_spec("sha256:x", "r1")
    sources = {m.target: (m.source, m.read_only) for m in spec.mounts}
    assert sources["/workspace"] == (str(settings.home / "runs" / "r1" / "snapshot"), False)
    assert str(src.resolve()) not in [m.source for m in spec.mounts]
    assert CONTEXT_TARGET not in sources and "PYTHONPATH" not in dict(spec.env)
    doc = p.to_json()
    assert doc["snapshot"]["path"].endswith("runs/RUNID/snapshot")
    assert doc["snapshot"]["azureml_context"] is False


def test_the_azureml_context_implies_a_snapshot_and_keeps_pythonpath(
    src: Path, settings: Settings
) -> None:
    config = RunConfig(
        environment="image:example:1",
        script="train.py",
        source_directory=src,
        environment_variables={"PYTHONPATH": "/mine"},
        azureml_context=True,
    )
    assert config.snapshot is True
    p = plan(config, settings=settings)
    spec = p.container_spec("sha256:x", "r2")
    env = dict(spec.env)
    assert [name for name, _ in spec.env].count("PYTHONPATH") == 1
    assert env["PYTHONPATH"] == f"{CONTEXT_TARGET}:/mine"
    assert env["ENVBUILD_METRICS_FILE"] == f"{METRICS_TARGET}/metrics.jsonl"
    mounts = {m.target: m for m in spec.mounts}
    assert mounts[CONTEXT_TARGET].source == str(context_dir()) and mounts[CONTEXT_TARGET].read_only
    assert mounts[METRICS_TARGET].source == str(settings.home / "runs" / "r2" / "metrics")
    assert not mounts[METRICS_TARGET].read_only
    assert "ENVBUILD_METRICS_FILE" in p.to_json()["variables"]


def test_the_definitions_pythonpath_follows_the_context(
    src: Path, settings: Settings, write_env: Callable[[str], Path], engine_holds_base: None
) -> None:
    env_dir = write_env(
        'schema = 1\nname = "demo"\nversion = 1\n[variables]\nPYTHONPATH = "/opt/lib"\n'
    )
    p = plan(
        RunConfig(
            environment=env_dir, script="train.py", source_directory=src, azureml_context=True
        ),
        settings=settings,
    )
    env = dict(p.container_spec("sha256:x", "r4").env)
    assert env["PYTHONPATH"] == f"{CONTEXT_TARGET}:/opt/lib"


def test_distributed_nodes_inherit_the_context(src: Path, settings: Settings) -> None:
    from envbuild.run.config import PyTorch

    p = plan(
        RunConfig(
            environment="image:example:1",
            script="train.py",
            source_directory=src,
            azureml_context=True,
            distribution=PyTorch(nodes=2, processes_per_node=1),
        ),
        settings=settings,
    )
    for spec in p.node_specs("sha256:x", "r3"):
        assert {CONTEXT_TARGET, METRICS_TARGET} <= {m.target for m in spec.mounts}
        assert "ENVBUILD_METRICS_FILE" in dict(spec.env)


def test_a_snapshot_needs_a_source(settings: Settings) -> None:
    with pytest.raises(RunConfigError, match="no"):
        plan(
            RunConfig(
                environment="image:example:1",
                command=["true"],
                source_directory=None,
                snapshot=True,
            ),
            settings=settings,
        )


# A whole run on the fake engine: the "script" writes through the mounts
# --------------------------------------------------------------------------


def go(
    engine: FakeRunEngine,
    settings: Settings,
    src: Path,
    log: Callable[[str], None] = lambda line: None,
    **overrides: Any,
) -> RunResult:
    """Run train.py from ``src`` on the fake engine, with ``overrides`` to RunConfig."""
    return run(
        RunConfig(
            environment="image:example:1", script="train.py", source_directory=src, **overrides
        ),
        settings=settings,
        engine=engine,
        output=lambda stream, data: None,
        log=log,
    )


def script_writes(spec: ContainerSpec) -> list[tuple[int, bytes]]:
    mounts = {m.target: Path(m.source) for m in spec.mounts}
    work = mounts["/workspace"]
    if (work / "outputs").exists():  # the fake asks twice (attach, start): run once
        return [out("done\n")]
    (work / "outputs").mkdir()
    (work / "outputs" / "model.txt").write_text("weights")
    (work / "logs").mkdir()
    (work / "logs" / "x.log").write_text("log")
    (work / "scratch.txt").write_text("temporary")
    (work / "train.py").write_text("changed in the snapshot only")
    if METRICS_TARGET in mounts:
        with (mounts[METRICS_TARGET] / "metrics.jsonl").open("a") as handle:
            for value in (0.5, 0.4):
                handle.write(json.dumps({"v": 1, "kind": "log", "name": "loss", "value": value}))
                handle.write("\n")
            handle.write(json.dumps({"v": 1, "kind": "tag", "name": "model", "value": "cnn"}))
            handle.write('\n{"v": 1, "kind": "lo')  # torn: killed mid-line
    return [out("done\n")]


def test_a_snapshot_run_keeps_outputs_and_logs(src: Path, settings: Settings) -> None:
    engine = FakeRunEngine(answer=script_writes).with_image()
    before = listing(src)
    messages: list[str] = []
    result = go(engine, settings, src, messages.append, azureml_context=True)
    assert result.exit_code == 0
    assert listing(src) == before  # the user's folder is untouched
    assert result.files_dir == settings.home / "runs" / result.run_id / "files"
    assert listing(result.files_dir) == {
        "logs": "dir",
        "logs/x.log": "log",
        "outputs": "dir",
        "outputs/model.txt": "weights",
    }
    run_folder = settings.home / "runs" / result.run_id
    assert sorted(p.name for p in run_folder.iterdir()) == ["files"]  # the rest is gone
    assert dict(result.metrics) == {"loss": [0.5, 0.4]} and dict(result.tags) == {"model": "cnn"}
    record = History.at(settings).get(result.run_id)
    assert record.metrics == {"loss": [0.5, 0.4]} and record.tags == {"model": "cnn"}
    assert record.files_dir == str(result.files_dir)
    assert record.status == "exited"
    assert messages == []
    # ... and read back by run id (a prefix is enough)
    assert kept_files(result.run_id[:6], settings) == ["logs/x.log", "outputs/model.txt"]
    assert kept_file(result.run_id, "outputs/model.txt", settings).read_text() == "weights"


def test_a_plain_run_keeps_no_files(src: Path, settings: Settings) -> None:
    engine = FakeRunEngine(frames=[out("x\n")]).with_image()
    result = go(engine, settings, src)
    assert result.files_dir is None and dict(result.metrics) == {}
    assert not (settings.home / "runs" / result.run_id).exists()
    with pytest.raises(HistoryError, match="kept no files"):
        kept_files(result.run_id, settings)
    History.at(settings).start(record("running00001"))
    with pytest.raises(HistoryError, match="still running"):
        kept_files("running00001", settings)


def test_a_failed_start_still_cleans_the_snapshot(src: Path, settings: Settings) -> None:
    engine = FakeRunEngine(fail="start").with_image()
    with pytest.raises(Exception, match="start failed"):
        go(engine, settings, src, snapshot=True)
    folders = list((settings.home / "runs").glob("*/"))
    assert [sorted(p.name for p in f.iterdir()) for f in folders if f.is_dir()] == [["files"]]


def test_a_source_over_the_limit_starts_nothing(
    src: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENVBUILD_SNAPSHOT_MAX_BYTES", "5")
    engine = FakeRunEngine().with_image()
    with pytest.raises(RunConfigError, match="more than 5 bytes"):
        go(engine, settings, src, snapshot=True)
    assert "create" not in engine.ops
    assert not any((settings.home / "runs").glob("*/"))


# Kept files read back, and what the script could plant there
# --------------------------------------------------------------------------


def finished_run(
    tmp_path: Path, settings: Settings, src: Path, make: Callable[[Path], None]
) -> str:
    files = RunFiles(home=settings.home, source=str(src), target="/workspace")
    prepared = Prepared.make(files, "run000000001", lambda line: None)
    History.at(settings).start(record("run000000001"))
    make(files.snapshot_dir("run000000001"))
    kept = prepared.finish(lambda line: None)
    assert kept.files_dir is not None
    return "run000000001"


def test_links_the_script_left_are_never_followed(
    tmp_path: Path, settings: Settings, src: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("host secret")

    def plant(snapshot: Path) -> None:
        (snapshot / "outputs" / "sub").mkdir(parents=True)
        (snapshot / "outputs" / "ok.txt").write_text("ok")
        (snapshot / "outputs" / "leak").symlink_to(secret)
        (snapshot / "outputs" / "etc").symlink_to(tmp_path)
        (snapshot / "logs").symlink_to(tmp_path)  # ./logs itself a link: not kept

    run_id = finished_run(tmp_path, settings, src, plant)
    assert kept_files(run_id, settings) == ["outputs/ok.txt"]
    for name in ("outputs/leak", "outputs/etc/secret", "../secret", "/etc/passwd", "outputs/sub"):
        with pytest.raises(HistoryError, match="kept no file"):
            kept_file(run_id, name, settings)
    assert tmp_path.exists() and secret.exists()  # removing the snapshot followed nothing


def test_fetch_and_fetch_all(tmp_path: Path, settings: Settings, src: Path) -> None:
    def write(snapshot: Path) -> None:
        (snapshot / "outputs" / "deep").mkdir(parents=True)
        (snapshot / "outputs" / "model.txt").write_text("weights")
        (snapshot / "outputs" / "deep" / "a.txt").write_text("a")
        (snapshot / "logs").mkdir()
        (snapshot / "logs" / "x.log").write_text("log")

    run_id = finished_run(tmp_path, settings, src, write)
    here = tmp_path / "here"
    here.mkdir()
    assert fetch(run_id, "outputs/model.txt", here, settings).read_text() == "weights"
    assert (here / "model.txt").exists()
    target = fetch(run_id, "logs/x.log", tmp_path / "new" / "renamed.log", settings)
    assert target.read_text() == "log"
    copies = fetch_all(run_id, tmp_path / "all", "outputs/", settings)
    assert sorted(p.relative_to(tmp_path / "all").as_posix() for p in copies) == [
        "outputs/deep/a.txt",
        "outputs/model.txt",
    ]


def test_the_default_run_path_imports_none_of_this(src: Path, tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "from envbuild.run.config import RunConfig\n"
        "from envbuild.run.planning import plan\n"
        "import envbuild.run.local, envbuild.cli.run_fast\n"
        "ours = ('envbuild.run.files', 'envbuild.run.snapshot', 'envbuild.run.metrics')\n"
        "p = plan(RunConfig(environment='image:x:1', script='train.py', source_directory=Path(sys.argv[1])))\n"
        "p.container_spec('sha256:x', 'r'); p.to_json()\n"
        "print(sorted(m for m in ours if m in sys.modules))\n"
        "plan(RunConfig(environment='image:x:1', script='train.py', source_directory=Path(sys.argv[1]),"
        " snapshot=True))\n"
        "print(sorted(m for m in ours if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(src)], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split("\n")[:2] == [
        "[]",
        "['envbuild.run.files', 'envbuild.run.metrics']",
    ], done.stderr


def test_the_reaper_keeps_what_a_killed_envbuilds_run_wrote(tmp_path: Path, src: Path) -> None:
    from envbuild.run.reaper import reap
    from tests.unit.test_run_reaper import _dead_owner

    home = tmp_path / "home"
    files = RunFiles(home=home, source=str(src), target="/workspace", azureml_context=True)
    Prepared.make(files, "r-dead", lambda line: None)
    History(home / "runs.db").start(record("r-dead", owner=_dead_owner()))
    snapshot = files.snapshot_dir("r-dead")
    (snapshot / "outputs").mkdir()
    (snapshot / "outputs" / "model.txt").write_text("saved before the kill")
    files.metrics_file("r-dead").write_text('{"v": 1, "kind": "log", "name": "loss", "value": 1}\n')
    assert reap(FakeRunEngine(), home) == ["r-dead"]
    assert sorted(p.name for p in (home / "runs" / "r-dead").iterdir()) == ["files"]
    got = History(home / "runs.db").get("r-dead")
    assert got.status == "lost" and got.metrics == {"loss": 1}
    assert kept_files("r-dead", load_settings()._replace(home=home)) == ["outputs/model.txt"]


def test_the_runs_commands(
    tmp_path: Path, settings: Settings, src: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from envbuild.cli.main import main

    def write(snapshot: Path) -> None:
        (snapshot / "outputs").mkdir()
        (snapshot / "outputs" / "model.txt").write_text("weights")
        (snapshot / "logs").mkdir()
        (snapshot / "logs" / "x.log").write_text("log")

    run_id = finished_run(tmp_path, settings, src, write)
    History.at(settings).record_files(
        run_id,
        files_dir=settings.home / "runs" / run_id / "files",
        metrics={"loss": [0.5, 0.4], "acc": 0.9},
        tags={"model": "cnn"},
    )
    assert main(["runs", "show", run_id[:5], "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["metrics"] == {"loss": [0.5, 0.4], "acc": 0.9} and doc["tags"] == {"model": "cnn"}
    assert doc["files"] == ["logs/x.log", "outputs/model.txt"]
    assert main(["runs", "show", run_id]) == 0
    text = capsys.readouterr().out.splitlines()
    assert "metric       acc: 0.9" in text and "metric       loss: [0.5, 0.4]" in text
    assert "tag          model: cnn" in text and "file         outputs/model.txt" in text
    assert main(["runs", "files", run_id]) == 0
    assert capsys.readouterr().out.split() == ["logs/x.log", "outputs/model.txt"]
    assert main(["runs", "files", run_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == ["logs/x.log", "outputs/model.txt"]
    target = tmp_path / "got" / "m.txt"
    assert main(["runs", "download", run_id, "outputs/model.txt", "-o", str(target)]) == 0
    assert target.read_text() == "weights"
    folder = tmp_path / "new-folder"
    assert main(["runs", "download", run_id, "outputs/model.txt", "-o", f"{folder}/"]) == 0
    assert (folder / "model.txt").read_text() == "weights"
    capsys.readouterr()
    assert main(["runs", "download", run_id, "--prefix", "logs/", "-o", str(tmp_path / "all")]) == 0
    assert (tmp_path / "all" / "logs" / "x.log").read_text() == "log"
    assert not (tmp_path / "all" / "outputs").exists()
    assert main(["runs", "download", run_id, "../secret"]) == 2
    assert "kept no file '../secret'" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user needs root")
def test_as_root_the_snapshot_is_given_to_the_runs_user(src: Path, settings: Settings) -> None:
    files = RunFiles(
        home=settings.home, source=str(src), target="/workspace", azureml_context=True, user="1234"
    )
    (src / "link").symlink_to("train.py")
    messages: list[str] = []
    Prepared.make(files, "r5", messages.append)
    snapshot = files.snapshot_dir("r5")
    owners = {(p.lstat().st_uid, p.lstat().st_gid) for p in [snapshot, *snapshot.rglob("*")]}
    assert owners == {(1234, 1234)}
    assert (files.metrics_file("r5").stat().st_uid, messages) == (1234, [])
    assert (src / "train.py").stat().st_uid == 0  # the user's own folder is never changed


def test_a_user_name_keeps_the_snapshot_yours_and_says_so(src: Path, settings: Settings) -> None:
    files = RunFiles(home=settings.home, source=str(src), target="/workspace", user="nobody")
    messages: list[str] = []
    Prepared.make(files, "r6", messages.append)
    assert files.snapshot_dir("r6").stat().st_uid == os.geteuid()
    assert messages and "not writable by that user" in messages[0]
