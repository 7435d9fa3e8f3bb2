"""A small signed apt archive that the tests write and serve on loopback.

``write_archive`` lays out what a Debian mirror serves for the pockets of the
``debian:bookworm-slim`` recipe (``<root>/debian`` for ``bookworm`` and
``bookworm-updates``, ``<root>/debian-security`` for ``bookworm-security``,
as on deb.debian.org), indexes the given ``.deb`` files with
``dpkg-scanpackages``, writes each pocket's ``Release`` with a fixed
``Date:`` and the checksums apt verifies, and signs it (``InRelease``) with a
key made for the test: the archive state is exactly what the test says it is.
``serve`` serves the folder with Python's http.server on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.integration import conda_channel

POCKETS = (
    ("debian", "bookworm"),
    ("debian", "bookworm-updates"),
    ("debian-security", "bookworm-security"),
)
ARCH = "amd64"


def _run(argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, check=True, capture_output=True, timeout=300, **kwargs)  # type: ignore[call-overload, no-any-return]


def make_key(home: Path) -> Path:
    """A signing key in its own GnuPG home; returns the public keyring (binary) for apt."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {**os.environ, "GNUPGHOME": str(home)}
    _run(
        ["gpg", "--batch", "--passphrase", "", "--quick-gen-key",
         "envbuild test archive <test@envbuild.invalid>", "ed25519", "sign", "never"],
        env=env,
    )  # fmt: skip
    keyring = home / "archive-keyring.gpg"
    keyring.write_bytes(_run(["gpg", "--batch", "--export"], env=env).stdout)
    keyring.chmod(0o644)
    return keyring


def write_archive(root: Path, debs: Path, *, date: str, gnupg_home: Path | None) -> None:
    """Write the archive of every ``.deb`` in ``debs`` under ``root``, dated ``date``;
    signed (``InRelease``) with the key in ``gnupg_home`` (:func:`make_key`) if given.

    Every package is given ``Priority: required`` (the override file a real
    archive keeps beside its pool): the debs are the closure of a minbase
    bootstrap, and minbase installs what is required.
    """
    env = {**os.environ, "GNUPGHOME": str(gnupg_home)}
    packages = None
    for archive, suite in POCKETS:
        top = root / archive
        pool = top / "pool" / "main"
        if not pool.exists():
            pool.mkdir(parents=True)
            for deb in sorted(debs.glob("*.deb")):
                os.link(deb, pool / deb.name) if _same_device(deb, pool) else shutil.copy(deb, pool)
        if packages is None:  # the same pool path in every archive: index it once
            override = root / "override"
            names = {deb.name.split("_", 1)[0] for deb in debs.glob("*.deb")}
            override.write_text("".join(f"{n} required misc\n" for n in sorted(names)))
            packages = _run(
                ["dpkg-scanpackages", "--multiversion", "pool", str(override)], cwd=top
            ).stdout
        binary = top / "dists" / suite / "main" / f"binary-{ARCH}"
        binary.mkdir(parents=True, exist_ok=True)
        (binary / "Packages").write_bytes(packages)
        (binary / "Packages.gz").write_bytes(gzip.compress(packages, mtime=0))
        dist = top / "dists" / suite
        lines = [
            "Origin: envbuild-test",
            f"Suite: {suite}",
            f"Codename: {suite}",
            f"Date: {date}",
            f"Architectures: {ARCH}",
            "Components: main",
            "SHA256:",
        ]
        for name in ("Packages", "Packages.gz"):
            data = (binary / name).read_bytes()
            rel = f"main/binary-{ARCH}/{name}"
            lines.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {rel}")
        (dist / "Release").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (dist / "InRelease").unlink(missing_ok=True)
        if gnupg_home is None:
            continue
        _run(
            ["gpg", "--batch", "--yes", "--clearsign", "--output", str(dist / "InRelease"),
             str(dist / "Release")],
            env=env,
        )  # fmt: skip


def _same_device(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


@contextmanager
def serve(root: Path) -> Iterator[str]:
    """Serve ``root`` over http on 127.0.0.1 (as the conda channel is); yield its URL."""
    with conda_channel.serve(root, probe="") as url:
        yield url


def minbase_debs(cache: Path, sources: Sequence[str]) -> Path:
    """The ``.deb`` files of a Debian 12 minbase bootstrap (what the recipe installs),
    downloaded once by mmdebstrap from ``sources`` into ``cache`` and reused after."""
    if cache.is_dir() and any(cache.glob("*.deb")):
        return cache
    partial = cache.with_name(cache.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    _run(
        ["mmdebstrap", "--variant=minbase", "--components=main",
         "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
         "--skip=download/empty", "--skip=essential/unlink",
         f"--customize-hook=sync-out /var/cache/apt/archives {partial}",
         "bookworm", "/dev/null", *sources],
    )  # fmt: skip
    partial.rename(cache)
    return cache
