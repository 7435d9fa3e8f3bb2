"""The host's NVIDIA driver, against the CUDA version an image was built for.

The one home of the table of CUDA versions and the oldest driver each runs
on (:data:`MIN_DRIVER`), of reading the host's driver version
(:func:`host_driver`), and of the verdict (:func:`check_driver`). ``envbuild
run --gpus`` refuses to start an image labelled ``io.envbuild.cuda`` on a
host whose driver is too old or absent (:func:`require_driver`), and
``envbuild doctor`` reports the same verdict for each curated environment.

Pure standard library; reading the host costs one small file read (or one
``nvidia-smi`` call where the kernel module's file is absent).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from envbuild.errors import GpuDriverError

# Source: NVIDIA, "CUDA Toolkit Release Notes", section "CUDA Driver", Table 3
# "CUDA Toolkit and Corresponding Driver Versions"
# (https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/index.html), the
# "Toolkit Driver Version" column for Linux x86_64. Each CUDA X.Y maps to the
# first release of X.Y the table lists (its GA, or 11.0's RC 11.0.1), so an
# "X.Y" label asks no more than the oldest driver that release was shipped for.
# An X.Y.Z version is held to its X.Y row: a later update of a minor version
# runs on that driver through CUDA minor-version compatibility (11.x and later).
MIN_DRIVER: Mapping[str, str] = MappingProxyType(
    {
        "8.0": "367.48",  # 8.0.44
        "9.0": "384.81",  # 9.0.76
        "9.1": "390.46",  # 9.1.85
        "9.2": "396.26",  # 9.2.88
        "10.0": "410.48",  # 10.0.130
        "10.1": "418.39",  # 10.1.105
        "10.2": "440.33",  # 10.2.89
        "11.0": "450.36.06",  # 11.0.1 RC (11.0.2 GA: 450.51.05)
        "11.1": "455.23",
        "11.2": "460.27.03",
        "11.3": "465.19.01",
        "11.4": "470.42.01",
        "11.5": "495.29.05",
        "11.6": "510.39.01",
        "11.7": "515.43.04",
        "11.8": "520.61.05",
        "12.0": "525.60.13",
        "12.1": "530.30.02",
        "12.2": "535.54.03",
        "12.3": "545.23.06",
        "12.4": "550.54.14",
        "12.5": "555.42.02",
        "12.6": "560.28.03",
        "12.8": "570.26",
        "12.9": "575.51.03",
        "13.0": "580.65.06",
    }
)

# Same release notes, Table 2 "CUDA Toolkit and Minimum Required Driver Version
# for CUDA Minor Version Compatibility" (Linux x86_64): any 11.x runs on
# >= 450.80.02, any 12.x on >= 525.60.13. Used only for a minor version
# :data:`MIN_DRIVER` does not list, where it is the one documented floor.
MINOR_COMPAT_DRIVER: Mapping[int, str] = MappingProxyType({11: "450.80.02", 12: "525.60.13"})

#: The kernel module's version file (present whenever the NVIDIA driver is loaded).
PROC_VERSION = Path("/proc/driver/nvidia/version")
#: The program asked when that file is absent (looked up on PATH).
NVIDIA_SMI = "nvidia-smi"

# "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 ..." and the
# open modules' "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.14  ...".
_NVRM = re.compile(
    r"^NVRM version:.*?Kernel Module(?:\s+for\s+\S+)?\s+([0-9]+\.[0-9]+(?:\.[0-9]+)?)\b",
    re.MULTILINE,
)
_DRIVER_VERSION = re.compile(r"[0-9]+\.[0-9]+(?:\.[0-9]+)?")

_INSTALL_HINT = (
    "install the NVIDIA driver (and the NVIDIA Container Toolkit for the engine), "
    "or run without --gpus"
)


def version_key(version: str) -> tuple[int, ...]:
    """``"535.104.05"`` as ``(535, 104, 5)``: driver and CUDA versions compare as numbers."""
    return tuple(int(part) for part in version.split("."))


def parse_proc_version(text: str) -> str | None:
    """The driver version in the text of ``/proc/driver/nvidia/version``, or ``None``."""
    match = _NVRM.search(text)
    return match.group(1) if match else None


def minimum_driver(cuda: str) -> str | None:
    """The oldest Linux driver that runs CUDA ``cuda`` (``"10.2"``, ``"11.8.0"``); ``None``
    for a version the table does not know (a newer major)."""
    parts = cuda.split(".")
    minor = ".".join(parts[:2])
    if minor in MIN_DRIVER:
        return MIN_DRIVER[minor]
    # A minor version the table does not list: its major's documented floor, if any.
    major = parts[0]
    return MINOR_COMPAT_DRIVER.get(int(major)) if major.isdigit() else None


@dataclass(frozen=True)
class HostDriver:
    """The host's NVIDIA driver: its version and where it was read, or why none was found."""

    version: str | None
    source: str  # the file or program that said so; "" when no driver was found
    detail: str = ""  # why no version was read (no module loaded, nvidia-smi failed, ...)


def host_driver(*, proc_path: Path | None = None, nvidia_smi: str | None = None) -> HostDriver:
    """Read the host's driver version: the kernel module's file, else ``nvidia-smi``.

    ``proc_path`` (default :data:`PROC_VERSION`) and ``nvidia_smi`` (default
    :data:`NVIDIA_SMI`; ``""`` does not ask it) are read when called, so tests
    may point them elsewhere.
    """
    proc_path = PROC_VERSION if proc_path is None else proc_path
    nvidia_smi = NVIDIA_SMI if nvidia_smi is None else nvidia_smi
    try:
        text = proc_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = None
    if text is not None:
        version = parse_proc_version(text)
        if version is not None:
            return HostDriver(version, str(proc_path))
    program = shutil.which(nvidia_smi) if nvidia_smi else None
    if program is None:
        detail = f"no {proc_path} and no nvidia-smi" if text is None else f"{proc_path} unreadable"
        return HostDriver(None, "", detail)
    try:
        proc = subprocess.run(
            [program, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return HostDriver(None, "", f"nvidia-smi failed: {exc}")
    first = (proc.stdout.strip().splitlines() or [""])[0].strip()
    if proc.returncode != 0 or not _DRIVER_VERSION.fullmatch(first):
        why = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[:1]
        return HostDriver(None, "", f"nvidia-smi failed: {' '.join(why) or proc.returncode}")
    return HostDriver(first, program)


@dataclass(frozen=True)
class DriverVerdict:
    """Whether the host's driver runs CUDA ``cuda``; ``ok`` is ``None`` when unknown."""

    cuda: str
    minimum: str | None
    found: str | None
    ok: bool | None
    message: str
    hint: str | None = None


def check_driver(cuda: str, driver: HostDriver) -> DriverVerdict:
    """The verdict on ``driver`` for an image built for CUDA ``cuda`` (no I/O)."""
    minimum = minimum_driver(cuda)
    need = f"driver >= {minimum}" if minimum else "a driver"
    if driver.version is None:
        return DriverVerdict(
            cuda,
            minimum,
            None,
            False,
            f"CUDA {cuda} needs NVIDIA {need}; no NVIDIA driver found on this host "
            f"({driver.detail or 'none loaded'})",
            _INSTALL_HINT,
        )
    if minimum is None:
        return DriverVerdict(
            cuda,
            None,
            driver.version,
            None,
            f"CUDA {cuda}: envbuild does not know its minimum driver; found {driver.version}",
        )
    if version_key(driver.version) < version_key(minimum):
        return DriverVerdict(
            cuda,
            minimum,
            driver.version,
            False,
            f"CUDA {cuda} needs NVIDIA driver >= {minimum}; this host has {driver.version} "
            f"(from {driver.source})",
            f"upgrade the NVIDIA driver to {minimum} or newer, or run without --gpus",
        )
    return DriverVerdict(
        cuda,
        minimum,
        driver.version,
        True,
        f"CUDA {cuda} needs NVIDIA driver >= {minimum}; found {driver.version}",
    )


def require_driver(cuda: str, *, gpus: str, driver: HostDriver | None = None) -> None:
    """Raise :class:`GpuDriverError` unless the host's driver runs CUDA ``cuda``.

    ``gpus`` is what ``--gpus`` asked, for the message; ``driver`` defaults to
    :func:`host_driver`. A version the table does not know passes.
    """
    verdict = check_driver(cuda, driver or host_driver())
    if verdict.ok is False:
        raise GpuDriverError(
            f"cannot run this image with --gpus {gpus}: {verdict.message}",
            hint=verdict.hint,
            cuda=cuda,
            minimum=verdict.minimum,
            found=verdict.found,
        )
