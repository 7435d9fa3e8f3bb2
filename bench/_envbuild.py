"""envbuild-specific helpers shared by the build benchmarks (standard library only)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from _common import ROOT, run_quiet

CA_ENV_VARS = ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")  # as envbuild reads them
DEFAULT_CA = "/etc/ssl/certs/ca-certificates.crt"
# What the measured code is made of, relative to its checkout (for git_state).
MEASURED_PATHS = ("builder", "templates", "envs")


def envbuild_settings() -> tuple[str, str]:
    """The docker CLI and image prefix envbuild is configured with (ENVBUILD_* / config)."""
    out = run_quiet(
        [
            sys.executable,
            "-c",
            "from envbuild.settings import load_settings; s = load_settings(); "
            "print(s.docker); print(s.prefix)",
        ],
        cwd=ROOT,
    )
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2:
        raise RuntimeError(f"cannot read envbuild's settings: {out.stderr[-2000:]}")
    return lines[0], lines[1]


def envbuild_package() -> Path:
    """The folder the envbuild package is imported from (for this interpreter)."""
    out = run_quiet([sys.executable, "-c", "import envbuild; print(envbuild.__file__)"])
    if out.returncode != 0:
        raise RuntimeError(f"envbuild is not importable: {out.stderr[-2000:]}")
    return Path(out.stdout.strip()).parent


def ca_bundle() -> str:
    """The CA bundle envbuild hands its builds by default, so the baseline gets the same."""
    for var in CA_ENV_VARS:
        value = os.environ.get(var)
        if value and Path(value).is_file():
            return value
    return DEFAULT_CA


# The benchmarks build under their own image prefix and state folder: the
# images they remove are only their own (the user's may be in use by a
# container), and their measurements never depend on the user's hash memo.
# Neither setting changes the content hash, a layer, or the code path.
BENCH_PREFIX = "envbuild-bench"


def bench_env(home: str) -> dict[str, str]:
    """The environment for envbuild runs of a benchmark: its prefix, ``home`` as state."""
    return {**os.environ, "ENVBUILD_PREFIX": BENCH_PREFIX, "ENVBUILD_HOME": home}


def tags_of(docker: str, repository: str) -> list[str]:
    """Every ``repository:tag`` the engine holds."""
    out = run_quiet([docker, "images", "--format", "{{.Repository}}:{{.Tag}}", repository])
    if out.returncode != 0:
        raise RuntimeError(f"docker images {repository} failed: {out.stderr[-2000:]}")
    return sorted({line for line in out.stdout.split() if not line.endswith(":<none>")})


def untag_all(docker: str, repository: str) -> None:
    """Remove every tag of ``repository`` (an image other tags still name stays)."""
    tags = tags_of(docker, repository)
    if tags:
        out = run_quiet([docker, "rmi", "-f", *tags])
        if out.returncode != 0:
            raise RuntimeError(f"docker rmi {' '.join(tags)} failed: {out.stderr[-2000:]}")
    left = tags_of(docker, repository)
    if left:
        raise RuntimeError(f"still tagged after removal: {left}")


def noop_builds_script(docker: str, envbuild: str, folders: list[Path], out: Path, tag: str) -> str:
    """A shell command running docker's own no-op build of each of ``folders``, in turn.

    Each environment's context is rendered into ``out`` (``envbuild render -o``) and built
    with ``DOCKER_BUILDKIT=1 docker build -q`` and the CA secret envbuild's builds get,
    tagged ``tag:<folder name>`` so the caller can remove what it made (``untag_all``).
    With every layer cached, this is what a CI that uses plain docker pays per change.
    """
    contexts = []
    for folder in folders:
        ctx = out / folder.name
        run = run_quiet([envbuild, "render", str(folder), "-o", str(ctx)], cwd=ROOT)
        if run.returncode != 0:
            raise SystemExit(run.stderr)
        contexts.append(ctx)
    secret = f"id=envbuild-ca,src={ca_bundle()}"
    return " && ".join(
        f"DOCKER_BUILDKIT=1 {docker} build -q --secret {secret} -t {tag}:{ctx.name} "
        f"{ctx} >/dev/null"
        for ctx in contexts
    )
