"""The real engine: :class:`DockerEngine`, every protocol of :mod:`envbuild.engine.protocols`.

Two channels, hidden behind it:

* **Builds** go through BuildKit, driven by the docker CLI
  (:mod:`envbuild.engine.buildkit`).
* **Everything else** (images, containers) is one Engine API request per call
  (:mod:`envbuild.engine.api`): on the local unix socket with ``socket`` alone,
  so the cache-hit path (one ``inspect``) and ``envbuild run`` do not pay the
  docker SDK's import; other hosts (tcp+TLS, ssh) through the SDK's session.

The data types and protocols are defined in :mod:`envbuild.engine.protocols`
and importable from here too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from envbuild.engine.api import (
    Api,
    RawApi,
    SdkApi,
    check,
    container_config,
    engine_down,
    socket_path,
    to_info,
)
from envbuild.engine.records import STDERR, STDOUT, ImageInfo
from envbuild.errors import EngineError, RegistryError
from envbuild.log import Log

if TYPE_CHECKING:  # at run time, loaded on first use (see __getattr__ below)
    from pathlib import Path

    from envbuild.engine.protocols import (
        BindMount,
        BuildRequest,
        ContainerSpec,
        ContainerStream,
        Engine,
        EngineInfo,
        GpuRequest,
        ImageStore,
        Labelled,
        Owned,
        RunEngine,
    )

# The protocol family and its dataclasses cost more to import than a whole
# cache hit's answer: the names of it re-exported here load it on first use.
_LAZY = frozenset(
    {
        "BindMount",
        "BuildRequest",
        "ContainerSpec",
        "ContainerStream",
        "Engine",
        "EngineInfo",
        "GpuRequest",
        "ImageStore",
        "Labelled",
        "Owned",
        "RunEngine",
    }
)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from envbuild.engine import protocols

        return getattr(protocols, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "STDERR",
    "STDOUT",
    "BindMount",
    "BuildRequest",
    "ContainerSpec",
    "ContainerStream",
    "DockerEngine",
    "Engine",
    "EngineInfo",
    "GpuRequest",
    "ImageInfo",
    "ImageStore",
    "Labelled",
    "Log",
    "Owned",
    "RunEngine",
    "container_config",
]


class DockerEngine:
    """The real engine: BuildKit via the CLI, images and containers via the Engine API."""

    def __init__(self, docker_cli: str = "docker", *, state: Path | None = None) -> None:
        """``docker_cli`` drives builds; ``state`` is envbuild's state folder, where the
        BuildKit probe of that client is remembered (without it, each process probes)."""
        self.docker_cli = docker_cli
        self.state = state
        self._client: Any = None
        self._run_api_cache: Api | None = None

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
                raise engine_down(str(exc)) from exc
        return self._client

    def _run_api(self) -> Api:
        api = self._run_api_cache
        if api is None:
            path = socket_path()
            api = RawApi(path) if path is not None else SdkApi(self)
            self._run_api_cache = api
        return api

    # -- images -------------------------------------------------------------------
    def inspect_image(self, ref: str) -> ImageInfo | None:
        """See :meth:`ImageStore.inspect_image`: one Engine API request, no SDK import."""
        status, body = self._run_api().call("GET", f"/images/{quote(ref, safe='/:@')}/json")
        if status == 404:
            return None
        check(status, body, f"inspect {ref}")
        return to_info(json.loads(body))

    def inspect_images(self, refs: Sequence[str]) -> list[ImageInfo | None]:
        """:meth:`inspect_image` of each of ``refs``, the requests in flight together."""
        paths = [f"/images/{quote(ref, safe='/:@')}/json" for ref in refs]
        infos: list[ImageInfo | None] = []
        for ref, (status, body) in zip(refs, self._run_api().get_many(paths), strict=True):
            if status == 404:
                infos.append(None)
                continue
            check(status, body, f"inspect {ref}")
            infos.append(to_info(json.loads(body)))
        return infos

    def tag(self, image_id: str, ref: str) -> None:
        """See :meth:`ImageStore.tag`."""
        repo, _, tag = ref.rpartition(":")
        if not repo or "/" in tag:  # "repo" alone, or "host:port/repo": no tag given
            repo, tag = ref, "latest"
        status, body = self._run_api().call(
            "POST", f"/images/{quote(image_id, safe='/:@')}/tag", query={"repo": repo, "tag": tag}
        )
        check(status, body, f"tag {image_id[:19]} as {ref}")

    def remove_image(self, ref: str) -> None:
        """See :meth:`ImageStore.remove_image`."""
        status, body = self._run_api().call("DELETE", f"/images/{quote(ref, safe='/:@')}")
        if status == 404:
            return
        check(status, body, f"remove {ref}")

    def list_images(self, label: str) -> list[ImageInfo]:
        """See :meth:`ImageStore.list_images`."""
        query = {"filters": json.dumps({"label": [label]})}
        status, body = self._run_api().call("GET", "/images/json", query=query)
        check(status, body, "list images")
        return [to_info(item) for item in json.loads(body)]

    def load_image(self, chunks: Iterable[bytes]) -> tuple[str, ...]:
        """See :meth:`ImageStore.load_image` (``docker load``, without the CLI)."""
        status, body = self._run_api().call(
            "POST", "/images/load", query={"quiet": "1"}, body=chunks, timeout=None
        )
        check(status, body, "load the image archive")
        # The answer is a JSON stream; a failure can come with status 200.
        loaded: list[str] = []
        for line in body.decode("utf-8", "replace").splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if not isinstance(item, dict):
                continue
            error = item.get("errorDetail") or item.get("error")
            if error:
                message = error.get("message") if isinstance(error, dict) else error
                raise EngineError(f"cannot load the image archive: {message}")
            text = str(item.get("stream") or "").strip()
            for prefix in ("Loaded image: ", "Loaded image ID: "):
                if text.startswith(prefix):
                    loaded.append(text[len(prefix) :].strip())
        return tuple(loaded)

    # -- builds: BuildKit through the CLI -------------------------------------------
    # -- registries: push and pull, the progress stream read to its end ------------------
    def _transfer(
        self, path: str, query: dict[str, str], auth: Mapping[str, str] | None, what: str
    ) -> list[dict[str, Any]]:
        # The engine wants the auth document base64url-encoded JSON; "{}" when there is none.
        import base64  # registry requests only: not on the run path

        encoded = base64.urlsafe_b64encode(json.dumps(dict(auth or {})).encode()).decode()
        status, body = self._run_api().call(
            "POST", path, query=query, headers={"X-Registry-Auth": encoded}, timeout=None
        )
        secrets = (auth or {}).get("password", "")
        if not 200 <= status < 300:
            from envbuild.engine.registry import scrub

            raise RegistryError(
                f"cannot {what}: the engine answered {status}: "
                f"{scrub(body.decode('utf-8', 'replace').strip()[:500], [secrets])}"
            )
        events = []
        for line in body.splitlines():
            if line.strip():
                try:
                    events.append(json.loads(line))
                except ValueError:
                    events.append({"status": line.decode("utf-8", "replace")})
        return events

    def push_image(self, ref: str, auth: Mapping[str, str] | None, log: Log) -> str:
        """See :meth:`ImageStore.push_image`: the engine answers 200 even when the push
        fails, so the whole stream is read for an ``error``."""
        from envbuild.engine.registry import read_stream

        repo, _, tag = ref.rpartition(":")
        what = f"push {ref}"
        events = self._transfer(f"/images/{quote(repo, safe='/:@')}/push", {"tag": tag}, auth, what)
        secrets = [(auth or {}).get("password", "")]
        return read_stream(events, what=what, secrets=secrets, log=log)

    def pull_image(self, ref: str, auth: Mapping[str, str] | None, log: Log) -> None:
        """See :meth:`ImageStore.pull_image`."""
        from envbuild.engine.registry import read_stream

        repo, sep, reference = ref.partition("@")
        if not sep:
            repo, _, reference = ref.rpartition(":")
        what = f"pull {ref}"
        events = self._transfer("/images/create", {"fromImage": repo, "tag": reference}, auth, what)
        read_stream(events, what=what, secrets=[(auth or {}).get("password", "")], log=log)

    def build(self, request: BuildRequest, log: Log) -> str:
        """See :meth:`Builder.build`. Raises :class:`BuildError` with the failing step."""
        from envbuild.engine import buildkit  # the CLI channel: only builds pay its import

        cache = buildkit.probe_cache(self.state) if self.state is not None else None
        return buildkit.build(self.docker_cli, request, log, probe_cache=cache)

    # -- containers -------------------------------------------------------------------
    def create_container(self, spec: ContainerSpec) -> str:
        """See :meth:`ContainerRuntime.create_container`."""
        query = {"name": spec.name} if spec.name else None
        status, body = self._run_api().call(
            "POST", "/containers/create", query=query, json_body=container_config(spec)
        )
        if status == 404:
            raise EngineError(f"cannot create the container: no such image {spec.image}")
        check(status, body, "create the container")
        return str(json.loads(body)["Id"])

    def put_archive(self, container_id: str, path: str, chunks: Iterable[bytes]) -> None:
        """See :meth:`ContainerRuntime.put_archive`."""
        status, body = self._run_api().call(
            "PUT",
            f"/containers/{container_id}/archive",
            query={"path": path},
            body=chunks,
            timeout=None,
        )
        check(status, body, f"copy files into the container at {path}")

    def attach_container(self, container_id: str) -> ContainerStream:
        """See :meth:`ContainerRuntime.attach_container`."""
        return self._run_api().attach(container_id)

    def start_container(self, container_id: str) -> None:
        """See :meth:`ContainerRuntime.start_container`."""
        status, body = self._run_api().call("POST", f"/containers/{container_id}/start")
        if status == 304:  # already started
            return
        check(status, body, "start the container")

    def wait_container(self, container_id: str) -> int:
        """See :meth:`ContainerRuntime.wait_container`."""
        status, body = self._run_api().call(
            "POST", f"/containers/{container_id}/wait", timeout=None
        )
        check(status, body, "wait for the container")
        data = json.loads(body)
        error = (data.get("Error") or {}).get("Message")
        if error:
            raise EngineError(f"waiting for the container failed: {error}")
        return int(data["StatusCode"])

    def stop_container(self, container_id: str, timeout: float) -> None:
        """See :meth:`ContainerRuntime.stop_container`."""
        seconds = max(0, round(timeout))
        status, body = self._run_api().call(
            "POST",
            f"/containers/{container_id}/stop",
            query={"t": str(seconds)},
            timeout=seconds + 60,
        )
        if status in (304, 404):  # already stopped, or already gone
            return
        check(status, body, "stop the container")

    def kill_container(self, container_id: str, signal: str = "SIGKILL") -> None:
        """See :meth:`ContainerRuntime.kill_container`."""
        status, body = self._run_api().call(
            "POST", f"/containers/{container_id}/kill", query={"signal": signal}
        )
        if status in (404, 409):  # gone, or not running any more
            return
        check(status, body, f"send {signal} to the container")

    def remove_container(self, container_id: str) -> None:
        """See :meth:`ContainerRuntime.remove_container`."""
        status, body = self._run_api().call(
            "DELETE", f"/containers/{container_id}", query={"force": "1", "v": "1"}
        )
        if status == 404:
            return
        if status == 409 and b"already in progress" in body:
            return
        check(status, body, f"remove the container {container_id[:12]}")

    def create_network(self, name: str, labels: Mapping[str, str]) -> str:
        """See :meth:`ContainerRuntime.create_network`."""
        body_json = {
            "Name": name,
            "Driver": "bridge",
            "CheckDuplicate": True,
            "Labels": dict(labels),
        }
        status, body = self._run_api().call("POST", "/networks/create", json_body=body_json)
        check(status, body, f"create the network {name}")
        return str(json.loads(body)["Id"])

    def remove_network(self, network_id: str) -> None:
        """See :meth:`ContainerRuntime.remove_network`."""
        status, body = self._run_api().call("DELETE", f"/networks/{network_id}")
        if status != 404:
            check(status, body, f"remove the network {network_id[:12]}")

    def list_labelled(self, label: str) -> Labelled:
        """See :meth:`ContainerRuntime.list_labelled`."""
        from envbuild.engine.protocols import Labelled

        api = self._run_api()
        query = {"all": "1", "filters": json.dumps({"label": [label]})}
        status, body = api.call("GET", "/containers/json", query=query)
        check(status, body, "list containers")
        containers = tuple(str(item["Id"]) for item in json.loads(body))
        query = {"filters": json.dumps({"label": [label]})}
        status, body = api.call("GET", "/networks", query=query)
        check(status, body, "list networks")
        networks = tuple(str(item["Id"]) for item in json.loads(body))
        query = {"filters": json.dumps({"label": [label]})}
        status, body = api.call("GET", "/volumes", query=query)
        check(status, body, "list volumes")
        volumes = tuple(str(item["Name"]) for item in json.loads(body).get("Volumes") or ())
        return Labelled(containers, networks, volumes)

    def ping(self) -> None:
        """Raise :class:`EngineError` unless the engine answers (one request)."""
        status, body = self._run_api().call("GET", "/_ping", timeout=10)
        check(status, body, "reach the engine")

    def info(self) -> EngineInfo:
        """The engine's version, data root and runtimes (``docker info``; one request)."""
        from envbuild.engine.protocols import EngineInfo

        status, body = self._run_api().call("GET", "/info", timeout=10)
        check(status, body, "read the engine's info")
        data = json.loads(body)
        return EngineInfo(
            version=str(data.get("ServerVersion") or ""),
            root_dir=str(data.get("DockerRootDir") or ""),
            runtimes=tuple(sorted(data.get("Runtimes") or {})),
            os=str(data.get("OperatingSystem") or ""),
        )

    def list_owned(self, key: str) -> list[Owned]:
        """See :meth:`ContainerRuntime.list_owned`."""
        from envbuild.engine.protocols import Owned

        api = self._run_api()
        filters = json.dumps({"label": [key]})
        status, body = api.call("GET", "/containers/json", query={"all": "1", "filters": filters})
        check(status, body, "list containers")
        found = [
            Owned(
                "container",
                str(item["Id"]),
                dict(item.get("Labels") or {}),
                item.get("State") == "running",
            )
            for item in json.loads(body)
        ]
        status, body = api.call("GET", "/networks", query={"filters": filters})
        check(status, body, "list networks")
        found += [
            Owned("network", str(item["Id"]), dict(item.get("Labels") or {}), False)
            for item in json.loads(body)
        ]
        return found

    def remove_labelled(self, label: str) -> Labelled:
        """See :meth:`ContainerRuntime.remove_labelled`."""
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
                check(status, body, f"remove the network {network_id[:12]}")
        for volume in found.volumes:
            status, body = api.call("DELETE", f"/volumes/{volume}", query={"force": "1"})
            if status != 404:
                check(status, body, f"remove the volume {volume}")
        return found


def _conforms(engine: DockerEngine) -> RunEngine:
    """Never called: mypy checks here that :class:`DockerEngine` is a whole :class:`RunEngine`."""
    return engine
