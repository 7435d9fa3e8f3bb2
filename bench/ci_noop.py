"""CI no-op: `envbuild ci curated --registry R --push` when the registry holds everything.

An image registry's CI runs on every change; when nothing changed, its whole
job (validate, version guard, `lock --check`, base check, build, `[[tests]]`,
verified push, `publish --check`) should cost a fraction of what plain docker
pays just to find out that nothing needs building. The baseline is that:
docker's own fully cached `DOCKER_BUILDKIT=1 docker build -q` of each
environment's rendered context, one after the other (as bench/catalog_noop.py).

Set-up: the catalog must be built (every environment a cache hit, as for
catalog_noop.py); a loopback registry (Debian's docker-registry, as the tests
start it) is started empty and `envbuild push --all` fills it, so the timed
`ci --push` finds every image in the engine and in the registry (each push is
the manifest HEADs that prove it). `ci` keeps its state (the recorded
`[[tests]]` results) in a folder of its own, which the untimed warm-up round
fills, as a CI cache would; that round's job, green and changing nothing, is
the one `ci` records (docs/ci.md), so the timed runs are answered from that
record after checking it again. Everything the benchmark made is removed at the
end: the registry, its storage, the registry tags it added, the baseline's
tags; the catalog's own images stay.

Usage: python3 bench/ci_noop.py [--runs N] [--catalog DIR]
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from _common import (
    ROOT,
    Case,
    cli,
    compare,
    compile_bytecode,
    describe_commit,
    fmt_ms,
    git_state,
    interpreter_script,
    ratio,
    run_quiet,
    save,
    table,
)
from _envbuild import (
    BENCH_PREFIX,
    MEASURED_PATHS,
    envbuild_package,
    envbuild_settings,
    noop_builds_script,
    untag_all,
)

sys.path.insert(0, str(ROOT))
from tests.integration import registry as registries  # importable once ROOT is on the path

BASELINE = f"{BENCH_PREFIX}/ci-noop-docker"
TARGET = 0.2


def main() -> int:
    args = cli(
        __doc__,
        default_runs=5,
        minimum=3,
        add_arguments=lambda parser: parser.add_argument(
            "--catalog",
            type=Path,
            default=ROOT / "curated",
            help="the folder of environments (default: curated/)",
        ),
    )
    reason = registries.available()
    if reason:
        raise SystemExit(reason)
    docker, _prefix = envbuild_settings()
    compile_bytecode(envbuild_package())
    envbuild = interpreter_script("envbuild")
    catalog = args.catalog.resolve()
    folders = sorted(p for p in catalog.iterdir() if (p / "env.toml").is_file())

    check = run_quiet([envbuild, "build", "--all", str(catalog), "--json", "-q"], cwd=ROOT)
    if check.returncode != 0:
        raise SystemExit(f"the catalog does not build: {check.stderr[-2000:]}")
    misses = [r["env"] for r in json.loads(check.stdout) if not r["cached"]]
    if misses:
        raise SystemExit(f"not every environment is a cache hit (build the catalog): {misses}")

    work = Path(tempfile.mkdtemp(prefix="envbuild-bench-ci-"))
    reg = registries.start(work / "registry")
    target = f"{reg.host}/bench"
    env = {**os.environ, "ENVBUILD_HOME": str(work / "home")}
    try:
        pushed = run_quiet(
            [envbuild, "push", "--all", str(catalog), "--registry", target, "--json", "-q"],
            cwd=ROOT,
            env=env,
        )
        if pushed.returncode != 0:
            raise SystemExit(f"the push of the catalog failed: {pushed.stderr[-2000:]}")
        green = run_quiet(
            [envbuild, "ci", str(catalog), "--registry", target, "--push", "--json", "-q"],
            cwd=ROOT,
            env=env,
        )
        report = json.loads(green.stdout or "{}")
        tiers = sorted({e.get("tier") for e in report.get("environments", [])})
        if green.returncode != 0 or tiers != ["local"]:
            raise SystemExit(
                f"envbuild ci is not a green no-op here (exit {green.returncode}, tiers "
                f"{tiers}):\n{green.stdout[-3000:]}{green.stderr[-2000:]}"
            )

        def verify_noop(stderr: str) -> None:
            if "pushing" in stderr.lower() or "building" in stderr.lower():
                raise RuntimeError(f"the ci run did work it should not have:\n{stderr[-2000:]}")

        script = noop_builds_script(docker, envbuild, folders, work / "contexts", BASELINE)
        cases = [
            Case(
                f"docker build -q of each of the {len(folders)} (all cached), in turn",
                ["sh", "-c", script],
            ),
            Case(
                f"envbuild ci {catalog.name} --registry R --push (registry holds all)",
                [envbuild, "ci", str(catalog), "--registry", target, "--push", "-q"],
                cwd=ROOT,
                env=env,
                verify=verify_noop,
            ),
        ]
        try:
            stats = compare(cases, runs=args.runs, warmup=1)
        finally:
            untag_all(docker, BASELINE)
    finally:
        registries.stop(reg)
        for folder in folders:  # the registry tags `push` added, by name only
            untag_all(docker, f"{target}/{json_name(folder)}")
        shutil.rmtree(work, ignore_errors=True)

    state = git_state(ROOT, MEASURED_PATHS)
    rows = [
        [s.name, fmt_ms(s.median), fmt_ms(s.minimum), fmt_ms(max(s.times)), ratio(s, stats[0])]
        for s in stats
    ]
    load = os.getloadavg()
    print(
        f"CI no-op, {len(folders)} environments, {args.runs} interleaved runs after one warm-up "
        f"round; envbuild at {describe_commit(state)}; load average {load[0]:.1f}.\n"
    )
    print(table(["case", "median", "min", "max", "ratio"], rows))
    print(f"\nenvbuild ci / docker: {ratio(stats[1], stats[0])} (target <= {TARGET}x)")
    save(
        "ci_noop",
        {
            "catalog": str(catalog),
            "environments": [f.name for f in folders],
            "cases": [s.as_json() for s in stats],
            "ratio": round(stats[1].median / stats[0].median, 4),
            "load_average": load,
        },
    )
    return 0


def json_name(folder: Path) -> str:
    """The environment's name as its definition says (the registry repository's last part)."""
    for line in (folder / "env.toml").read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "name":
            return value.strip().strip('"')
    return folder.name


if __name__ == "__main__":
    sys.exit(main())
