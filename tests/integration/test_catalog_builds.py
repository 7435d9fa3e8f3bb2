"""Build and test every curated environment for real: `pytest -m catalog`.

Not part of the default run (pyproject deselects the marker): the PyTorch
image alone downloads 749 MB. Each environment is built with the real
command line and its [[tests]] run inside the image; the results (size,
build time, checks) are written to bench/results/catalog.json for the
record in docs/catalog.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CURATED = sorted(p for p in (ROOT / "curated").iterdir() if (p / "env.toml").is_file())
RESULTS = ROOT / "bench" / "results" / "catalog.json"

pytestmark = [pytest.mark.catalog, pytest.mark.docker]


def _envbuild(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "envbuild", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=dict(os.environ),
    )


def _record(name: str, data: dict[str, object]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    current = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    current[name] = data
    RESULTS.write_text(json.dumps(current, indent=2, sort_keys=True))


@pytest.mark.parametrize("folder", CURATED, ids=[p.name for p in CURATED])
def test_curated_environment_builds_and_passes_its_checks(folder: Path, docker_cli: str) -> None:
    started = time.monotonic()
    built = _envbuild("build", "--json", "--strict", "-q", str(folder))
    assert built.returncode == 0, built.stderr[-4000:]
    result = json.loads(built.stdout)
    seconds = time.monotonic() - started
    size = int(
        subprocess.run(
            [docker_cli, "image", "inspect", "--format", "{{.Size}}", result["image"]],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    tested = _envbuild("test", "--json", "--force", "-q", str(folder))
    reports = json.loads(tested.stdout) if tested.stdout.strip() else []
    _record(
        folder.name,
        {
            "image": result["image"],
            "cached": result["cached"],
            "build_seconds": round(seconds, 1),
            "size_bytes": size,
            "checks": [
                {"name": r["name"], "passed": r["passed"], "seconds": round(r["seconds"], 1)}
                for rep in reports
                for r in rep["results"]
            ],
        },
    )
    assert tested.returncode == 0, tested.stderr[-4000:]
