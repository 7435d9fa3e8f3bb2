"""Image registries the tests start themselves, on loopback.

No public registry can be reached from these machines, so the registry tier is
tested against Debian's ``docker-registry`` (the CNCF distribution registry,
2.8), which ``scripts/setup`` installs. Each registry gets a config of its own
(a free port on 127.0.0.1, filesystem storage under a temporary folder, deletes
enabled, optionally htpasswd auth with bcrypt entries made by ``htpasswd -Bbn``),
is started detached (``setsid``, its output to a log file), polled until
``/v2/`` answers, and stopped by its PID. The engine treats 127.0.0.0/8 as an
insecure registry, so push and pull need no daemon change.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REGISTRY_BINARY = "docker-registry"
HTPASSWD_BINARY = "htpasswd"


@dataclass(frozen=True)
class LoopbackRegistry:
    """A running registry: where it listens, its PID and (if any) its one user."""

    host: str  # "127.0.0.1:PORT"
    pid: int
    root: Path
    log: Path
    username: str | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        """The registry's base URL (plain http)."""
        return f"http://{self.host}"

    def docker_config(self, folder: Path) -> Path:
        """Write a docker client config holding this registry's credentials; return its folder."""
        assert self.username is not None and self.password is not None
        folder.mkdir(parents=True, exist_ok=True)
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        (folder / "config.json").write_text(
            json.dumps({"auths": {self.host: {"auth": token}}}), encoding="utf-8"
        )
        return folder

    def manifest_digest(self, repository: str, tag: str) -> str | None:
        """The digest the registry serves for ``repository:tag`` (``None`` when absent)."""
        request = urllib.request.Request(
            f"{self.url}/v2/{repository}/manifests/{tag}",
            method="HEAD",
            headers={
                "Accept": "application/vnd.docker.distribution.manifest.v2+json, "
                "application/vnd.oci.image.manifest.v1+json"
            },
        )
        if self.username is not None:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return str(response.headers.get("Docker-Content-Digest"))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise


def available() -> str | None:
    """Why no registry can be started here, or ``None`` when one can."""
    for binary in (REGISTRY_BINARY, HTPASSWD_BINARY):
        if shutil.which(binary) is None:
            return f"{binary} is not installed (scripts/setup installs it)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(root: Path, port: int, htpasswd: Path | None) -> str:
    lines = [
        "version: 0.1",
        "log:",
        "  level: warn",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {root / 'data'}",
        "  delete:",
        "    enabled: true",
        "http:",
        f"  addr: 127.0.0.1:{port}",
    ]
    if htpasswd is not None:
        lines += ["auth:", "  htpasswd:", "    realm: envbuild-test", f"    path: {htpasswd}"]
    return "\n".join(lines) + "\n"


def answers(url: str) -> bool:
    """Whether a registry answers ``/v2/`` at ``url`` (a challenge counts)."""
    try:
        with urllib.request.urlopen(f"{url}/v2/", timeout=2):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # an auth registry answers /v2/ with a challenge
    except OSError:
        return False


def start(
    root: Path, *, username: str | None = None, password: str | None = None
) -> LoopbackRegistry:
    """Start a registry storing under ``root`` (htpasswd auth when a user is given)."""
    root.mkdir(parents=True, exist_ok=True)
    htpasswd: Path | None = None
    if username is not None:
        assert password is not None
        entry = subprocess.run(
            [HTPASSWD_BINARY, "-Bbn", username, password],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        htpasswd = root / "htpasswd"
        htpasswd.write_text(entry + "\n", encoding="utf-8")
    for _ in range(5):  # the port may be taken between picking and binding it
        port = free_port()
        config = root / "config.yml"
        config.write_text(_config(root, port, htpasswd), encoding="utf-8")
        log = root / "registry.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                ["setsid", REGISTRY_BINARY, "serve", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                close_fds=True,
                cwd=root,
            )
        registry = LoopbackRegistry(f"127.0.0.1:{port}", proc.pid, root, log, username, password)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            if answers(registry.url):
                return registry
            time.sleep(0.05)
        stop(registry)
    raise RuntimeError(f"docker-registry did not start; see {root / 'registry.log'}")


def stop(registry: LoopbackRegistry) -> None:
    """Stop the registry by its PID (gone already is fine)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(registry.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(registry.pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(registry.pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(registry.pid, 0)


@contextlib.contextmanager
def running(
    root: Path, *, username: str | None = None, password: str | None = None
) -> Iterator[LoopbackRegistry]:
    """A registry for the duration of a ``with`` block."""
    registry = start(root, username=username, password=password)
    try:
        yield registry
    finally:
        stop(registry)
