"""A conda channel the tests make themselves, served on loopback.

Public conda channels cannot be reached from these machines, so the conda path
is tested against a channel built here: noarch packages made by the test
(``.tar.bz2``: a tar holding ``info/index.json``, ``info/paths.json`` and the
package's files), indexed into ``noarch/repodata.json`` the way conda-index
does it (with an empty ``linux-64/`` beside it, as solvers expect), and served
by ``python -m http.server`` on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MTIME = 1_700_000_000  # fixed: the same package is the same bytes on every run
# conda's prefix placeholder: a file holding it gets the install prefix written
# in its place when the package is linked (declared in info/paths.json).
PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"


@dataclass(frozen=True)
class Package:
    """A noarch conda package to make: its files, by path relative to the prefix."""

    name: str
    version: str
    files: Mapping[str, str]
    depends: Sequence[str] = ()
    build: str = "0"
    executables: Sequence[str] = ()  # paths installed with mode 0755

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-{self.build}.tar.bz2"


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = MTIME
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def make_package(package: Package) -> bytes:
    """The ``.tar.bz2`` bytes of ``package`` (deterministic)."""
    index = {
        "name": package.name,
        "version": package.version,
        "build": package.build,
        "build_number": 0,
        "depends": list(package.depends),
        "noarch": "generic",
        "subdir": "noarch",
        "license": "MIT",
        "timestamp": MTIME * 1000,
    }
    entries = []
    for path, text in sorted(package.files.items()):
        entry: dict[str, object] = {
            "_path": path,
            "path_type": "hardlink",
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
            "size_in_bytes": len(text.encode()),
        }
        if PLACEHOLDER in text:
            entry.update(prefix_placeholder=PLACEHOLDER, file_mode="text")
        entries.append(entry)
    paths = {"paths": entries, "paths_version": 1}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as tar:
        _add(tar, "info/index.json", json.dumps(index, sort_keys=True).encode())
        _add(tar, "info/paths.json", json.dumps(paths, sort_keys=True).encode())
        _add(tar, "info/files", "".join(f"{p}\n" for p in sorted(package.files)).encode())
        for path, text in sorted(package.files.items()):
            _add(tar, path, text.encode(), 0o755 if path in package.executables else 0o644)
    return buffer.getvalue()


def write_channel(root: Path, packages: Sequence[Package]) -> dict[str, dict[str, object]]:
    """Write the channel under ``root``; return its noarch repodata ``packages`` entries."""
    noarch = root / "noarch"
    noarch.mkdir(parents=True, exist_ok=True)
    entries: dict[str, dict[str, object]] = {}
    for package in packages:
        data = make_package(package)
        (noarch / package.filename).write_bytes(data)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:bz2") as tar:
            member = tar.extractfile("info/index.json")
            assert member is not None
            record = json.loads(member.read())
        record.update(
            md5=hashlib.md5(data).hexdigest(),
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
        )
        entries[package.filename] = record
    for subdir, found in (("noarch", entries), ("linux-64", {})):
        folder = root / subdir
        folder.mkdir(parents=True, exist_ok=True)
        repodata = {"info": {"subdir": subdir}, "packages": found, "packages.conda": {},
                    "repodata_version": 1}  # fmt: skip
        (folder / "repodata.json").write_text(json.dumps(repodata, indent=1, sort_keys=True))
    return entries


def explicit_lock(url: str, entries: Mapping[str, Mapping[str, object]]) -> str:
    """An explicit lock (conda-lock's ``--kind explicit`` format) of every package served."""
    lines = ["@EXPLICIT"]
    lines += [f"{url}/noarch/{name}#sha256:{entry['sha256']}" for name, entry in entries.items()]
    return "\n".join(lines) + "\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve(root: Path, *, probe: str = "noarch/repodata.json") -> Iterator[str]:
    """Serve ``root`` over http on 127.0.0.1; yield its URL once ``probe`` answers (the
    channel's repodata; another folder names its own); stop the server afterwards."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"{url}/{probe}", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def shim_python(version: str, interpreter: str = "/usr/bin/python3") -> Package:
    """A stand-in ``python`` conda package: the base's ``interpreter`` over this prefix.

    conda-forge's python cannot be downloaded here, and a solve for
    ``python.source = "conda"`` needs a ``python`` package. This one's
    ``bin/python`` runs the base image's own interpreter (which must be
    ``version``) with the prefix's ``site-packages`` first on its path; the
    prefix is written into it at link time from conda's placeholder, which
    tests prefix relocation too. Everything around it is real conda.
    """
    major_minor = ".".join(version.split(".")[:2])
    site = f"{PLACEHOLDER}/lib/python{major_minor}/site-packages"
    script = (
        "#!/bin/sh\n"
        "# A stand-in for conda's python, made by envbuild's tests.\n"
        f'PYTHONPATH="{site}${{PYTHONPATH:+:$PYTHONPATH}}" exec {interpreter} "$@"\n'
    )
    return Package("python", version, {"bin/python": script}, executables=("bin/python",))
