"""Where the run layer may mount from: the host-path policy (Docker socket, /proc, /etc, ...)."""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from envbuild.errors import (
    MountPolicyError,
    RunConfigError,
)
from envbuild.run.config import _CONTROL

if TYPE_CHECKING:
    pass


# Mount policy
# --------------------------------------------------------------------------

# Binding any of these (or a folder inside, or a folder holding one) gives the
# container the host: the engine's socket is root on the host (OWASP Docker
# rule #1), /proc, /sys and /dev reach the kernel and devices, /etc the host's
# users and services, /var/lib/docker every image and container. The engine's
# runtime folders hold more sockets than the one in DOCKER_HOST: containerd's
# (/run/docker/containerd/containerd.sock gives the container every other one),
# plugins', BuildKit's and runc's state.
_SYSTEM_PATHS = {
    "/proc": "the host's kernel and processes",
    "/sys": "the host's kernel",
    "/dev": "the host's devices",
    "/etc": "the host's configuration",
    "/var/lib/docker": "the Docker engine's data",
    "/var/lib/containerd": "containerd's data",
    "/run/docker.sock": "the Docker socket (root on the host)",
    "/var/run/docker.sock": "the Docker socket (root on the host)",
    "/run/docker": "the Docker engine's sockets and state",
    "/var/run/docker": "the Docker engine's sockets and state",
    "/run/containerd": "containerd's socket",
    "/var/run/containerd": "containerd's socket",
    "/run/runc": "runc's container state",
    "/var/run/runc": "runc's container state",
    "/run/buildkit": "BuildKit's socket",
    "/var/run/buildkit": "BuildKit's socket",
    "/var/lib/buildkit": "BuildKit's data",
}


def _protected() -> list[tuple[Path, str, bool]]:
    """``(path, why, also refuse its parents)``, each in literal and resolved form."""
    entries: list[tuple[str, str, bool]] = [(p, why, True) for p, why in _SYSTEM_PATHS.items()]
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://") and Path(host[len("unix://") :]).exists():
        entries.append((host[len("unix://") :], "the Docker socket (root on the host)", True))
    # The client's credentials; a home folder holding them may still be mounted.
    entries.append((str(Path.home() / ".docker"), "the Docker client's credentials", False))
    out: list[tuple[Path, str, bool]] = []
    for raw, why, parents in entries:
        for form in {Path(raw), Path(os.path.realpath(raw))}:
            out.append((form, why, parents))
    return out


def dangerous_reason(real: Path) -> str | None:
    """Why binding the resolved path ``real`` would hand the host over, or ``None``."""
    if real == Path("/"):
        return "it is the host's root filesystem"
    for path, why, parents in _protected():
        if real == path or path in real.parents:
            return f"it is {path} or inside it: {why}"
        if parents and real in path.parents:
            return f"it contains {path}: {why}"
    try:
        is_socket = stat.S_ISSOCK(os.lstat(real).st_mode)
    except OSError:
        is_socket = False
    if is_socket:
        # Any unix socket is some service's control channel (an engine, a
        # session bus, an agent): a container that may speak to it is not contained.
        return "it is a unix socket: the container could speak to the service behind it"
    return None


def check_host_path(
    path: Path, *, what: str, allow_dangerous: bool, warnings: list[str] | None = None
) -> Path:
    """Resolve ``path`` (symlinks, ``..``, relative to the current folder) and apply the policy.

    The path must exist. A dangerous path raises :class:`MountPolicyError`, or,
    with ``allow_dangerous``, adds a warning to ``warnings``. Returns the
    resolved path, which is what gets bound (not the name that was checked).
    """
    try:
        real = Path(os.path.realpath(path, strict=True))
    except OSError as exc:
        raise RunConfigError(
            f"{what}: {path} does not exist ({exc.strerror or exc})",
            hint="host paths must exist before the run; outputs are created by envbuild",
        ) from exc
    reason = dangerous_reason(real)
    if reason is not None:
        shown = f"{path}" if str(path) == str(real) else f"{path} (-> {real})"
        if not allow_dangerous:
            raise MountPolicyError(
                f"{what}: refusing to mount {shown}: {reason}",
                path=str(real),
                hint="mount a narrower folder, or pass --allow-dangerous-mount if you mean it",
            )
        if warnings is not None:
            warnings.append(f"warning: {what}: mounting {shown} although {reason}")
    return real


def _output_path(path: Path, *, what: str, allow_dangerous: bool, warnings: list[str]) -> Path:
    """An output folder that may not exist yet: vet its nearest existing ancestor."""
    absolute = path.resolve()  # symlinks of the existing part resolved, the rest kept
    existing = absolute
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise RunConfigError(
            f"{what}: {path} cannot be a folder: {existing} exists and is not a folder",
            hint="name a folder that exists, or a new one under a folder",
        )
    base = check_host_path(existing, what=what, allow_dangerous=allow_dangerous, warnings=warnings)
    real = base / absolute.relative_to(existing)
    if real.exists() and not real.is_dir():
        raise RunConfigError(f"{what}: {path} exists and is not a folder")
    return real


def _check_target(target: str, what: str) -> str:
    if _CONTROL.search(target) or not target.startswith("/"):
        raise RunConfigError(
            f"{what}: {target!r} is not an absolute container path", hint="e.g. /data"
        )
    pure = PurePosixPath(target)
    if ".." in pure.parts or str(pure) == "/":
        raise RunConfigError(f"{what}: {target!r}: use an absolute path without '..', not '/'")
    return str(pure)


# --------------------------------------------------------------------------
