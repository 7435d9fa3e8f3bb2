"""Base bootstrap without an engine or a network: recipes, the archive writer, the keyring pin."""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import tarfile
from pathlib import Path

import pytest

from envbuild.build import bases as bases
from envbuild.build.bases import (
    SUPPORTED,
    UBUNTU_KEYRING_DEB_SHA256,
    bootstrap,
    image_config,
    is_present,
    mmdebstrap_command,
    recipe_for,
    ubuntu_archive_keyring,
    write_docker_archive,
)
from envbuild.engine.protocols import ImageInfo
from envbuild.errors import BootstrapError, EngineError, ToolMissingError, UsageError
from envbuild.lock.model import BaseArchive
from tests.run_fakes import FakeRunEngine

CANONICAL = ("debian:bookworm-slim", "ubuntu:20.04", "ubuntu:22.04", "ubuntu:24.04")
DIFF_ID = "sha256:" + "ab" * 32


def make_tar(members: dict[str, bytes]) -> bytes:
    """A small tar with fixed headers, like a root filesystem's."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def make_deb(files: dict[str, bytes]) -> bytes:
    """A minimal .deb: an ar archive with an xz data.tar."""
    members = [
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", lzma.compress(make_tar({"./control": b"Package: x\n"}))),
        ("data.tar.xz", lzma.compress(make_tar(files))),
    ]
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n"
        out += header.encode("ascii") + data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


# --- recipes -----------------------------------------------------------------


def test_every_promised_reference_has_a_recipe() -> None:
    for ref in CANONICAL:
        assert SUPPORTED[ref].ref == ref


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("debian:12-slim", "debian:bookworm-slim"),
        ("ubuntu:focal", "ubuntu:20.04"),
        ("ubuntu:jammy", "ubuntu:22.04"),
        ("ubuntu:noble", "ubuntu:24.04"),
    ],
)
def test_aliases_name_the_same_recipe(alias: str, canonical: str) -> None:
    assert SUPPORTED[alias] is SUPPORTED[canonical]


def test_the_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        SUPPORTED["debian:sid"] = SUPPORTED["debian:bookworm-slim"]  # type: ignore[index]


@pytest.mark.parametrize("ref", CANONICAL)
def test_recipe_sanity(ref: str) -> None:
    recipe = SUPPORTED[ref]
    assert recipe.variant == "minbase"
    assert recipe.pockets[0] == recipe.suite
    assert all(p == recipe.suite or p.startswith(recipe.suite + "-") for p in recipe.pockets)
    assert recipe.epoch > 1_500_000_000
    # Both host files are blanked, or the bytes differ between hosts.
    assert any("/etc/resolv.conf" in h for h in recipe.customize_hooks)
    assert any("/etc/hostname" in h for h in recipe.customize_hooks)


@pytest.mark.parametrize("ref", ["ubuntu:20.04", "ubuntu:22.04", "ubuntu:24.04"])
def test_ubuntu_recipes_avoid_the_known_traps(ref: str) -> None:
    recipe = SUPPORTED[ref]
    assert recipe.mirror_kind == "ubuntu"
    assert {"apt", "ca-certificates"} <= set(recipe.includes)  # minbase lacks apt
    assert recipe.dpkg_options == ()  # Debian's path filters broke focal-updates
    assert recipe.hook_dirs == ()  # the merged-usr hook directory fails on jammy and noble


def test_debian_recipe_is_slim() -> None:
    recipe = SUPPORTED["debian:bookworm-slim"]
    assert recipe.mirror_kind == "debian"
    assert "path-exclude=/usr/share/doc/*" in recipe.dpkg_options
    assert "path-include=/usr/share/doc/*/copyright" in recipe.dpkg_options


def test_unknown_reference_names_the_choices_and_the_nearest() -> None:
    with pytest.raises(UsageError) as info:
        recipe_for("debian:bookworm")
    assert "ubuntu:20.04" in info.value.message
    assert info.value.hint == "did you mean debian:bookworm-slim?"


def test_sources_debian_security_lives_next_to_the_mirror() -> None:
    assert SUPPORTED["debian:12-slim"].sources("http://mirror.example/debian/") == (
        "deb http://mirror.example/debian bookworm main",
        "deb http://mirror.example/debian bookworm-updates main",
        "deb http://mirror.example/debian-security bookworm-security main",
    )


def test_sources_ubuntu_pockets_share_the_mirror() -> None:
    components = "main restricted universe multiverse"
    assert SUPPORTED["ubuntu:20.04"].sources("http://m.example/ubuntu") == (
        f"deb http://m.example/ubuntu focal {components}",
        f"deb http://m.example/ubuntu focal-updates {components}",
        f"deb http://m.example/ubuntu focal-security {components}",
    )


def test_mmdebstrap_command_debian() -> None:
    argv = mmdebstrap_command(
        SUPPORTED["debian:bookworm-slim"], "http://d.example/debian", "/o.tar"
    )
    assert argv == [
        "mmdebstrap",
        "--variant=minbase",
        "--components=main",
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-include=/usr/share/locale/locale.alias",
        "--dpkgopt=path-exclude=/usr/share/info/*",
        "--dpkgopt=path-exclude=/usr/share/groff/*",
        "--dpkgopt=path-exclude=/usr/share/lintian/*",
        "--dpkgopt=path-exclude=/usr/share/linda/*",
        '--customize-hook=: > "$1/etc/resolv.conf"',
        '--customize-hook=: > "$1/etc/hostname"',
        "bookworm",
        "/o.tar",
        "deb http://d.example/debian bookworm main",
        "deb http://d.example/debian bookworm-updates main",
        "deb http://d.example/debian-security bookworm-security main",
    ]


SNAPSHOT = "http://snapshot.debian.org/archive/debian/20240601T000000Z"


def test_a_debian_snapshot_takes_security_from_the_same_time_and_ignores_expiry() -> None:
    recipe = SUPPORTED["debian:bookworm-slim"]
    assert bases.is_snapshot(SNAPSHOT + "/") and not bases.is_snapshot(
        "http://deb.debian.org/debian"
    )
    assert recipe.sources(SNAPSHOT + "/")[2] == (
        "deb http://snapshot.debian.org/archive/debian-security/20240601T000000Z "
        "bookworm-security main"
    )
    argv = mmdebstrap_command(recipe, SNAPSHOT, "/o.tar")
    assert '--aptopt=Acquire::Check-Valid-Until "false"' in argv
    assert not any(a.startswith("--aptopt") for a in mmdebstrap_command(recipe, "http://d/x", "-"))
    ubuntu = SUPPORTED["ubuntu:24.04"].sources(
        "https://snapshot.ubuntu.com/ubuntu/20240601T000000Z"
    )
    assert {line.split()[1] for line in ubuntu} == {
        "https://snapshot.ubuntu.com/ubuntu/20240601T000000Z"
    }


@pytest.mark.parametrize(
    ("mirror", "problem"),
    [
        ("ftp://deb.debian.org/debian", "is not an http(s) URL"),
        ("deb.debian.org/debian", "is not an http(s) URL"),
        ("http://user:secret@mirror.example/debian", "holds credentials"),
        ("http://mirror.example/debian?x=1", "has a query"),
        ("http://mirror.example/deb ian", "spaces or control characters"),
    ],
)
def test_a_mirror_that_is_not_a_plain_archive_url_is_refused(mirror: str, problem: str) -> None:
    with pytest.raises(UsageError) as info:
        bases.check_mirror(mirror)
    assert problem in info.value.message and "snapshot.debian.org" in (info.value.hint or "")
    assert "secret" not in info.value.render()  # a password is never repeated


def test_a_mirror_with_credentials_is_refused_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/" + name)
    with pytest.raises(UsageError, match="holds credentials"):
        bootstrap("debian:bookworm-slim", engine=FakeRunEngine(), mirror="http://u:p@m/debian")


def test_archive_state_reads_every_pockets_release_date() -> None:
    served = {
        f"{SNAPSHOT}/dists/bookworm/InRelease": b"-----BEGIN PGP SIGNED MESSAGE-----\n"
        b"Hash: SHA256\n\nOrigin: Debian\nDate: Sat, 01 Jun 2024 08:47:12 UTC\n",
        f"{SNAPSHOT}/dists/bookworm-updates/Release": b"Date: Sat, 01 Jun 2024 02:01:00 UTC\n",
        "http://snapshot.debian.org/archive/debian-security/20240601T000000Z/dists/"
        "bookworm-security/InRelease": b"Suite: bookworm-security\nDate: Fri, 31 May 2024 "
        b"18:00:00 UTC\n",
    }
    asked: list[str] = []

    def fetch(url: str) -> bytes:
        asked.append(url)
        if url not in served:
            raise BootstrapError(f"cannot download {url}: 404")
        return served[url]

    state = bases.archive_state(SUPPORTED["debian:bookworm-slim"], SNAPSHOT, fetch=fetch)
    assert state.to_json() == {
        "distribution": "debian",
        "suite": "bookworm",
        "mirror": SNAPSHOT,
        "release_dates": {
            "bookworm": "Sat, 01 Jun 2024 08:47:12 UTC",
            "bookworm-updates": "Sat, 01 Jun 2024 02:01:00 UTC",
            "bookworm-security": "Fri, 31 May 2024 18:00:00 UTC",
        },
    }
    assert asked[1:3] == [
        f"{SNAPSHOT}/dists/bookworm-updates/InRelease",
        f"{SNAPSHOT}/dists/bookworm-updates/Release",
    ]
    del served[f"{SNAPSHOT}/dists/bookworm-updates/Release"]
    with pytest.raises(BootstrapError, match="serves no Release file for bookworm-updates"):
        bases.archive_state(SUPPORTED["debian:bookworm-slim"], SNAPSHOT, fetch=fetch)


def test_the_archive_state_is_in_the_labels_and_so_in_the_image_id() -> None:
    recipe = SUPPORTED["debian:bookworm-slim"]
    state = BaseArchive("debian", "bookworm", SNAPSHOT, (("bookworm", "Sat, 01 Jun 2024"),))
    config = json.loads(
        image_config(DIFF_ID, recipe=recipe, mirror=SNAPSHOT, epoch=0, archive=state)
    )
    labels = config["config"]["Labels"]
    assert labels["io.envbuild.base.mirror"] == SNAPSHOT
    assert labels["io.envbuild.base.suite"] == "bookworm"
    assert BaseArchive.from_labels(labels) == state
    moved = BaseArchive("debian", "bookworm", SNAPSHOT, (("bookworm", "Sun, 02 Jun 2024"),))
    ids = {
        hashlib.sha256(
            image_config(DIFF_ID, recipe=recipe, mirror=SNAPSHOT, epoch=0, archive=a)
        ).hexdigest()
        for a in (state, state, moved)
    }
    assert len(ids) == 2  # the same state, the same ID; another state, another


def test_mmdebstrap_command_jammy_uses_the_setup_hook_only() -> None:
    argv = mmdebstrap_command(
        SUPPORTED["ubuntu:22.04"], "http://u.example/ubuntu", "-", keyring=Path("/k.gpg")
    )
    assert argv[:6] == [
        "mmdebstrap",
        "--variant=minbase",
        "--components=main,restricted,universe,multiverse",
        "--include=apt,ca-certificates",
        "--keyring=/k.gpg",
        "--setup-hook=/usr/share/mmdebstrap/hooks/merged-usr/setup00.sh",
    ]
    assert '--customize-hook=chroot "$1" dpkg --purge usr-is-merged' in argv


# --- image config and archive ---------------------------------------------------


def test_image_config_is_canonical_and_pinned() -> None:
    recipe = SUPPORTED["debian:bookworm-slim"]
    config = image_config(DIFF_ID, recipe=recipe, mirror="http://deb.debian.org/debian", epoch=0)
    assert config == image_config(
        DIFF_ID, recipe=recipe, mirror="http://deb.debian.org/debian", epoch=0
    )
    data = json.loads(config)
    assert data["created"] == "1970-01-01T00:00:00Z"
    assert data["rootfs"] == {"type": "layers", "diff_ids": [DIFF_ID]}
    assert data["architecture"] == "amd64"
    assert data["config"]["Labels"] == {"io.envbuild.base.recipe": "debian:bookworm-slim"}
    assert data["history"][0]["created_by"].startswith("SOURCE_DATE_EPOCH=0 mmdebstrap ")
    # The image ID of every bootstrapped base derives from this text: a change
    # here changes every base's ID, so it must be deliberate.
    assert hashlib.sha256(config).hexdigest() == (
        "09bb4bcac22ee1ae6d3dc4016b265f5a57693d057de282767d9d55d57cc4d0db"
    )


def test_image_config_depends_on_what_makes_the_image() -> None:
    recipe = SUPPORTED["ubuntu:20.04"]
    mirror = "http://archive.ubuntu.com/ubuntu"
    base = image_config(DIFF_ID, recipe=recipe, mirror=mirror, epoch=1)
    assert base != image_config(DIFF_ID, recipe=recipe, mirror=mirror, epoch=2)
    assert base != image_config("sha256:" + "cd" * 32, recipe=recipe, mirror=mirror, epoch=1)
    assert base != image_config(DIFF_ID, recipe=recipe, mirror="http://other/ubuntu", epoch=1)
    arm = json.loads(
        image_config(DIFF_ID, recipe=recipe, mirror=mirror, epoch=1, architecture="arm64")
    )
    assert (arm["architecture"], arm["variant"]) == ("arm64", "v8")


def test_docker_archive_bytes_are_stable(tmp_path: Path) -> None:
    layer = tmp_path / "rootfs.tar"
    layer.write_bytes(make_tar({"./usr/bin/apt-get": b"x", "./bin/sh": b"y"}))
    config = image_config(
        "sha256:" + hashlib.sha256(layer.read_bytes()).hexdigest(),
        recipe=SUPPORTED["debian:bookworm-slim"],
        mirror="http://deb.debian.org/debian",
        epoch=1686355200,
    )
    first, second = io.BytesIO(), io.BytesIO()
    write_docker_archive(layer, config, first, repo_tag="envbuild-tmp/bootstrap:a")
    layer.touch()  # the layer file's own mtime must not leak into the archive
    write_docker_archive(layer, config, second, repo_tag="envbuild-tmp/bootstrap:a")
    assert first.getvalue() == second.getvalue()


def test_docker_archive_layout(tmp_path: Path) -> None:
    layer_bytes = make_tar({"./bin/sh": b"sh"})
    layer = tmp_path / "rootfs.tar"
    layer.write_bytes(layer_bytes)
    diff_hex = hashlib.sha256(layer_bytes).hexdigest()
    config = b'{"fake":"config"}'
    out = io.BytesIO()
    write_docker_archive(layer, config, out, repo_tag="x/y:z")
    out.seek(0)
    with tarfile.open(fileobj=out) as archive:
        names = archive.getnames()
        config_name = hashlib.sha256(config).hexdigest() + ".json"
        assert names == [diff_hex, f"{diff_hex}/layer.tar", config_name, "manifest.json"]
        assert all(m.mtime == 0 and m.uid == 0 for m in archive.getmembers())
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert manifest == [
            {"Config": config_name, "Layers": [f"{diff_hex}/layer.tar"], "RepoTags": ["x/y:z"]}
        ]
        assert archive.extractfile(f"{diff_hex}/layer.tar").read() == layer_bytes  # type: ignore[union-attr]
        assert archive.extractfile(config_name).read() == config  # type: ignore[union-attr]


def test_an_empty_root_filesystem_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    with pytest.raises(BootstrapError, match="unreadable"):
        bases._check_rootfs(empty)
    no_apt = tmp_path / "no-apt.tar"
    no_apt.write_bytes(make_tar({"./bin/sh": b"sh"}))
    with pytest.raises(BootstrapError, match=r"lacks /usr/bin/apt-get, /usr/bin/dpkg"):
        bases._check_rootfs(no_apt)
    whole = tmp_path / "whole.tar"
    whole.write_bytes(
        make_tar({"./usr/bin/sh": b"", "./usr/bin/apt-get": b"", "./usr/bin/dpkg": b""})
    )
    bases._check_rootfs(whole)


# --- the Ubuntu keyring -----------------------------------------------------------


def test_keyring_digest_mismatch_names_both_digests(tmp_path: Path) -> None:
    served = b"not the ubuntu-keyring package"
    urls: list[str] = []

    def fetch(url: str) -> bytes:
        urls.append(url)
        return served

    with pytest.raises(BootstrapError) as info:
        ubuntu_archive_keyring(tmp_path, mirror="http://m.example/ubuntu/", fetch=fetch)
    message = info.value.message
    assert hashlib.sha256(served).hexdigest() in message
    assert UBUNTU_KEYRING_DEB_SHA256 in message
    assert "--keyring" in (info.value.hint or "")
    assert urls == [
        "http://m.example/ubuntu/pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1_all.deb"
    ]
    assert list(tmp_path.iterdir()) == []  # nothing cached


def test_keyring_extracted_cached_and_rechecked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = b"-- a keyring --"
    deb = make_deb({"./usr/share/keyrings/ubuntu-archive-keyring.gpg": key, "./other": b"o"})
    monkeypatch.setattr(bases, "UBUNTU_KEYRING_DEB_SHA256", hashlib.sha256(deb).hexdigest())
    monkeypatch.setattr(bases, "UBUNTU_ARCHIVE_KEYRING_SHA256", hashlib.sha256(key).hexdigest())
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return deb

    path = ubuntu_archive_keyring(tmp_path / "keyrings", mirror="http://m/ubuntu", fetch=fetch)
    assert path.read_bytes() == key
    assert (
        ubuntu_archive_keyring(tmp_path / "keyrings", mirror="http://m/ubuntu", fetch=fetch) == path
    )
    assert len(fetched) == 1  # the second call used the cache
    path.write_bytes(b"tampered")
    assert (
        ubuntu_archive_keyring(tmp_path / "keyrings", mirror="http://m/ubuntu", fetch=fetch) == path
    )
    assert path.read_bytes() == key
    assert len(fetched) == 2  # a cached keyring that fails its digest is fetched again


def test_a_substituted_package_fails_the_pin(tmp_path: Path) -> None:
    # The pin itself: a different package under the same name fails before extraction.
    deb = make_deb({"./usr/share/keyrings/ubuntu-archive-keyring.gpg": b"k"})
    with pytest.raises(BootstrapError, match=UBUNTU_KEYRING_DEB_SHA256):
        ubuntu_archive_keyring(tmp_path, mirror="http://m/ubuntu", fetch=lambda _url: deb)


# --- missing tools ------------------------------------------------------------------


def test_missing_mmdebstrap_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    with pytest.raises(ToolMissingError) as info:
        bootstrap("debian:bookworm-slim", engine=FakeRunEngine())
    assert "apt-get install mmdebstrap" in info.value.render()


def test_unknown_reference_fails_before_any_tool_is_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UsageError, match="no bootstrap recipe"):
        bootstrap("alpine:3", engine=FakeRunEngine())


def test_presence_is_one_inspect() -> None:
    engine = FakeRunEngine(images={})
    assert not is_present("debian:bookworm-slim", engine)
    engine.images["debian:bookworm-slim"] = ImageInfo(id="sha256:" + "0" * 64)
    assert is_present("debian:bookworm-slim", engine)
    assert engine.calls == [("inspect", "debian:bookworm-slim")] * 2


# --- epoch -----------------------------------------------------------------------------


def test_epoch_from_argument_then_environment_then_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = SUPPORTED["ubuntu:20.04"]
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert bases._resolve_epoch(None, recipe) == recipe.epoch
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert bases._resolve_epoch(None, recipe) == 1700000000
    assert bases._resolve_epoch(5, recipe) == 5
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(BootstrapError, match="SOURCE_DATE_EPOCH"):
        bases._resolve_epoch(None, recipe)


def test_base_bootstrap_reports_an_unknown_reference_as_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from envbuild.cli.main import main

    assert main(["base", "bootstrap", "alpine:3"]) == 2
    assert "no bootstrap recipe for 'alpine:3'" in capsys.readouterr().err


# --- loading into the engine (a fake one: the engine calls, not the engine) -------------


def _rootfs(path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        for name in ("./bin/sh", "./usr/bin/apt-get", "./usr/bin/dpkg"):
            info = tarfile.TarInfo(name)
            info.size, info.mode = 3, 0o755
            tar.addfile(info, io.BytesIO(b"elf"))
    return path


def test_import_rootfs_loads_checks_then_tags(tmp_path: Path) -> None:
    engine = FakeRunEngine()
    recipe = SUPPORTED["debian:bookworm-slim"]
    result = bases.import_rootfs(
        _rootfs(tmp_path / "rootfs.tar"),
        "example/base:1",
        engine=engine,
        recipe=recipe,
        mirror="http://deb.debian.org/debian",
        epoch=7,
    )
    assert engine.images["example/base:1"].id == result.image_id
    assert result.image_id.startswith("sha256:") and result.size > 0
    # the check ran cut off from the network, and its container is gone
    (spec,) = engine.specs.values()
    assert spec.network == "none" and spec.image == result.image_id
    assert not engine.live
    assert not [ref for ref in engine.images if ref.startswith(bases.TEMP_REPOSITORY)]


def test_import_rootfs_that_fails_its_check_tags_nothing(tmp_path: Path) -> None:
    engine = FakeRunEngine(exit_code=2)
    with pytest.raises(BootstrapError, match="does not work") as info:
        bases.import_rootfs(
            _rootfs(tmp_path / "rootfs.tar"),
            "example/base:1",
            engine=engine,
            recipe=SUPPORTED["debian:bookworm-slim"],
            mirror="http://deb.debian.org/debian",
            epoch=7,
        )
    assert info.value.step_exit_code == 2
    assert "example/base:1" not in engine.images
    assert not [ref for ref in engine.images if ref.startswith(bases.TEMP_REPOSITORY)]
    assert not engine.live


def test_a_dead_engine_is_found_before_mmdebstrap_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "mmdebstrap-ran"
    for name, body in (("mmdebstrap", f"touch {marker}\nexit 1\n"), ("docker", "exit 0\n")):
        tool = bin_dir / name
        tool.write_text("#!/bin/sh\n" + body)
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    # DOCKER_HOST points at a socket nobody listens on (tests/unit/conftest.py)
    with pytest.raises(EngineError, match="cannot reach the Docker engine"):
        bootstrap("debian:bookworm-slim", mirror="http://m/debian")
    assert not marker.exists()


def test_sigterm_during_mmdebstrap_stops_it_and_removes_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import signal
    import tempfile

    from envbuild.errors import Interrupted

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "mmdebstrap"
    tool.write_text(f"#!/bin/sh\necho started\nkill -TERM {os.getpid()}\nexec sleep 60\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setattr(bases, "_http_get", lambda url: b"Date: Sat, 01 Jun 2024 00:00:00 UTC\n")
    engine = FakeRunEngine()
    with pytest.raises(Interrupted) as info:
        bootstrap("debian:bookworm-slim", engine=engine, mirror="http://m/debian")
    assert info.value.signum == signal.SIGTERM
    assert not list(tmp_path.glob("envbuild-bootstrap-*"))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
