"""``envbuild doctor``: can this host build and run envbuild's environments?

Each check answers one question with a status, what was found, and the fix:
the engine answers (and its version); the settings' docker client runs
BuildKit builds; mmdebstrap and the archive keyrings for ``base bootstrap``;
the configured registry answers and accepts the credentials; free disk under
the engine's data root and envbuild's home; the host's NVIDIA driver against
the CUDA version each curated environment declares.

``fail`` is something envbuild needs and lacks; ``warn`` is something that
works but may not for long (little disk) or only matters for some work (no
GPU driver, unless ``gpu_required``); ``skip`` is a check that does not apply.
Only the engine module talks to Docker; this module asks it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from envbuild.engine.protocols import EngineInfo
from envbuild.errors import EnvbuildError
from envbuild.settings import Settings, load_settings

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"

#: Free space below which a disk check warns, and below which it fails (bytes).
DISK_WARN = 5 * 2**30
DISK_FAIL = 1 * 2**30

#: The host keyring mmdebstrap verifies Debian archives with.
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


class _Informs(Protocol):
    def info(self) -> EngineInfo:
        """The engine's version, data root and runtimes."""


@dataclass(frozen=True)
class Check:
    """One line of the doctor's table."""

    name: str
    status: str  # ok | warn | fail | skip
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        """The ``--json`` shape of this line."""
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True)
class Report:
    """Every check, in order, and how long they took."""

    checks: tuple[Check, ...]
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No check failed (warnings allowed)."""
        return all(c.status != FAIL for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "checks": [c.to_json() for c in self.checks],
        }

    def table(self) -> str:
        """The checks as a plain-text table, each failing or warning line with its fix."""
        width = max([len("CHECK"), *(len(c.name) for c in self.checks)])
        lines = [f"{'CHECK':<{width}}  STATUS  DETAIL"]
        for c in self.checks:
            lines.append(f"{c.name:<{width}}  {c.status:<6}  {c.detail}")
            if c.fix and c.status in (WARN, FAIL):
                lines.append(f"{'':<{width}}          fix: {c.fix}")
        return "\n".join(lines)


@dataclass
class _Checks:
    settings: Settings
    engine: _Informs
    catalog: Path
    gpu_required: bool
    proc_path: Path | None
    nvidia_smi: str | None
    found: list[Check] = field(default_factory=list)
    info: EngineInfo | None = None

    def add(self, name: str, status: str, detail: str, fix: str = "") -> None:
        self.found.append(Check(name, status, detail, fix))

    def guarded(self, name: str, check: Callable[[], None]) -> None:
        """Run ``check``; an envbuild error it raises is that line's failure."""
        try:
            check()
        except EnvbuildError as exc:
            self.add(name, FAIL, exc.message, exc.hint or "")
        except Exception as exc:  # a doctor reports what it finds; it does not crash on it
            self.add(name, FAIL, f"{type(exc).__name__}: {exc}")

    # -- the engine and the build client ---------------------------------------------
    def engine_check(self) -> None:
        self.info = self.engine.info()
        self.add("engine", OK, f"Docker {self.info.version or '(unknown version)'} answers")

    def buildkit(self) -> None:
        from envbuild.engine.buildkit import find_buildkit, probe_cache

        client = find_buildkit(self.settings.docker, probe_cache(self.settings.home))
        how = "docker buildx" if client.mode == "buildx" else "DOCKER_BUILDKIT=1 docker build"
        self.add("buildkit client", OK, f"{client.binary} builds with BuildKit ({how})")

    # -- base bootstrap ------------------------------------------------------------------
    def bootstrap(self) -> None:
        from envbuild.build.bases import SUPPORTED

        program = shutil.which("mmdebstrap")
        if program is None:
            self.add(
                "mmdebstrap",
                FAIL,
                "mmdebstrap is not on PATH: `envbuild base bootstrap` cannot build base images",
                "apt-get install mmdebstrap",
            )
        else:
            hooks = sorted({h for r in SUPPORTED.values() for h in (*r.hook_dirs, *r.setup_hooks)})
            missing = [h for h in hooks if not Path(h).exists()]
            if missing:
                self.add(
                    "mmdebstrap",
                    FAIL,
                    f"{program} lacks its hooks: {', '.join(missing)}",
                    "apt-get install --reinstall mmdebstrap (1.3 or newer)",
                )
            else:
                self.add("mmdebstrap", OK, program)
        if DEBIAN_KEYRING.is_file():
            self.add(
                "keyrings",
                OK,
                f"{DEBIAN_KEYRING}; Ubuntu's is fetched at its first bootstrap "
                "and checked against a pinned sha256",
            )
        else:
            self.add(
                "keyrings",
                FAIL,
                f"no {DEBIAN_KEYRING}: Debian bases cannot be verified",
                "apt-get install debian-archive-keyring",
            )

    # -- the registry ----------------------------------------------------------------------
    def registry(self) -> None:
        if not self.settings.registry:
            self.add("registry", SKIP, "not configured (registry setting, ENVBUILD_REGISTRY)")
            return
        from envbuild.engine.registry import RegistryClient, registry_from

        ca = Path(self.settings.registry_ca).expanduser() if self.settings.registry_ca else None
        found = registry_from(self.settings.registry, ca_file=ca, source="the registry setting")
        client = RegistryClient(found, timeout=5)
        try:
            client.check_access()
        finally:
            client.close()
        who = (
            f"accepts user {found.credentials.username!r}"
            if found.credentials
            else "answers (no credentials set)"
        )
        self.add("registry", OK, f"{found.host} {who}")

    # -- disk ------------------------------------------------------------------------------
    def disk(self) -> None:
        root = self.info.root_dir if self.info else ""
        if not root:
            self.add("disk: engine data", SKIP, "the engine did not say where it keeps data")
        elif not Path(root).exists():
            self.add("disk: engine data", SKIP, f"{root} is not on this host (a remote engine?)")
        else:
            self._free("disk: engine data", Path(root), "remove unused images: docker image prune")
        home = self.settings.home
        existing = next((p for p in (home, *home.parents) if p.exists()), Path("/"))
        self._free(
            "disk: ENVBUILD_HOME",
            existing,
            f"free space under {existing}, or set ENVBUILD_HOME to a larger disk",
            shown=home,
        )

    def _free(self, name: str, path: Path, fix: str, *, shown: Path | None = None) -> None:
        try:
            free = shutil.disk_usage(path).free
        except OSError as exc:
            self.add(name, WARN, f"cannot read the free space of {path}: {exc.strerror or exc}")
            return
        text = f"{free / 2**30:.1f} GiB free under {shown or path}"
        if free < DISK_FAIL:
            self.add(name, FAIL, text, fix)
        elif free < DISK_WARN:
            self.add(name, WARN, text, fix)
        else:
            self.add(name, OK, text)

    # -- the GPU driver against the curated CUDA versions -----------------------------------
    def gpu(self) -> None:
        from envbuild.run.gpu import check_driver, host_driver

        declared = self._curated_cuda()
        driver = host_driver(proc_path=self.proc_path, nvidia_smi=self.nvidia_smi)
        found = f"driver {driver.version} ({driver.source})" if driver.version else "no driver"
        if not declared:
            detail = f"{found}; no curated environment declares [gpu] cuda"
            self.add("gpu driver", SKIP if driver.version is None else OK, detail)
            return
        short = WARN if not self.gpu_required else FAIL
        for name, cuda in declared:
            verdict = check_driver(cuda, driver)
            if verdict.ok is True:
                self.add(f"gpu: {name}", OK, verdict.message)
            elif verdict.ok is None:
                self.add(f"gpu: {name}", WARN, verdict.message)
            else:
                self.add(f"gpu: {name}", short, verdict.message, verdict.hint or "")

    def _curated_cuda(self) -> list[tuple[str, str]]:
        if not self.catalog.is_dir():
            return []
        from envbuild.catalog.order import discover
        from envbuild.definition.model import load

        declared = []
        for folder in discover(self.catalog):
            try:
                env = load(folder)
            except EnvbuildError as exc:
                self.add(f"gpu: {folder.name}", WARN, f"cannot read its definition: {exc.message}")
                continue
            if env.gpu.cuda:
                declared.append((env.name, env.gpu.cuda))
        return declared


def diagnose(
    *,
    settings: Settings | None = None,
    engine: _Informs | None = None,
    catalog: Path = Path("curated"),
    gpu_required: bool = False,
    proc_path: Path | None = None,
    nvidia_smi: str | None = None,
) -> Report:
    """Run every check and return the report (never raises for what it checks).

    ``catalog`` holds the environments whose ``[gpu] cuda`` the driver is
    checked against; ``gpu_required`` makes a missing or old driver a failure;
    ``proc_path`` and ``nvidia_smi`` go to :func:`envbuild.run.gpu.host_driver`.
    """
    started = time.monotonic()
    settings = settings or load_settings()
    if engine is None:
        from envbuild.engine.docker import DockerEngine

        engine = DockerEngine(settings.docker)
    checks = _Checks(settings, engine, catalog, gpu_required, proc_path, nvidia_smi)
    checks.guarded("engine", checks.engine_check)
    checks.guarded("buildkit client", checks.buildkit)
    checks.guarded("mmdebstrap", checks.bootstrap)
    checks.guarded("registry", checks.registry)
    checks.disk()
    checks.guarded("gpu", checks.gpu)
    return Report(tuple(checks.found), time.monotonic() - started)
