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

import contextlib
import functools
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlencode

from envbuild.errors import BuildError, EngineError, ToolMissingError

if TYPE_CHECKING:
    import subprocess

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
    repo_digests: tuple[str, ...] = ()  # "repo@sha256:..." the image has in registries


@dataclass(frozen=True)
class BuildRequest:
    """One BuildKit build of a materialised context.

    ``secrets`` reach the build only as BuildKit secrets (``--secret``);
    ``build_args`` are for values that are not secret (they show in the
    image's history).
    """

    context_dir: Path
    labels: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, Path] = field(default_factory=dict)  # id -> file
    platform: str | None = None
    no_cache: bool = False
    build_args: Mapping[str, str] = field(default_factory=dict)


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
        repo_digests=tuple(data.get("RepoDigests") or ()),
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
        elif self.mode == "classic":
            argv = [self.binary, "build"]
            # Always set, whatever the caller's environment says: without it the
            # legacy builder would run, with no secrets and no cache mounts.
            env["DOCKER_BUILDKIT"] = "1"
        else:  # never downgrade a build that may carry secrets
            raise ToolMissingError(f"{self.binary}: {self.mode!r} is not a BuildKit mode")
        argv += ["--progress=plain", "--iidfile", str(iidfile)]
        if request.platform:
            argv += ["--platform", request.platform]
        if request.no_cache:
            argv.append("--no-cache")
        for key, value in sorted(request.labels.items()):
            argv += ["--label", f"{key}={value}"]
        for sid, src in sorted(request.secrets.items()):
            argv += ["--secret", f"id={sid},src={src}"]
        for key, value in sorted(request.build_args.items()):
            argv += ["--build-arg", f"{key}={value}"]
        argv += ["--file", str(request.context_dir / "Dockerfile"), str(request.context_dir)]
        return argv, env


def _run_quiet(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    import subprocess

    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _probe_cache() -> Path:
    from envbuild.settings import load_settings

    return load_settings().home / "cache" / "buildkit-clients.json"


@functools.lru_cache(maxsize=8)
def find_buildkit(binary: str) -> BuildKitClient:
    """Find how ``binary`` can run a BuildKit build, or say what to install.

    Probing runs the client twice (~60 ms), so a positive answer is remembered
    per client binary (path, size, mtime) under envbuild's state folder.
    """
    path = shutil.which(binary)
    if path is None:
        raise ToolMissingError(
            f"the docker client {binary!r} was not found",
            hint="install Docker (Debian: apt-get install docker.io) or set ENVBUILD_DOCKER "
            "to the docker CLI to use",
        )
    stat = Path(path).stat()
    key = f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}"
    cache = _probe_cache()
    try:
        known = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if known.get(key) in ("buildx", "classic"):
        return BuildKitClient(path, str(known[key]))
    client = _probe_buildkit(path)
    with contextlib.suppress(OSError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**known, key: client.mode}), encoding="utf-8")
        tmp.replace(cache)
    return client


def _probe_buildkit(path: str) -> BuildKitClient:
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
        """See :meth:`Engine.inspect_image`: one Engine API request, no SDK import."""
        status, body = self._run_api().call("GET", f"/images/{quote(ref, safe='/:@')}/json")
        if status == 404:
            return None
        _check(status, body, f"inspect {ref}")
        return _to_info(json.loads(body))

    # -- build: BuildKit through the CLI ------------------------------------------
    def build(self, request: BuildRequest, log: Log) -> str:
        """See :meth:`Engine.build`. Raises :class:`BuildError` with the failing step."""
        import subprocess

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
        """See :meth:`Engine.tag`. One API request (the SDK only for non-unix engines)."""
        repo, _, tag = ref.rpartition(":")
        status, body = self._run_api().call(
            "POST", f"/images/{quote(image_id, safe='/:@')}/tag", query={"repo": repo, "tag": tag}
        )
        _check(status, body, f"tag {image_id[:19]} as {ref}")

    def remove_image(self, ref: str) -> None:
        """See :meth:`Engine.remove_image`."""
        status, body = self._run_api().call("DELETE", f"/images/{quote(ref, safe='/:@')}")
        if status == 404:
            return
        _check(status, body, f"remove {ref}")

    def list_images(self, label: str) -> list[ImageInfo]:
        """See :meth:`Engine.list_images`."""
        query = {"filters": json.dumps({"label": [label]})}
        status, body = self._run_api().call("GET", "/images/json", query=query)
        _check(status, body, "list images")
        return [_to_info(item) for item in json.loads(body)]

    # -- containers (run layer) -------------------------------------------------------
    # Every call is one request of the Engine API. On a local unix socket (the usual
    # case) it is made here without the docker SDK, so `envbuild run` does not pay the
    # SDK's import; other hosts (tcp+TLS, ssh) go through the SDK's session.

    def _run_api(self) -> _RunApi:
        api: _RunApi | None = getattr(self, "_run_api_cache", None)
        if api is None:
            path = _socket_path()
            api = _RawRunApi(path) if path is not None else _SdkRunApi(self)
            self._run_api_cache = api
        return api

    def create_container(self, spec: ContainerSpec) -> str:
        """See :meth:`RunEngine.create_container`."""
        query = {"name": spec.name} if spec.name else None
        status, body = self._run_api().call(
            "POST", "/containers/create", query=query, json_body=container_config(spec)
        )
        if status == 404:
            raise EngineError(f"cannot create the container: no such image {spec.image}")
        _check(status, body, "create the container")
        return str(json.loads(body)["Id"])

    def put_archive(self, container_id: str, path: str, chunks: Iterable[bytes]) -> None:
        """See :meth:`RunEngine.put_archive`."""
        status, body = self._run_api().call(
            "PUT",
            f"/containers/{container_id}/archive",
            query={"path": path},
            body=chunks,
            timeout=None,
        )
        _check(status, body, f"copy files into the container at {path}")

    def attach_container(self, container_id: str) -> ContainerStream:
        """See :meth:`RunEngine.attach_container`."""
        return self._run_api().attach(container_id)

    def start_container(self, container_id: str) -> None:
        """See :meth:`RunEngine.start_container`."""
        status, body = self._run_api().call("POST", f"/containers/{container_id}/start")
        if status == 304:  # already started
            return
        _check(status, body, "start the container")

    def wait_container(self, container_id: str) -> int:
        """See :meth:`RunEngine.wait_container`."""
        status, body = self._run_api().call(
            "POST", f"/containers/{container_id}/wait", timeout=None
        )
        _check(status, body, "wait for the container")
        data = json.loads(body)
        error = (data.get("Error") or {}).get("Message")
        if error:
            raise EngineError(f"waiting for the container failed: {error}")
        return int(data["StatusCode"])

    def stop_container(self, container_id: str, timeout: float) -> None:
        """See :meth:`RunEngine.stop_container`."""
        seconds = max(0, round(timeout))
        status, body = self._run_api().call(
            "POST",
            f"/containers/{container_id}/stop",
            query={"t": str(seconds)},
            timeout=seconds + 60,
        )
        if status in (304, 404):  # already stopped, or already gone
            return
        _check(status, body, "stop the container")

    def kill_container(self, container_id: str, signal: str = "SIGKILL") -> None:
        """See :meth:`RunEngine.kill_container`."""
        status, body = self._run_api().call(
            "POST", f"/containers/{container_id}/kill", query={"signal": signal}
        )
        if status in (404, 409):  # gone, or not running any more
            return
        _check(status, body, f"send {signal} to the container")

    def remove_container(self, container_id: str) -> None:
        """See :meth:`RunEngine.remove_container`."""
        status, body = self._run_api().call(
            "DELETE", f"/containers/{container_id}", query={"force": "1", "v": "1"}
        )
        if status == 404:
            return
        if status == 409 and b"already in progress" in body:
            return
        _check(status, body, f"remove the container {container_id[:12]}")

    def list_labelled(self, label: str) -> Labelled:
        """See :meth:`RunEngine.list_labelled`."""
        api = self._run_api()
        query = {"all": "1", "filters": json.dumps({"label": [label]})}
        status, body = api.call("GET", "/containers/json", query=query)
        _check(status, body, "list containers")
        containers = tuple(str(item["Id"]) for item in json.loads(body))
        query = {"filters": json.dumps({"label": [label]})}
        status, body = api.call("GET", "/networks", query=query)
        _check(status, body, "list networks")
        networks = tuple(str(item["Id"]) for item in json.loads(body))
        query = {"filters": json.dumps({"label": [label]})}
        status, body = api.call("GET", "/volumes", query=query)
        _check(status, body, "list volumes")
        volumes = tuple(str(item["Name"]) for item in json.loads(body).get("Volumes") or ())
        return Labelled(containers, networks, volumes)

    def remove_labelled(self, label: str) -> Labelled:
        """See :meth:`RunEngine.remove_labelled`."""
        found = self.list_labelled(label)
        api = self._run_api()
        for container_id in found.containers:
            self.remove_container(container_id)
        for network_id in found.networks:
            # A network with lingering endpoints refuses removal: disconnect them first.
            status, body = api.call("GET", f"/networks/{network_id}")
            if status == 200:
                for endpoint in json.loads(body).get("Containers") or {}:
                    api.call(
                        "POST",
                        f"/networks/{network_id}/disconnect",
                        json_body={"Container": endpoint, "Force": True},
                    )
            status, body = api.call("DELETE", f"/networks/{network_id}")
            if status != 404:
                _check(status, body, f"remove the network {network_id[:12]}")
        for volume in found.volumes:
            status, body = api.call("DELETE", f"/volumes/{volume}", query={"force": "1"})
            if status != 404:
                _check(status, body, f"remove the volume {volume}")
        return found


# --------------------------------------------------------------------------
# Containers (run layer): typed specs, the protocol, and the API channels
# --------------------------------------------------------------------------

STDOUT = 1
STDERR = 2


@dataclass(frozen=True)
class BindMount:
    """A host path bound into a container; ``source`` is absolute and already vetted."""

    source: str
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class GpuRequest:
    """GPUs asked of the engine: ``count=-1`` is all of them, else ``count`` or ``device_ids``."""

    count: int | None = None
    device_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ContainerSpec:
    """Everything one container of a run is created with.

    ``argv`` is the command as a list (never a shell string); ``env`` holds
    ``(name, value)`` pairs handed to the engine as they are.
    """

    image: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None
    workdir: str | None = None
    mounts: tuple[BindMount, ...] = ()
    shm_size: int | None = None
    gpus: GpuRequest | None = None
    init: bool = True
    name: str | None = None
    cap_drop: tuple[str, ...] = ()  # capability names without CAP_ (e.g. "NET_RAW")
    cap_add: tuple[str, ...] = ()
    no_new_privileges: bool = False


@dataclass(frozen=True)
class Labelled:
    """The engine resources that carry one label."""

    containers: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.containers or self.networks or self.volumes)


class ContainerStream(Protocol):
    """The demultiplexed output of a container: ``(STDOUT|STDERR, bytes)`` frames."""

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """Frames in arrival order, until the container's output ends."""

    def close(self) -> None:
        """Drop the connection (safe to call twice)."""


class RunEngine(Engine, Protocol):
    """What the run layer asks of an engine, on top of :class:`Engine`.

    The order of a run is create -> (put_archive) -> attach -> start -> read the
    stream to its end -> wait -> remove: attaching before start loses no
    output, and removing only after wait keeps the exit code and the last lines
    (``auto_remove`` races both, docker-py#1813).
    """

    def create_container(self, spec: ContainerSpec) -> str:
        """Create (not start) a container; return its ID."""

    def put_archive(self, container_id: str, path: str, chunks: Iterable[bytes]) -> None:
        """Extract a tar stream into the (created) container at ``path``."""

    def attach_container(self, container_id: str) -> ContainerStream:
        """Attach to stdout and stderr (call before start: nothing is lost)."""

    def start_container(self, container_id: str) -> None:
        """Start a created container."""

    def wait_container(self, container_id: str) -> int:
        """Wait until the container stops; return its exit status."""

    def stop_container(self, container_id: str, timeout: float) -> None:
        """Send the stop signal; kill after ``timeout`` seconds (gone is not an error)."""

    def kill_container(self, container_id: str, signal: str = "SIGKILL") -> None:
        """Send ``signal`` to the container (not running is not an error)."""

    def remove_container(self, container_id: str) -> None:
        """Force-remove the container and its anonymous volumes (gone is not an error)."""

    def list_labelled(self, label: str) -> Labelled:
        """Containers, networks and volumes carrying ``label`` (``key`` or ``key=value``)."""

    def remove_labelled(self, label: str) -> Labelled:
        """Remove everything :meth:`list_labelled` finds; return what was found."""


def container_config(spec: ContainerSpec) -> dict[str, Any]:
    """The Engine API body of ``POST /containers/create`` for ``spec`` (pure)."""
    host: dict[str, Any] = {
        "Init": spec.init,
        "AutoRemove": False,  # removed by envbuild after the logs and exit code are in
        "Mounts": [
            {
                "Type": "bind",
                "Source": mount.source,
                "Target": mount.target,
                "ReadOnly": mount.read_only,
                "BindOptions": {"Propagation": "rprivate"},
            }
            for mount in spec.mounts
        ],
    }
    if spec.shm_size is not None:
        host["ShmSize"] = spec.shm_size
    if spec.cap_drop:
        host["CapDrop"] = list(spec.cap_drop)
    if spec.cap_add:
        host["CapAdd"] = list(spec.cap_add)
    if spec.no_new_privileges:
        host["SecurityOpt"] = ["no-new-privileges"]
    if spec.gpus is not None:
        request: dict[str, Any] = {"Driver": "", "Capabilities": [["gpu"]], "Options": {}}
        if spec.gpus.device_ids:
            request["DeviceIDs"] = list(spec.gpus.device_ids)
            request["Count"] = 0
        else:
            request["Count"] = spec.gpus.count if spec.gpus.count is not None else -1
        host["DeviceRequests"] = [request]
    config: dict[str, Any] = {
        "Image": spec.image,
        "Cmd": list(spec.argv),
        "Env": [f"{name}={value}" for name, value in spec.env],
        "Labels": dict(spec.labels),
        "AttachStdin": False,
        "AttachStdout": True,
        "AttachStderr": True,
        "OpenStdin": False,
        "Tty": False,
        "HostConfig": host,
    }
    if spec.user:
        config["User"] = spec.user
    if spec.workdir:
        config["WorkingDir"] = spec.workdir
    return config


def _check(status: int, body: bytes, what: str) -> None:
    if 200 <= status < 300:
        return
    try:
        message = str(json.loads(body).get("message", "")) or body.decode("utf-8", "replace")
    except (ValueError, AttributeError):
        message = body.decode("utf-8", "replace")
    raise EngineError(f"cannot {what}: the engine answered {status}: {message.strip()[:500]}")


class _RunApi(Protocol):
    def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        json_body: object = None,
        body: Iterable[bytes] | None = None,
        timeout: float | None = 60,
    ) -> tuple[int, bytes]: ...

    def attach(self, container_id: str) -> ContainerStream: ...


def _url(path: str, query: Mapping[str, str] | None) -> str:
    return path + ("?" + urlencode(dict(query)) if query else "")


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Read one HTTP/1.1 response from ``sock`` (the request said ``Connection: close``)."""
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status_line = lines[0].split(b" ", 2)
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise OSError(f"unexpected answer from the engine: {head[:80]!r}")
    chunked = any(
        line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower()
        for line in lines[1:]
    )
    if chunked:
        decoded = bytearray()
        rest = body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                break
            decoded += rest[:size]
            rest = rest[size + 2 :]
        body = bytes(decoded)
    return int(status_line[1]), body


class _RawRunApi:
    """The Engine API on a unix socket, with ``socket`` only (no http.client, no SDK).

    Each call is one connection: ``Connection: close`` lets the engine end the
    answer by closing, and request bodies of unknown length (tar streams) are
    sent chunked.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        json_body: object = None,
        body: Iterable[bytes] | None = None,
        timeout: float | None = 60,
    ) -> tuple[int, bytes]:
        head = f"{method} {_url(path, query)} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n"
        payload = b""
        if json_body is not None:
            payload = json.dumps(json_body).encode()
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        elif body is not None:
            head += "Content-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n"
        else:
            head += "Content-Length: 0\r\n"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(self.path)
                sock.sendall(head.encode("utf-8") + b"\r\n" + payload)
                if body is not None and json_body is None:
                    for chunk in body:
                        if chunk:
                            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    sock.sendall(b"0\r\n\r\n")
                return _read_response(sock)
        except OSError as exc:
            raise _engine_down(f"{self.path}: {exc.strerror or exc}") from exc

    def attach(self, container_id: str) -> ContainerStream:
        query = {"logs": "1", "stream": "1", "stdout": "1", "stderr": "1"}
        request = (
            f"POST {_url(f'/containers/{container_id}/attach', query)} HTTP/1.1\r\n"
            "Host: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(60)
            sock.connect(self.path)
            sock.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(65536)
                if not chunk:
                    raise EngineError("cannot attach to the container: the engine hung up")
                head += chunk
            head, rest = head.split(b"\r\n\r\n", 1)
            status = int(head.split(b" ", 2)[1])
            if status not in (101, 200):
                raise EngineError(
                    f"cannot attach to the container: the engine answered {status}: "
                    f"{rest.decode('utf-8', 'replace').strip()[:300]}"
                )
            sock.settimeout(None)  # a run may stay silent for hours
        except OSError as exc:
            sock.close()
            raise _engine_down(f"{self.path}: {exc.strerror or exc}") from exc
        except BaseException:
            sock.close()
            raise
        return _FrameStream(sock.recv, sock.close, rest)


class _SdkRunApi:
    """The same Engine API calls through the docker SDK's session (tcp, TLS, ssh hosts)."""

    def __init__(self, engine: DockerEngine) -> None:
        self.engine = engine

    def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        json_body: object = None,
        body: Iterable[bytes] | None = None,
        timeout: float | None = 60,
    ) -> tuple[int, bytes]:
        api = self.engine.client.api
        url = f"{api.base_url}/v{api.api_version}{path}"
        headers: dict[str, str] = {}
        data: bytes | Iterable[bytes] | None = body
        if json_body is not None:
            data = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        elif body is not None:
            headers["Content-Type"] = "application/x-tar"
        try:
            response = api.request(
                method, url, params=dict(query or {}), data=data, headers=headers, timeout=timeout
            )
        except self.engine._sdk_errors() as exc:
            raise _engine_down(str(exc)) from exc
        except OSError as exc:  # requests' ConnectionError is an OSError
            raise _engine_down(str(exc)) from exc
        return int(response.status_code), bytes(response.content)

    def attach(self, container_id: str) -> ContainerStream:
        from docker.utils.socket import read

        params = {"logs": 1, "stream": 1, "stdout": 1, "stderr": 1}
        try:
            sock = self.engine.client.api.attach_socket(container_id, params=params)
        except self.engine._sdk_errors() as exc:
            raise EngineError(f"cannot attach to the container: {exc}") from exc

        def recv(size: int) -> bytes:
            data = read(sock, size)
            return bytes(data or b"")

        return _FrameStream(recv, sock.close, b"")


class _FrameStream:
    """Demultiplex the engine's raw stream: 8-byte headers (stream, size), then data."""

    def __init__(self, recv: Callable[[int], bytes], close: Callable[[], None], head: bytes):
        self._recv = recv
        self._close = close
        self._buffer = bytearray(head)
        self._closed = False

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        buffer = self._buffer
        try:
            while True:
                # Hand out every complete frame we hold, then read more.
                while len(buffer) >= 8:
                    size = int.from_bytes(buffer[4:8], "big")
                    if len(buffer) < 8 + size:
                        break
                    kind = buffer[0]
                    data = bytes(buffer[8 : 8 + size])
                    del buffer[: 8 + size]
                    yield (STDERR if kind == STDERR else STDOUT), data
                if self._closed:
                    return
                try:
                    chunk = self._recv(262144)
                except OSError:
                    if self._closed:
                        return
                    raise
                if not chunk:
                    if buffer:  # a truncated last frame: hand out what there is
                        yield STDOUT, bytes(buffer[8:] if len(buffer) > 8 else b"")
                    return
                buffer += chunk
        finally:
            self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(OSError):
                self._close()
