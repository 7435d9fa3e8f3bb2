"""A second Docker engine with an empty store, and a registry both engines reach.

What "another machine" is to the registry tier: an engine that holds no image
and no build cache. No engine image can be pulled here, so one is built from
the host's own Debian binaries (dockerd, containerd, its shim, runc,
docker-init, and docker-registry) and the shared libraries they link that are
not libc, ``FROM debian:bookworm-slim``: no network is needed.

``--privileged`` fails on these machines; MACHINE.md's recipe runs dockerd with
every capability but ``SYS_RESOURCE``, seccomp, AppArmor and the masked system
paths lifted, and a private cgroup namespace. Its RUN steps fail (read-only
cgroups), but pulls and image commands work, which is all a registry round
trip needs. Its store is a temporary folder bind-mounted on
``/var/lib/docker``, and its API socket is bind-mounted out beside it, so
``DOCKER_HOST=unix://...`` drives it from here.

The container has a network namespace of its own, never the host's: a
dockerd started with ``--network host --bridge=none`` deletes the host's
``docker0`` (it removes the default bridge of the namespace it starts in), and
every build on the first engine then fails. So the registry runs in the
container too, on port P, published on the host's ``127.0.0.1:P``: the name
``127.0.0.1:P`` reaches it from both engines and from envbuild, and is
loopback (plain http, no daemon change) to each.

Everything is removed again, on failure too: the container (the second
engine's mounts live in its mount namespace and go with it), the folder and
the engine image.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

BINARIES = (
    "/usr/sbin/dockerd",
    "/usr/bin/containerd",
    "/usr/bin/containerd-shim-runc-v2",
    "/usr/sbin/runc",
    "/usr/bin/docker-init",
    "/usr/bin/docker-registry",
)
_LIBC = ("libc.so", "libm.so", "ld-linux", "linux-vdso")
_DOCKERFILE = """FROM debian:bookworm-slim
COPY bin/ /usr/local/bin/
COPY lib/ /opt/engine/lib/
ENV LD_LIBRARY_PATH=/opt/engine/lib
ENTRYPOINT ["dockerd"]
"""
# MACHINE.md: what a dockerd needs in a container where --privileged is refused.
_CONTAINER_OPTIONS = (
    "--cap-add", "ALL",
    "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined",
    "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined",
    "--cgroupns", "private",
)  # fmt: skip
# Its own network namespace: no bridge or NAT needed for pulls.
_DAEMON_OPTIONS = (
    "--host", "unix:///run/engine/docker.sock",
    "--exec-root", "/run/engine-exec",
    "--pidfile", "/run/engine-docker.pid",
    "--iptables=false",
    "--ip6tables=false",
    "--ip-masq=false",
    "--bridge=none",
    "--userland-proxy=false",
)  # fmt: skip


def available() -> str | None:
    """Why no second engine can be made here, or ``None`` when one can."""
    missing = [b for b in BINARIES if not Path(b).is_file()]
    if missing:
        return f"{', '.join(missing)} not installed (Debian's docker.io; scripts/setup)"
    return None


def _libraries(binary: str) -> set[Path]:
    out = subprocess.run(
        ["ldd", binary], capture_output=True, text=True, check=False, timeout=30
    ).stdout
    found = set()
    for line in out.splitlines():
        parts = line.split("=>")
        if len(parts) == 2 and parts[1].strip().startswith("/"):
            path = parts[1].split()[0]
            if not any(name in path for name in _LIBC):
                found.add(Path(path))
    return found


def build_image(docker: str) -> str:
    """Build the engine image (tagged by a digest of the binaries and a token of its own);
    return its tag."""
    digest = hashlib.sha256()
    for binary in BINARIES:
        digest.update(Path(binary).read_bytes())
    # A tag of its own: another session's may still run containers from its own.
    tag = f"envbuild-test-engine:{digest.hexdigest()[:12]}-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="envbuild-engine-image-") as tmp:
        context = Path(tmp)
        (context / "bin").mkdir()
        (context / "lib").mkdir()
        libraries: set[Path] = set()
        for binary in BINARIES:
            shutil.copy2(binary, context / "bin")
            libraries |= _libraries(binary)
        for library in libraries:
            shutil.copy2(library.resolve(), context / "lib" / library.name)
        (context / "Dockerfile").write_text(_DOCKERFILE, encoding="utf-8")
        subprocess.run(
            [docker, "build", "-q", "-t", tag, str(context)],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
    return tag


@dataclass(frozen=True)
class SecondEngine:
    """A running second engine: its container and the socket that drives it."""

    container: str
    folder: Path  # its store (data/), its socket (run/docker.sock), the registry's (registry/)
    docker: str  # the docker client, as for the first engine
    registry: str  # "127.0.0.1:P": the registry in the container, as every side names it

    @property
    def host(self) -> str:
        """The ``DOCKER_HOST`` value that reaches this engine."""
        return f"unix://{self.folder / 'run' / 'docker.sock'}"

    def client(self, *args: str, timeout: float = 300) -> str:
        """Run the docker client against this engine; its stdout."""
        return subprocess.run(
            [self.docker, "-H", self.host, *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=timeout,
        ).stdout

    def images(self) -> list[str]:
        """Every ``REPOSITORY:TAG`` (or ``REPOSITORY@DIGEST`` when untagged) it holds."""
        out = self.client("images", "--digests", "--format", "{{.Repository}}:{{.Tag}} {{.Digest}}")
        refs = []
        for line in out.splitlines():
            ref, _, digest = line.partition(" ")
            repo, _, tag = ref.rpartition(":")
            refs.append(f"{repo}@{digest}" if tag == "<none>" else ref)
        return sorted(refs)


def _logs(docker: str, container: str) -> str:
    return subprocess.run(
        [docker, "logs", "--tail", "20", container],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    ).stderr


_REGISTRY_CONFIG = """version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: /var/lib/registry/data
  delete:
    enabled: true
http:
  addr: 0.0.0.0:{port}
"""


def _wait(what: str, answers: Callable[[], bool], docker: str, name: str) -> None:
    deadline = time.monotonic() + 60
    while not answers():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start:\n{_logs(docker, name)}")
        time.sleep(0.1)


@contextlib.contextmanager
def running(docker: str, image: str) -> Iterator[SecondEngine]:
    """A second engine with an empty store, and a registry on ``127.0.0.1:P`` that it and
    the first engine both reach, for the ``with`` block; then nothing of them."""
    from tests.integration.registry import answers, free_port

    # A short folder under /tmp: a unix socket's path is limited to 107 bytes.
    folder = Path(tempfile.mkdtemp(prefix="eb-engine-", dir="/tmp"))
    for sub in ("data", "run", "registry"):
        (folder / sub).mkdir()
    port = free_port()
    (folder / "registry" / "config.yml").write_text(
        _REGISTRY_CONFIG.format(port=port), encoding="utf-8"
    )
    name = f"envbuild-test-engine-{uuid.uuid4().hex[:10]}"
    try:
        subprocess.run(
            [
                docker, "run", "--detach", "--name", name, *_CONTAINER_OPTIONS,
                "--publish", f"127.0.0.1:{port}:{port}",
                "--volume", f"{folder / 'data'}:/var/lib/docker",
                "--volume", f"{folder / 'run'}:/run/engine",
                "--volume", f"{folder / 'registry'}:/var/lib/registry",
                image, *_DAEMON_OPTIONS,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )  # fmt: skip
        subprocess.run(
            [
                docker, "exec", "--detach", name,
                "docker-registry", "serve", "/var/lib/registry/config.yml",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )  # fmt: skip
        engine = SecondEngine(name, folder, docker, f"127.0.0.1:{port}")
        probe = [docker, "-H", engine.host, "version", "--format", "{{.Server.Version}}"]
        _wait(
            "the second engine",
            lambda: subprocess.run(probe, capture_output=True, check=False).returncode == 0,
            docker,
            name,
        )
        _wait("its registry", lambda: answers(f"http://{engine.registry}"), docker, name)
        yield engine
    finally:
        subprocess.run(
            [docker, "rm", "--force", "--volumes", name],
            capture_output=True,
            check=False,
            timeout=120,
        )
        shutil.rmtree(folder, ignore_errors=True)
