"""What `envbuild run` costs on top of `docker run --rm`, for a script that does nothing.

    python bench/run_overhead.py [--rounds 15] [--env envs/hello] [--markdown]

Both commands run the same image (envbuild builds it first if needed), the same
empty script from the same read-only bind mount, with an init process, the
caller's uid:gid, the same variables and shm size, and the same privileges
(no-new-privileges, the capabilities envbuild drops), so that the difference is
envbuild itself: interpreter start, imports, the definition's hash, the cache
lookup, the run history and the cleanup check. The two are interleaved round by
round (after warm-up rounds) so that drift on a busy machine hits both alike;
the medians are compared.

The envbuild console script is called directly (not through a pyenv/asdf shim,
which would add its own ~60 ms), and the package's bytecode is compiled first,
as `pip install` does: with PYTHONDONTWRITEBYTECODE set, every run would
otherwise recompile the sources.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import describe_commit, docker_versions, git_state, save

ROOT = Path(__file__).resolve().parent.parent

TARGET_MS = 40.0


def _envbuild() -> list[str]:
    script = Path(sys.executable).parent / "envbuild"
    return [str(script)] if script.exists() else [sys.executable, "-m", "envbuild"]


def _time(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{argv[0]} failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="measured rounds (>= 5)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--env", default=str(ROOT / "envs" / "hello"))
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    if args.rounds < 5:
        parser.error("--rounds must be at least 5")

    from envbuild.run.config import DROPPED_CAPS
    from envbuild.settings import load_settings

    settings = load_settings()
    docker = shutil.which(settings.docker) or settings.docker
    envbuild = _envbuild()
    compileall.compile_dir(str(ROOT / "builder" / "envbuild"), quiet=1)

    home = tempfile.mkdtemp(prefix="envbuild-bench-home-")  # keep the user's run history clean
    env = {**os.environ, "ENVBUILD_HOME": home}
    built = subprocess.run(
        [*envbuild, "build", args.env, "--json", "-q"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    image_id = json.loads(built.stdout)["id"]

    with tempfile.TemporaryDirectory(prefix="envbuild-bench-") as tmp:
        source = Path(tmp)
        (source / "noop.py").write_text("")
        user = f"{os.getuid()}:{os.getgid()}"
        commands = {
            "envbuild run": [*envbuild, "run", "--source-dir", str(source), args.env, "noop.py"],
            "docker run --rm": [
                docker,
                "run",
                "--rm",
                "--init",
                "--user",
                user,
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
                *(arg for cap in DROPPED_CAPS for arg in ("--cap-drop", cap)),
                image_id,
                "python",
                "/workspace/noop.py",
            ],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for round_ in range(args.warmup + args.rounds):
            order = list(commands) if round_ % 2 == 0 else list(reversed(commands))
            for name in order:
                elapsed = _time(commands[name], env)
                if round_ >= args.warmup:
                    times[name].append(elapsed)

    shutil.rmtree(home, ignore_errors=True)
    ours = statistics.median(times["envbuild run"]) * 1000
    theirs = statistics.median(times["docker run --rm"]) * 1000
    delta = ours - theirs
    rows = [
        ("docker run --rm", theirs, times["docker run --rm"]),
        ("envbuild run", ours, times["envbuild run"]),
    ]
    verdict = "within" if delta <= TARGET_MS else "over"
    saved = save(
        "run_overhead",
        {
            "docker": {"cli": docker, **docker_versions(docker)},
            "envbuild": envbuild,
            "image": image_id,
            "target_ms": TARGET_MS,
            "overhead_ms": round(delta, 1),
            "ratio": round(ours / theirs, 3),
            "cases": {
                name: {"median_ms": round(median, 1), "seconds": samples}
                for name, median, samples in rows
            },
        },
    )
    if args.markdown:
        print("| command | median (ms) | min-max (ms) | runs |")
        print("| --- | ---: | ---: | ---: |")
        for name, median, samples in rows:
            low, high = min(samples) * 1000, max(samples) * 1000
            print(f"| `{name}` | {median:.0f} | {low:.0f}-{high:.0f} | {len(samples)} |")
        print()
        print(
            f"Overhead: **{delta:+.0f} ms** (ratio {ours / theirs:.2f}), "
            f"{verdict} the +{TARGET_MS:.0f} ms target."
        )
    else:
        for name, median, samples in rows:
            print(f"{name:<16} median {median:7.1f} ms  (n={len(samples)})")
        print(
            f"overhead {delta:+.1f} ms, ratio {ours / theirs:.2f} ({verdict} +{TARGET_MS:.0f} ms)"
        )
    print(f"(envbuild: {' '.join(envbuild)}; docker: {docker}; image {image_id[:19]})")
    print(f"(raw timings: {saved.relative_to(ROOT)}; code at {describe_commit(git_state())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
