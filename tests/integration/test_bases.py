"""Base bootstrap against the real engine: the bases work, failures leave nothing behind."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from envbuild.build.bases import (
    SUPPORTED,
    TEMP_REPOSITORY,
    bootstrap,
    image_config,
    import_rootfs,
    is_present,
)
from envbuild.engine.docker import DockerEngine
from envbuild.errors import BootstrapError

pytestmark = pytest.mark.docker

MAX_BASE_SIZE = 150_000_000


def docker(cli: str, *args: str) -> str:
    proc = subprocess.run([cli, *args], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr}"
    return proc.stdout.strip()


def run_in(cli: str, image: str, script: str) -> str:
    return docker(cli, "run", "--rm", "--network", "none", image, "/bin/sh", "-c", script)


def temporaries(cli: str) -> set[str]:
    listing = docker(cli, "images", "--format", "{{.Repository}}:{{.Tag}}", TEMP_REPOSITORY)
    return set(listing.split())


def engine(cli: str) -> DockerEngine:
    return DockerEngine(cli)


def image_id(cli: str, ref: str) -> str:
    return docker(cli, "image", "inspect", "--format", "{{.Id}}", ref)


def test_the_debian_base_from_setup_works(docker_cli: str) -> None:
    ref = "debian:bookworm-slim"
    assert is_present(ref, engine(docker_cli)), f"{ref} is missing: run `bash scripts/setup` first"
    assert run_in(docker_cli, ref, "cat /etc/debian_version").startswith("12.")
    assert run_in(docker_cli, ref, "command -v apt-get") == "/usr/bin/apt-get"
    size = int(docker(docker_cli, "image", "inspect", "--format", "{{.Size}}", ref))
    assert 0 < size < MAX_BASE_SIZE
    label = docker(
        docker_cli,
        "image",
        "inspect",
        "--format",
        '{{index .Config.Labels "io.envbuild.base.recipe"}}',
        ref,
    )
    assert label == ref


def test_a_failed_bootstrap_leaves_no_tag_and_no_temporary(
    docker_cli: str, unique_tag: Callable[[str], str], tmp_path: Path
) -> None:
    from tests.integration import apt_archive

    target = unique_tag("failboot")
    before = temporaries(docker_cli)
    # A mirror that answers nothing fails before mmdebstrap, saying which file it lacks.
    with pytest.raises(BootstrapError, match="serves no Release file for bookworm"):
        bootstrap(
            "debian:bookworm-slim",
            engine=engine(docker_cli),
            mirror="http://127.0.0.1:9/debian",
            target=target,
        )
    # One that serves unsigned Release files and no package fails in mmdebstrap.
    debs = tmp_path / "debs"
    debs.mkdir()
    apt_archive.write_archive(tmp_path / "archive", debs, date="x", gnupg_home=None)
    lines: list[str] = []
    with apt_archive.serve(tmp_path / "archive") as url, pytest.raises(BootstrapError) as info:
        bootstrap(
            "debian:bookworm-slim",
            engine=engine(docker_cli),
            mirror=f"{url}/debian",
            target=target,
            log=lines.append,
        )
    assert info.value.step_exit_code not in (None, 0)
    assert info.value.log_tail  # the evidence travels with the error
    assert lines  # progress was streamed while it ran
    assert not is_present(target, engine(docker_cli))
    assert temporaries(docker_cli) == before


def _broken_rootfs(path: Path) -> None:
    """A tar that passes the content check but cannot run: its programs are text."""
    with tarfile.open(path, "w") as tar:
        for name in ("./bin/sh", "./usr/bin/apt-get", "./usr/bin/dpkg"):
            data = b"not a program\n"
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))


def test_an_image_that_does_not_run_is_never_tagged(
    docker_cli: str, unique_tag: Callable[[str], str], tmp_path: Path
) -> None:
    target = unique_tag("broken")
    docker(docker_cli, "tag", "debian:bookworm-slim", target)  # an existing tag to preserve
    before = temporaries(docker_cli)
    layer = tmp_path / "rootfs.tar"
    _broken_rootfs(layer)
    with pytest.raises(BootstrapError, match="does not work"):
        import_rootfs(
            layer,
            target,
            engine=engine(docker_cli),
            recipe=SUPPORTED["debian:bookworm-slim"],
            mirror="http://deb.debian.org/debian",
            epoch=0,
        )
    assert image_id(docker_cli, target) == image_id(docker_cli, "debian:bookworm-slim")
    assert temporaries(docker_cli) == before


def test_the_same_root_filesystem_gets_the_same_image_id(
    docker_cli: str, unique_tag: Callable[[str], str], tmp_path: Path
) -> None:
    layer = tmp_path / "rootfs.tar"
    container = docker(docker_cli, "create", "debian:bookworm-slim")
    try:
        docker(docker_cli, "export", "--output", str(layer), container)
    finally:
        docker(docker_cli, "rm", container)
    recipe = SUPPORTED["debian:bookworm-slim"]
    mirror = "http://deb.debian.org/debian"
    first = import_rootfs(
        layer,
        unique_tag("stable"),
        engine=engine(docker_cli),
        recipe=recipe,
        mirror=mirror,
        epoch=7,
    )
    second = import_rootfs(
        layer,
        unique_tag("stable"),
        engine=engine(docker_cli),
        recipe=recipe,
        mirror=mirror,
        epoch=7,
    )
    diff_id = "sha256:" + hashlib.sha256(layer.read_bytes()).hexdigest()
    config = image_config(diff_id, recipe=recipe, mirror=mirror, epoch=7)
    assert first.image_id == second.image_id == "sha256:" + hashlib.sha256(config).hexdigest()
    assert docker(docker_cli, "image", "inspect", "--format", "{{.Created}}", first.ref) == (
        "1970-01-01T00:00:07Z"
    )


@pytest.mark.slow
def test_bootstrap_ubuntu_focal(docker_cli: str, unique_tag: Callable[[str], str]) -> None:
    target = unique_tag("focal")
    before = temporaries(docker_cli)
    lines: list[str] = []
    result = bootstrap("ubuntu:20.04", engine=engine(docker_cli), target=target, log=lines.append)
    assert result.ref == target
    assert result.image_id == image_id(docker_cli, target)
    assert 0 < result.size < MAX_BASE_SIZE
    assert any(line.startswith("I: success") for line in lines)
    assert 'VERSION_ID="20.04"' in run_in(docker_cli, target, "cat /etc/os-release")
    # apt inside trusts the archive on its own (the keyring package is installed).
    assert "ubuntu-keyring-2018-archive.gpg" in run_in(
        docker_cli, target, "ls /etc/apt/trusted.gpg.d"
    )
    assert run_in(docker_cli, target, "command -v apt-get") == "/usr/bin/apt-get"
    assert temporaries(docker_cli) == before


# -- the archive state: read from a served archive, recorded in labels and lock ----------

RELEASE_DATE = "Sat, 01 Jun 2024 00:00:00 UTC"


def test_the_archive_state_is_read_from_the_mirror_and_recorded_in_labels_and_lock(
    docker_cli: str, unique_tag: Callable[[str], str], tmp_path: Path
) -> None:
    import json
    import os
    import sys

    from envbuild.build.bases import archive_state
    from tests.integration import apt_archive

    debs = tmp_path / "debs"
    debs.mkdir()  # the Release files are what is read: no package is needed
    apt_archive.write_archive(tmp_path / "archive", debs, date=RELEASE_DATE, gnupg_home=None)
    recipe = SUPPORTED["debian:bookworm-slim"]
    with apt_archive.serve(tmp_path / "archive") as url:
        state = archive_state(recipe, f"{url}/debian")
    assert state.mirror == f"{url}/debian" and (state.distribution, state.suite) == (
        "debian",
        "bookworm",
    )
    assert dict(state.release_dates) == {
        "bookworm": RELEASE_DATE,
        "bookworm-updates": RELEASE_DATE,
        "bookworm-security": RELEASE_DATE,  # from <mirror>-security
    }
    # Imported with that state: the labels say it, and a lock copies it.
    layer = tmp_path / "rootfs.tar"
    container = docker(docker_cli, "create", "debian:bookworm-slim")
    try:
        docker(docker_cli, "export", "--output", str(layer), container)
    finally:
        docker(docker_cli, "rm", container)
    target = unique_tag("archived")
    result = import_rootfs(
        layer,
        target,
        engine=engine(docker_cli),
        recipe=recipe,
        mirror=state.mirror,
        epoch=7,
        archive=state,
    )
    labels = json.loads(
        docker(docker_cli, "image", "inspect", "--format", "{{json .Config.Labels}}", target)
    )
    assert labels["io.envbuild.base.mirror"] == state.mirror
    assert labels["io.envbuild.base.distribution"] == "debian"
    assert json.loads(labels["io.envbuild.base.release-dates"])["bookworm"] == RELEASE_DATE
    folder = tmp_path / "env"
    folder.mkdir()
    (folder / "env.toml").write_text(
        f'schema = 1\nname = "archived"\n[base]\nimage = "{target}"\n[python]\nversion = "3.11"\n'
    )
    subprocess.run(
        [sys.executable, "-m", "envbuild", "lock", "-q", str(folder)],
        check=True,
        capture_output=True,
        timeout=300,
        env={**os.environ, "ENVBUILD_HOME": str(tmp_path / "home")},
    )
    index = (folder / "env.lock.toml").read_text()
    assert f'id = "{result.image_id}"' in index
    assert (
        f'[base.archive]\ndistribution = "debian"\nsuite = "bookworm"\nmirror = "{state.mirror}"'
        in index
    )
    assert f'"bookworm-security" = "{RELEASE_DATE}"' in index


@pytest.mark.slow
def test_the_same_archive_state_bootstraps_the_same_image_offline(
    docker_cli: str,
    unique_tag: Callable[[str], str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """A whole Debian 12 bootstrap, twice, from a signed archive served on loopback.

    The archive holds the packages of a minbase bootstrap, downloaded once from
    deb.debian.org into the tests' cache (~31 MB; later runs need no network).
    Minutes on two cores: run with `pytest -m slow`.
    """
    if "slow" not in (request.config.option.markexpr or ""):
        pytest.skip("two whole bootstraps take minutes: run `pytest -m slow`")
    import json
    import os

    from tests.integration import apt_archive

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    recipe = SUPPORTED["debian:bookworm-slim"]
    debs = apt_archive.minbase_debs(
        cache / "envbuild-tests" / "bookworm-minbase-debs",
        recipe.sources("http://deb.debian.org/debian"),
    )
    keyring = apt_archive.make_key(tmp_path / "gnupg")
    apt_archive.write_archive(
        tmp_path / "archive", debs, date=RELEASE_DATE, gnupg_home=tmp_path / "gnupg"
    )
    ids = []
    with apt_archive.serve(tmp_path / "archive") as url:
        for name in ("first", "second"):
            target = unique_tag(f"snapshot-{name}")  # never the real debian:bookworm-slim
            result = bootstrap(
                "debian:bookworm-slim",
                engine=engine(docker_cli),
                mirror=f"{url}/debian",
                keyring=keyring,
                target=target,
            )
            assert result.archive is not None and result.archive.mirror == f"{url}/debian"
            ids.append(result.image_id)
    assert ids[0] == ids[1]  # the same archive state, the same image
    labels = json.loads(
        docker(docker_cli, "image", "inspect", "--format", "{{json .Config.Labels}}", target)
    )
    assert json.loads(labels["io.envbuild.base.release-dates"]) == {
        "bookworm": RELEASE_DATE,
        "bookworm-updates": RELEASE_DATE,
        "bookworm-security": RELEASE_DATE,
    }
    assert run_in(docker_cli, target, "command -v apt-get") == "/usr/bin/apt-get"
