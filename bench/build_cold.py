"""Cold build: `envbuild build envs/hello` vs `docker build` of a hand-written Dockerfile.

"Cold" means no image and no BuildKit cache, for either side: before every
run, that side's image tags are removed and the engine's whole build cache is
pruned (`docker builder prune -af`, cache mounts included). The base image
`debian:bookworm-slim` is kept: it is local here and neither side pulls it.
Every run's build log is checked: a cached `RUN` step stops the benchmark
(the base's `FROM`, and a `COPY` of a context file, may still show as
cached; see BuildLog). The
median time of every BuildKit step is reported too, from the logs.

envbuild builds under the benchmarks' own image prefix
(`ENVBUILD_PREFIX=envbuild-bench`) and a fresh state folder (`ENVBUILD_HOME`),
so the images removed are only the benchmark's own (the user's
`envbuild/hello` may be in use by a container). The prefix changes neither the
content hash nor a layer, and once the build cache is pruned an existing
image is no cache for BuildKit. envbuild is started by the real path of its
console script next to this interpreter, with its bytecode compiled first.

The baseline is bench/handwritten/hello/Dockerfile, what a competent person
would write by hand for the same environment, built with
`DOCKER_BUILDKIT=1 <docker> build --secret id=ca,src=$PIP_CERT -t TAG DIR`.

The two sides alternate (A B, B A, ...) after one untimed warm-up round.

WARNING: this prunes the engine's whole build cache (every project's). When
it ends, the images it built are removed.

Usage: python3 bench/build_cold.py [--runs N]
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
import tempfile

from _common import (
    BENCH_DIR,
    ROOT,
    Case,
    cli,
    compare,
    compile_bytecode,
    describe_commit,
    docker_versions,
    fmt_s,
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
HANDWRITTEN = BENCH_DIR / "handwritten" / "hello"
HANDWRITTEN_REPO = f"{BENCH_PREFIX}/hello-handwritten"
HANDWRITTEN_TAG = f"{HANDWRITTEN_REPO}:latest"
_CACHED = re.compile(r"^#(\d+) CACHED$", re.MULTILINE)


def checked(argv: list[str], env: dict[str, str] | None = None) -> str:
    proc = run_quiet(argv, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout


_STEP = re.compile(r"^#(\d+) \[([^\]]*)\] (\w+)(.*)$", re.MULTILINE)
_EXPORT = re.compile(r"^#(\d+) (exporting to image)$", re.MULTILINE)
_DONE = re.compile(r"^#(\d+) DONE (\d+(?:\.\d+)?)s$", re.MULTILINE)


class BuildLog:
    """Checks each run's BuildKit log and keeps its step times.

    A cached `RUN` step stops the benchmark. After a prune, BuildKit (Engine
    20.10) still keeps the cache records that back images in the engine's
    store, so the base's `FROM` (the base is local and kept, by design) and a
    `COPY` of a context file onto the base can be reported `CACHED` when some
    image holds the identical layer: that costs nothing worth measuring, and
    is recorded.
    """

    # Step kinds that may show as cached in a cold build (see above).
    MAY_BE_CACHED = frozenset({"FROM", "COPY"})

    def __init__(self) -> None:
        self.cached: list[str] = []  # every cached FROM or COPY step seen
        self.runs: list[dict[str, float]] = []  # step title -> seconds, per run

    def __call__(self, stderr: str) -> None:
        steps: dict[str, tuple[str, str]] = {}
        for num, where, kind, rest in _STEP.findall(stderr):
            # "[stage-0 3/9] RUN ..." -> ("RUN", "[3/9] RUN ..."); "[internal] load ..." kept.
            where = where.split()[-1]
            steps.setdefault(num, (kind, " ".join(f"[{where}] {kind}{rest}".split())))
        for num, title in _EXPORT.findall(stderr):
            steps.setdefault(num, ("export", title))
        if not steps:
            raise RuntimeError(f"no build log to check:\n{stderr[-3000:]}")
        for num in _CACHED.findall(stderr):
            kind, title = steps.get(num, ("?", f"#{num}"))
            if kind not in self.MAY_BE_CACHED:
                raise RuntimeError(f"a cold build hit the cache: {title}")
            self.cached.append(title)
        times: dict[str, float] = {}
        for num, seconds in _DONE.findall(stderr):
            if num in steps:
                title = steps[num][1]
                times[title] = times.get(title, 0.0) + float(seconds)
        self.runs.append(times)

    def medians(self, skip: int = 0) -> dict[str, float]:
        """The median time of each step over the runs after the first ``skip``."""
        runs = self.runs[skip:]
        titles = dict.fromkeys(t for run in runs for t in run)
        return {t: statistics.median(run.get(t, 0.0) for run in runs) for t in titles}


class Cold:
    """The untimed steps that make each run cold."""

    def __init__(self, docker: str) -> None:
        self.docker = docker

    def prune(self) -> None:
        checked([self.docker, "builder", "prune", "-af"])

    def before_envbuild(self) -> None:
        untag_all(self.docker, f"{BENCH_PREFIX}/hello")
        self.prune()

    def before_handwritten(self) -> None:
        untag_all(self.docker, HANDWRITTEN_REPO)
        self.prune()

    def size(self, ref: str) -> int:
        return int(checked([self.docker, "image", "inspect", "--format", "{{.Size}}", ref]))


def main() -> int:
    args = cli(__doc__, default_runs=5, minimum=5)
    envbuild = interpreter_script("envbuild")
    package = envbuild_package()
    compile_bytecode(package)
    code = git_state(package, MEASURED_PATHS)
    docker, _prefix = envbuild_settings()
    with tempfile.TemporaryDirectory(prefix="bench-envbuild-home-") as home:
        eb_env = bench_env(home)
        cold = Cold(docker)
        checks = (BuildLog(), BuildLog())
        handwritten_argv = [
            docker,
            "build",
            "--secret",
            f"id=ca,src={ca_bundle()}",
            "-t",
            HANDWRITTEN_TAG,
            str(HANDWRITTEN),
        ]
        cases = [
            Case(
                "docker build, hand-written Dockerfile (cold)",
                handwritten_argv,
                env={**os.environ, "DOCKER_BUILDKIT": "1"},
                before=cold.before_handwritten,
                verify=checks[0],
            ),
            Case(
                "envbuild build (cold)",
                [envbuild, "build", ENV],
                env=eb_env,
                cwd=ROOT,
                before=cold.before_envbuild,
                verify=checks[1],
            ),
        ]
        try:
            stats = compare(cases, runs=args.runs, warmup=1)
            result = json.loads(checked([envbuild, "build", ENV, "--json", "-q"], env=eb_env))
            sizes = {
                "handwritten": cold.size(HANDWRITTEN_TAG),
                "envbuild": cold.size(result["image"]),
            }
        finally:
            untag_all(docker, HANDWRITTEN_REPO)
            untag_all(docker, f"{BENCH_PREFIX}/hello")

    base = stats[0]
    size_of = {base.name: sizes["handwritten"], stats[1].name: sizes["envbuild"]}
    rows = [
        [
            s.name,
            fmt_s(s.median),
            fmt_s(s.minimum),
            fmt_s(max(s.times)),
            ratio(s, base),
            f"{size_of[s.name] / 1e6:.0f} MB",
        ]
        for s in stats
    ]
    print(
        f"Cold build, {args.runs} alternating runs each after 1 warm-up round; "
        f"envbuild at {describe_commit(code)}; docker {docker_versions(docker)['engine']}; "
        f"{machine()['cores']} cores.\n"
    )
    print(table(["case", "median", "min", "max", "ratio to hand-written", "image size"], rows))
    # BuildKit's own step times (from the logs, warm-up excluded): where the time goes.
    for case, log in zip(cases, checks, strict=True):
        steps = [(t, sec) for t, sec in log.medians(skip=1).items() if sec >= 0.05]
        print(f"\nBuildKit steps of {case.name!r} (median of the timed runs, steps >= 0.05 s):\n")
        print(table(["step", "median"], [[t[:90], fmt_s(sec)] for t, sec in steps]))
    path = save(
        "build_cold",
        {
            "runs": args.runs,
            "warmup": 1,
            "docker": {"cli": docker, **docker_versions(docker)},
            "envbuild": envbuild,
            "code": code,
            "package": str(package),
            "prefix": BENCH_PREFIX,
            "handwritten": str(HANDWRITTEN.relative_to(ROOT)),
            "image_sizes": sizes,
            "cached_from_or_copy_steps": {
                c.name: k.cached for c, k in zip(cases, checks, strict=True)
            },
            "step_medians_s": {
                c.name: k.medians(skip=1) for c, k in zip(cases, checks, strict=True)
            },
            "cases": [s.as_json() for s in stats],
            "ratio_envbuild_to_handwritten": round(stats[1].median / base.median, 4),
        },
    )
    print(f"\nraw numbers: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
