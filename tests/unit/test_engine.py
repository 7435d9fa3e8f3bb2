"""Pure parts of the engine layer: BuildKit detection and log parsing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from envbuild.engine.buildkit import BuildKitClient, find_buildkit, parse_failure
from envbuild.engine.protocols import BuildRequest
from envbuild.errors import ToolMissingError

FAILED_LOG = """\
#1 [internal] load build definition from Dockerfile
#1 DONE 0.0s
#5 [2/4] RUN echo one
#5 0.241 one
#5 DONE 0.3s
#6 [3/4] RUN echo boom && exit 3
#6 0.201 boom
#6 ERROR: executor failed running [/bin/sh -c echo boom && exit 3]: exit code: 3
------
 > [3/4] RUN echo boom && exit 3:
#6 0.201 boom
------
failed to solve: executor failed running [/bin/sh -c echo boom && exit 3]: exit code: 3
""".splitlines()


def test_parse_failure_names_step_code_and_tail() -> None:
    failure = parse_failure(FAILED_LOG)
    assert failure.step == "[3/4] RUN echo boom && exit 3"
    assert failure.exit_code == 3
    assert "boom" in failure.tail


def test_parse_failure_newer_buildkit_wording() -> None:
    log = [
        "#7 [2/2] RUN false",
        '#7 ERROR: process "/bin/sh -c false" did not complete successfully: exit code: 1',
    ]
    failure = parse_failure(log)
    assert failure.step == "[2/2] RUN false" and failure.exit_code == 1


def test_parse_failure_without_steps() -> None:
    failure = parse_failure(["error: something else"])
    assert failure.step is None and failure.tail == ("error: something else",)


def _fake_client(tmp_path: Path, version: str, buildx: bool) -> str:
    script = tmp_path / f"docker-{version}"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = buildx ]; then exit {0 if buildx else 1}; fi\n'
        f'echo "Docker version {version}, build abc"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_buildx_preferred(tmp_path: Path) -> None:
    client = find_buildkit(_fake_client(tmp_path, "28.2.2", buildx=True))
    assert client.mode == "buildx"


def test_old_client_uses_embedded_buildkit(tmp_path: Path) -> None:
    client = find_buildkit(_fake_client(tmp_path, "20.10.24+dfsg1", buildx=False))
    assert client.mode == "classic"


def test_new_client_without_buildx_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ToolMissingError) as info:
        find_buildkit(_fake_client(tmp_path, "28.2.2", buildx=False))
    text = info.value.render()
    assert "buildx plugin is missing" in text and "ENVBUILD_DOCKER" in text


def test_missing_client(tmp_path: Path) -> None:
    with pytest.raises(ToolMissingError) as info:
        find_buildkit(str(tmp_path / "nope"))
    assert "was not found" in info.value.render()


def test_command_never_pulls_and_passes_secrets(tmp_path: Path) -> None:
    request = BuildRequest(tmp_path, labels={"a": "b"}, secrets={"envbuild-ca": tmp_path / "ca"})
    argv, env = BuildKitClient("/usr/bin/docker", "classic").command(request, tmp_path / "iid")
    assert "--pull" not in argv
    assert env["DOCKER_BUILDKIT"] == "1"
    assert f"id=envbuild-ca,src={tmp_path / 'ca'}" in argv
    argv, env = BuildKitClient("/x/docker", "buildx").command(request, tmp_path / "iid")
    assert argv[1:4] == ["buildx", "build", "--load"]
    assert env.get("DOCKER_BUILDKIT") == os.environ.get("DOCKER_BUILDKIT")


def test_the_probe_is_remembered_where_the_caller_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state folder comes from the caller (the engine's settings), never read here."""
    import envbuild.settings
    from envbuild.engine import buildkit
    from envbuild.engine.docker import DockerEngine

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("load_settings() was called behind the caller")

    monkeypatch.setattr(envbuild.settings, "load_settings", forbidden)
    client = _fake_client(tmp_path, "20.10.24+dfsg1", buildx=False)
    cache = buildkit.probe_cache(tmp_path / "state")
    assert find_buildkit(client, cache).mode == "classic"
    assert client in cache.read_text()  # remembered under the state folder given
    assert find_buildkit(client).mode == "classic"  # no state folder: probed, not remembered
    # A build remembers the probe under the engine's state folder.
    seen: list[Path | None] = []

    def build(cli: str, request: BuildRequest, log: object, probe_cache: Path | None) -> str:
        seen.append(probe_cache)
        return "sha256:1"

    monkeypatch.setattr(buildkit, "build", build)
    engine = DockerEngine(client, state=tmp_path / "mine")
    engine.build(BuildRequest(tmp_path), lambda line: None)
    assert seen == [buildkit.probe_cache(tmp_path / "mine")]


def test_attach_asks_for_the_live_streams_only(tmp_path: Path) -> None:
    """A replayed log on top of the live streams would repeat what the container
    wrote between the two: the attach request must never ask for ``logs``."""
    import socket
    import threading

    from envbuild.engine.api import RawApi

    path = str(tmp_path / "engine.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    seen: list[bytes] = []

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            seen.append(request)
            # One stdout frame, then the engine hangs up (the container ended).
            conn.sendall(b"HTTP/1.1 101 UPGRADED\r\n\r\n" + b"\x01\0\0\0\0\0\0\x03hi\n")

    thread = threading.Thread(target=answer)
    thread.start()
    try:
        stream = RawApi(path).attach("abc")
        frames = list(stream)
        stream.close()
    finally:
        thread.join(10)
        server.close()
    line = seen[0].split(b"\r\n", 1)[0].decode()
    assert line.startswith("POST /") and "/containers/abc/attach?" in line
    assert "stream=1" in line and "stdout=1" in line and "stderr=1" in line
    assert "logs" not in line
    assert frames == [(1, b"hi\n")]
