"""The Engine API channel: one HTTP request per call, on the unix socket or through the SDK.

On a local unix socket (the usual case) each request is made here with
``socket`` alone: importing the docker SDK costs ~170 ms, more than a whole
cached ``docker build``, and the cache-hit and run paths need only a request
or a few. Other hosts (tcp+TLS, ssh) go through the docker SDK's session,
imported when first needed (:class:`SdkApi`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode

from envbuild.engine.records import STDERR, STDOUT, ImageInfo
from envbuild.errors import EngineError

if TYPE_CHECKING:  # the cache-hit path does not import the protocol family
    from envbuild.engine.protocols import ContainerSpec, ContainerStream

DEFAULT_SOCKET = "/var/run/docker.sock"


def socket_path() -> str | None:
    """The engine's unix socket (``DOCKER_HOST`` or the default); ``None`` for other hosts."""
    host = os.environ.get("DOCKER_HOST", "")
    if not host:
        return DEFAULT_SOCKET
    if host.startswith("unix://"):
        return host[len("unix://") :]
    return None  # tcp://, ssh://: leave it to the SDK


def engine_down(detail: str) -> EngineError:
    """The error of an engine that does not answer, with what to do."""
    return EngineError(
        f"cannot reach the Docker engine: {detail}",
        hint="start the engine (see README: `bash scripts/setup`) or set DOCKER_HOST",
    )


def to_info(data: Mapping[str, Any]) -> ImageInfo:
    """An :class:`ImageInfo` from the engine's image JSON (inspect or list)."""
    config = data.get("Config") or {}
    return ImageInfo(
        id=str(data.get("Id", "")),
        tags=tuple(data.get("RepoTags") or ()),
        labels=dict(config.get("Labels") or data.get("Labels") or {}),
        size=int(data.get("Size") or 0),
        created=str(data.get("Created") or ""),
        repo_digests=tuple(data.get("RepoDigests") or ()),
        variables=tuple(str(e).partition("=")[0] for e in config.get("Env") or ()),
    )


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
    if spec.entrypoint is not None:
        config["Entrypoint"] = list(spec.entrypoint)
    if spec.network is not None:
        host["NetworkMode"] = spec.network
    return config


def check(status: int, body: bytes, what: str) -> None:
    """Raise :class:`EngineError` naming ``what`` unless ``status`` is a success."""
    if 200 <= status < 300:
        return
    try:
        message = str(json.loads(body).get("message", "")) or body.decode("utf-8", "replace")
    except (ValueError, AttributeError):
        message = body.decode("utf-8", "replace")
    raise EngineError(f"cannot {what}: the engine answered {status}: {message.strip()[:500]}")


# The attach request: the container's live streams only, never its stored log.
# Every caller attaches before it starts the container, and the engine hooks
# the streams up before it answers the attach, so nothing is missed. Asking for
# ``logs`` as well makes the engine replay the log file *after* hooking up the
# streams: a line written between the two arrives twice (seen under load).
ATTACH_QUERY = {"stream": "1", "stdout": "1", "stderr": "1"}


class Api(Protocol):
    """One Engine API request per call, and the attach stream."""

    def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        json_body: object = None,
        body: Iterable[bytes] | None = None,
        timeout: float | None = 60,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """Send one request; the status and the whole body of the answer."""

    def get_many(
        self, paths: Sequence[str], *, timeout: float | None = 60
    ) -> list[tuple[int, bytes]]:
        """``GET`` each of ``paths``, the requests in flight together; the answers in order."""

    def attach(self, container_id: str) -> ContainerStream:
        """Attach to a container's stdout and stderr (an upgraded connection)."""


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


class RawApi:
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
        headers: Mapping[str, str] | None = None,
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
        for key, value in (headers or {}).items():
            head += f"{key}: {value}\r\n"
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
            raise engine_down(f"{self.path}: {exc.strerror or exc}") from exc

    def get_many(
        self, paths: Sequence[str], *, timeout: float | None = 60
    ) -> list[tuple[int, bytes]]:
        """One connection per path, every request sent before the first answer is read:
        the engine answers them side by side (five image inspects take about the
        time of two one after the other; an image list filtered by reference
        costs more than either)."""
        with contextlib.ExitStack() as stack:
            try:
                sockets = []
                for path in paths:
                    sock = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
                    sock.settimeout(timeout)
                    sock.connect(self.path)
                    sock.sendall(
                        f"GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n"
                        "Content-Length: 0\r\n\r\n".encode()
                    )
                    sockets.append(sock)
                return [_read_response(sock) for sock in sockets]
            except OSError as exc:
                raise engine_down(f"{self.path}: {exc.strerror or exc}") from exc

    def attach(self, container_id: str) -> ContainerStream:
        request = (
            f"POST {_url(f'/containers/{container_id}/attach', ATTACH_QUERY)} HTTP/1.1\r\n"
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
            raise engine_down(f"{self.path}: {exc.strerror or exc}") from exc
        except BaseException:
            sock.close()
            raise
        return FrameStream(sock.recv, sock.close, rest)


class SdkApi:
    """The same Engine API calls through the docker SDK's session (tcp, TLS, ssh hosts).

    ``owner`` has the SDK client as its ``client`` attribute (connected on first use).
    """

    def __init__(self, owner: Any) -> None:
        self.owner = owner

    @staticmethod
    def _errors() -> tuple[type[BaseException], ...]:
        import docker.errors

        return (docker.errors.DockerException,)

    def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        json_body: object = None,
        body: Iterable[bytes] | None = None,
        timeout: float | None = 60,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        api = self.owner.client.api
        url = f"{api.base_url}/v{api.api_version}{path}"
        sent: dict[str, str] = dict(headers or {})
        data: bytes | Iterable[bytes] | None = body
        if json_body is not None:
            data = json.dumps(json_body).encode()
            sent["Content-Type"] = "application/json"
        elif body is not None:
            sent["Content-Type"] = "application/x-tar"
        try:
            response = api.request(
                method, url, params=dict(query or {}), data=data, headers=sent, timeout=timeout
            )
        except self._errors() as exc:
            raise engine_down(str(exc)) from exc
        except OSError as exc:  # requests' ConnectionError is an OSError
            raise engine_down(str(exc)) from exc
        return int(response.status_code), bytes(response.content)

    def get_many(
        self, paths: Sequence[str], *, timeout: float | None = 60
    ) -> list[tuple[int, bytes]]:
        """One after the other, on the SDK's session."""
        return [self.call("GET", path, timeout=timeout) for path in paths]

    def attach(self, container_id: str) -> ContainerStream:
        from docker.utils.socket import read

        try:
            sock = self.owner.client.api.attach_socket(container_id, params=dict(ATTACH_QUERY))
        except self._errors() as exc:
            raise EngineError(f"cannot attach to the container: {exc}") from exc

        def recv(size: int) -> bytes:
            data = read(sock, size)
            return bytes(data or b"")

        return FrameStream(recv, sock.close, b"")


class FrameStream:
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
