"""The registry tier against real registries on loopback (tests/integration/registry.py).

Each test pushes under a namespace of its own in the session's registries and
builds environments with names of their own, so no two tests share an image.
Every command's output, envbuild's state folder and the images' labels are
searched for the canary password of the auth registry: it must appear nowhere.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import registry as registries
from tests.integration.conftest import CANARY_PASSWORD, REGISTRY_USER
from tests.integration.registry import LoopbackRegistry
from tests.integration.test_build import Envbuild, write_env

pytestmark = pytest.mark.docker

EXIT_REGISTRY = 6


def test_loopback_registries_answer(
    registry: LoopbackRegistry, auth_registry: LoopbackRegistry
) -> None:
    with urllib.request.urlopen(f"{registry.url}/v2/", timeout=5) as response:
        assert response.status == 200
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{auth_registry.url}/v2/", timeout=5)
    assert refused.value.code == 401
    assert auth_registry.manifest_digest("nothing", "here") is None  # the user is let in


class Session(Envbuild):
    """envbuild with a prefix, a state folder, and a registry namespace of its own."""

    def __init__(self, docker: str, home: Path) -> None:
        token = uuid.uuid4().hex[:10]
        super().__init__(docker, f"envbuild-test-{token}", home)
        self.namespace = f"t{token}"
        self.home = home
        self.outputs: list[str] = []

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        proc = super().__call__(*args, check=check, timeout=timeout)
        self.outputs += [proc.stdout, proc.stderr]
        return proc

    def registry_tags(self, reg: LoopbackRegistry) -> list[str]:
        out = self.docker_out(
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "--filter",
            f"reference={reg.host}/{self.namespace}/*",
        )
        return sorted(line for line in out.splitlines() if line and not line.endswith("<none>"))

    def forget(self, reg: LoopbackRegistry, image_id: str) -> None:
        """Remove every local tag of ``image_id`` (and so the image): the engine lacks it."""
        self.docker_out("rmi", "--force", image_id)
        assert self.tags() == []
        assert self.registry_tags(reg) == []

    def assert_no_canary(self) -> None:
        texts = list(self.outputs)
        for path in self.home.rglob("*"):
            if path.is_file():
                texts.append(path.read_bytes().decode("utf-8", "replace"))
        for tag in self.tags():
            texts.append(self.docker_out("image", "inspect", tag))
        assert not [t for t in texts if CANARY_PASSWORD in t]


@pytest.fixture
def eb(docker_cli: str, tmp_path: Path) -> Iterator[Session]:
    yield from session(docker_cli, tmp_path / "home")


def session(docker_cli: str, home: Path) -> Iterator[Session]:
    """A :class:`Session`; afterwards, every image it made or pulled is removed."""
    tool = Session(docker_cli, home)
    yield tool
    # Everything this test tagged or pulled: its own prefix's images first (children of
    # a base it may have pulled), then what it holds from its registry namespace.
    for wanted in (f"{tool.prefix}/", f"/{tool.namespace}/"):
        out = subprocess.run(
            [docker_cli, "images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        ids = {
            line.split()[0]
            for line in out.splitlines()
            if len(line.split()) == 2 and wanted in line.split()[1] + "/"
        }
        for image_id in ids:
            subprocess.run(
                [docker_cli, "rmi", "--force", image_id], capture_output=True, check=False
            )


def docker_build(docker: str, tag: str, dockerfile: str) -> str:
    """Build ``dockerfile`` (no context) as ``tag`` with the engine's own builder; its ID."""
    subprocess.run(
        [docker, "build", "-q", "-t", tag, "-"],
        input=dockerfile,
        text=True,
        capture_output=True,
        check=True,
        timeout=120,
    )
    return subprocess.run(
        [docker, "image", "inspect", "--format", "{{.Id}}", tag],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()


def small_env(tmp_path: Path, version: int = 1, message: str = "hi") -> Path:
    """An environment of its own name (its own hash and image), sharing cached layers."""
    name = f"reg-{uuid.uuid4().hex[:8]}"
    return write_env(
        tmp_path / name,
        f'schema = 1\nname = "{name}"\nversion = {version}\n[variables]\nMESSAGE = "{message}"\n',
    )


def test_push_verifies_the_digest_and_a_repush_pushes_nothing(
    eb: Session, registry: LoopbackRegistry, tmp_path: Path
) -> None:
    folder = small_env(tmp_path)
    built = json.loads(eb("build", "--json", "-q", str(folder)).stdout)
    target = f"{registry.host}/{eb.namespace}"
    pushed = json.loads(eb("push", "--json", "-q", "--registry", target, str(folder)).stdout)
    name = folder.name
    repo = f"{eb.namespace}/{name}"
    assert pushed["pushed"] is True
    assert pushed["refs"] == [f"{target}/{name}:{built['hash'][:12]}", f"{target}/{name}:1"]
    assert pushed["digest"] == registry.manifest_digest(repo, built["hash"][:12])
    assert pushed["digest"] == registry.manifest_digest(repo, "1")
    inspect = json.loads(eb.docker_out("image", "inspect", built["image"]))[0]
    assert f"{target}/{name}@{pushed['digest']}" in inspect["RepoDigests"]

    again = json.loads(eb("push", "--json", "-q", "--registry", target, str(folder)).stdout)
    assert again["pushed"] is False
    assert again["digest"] == pushed["digest"]
    # One inspect and two manifest HEADs (12 ms idle); loose, for a loaded machine.
    assert again["seconds"] < 0.5

    # An image that was never built is a usage error, not a push.
    other = small_env(tmp_path)
    proc = eb("push", "--registry", target, str(other), check=False)
    assert proc.returncode == 2, proc.stderr
    assert "envbuild build" in proc.stderr


def test_build_pulls_from_the_registry_instead_of_building(
    eb: Session, registry: LoopbackRegistry, tmp_path: Path
) -> None:
    folder = small_env(tmp_path)
    target = f"{registry.host}/{eb.namespace}"
    built = json.loads(
        eb("build", "--json", "-q", "--registry", target, "--push", str(folder)).stdout
    )
    assert built["tier"] == "built"
    assert built["digest"]
    eb.forget(registry, built["id"])

    fetched = json.loads(eb("build", "--json", "-q", "--registry", target, str(folder)).stdout)
    assert fetched["tier"] == "registry"
    assert fetched["digest"] == built["digest"]
    assert (fetched["id"], fetched["hash"]) == (built["id"], built["hash"])
    assert eb.tags() == sorted([built["image"], f"{eb.prefix}/{folder.name}:1"])
    assert eb.run_in(built["image"], "sh", "-c", "echo $MESSAGE").strip() == "hi"

    local = json.loads(eb("build", "--json", "-q", "--registry", target, str(folder)).stdout)
    assert local["tier"] == "local"

    # `envbuild pull` fetches the same way, and never builds.
    eb.forget(registry, built["id"])
    pulled = json.loads(eb("pull", "--json", "-q", "--registry", target, str(folder)).stdout)
    assert (pulled["tier"], pulled["id"]) == ("registry", built["id"])
    missing = small_env(tmp_path)
    proc = eb("pull", "--registry", target, str(missing), check=False)
    assert proc.returncode == EXIT_REGISTRY, proc.stderr
    assert "holds no image" in proc.stderr
    assert eb.tags() == sorted([built["image"], f"{eb.prefix}/{folder.name}:1"])


def test_a_tampered_registry_image_is_refused_and_nothing_is_tagged(
    eb: Session, registry: LoopbackRegistry, tmp_path: Path
) -> None:
    folder = small_env(tmp_path)
    target = f"{registry.host}/{eb.namespace}"
    built = json.loads(eb("build", "--json", "-q", str(folder)).stdout)
    # Under the hash tag, an image whose hash label says something else.
    fake = f"{target}/{folder.name}:{built['hash'][:12]}"
    docker_build(eb.docker, fake, f"FROM {built['image']}\nLABEL io.envbuild.hash={'0' * 64}\n")
    eb.docker_out("push", fake)
    fake_id = eb.docker_out("image", "inspect", "--format", "{{.Id}}", fake).strip()
    eb.docker_out("rmi", fake)
    eb.forget(registry, built["id"])

    proc = eb("build", "--json", "-q", "--registry", target, str(folder), check=False)
    assert proc.returncode == EXIT_REGISTRY, proc.stderr
    assert "refused" in proc.stderr and "0" * 64 in proc.stderr
    assert "Traceback" not in proc.stderr
    assert eb.tags() == []
    assert eb.registry_tags(registry) == []
    gone = subprocess.run(
        [eb.docker, "image", "inspect", fake_id], capture_output=True, check=False
    )
    assert gone.returncode != 0  # the pulled image was removed again


def test_push_all_goes_on_past_a_failure_and_exits_with_its_code(
    eb: Session, registry: LoopbackRegistry, tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog"
    first, unbuilt, last = (small_env(catalog) for _ in range(3))
    built = {f.name: json.loads(eb("build", "--json", "-q", str(f)).stdout) for f in (first, last)}
    target = f"{registry.host}/{eb.namespace}"

    proc = eb("push", "--all", str(catalog), "--registry", target, "--json", "-q", check=False)
    assert proc.returncode == 2, proc.stderr  # the unbuilt one's usage error, after the others
    entries = {Path(e["env"]).name: e for e in json.loads(proc.stdout)}
    assert set(entries) == {first.name, unbuilt.name, last.name}
    for folder in (first, last):
        entry = entries[folder.name]
        assert entry["ok"] is True and entry["pushed"] is True
        repo = f"{eb.namespace}/{folder.name}"
        assert entry["digest"] == registry.manifest_digest(repo, built[folder.name]["hash"][:12])
    bad = entries[unbuilt.name]
    assert (bad["ok"], bad["exit_code"]) == (False, 2)
    assert "holds no image" in bad["error"] and "envbuild build" in bad["error"]
    assert registry.manifest_digest(f"{eb.namespace}/{unbuilt.name}", "1") is None

    # Without --json: each result, each failure by name, and the count.
    proc = eb("push", "--all", str(catalog), "--registry", target, "-q", check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"FAILED {unbuilt.name}: " in proc.stderr
    assert "2 pushed or already there, 1 failed" in proc.stderr
    assert proc.stderr.count("(already in the registry)") == 2


def test_build_all_json_says_which_tier_answered_each_environment(
    eb: Session, registry: LoopbackRegistry, tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog"
    local, remote, new = (small_env(catalog) for _ in range(3))
    target = f"{registry.host}/{eb.namespace}"
    eb("build", "-q", str(local))
    pushed = json.loads(
        eb("build", "--json", "-q", "--registry", target, "--push", str(remote)).stdout
    )
    eb.docker_out("rmi", "--force", pushed["id"])  # the registry holds it, the engine does not

    proc = eb("build", "--all", str(catalog), "--registry", target, "--json", "-q")
    results = {Path(r["env"]).name: r for r in json.loads(proc.stdout)}
    assert {name: r["tier"] for name, r in results.items()} == {
        local.name: "local",
        remote.name: "registry",
        new.name: "built",
    }
    assert results[remote.name]["digest"] == pushed["digest"]
    assert results[remote.name]["hash"] == pushed["hash"]
    assert all(r["ok"] for r in results.values())
    assert f"{remote.name}" in proc.stderr and "pulled" in proc.stderr


def test_registry_down_is_a_clear_error_and_leaves_no_tag(eb: Session, tmp_path: Path) -> None:
    folder = small_env(tmp_path)
    built = json.loads(eb("build", "--json", "-q", str(folder)).stdout)
    down = registries.start(tmp_path / "down")
    registries.stop(down)
    target = f"{down.host}/{eb.namespace}"

    proc = eb("push", "--registry", target, str(folder), check=False)
    assert proc.returncode == EXIT_REGISTRY, proc.stderr
    assert f"cannot reach the registry {down.host}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert eb.registry_tags(down) == []
    assert eb.tags() == sorted([built["image"], f"{eb.prefix}/{folder.name}:1"])

    eb.forget(down, built["id"])
    proc = eb("build", "--registry", target, str(folder), check=False)
    assert proc.returncode == EXIT_REGISTRY, proc.stderr
    assert f"cannot reach the registry {down.host}" in proc.stderr
    assert eb.tags() == []
    # Named, and down: never a silent local build instead, in a catalog build too.
    proc = eb("build", "--all", str(tmp_path), "--registry", target, "--json", check=False)
    assert proc.returncode == EXIT_REGISTRY, proc.stderr
    [result] = json.loads(proc.stdout)
    assert result["ok"] is False and f"cannot reach the registry {down.host}" in result["error"]
    assert eb.tags() == []


def test_auth_registry_credentials_work_and_never_show(
    eb: Session, auth_registry: LoopbackRegistry, tmp_path: Path
) -> None:
    folder = small_env(tmp_path)
    target = f"{auth_registry.host}/{eb.namespace}"
    built = json.loads(eb("build", "--json", "-q", str(folder)).stdout)
    eb.env["DOCKER_CONFIG"] = str(tmp_path / "empty-docker-config")

    # No credentials at all: refused before anything is pushed.
    proc = eb("push", "--registry", target, str(folder), check=False)
    assert proc.returncode == EXIT_REGISTRY, proc.stderr
    assert "asks for credentials" in proc.stderr
    # A wrong password: refused, and the message names the user, never a password.
    eb.env["ENVBUILD_REGISTRY_USERNAME"] = REGISTRY_USER
    eb.env["ENVBUILD_REGISTRY_PASSWORD"] = "wrong-" + CANARY_PASSWORD
    proc = eb("push", "--registry", target, str(folder), check=False)
    assert proc.returncode == EXIT_REGISTRY, proc.stderr
    assert f"refused the credentials of user {REGISTRY_USER!r}" in proc.stderr
    assert eb.registry_tags(auth_registry) == []

    # The right password from the environment, then from the docker client's config.
    eb.env["ENVBUILD_REGISTRY_PASSWORD"] = CANARY_PASSWORD
    pushed = json.loads(eb("push", "--json", "--registry", target, str(folder)).stdout)
    repo = f"{eb.namespace}/{folder.name}"
    assert pushed["digest"] == auth_registry.manifest_digest(repo, built["hash"][:12])
    del eb.env["ENVBUILD_REGISTRY_USERNAME"], eb.env["ENVBUILD_REGISTRY_PASSWORD"]
    eb.env["DOCKER_CONFIG"] = str(auth_registry.docker_config(tmp_path / "docker-config"))
    eb.forget(auth_registry, built["id"])
    fetched = json.loads(eb("build", "--json", "--registry", target, str(folder)).stdout)
    assert (fetched["tier"], fetched["id"]) == ("registry", built["id"])
    eb.assert_no_canary()


def test_ci_and_catalog_commands_never_show_the_credentials(
    eb: Session, auth_registry: LoopbackRegistry, tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog"
    folder = small_env(catalog)
    target = f"{auth_registry.host}/{eb.namespace}"
    eb.env["DOCKER_CONFIG"] = str(tmp_path / "empty-docker-config")
    eb.env["ENVBUILD_REGISTRY_USERNAME"] = REGISTRY_USER
    eb.env["ENVBUILD_REGISTRY_PASSWORD"] = CANARY_PASSWORD
    eb("lock", "-q", str(folder))
    eb("publish", "--catalog", str(catalog))
    report = tmp_path / "report"
    green = eb("ci", str(catalog), "--registry", target, "--push", "--report", str(report))
    assert green.returncode == 0, green.stdout
    assert auth_registry.manifest_digest(f"{eb.namespace}/{folder.name}", "1") is not None
    eb("build", "--all", str(catalog), "--registry", target, "--json")
    eb("push", "--all", str(catalog), "--registry", target, "--json")

    # Refused credentials, with tracebacks on: every message names the user, never the secret.
    eb.env["ENVBUILD_REGISTRY_PASSWORD"] = "wrong-" + CANARY_PASSWORD
    proc = eb("--debug", "push", "--all", str(catalog), "--registry", target, check=False)
    assert proc.returncode == EXIT_REGISTRY, proc.stderr
    eb.docker_out("rmi", "--force", *eb.tags())
    red = tmp_path / "red"
    proc = eb(
        "--debug", "ci", str(catalog), "--registry", target, "--report", str(red), check=False
    )
    assert proc.returncode == 1
    assert f"refused the credentials of user {REGISTRY_USER!r}" in proc.stdout
    proc = eb("--debug", "build", "--registry", target, str(folder), check=False)
    assert proc.returncode == EXIT_REGISTRY, proc.stderr
    # The password in the registry's name is refused without being echoed.
    proc = eb("build", "--registry", f"u:{CANARY_PASSWORD}@{target}", str(folder), check=False)
    assert proc.returncode == 2 and "holds credentials" in proc.stderr
    for path in (*report.iterdir(), *red.iterdir()):
        eb.outputs.append(path.read_text(encoding="utf-8"))
    eb.assert_no_canary()


def test_a_build_uses_the_registrys_earlier_version_as_layer_cache(
    eb: Session, registry: LoopbackRegistry, tmp_path: Path
) -> None:
    folder = small_env(tmp_path, version=1, message="one")
    target = f"{registry.host}/{eb.namespace}"
    eb("build", "-q", "--registry", target, "--push", str(folder))
    # The next version of the same environment: the registry's :1 is its cache.
    text = (folder / "env.toml").read_text().replace("version = 1", "version = 2")
    (folder / "env.toml").write_text(text.replace('"one"', '"two"'))
    proc = eb("build", "--json", "--registry", target, str(folder))
    assert f"importing cache manifest from {target}/{folder.name}:1" in proc.stderr
    assert "could not be imported" not in proc.stderr
    assert json.loads(proc.stdout)["tier"] == "built"


def test_a_base_pinned_in_the_registry_is_pulled_by_a_machine_that_lacks_it(
    eb: Session, registry: LoopbackRegistry, tmp_path: Path
) -> None:
    # A base of this test's own (debian's layers, its own config), as a bootstrap makes one.
    base = f"envbuild-test-base-{eb.namespace}:v1"
    docker_build(
        eb.docker, base, f"FROM debian:bookworm-slim\nLABEL io.envbuild.test={eb.namespace}\n"
    )
    try:
        target = f"{registry.host}/{eb.namespace}"
        pushed = json.loads(eb("base", "push", "--json", base, "--registry", target).stdout)
        source = f"{target}/envbuild-test-base-{eb.namespace}"
        assert pushed["pinned"] == f"{source}@{pushed['digest']}"
        assert pushed["digest"] == registry.manifest_digest(
            f"{eb.namespace}/envbuild-test-base-{eb.namespace}", "v1"
        )
        again = json.loads(eb("base", "push", "--json", base, "--registry", target).stdout)
        assert again["pushed"] is False

        folder = write_env(
            tmp_path / "onbase",
            f'schema = 1\nname = "onbase-{eb.namespace}"\n[base]\nimage = "{base}"\n'
            '[python]\nsource = "system"\n',
        )
        locked = json.loads(eb("lock", "--json", "-q", str(folder), "--registry", target).stdout)
        assert locked["base"] == {
            "image": base,
            "kind": "digest",
            "id": pushed["digest"],
            "source": source,
            "archive": None,  # not a base envbuild bootstrapped
        }
        assert f'source = "{source}"' in (folder / "env.lock.toml").read_text()

        # This machine loses the base: the build pulls exactly the pinned digest.
        base_id = eb.docker_out("image", "inspect", "--format", "{{.Id}}", base).strip()
        eb.docker_out("rmi", "--force", base_id)
        built = json.loads(eb("build", "--json", "--strict", str(folder)).stdout)
        assert built["tier"] == "built"
        assert eb.docker_out(
            "image", "inspect", "--format", "{{.Id}}", pushed["pinned"]
        ).strip() == (base_id)
        assert eb.run_in(built["image"], "python", "-c", "print(6 * 7)").strip() == "42"
    finally:
        subprocess.run([eb.docker, "rmi", "--force", base], capture_output=True, check=False)


def test_base_pull_gives_a_machine_the_image_id_its_lock_pins_and_drift_is_never_pushed(
    eb: Session, registry: LoopbackRegistry, tmp_path: Path
) -> None:
    base = f"envbuild-test-base-{eb.namespace}:v1"
    docker_build(
        eb.docker, base, f"FROM debian:bookworm-slim\nLABEL io.envbuild.test={eb.namespace}\n"
    )
    target = f"{registry.host}/{eb.namespace}"
    try:
        folder = write_env(
            tmp_path / "pinned",
            f'schema = 1\nname = "pinned-{eb.namespace}"\n[base]\nimage = "{base}"\n'
            '[python]\nversion = "3.11"\n',
        )
        eb("lock", "-q", str(folder))  # no registry: pinned by image ID
        assert 'pin = "image-id"' in (folder / "env.lock.toml").read_text()
        base_id = eb.docker_out("image", "inspect", "--format", "{{.Id}}", base).strip()
        eb("base", "push", "-q", base, "--registry", target)
        eb.docker_out("rmi", "--force", base_id)  # a machine that lacks the base
        missing = eb("build", str(folder), check=False)
        assert missing.returncode == 1
        assert f"envbuild base pull {base} --registry R" in missing.stderr
        pulled = json.loads(eb("base", "pull", "--json", base, "--registry", target).stdout)
        assert pulled["id"] == base_id
        built = json.loads(eb("build", "--json", "-q", "--strict", str(folder)).stdout)
        assert "base_drift" not in built

        # The base moves on: a drifted image is built when allowed, and never pushed.
        docker_build(eb.docker, base, f"FROM {base_id}\nLABEL moved=yes\n")
        eb.docker_out("rmi", built["image"])
        refused = eb(
            "build", "--base-drift=allow", "--push", "--registry", target, str(folder), check=False
        )
        assert refused.returncode == 1
        assert "is not pushed: the base" in refused.stderr and "drifted" in refused.stderr
        assert registry.manifest_digest(f"{eb.namespace}/pinned-{eb.namespace}", "1") is None
    finally:
        subprocess.run([eb.docker, "rmi", "--force", base], capture_output=True, check=False)
