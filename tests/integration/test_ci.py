"""``envbuild ci`` end to end: the real engine, a loopback registry, a git catalog of two envs."""

from __future__ import annotations

import json
import subprocess
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.registry import LoopbackRegistry
from tests.integration.test_registry import Session, docker_build

pytestmark = pytest.mark.docker


@pytest.fixture
def session(docker_cli: str, tmp_path: Path) -> Iterator[Session]:
    tool = Session(docker_cli, tmp_path / "home")
    yield tool
    out = subprocess.run(
        [docker_cli, "images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for wanted in (f"{tool.prefix}/", f"/{tool.namespace}/"):  # its own images, then pulls
        ids = {
            line.split()[0]
            for line in out.splitlines()
            if len(line.split()) == 2 and wanted in line.split()[1] + "/"
        }
        for image_id in ids:
            subprocess.run(
                [docker_cli, "rmi", "--force", image_id], capture_output=True, check=False
            )


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        timeout=60,
    )


def test_ci_is_green_then_red_on_a_changed_but_unbumped_environment(
    session: Session, registry: LoopbackRegistry, tmp_path: Path
) -> None:
    token = uuid.uuid4().hex[:8]
    parent, child = f"ci-base-{token}", f"ci-child-{token}"
    repo = tmp_path / "repo"
    catalog = repo / "catalog"
    (catalog / "base").mkdir(parents=True)
    (catalog / "child").mkdir()
    (catalog / "base" / "env.toml").write_text(
        f'schema = 1\nname = "{parent}"\nversion = 1\n[base]\nimage = "debian:bookworm-slim"\n'
        '[variables]\nMESSAGE = "hi"\n'
        '[[tests]]\nrun = ["sh", "-c", "echo $MESSAGE"]\nexpect = "hi"\n',
        encoding="utf-8",
    )
    (catalog / "child" / "env.toml").write_text(
        f'schema = 1\nname = "{child}"\nversion = 1\nextends = "../base"\n'
        '[variables]\nOTHER = "x"\n'
        '[[tests]]\nrun = ["sh", "-c", "echo $MESSAGE $OTHER"]\nexpect = "hi x"\n',
        encoding="utf-8",
    )
    session("lock", "-q", str(catalog / "base"))
    session("lock", "-q", str(catalog / "child"))
    session("publish", "--catalog", str(catalog))
    _git(repo, "init", "-q", ".")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "catalog")
    target = f"{registry.host}/{session.namespace}"
    report = tmp_path / "green"

    green = session(
        "ci", str(catalog), "--registry", target, "--since", "HEAD", "--push",
        "--report", str(report), "-q",
    )  # fmt: skip
    assert green.returncode == 0
    assert green.stdout == (report / "summary.md").read_text(encoding="utf-8")
    data = json.loads((report / "report.json").read_text(encoding="utf-8"))
    assert data["ok"] is True
    envs = data["environments"]
    assert [e["name"] for e in envs] == [parent, child]  # parents first
    for env in envs:
        assert env["tier"] == "built"
        assert {s["status"] for s in env["stages"].values()} == {"passed"}
        repo_name = f"{session.namespace}/{env['name']}"
        assert env["digest"] == registry.manifest_digest(repo_name, env["hash"][:12])
        assert env["digest"] == registry.manifest_digest(repo_name, "1")
    assert envs[1]["tests"]["results"][-1]["output_tail"] == ["hi x"]
    suite = ET.parse(report / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0"
    assert len(suite.findall("testcase")) == 2 + 2 * 7
    summary = (report / "summary.md").read_text(encoding="utf-8")
    assert summary.startswith("## envbuild ci: passed")
    assert f"| `{child}` | 1 | ok | ok | ok | ok | ok | ok 2/2 | ok | built |" in summary

    # The registry holds both now: an engine without them pulls instead of building.
    child_id = session.docker_out("image", "inspect", "--format", "{{.Id}}", envs[1]["image"])
    session.docker_out("rmi", "--force", child_id.strip())
    again = json.loads(
        session("ci", str(catalog), "--registry", target, "--since", "HEAD", "--json", "-q").stdout
    )
    assert [e["tier"] for e in again["environments"]] == ["local", "registry"]

    # Changed, not bumped: red, and the summary names the environment and why.
    text = (catalog / "child" / "env.toml").read_text(encoding="utf-8")
    (catalog / "child" / "env.toml").write_text(text.replace('"x"', '"y"'), encoding="utf-8")
    red_report = tmp_path / "red"
    red = session(
        "ci", str(catalog), "--registry", target, "--since", "HEAD", "--push",
        "--report", str(red_report), "-q", check=False,
    )  # fmt: skip
    assert red.returncode == 1, red.stderr
    summary = (red_report / "summary.md").read_text(encoding="utf-8")
    assert summary.startswith("## envbuild ci: failed")
    assert f"**{child}**, version:" in summary
    assert "changed without a version bump (still version 1)" in summary
    assert f"**{child}**, tests:" in summary  # its check expects "hi x"
    assert f"**{parent}**" not in summary
    data = json.loads((red_report / "report.json").read_text(encoding="utf-8"))
    stages = data["environments"][1]["stages"]
    assert stages["version"]["status"] == "failed"
    assert stages["push"]["status"] == "skipped"  # a red environment is never pushed
    failed = [
        (c.get("classname"), c.get("name"))
        for c in ET.parse(red_report / "junit.xml").getroot().iter("testcase")
        if c.find("failure") is not None
    ]
    assert (child, "version") in failed and ("catalog", "publish") in failed


def test_relock_proposes_the_fix_of_a_moved_base_and_committing_it_is_green(
    session: Session, tmp_path: Path
) -> None:
    token = uuid.uuid4().hex[:8]
    base = f"envbuild-test-base-{session.namespace}:1"

    def make_base(label: str) -> str:
        made.append(
            docker_build(
                session.docker, base, f"FROM debian:bookworm-slim\nLABEL io.envbuild.test={label}\n"
            )
        )
        return made[-1]

    made: list[str] = []
    repo = tmp_path / "repo"
    catalog = repo / "catalog"
    (catalog / "env").mkdir(parents=True)
    (catalog / "env" / "env.toml").write_text(
        f'schema = 1\nname = "ci-drift-{token}"\nversion = 3\n[base]\nimage = "{base}"\n'
        '[variables]\nMESSAGE = "hi"\n'
        '[[tests]]\nrun = ["sh", "-c", "echo $MESSAGE"]\nexpect = "hi"\n',
        encoding="utf-8",
    )
    try:
        locked_id = make_base(f"{token}-old")
        session("lock", "-q", str(catalog / "env"))
        session("publish", "--catalog", str(catalog))
        _git(repo, "init", "-q", ".")
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", "catalog")
        moved_id = make_base(f"{token}-new")  # the base moves on
        report = tmp_path / "relock"
        proc = session("ci", str(catalog), "--relock", "--report", str(report), "-q", check=False)
        assert proc.returncode == 1
        data = json.loads((report / "report.json").read_text(encoding="utf-8"))
        (env,) = data["environments"]
        assert env["stages"]["base"]["status"] == "failed"
        assert f"locked {locked_id}, built on {moved_id}" in env["stages"]["base"]["message"]
        assert env["relock"]["version"] == [3, 4]
        assert env["stages"]["build"]["status"] == "passed"  # the proposal builds ...
        assert env["stages"]["tests"]["status"] == "passed"  # ... and passes its tests
        summary = (report / "summary.md").read_text(encoding="utf-8")
        assert f"`ci-drift-{token}`: version 3 \u2192 4" in summary
        changed = subprocess.run(
            ["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout
        assert sorted(changed.split()) == sorted(
            ["M", "catalog/env/env.lock.toml", "M", "catalog/env/env.toml"]
        )
        assert f'id = "{moved_id}"' in (catalog / "env" / "env.lock.toml").read_text()
        # Reviewed and committed (with the published folder): green.
        session("publish", "--catalog", str(catalog))
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", "relock")
        green = session("ci", str(catalog), "--json", "-q")
        assert json.loads(green.stdout)["ok"] is True
    finally:
        built = session.docker_out(
            "images", "-q", "--no-trunc", "--filter", f"reference={session.prefix}/*"
        ).split()
        for image in (*built, *made, base):  # children first: then the bases can go
            subprocess.run(
                [session.docker, "rmi", "--force", image], capture_output=True, check=False
            )


def _without_seconds(data: object) -> object:
    if isinstance(data, dict):
        return {k: _without_seconds(v) for k, v in data.items() if k != "seconds"}
    if isinstance(data, list):
        return [_without_seconds(v) for v in data]
    return data


def test_a_green_no_op_job_is_answered_from_its_record_until_the_registry_changes(
    session: Session, registry: LoopbackRegistry, tmp_path: Path
) -> None:
    token = uuid.uuid4().hex[:8]
    name = f"ci-record-{token}"
    catalog = tmp_path / "catalog"
    (catalog / "env").mkdir(parents=True)
    (catalog / "env" / "env.toml").write_text(
        f'schema = 1\nname = "{name}"\nversion = 1\n[base]\nimage = "debian:bookworm-slim"\n'
        '[[tests]]\nrun = ["true"]\n',
        encoding="utf-8",
    )
    session("lock", "-q", str(catalog / "env"))
    session("publish", "--catalog", str(catalog))
    target = f"{registry.host}/{session.namespace}"
    argv = ("ci", str(catalog), "--registry", target, "--push", "--json")
    session.env["ENVBUILD_TRACE"] = "1"

    def ci() -> tuple[dict[str, Any], str]:
        proc = session(*argv)
        return json.loads(proc.stdout), proc.stderr

    first, err = ci()  # builds, tests and pushes: not a no-op
    assert first["ok"] is True and "(pushed)" in json.dumps(first)
    assert "ci runs the whole job: no record of this job" in err
    second, err = ci()  # the same job, changing nothing: recorded
    assert "ci runs the whole job: no record of this job" in err
    (env,) = second["environments"]
    assert (
        env["tier"] == "local" and "(already in the registry)" in env["stages"]["push"]["message"]
    )
    third, err = ci()
    assert "ci answered from the record" in err
    assert _without_seconds(third) == _without_seconds(second)
    assert err.replace("envbuild: trace: ci answered", "").count("envbuild: trace") == 0

    # The registry loses the image: the record no longer holds; the whole job pushes again.
    request = urllib.request.Request(
        f"{registry.url}/v2/{session.namespace}/{name}/manifests/{env['digest']}",
        method="DELETE",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 202
    assert registry.manifest_digest(f"{session.namespace}/{name}", "1") is None
    fourth, err = ci()
    assert "ci runs the whole job: the registry's" in err
    (pushed,) = fourth["environments"]
    assert fourth["ok"] is True and "(pushed)" in pushed["stages"]["push"]["message"]
    assert registry.manifest_digest(f"{session.namespace}/{name}", "1") == pushed["digest"]
    _, err = ci()  # that job pushed: nothing was recorded; this one is recorded again
    assert "no record of this job" in err
    sixth, err = ci()
    assert "ci answered from the record" in err
    assert sixth["environments"][0]["digest"] == pushed["digest"]


def test_a_recorded_job_asks_a_registry_with_credentials_as_the_full_job_does(
    session: Session, auth_registry: LoopbackRegistry, tmp_path: Path
) -> None:
    from tests.integration.conftest import CANARY_PASSWORD, REGISTRY_USER

    token = uuid.uuid4().hex[:8]
    catalog = tmp_path / "catalog"
    (catalog / "env").mkdir(parents=True)
    (catalog / "env" / "env.toml").write_text(
        f'schema = 1\nname = "ci-auth-{token}"\nversion = 1\n'
        '[base]\nimage = "debian:bookworm-slim"\n',
        encoding="utf-8",
    )
    session("lock", "-q", str(catalog / "env"))
    session("publish", "--catalog", str(catalog))
    session.env.update(
        ENVBUILD_TRACE="1",
        DOCKER_CONFIG=str(tmp_path / "empty-docker-config"),
        ENVBUILD_REGISTRY_USERNAME=REGISTRY_USER,
        ENVBUILD_REGISTRY_PASSWORD=CANARY_PASSWORD,
    )
    target = f"{auth_registry.host}/{session.namespace}"
    argv = ("ci", str(catalog), "--registry", target, "--push", "--json", "-q")
    session(*argv)  # built and pushed
    second = session(*argv)  # recorded
    third = session(*argv)
    assert "ci answered from the record" in third.stderr
    assert _without_seconds(json.loads(third.stdout)) == _without_seconds(json.loads(second.stdout))
    # A wrong password: the registry refuses the record's HEADs, and the whole job
    # reports it (red), as it would have without a record.
    session.env["ENVBUILD_REGISTRY_PASSWORD"] = "wrong-" + CANARY_PASSWORD
    red = session(*argv, check=False)
    assert red.returncode == 1, red.stderr
    assert "ci runs the whole job: the registry did not answer: RegistryError" in red.stderr
    (env,) = json.loads(red.stdout)["environments"]
    assert env["stages"]["push"]["status"] == "failed"
    assert f"refused the credentials of user {REGISTRY_USER!r}" in env["stages"]["push"]["message"]
    assert "no record of this job" in session(*argv, check=False).stderr  # red: dropped
    session.assert_no_canary()
