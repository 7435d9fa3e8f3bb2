"""Image registries: where they are, who may use them, and every word said to them.

Two channels, as for the engine:

* **The registry's own API** (distribution's ``/v2/``), spoken here with the
  standard library: a manifest ``HEAD`` answers "does the registry hold this
  tag, and as which digest?" in one request. It asks for the Docker v2 and OCI
  manifest and index types (without an ``Accept``, distribution answers a
  schema1 manifest, with another digest), and answers an auth challenge with
  basic auth (distribution's htpasswd) or a bearer token fetched from the
  challenge's realm.
* **Push and pull** go through the engine
  (:meth:`envbuild.engine.protocols.ImageStore.push_image`), whose progress
  stream is read to its end by :func:`read_stream`: the engine answers 200
  when a push fails, and the stream says ``"error"``.

Credentials never leave this module in text: :class:`Credentials` hides the
password from ``repr``, and every message built from a registry's or engine's
answer is scrubbed of it (:func:`scrub`) before it reaches an exception.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode, urlsplit

from envbuild.errors import RegistryError, UsageError
from envbuild.log import Log

if TYPE_CHECKING:  # http.client, ssl and hashlib are imported where a request needs them:
    import http.client  # the console script's ci fast path asks HEADs on plain sockets

USERNAME_VAR = "ENVBUILD_REGISTRY_USERNAME"
PASSWORD_VAR = "ENVBUILD_REGISTRY_PASSWORD"  # noqa: S105 - the variable's name

# What a manifest HEAD accepts: single-platform manifests and indexes, Docker and OCI.
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)

_HOST_RE = re.compile(
    r"(?P<host>(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:]+\])(?::(?P<port>[0-9]{1,5}))?"
)
_NAMESPACE_RE = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


class _Frozen:
    """An immutable value: equality, hash, and a ``repr`` without the fields named in
    ``_HIDDEN`` (a frozen dataclass, without importing :mod:`dataclasses`, which costs
    more than the console script's fast paths that read the registry settings)."""

    __slots__: tuple[str, ...] = ()
    _HIDDEN: frozenset[str] = frozenset()

    def _set(self, **values: object) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={getattr(self, name)!r}" for name in self.__slots__ if name not in self._HIDDEN
        )
        return f"{type(self).__name__}({shown})"


class Credentials(_Frozen):
    """A registry user and password; the password is never shown by ``repr``."""

    __slots__ = ("password", "source", "username")
    _HIDDEN = frozenset({"password"})
    username: str
    password: str
    source: str  # where they came from, for messages: "ENVBUILD_REGISTRY_*", a file

    def __init__(self, username: str, password: str, source: str = "") -> None:
        self._set(username=username, password=password, source=source)

    def auth_config(self, host: str) -> dict[str, str]:
        """The engine's ``X-Registry-Auth`` document for ``host``."""
        return {"username": self.username, "password": self.password, "serveraddress": host}


class Registry(_Frozen):
    """A registry and the namespace in it that envbuild's images go to."""

    __slots__ = ("ca_file", "credentials", "host", "insecure", "namespace")
    _HIDDEN = frozenset({"credentials"})
    host: str  # "host[:port]"
    namespace: str  # "" or "team/sub"
    credentials: Credentials | None
    ca_file: Path | None
    insecure: bool  # plain http allowed for a host that is not loopback

    def __init__(
        self,
        host: str,
        namespace: str = "",
        credentials: Credentials | None = None,
        ca_file: Path | None = None,
        insecure: bool = False,
    ) -> None:
        self._set(
            host=host,
            namespace=namespace,
            credentials=credentials,
            ca_file=ca_file,
            insecure=insecure,
        )

    @property
    def prefix(self) -> str:
        """``host[:port][/namespace]``: the repository prefix of images in this registry."""
        return f"{self.host}/{self.namespace}" if self.namespace else self.host

    @property
    def loopback(self) -> bool:
        """Whether the host is this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
        return is_loopback(self.host)

    @property
    def scheme(self) -> str:
        """``http`` for loopback or an explicitly insecure registry, else ``https``."""
        return "http" if self.loopback or self.insecure else "https"

    def path(self, name: str) -> str:
        """The repository of image ``name`` inside the registry (namespace included)."""
        return f"{self.namespace}/{name}" if self.namespace else name

    def secrets(self) -> tuple[str, ...]:
        """The strings no message may contain (the password, and its basic-auth forms)."""
        if self.credentials is None or not self.credentials.password:
            return ()
        pair = f"{self.credentials.username}:{self.credentials.password}"
        return (self.credentials.password, base64.b64encode(pair.encode()).decode())


def is_loopback(host: str) -> bool:
    """Whether ``host[:port]`` names this machine."""
    if host.startswith("["):
        name = host[1 : host.index("]")] if "]" in host else host[1:]
    else:
        name = host.split(":", 1)[0]
    if name == "localhost":
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def image_path(ref: str) -> tuple[str, str]:
    """``(path, tag)`` that the image ``ref`` gets in a registry of envbuild's: the
    repository without its registry host or Docker Hub's ``library/``, and its tag.

    ``debian:bookworm-slim`` -> ``("debian", "bookworm-slim")``;
    ``ghcr.io/org/img`` -> ``("org/img", "latest")``.
    """
    name = ref.split("@", 1)[0]
    repository, tag = name, "latest"
    if ":" in name.rsplit("/", 1)[-1]:
        repository, tag = name.rsplit(":", 1)
    parts = repository.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if len(parts) > 1 and parts[0] == "library":
        parts = parts[1:]
    return "/".join(parts), tag


# --------------------------------------------------------------------------
# Settings: the registry, its credentials, its CA
# --------------------------------------------------------------------------


def parse_registry(text: str, *, source: str = "--registry") -> tuple[str, str]:
    """``(host[:port], namespace)`` from ``HOST[:PORT][/NAMESPACE]``; a clear error otherwise."""
    value = text.strip()
    if "@" in value:  # user:password@host: the text holds a secret, so it is not shown
        raise UsageError(
            f"{source}: the registry's name holds credentials (user@ or user:password@; "
            "not shown here)",
            hint=f"write HOST[:PORT][/NAMESPACE] alone; give the credentials with "
            f"`docker login HOST` or {USERNAME_VAR}/{PASSWORD_VAR}",
        )
    if "://" in value:
        raise UsageError(
            f"{source}: {text!r}: name the registry without a scheme",
            hint="write HOST[:PORT][/NAMESPACE], e.g. registry.example.com/team or "
            "127.0.0.1:5000; plain http for a host that is not loopback needs "
            "--registry-insecure",
        )
    host, _, namespace = value.partition("/")
    match = _HOST_RE.fullmatch(host)
    port = match.group("port") if match else None
    if match is None or (port is not None and not 0 < int(port) < 65536):
        raise UsageError(
            f"{source}: {text!r}: {host!r} is not a registry host[:port]",
            hint="write HOST[:PORT][/NAMESPACE], e.g. registry.example.com/team or 127.0.0.1:5000",
        )
    if namespace and not _NAMESPACE_RE.fullmatch(namespace):
        raise UsageError(
            f"{source}: {text!r}: {namespace!r} is not a repository namespace",
            hint="use lowercase letters, digits, '.', '_', '-' and '/', e.g. team/ml",
        )
    return host, namespace


def _docker_config_file(environ: Mapping[str, str]) -> Path:
    folder = environ.get("DOCKER_CONFIG")
    return Path(folder) / "config.json" if folder else Path.home() / ".docker" / "config.json"


def _auth_key_host(key: str) -> str:
    """The ``host[:port]`` of a key of ``auths`` (``https://host/v1/``, ``host``, ...)."""
    if "://" in key:
        return urlsplit(key).netloc
    return key.split("/", 1)[0]


def find_credentials(host: str, environ: Mapping[str, str] | None = None) -> Credentials | None:
    """The credentials for ``host``: ``ENVBUILD_REGISTRY_USERNAME``/``_PASSWORD``, else the
    docker client's config (``$DOCKER_CONFIG/config.json``, as ``docker login`` writes it).

    Credential helpers (``credsStore``) are not consulted: set the variables instead.
    """
    env = os.environ if environ is None else environ
    user, password = env.get(USERNAME_VAR), env.get(PASSWORD_VAR)
    if user or password:
        if not (user and password):
            missing = PASSWORD_VAR if user else USERNAME_VAR
            raise UsageError(
                f"{missing} is not set, but {USERNAME_VAR if user else PASSWORD_VAR} is",
                hint="set both, or neither (then the docker client's config is used)",
            )
        return Credentials(user, password, source=f"{USERNAME_VAR}/{PASSWORD_VAR}")
    path = _docker_config_file(env)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"{path}: cannot read the docker client's config: {type(exc).__name__}",
            hint="fix or remove the file, or set ENVBUILD_REGISTRY_USERNAME/_PASSWORD",
        ) from None
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        return None
    for key, entry in auths.items():
        if _auth_key_host(str(key)) != host or not isinstance(entry, dict):
            continue
        if entry.get("username") and entry.get("password"):
            return Credentials(str(entry["username"]), str(entry["password"]), source=str(path))
        token = entry.get("auth")
        if not token:
            continue
        try:
            name, sep, secret = base64.b64decode(str(token), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        if not sep or not name:
            raise UsageError(
                f"{path}: auths.{key}.auth: not base64 of USER:PASSWORD",
                hint=f"run `docker login {host}` again",
            )
        return Credentials(name, secret, source=str(path))
    return None


def registry_from(
    text: str,
    *,
    ca_file: Path | None = None,
    insecure: bool = False,
    environ: Mapping[str, str] | None = None,
    source: str = "--registry",
) -> Registry:
    """The :class:`Registry` ``text`` names, with its credentials, CA and transport checked."""
    host, namespace = parse_registry(text, source=source)
    if ca_file is not None and not ca_file.is_file():
        raise UsageError(f"--registry-ca: {ca_file} is not a file", hint="name a PEM CA bundle")
    return Registry(host, namespace, find_credentials(host, environ), ca_file, insecure)


# --------------------------------------------------------------------------
# The registry's API: manifest HEAD, with auth
# --------------------------------------------------------------------------


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    """``("bearer", {"realm": ..., ...})`` from a ``WWW-Authenticate`` header."""
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


class Manifests(Protocol):
    """What envbuild asks of a registry's API: which digest a tag names."""

    def manifest_digest(self, name: str, reference: str) -> str | None:
        """The digest the registry holds for ``name:reference``, or ``None``."""


class RegistryClient:
    """The registry's ``/v2/`` API on one kept-alive connection."""

    def __init__(self, registry: Registry, *, timeout: float = 30) -> None:
        self.registry = registry
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._auth: dict[str, str] = {}  # scope -> Authorization header value

    # -- transport ------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _connect(self) -> http.client.HTTPConnection:
        """A new connection to the registry (not yet open)."""
        import http.client

        if self.registry.scheme == "https":
            import ssl

            context = ssl.create_default_context(
                cafile=str(self.registry.ca_file) if self.registry.ca_file else None
            )
            return http.client.HTTPSConnection(
                self.registry.host, timeout=self.timeout, context=context
            )
        return http.client.HTTPConnection(self.registry.host, timeout=self.timeout)

    def close(self) -> None:
        """Close the connection (a later request opens another)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _fail(self, message: str, hint: str | None = None) -> RegistryError:
        return RegistryError(scrub(message, self.registry.secrets()), hint=hint)

    def _send(
        self, method: str, path: str, headers: Mapping[str, str]
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        import http.client
        import ssl

        for attempt in (1, 2):  # a kept-alive connection the server closed: once more
            conn = self._connection()
            try:
                conn.request(method, path, headers=dict(headers))
                response = conn.getresponse()
                body = response.read()
                return response.status, response.headers, body
            except ssl.SSLError as exc:
                self.close()
                raise self._fail(
                    f"cannot reach the registry {self.registry.host} over https: {exc.reason}",
                    hint="name its CA with --registry-ca FILE; plain http only with "
                    "--registry-insecure",
                ) from None
            except (http.client.HTTPException, OSError) as exc:
                self.close()
                if attempt == 2 or not isinstance(
                    exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
                ):
                    raise self._fail(
                        f"cannot reach the registry {self.registry.host}: "
                        f"{getattr(exc, 'strerror', None) or exc}",
                        hint="is it running, and is --registry right?",
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _token(self, params: Mapping[str, str]) -> str:
        import http.client
        import ssl

        realm = params.get("realm", "")
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise self._fail(f"the registry {self.registry.host} named no usable token realm")
        if parts.scheme == "http" and not (is_loopback(parts.netloc) or self.registry.insecure):
            raise self._fail(
                f"the registry {self.registry.host} sends credentials to a plain http realm",
                hint="use --registry-insecure only if that is what you mean",
            )
        query = {k: v for k, v in params.items() if k in ("service", "scope") and v}
        headers = {"User-Agent": "envbuild"}
        creds = self.registry.credentials
        if creds is not None:
            pair = f"{creds.username}:{creds.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        conn_cls = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        kwargs: dict[str, Any] = {"timeout": self.timeout}
        if parts.scheme == "https":
            kwargs["context"] = ssl.create_default_context(
                cafile=str(self.registry.ca_file) if self.registry.ca_file else None
            )
        conn = conn_cls(parts.netloc, **kwargs)
        try:
            target = (parts.path or "/") + ("?" + urlencode(query) if query else "")
            conn.request("GET", target, headers=headers)
            response = conn.getresponse()
            body = response.read()
        except (http.client.HTTPException, OSError) as exc:
            raise self._fail(
                f"cannot reach the token service of {self.registry.host}: {exc}"
            ) from None
        finally:
            conn.close()
        if response.status in (401, 403):
            raise self._auth_refused()
        if response.status != 200:
            raise self._fail(
                f"the token service of {self.registry.host} answered {response.status}"
            )
        try:
            data = json.loads(body)
            return str(data.get("token") or data["access_token"])
        except (ValueError, KeyError, TypeError):
            raise self._fail(f"the token service of {self.registry.host} sent no token") from None

    def _auth_refused(self) -> RegistryError:
        creds = self.registry.credentials
        if creds is None:
            return RegistryError(
                f"the registry {self.registry.host} asks for credentials, and none are set",
                hint=f"`docker login {self.registry.host}`, or set {USERNAME_VAR} and "
                f"{PASSWORD_VAR}",
            )
        return RegistryError(
            f"the registry {self.registry.host} refused the credentials of user "
            f"{creds.username!r} (from {creds.source or 'the settings'})",
            hint="check the user and password",
        )

    def request(
        self, method: str, path: str, headers: Mapping[str, str], scope: str
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One request, answering an auth challenge once (basic, or a bearer token)."""
        headers = {"User-Agent": "envbuild", **headers}
        if scope in self._auth:
            headers["Authorization"] = self._auth[scope]
        status, reply, body = self._send(method, path, headers)
        if status != 401:
            return status, reply, body
        if "Authorization" in headers:
            raise self._auth_refused()
        scheme, params = _challenge(reply.get("WWW-Authenticate", ""))
        creds = self.registry.credentials
        if scheme == "basic":
            if creds is None:
                raise self._auth_refused()
            pair = f"{creds.username}:{creds.password}".encode()
            value = "Basic " + base64.b64encode(pair).decode()
        elif scheme == "bearer":
            value = "Bearer " + self._token({**params, "scope": params.get("scope", scope)})
        else:
            raise self._fail(
                f"the registry {self.registry.host} asks for an unknown auth scheme {scheme!r}"
            )
        self._auth[scope] = value
        status, reply, body = self._send(method, path, {**headers, "Authorization": value})
        if status == 401:
            raise self._auth_refused()
        return status, reply, body

    def check_access(self) -> None:
        """Raise :class:`RegistryError` unless the registry answers its ``/v2/`` API and
        accepts the credentials (a token without a scope, or basic auth)."""
        status, _, _ = self.request("GET", "/v2/", {}, "")
        if status != 200:
            raise self._fail(f"the registry {self.registry.host} answered {status} at /v2/")

    # -- the one question asked of a registry ----------------------------------------
    def manifest_digest(self, name: str, reference: str) -> str | None:
        """The digest the registry holds for ``name:reference`` (a tag or a digest), or
        ``None`` when it holds none: one ``HEAD`` (a ``GET`` only if the registry sends
        no ``Docker-Content-Digest``)."""
        path, headers, scope = self._manifest_head(name, reference)
        status, reply, _ = self.request("HEAD", path, headers, scope)
        settled, digest = _settled(status, reply.get("Docker-Content-Digest", ""))
        if settled:
            return digest
        repo = self.registry.path(name)
        if status == 403:
            raise self._fail(
                f"the registry {self.registry.host} denies access to {repo}",
                hint="the user lacks pull rights on this repository",
            )
        if status != 200:
            raise self._fail(
                f"the registry {self.registry.host} answered {status} for {repo}:{reference}"
            )
        digest = reply.get("Docker-Content-Digest", "")
        if not _DIGEST_RE.fullmatch(digest):
            status, reply, body = self.request("GET", path, headers, scope)
            if status != 200:
                raise self._fail(
                    f"the registry {self.registry.host} answered {status} for {repo}:{reference}"
                )
            import hashlib

            digest = "sha256:" + hashlib.sha256(body).hexdigest()
        return digest

    def _manifest_head(self, name: str, reference: str) -> tuple[str, dict[str, str], str]:
        """The path, headers and auth scope of the manifest HEAD of ``name:reference``."""
        repo = self.registry.path(name)
        headers = {"Accept": ", ".join(MANIFEST_TYPES)}
        return f"/v2/{repo}/manifests/{reference}", headers, f"repository:{repo}:pull"

    def manifest_digests(self, wanted: Sequence[tuple[str, str]]) -> list[str | None]:
        """:meth:`manifest_digest` of each ``(name, reference)``, the HEADs in flight together.

        Each HEAD goes on a connection of its own, all sent before the first answer
        is read (on plain http, on sockets: no ``http.client`` to import). An answer
        other than a digest or "not here" (an auth challenge, an error, no digest
        header), and any connection that fails, is asked again by
        :meth:`manifest_digest`, which answers or raises as it always does.
        """
        heads = []
        for name, reference in wanted:
            path, headers, scope = self._manifest_head(name, reference)
            headers = {"User-Agent": "envbuild", **headers}
            if scope in self._auth:
                headers["Authorization"] = self._auth[scope]
            heads.append((path, headers))
        try:
            answers = self._plain_heads(heads) if self.registry.scheme == "http" else None
            if answers is None:
                answers = self._heads(heads)
        except TimeoutError:  # asked again, it would keep us waiting as long once more
            raise self._fail(
                f"cannot reach the registry {self.registry.host}: timed out",
                hint="is it running, and is --registry right?",
            ) from None
        except (OSError, ValueError, LookupError):
            answers = [(0, "")] * len(wanted)  # asked again, one by one
        found: list[str | None] = []
        for (name, reference), (status, digest) in zip(wanted, answers, strict=True):
            settled, value = _settled(status, digest)
            found.append(value if settled else self.manifest_digest(name, reference))
        return found

    def _heads(self, heads: Sequence[tuple[str, Mapping[str, str]]]) -> list[tuple[int, str]]:
        """``(status, Docker-Content-Digest)`` of each HEAD, on ``http.client`` connections."""
        import http.client

        conns: list[http.client.HTTPConnection] = []
        try:
            for path, headers in heads:
                conns.append(self._connect())
                conns[-1].request("HEAD", path, headers=dict(headers))
            answers = []
            for conn in conns:
                response = conn.getresponse()
                response.read()
                answers.append((response.status, response.headers.get("Docker-Content-Digest", "")))
            return answers
        except http.client.HTTPException as exc:
            raise ValueError(str(exc)) from None
        finally:
            for conn in conns:
                conn.close()

    def _plain_heads(self, heads: Sequence[tuple[str, Mapping[str, str]]]) -> list[tuple[int, str]]:
        """``(status, Docker-Content-Digest)`` of each HEAD over plain http, on sockets."""
        import socket
        from urllib.parse import urlsplit

        where = urlsplit(f"http://{self.registry.host}")
        address = (where.hostname or "", where.port or 80)
        socks: list[socket.socket] = []
        try:
            for path, headers in heads:
                sock = socket.create_connection(address, timeout=self.timeout)
                socks.append(sock)
                lines = [f"HEAD {path} HTTP/1.1", f"Host: {self.registry.host}"]
                lines += [f"{key}: {value}" for key, value in headers.items()]
                lines += ["Connection: close", "", ""]
                sock.sendall("\r\n".join(lines).encode("latin-1"))
            return [_read_head(sock) for sock in socks]
        finally:
            for sock in socks:
                sock.close()


def _read_head(sock: Any) -> tuple[int, str]:
    """The status and ``Docker-Content-Digest`` of the answer to a HEAD on ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, ended, _ = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if not ended or len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP answer: {lines[0][:80]!r}")
    digest = ""
    for line in lines[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == "docker-content-digest":
            digest = value.strip()
    return int(parts[1]), digest


def _settled(status: int, digest: str) -> tuple[bool, str | None]:
    """What a manifest HEAD's answer settles: ``(True, digest)`` for a 200 with a digest,
    ``(True, None)`` for a 404 (no such tag); ``(False, None)`` for anything else."""
    if status == 404:
        return True, None
    if status == 200 and _DIGEST_RE.fullmatch(digest):
        return True, digest
    return False, None


# --------------------------------------------------------------------------
# The engine's push and pull streams, and BuildKit's cache import
# --------------------------------------------------------------------------


def read_stream(
    events: Iterable[Mapping[str, Any]], *, what: str, secrets: Iterable[str], log: Log
) -> str:
    """Read an engine push/pull progress stream to its end; return the digest it reports.

    An ``"error"`` anywhere in the stream is a :class:`RegistryError` (the
    engine's HTTP status is 200 all the same).
    """
    secrets = tuple(secrets)
    digest = ""
    for event in events:
        error = event.get("error") or (event.get("errorDetail") or {}).get("message")
        if error:
            raise RegistryError(
                f"cannot {what}: {scrub(str(error), secrets)}",
                hint=_stream_hint(str(error)),
            )
        aux = event.get("aux")
        if isinstance(aux, Mapping) and _DIGEST_RE.fullmatch(str(aux.get("Digest", ""))):
            digest = str(aux["Digest"])
        status = event.get("status")
        if status and not event.get("progressDetail"):
            line = scrub(str(status), secrets)
            if event.get("id"):
                line = f"{event['id']}: {line}"
            log(line)
            found = re.search(r"digest: (sha256:[0-9a-f]{64})", line)
            if found and not digest:
                digest = found.group(1)
    return digest


def _stream_hint(error: str) -> str | None:
    lowered = error.lower()
    if any(word in lowered for word in ("unauthorized", "authentication", "credentials", "denied")):
        return f"check the registry credentials (`docker login`, or {USERNAME_VAR}/{PASSWORD_VAR})"
    if "connection refused" in lowered or "no such host" in lowered or "timeout" in lowered:
        return "is the registry running, and is --registry right?"
    if "http response to https client" in lowered or "server gave http response" in lowered:
        return (
            "the engine speaks https to this registry: add it to the daemon's insecure-registries"
        )
    return None


_IMPORT_RE = re.compile(r"^#(\d+) importing cache manifest from (\S+)")
_STEP_ERROR_RE = re.compile(r"^#(\d+) ERROR: (.*)$")


def failed_cache_imports(lines: Iterable[str]) -> dict[str, str]:
    """``{ref: error}`` for each ``--cache-from`` import a BuildKit log shows failing.

    BuildKit goes on without a cache it could not import (the build just
    rebuilds), so the plain log is the only place that says so.
    """
    steps: dict[str, str] = {}
    failed: dict[str, str] = {}
    for line in lines:
        found = _IMPORT_RE.match(line)
        if found:
            steps[found.group(1)] = found.group(2)
            continue
        error = _STEP_ERROR_RE.match(line)
        if error and error.group(1) in steps:
            failed[steps[error.group(1)]] = error.group(2)
    return failed
