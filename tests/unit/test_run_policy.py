"""Bind-mount policy (RELIABILITY.md T33): resolved first, dangerous paths refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from envbuild.errors import MountPolicyError, RunConfigError
from envbuild.run.policy import check_host_path, dangerous_reason


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/proc",
        "/proc/self",
        "/sys",
        "/sys/kernel",
        "/dev",
        "/dev/null",
        "/etc",
        "/etc/passwd",
        "/var/lib/docker",
        "/var/lib/docker/volumes",
        "/run/docker.sock",
        "/var/run/docker.sock",
        "/run/containerd/containerd.sock",
        "/run/docker",  # the engine's runtime folder: containerd's socket is inside
        "/run/docker/containerd/containerd.sock",
        "/var/run/docker/containerd/containerd.sock",
        "/var/lib/containerd",
        "/run/runc",
        "/run/buildkit/buildkitd.sock",
        "/var/run",  # holds the Docker socket
        "/run",
        "/var",  # holds /var/lib/docker
        "/var/lib",
    ],
)
def test_dangerous_paths(path: str) -> None:
    assert dangerous_reason(Path(path)) is not None


@pytest.mark.parametrize("path", ["/tmp", "/home", "/srv/data", "/var/tmp", "/opt", "/usr/share"])
def test_ordinary_paths(path: str) -> None:
    assert dangerous_reason(Path(path)) is None


def test_docker_credentials_refused_but_home_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    home = Path.home()
    assert dangerous_reason(home / ".docker") is not None
    assert dangerous_reason(home / ".docker" / "config.json") is not None
    assert dangerous_reason(home) is None  # running from ~ with --source-dir . must work


def test_custom_docker_host_socket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sock = tmp_path / "engine" / "docker.sock"
    sock.parent.mkdir()
    sock.touch()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")
    assert dangerous_reason(sock) is not None
    assert dangerous_reason(sock.parent) is not None  # a folder holding it
    assert dangerous_reason(tmp_path / "other") is None


def test_symlink_to_a_dangerous_path_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "innocent"
    link.symlink_to("/etc")
    with pytest.raises(MountPolicyError, match=r"innocent \(-> /etc\)") as caught:
        check_host_path(link, what="--mount", allow_dangerous=False)
    assert caught.value.path == "/etc"
    assert caught.value.exit_code == 125


def test_dotdot_traversal_is_resolved(tmp_path: Path) -> None:
    sneaky = tmp_path / ".." / ".." / ".." / ".." / ".." / ".." / ".." / "etc"
    with pytest.raises(MountPolicyError):
        check_host_path(sneaky, what="--mount", allow_dangerous=False)


def test_symlinked_var_run_socket_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "sock"
    link.symlink_to("/var/run/docker.sock")  # need not exist: refused either way
    if not Path("/var/run/docker.sock").exists():
        with pytest.raises(RunConfigError, match="does not exist"):
            check_host_path(link, what="--mount", allow_dangerous=False)
    else:
        with pytest.raises(MountPolicyError, match="Docker socket"):
            check_host_path(link, what="--mount", allow_dangerous=False)


def test_relative_paths_resolve_against_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    assert check_host_path(Path("data"), what="--mount", allow_dangerous=False) == Path(
        os.path.realpath(tmp_path / "data")
    )


def test_missing_host_path(tmp_path: Path) -> None:
    with pytest.raises(RunConfigError, match="does not exist"):
        check_host_path(tmp_path / "nope", what="--mount", allow_dangerous=False)


def test_escape_hatch_warns() -> None:
    warnings: list[str] = []
    assert check_host_path(
        Path("/etc"), what="--mount", allow_dangerous=True, warnings=warnings
    ) == Path("/etc")
    assert len(warnings) == 1 and warnings[0].startswith("warning: --mount: mounting /etc")


def test_bound_path_is_the_resolved_one(tmp_path: Path) -> None:
    """What gets bound is the checked target, not a name that could be re-pointed later."""
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    assert check_host_path(link, what="--mount", allow_dangerous=False) == real.resolve()


def test_any_unix_socket_is_refused_unless_allowed(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "agent.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        assert "unix socket" in (dangerous_reason(path) or "")
        link = tmp_path / "innocent"
        link.symlink_to(path)
        with pytest.raises(MountPolicyError, match="unix socket"):
            check_host_path(link, what="--input c", allow_dangerous=False)
        warnings: list[str] = []
        assert check_host_path(path, what="--mount", allow_dangerous=True, warnings=warnings)
        assert warnings and "unix socket" in warnings[0]
    assert dangerous_reason(tmp_path) is None  # the folder holding it is not refused
