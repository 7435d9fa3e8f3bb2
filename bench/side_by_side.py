"""Two envbuild checkouts and docker's baseline, timed in the same interleaved rounds.

The other benchmarks time the envbuild this interpreter imports against
docker; on a shared machine whose load moves from one run to the next, two
separate runs of them (one per commit) cannot tell a change of envbuild from a
change of load. This one times both checkouts (``--before DIR``, ``--after
DIR``: e.g. ``git worktree add --detach /tmp/eb-before COMMIT``) and the
baseline in every round, so that each round's load hits all of them alike:

* ``hit``: ``envbuild build envs/hello`` on a cache hit, against a cached
  ``DOCKER_BUILDKIT=1 docker build -q`` of its rendered context, and the floor
  (``python`` plus one inspect request on the engine socket);
* ``catalog``: ``envbuild build --all`` of a copy of the five curated
  environments (``--names``), all cache hits, against a cached ``docker build
  -q`` of each rendered context in turn;
* ``run``: ``envbuild run`` of an empty script in envs/hello against ``docker
  run --rm`` of the same image with the same mounts, user, variables and
  privileges (as ``run_overhead.py``).

Each checkout runs with its own ``ENVBUILD_HOME`` (a fresh temporary folder)
and ``PYTHONPATH``, through this interpreter's ``envbuild`` console script,
bytecode compiled first. Every image must exist already (build the catalog
first); the set-up builds twice per side so that the timed runs are hits.

Usage: python3 bench/side_by_side.py {hit,catalog,run} --before DIR --after DIR [--runs N]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import (
    Case,
    cli,
    compare,
    compile_bytecode,
    fmt_ms,
    interpreter_script,
    machine,
    ratio,
    save,
    table,
)
from _envbuild import ca_bundle, envbuild_settings

CURATED = ("python-3.11", "python-3.8", "pytorch-1.6-gpu", "sklearn-1.5-cpu", "tensorflow-2.16-cpu")
BASELINE = "envbuild-bench/side-by-side"
INSPECT = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_UNIX); s.connect('/var/run/docker.sock')\n"
    "s.sendall(b'GET /images/' + sys.argv[1].encode()"
    " + b'/json HTTP/1.0\\r\\nHost: d\\r\\n\\r\\n')\n"
    "while s.recv(65536): pass\n"
)


def _run(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr[-2000:]}")
    return done.stdout


def main() -> int:
    args = cli(
        __doc__,
        default_runs=11,
        add_arguments=lambda parser: (
            parser.add_argument("what", choices=("hit", "catalog", "run")),
            parser.add_argument("--before", type=Path, required=True),
            parser.add_argument("--after", type=Path, required=True),
            parser.add_argument("--names", nargs="+", default=list(CURATED)),
        ),
    )
    docker, _prefix = envbuild_settings()
    envbuild = interpreter_script("envbuild")
    sides = {"before": args.before.resolve(), "after": args.after.resolve()}
    tmp = Path(tempfile.mkdtemp(prefix="bench-side-by-side-"))
    envs: dict[str, dict[str, str]] = {}
    for name, root in sides.items():
        compile_bytecode(root / "builder" / "envbuild")
        home = str(tmp / f"home-{name}")
        envs[name] = {**os.environ, "PYTHONPATH": str(root / "builder"), "ENVBUILD_HOME": home}
    secret = f"id=envbuild-ca,src={ca_bundle()}"
    cases: list[Case] = []
    try:
        if args.what == "hit":
            for name, root in sides.items():
                for _ in range(2):  # the second build must be a hit
                    built = json.loads(
                        _run([envbuild, "build", "envs/hello", "--json", "-q"], envs[name], root)
                    )
                if not built["cached"]:
                    raise SystemExit(f"{name}: not a cache hit: {built}")
            context = tmp / "context"
            _run(
                [envbuild, "render", "envs/hello", "-o", str(context)],
                envs["after"],
                sides["after"],
            )
            cases.append(
                Case(
                    "docker build -q (cached)",
                    [docker, "build", "-q", "--secret", secret, str(context)],
                    env={**os.environ, "DOCKER_BUILDKIT": "1"},
                )
            )
            for name, root in sides.items():
                argv = [envbuild, "build", "envs/hello"]
                cases.append(
                    Case(f"envbuild build (cache hit), {name}", argv, env=envs[name], cwd=root)
                )
            floor = [sys.executable, "-c", INSPECT, built["image"]]
            cases.append(Case("python + one inspect request (floor)", floor))
        elif args.what == "catalog":
            catalogs = {}
            for name, root in sides.items():
                catalogs[name] = tmp / f"catalog-{name}"
                for env in args.names:
                    shutil.copytree(root / "curated" / env, catalogs[name] / env)
                for _ in range(2):
                    results = json.loads(
                        _run(
                            [envbuild, "build", "--all", str(catalogs[name]), "--json", "-q"],
                            envs[name],
                        )
                    )
                if not all(r["cached"] for r in results):
                    raise SystemExit(f"{name}: not every environment is a cache hit (build them)")
            steps = []
            for env in args.names:
                out = tmp / "contexts" / env
                _run(
                    [envbuild, "render", str(catalogs["after"] / env), "-o", str(out)],
                    envs["after"],
                )
                steps.append(
                    f"DOCKER_BUILDKIT=1 {docker} build -q --secret {secret} -t {BASELINE}:{env} "
                    f"{out} >/dev/null"
                )
            cases.append(
                Case(
                    f"docker build -q of each of the {len(args.names)}, in turn",
                    ["sh", "-c", " && ".join(steps)],
                )
            )
            for name in sides:
                argv = [envbuild, "build", "--all", str(catalogs[name]), "-q"]
                cases.append(Case(f"envbuild build --all (all hits), {name}", argv, env=envs[name]))
        else:
            drop = _run(
                [
                    sys.executable,
                    "-c",
                    "from envbuild.run.config import DROPPED_CAPS as d; print(*d)",
                ],
                envs["after"],
            ).split()
            for name, root in sides.items():
                built = json.loads(
                    _run([envbuild, "build", "envs/hello", "--json", "-q"], envs[name], root)
                )
            source = tmp / "source"
            source.mkdir()
            (source / "noop.py").write_text("")
            cases.append(
                Case(
                    "docker run --rm",
                    [
                        docker,
                        "run",
                        "--rm",
                        "--init",
                        "--user",
                        f"{os.getuid()}:{os.getgid()}",
                        "--shm-size",
                        "2g",
                        "-e",
                        "PYTHONUNBUFFERED=1",
                        "-e",
                        "NVIDIA_VISIBLE_DEVICES=void",
                        "--mount",
                        f"type=bind,source={source},target=/workspace,readonly",
                        "--workdir",
                        "/workspace",
                        "--security-opt",
                        "no-new-privileges",
                        *(arg for cap in drop for arg in ("--cap-drop", cap)),
                        built["id"],
                        "python",
                        "/workspace/noop.py",
                    ],
                )
            )
            for name, root in sides.items():
                argv = [envbuild, "run", "--source-dir", str(source), "envs/hello", "noop.py"]
                cases.append(Case(f"envbuild run, {name}", argv, env=envs[name], cwd=root))
        load = os.getloadavg()
        stats = compare(cases, runs=args.runs, warmup=1)
        load_after = os.getloadavg()
    finally:
        if args.what == "catalog":
            subprocess.run(
                [docker, "rmi", "-f", *(f"{BASELINE}:{env}" for env in args.names)],
                capture_output=True,
                check=False,
            )
        shutil.rmtree(tmp, ignore_errors=True)
    base = stats[0]
    rows = [
        [
            s.name,
            fmt_ms(s.median),
            fmt_ms(s.minimum),
            ratio(s, base),
            f"{(s.median - base.median) * 1000:+.0f} ms",
        ]
        for s in stats
    ]
    print(
        f"{args.what}: {args.runs} interleaved rounds after 1 warm-up; load average "
        f"{load[0]:.2f} at the start, {load_after[0]:.2f} at the end; {machine()['cores']} cores\n"
    )
    print(table(["case", "median", "min", "ratio to docker", "over docker"], rows))
    path = save(
        f"side_by_side_{args.what}",
        {
            "sides": {name: str(root) for name, root in sides.items()},
            "runs": args.runs,
            "load": [load, load_after],
            "cases": [s.as_json() for s in stats],
        },
    )
    print(f"\nraw numbers: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
