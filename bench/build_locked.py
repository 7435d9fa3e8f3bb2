"""Locked builds: envbuild (uv + cache mounts) vs a hand-written pip Dockerfile, and a pin change.

The environment: debian:bookworm-slim, the system python3 in a venv, and
numpy==1.26.4, requests==2.32.3, attrs==23.2.0 and six (one pin that the
third case changes), locked by `envbuild lock` (uv, with hashes).

Cases, run interleaved (each round rotates the order) after one warm-up round:

* **hand-written, cold** — bench/handwritten/locked/Dockerfile, what a
  competent person writes by hand (`pip install --no-cache-dir` of the same
  top-level pins), `DOCKER_BUILDKIT=1 docker build`, after
  `docker builder prune -af`;
* **envbuild, cold** — `envbuild build` of the locked environment after the
  same prune (cache mounts included: uv downloads everything too);
* **envbuild, cold layers, warm cache mounts** — `envbuild build --rebuild`
  (no layer cache; the uv and apt cache mounts kept, as on any machine that
  built before);
* **envbuild, one pin changed** — before each run (untimed) an image of the
  environment with six==X is built, then six is changed to a version never
  built before (its lock made beforehand, untimed) and `envbuild build` runs:
  the base, apt and venv layers come from the cache, the pip step runs again.

WARNING: this prunes the engine's whole build cache (every project's). The
images it built are removed when it ends.

Usage: python3 bench/build_locked.py [--runs N]
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

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

HANDWRITTEN = BENCH_DIR / "handwritten" / "locked"
HANDWRITTEN_REPO = f"{BENCH_PREFIX}/locked-handwritten"
NAME = "bench-locked"
PACKAGES = ["numpy==1.26.4", "requests==2.32.3", "attrs==23.2.0"]
# One more than runs + warm-up + the first "previous" build is needed.
SIX_VERSIONS = ["1.17.0", "1.16.0", "1.15.0", "1.14.0", "1.13.0", "1.12.0", "1.11.0", "1.10.0"]


def env_toml(six: str) -> str:
    packages = ", ".join(json.dumps(p) for p in [*PACKAGES, f"six=={six}"])
    return (
        f'schema = 1\nname = "{NAME}"\n\n[base]\nimage = "debian:bookworm-slim"\n\n'
        f'[python]\nversion = "3.11"\n\n[pip]\npackages = [{packages}]\n'
    )


def checked(argv: list[str], env: dict[str, str] | None = None) -> str:
    proc = run_quiet(argv, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout


class Bench:
    """The untimed steps between runs."""

    def __init__(self, docker: str, envbuild: str, eb_env: dict[str, str], work: Path) -> None:
        self.docker = docker
        self.envbuild = envbuild
        self.eb_env = eb_env
        self.work = work
        self.variants: dict[str, Path] = {}
        self.next_six = 0
        self.folder = work / "env"  # what the timed envbuild cases build

    def lock_variants(self) -> None:
        for six in SIX_VERSIONS:
            folder = self.work / f"six-{six}"
            folder.mkdir()
            (folder / "env.toml").write_text(env_toml(six))
            checked([self.envbuild, "lock", "-q", str(folder)], env=self.eb_env)
            self.variants[six] = folder

    def use(self, six: str) -> None:
        if self.folder.exists():
            shutil.rmtree(self.folder)
        shutil.copytree(self.variants[six], self.folder)

    def prune(self) -> None:
        checked([self.docker, "builder", "prune", "-af"])

    def before_handwritten(self) -> None:
        untag_all(self.docker, HANDWRITTEN_REPO)
        self.prune()

    def before_cold(self) -> None:
        self.use(SIX_VERSIONS[0])
        untag_all(self.docker, f"{BENCH_PREFIX}/{NAME}")
        self.prune()

    def before_rebuild(self) -> None:
        self.use(SIX_VERSIONS[0])

    def before_pin_change(self) -> None:
        previous, target = SIX_VERSIONS[self.next_six], SIX_VERSIONS[self.next_six + 1]
        self.next_six += 1
        self.use(previous)
        checked([self.envbuild, "build", "-q", str(self.folder)], env=self.eb_env)
        self.use(target)

    def size(self, ref: str) -> int:
        return int(checked([self.docker, "image", "inspect", "--format", "{{.Size}}", ref]))


def main() -> int:
    args = cli(__doc__, default_runs=5, minimum=3)
    if args.runs + 2 > len(SIX_VERSIONS):
        raise SystemExit(f"at most {len(SIX_VERSIONS) - 2} runs (six versions to change to)")
    envbuild = interpreter_script("envbuild")
    package = envbuild_package()
    compile_bytecode(package)
    code = git_state(package, MEASURED_PATHS)
    docker, _prefix = envbuild_settings()
    tag = f"{HANDWRITTEN_REPO}:latest"
    with tempfile.TemporaryDirectory(prefix="bench-locked-") as tmp:
        work = Path(tmp)
        (work / "home").mkdir()
        eb_env = bench_env(str(work / "home"))
        bench = Bench(docker, envbuild, eb_env, work)
        bench.lock_variants()
        build = [envbuild, "build", "-q", str(bench.folder)]
        cases = [
            Case(
                "hand-written pip Dockerfile, cold",
                [
                    docker,
                    "build",
                    "-q",
                    "--secret",
                    f"id=ca,src={ca_bundle()}",
                    "-t",
                    tag,
                    str(HANDWRITTEN),
                ],
                env={**os.environ, "DOCKER_BUILDKIT": "1"},
                before=bench.before_handwritten,
            ),
            Case("envbuild locked, cold", build, env=eb_env, before=bench.before_cold),
            Case(
                "envbuild locked, cold layers, warm cache mounts",
                [envbuild, "build", "-q", "--rebuild", str(bench.folder)],
                env=eb_env,
                before=bench.before_rebuild,
            ),
            Case(
                "envbuild locked, one pin changed",
                build,
                env=eb_env,
                before=bench.before_pin_change,
            ),
        ]
        try:
            stats = compare(cases, runs=args.runs, warmup=1)
            bench.use(SIX_VERSIONS[0])
            result = json.loads(checked([*build, "--json"], env=eb_env))
            sizes = {"handwritten": bench.size(tag), "envbuild": bench.size(result["image"])}
        finally:
            untag_all(docker, HANDWRITTEN_REPO)
            untag_all(docker, f"{BENCH_PREFIX}/{NAME}")

    hand, cold = stats[0], stats[1]
    rows = [
        [
            s.name,
            fmt_s(s.median),
            fmt_s(s.minimum),
            fmt_s(max(s.times)),
            f"{s.median / hand.median:.2f}x",
            f"{s.median / cold.median:.2f}x",
        ]
        for s in stats
    ]
    print(
        f"Locked builds, {args.runs} interleaved runs per case after 1 warm-up round; "
        f"envbuild at {describe_commit(code)}; docker {docker_versions(docker)['engine']}; "
        f"{machine()['cores']} cores. Image sizes: hand-written "
        f"{sizes['handwritten'] / 1e6:.0f} MB, envbuild {sizes['envbuild'] / 1e6:.0f} MB.\n"
    )
    print(table(["case", "median", "min", "max", "vs hand-written", "vs envbuild cold"], rows))
    path = save(
        "build_locked",
        {
            "runs": args.runs,
            "warmup": 1,
            "docker": {"cli": docker, **docker_versions(docker)},
            "code": code,
            "packages": PACKAGES,
            "image_sizes": sizes,
            "cases": [s.as_json() for s in stats],
            "ratio_cold_to_handwritten": round(cold.median / hand.median, 4),
            "ratio_pin_change_to_cold": round(stats[3].median / cold.median, 4),
        },
    )
    print(f"\nraw numbers: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
