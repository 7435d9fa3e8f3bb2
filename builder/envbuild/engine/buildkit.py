"""BuildKit builds, driven by the docker CLI (``docker buildx build --load``).

The docker SDK for Python cannot drive BuildKit (no secrets, no cache
mounts), so envbuild shells out, as repo2docker does: ``docker buildx build
--load``, or ``DOCKER_BUILDKIT=1 docker build`` on a client with BuildKit built
in. No BuildKit-capable client is a clear error, never a silent fallback.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from envbuild.engine.api import engine_down
from envbuild.engine.protocols import BuildRequest
from envbuild.errors import BuildError, EngineError, ToolMissingError
from envbuild.log import Log


@dataclass(frozen=True)
class BuildKitClient:
    """A docker CLI that can drive BuildKit, and how."""

    binary: str
    mode: str  # "buildx" or "classic" (DOCKER_BUILDKIT=1 docker build)

    def command(self, request: BuildRequest, iidfile: Path) -> tuple[list[str], dict[str, str]]:
        """The argv and environment of one build."""
        env = dict(os.environ)
        if self.mode == "buildx":
            argv = [self.binary, "buildx", "build", "--load"]
        elif self.mode == "classic":
            argv = [self.binary, "build"]
            # Always set, whatever the caller's environment says: without it the
            # legacy builder would run, with no secrets and no cache mounts.
            env["DOCKER_BUILDKIT"] = "1"
        else:  # never downgrade a build that may carry secrets
            raise ToolMissingError(f"{self.binary}: {self.mode!r} is not a BuildKit mode")
        argv += ["--progress=plain", "--iidfile", str(iidfile)]
        if request.platform:
            argv += ["--platform", request.platform]
        if request.no_cache:
            argv.append("--no-cache")
        for key, value in sorted(request.labels.items()):
            argv += ["--label", f"{key}={value}"]
        for sid, src in sorted(request.secrets.items()):
            argv += ["--secret", f"id={sid},src={src}"]
        for key, value in sorted(request.build_args.items()):
            argv += ["--build-arg", f"{key}={value}"]
        for ref in request.cache_from:
            argv += ["--cache-from", ref]
        if request.docker_config is not None:
            env["DOCKER_CONFIG"] = str(request.docker_config)
        argv += ["--file", str(request.context_dir / "Dockerfile"), str(request.context_dir)]
        return argv, env


def _run_quiet(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def probe_cache(home: Path) -> Path:
    """Where the BuildKit probe of each docker client is remembered, under the state
    folder ``home`` (:attr:`envbuild.settings.Settings.home`)."""
    return home / "cache" / "buildkit-clients.json"


@functools.lru_cache(maxsize=8)
def find_buildkit(binary: str, cache: Path | None = None) -> BuildKitClient:
    """Find how ``binary`` can run a BuildKit build, or say what to install.

    Probing runs the client twice (~60 ms), so with ``cache`` (see
    :func:`probe_cache`; the caller names it, nothing here reads the settings)
    a positive answer is remembered per client binary (path, size, mtime).
    """
    path = shutil.which(binary)
    if path is None:
        raise ToolMissingError(
            f"the docker client {binary!r} was not found",
            hint="install Docker (Debian: apt-get install docker.io) or set ENVBUILD_DOCKER "
            "to the docker CLI to use",
        )
    if cache is None:
        return _probe_buildkit(path)
    stat = Path(path).stat()
    key = f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}"
    try:
        known = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if known.get(key) in ("buildx", "classic"):
        return BuildKitClient(path, str(known[key]))
    client = _probe_buildkit(path)
    with contextlib.suppress(OSError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**known, key: client.mode}), encoding="utf-8")
        tmp.replace(cache)
    return client


def _probe_buildkit(path: str) -> BuildKitClient:
    if _run_quiet([path, "buildx", "version"]).returncode == 0:
        return BuildKitClient(path, "buildx")
    version = _run_quiet([path, "--version"]).stdout
    match = re.search(r"version (\d+)\.", version)
    # Clients before 23.0 have BuildKit built in behind DOCKER_BUILDKIT=1; from
    # 23.0 on, `docker build` needs the buildx plugin for BuildKit.
    if match and int(match.group(1)) < 23:
        return BuildKitClient(path, "classic")
    raise ToolMissingError(
        f"the docker client {path} ({version.strip() or 'unknown version'}) cannot run BuildKit "
        "builds: its buildx plugin is missing",
        hint="install the buildx plugin (Debian: apt-get install docker-buildx), or point envbuild "
        "at a client with BuildKit built in: ENVBUILD_DOCKER=/usr/bin/docker, or "
        'docker = "/usr/bin/docker" in ~/.config/envbuild/config.toml',
    )


_STEP_RE = re.compile(r"^#(\d+) (\[[^\]]*\] .*)$")
_ERROR_RE = re.compile(r"^#(\d+) ERROR: (.*)$")
_EXIT_RE = re.compile(r"exit code: (\d+)")


@dataclass(frozen=True)
class BuildFailure:
    """What the BuildKit log says about a failed build."""

    step: str | None
    exit_code: int | None
    tail: tuple[str, ...]


def parse_failure(lines: Sequence[str], tail: int = 20) -> BuildFailure:
    """Find the failing step, its exit code and its last lines in a plain BuildKit log."""
    titles: dict[str, str] = {}
    failed: str | None = None
    message = ""
    for line in lines:
        step = _STEP_RE.match(line)
        if step:
            titles.setdefault(step.group(1), step.group(2))
        error = _ERROR_RE.match(line)
        if error:
            failed, message = error.group(1), error.group(2)
    if failed is None:
        return BuildFailure(None, None, tuple(lines[-tail:]))
    own = [
        line.split(" ", 2)[-1] if re.match(rf"^#{failed} \d+\.\d+ ", line) else line
        for line in lines
        if line.startswith(f"#{failed} ") and not _ERROR_RE.match(line)
    ]
    code = _EXIT_RE.search(message)
    return BuildFailure(
        titles.get(failed, message), int(code.group(1)) if code else None, tuple(own[-tail:])
    )


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when envbuild dies, even of SIGKILL.

    Linux's ``PR_SET_PDEATHSIG``; resolved here, in the parent, so that the
    child only makes one system call between fork and exec. ``None`` elsewhere.
    """
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(1, 15, 0, 0, 0)  # PR_SET_PDEATHSIG = 1, SIGTERM = 15

    return preexec


def _stream(proc: subprocess.Popen[bytes]) -> Iterator[str]:
    assert proc.stdout is not None
    for raw in iter(proc.stdout.readline, b""):
        yield raw.decode("utf-8", errors="replace").rstrip("\r\n")


def build(
    docker_cli: str, request: BuildRequest, log: Log, *, probe_cache: Path | None = None
) -> str:
    """Build ``request`` with the BuildKit of ``docker_cli``; the image ID.

    ``probe_cache`` is where the client's probe is remembered (:func:`probe_cache`).
    Raises :class:`BuildError` with the failing step, its exit code and its
    last lines.
    """
    from envbuild.process import temp_prefix

    client = find_buildkit(docker_cli, probe_cache)
    # Named after its owner: what a `kill -9` leaves, the next build removes.
    with tempfile.TemporaryDirectory(prefix=temp_prefix("iid")) as tmp:
        iidfile = Path(tmp) / "iid"
        argv, env = client.command(request, iidfile)
        lines: list[str] = []
        try:
            proc = subprocess.Popen(
                argv,
                preexec_fn=_die_with_parent(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            raise EngineError(f"cannot start {argv[0]}: {exc}") from exc
        try:
            for line in _stream(proc):
                lines.append(line)
                if len(lines) > 20000:
                    del lines[:10000]
                log(line)
            code = proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
        if code != 0:
            failure = parse_failure(lines)
            if failure.step is None and any("Cannot connect" in ln for ln in lines[-5:]):
                raise engine_down(lines[-1])
            raise BuildError(
                "the image build failed",
                step=failure.step,
                step_exit_code=failure.exit_code,
                log_tail=failure.tail,
            )
        image_id = iidfile.read_text().strip() if iidfile.exists() else ""
    if not image_id:
        raise BuildError("the build reported success but named no image", log_tail=lines[-20:])
    return image_id
