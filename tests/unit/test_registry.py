"""The registry module without a registry: settings, credentials, streams, auth flows.

The auth flows run against a small HTTP server in this process (a bearer-token
registry, which distribution's htpasswd mode is not); the real registries are
in tests/integration/test_registry.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from envbuild.build.result import BuildResult
from envbuild.engine.buildkit import BuildKitClient
from envbuild.engine.protocols import BuildRequest
from envbuild.engine.registry import (
    MANIFEST_TYPES,
    Credentials,
    Registry,
    RegistryClient,
    failed_cache_imports,
    find_credentials,
    is_loopback,
    parse_registry,
    read_stream,
    registry_from,
)
from envbuild.errors import RegistryError, UsageError
from envbuild.settings import load_settings

SECRET = "s3cret-canary"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5000", ("127.0.0.1:5000", "")),
        ("registry.example.com/team/ml", ("registry.example.com", "team/ml")),
        ("localhost:5000/a", ("localhost:5000", "a")),
        ("[::1]:5000", ("[::1]:5000", "")),
    ],
)
def test_parse_registry(text: str, expected: tuple[str, str]) -> None:
    assert parse_registry(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("http://127.0.0.1:5000", "without a scheme"),
        ("bad host:1", "is not a registry host"),
        ("host:99999", "is not a registry host"),
        ("host/Team", "is not a repository namespace"),
    ],
)
def test_bad_registry_names_are_usage_errors(text: str, says: str) -> None:
    with pytest.raises(UsageError) as error:
        parse_registry(text)
    assert says in error.value.message
    assert error.value.hint  # every one says what to write instead


@pytest.mark.parametrize(
    "text",
    [
        f"user:{SECRET}@127.0.0.1:5000",
        f"https://user:{SECRET}@registry.example.com/team",
        f"registry.example.com/user:{SECRET}@team",
    ],
)
def test_credentials_in_the_registry_name_are_refused_without_being_shown(text: str) -> None:
    with pytest.raises(UsageError) as error:
        parse_registry(text)
    assert "holds credentials" in error.value.message
    assert SECRET not in error.value.render()
    assert "docker login" in (error.value.hint or "")


def test_plain_http_only_for_loopback_unless_allowed() -> None:
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost") and is_loopback("[::1]:1")
    assert not is_loopback("10.0.0.1:5000") and not is_loopback("localhost.example.com")
    assert Registry("127.0.0.2:5000").scheme == "http"
    assert Registry("registry.example.com").scheme == "https"
    assert Registry("registry.example.com", insecure=True).scheme == "http"


def _docker_config(folder: Path, auths: object) -> dict[str, str]:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"auths": auths}))
    return {"DOCKER_CONFIG": str(folder)}


def test_credentials_from_the_environment_first(tmp_path: Path) -> None:
    token = base64.b64encode(b"cfg:from-config").decode()
    env = _docker_config(tmp_path / "d", {"reg:5000": {"auth": token}})
    found = find_credentials("reg:5000", env)
    assert found == Credentials("cfg", "from-config", source=str(tmp_path / "d" / "config.json"))
    env |= {"ENVBUILD_REGISTRY_USERNAME": "u", "ENVBUILD_REGISTRY_PASSWORD": SECRET}
    found = find_credentials("reg:5000", env)
    assert found is not None and (found.username, found.password) == ("u", SECRET)
    assert SECRET not in repr(found) and SECRET not in repr(Registry("reg:5000", credentials=found))
    assert find_credentials("other:5000", _docker_config(tmp_path / "e", {})) is None


def test_docker_config_keys_with_scheme_and_path(tmp_path: Path) -> None:
    token = base64.b64encode(b"u:p").decode()
    env = _docker_config(tmp_path / "d", {"https://reg.example.com/v1/": {"auth": token}})
    assert find_credentials("reg.example.com", env) == Credentials(
        "u", "p", source=env["DOCKER_CONFIG"] + "/config.json"
    )


def test_bad_credentials_settings_name_the_problem_not_the_secret(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="ENVBUILD_REGISTRY_PASSWORD is not set"):
        find_credentials("reg", {"ENVBUILD_REGISTRY_USERNAME": "u"})
    env = _docker_config(tmp_path / "d", {"reg": {"auth": "bm90LWJhc2U2NA"}})  # no ':' inside
    with pytest.raises(UsageError, match=r"auths\.reg\.auth: not base64 of USER:PASSWORD"):
        find_credentials("reg", env)
    with pytest.raises(UsageError, match="is not a file"):
        registry_from("reg", ca_file=tmp_path / "missing.pem", environ={})


def test_registry_settings_from_file_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('registry = "reg.example.com/team"\n')
    settings = load_settings({"ENVBUILD_CONFIG": str(config)})
    assert settings.registry == "reg.example.com/team"
    env = {"ENVBUILD_CONFIG": str(config), "ENVBUILD_REGISTRY": "127.0.0.1:5000"}
    assert load_settings(env).registry == "127.0.0.1:5000"


def test_a_push_stream_error_raises_without_the_password() -> None:
    events: list[dict[str, Any]] = [
        {"status": "The push refers to repository [r/x]"},
        {"errorDetail": {"message": f"denied: {SECRET}"}, "error": f"denied: {SECRET}"},
    ]
    with pytest.raises(RegistryError) as error:
        read_stream(events, what="push r/x:1", secrets=[SECRET], log=lambda line: None)
    assert SECRET not in error.value.render()
    assert "cannot push r/x:1: denied: ***" in error.value.message
    assert error.value.exit_code == 6


def test_a_push_stream_reports_its_digest() -> None:
    digest = "sha256:" + "a" * 64
    events: list[dict[str, Any]] = [
        {"status": "Pushing", "progressDetail": {"current": 1, "total": 9}, "id": "abc"},
        {"status": "Pushed", "progressDetail": {}, "id": "abc"},
        {"status": f"1: digest: {digest} size: 529"},
        {"progressDetail": {}, "aux": {"Tag": "1", "Digest": digest, "Size": 529}},
    ]
    lines: list[str] = []
    assert read_stream(events, what="push", secrets=[], log=lines.append) == digest
    assert lines == ["abc: Pushed", f"1: digest: {digest} size: 529"]  # no progress frames


# The log of a real `docker build --cache-from` (Docker 20.10's BuildKit) whose
# cache image was not in the registry: the build exited 0.
FAILED_IMPORT_LOG = """\
#3 [internal] load metadata for docker.io/library/debian:bookworm-slim
#3 DONE 0.0s
#6 importing cache manifest from 127.0.0.1:59373/cf/x:0
#6 sha256:8a3dfcb5a287bd74c46fb7c1b1d204b5604795b01c73351c3e3233eeb17ddfc8
#6 ERROR: 127.0.0.1:59373/cf/x:0: not found
#5 [2/2] RUN echo hi > /x
#5 DONE 0.7s
#8 importing cache manifest from 127.0.0.1:59373/cf/x:1
#8 DONE 0.0s
""".splitlines()


def test_failed_cache_imports_are_found_in_the_log() -> None:
    assert failed_cache_imports(FAILED_IMPORT_LOG) == {
        "127.0.0.1:59373/cf/x:0": "127.0.0.1:59373/cf/x:0: not found"
    }
    assert failed_cache_imports(FAILED_IMPORT_LOG[-2:]) == {}


def test_a_build_request_carries_its_cache_source(tmp_path: Path) -> None:
    request = BuildRequest(
        tmp_path, cache_from=("127.0.0.1:5000/x:1",), docker_config=tmp_path / "cfg"
    )
    argv, env = BuildKitClient("docker", "classic").command(request, tmp_path / "iid")
    assert argv[argv.index("--cache-from") + 1] == "127.0.0.1:5000/x:1"
    assert env["DOCKER_CONFIG"] == str(tmp_path / "cfg")


def test_the_json_says_which_tier_answered() -> None:
    base = BuildResult("p/x:1", "h", True, "sha256:1", 0.1)
    assert base.to_json()["tier"] == "local"
    assert BuildResult("p/x:1", "h", False, "sha256:1", 0.1).to_json()["tier"] == "built"
    pulled = BuildResult("p/x:1", "h", True, "sha256:1", 0.1, tier="registry", digest="sha256:d")
    assert (pulled.to_json()["tier"], pulled.to_json()["digest"]) == ("registry", "sha256:d")


# --------------------------------------------------------------------------
# A bearer-token registry in this process
# --------------------------------------------------------------------------

MANIFEST = b'{"schemaVersion": 2}'


class _TokenRegistry(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []  # noqa: RUF012 - the test reads what arrived
    send_digest = True

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        self.seen.append({"path": self.path, **dict(self.headers)})
        if self.path.startswith("/token"):
            good = "Basic " + base64.b64encode(f"u:{SECRET}".encode()).decode()
            if self.headers.get("Authorization") != good:
                self._answer(401, {})
                return
            self._answer(200, {"Content-Type": "application/json"}, b'{"token": "tok"}')
            return
        if self.headers.get("Authorization") != "Bearer tok":
            host = self.headers["Host"]
            challenge = f'Bearer realm="http://{host}/token",service="reg"'
            if self.path != "/v2/":  # the API root's challenge names no scope
                challenge += ',scope="repository:ns/x:pull"'
            self._answer(401, {"WWW-Authenticate": challenge})
            return
        if self.path == "/v2/":
            self._answer(200, {})
            return
        if not self.path.endswith("/manifests/1"):
            self._answer(404, {})
            return
        headers = {"Content-Type": MANIFEST_TYPES[0]}
        if self.send_digest:
            headers["Docker-Content-Digest"] = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
        self._answer(200, headers, MANIFEST)

    do_HEAD = do_GET


@pytest.fixture
def token_registry() -> Iterator[str]:
    _TokenRegistry.seen = []
    _TokenRegistry.send_digest = True
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_bearer_token_flow_and_accept_header(token_registry: str) -> None:
    client = RegistryClient(Registry(token_registry, "ns", Credentials("u", SECRET)))
    expected = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
    assert client.manifest_digest("x", "1") == expected
    assert client.manifest_digest("x", "2") is None  # the token is reused: no new challenge
    heads = [s for s in _TokenRegistry.seen if "/manifests/" in s["path"]]
    assert all(set(MANIFEST_TYPES) <= set(s["Accept"].split(", ")) for s in heads)
    assert [s["path"] for s in _TokenRegistry.seen].count(
        "/token?service=reg&scope=repository%3Ans%2Fx%3Apull"
    ) == 1


def test_a_registry_without_a_digest_header_is_hashed(token_registry: str) -> None:
    _TokenRegistry.send_digest = False
    client = RegistryClient(Registry(token_registry, "ns", Credentials("u", SECRET)))
    assert client.manifest_digest("x", "1") == "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


def test_refused_and_missing_credentials(token_registry: str) -> None:
    wrong = RegistryClient(Registry(token_registry, "ns", Credentials("u", "wrong")))
    with pytest.raises(RegistryError, match="refused the credentials of user 'u'"):
        wrong.manifest_digest("x", "1")
    none = RegistryClient(Registry(token_registry, "ns"))
    with pytest.raises(RegistryError, match="asks for credentials, and none are set"):
        none.manifest_digest("x", "1")


def test_an_unreachable_registry_is_a_registry_error(token_registry: str) -> None:
    from tests.integration.registry import free_port

    client = RegistryClient(Registry(f"127.0.0.1:{free_port()}", "ns", Credentials("u", SECRET)))
    with pytest.raises(RegistryError) as error:
        client.manifest_digest("x", "1")
    assert "cannot reach the registry" in error.value.message
    assert SECRET not in error.value.render()


def test_check_access_takes_a_token_without_a_scope(token_registry: str) -> None:
    RegistryClient(Registry(token_registry, "ns", Credentials("u", SECRET))).check_access()
    assert "/token?service=reg" in [s["path"] for s in _TokenRegistry.seen]  # no empty scope=
    wrong = RegistryClient(Registry(token_registry, "ns", Credentials("u", "wrong")))
    with pytest.raises(RegistryError, match="refused the credentials of user 'u'"):
        wrong.check_access()


def test_manifest_heads_in_one_batch_answer_as_one_by_one(token_registry: str) -> None:
    expected = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
    client = RegistryClient(Registry(token_registry, "ns", Credentials("u", SECRET)))
    # The first batch meets the challenge: each HEAD is asked again, with the token.
    wanted = [("x", "1"), ("x", "2"), ("x", "1")]
    assert client.manifest_digests(wanted) == [expected, None, expected]
    _TokenRegistry.seen = []
    # The token known: one HEAD each, all on plain sockets, no challenge again.
    assert client.manifest_digests(wanted) == [expected, None, expected]
    assert sorted(s["path"] for s in _TokenRegistry.seen) == sorted(
        f"/v2/ns/x/manifests/{tag}" for _, tag in wanted
    )
    heads = _TokenRegistry.seen
    assert all(h["Authorization"] == "Bearer tok" for h in heads)
    assert all(set(MANIFEST_TYPES) <= set(h["Accept"].split(", ")) for h in heads)


def test_a_batch_without_a_digest_header_is_hashed_and_errors_are_raised(
    token_registry: str,
) -> None:
    _TokenRegistry.send_digest = False
    client = RegistryClient(Registry(token_registry, "ns", Credentials("u", SECRET)))
    expected = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
    assert client.manifest_digests([("x", "1"), ("x", "3")]) == [expected, None]
    wrong = RegistryClient(Registry(token_registry, "ns", Credentials("u", "wrong")))
    with pytest.raises(RegistryError, match="refused the credentials of user 'u'"):
        wrong.manifest_digests([("x", "1")])
    from tests.integration.registry import free_port

    down = RegistryClient(Registry(f"127.0.0.1:{free_port()}", "ns", Credentials("u", SECRET)))
    with pytest.raises(RegistryError) as error:
        down.manifest_digests([("x", "1"), ("x", "2")])
    assert "cannot reach the registry" in error.value.message
    assert SECRET not in error.value.render()


DIGEST = "sha256:" + "ab" * 32


class _RawRegistry:
    """A loopback server answering each connection's request with fixed bytes (``None``:
    reads the request and never answers), for the plain-socket HEADs of a batch."""

    def __init__(self, answer: bytes | None) -> None:
        import socket

        self.answer = answer
        self.server = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.held: list[Any] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            if self.answer is None:
                self.held.append(conn)  # accepted, never answered
                continue
            conn.sendall(self.answer)
            conn.close()

    def close(self) -> None:
        self.server.close()
        for conn in self.held:
            conn.close()


ANSWERS = {
    "LF line ends": (f"HTTP/1.1 200 OK\nDocker-Content-Digest: {DIGEST}\n\n".encode(), DIGEST),
    "header case and spaces": (
        f"HTTP/1.0 200 OK\r\ndocker-content-DIGEST:   {DIGEST}\r\n\r\n".encode(),
        DIGEST,
    ),
    "a 404": (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", None),
    # No digest: the manifest is fetched (GET, here empty) and hashed.
    "a status line only": (b"HTTP/1.1 200\r\n\r\n", "sha256:" + hashlib.sha256(b"").hexdigest()),
    "a redirect": (b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /elsewhere\r\n\r\n", "raises"),
    "not HTTP": (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "raises"),
    "an interim 100": (
        f"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nDocker-Content-Digest: {DIGEST}"
        "\r\n\r\n".encode(),
        DIGEST,
    ),
    "a closed connection": (b"", "raises"),
}


@pytest.mark.parametrize("case", list(ANSWERS))
def test_a_batch_of_heads_answers_what_one_head_answers(case: str) -> None:
    """Whatever a plain-http registry sends, the batch of HEADs on plain sockets
    answers (or raises) as :meth:`RegistryClient.manifest_digest` does on http.client."""
    answer, expected = ANSWERS[case]
    server = _RawRegistry(answer)
    try:
        client = RegistryClient(Registry(server.host, "ns"), timeout=5)
        one: object
        try:
            one = client.manifest_digest("x", "1")
        except RegistryError:
            one = "raises"
        assert one == expected
        batch: object
        try:
            batch = client.manifest_digests([("x", "1"), ("x", "2")])
        except RegistryError:
            batch = "raises"
        assert batch == ("raises" if one == "raises" else [one, one])
    finally:
        server.close()


def test_a_registry_that_never_answers_a_batch_times_out() -> None:
    import time

    server = _RawRegistry(None)
    try:
        client = RegistryClient(Registry(server.host, "ns"), timeout=0.5)
        started = time.monotonic()
        with pytest.raises(RegistryError, match="cannot reach the registry"):
            client.manifest_digests([("x", str(n)) for n in range(8)])
        assert time.monotonic() - started < 0.5 * 1.9  # one timeout: not asked again
    finally:
        server.close()
