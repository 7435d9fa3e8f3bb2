"""envbuild build against the real engine: images, cache hits, failures, labels, values.

Every test builds under its own image prefix and removes what it made.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "envs" / "hello"

pytestmark = pytest.mark.docker


class Envbuild:
    """Runs the real envbuild command line with an isolated prefix and state folder."""

    def __init__(self, docker: str, prefix: str, home: Path) -> None:
        self.docker = docker
        self.prefix = prefix
        self.env = {**os.environ, "ENVBUILD_PREFIX": prefix, "ENVBUILD_HOME": str(home)}

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "envbuild", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"envbuild {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
            )
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "envbuild", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )

    def docker_out(self, *args: str) -> str:
        return subprocess.run(
            [self.docker, *args], capture_output=True, text=True, check=True, timeout=120
        ).stdout

    def tags(self) -> list[str]:
        out = self.docker_out(
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "--filter",
            f"reference={self.prefix}/*",
        )
        return sorted(line for line in out.splitlines() if line)

    def run_in(self, image: str, *argv: str, user: str | None = None) -> str:
        cmd = ["run", "--rm", "--network", "none"]
        if user:
            cmd += ["--user", user]
        return self.docker_out(*cmd, image, *argv)


@pytest.fixture
def eb(docker_cli: str, tmp_path: Path) -> Iterator[Envbuild]:
    tool = Envbuild(docker_cli, f"envbuild-test-{uuid.uuid4().hex[:10]}", tmp_path / "home")
    yield tool
    for tag in tool.tags():
        subprocess.run([docker_cli, "rmi", "--force", tag], capture_output=True, check=False)


def write_env(folder: Path, text: str, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "env.toml").write_text(text, encoding="utf-8")
    for name, content in files.items():
        (folder / name).write_text(content, encoding="utf-8")
    return folder


def test_hello_builds_then_hits_the_cache(eb: Envbuild) -> None:
    first = json.loads(eb("build", "--json", str(HELLO)).stdout)
    assert set(first) >= {"image", "hash", "cached", "id", "seconds"}
    assert first["cached"] is False
    assert first["image"] == f"{eb.prefix}/hello:{first['hash'][:12]}"
    assert eb.tags() == sorted([first["image"], f"{eb.prefix}/hello:1"])

    out = eb.run_in(
        first["image"],
        "python",
        "-c",
        "import os, six; print(six.__version__, os.environ['MESSAGE'])",
    )
    assert out.strip() == "1.16.0 Hello"
    # A whole system Python (the venv seeded by pip-install.sh): dbm.gnu and wheel.
    out = eb.run_in(first["image"], "python", "-c", "import dbm.gnu, wheel; print('whole')")
    assert out.strip() == "whole"

    second = json.loads(eb("build", "--json", str(HELLO)).stdout)
    assert second["cached"] is True
    assert second["id"] == first["id"]
    assert second["hash"] == first["hash"]

    # The hash `envbuild hash` prints (hello is unlocked: the engine names its base) names
    # the built image.
    assert eb("hash", str(HELLO)).stdout.strip() == first["hash"]


def test_labels_user_workdir_and_python(eb: Envbuild, tmp_path: Path) -> None:
    folder = write_env(
        tmp_path / "lab",
        'schema = 1\nname = "lab"\nversion = 5\n'
        'description = "Label test"\n[run]\nworkdir = "/work/space"\n',
    )
    result = json.loads(eb("build", "--json", "-q", str(folder)).stdout)
    inspect = json.loads(eb.docker_out("image", "inspect", result["image"]))[0]
    labels = inspect["Config"]["Labels"]
    assert labels["io.envbuild.name"] == "lab"
    assert labels["io.envbuild.version"] == "5"
    assert labels["io.envbuild.hash"] == result["hash"]
    assert labels["org.opencontainers.image.description"] == "Label test"
    assert labels["org.opencontainers.image.title"] == "lab"
    assert inspect["Config"]["User"] == "1000"
    assert inspect["Config"]["WorkingDir"] == "/work/space"
    assert f"{eb.prefix}/lab:5" in inspect["RepoTags"]
    # python is the venv's; HOME is writable for the image user and for any uid.
    assert (
        eb.run_in(result["image"], "sh", "-c", "command -v python").strip()
        == "/opt/venv/bin/python"
    )
    # A whole system Python (the venv made by setup-python.sh): dbm.gnu and wheel.
    out = eb.run_in(result["image"], "python", "-c", "import dbm.gnu, wheel; print('whole')")
    assert out.strip() == "whole"
    for user in (None, "4242:4242"):
        out = eb.run_in(
            result["image"], "sh", "-c", 'touch "$HOME/x" && touch ./y && echo ok', user=user
        )
        assert out.strip() == "ok"


AWKWARD = {
    "QUOTES": "a\"b'c",
    "BACKSLASH": "back\\slash\\",
    "DOLLAR": "$HOME ${PATH} $(id) `id`",
    "SPACES": "  leading and trailing  ",
    "EQUALS": "key=value=x",
    "UNICODE": "ünïcødé ✓",
    "TAB": "a\tb",
    "EMPTY": "",
    "BRACES": "{{ not a template }}",
}


def _toml_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def test_awkward_variable_values_round_trip(eb: Envbuild, tmp_path: Path) -> None:
    body = "\n".join(f"{k} = {_toml_string(v)}" for k, v in AWKWARD.items())
    folder = write_env(
        tmp_path / "vals",
        f'schema = 1\nname = "vals"\ndescription = {_toml_string(AWKWARD["QUOTES"] + AWKWARD["DOLLAR"])}\n[variables]\n{body}\n',
    )
    image = json.loads(eb("build", "--json", "-q", str(folder)).stdout)["image"]
    names = sorted(AWKWARD)
    script = f"import json, os; print(json.dumps({{k: os.environ[k] for k in {names!r}}}))"
    seen = json.loads(eb.run_in(image, "python", "-c", script))
    assert seen == AWKWARD
    labels = json.loads(eb.docker_out("image", "inspect", image))[0]["Config"]["Labels"]
    assert labels["org.opencontainers.image.description"] == AWKWARD["QUOTES"] + AWKWARD["DOLLAR"]


def test_failed_build_reports_step_and_leaves_no_tag(eb: Envbuild, tmp_path: Path) -> None:
    folder = write_env(
        tmp_path / "broken",
        'schema = 1\nname = "broken"\n[system]\npackages = ["envbuild-no-such-package"]\n',
    )
    proc = eb("build", str(folder), check=False)
    assert proc.returncode == 4, proc.stderr
    assert "the image build failed" in proc.stderr
    assert "failing step:" in proc.stderr and "apt-get" in proc.stderr
    assert "exit code: 123" in proc.stderr  # xargs: the apt-get it ran failed
    assert "Unable to locate package envbuild-no-such-package" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert eb.tags() == []


def test_interrupted_build_leaves_no_tag(eb: Envbuild, tmp_path: Path) -> None:
    folder = write_env(
        tmp_path / "slow",
        'schema = 1\nname = "slow"\n[base]\ndockerfile = "base.Dockerfile"\n',
        **{
            "base.Dockerfile": f"FROM debian:bookworm-slim\nRUN echo {uuid.uuid4().hex} && sleep 60\n"
        },
    )
    proc = eb.popen("build", str(folder))
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    for line in proc.stderr:  # wait until the slow step runs
        if "sleep 60" in line or time.monotonic() > deadline:
            break
    time.sleep(1)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert proc.returncode == 130
    assert time.monotonic() - started < 30
    assert eb.tags() == []


def _timed_lines(stream: IO[str], into: list[tuple[float, str]]) -> None:
    """Read ``stream`` to its end, noting when each line arrived."""
    for line in stream:
        into.append((time.monotonic(), line.rstrip("\n")))


def test_concurrent_builds_build_once(eb: Envbuild, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    slow_step = f"RUN echo {marker} && sleep 3"
    folder = write_env(
        tmp_path / "twice",
        'schema = 1\nname = "twice"\n[base]\ndockerfile = "base.Dockerfile"\n',
        **{"base.Dockerfile": f"FROM debian:bookworm-slim\n{slow_step}\n"},
    )
    procs = [eb.popen("build", "--json", str(folder)) for _ in range(2)]
    logs: list[list[tuple[float, str]]] = [[], []]
    stdouts: list[list[tuple[float, str]]] = [[], []]
    readers = []
    for proc, log, out in zip(procs, logs, stdouts, strict=True):
        assert proc.stderr is not None and proc.stdout is not None
        readers += [
            threading.Thread(target=_timed_lines, args=(proc.stderr, log)),
            threading.Thread(target=_timed_lines, args=(proc.stdout, out)),
        ]
    for reader in readers:
        reader.start()
    for proc in procs:
        proc.wait(timeout=600)
    for reader in readers:
        reader.join(timeout=60)
    errs = ["\n".join(line for _, line in log) for log in logs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for e in errs]
    results = [json.loads("\n".join(line for _, line in out)) for out in stdouts]
    assert sorted(r["cached"] for r in results) == [False, True]
    assert results[0]["id"] == results[1]["id"]
    builder, waiter = (0, 1) if not results[0]["cached"] else (1, 0)
    # Only the builder ran the slow step; the other one never started a build.
    assert slow_step in errs[builder]
    assert marker not in errs[waiter]

    # The waiter really waited: it found the lock held before the builder's slow
    # step was done, and went on only after that step (and so the build and its
    # tag, which the lock covers) was done.
    def when(log: list[tuple[float, str]], text: str) -> float:
        times = [t for t, line in log if text in line]
        assert len(times) == 1, (text, [line for _, line in log])
        return times[0]

    step = next(line for _, line in logs[builder] if slow_step in line).split()[0]  # "#6"
    (slow_done,) = [t for t, line in logs[builder] if line.startswith(f"{step} DONE ")]
    waiting = when(logs[waiter], "waiting for it")
    reusing = when(logs[waiter], "was built by the other process; reusing it")
    assert waiting < slow_done < reusing, (waiting, slow_done, reusing)
    assert "waiting for it" not in errs[builder]


def test_image_list(eb: Envbuild) -> None:
    built = json.loads(eb("build", "--json", "-q", str(HELLO)).stdout)
    rows = json.loads(eb("images", "--json").stdout)
    mine = [r for r in rows if r["hash"] == built["hash"]]
    assert mine and mine[0]["name"] == "hello" and mine[0]["version"] == "1"
    assert mine[0]["size"] > 0
    assert built["image"] in mine[0]["tags"]


def test_no_buildkit_client_is_a_clear_error(eb: Envbuild, tmp_path: Path) -> None:
    if not Path("/usr/local/bin/docker").exists():
        pytest.skip("no second docker client without buildx on this machine")
    probe = subprocess.run(
        ["/usr/local/bin/docker", "buildx", "version"], capture_output=True, check=False
    )
    if probe.returncode == 0:
        pytest.skip("/usr/local/bin/docker has buildx here")
    folder = write_env(
        tmp_path / "nobk", f'schema = 1\nname = "nobk"\ndescription = "{uuid.uuid4().hex}"\n'
    )
    eb.env["ENVBUILD_DOCKER"] = "/usr/local/bin/docker"
    proc = eb("build", str(folder), check=False)
    assert proc.returncode == 5
    assert "buildx plugin is missing" in proc.stderr
    assert eb.tags() == []
