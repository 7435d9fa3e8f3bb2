"""A fake run engine for unit tests: containers are records, output is scripted."""

from __future__ import annotations

import io
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from envbuild.engine.protocols import (
    STDOUT,
    ContainerSpec,
    ImageInfo,
    Labelled,
    Owned,
    RunEngine,
    label_matches,
)
from envbuild.errors import EngineError
from tests.fakes import FakeEngine

IMAGE_ID = "sha256:" + "ab" * 32


class FakeStream:
    """Scripted frames; optionally stays open until the container is stopped or killed."""

    def __init__(self, engine: FakeRunEngine, frames: list[tuple[int, bytes]]) -> None:
        self.engine = engine
        self.frames = frames
        self.closed = False

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        for index, frame in enumerate(self.frames):
            yield frame
            if self.engine.after_frame is not None:
                self.engine.after_frame(index)
        if self.engine.block:
            deadline = time.monotonic() + 10
            while not (self.engine.stopped or self.engine.killed):
                if time.monotonic() > deadline:
                    raise AssertionError("the fake container was never stopped")
                time.sleep(0.005)

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeRunEngine(FakeEngine, RunEngine):
    """Records every container call; ``fail`` names a method that raises EngineError.

    Every container prints ``frames`` and exits with ``exit_code``, unless
    ``answer`` is set: it gives the frames of each container from its spec,
    ``None`` for a command the image does not have (start fails as the
    engine's does).
    """

    frames: list[tuple[int, bytes]] = field(default_factory=list)
    exit_code: int = 0
    block: bool = False  # keep the stream open until stop/kill
    fail: str | None = None
    after_frame: Callable[[int], None] | None = None
    answer: Callable[[ContainerSpec], list[tuple[int, bytes]] | None] | None = None
    specs: dict[str, ContainerSpec] = field(default_factory=dict)
    live: set[str] = field(default_factory=set)
    archives: list[tuple[str, bytes]] = field(default_factory=list)
    ops: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)
    streams: list[FakeStream] = field(default_factory=list)
    networks: dict[str, dict[str, str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def with_image(self, ref: str = "example:1") -> FakeRunEngine:
        self.images[ref] = ImageInfo(id=IMAGE_ID)
        return self

    def _op(self, name: str) -> None:
        with self._lock:
            self.ops.append(name)
        if self.fail == name:
            raise EngineError(f"fake engine: {name} failed")

    def create_container(self, spec: ContainerSpec) -> str:
        self._op("create")
        cid = f"c{len(self.specs) + 1:063d}"
        self.specs[cid] = spec
        self.live.add(cid)
        return cid

    def put_archive(self, container_id: str, path: str, chunks: Iterable[bytes]) -> None:
        self._op("put_archive")
        self.archives.append((path, b"".join(chunks)))

    def attach_container(self, container_id: str) -> FakeStream:
        self._op("attach")
        frames = self.frames
        if self.answer is not None:
            frames = self.answer(self.specs[container_id]) or []
        stream = FakeStream(self, frames)
        self.streams.append(stream)
        return stream

    def start_container(self, container_id: str) -> None:
        self._op("start")
        spec = self.specs[container_id]
        if self.answer is not None and self.answer(spec) is None:
            raise EngineError(
                f'cannot start the container: the engine answered 400: exec: "{spec.argv[0]}": '
                "executable file not found in $PATH"
            )

    def wait_container(self, container_id: str) -> int:
        self._op("wait")
        if self.killed:
            return 137
        if self.stopped:
            return 143
        return self.exit_code

    def stop_container(self, container_id: str, timeout: float) -> None:
        self._op("stop")
        self.stopped.append(container_id)

    def kill_container(self, container_id: str, signal: str = "SIGKILL") -> None:
        self._op("kill")
        self.killed.append(container_id)

    def remove_container(self, container_id: str) -> None:
        self._op("remove")
        self.live.discard(container_id)

    def create_network(self, name: str, labels: Mapping[str, str]) -> str:
        self._op("network")
        self.networks[name] = dict(labels)
        return f"net-{name}"

    def remove_network(self, network_id: str) -> None:
        self._op("remove_network")
        for name in [n for n in self.networks if f"net-{n}" == network_id]:
            del self.networks[name]

    def list_labelled(self, label: str) -> Labelled:
        return Labelled(
            containers=tuple(
                cid for cid in sorted(self.live) if label_matches(self.specs[cid].labels, label)
            )
        )

    def list_owned(self, key: str) -> list[Owned]:
        # Not an op: every run lists, and the tests' op sequences are about the run's own.
        return [
            Owned("container", cid, dict(self.specs[cid].labels), True)
            for cid in sorted(self.live)
            if key in self.specs[cid].labels
        ]

    def remove_labelled(self, label: str) -> Labelled:
        self._op("remove_labelled")
        found = self.list_labelled(label)
        for cid in found.containers:
            self.live.discard(cid)
        return found


def tar_members(data: bytes) -> dict[str, tarfile.TarInfo]:
    """The members of a tar stream, by name."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|*") as tar:
        return {member.name: member for member in tar}


def out(text: str) -> tuple[int, bytes]:
    """A stdout frame."""
    return (STDOUT, text.encode())


def _conforms() -> RunEngine:
    """Never called: mypy checks here that the fake is a complete :class:`RunEngine`."""
    return FakeRunEngine()
