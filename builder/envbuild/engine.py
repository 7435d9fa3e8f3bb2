"""The one module that talks to the Docker engine.

Two channels, hidden behind :class:`Engine`:

* **Builds** go through BuildKit, driven by the docker CLI (``docker buildx
  build --load``, or ``DOCKER_BUILDKIT=1 docker build`` on a client with
  BuildKit built in). The docker SDK for Python cannot drive BuildKit (no
  secrets, no cache mounts), so envbuild shells out, as repo2docker does. No
  BuildKit-capable client is a clear error, never a silent fallback.
* **Everything else** (tag, remove, list, run) goes through the docker SDK,
  imported lazily: importing it costs ~170 ms, more than a whole cached
  ``docker build``. The cache-hit path needs one ``inspect``, which is a single
  HTTP request on the engine's unix socket, made here without the SDK.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from envbuild.errors import BuildError, EngineError, ToolMissingError

Log = Callable[[str], None]

DEFAULT_SOCKET = "/var/run/docker.sock"


@dataclass(frozen=True)
class ImageInfo:
    """What envbuild needs to know of an image in the local engine."""

    id: str
    tags: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    size: int = 0
    created: str = ""


@dataclass(frozen=True)
class BuildRequest:
    """One BuildKit build of a materialised context."""

    context_dir: Path
    labels: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, Path] = field(default_factory=dict)  # id -> file
    platform: str | None = None
    no_cache: bool = False


class Engine(Protocol):
    """What envbuild asks of a container engine."""

    def inspect_image(self, ref: str) -> ImageInfo | None:
        """The image ``ref`` names, or ``None`` when the engine has no such image."""

    def build(self, request: BuildRequest, log: Log) -> str:
        """Build ``request`` with BuildKit, streaming its log; return the image ID."""

    def tag(self, image_id: str, ref: str) -> None:
        """Point ``ref`` (``repo:tag``) at ``image_id``."""

    def remove_image(self, ref: str) -> None:
        """Remove the tag or image ``ref`` (missing is not an error)."""

    def list_images(self, label: str) -> list[ImageInfo]:
        """Every image that carries ``label``."""


# --------------------------------------------------------------------------
# The raw API channel (one request, no SDK import)
# --------------------------------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def _socket_path() -> str | None:
    host = os.environ.get("DOCKER_HOST", "")
    if not host:
        return DEFAULT_SOCKET
    if host.startswith("unix://"):
        return host[len("unix://") :]
    return None  # tcp://, ssh://: leave it to the SDK


def _engine_down(detail: str) -> EngineError:
    return EngineError(
        f"cannot reach the Docker engine: {detail}",
        hint="start the engine (see README: `bash scripts/setup`) or set DOCKER_HOST",
    )


def _to_info(data: Mapping[str, Any]) -> ImageInfo:
    config = data.get("Config") or {}
    return ImageInfo(
        id=str(data.get("Id", "")),
        tags=tuple(data.get("RepoTags") or ()),
        labels=dict(config.get("Labels") or data.get("Labels") or {}),
        size=int(data.get("Size") or 0),
        created=str(data.get("Created") or ""),
    )


# --------------------------------------------------------------------------
# BuildKit through the docker CLI
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildKitClient:
    """A docker CLI that can drive BuildKit, and how."""

    binary: str
    mode: str  # "buildx" or "classic" (DOCKER_BUILDKIT=1 docker build)

    def command(self, request: BuildRequest, iidfile: Path) -> tuple[list[str], dict[str, str]]:
        """The argv and environment of one build."""
        env = dict(os.environ)
        if self.mode == "buildx":
            argv = [self.binary, "buildx", "build", "--load"]
        else:
            argv = [self.binary, "build"]
            env["DOCKER_BUILDKIT"] = "1"
        argv += ["--progress=plain", "--iidfile", str(iidfile)]
        if request.platform:
            argv += ["--platform", request.platform]
        if request.no_cache:
            argv.append("--no-cache")
        for key, value in sorted(request.labels.items()):
            argv += ["--label", f"{key}={value}"]
        for sid, src in sorted(request.secrets.items()):
            argv += ["--secret", f"id={sid},src={src}"]
        argv += ["--file", str(request.context_dir / "Dockerfile"), str(request.context_dir)]
        return argv, env


def _run_quiet(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@functools.lru_cache(maxsize=8)
def find_buildkit(binary: str) -> BuildKitClient:
    """Find how ``binary`` can run a BuildKit build, or say what to install."""
    path = shutil.which(binary)
    if path is None:
        raise ToolMissingError(
            f"the docker client {binary!r} was not found",
            hint="install Docker (Debian: apt-get install docker.io) or set ENVBUILD_DOCKER "
            "to the docker CLI to use",
        )
    if _run_quiet([path, "buildx", "version"]).returncode == 0:
        return BuildKitClient(path, "buildx")
    version = _run_quiet([path, "--version"]).stdout
    match = re.search(r"version (\d+)\.", version)
    # Clients before 23.0 have BuildKit built in behind DOCKER_BUILDKIT=1; from
    # 23.0 on, `docker build` needs the buildx plugin for BuildKit.
    if match and int(match.group(1)) < 23:
        return BuildKitClient(path, "classic")
    raise ToolMissingError(
        f"the docker client {path} ({version.strip() or 'unknown version'}) cannot run BuildKit "
        "builds: its buildx plugin is missing",
        hint="install the buildx plugin (Debian: apt-get install docker-buildx), or point envbuild "
        "at a client with BuildKit built in: ENVBUILD_DOCKER=/usr/bin/docker, or "
        'docker = "/usr/bin/docker" in ~/.config/envbuild/config.toml',
    )


_STEP_RE = re.compile(r"^#(\d+) (\[[^\]]*\] .*)$")
_ERROR_RE = re.compile(r"^#(\d+) ERROR: (.*)$")
_EXIT_RE = re.compile(r"exit code: (\d+)")


@dataclass(frozen=True)
class BuildFailure:
    """What the BuildKit log says about a failed build."""

    step: str | None
    exit_code: int | None
    tail: tuple[str, ...]


def parse_failure(lines: Sequence[str], tail: int = 20) -> BuildFailure:
    """Find the failing step, its exit code and its last lines in a plain BuildKit log."""
    titles: dict[str, str] = {}
    failed: str | None = None
    message = ""
    for line in lines:
        step = _STEP_RE.match(line)
        if step:
            titles.setdefault(step.group(1), step.group(2))
        error = _ERROR_RE.match(line)
        if error:
            failed, message = error.group(1), error.group(2)
    if failed is None:
        return BuildFailure(None, None, tuple(lines[-tail:]))
    own = [
        line.split(" ", 2)[-1] if re.match(rf"^#{failed} \d+\.\d+ ", line) else line
        for line in lines
        if line.startswith(f"#{failed} ") and not _ERROR_RE.match(line)
    ]
    code = _EXIT_RE.search(message)
    return BuildFailure(
        titles.get(failed, message), int(code.group(1)) if code else None, tuple(own[-tail:])
    )


def _stream(proc: subprocess.Popen[bytes]) -> Iterator[str]:
    assert proc.stdout is not None
    for raw in iter(proc.stdout.readline, b""):
        yield raw.decode("utf-8", errors="replace").rstrip("\r\n")


class DockerEngine:
    """The real engine: BuildKit via the CLI, the rest via the SDK (lazily)."""

    def __init__(self, docker_cli: str = "docker") -> None:
        self.docker_cli = docker_cli
        self._client: Any = None

    # -- the SDK, imported only when a call needs it --------------------------------
    @property
    def client(self) -> Any:
        """The docker SDK client (imported and connected on first use)."""
        if self._client is None:
            try:
                import docker  # the only import of the docker SDK in envbuild

                self._client = docker.from_env()
                self._client.ping()
            except Exception as exc:  # the SDK raises several unrelated types here
                raise _engine_down(str(exc)) from exc
        return self._client

    def _sdk_errors(self) -> tuple[type[BaseException], ...]:
        import docker.errors

        return (docker.errors.DockerException,)

    # -- inspect: one request on the socket ---------------------------------------
    def inspect_image(self, ref: str) -> ImageInfo | None:
        """See :meth:`Engine.inspect_image`; one HTTP request, no SDK import."""
        path = _socket_path()
        if path is None:
            return self._inspect_sdk(ref)
        conn = _UnixConnection(path, timeout=30)
        try:
            conn.request("GET", f"/images/{quote(ref, safe='/:@')}/json")
            response = conn.getresponse()
            body = response.read()
        except OSError as exc:
            raise _engine_down(f"{path}: {exc.strerror or exc}") from exc
        finally:
            conn.close()
        if response.status == 404:
            return None
        if response.status != 200:
            raise EngineError(
                f"inspect {ref}: the engine answered {response.status}: {body[:300]!r}"
            )
        return _to_info(json.loads(body))

    def _inspect_sdk(self, ref: str) -> ImageInfo | None:
        import docker.errors

        try:
            return _to_info(self.client.api.inspect_image(ref))
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.DockerException as exc:
            raise EngineError(f"inspect {ref}: {exc}") from exc

    # -- build: BuildKit through the CLI ------------------------------------------
    def build(self, request: BuildRequest, log: Log) -> str:
        """See :meth:`Engine.build`. Raises :class:`BuildError` with the failing step."""
        client = find_buildkit(self.docker_cli)
        with tempfile.TemporaryDirectory(prefix="envbuild-iid-") as tmp:
            iidfile = Path(tmp) / "iid"
            argv, env = client.command(request, iidfile)
            lines: list[str] = []
            try:
                proc = subprocess.Popen(
                    argv,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                )
            except OSError as exc:
                raise EngineError(f"cannot start {argv[0]}: {exc}") from exc
            try:
                for line in _stream(proc):
                    lines.append(line)
                    if len(lines) > 20000:
                        del lines[:10000]
                    log(line)
                code = proc.wait()
            except BaseException:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                raise
            if code != 0:
                failure = parse_failure(lines)
                if failure.step is None and any("Cannot connect" in ln for ln in lines[-5:]):
                    raise _engine_down(lines[-1])
                raise BuildError(
                    "the image build failed",
                    step=failure.step,
                    step_exit_code=failure.exit_code,
                    log_tail=failure.tail,
                )
            image_id = iidfile.read_text().strip() if iidfile.exists() else ""
        if not image_id:
            raise BuildError("the build reported success but named no image", log_tail=lines[-20:])
        return image_id

    # -- the rest, through the SDK ------------------------------------------------
    def tag(self, image_id: str, ref: str) -> None:
        """See :meth:`Engine.tag`."""
        repo, _, tag = ref.rpartition(":")
        try:
            self.client.api.tag(image_id, repo, tag, force=True)
        except self._sdk_errors() as exc:
            raise EngineError(f"cannot tag {image_id} as {ref}: {exc}") from exc

    def remove_image(self, ref: str) -> None:
        """See :meth:`Engine.remove_image`."""
        import docker.errors

        try:
            self.client.api.remove_image(ref, noprune=False)
        except docker.errors.ImageNotFound:
            return
        except docker.errors.DockerException as exc:
            raise EngineError(f"cannot remove {ref}: {exc}") from exc

    def list_images(self, label: str) -> list[ImageInfo]:
        """See :meth:`Engine.list_images`."""
        try:
            found = self.client.api.images(filters={"label": label})
        except self._sdk_errors() as exc:
            raise EngineError(f"cannot list images: {exc}") from exc
        return [_to_info(item) for item in found]
