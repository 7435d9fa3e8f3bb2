"""Small shared helpers for the benchmarks in bench/ (standard library only).

Every benchmark follows the same shape: time whole processes, run the cases
*interleaved* in one run (so a noisy neighbour or a warming disk hits every
case alike), report medians and ratios, print a Markdown table to stdout and
write the raw numbers as JSON to ``bench/results/`` (git-ignored).

Typical use::

    from _common import Case, cli, compare, fmt_ms, ratio, save, table

    args = cli(__doc__, default_runs=9)
    cases = [Case("baseline", ["docker", "build", "-q", "ctx"]),
             Case("ours", ["envbuild", "build", "envs/hello"])]
    stats = compare(cases, runs=args.runs, warmup=1)
    rows = [[s.name, fmt_ms(s.median), fmt_ms(s.p90), ratio(s, stats[0])] for s in stats]
    print(table(["case", "median", "p90", "ratio"], rows))
    save("my_bench", {"cases": [s.as_json() for s in stats]})

Nothing here knows about envbuild; keep it that way.
"""

from __future__ import annotations

import argparse
import compileall
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"


# --------------------------------------------------------------------------
# Running and timing
# --------------------------------------------------------------------------


@dataclass
class Case:
    """One thing to time: a command line, run as a whole process.

    ``before`` runs (untimed) before every timed run, e.g. to remove an image
    so that the run starts cold; ``verify`` gets the run's stderr afterwards and
    raises if the run did not do what the case claims (e.g. a "cold" build that
    hit a cache). ``env`` replaces the environment when given.
    """

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    before: Callable[[], None] | None = None
    verify: Callable[[str], None] | None = None


def run_timed(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, str]:
    """Run ``argv`` to completion; return its wall time in seconds and its stderr.

    The clock covers spawn to exit, as a user at a shell sees it. stdout is
    discarded. A non-zero exit raises (with the command's stderr), so a broken
    case never turns into a fast-looking number.
    """
    start = time.perf_counter()
    proc = subprocess.run(
        list(argv),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{tail}")
    return elapsed, proc.stderr.decode(errors="replace")


def run_quiet(argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run an untimed helper command (set-up, clean-up), text output captured."""
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload,no-any-return]


@dataclass
class Stats:
    """The timings of one case (seconds) and their summary."""

    name: str
    argv: Sequence[str]
    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def p90(self) -> float:
        return percentile(self.times, 90)

    @property
    def minimum(self) -> float:
        return min(self.times)

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "argv": list(self.argv),
            "runs": len(self.times),
            "median_s": round(self.median, 6),
            "p90_s": round(self.p90, 6),
            "min_s": round(self.minimum, 6),
            "times_s": [round(t, 6) for t in self.times],
        }


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct``-th percentile by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * pct / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def compare(
    cases: Sequence[Case],
    *,
    runs: int,
    warmup: int = 1,
    progress: Callable[[str], None] | None = None,
) -> list[Stats]:
    """Time every case ``runs`` times, interleaved; return their stats in case order.

    Each round runs every case once; the starting case rotates from round to
    round (A B C, B C A, C A B, ...) so that no case always runs first or
    always follows the same one. ``warmup`` untimed rounds come first.
    """
    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    stats = [Stats(c.name, list(c.argv)) for c in cases]
    n = len(cases)
    for round_no in range(-warmup, runs):
        order = [(round_no + k) % n for k in range(n)] if round_no >= 0 else list(range(n))
        for idx in order:
            case = cases[idx]
            if case.before is not None:
                case.before()
            seconds, stderr = run_timed(case.argv, env=case.env, cwd=case.cwd)
            if case.verify is not None:
                case.verify(stderr)
            if round_no >= 0:
                stats[idx].times.append(seconds)
        label = "warm-up" if round_no < 0 else f"run {round_no + 1}/{runs}"
        say(
            f"{label}: "
            + "  ".join(f"{cases[i].name}={_last(stats[i], round_no)}" for i in range(n))
        )
    return stats


def _last(s: Stats, round_no: int) -> str:
    return fmt_ms(s.times[-1]) if round_no >= 0 and s.times else "-"


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def fmt_ms(seconds: float) -> str:
    """``0.0834`` -> ``"83.4 ms"``."""
    return f"{seconds * 1000:.1f} ms"


def fmt_s(seconds: float) -> str:
    """``13.42`` -> ``"13.42 s"``."""
    return f"{seconds:.2f} s"


def ratio(value: Stats, baseline: Stats) -> str:
    """The ratio of two medians, as ``"0.93x"``."""
    return f"{value.median / baseline.median:.2f}x"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (pipes escaped in cells)."""

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|")

    lines = [
        "| " + " | ".join(cell(h) for h in headers) + " |",
        "| " + " | ".join("---" for _ in headers) + " |",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def save(name: str, data: Mapping[str, object]) -> Path:
    """Write ``data`` plus machine and git facts to ``bench/results/<name>-<UTC time>.json``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{name}-{stamp}.json"
    document = {"benchmark": name, "utc": stamp, "machine": machine(), "git": git_state(), **data}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------
# Facts about the machine and the code measured
# --------------------------------------------------------------------------


def git_state(where: Path = ROOT, paths: Sequence[str] = (".",)) -> dict[str, object]:
    """The commit of the checkout holding ``where``, and whether ``paths`` differ from it.

    Pass the folder of the code measured (it may be another checkout than the
    one the benchmark runs from) and the paths, relative to its top, that hold it.
    """
    top = run_quiet(["git", "rev-parse", "--show-toplevel"], cwd=where).stdout.strip()
    head = run_quiet(["git", "rev-parse", "HEAD"], cwd=where).stdout.strip()
    status = run_quiet(["git", "status", "--porcelain", "--", *paths], cwd=top).stdout
    return {
        "toplevel": top,
        "commit": head,
        "short": head[:12] or "unknown",
        "dirty": bool(status.strip()),
        "dirty_paths": status.split("\n")[:20] if status.strip() else [],
    }


def describe_commit(state: Mapping[str, object]) -> str:
    """``"ab12cd34ef56"`` or ``"ab12cd34ef56 + uncommitted changes"`` for a table."""
    text = str(state["short"])
    return text + (" + uncommitted changes" if state["dirty"] else "")


def machine() -> dict[str, object]:
    """Cores, OS, kernel, Python and Docker engine versions."""
    os_name = ""
    try:
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "os": os_name,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "interpreter": interpreter(),
        "load_avg": os.getloadavg(),
    }


def startup_hooks(folders: Sequence[str] | None = None) -> list[str]:
    """The ``.pth`` files in ``folders`` (default: this interpreter's site
    folders) that run code at every start.

    A ``.pth`` line that starts with ``import`` is executed by ``site`` before
    any program runs, so a hook installed into the interpreter's site-packages
    (a CA injector, a coverage or profiler shim) is part of every start-up a
    benchmark times. A virtual environment made without
    ``--system-site-packages`` does not run the base interpreter's hooks.
    """
    if folders is None:
        import site

        folders = [*site.getsitepackages(), site.getusersitepackages()]
    found = []
    for folder in dict.fromkeys(folders):
        try:
            names = sorted(n for n in os.listdir(folder) if n.endswith(".pth"))
        except OSError:
            continue
        for name in names:
            try:
                text = Path(folder, name).read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            if any(line.startswith(("import ", "import\t")) for line in text.splitlines()):
                found.append(str(Path(folder, name)))
    return found


def interpreter() -> dict[str, object]:
    """Which Python runs envbuild here, and what its bare start costs.

    ``start_ms`` is the median of seven ``python -c pass``: the floor under
    every envbuild command timed with this interpreter.
    """
    times = []
    for _ in range(7):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append((time.perf_counter() - started) * 1000)
    return {
        "executable": sys.executable,
        "virtualenv": sys.prefix != sys.base_prefix,
        "startup_hooks": startup_hooks(),
        "start_ms": round(statistics.median(times), 2),
    }


def docker_versions(docker: str) -> dict[str, str]:
    """Client and engine versions of the docker CLI ``docker``."""
    out = run_quiet(
        [docker, "version", "--format", "{{.Client.Version}} {{.Server.Version}}"]
    ).stdout.split()
    return {"client": out[0] if out else "", "engine": out[1] if len(out) > 1 else ""}


def interpreter_script(name: str) -> str:
    """The real path of the console script ``name`` installed with this interpreter.

    Not whatever ``name`` resolves to on PATH: a pyenv shim there is a bash
    wrapper that adds tens of milliseconds to every start.
    """
    return str(Path(sys.executable).parent / name)


def compile_bytecode(package_dir: Path) -> None:
    """Write the ``.pyc`` files of ``package_dir``, as installing a package does.

    With ``PYTHONDONTWRITEBYTECODE`` set (it is on this machine) and an editable
    install whose sources change, every timed start would otherwise recompile
    the changed modules, a cost no installed copy pays.
    """
    if not compileall.compile_dir(str(package_dir), quiet=1):
        raise RuntimeError(f"cannot compile {package_dir}")


def cli(
    description: str | None,
    *,
    default_runs: int,
    minimum: int = 5,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """Parse ``--runs N`` (at least ``minimum``), and what ``add_arguments`` adds."""
    parser = argparse.ArgumentParser(description=(description or "").split("\n\n")[0])
    parser.add_argument(
        "--runs",
        type=int,
        default=default_runs,
        help=f"timed runs per case (default {default_runs}, at least {minimum})",
    )
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args()
    if args.runs < minimum:
        parser.error(f"--runs must be at least {minimum}")
    return args
