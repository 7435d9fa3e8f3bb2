"""What `envbuild run --distribution pytorch` costs on top of the same job started by hand.

    python3 bench/distributed.py [--runs 9] [--image REF] [--light]

Two cases, interleaved round by round after a warm-up round, medians compared:

* ``envbuild run --distribution pytorch --nodes 2 --procs-per-node 2``: a job
  of 2 nodes x 2 processes whose script does nothing (``noop.py`` is empty);
* by hand, the same two containers with the docker CLI, in one bash: ``docker
  network create``, ``docker run --rm`` of node 0 in the background and of
  node 1 in the foreground, ``wait`` for node 0, ``docker network rm``; each
  container with the command and variables envbuild gives
  it (torch's launcher, ``MASTER_ADDR``, ``WORLD_SIZE``...), and the same
  user, mounts, init, shm size and privileges.

What envbuild adds is its start-up, the run history, the start order (node 1
starts once node 0 runs), the rank shim in front of each process, the live
prefixed output and the labelled cleanup. The launcher itself imports torch
in both cases (about a second per node on two cores), which is why both are
several seconds, and why a busy machine's noise is large: the table gives
the difference of the medians and the median of each round's difference
(the two cases of a round run back to back). The target (issue 11) is at
most +0.5 s.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from _common import (
    Case,
    cli,
    compare,
    compile_bytecode,
    describe_commit,
    docker_versions,
    fmt_s,
    git_state,
    interpreter_script,
    run_quiet,
    save,
    table,
)
from _envbuild import MEASURED_PATHS, envbuild_package, envbuild_settings

TARGET_S = 0.5


def _by_hand(
    docker: str, image_id: str, source: Path, name: str, distribution: object
) -> list[str]:
    """One bash command line: the two nodes envbuild would run, started by hand.

    ``name`` names the network and, with ``-0``/``-1``, the containers.
    """
    from envbuild.run.config import RunConfig
    from envbuild.run.planning import plan

    the_plan = plan(
        RunConfig(
            f"image:{image_id}",
            "noop.py",
            source_directory=source,
            distribution=distribution,  # type: ignore[arg-type]
            name=name,
        )
    )
    nodes = the_plan.nodes(name)
    spec = the_plan.container_spec(image_id, name)
    common = [
        "--init",
        "--network",
        name,
        "--user",
        str(spec.user),
        "--shm-size",
        "2g",
        "--workdir",
        str(spec.workdir),
        "--security-opt",
        "no-new-privileges",
        *(a for cap in spec.cap_drop for a in ("--cap-drop", cap)),
        *(
            a
            for m in spec.mounts
            for a in ("--mount", f"type=bind,source={m.source},target={m.target},readonly")
        ),
        *(a for key, value in the_plan.variables for a in ("-e", f"{key}={value}")),
    ]

    def node(index: int) -> str:
        # The launcher runs the script itself: the hand-made job has no rank shim.
        argv = [a for a in nodes[index].argv if a != "/run/envbuild/rank.py"]
        env = [a for key, value in nodes[index].environment for a in ("-e", f"{key}={value}")]
        head = [docker, "run", "--rm", "--name", nodes[index].host]
        return shlex.join([*head, *common, *env, image_id, *argv])

    q = shlex.quote
    # Node 0 in the background, node 1 in the foreground, both attached as
    # `docker run` is; then wait for node 0 and remove the network.
    script = (
        f"set -e; {q(docker)} network create {q(name)} >/dev/null; "
        f"{node(0)} & zero=$!; {node(1)}; wait $zero; "
        f"{q(docker)} network rm {q(name)} >/dev/null"
    )
    return ["bash", "-c", script]


def main() -> int:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--image", help="default: envbuild/pytorch-1.6-gpu:5")
        parser.add_argument(
            "--light",
            action="store_true",
            help="a job of 2 one-process nodes (--distribution tensorflow, no framework "
            "imported) in envbuild/python-3.11:3: the executor's own cost, less noise",
        )

    args = cli(__doc__, default_runs=9, add_arguments=extra)
    from envbuild.run.config import PyTorch, TensorFlow

    if args.light:
        image = args.image or "envbuild/python-3.11:3"
        distribution: object = TensorFlow(2)
        job = ["--distribution", "tensorflow", "--nodes", "2"]
    else:
        image = args.image or "envbuild/pytorch-1.6-gpu:5"
        distribution = PyTorch(2, 2, "gloo", "launch")
        job = ["--distribution", "pytorch", "--nodes", "2", "--procs-per-node", "2"]
        job += ["--torch-launcher", "launch"]
    docker, _ = envbuild_settings()
    docker = shutil.which(docker) or docker
    package = envbuild_package()
    compile_bytecode(package)
    found = run_quiet([docker, "image", "inspect", "--format", "{{.Id}}", image])
    if found.returncode != 0:
        sys.exit(f"no image {image}: build it first (envbuild build curated/...)")
    image_id = found.stdout.strip()
    envbuild = interpreter_script("envbuild")
    if not Path(envbuild).exists():
        envbuild = ""

    with tempfile.TemporaryDirectory(prefix="envbuild-bench-") as tmp:
        source = Path(tmp) / "src"
        source.mkdir()
        (source / "noop.py").write_text("")
        source.chmod(0o755)
        home = Path(tmp) / "home"
        env = {**os.environ, "ENVBUILD_HOME": str(home)}
        ours = [
            *([envbuild] if envbuild else [sys.executable, "-m", "envbuild"]),
            "run",
            *job,
            "--source-dir",
            str(source),
            f"image:{image_id}",
            "noop.py",
        ]
        name = "envbuild-bench-" + os.urandom(4).hex()
        cases = [
            Case(
                "docker run x2, by hand",
                _by_hand(docker, image_id, source, name, distribution),
                env=env,
            ),
            Case("envbuild run --distribution", ours, env=env),
        ]
        try:
            stats = compare(cases, runs=args.runs, warmup=1)
        finally:
            for leftover in (f"{name}-0", f"{name}-1"):
                run_quiet([docker, "rm", "-f", leftover])
            run_quiet([docker, "network", "rm", name])

    hand, ours_stats = stats
    delta = ours_stats.median - hand.median
    # The two cases of a round run back to back: their difference sees the same load.
    paired = statistics.median(b - a for a, b in zip(hand.times, ours_stats.times, strict=True))
    verdict = "within" if delta <= TARGET_S else "over"
    rows = [
        [
            f"`{s.name}`",
            fmt_s(s.median),
            f"{fmt_s(s.minimum)} - {fmt_s(max(s.times))}",
            len(s.times),
            f"{s.median / hand.median:.2f}x",
        ]
        for s in stats
    ]
    code = git_state(package.parent.parent, MEASURED_PATHS)
    saved = save(
        "distributed",
        {
            "docker": {"cli": docker, **docker_versions(docker)},
            "image": image_id,
            "job": job,
            "target_s": TARGET_S,
            "overhead_s": round(delta, 3),
            "paired_overhead_s": round(paired, 3),
            "ratio": round(ours_stats.median / hand.median, 3),
            "stdev_s": {s.name: round(statistics.pstdev(s.times), 3) for s in stats},
            "cases": [s.as_json() for s in stats],
        },
    )
    print(table(["case", "median", "min - max", "runs", "ratio"], rows))
    print()
    print(
        f"Overhead: **{delta:+.2f} s** (ratio {ours_stats.median / hand.median:.2f}), "
        f"{verdict} the +{TARGET_S:.1f} s target; median of the rounds' differences "
        f"{paired:+.2f} s."
    )
    print(f"(load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())})")
    print(f"(docker: {docker}; image {image_id[:19]}; code at {describe_commit(code)})")
    print(f"(raw timings: {saved.relative_to(saved.parents[2])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
