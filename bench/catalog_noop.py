"""Catalog no-op: `envbuild build --all curated` with every image present, vs docker's own no-ops.

A registry's CI runs the catalog build on every change; when nothing changed
it should cost next to nothing. envbuild answers each environment from its
content hash (one engine request each, in one process); the baseline is what
the same CI would do with plain docker: one fully cached `DOCKER_BUILDKIT=1
docker build -q` of each environment's rendered context (`envbuild render -o`,
the same CA secret), run one after the other, timed together.

The catalog must be built first (`envbuild build --all curated`, or
`pytest -m catalog`): the set-up checks that every environment is a cache hit
and stops otherwise. It uses envbuild's configured prefix and state, and
removes nothing. Runs alternate after one untimed warm-up round.

`--catalog DIR` measures another folder of environments, e.g. a copy of
curated/ whose bases were re-locked (`envbuild lock`) to the images this
machine holds, where the committed locks pin bases it cannot reproduce (a
base bootstrapped from the archive on another day has another image ID).

Usage: python3 bench/catalog_noop.py [--runs N] [--catalog DIR]
"""

from __future__ import annotations

import json
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

BASELINE = f"{BENCH_PREFIX}/catalog-noop-docker"


def main() -> int:
    args = cli(
        __doc__,
        default_runs=7,
        add_arguments=lambda parser: parser.add_argument(
            "--catalog",
            type=Path,
            default=ROOT / "curated",
            help="the folder of environments (default: curated/)",
        ),
    )
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

    with tempfile.TemporaryDirectory(prefix="envbuild-bench-catalog-") as tmp:
        # Tagged, so the images the baseline makes can be removed afterwards.
        script = noop_builds_script(docker, envbuild, folders, Path(tmp), BASELINE)
        cases = [
            Case(
                f"docker build -q of each of the {len(folders)} (all cached), in turn",
                ["sh", "-c", script],
            ),
            Case(
                f"envbuild build --all {catalog.name} (all cache hits)",
                [envbuild, "build", "--all", str(catalog), "-q"],
                cwd=ROOT,
            ),
        ]
        try:
            stats = compare(cases, runs=args.runs, warmup=1)
        finally:
            untag_all(docker, BASELINE)
    state = git_state(ROOT, MEASURED_PATHS)
    rows = [
        [s.name, fmt_ms(s.median), fmt_ms(s.minimum), fmt_ms(max(s.times)), ratio(s, stats[0])]
        for s in stats
    ]
    print(
        f"Catalog no-op, {len(folders)} environments, {args.runs} interleaved runs after one "
        f"warm-up round; envbuild at {describe_commit(state)}.\n"
    )
    print(table(["case", "median", "min", "max", "ratio"], rows))
    print(f"\nenvbuild / docker: {ratio(stats[1], stats[0])} (target <= 0.15x)")
    save(
        "catalog_noop",
        {
            "catalog": str(catalog),
            "environments": [f.name for f in folders],
            "cases": [s.as_json() for s in stats],
            "ratio": round(stats[1].median / stats[0].median, 4),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
