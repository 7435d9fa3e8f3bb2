"""Cache hit: `envbuild build envs/hello` vs a fully cached `docker build -q` of the same context.

Both sides are timed as whole processes, interleaved, after one untimed
warm-up round. The baseline is `DOCKER_BUILDKIT=1 <docker> build -q` of the
build context `envbuild render envs/hello -o DIR` writes, given the same CA
secret envbuild gives its builds; the warm-up makes its every step cached.

envbuild is started by the real path of its console script, next to this
interpreter (`<dirname sys.executable>/envbuild`), not through PATH: under
pyenv, PATH finds a bash shim that adds tens of milliseconds to every start.
The shim is timed as its own row so that cost is visible. envbuild's
bytecode is compiled first, as installing a package does.

envbuild runs under the benchmarks' own image prefix
(`ENVBUILD_PREFIX=envbuild-bench`) and a fresh state folder (`ENVBUILD_HOME`);
neither changes the code path. The set-up builds the image if needed (a real
build when the layer cache is cold) and checks the next build is a hit; at
the end the benchmark's tags are removed.

Floor rows, same interpreter: `python -c pass` (with this machine's
site-packages, whose .pth files run at every start), `python -I -c pass`
(isolated mode still processes site-packages .pth files), `python -S -c pass`
(no site at all), and `python -c <one GET /images/.../json on the engine
socket>`: interpreter start plus the one engine request a cache hit needs,
the least a cache hit in Python can cost.

One diagnostic row runs envbuild's console-script entry point under
`python -S` with sys.path set by hand (envbuild's source folder, then
site-packages): the same code without any site-packages .pth file, i.e. what
a cache hit costs on an interpreter whose start-up imports nothing extra.

Usage: python3 bench/build_cache_hit.py [--runs N]
"""

from __future__ import annotations

import json
import os
import re
import sys
import sysconfig
import tempfile
from pathlib import Path

from _common import (
    ROOT,
    Case,
    cli,
    compare,
    compile_bytecode,
    describe_commit,
    docker_versions,
    fmt_ms,
    git_state,
    interpreter_script,
    machine,
    ratio,
    run_quiet,
    save,
    table,
)
from _envbuild import (
    BENCH_PREFIX,
    MEASURED_PATHS,
    bench_env,
    ca_bundle,
    envbuild_package,
    envbuild_settings,
    untag_all,
)

ENV = "envs/hello"

# One inspect on the engine socket, as envbuild's cache-hit path does it.
INSPECT = """\
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect("/var/run/docker.sock")
s.sendall(b"GET /images/" + sys.argv[1].encode() + b"/json HTTP/1.0\\r\\nHost: docker\\r\\n\\r\\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
assert b" 200 " in data.split(b"\\r\\n", 1)[0], data[:200]
"""


def pyenv_shim(name: str) -> str | None:
    """pyenv's shim for ``name``, if pyenv manages this interpreter.

    Not ``shutil.which``: a pyenv shim runs Python with the version's own bin
    folder first on PATH, so inside this process PATH finds the real script.
    """
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    shim = root / "shims" / name
    return str(shim) if shim.is_file() and os.access(shim, os.X_OK) else None


def no_site_entry(script: str, envbuild_dir: str, site_packages: str) -> str:
    """``python -S -c`` code that runs the console script ``script``'s entry point."""
    found = re.search(r"^from ([\w.]+) import (\w+)$", Path(script).read_text(), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"{script}: no entry point found")
    module, func = found.groups()
    return (
        f"import sys; sys.path[1:1] = [{envbuild_dir!r}, {site_packages!r}]; "
        f"sys.argv[0] = 'envbuild'; from {module} import {func}; sys.exit({func}())"
    )


def main() -> int:
    args = cli(__doc__, default_runs=15, minimum=9)
    envbuild = interpreter_script("envbuild")
    package = envbuild_package()
    compile_bytecode(package)
    code = git_state(package, MEASURED_PATHS)
    docker, _prefix = envbuild_settings()
    shim = pyenv_shim("envbuild")
    py = sys.executable

    with tempfile.TemporaryDirectory(prefix="bench-envbuild-") as tmp:
        eb_env = bench_env(str(Path(tmp) / "home"))
        try:
            # The image must exist: build it (if needed); the next build must be a hit.
            first = run_quiet([envbuild, "build", ENV, "--json", "-q"], cwd=ROOT, env=eb_env)
            if first.returncode != 0:
                print(first.stderr, file=sys.stderr)
                return 1
            again = run_quiet([envbuild, "build", ENV, "--json", "-q"], cwd=ROOT, env=eb_env)
            hit = json.loads(again.stdout)
            if not hit["cached"]:
                print(f"expected a cache hit, got {hit}", file=sys.stderr)
                return 1

            context = Path(tmp) / "context"
            rendered = run_quiet(
                [envbuild, "render", ENV, "-o", str(context)], cwd=ROOT, env=eb_env
            )
            if rendered.returncode != 0:
                print(rendered.stderr, file=sys.stderr)
                return 1
            docker_argv = [
                docker,
                "build",
                "-q",
                "--secret",
                f"id=envbuild-ca,src={ca_bundle()}",
                str(context),
            ]
            no_site = no_site_entry(envbuild, str(package.parent), sysconfig.get_path("purelib"))
            cases = [
                Case(
                    "docker build -q (cached)",
                    docker_argv,
                    env={**os.environ, "DOCKER_BUILDKIT": "1"},
                ),
                Case("envbuild build (cache hit)", [envbuild, "build", ENV], env=eb_env, cwd=ROOT),
            ]
            if shim:
                cases.append(
                    Case(
                        "envbuild build via pyenv shim", [shim, "build", ENV], env=eb_env, cwd=ROOT
                    )
                )
            cases += [
                Case("python -c pass", [py, "-c", "pass"]),
                Case("python -I -c pass", [py, "-I", "-c", "pass"]),
                Case("python -S -c pass", [py, "-S", "-c", "pass"]),
                Case("python + one inspect request", [py, "-c", INSPECT, hit["image"]]),
                Case(
                    "envbuild build (cache hit) under python -S",
                    [py, "-S", "-c", no_site, "build", ENV],
                    env=eb_env,
                    cwd=ROOT,
                ),
            ]
            stats = compare(cases, runs=args.runs, warmup=1)
        finally:
            untag_all(docker, f"{BENCH_PREFIX}/hello")

    base = stats[0]
    rows = [
        [s.name, fmt_ms(s.median), fmt_ms(s.p90), fmt_ms(s.minimum), ratio(s, base)] for s in stats
    ]
    print(
        f"Cache hit, {args.runs} interleaved runs each after 1 warm-up; "
        f"envbuild at {describe_commit(code)}; docker {docker_versions(docker)['engine']}; "
        f"{machine()['cores']} cores.\n"
    )
    print(table(["case", "median", "p90", "min", "ratio to docker build"], rows))
    path = save(
        "build_cache_hit",
        {
            "runs": args.runs,
            "warmup": 1,
            "code": code,
            "package": str(package),
            "docker": {"cli": docker, **docker_versions(docker)},
            "envbuild": envbuild,
            "shim": shim,
            "cases": [s.as_json() for s in stats],
            "ratio_envbuild_to_docker": round(stats[1].median / base.median, 4),
        },
    )
    print(f"\nraw numbers: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
