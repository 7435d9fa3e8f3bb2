"""What envbuild asks of a container engine: the data it exchanges and one protocol family.

Three small protocols, each what one kind of caller needs, and their unions:

* :class:`ImageStore`: inspect, tag, remove, list by label, load an image
  archive, push to and pull from a registry;
* :class:`Builder`: one BuildKit build of a materialised context;
* :class:`ContainerRuntime`: the steps of a container's life (create, copy in,
  attach, start, wait, stop, kill, remove) and the labelled sweep.

:class:`Engine` is an image store that builds (the build stage), and
:class:`RunEngine` adds the container runtime (the run layer, catalog test,
package lists, base checks). The real engine is
:class:`envbuild.engine.docker.DockerEngine`; containers that only need to run
to their end go through :func:`envbuild.engine.runner.run_to_completion`,
never through the steps one by one.

This module is pure data and typing: importing it touches no socket.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from envbuild.engine.records import STDERR as STDERR
from envbuild.engine.records import STDOUT as STDOUT
from envbuild.engine.records import ImageInfo as ImageInfo
from envbuild.log import Log


@dataclass(frozen=True)
class EngineInfo:
    """What the engine says of itself (``docker info``): version, data root, runtimes."""

    version: str
    root_dir: str  # DockerRootDir: where images and containers are kept, on the engine's host
    runtimes: tuple[str, ...] = ()  # e.g. ("runc", "nvidia")
    os: str = ""


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
    # Images whose inline cache BuildKit may reuse (a registry's earlier image), and
    # the docker client config holding the credentials to fetch them with.
    cache_from: tuple[str, ...] = ()
    docker_config: Path | None = None


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
    """Everything one container is created with.

    ``argv`` is the command as a list (never a shell string); ``entrypoint``
    replaces the image's own when given. ``env`` holds ``(name, value)`` pairs
    handed to the engine as they are. ``network`` is a network mode
    (``"none"`` cuts the container off); ``None`` is the engine's default.
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
    entrypoint: tuple[str, ...] | None = None
    network: str | None = None


@dataclass(frozen=True)
class Owned:
    """A container or network that carries a label, with all its labels."""

    kind: str  # "container" | "network"
    id: str
    labels: Mapping[str, str]
    running: bool = False


@dataclass(frozen=True)
class Labelled:
    """The engine resources that carry one label."""

    containers: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.containers or self.networks or self.volumes)


def label_matches(labels: Mapping[str, str], label_filter: str) -> bool:
    """Whether ``labels`` pass the engine's label filter: ``key`` (present) or ``key=value``.

    The engine's own rule, for code that filters what it already holds (and
    for fakes, which must filter as the engine does).
    """
    key, sep, value = label_filter.partition("=")
    if not sep:
        return key in labels
    return labels.get(key) == value


class ContainerStream(Protocol):
    """The demultiplexed output of a container: ``(STDOUT|STDERR, bytes)`` frames."""

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """Frames in arrival order, until the container's output ends."""

    def close(self) -> None:
        """Drop the connection (safe to call twice)."""


class ImageStore(Protocol):
    """The engine's images: inspect, tag, remove, list, load."""

    def inspect_image(self, ref: str) -> ImageInfo | None:
        """The image ``ref`` names, or ``None`` when the engine has no such image."""

    def tag(self, image_id: str, ref: str) -> None:
        """Point ``ref`` (``repo:tag``) at ``image_id``."""

    def remove_image(self, ref: str) -> None:
        """Remove the tag or image ``ref`` (missing is not an error)."""

    def list_images(self, label: str) -> list[ImageInfo]:
        """Every image whose labels pass ``label`` (``key`` or ``key=value``)."""

    def load_image(self, chunks: Iterable[bytes]) -> tuple[str, ...]:
        """Load a ``docker save`` archive streamed as ``chunks``; the references it loaded."""

    def push_image(self, ref: str, auth: Mapping[str, str] | None, log: Log) -> str:
        """Push ``repo:tag`` (a tag in this engine) to its registry; the digest the push
        reported. ``auth`` is the engine's registry auth document (username, password,
        serveraddress). A failed push raises :class:`envbuild.errors.RegistryError`."""

    def pull_image(self, ref: str, auth: Mapping[str, str] | None, log: Log) -> None:
        """Pull ``ref`` (``repo@sha256:...`` or ``repo:tag``) from its registry; a failed
        pull raises :class:`envbuild.errors.RegistryError`."""


class Builder(Protocol):
    """BuildKit builds of materialised contexts."""

    def build(self, request: BuildRequest, log: Log) -> str:
        """Build ``request`` with BuildKit, streaming its log; return the image ID."""


class Engine(ImageStore, Builder, Protocol):
    """What the build stage asks of a container engine: images and builds."""


class ContainerRuntime(Protocol):
    """The steps of a container's life, one engine request each.

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

    def create_network(self, name: str, labels: Mapping[str, str]) -> str:
        """Create a bridge network ``name`` with ``labels`` (its containers find each other
        by container name); return its ID. :meth:`remove_labelled` removes it."""

    def remove_network(self, network_id: str) -> None:
        """Remove a network that has no container left (gone is not an error)."""

    def list_labelled(self, label: str) -> Labelled:
        """Containers, networks and volumes carrying ``label`` (``key`` or ``key=value``)."""

    def remove_labelled(self, label: str) -> Labelled:
        """Remove everything :meth:`list_labelled` finds; return what was found."""

    def list_owned(self, key: str) -> list[Owned]:
        """Containers and networks carrying the label ``key``, with all their labels."""


class ContainerEngine(ImageStore, ContainerRuntime, Protocol):
    """Images and containers, no builds: what checking and reading images asks."""


class RunEngine(Engine, ContainerRuntime, Protocol):
    """The whole engine: images, builds and containers (the run layer)."""


__all__ = [
    "STDERR",
    "STDOUT",
    "BindMount",
    "BuildRequest",
    "Builder",
    "ContainerEngine",
    "ContainerRuntime",
    "ContainerSpec",
    "ContainerStream",
    "Engine",
    "EngineInfo",
    "GpuRequest",
    "ImageInfo",
    "ImageStore",
    "Labelled",
    "Owned",
    "RunEngine",
    "label_matches",
]
