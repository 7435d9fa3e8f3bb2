"""The registry tier against docker's own push and pull, on a loopback registry.

    python3 bench/registry.py [--runs 5] [--pull-mb 100]

Three comparisons, each interleaved round by round (the starting case
alternates), medians compared:

* **push**: `envbuild push envs/hello` (two tags, each verified by a manifest
  HEAD) vs `docker push` of the same image's two tags. Every run pushes to a
  registry started empty for it (its own storage and port), so every layer is
  really uploaded: a registry that already holds the layers makes any push
  instant.
* **re-push**: the same image again, to the registry that holds it: envbuild
  checks and pushes nothing; `docker push` walks every layer.
* **registry hit**: `envbuild build --registry R ENV` of an image the registry
  holds and the engine does not vs `docker pull R/...@digest` of the same
  image. The image is a single layer of random bytes (`docker import`, so no
  build cache holds it: MACHINE.md's note that a pull is instant while the
  build cache holds the layers) labelled with ENV's hash; before every run
  the engine's copy is removed, so each run downloads the whole layer.

The environment is a locked copy of envs/hello (`envbuild lock`, made in the
benchmark's own folder): unlocked, its hash follows whatever image
`debian:bookworm-slim` names at the moment, and on a shared engine a test may
re-tag it mid-run. Registries come from tests/integration/registry.py
(Debian's docker-registry, which scripts/setup installs). envbuild runs under
its own image prefix and state folder; every image and registry the benchmark
made is removed at the end.
"""

from __future__ import annotations

import argparse
import compileall
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from _common import ROOT, Stats, describe_commit, docker_versions, git_state, save, table

sys.path.insert(0, str(ROOT))
from tests.integration import registry as registries  # importable once ROOT is on the path

HELLO = ROOT / "envs" / "hello"  # copied and locked into the work folder
REPUSH_TARGET_S = 0.100


def _envbuild() -> list[str]:
    script = Path(sys.executable).parent / "envbuild"
    return [str(script)] if script.exists() else [sys.executable, "-m", "envbuild"]


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def _timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    _run(argv, env)
    return time.perf_counter() - started


def _rounds(
    cases: dict[str, Callable[[], float]], runs: int, warmup: int, label: str
) -> list[Stats]:
    stats = {name: Stats(name, []) for name in cases}
    for round_no in range(-warmup, runs):
        order = list(cases) if round_no % 2 == 0 else list(reversed(cases))
        for name in order:
            seconds = cases[name]()
            if round_no >= 0:
                stats[name].times.append(seconds)
        shown = "  ".join(
            f"{n}={s.times[-1] * 1000:.0f} ms"
            for n, s in stats.items()
            if s.times and round_no >= 0
        )
        print(f"{label} {'warm-up' if round_no < 0 else round_no + 1}: {shown}", file=sys.stderr)
    return list(stats.values())


def _random_layer(megabytes: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = os.urandom(megabytes * 1024 * 1024)
        info = tarfile.TarInfo("random.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured rounds (>= 3)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--pull-mb", type=int, default=100, help="size of the pulled layer")
    parser.add_argument(
        "--skip-push",
        action="store_true",
        help="leave out the push comparison (minutes); re-push and registry hit only",
    )
    args = parser.parse_args()
    if args.runs < 3:
        parser.error("--runs must be at least 3")
    reason = registries.available()
    if reason:
        sys.exit(reason)

    from envbuild.settings import load_settings

    docker = shutil.which(load_settings().docker) or load_settings().docker
    envbuild = _envbuild()
    compileall.compile_dir(str(ROOT / "builder" / "envbuild"), quiet=1)
    token = uuid.uuid4().hex[:8]
    prefix = f"envbuild-bench-reg-{token}"
    work = Path(tempfile.mkdtemp(prefix="envbuild-bench-registry-"))
    env = {**os.environ, "ENVBUILD_PREFIX": prefix, "ENVBUILD_HOME": str(work / "home")}
    made_tags: list[str] = []
    try:
        hello = work / "hello"
        shutil.copytree(HELLO, hello)
        _run([*envbuild, "lock", "-q", str(hello)], env)
        built = json.loads(_run([*envbuild, "build", "--json", "-q", str(hello)], env))
        image, version_tag = built["image"], f"{prefix}/hello:1"
        made_tags += [image, version_tag]
        size_mb = int(json.loads(_run([docker, "image", "inspect", image]))[0]["Size"]) / 1e6

        # -- push, to a registry started empty for each run -----------------------------
        def fresh_push(ours: bool) -> float:
            root = work / f"reg-{uuid.uuid4().hex[:8]}"
            reg = registries.start(root)
            try:
                if ours:
                    return _timed(
                        [*envbuild, "push", "-q", "--registry", reg.host, str(hello)], env
                    )
                refs = [f"{reg.host}/hello:{built['hash'][:12]}", f"{reg.host}/hello:1"]
                for ref in refs:
                    _run([docker, "tag", image, ref])
                started = time.perf_counter()
                for ref in refs:
                    _run([docker, "push", "-q", ref])
                return time.perf_counter() - started
            finally:
                registries.stop(reg)
                _untag_registry(docker, reg.host)
                shutil.rmtree(root, ignore_errors=True)

        push = (
            []
            if args.skip_push
            else _rounds(
                {
                    "docker push (2 tags)": lambda: fresh_push(False),
                    "envbuild push": lambda: fresh_push(True),
                },
                args.runs,
                args.warmup,
                "push",
            )
        )

        # -- re-push and the registry hit, on one registry --------------------------------
        own_work: list[float] = []  # what `push --json` reports: its work without the start

        def repush_once(host: str) -> float:
            argv = [*envbuild, "push", "--json", "-q", "--registry", host, str(hello)]
            started = time.perf_counter()
            out = _run(argv, env)
            seconds = time.perf_counter() - started
            result = json.loads(out)
            if result["pushed"]:
                sys.exit("the re-push pushed: the registry did not hold the image")
            own_work.append(float(result["seconds"]))
            return seconds

        reg = registries.start(work / "registry")
        try:
            _run([*envbuild, "push", "-q", "--registry", reg.host, str(hello)], env)
            hash_ref = f"{reg.host}/hello:{built['hash'][:12]}"
            repush = _rounds(
                {
                    "docker push (2 tags)": lambda: (
                        _timed([docker, "push", "-q", hash_ref])
                        + _timed([docker, "push", "-q", f"{reg.host}/hello:1"])
                    ),
                    "envbuild push": lambda: repush_once(reg.host),
                },
                args.runs,
                args.warmup,
                "re-push",
            )
            hit, hit_info = _registry_hit(docker, envbuild, env, reg, built, args, work)
        finally:
            registries.stop(reg)
            _untag_registry(docker, reg.host)
    finally:
        for tag in made_tags:
            subprocess.run([docker, "rmi", tag], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)

    def rows(stats: list[Stats]) -> list[list[object]]:
        base = stats[0].median
        return [
            [
                f"`{s.name}`",
                f"{s.median * 1000:.0f} ms",
                f"{min(s.times) * 1000:.0f}-{max(s.times) * 1000:.0f} ms",
                f"{s.median / base:.2f}x",
            ]
            for s in stats
        ]

    headers = ["case", "median", "min-max", "ratio"]
    if push:
        print(f"### Push ({size_mb:.0f} MB image, envs/hello, to an empty registry each run)\n")
        print(table(headers, rows(push)))
    print("\n### Re-push of the unchanged image\n")
    print(table(headers, rows(repush)))
    repush_ours = statistics.median(repush[1].times)
    verdict = "within" if repush_ours <= REPUSH_TARGET_S else "over"
    work_ms = statistics.median(own_work[args.warmup :]) * 1000
    floor = _timed([*envbuild, "--version"])
    print(
        f"\nenvbuild re-push: {repush_ours * 1000:.0f} ms, {verdict} the 100 ms target; "
        f"its own work (inspect + two manifest HEADs, as `--json` reports it) {work_ms:.1f} ms; "
        f"`envbuild --version` {floor * 1000:.0f} ms; load average {os.getloadavg()[0]:.1f}."
    )
    print(f"\n### Registry hit ({args.pull_mb} MB random layer the engine does not hold)\n")
    print(table(headers, rows(hit)))
    saved = save(
        "registry",
        {
            "docker": {"cli": docker, **docker_versions(docker)},
            "envbuild": envbuild,
            "image_mb": round(size_mb, 1),
            "pull_mb": args.pull_mb,
            "hit_image": hit_info,
            "push": [s.as_json() for s in push],
            "repush": [s.as_json() for s in repush],
            "repush_own_work_s": own_work[args.warmup :],
            "load_average": os.getloadavg(),
            "hit": [s.as_json() for s in hit],
        },
    )
    print(f"\n(raw timings: {saved.relative_to(ROOT)}; code at {describe_commit(git_state())})")
    return 0


def _untag_registry(docker: str, host: str) -> None:
    out = subprocess.run(
        [docker, "images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for line in out.splitlines():
        image_id, _, ref = line.partition(" ")
        if ref.startswith(f"{host}/"):
            target = ref if not ref.endswith(":<none>") else image_id
            subprocess.run([docker, "rmi", target], capture_output=True, check=False)


def _registry_hit(
    docker: str,
    envbuild: list[str],
    env: dict[str, str],
    reg: registries.LoopbackRegistry,
    built: dict[str, object],
    args: argparse.Namespace,
    work: Path,
) -> tuple[list[Stats], dict[str, object]]:
    """Time a pull of an image whose only layer no engine store or build cache holds."""
    digest_hex = str(built["hash"])
    tag = f"{reg.host}/hello:{digest_hex[:12]}"
    layer = _random_layer(args.pull_mb)
    subprocess.run(
        [docker, "import", "--change", f"LABEL io.envbuild.hash={digest_hex}", "-", tag],
        input=layer,
        capture_output=True,
        check=True,
    )
    _run([docker, "push", "-q", tag])
    image_id = _run([docker, "image", "inspect", "--format", "{{.Id}}", tag]).strip()
    digest = reg.manifest_digest("hello", digest_hex[:12])
    assert digest is not None
    prefix = env["ENVBUILD_PREFIX"]

    def forget() -> None:
        subprocess.run([docker, "rmi", "--force", image_id], capture_output=True, check=False)
        if (
            subprocess.run([docker, "image", "inspect", image_id], capture_output=True).returncode
            == 0
        ):
            sys.exit(f"cannot remove {image_id} before a pull")

    def ours() -> float:
        forget()
        seconds = _timed(
            [*envbuild, "build", "--json", "-q", "--registry", reg.host, str(work / "hello")], env
        )
        got = _run([docker, "image", "inspect", "--format", "{{.Id}}", f"{prefix}/hello:1"]).strip()
        if got != image_id:
            sys.exit(f"envbuild build answered {got}, not the registry's {image_id}")
        return seconds

    def theirs() -> float:
        forget()
        return _timed([docker, "pull", "-q", f"{reg.host}/hello@{digest}"])

    # The local hello image must not answer first: its tags go for this part.
    for ref in (f"{prefix}/hello:{digest_hex[:12]}", f"{prefix}/hello:1"):
        subprocess.run([docker, "rmi", ref], capture_output=True, check=False)
    try:
        stats = _rounds(
            {"docker pull": theirs, "envbuild build --registry": ours},
            args.runs,
            args.warmup,
            "registry hit",
        )
    finally:
        forget()
    return stats, {"id": image_id, "digest": digest}


if __name__ == "__main__":
    sys.exit(main())
