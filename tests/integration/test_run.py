"""`envbuild run` against the real engine: arguments, variables, mounts, inputs, outputs, exit codes, signals, logs, history.

Every test drives the real CLI in a subprocess (or the library API where the
API is the point) against the real Docker engine; nothing is faked here. Two
autouse fixtures assert that no container, network or volume labelled
``io.envbuild.run`` survives a test, or the session.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from envbuild.build.builder import BuildResult, build
from envbuild.engine.api import SdkApi
from envbuild.engine.docker import DockerEngine
from envbuild.run.config import Input, Output, RunConfig
from envbuild.run.local import run
from envbuild.settings import load_settings

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "envs" / "hello"
LABEL = "io.envbuild.run"
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"

SCRIPTS = {
    "argv.py": "import json, sys\nprint(json.dumps(sys.argv[1:]))\n",
    "env.py": (
        "import json, os, sys\nprint(json.dumps({k: os.environ.get(k) for k in sys.argv[1:]}))\n"
    ),
    "whoami.py": (
        "import json, os\n"
        "st = os.statvfs('/dev/shm')\n"
        "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'cwd': os.getcwd(),\n"
        "    'shm': st.f_blocks * st.f_frsize, 'home': os.environ['HOME'],\n"
        "    'run_id': os.environ['ENVBUILD_RUN_ID']}))\n"
    ),
    "exit.py": "import sys\nprint('exiting', sys.argv[1], flush=True)\nsys.exit(int(sys.argv[1]))\n",
    "suicide.py": "import os, signal\nos.kill(os.getpid(), getattr(signal, 'SIG' + 'KILL'))\n",
    "sleep.py": "import time\nprint('sleeping', flush=True)\ntime.sleep(300)\n",
    "stubborn.py": (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ignoring SIGTERM', flush=True)\ntime.sleep(300)\n"
    ),
    "lines.py": (
        "import sys\nn = int(sys.argv[1])\nout, err = sys.stdout.write, sys.stderr.write\n"
        "for i in range(n):\n    out(f'line {i}\\n')\n    if i % 10000 == 0:\n"
        "        err(f'progress {i}\\n')\n"
    ),
    "bytes.py": "import sys\nsys.stdout.buffer.write(b'ok \\xff\\xfe\\x80 bytes\\n')\n",
    "live.py": (
        "import os, sys, time\nprint('first', flush=True)\nmarker = sys.argv[1]\n"
        "deadline = time.time() + 30\n"
        "while not os.path.exists(marker) and time.time() < deadline:\n    time.sleep(0.05)\n"
        "print('second' if os.path.exists(marker) else 'no marker')\n"
    ),
    "write.py": (
        "import errno, os, sys\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        with open(path, 'w') as f:\n            f.write('written')\n"
        "        print(path, 'ok')\n"
        "    except OSError as e:\n        print(path, errno.errorcode[e.errno])\n"
    ),
    "listing.py": (
        "import os, sys\nfor root, dirs, files in os.walk(sys.argv[1]):\n"
        "    for f in sorted(files):\n"
        "        p = os.path.join(root, f)\n        print(os.path.relpath(p, sys.argv[1]), open(p).read())\n"
    ),
    "train.py": (
        "import argparse, os\n"
        "p = argparse.ArgumentParser()\np.add_argument('--data-folder')\np.add_argument('--out')\n"
        "a = p.parse_args()\n"
        "n = len(os.listdir(a.data_folder))\n"
        "print(os.environ['MESSAGE'], 'from', a.data_folder, n, 'files')\n"
        "with open(os.path.join(a.out, 'model.txt'), 'w') as f:\n    f.write(f'trained on {n}')\n"
    ),
    "caps.py": (
        "import json\nstatus = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
        "print(json.dumps({k: status[k].strip() for k in ('CapBnd', 'CapEff', 'NoNewPrivs')}))\n"
    ),
    "chatty_output.py": (
        "import sys\nfor i in range(int(sys.argv[2])):\n    print('line', i, 'x' * 200)\n"
        "with open(sys.argv[1] + '/result.txt', 'w') as f:\n    f.write('the job is done')\n"
    ),
    "plain.sh": "echo not executable\n",
    "badshebang.sh": "#!/nonexistent/interpreter\necho never\n",
}


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


def _labelled(docker: str) -> set[str]:
    found: set[str] = set()
    for kind in (["ps", "-aq"], ["network", "ls", "-q"], ["volume", "ls", "-q"]):
        proc = subprocess.run(
            [docker, *kind, "--filter", f"label={LABEL}"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        found |= {f"{kind[0]}:{line}" for line in proc.stdout.split()}
    return found


@pytest.fixture(scope="session")
def _preexisting(docker_cli: str) -> set[str]:
    """Labelled resources that were there before the session (not ours to judge)."""
    return _labelled(docker_cli)


@pytest.fixture(scope="session", autouse=True)
def _no_leftovers_in_session(docker_cli: str, _preexisting: set[str]) -> Iterator[None]:
    yield
    left = _labelled(docker_cli) - _preexisting
    assert not left, f"io.envbuild.run resources survived the session: {sorted(left)}"


@pytest.fixture(autouse=True)
def _no_leftovers(docker_cli: str, _preexisting: set[str]) -> Iterator[None]:
    yield
    left = _labelled(docker_cli) - _preexisting
    assert not left, f"io.envbuild.run resources survived this test: {sorted(left)}"


@pytest.fixture(scope="session")
def hello(docker_cli: str) -> BuildResult:
    """envs/hello's image (built once if missing)."""
    settings = load_settings()
    return build(HELLO, settings=settings, engine=DockerEngine(settings.docker))


@pytest.fixture(scope="session")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("src")
    for name, text in SCRIPTS.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "badshebang.sh").chmod(0o755)
    folder.chmod(0o755)
    return folder


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("envbuild-home")


Run = Callable[..., subprocess.CompletedProcess[bytes]]


@pytest.fixture
def cli_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["ENVBUILD_HOME"] = str(home)
    env.setdefault("ENVBUILD_DOCKER", load_settings().docker)
    return env


@pytest.fixture
def envbuild(hello: BuildResult, src: Path, cli_env: dict[str, str]) -> Run:
    """``envbuild run [OPTIONS] envs/hello SCRIPT ARGS...`` with the test scripts as source."""

    def go(
        *argv: str, options: tuple[str, ...] = (), env_dir: str = str(HELLO), **kwargs: object
    ) -> subprocess.CompletedProcess[bytes]:
        command = [
            sys.executable,
            "-m",
            "envbuild",
            "run",
            "--source-dir",
            str(src),
            *options,
            env_dir,
            *argv,
        ]
        kwargs.setdefault("timeout", 120)
        return subprocess.run(command, capture_output=True, env=cli_env, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]

    return go


def _json(proc: subprocess.CompletedProcess[bytes]) -> object:
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def _tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
        digest.update(oct(path.stat().st_mode).encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------
# Arguments and variables arrive verbatim
# --------------------------------------------------------------------------

AWKWARD_ARGS = [
    "two words",
    "'single quotes'",
    '"double quotes"',
    "$HOME ${PATH} $(id) `id`",
    "ünïcödé ✓ 日本",
    "",
    "line1\nline2",
    "back\\slash",
    "*",
    "--source-dir",
    "--",
    "-e",
    "x",
]


def test_arguments_arrive_verbatim(envbuild: Run) -> None:
    assert _json(envbuild("argv.py", *AWKWARD_ARGS)) == AWKWARD_ARGS


def test_awkward_variable_values(envbuild: Run, cli_env: dict[str, str], tmp_path: Path) -> None:
    values = {
        "SPACES": "two words  and more",
        "QUOTES": "'single' \"double\"",
        "DOLLAR": "$HOME ${PATH} $(id) `id`",
        "EQUALS": "a=b=c",
        "NEWLINE": "line1\nline2",
        "UNICODE": "ünïcödé ✓",
        "EMPTY": "",
        "TAB": "a\tb",
    }
    env_file = tmp_path / "vars.env"
    env_file.write_text("FROM_FILE='kept quotes'\n# comment\n", encoding="utf-8")
    cli_env["ENVBUILD_IT_INHERITED"] = "from the caller"
    options: list[str] = []
    for name, value in values.items():
        options += ["-e", f"{name}={value}"]
    options += ["-e", "ENVBUILD_IT_INHERITED", "-e", "MESSAGE=overridden"]
    options += ["--env-file", str(env_file)]
    names = [*values, "ENVBUILD_IT_INHERITED", "FROM_FILE", "MESSAGE", "NVIDIA_VISIBLE_DEVICES"]
    got = _json(envbuild("env.py", *names, options=tuple(options)))
    assert got == {
        **values,
        "ENVBUILD_IT_INHERITED": "from the caller",
        "FROM_FILE": "'kept quotes'",
        "MESSAGE": "overridden",
        "NVIDIA_VISIBLE_DEVICES": "void",  # no GPU asked: hidden
    }


def test_image_variables_user_workdir_shm(envbuild: Run) -> None:
    got = _json(envbuild("whoami.py"))
    assert got["uid"] == os.getuid() and got["gid"] == os.getgid()  # type: ignore[index]
    assert got["cwd"] == "/workspace"  # type: ignore[index]
    assert got["shm"] == 2 << 30  # type: ignore[index]
    assert got["home"] == "/home/envbuild"  # type: ignore[index]
    options = ("--shm-size", "256m", "--workdir", "/tmp", "--user", "4321:4321")
    got = _json(envbuild("whoami.py", options=options))
    assert (got["uid"], got["cwd"], got["shm"]) == (4321, "/tmp", 256 << 20)  # type: ignore[index]
    assert _json(envbuild("env.py", "MESSAGE")) == {"MESSAGE": "Hello"}  # the image's [variables]


# --------------------------------------------------------------------------
# Exit codes
# --------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 3])
def test_the_scripts_exit_code(envbuild: Run, code: int) -> None:
    proc = envbuild("exit.py", str(code))
    assert proc.returncode == code, proc.stderr.decode(errors="replace")
    assert proc.stdout == f"exiting {code}\n".encode()


def test_the_full_command_line_path(envbuild: Run, src: Path, cli_env: dict[str, str]) -> None:
    """`--debug` goes through click (plain forms take the click-free path): same result."""
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "envbuild", "--debug", "run", "--source-dir", str(src)),
            *(str(HELLO), "exit.py", "3"),
        ],
        capture_output=True,
        env=cli_env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 3 and proc.stdout == b"exiting 3\n"


def test_killed_script_is_128_plus_signal(envbuild: Run) -> None:
    proc = envbuild("suicide.py")
    assert proc.returncode == 128 + signal.SIGKILL, proc.stderr.decode(errors="replace")


def test_missing_script_is_127_and_starts_nothing(envbuild: Run) -> None:
    proc = envbuild("no-such-script.py")
    assert proc.returncode == 127
    assert b"not found" in proc.stderr


def test_unexecutable_script_is_126(envbuild: Run) -> None:
    proc = envbuild("plain.sh")
    assert proc.returncode == 126 and b"not executable" in proc.stderr


def test_interpreter_missing_inside_the_container_is_127(envbuild: Run) -> None:
    assert envbuild("badshebang.sh").returncode == 127


def test_engine_failure_is_125_and_leaves_nothing(envbuild: Run) -> None:
    proc = envbuild("exit.py", "0", options=("--gpus", "all"))  # this engine has no GPU runtime
    assert proc.returncode == 125
    assert b"error:" in proc.stderr


def test_timeout_is_124(envbuild: Run) -> None:
    started = time.monotonic()
    proc = envbuild("sleep.py", options=("--timeout", "1"))
    assert proc.returncode == 124
    assert time.monotonic() - started < 15
    assert b"timed out" in proc.stderr


# --------------------------------------------------------------------------
# Signals: nothing left behind
# --------------------------------------------------------------------------


def _start(
    hello: BuildResult, src: Path, cli_env: dict[str, str], script: str
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "envbuild", "run", "--source-dir", str(src), str(HELLO), script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env,
    )


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_a_long_sleep(
    hello: BuildResult, src: Path, cli_env: dict[str, str], sig: int, code: int
) -> None:
    proc = _start(hello, src, cli_env, "sleep.py")
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"sleeping\n"  # the container runs
    started = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=15)
    assert time.monotonic() - started < 15
    assert proc.returncode == code, err.decode(errors="replace")
    assert b"container was removed" in err


def test_second_ctrl_c_kills_a_script_that_ignores_the_stop(
    hello: BuildResult, src: Path, cli_env: dict[str, str]
) -> None:
    proc = _start(hello, src, cli_env, "stubborn.py")
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ignoring SIGTERM\n"
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=15)
    assert proc.returncode == 130
    assert time.monotonic() - started < 5  # not the 10 s stop timeout


@pytest.mark.parametrize("delay", [0.05, 0.15, 0.25, 0.35, 0.5])
def test_sigint_at_any_moment_leaves_nothing(
    hello: BuildResult, src: Path, cli_env: dict[str, str], delay: float
) -> None:
    """Early signals land during start-up, creation or start; the fixture checks leftovers.

    Before envbuild's handlers are in place (interpreter start, imports) Python
    dies of the signal itself (-SIGINT here, 130 in a shell); after, envbuild
    exits 130 itself. A signal that lands while the interpreter still runs
    ``site`` (a ``.pth`` file's imports, before any frame of envbuild's package) makes
    Python print the KeyboardInterrupt and exit 1: that is the interpreter's
    answer, not envbuild's, and nothing can have started yet.
    """
    proc = _start(hello, src, cli_env, "sleep.py")
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=15)
    text = err.decode(errors="replace")
    before_envbuild = (
        proc.returncode == 1 and "KeyboardInterrupt" in text and "/envbuild/" not in text
    )
    assert proc.returncode in (130, -signal.SIGINT) or before_envbuild, text


# --------------------------------------------------------------------------
# Logs: live, complete, any bytes
# --------------------------------------------------------------------------


def test_100k_lines_none_lost(envbuild: Run, home: Path) -> None:
    proc = envbuild("lines.py", "100000")
    assert proc.returncode == 0
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 100_000
    assert lines[0] == "line 0" and lines[-1] == "line 99999"
    assert lines == [f"line {i}" for i in range(100_000)]
    assert proc.stderr.decode().splitlines() == [f"progress {i}" for i in range(0, 100_000, 10_000)]
    newest = max((home / "runs").glob("*.log"), key=lambda p: p.stat().st_mtime)
    assert len(newest.read_bytes().splitlines()) == 100_000 + 10


def test_undecodable_bytes_pass_through(envbuild: Run) -> None:
    proc = envbuild("bytes.py")
    assert proc.returncode == 0 and proc.stdout == b"ok \xff\xfe\x80 bytes\n"


def test_output_is_live(
    hello: BuildResult, src: Path, cli_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "envbuild", "run", "--source-dir", str(src)),
            *("--output", f"o={out}", str(HELLO), "live.py", "/outputs/o/go"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"first\n"  # while the script still waits for us
    assert proc.poll() is None
    (out / "go").write_text("")
    rest, _ = proc.communicate(timeout=60)
    assert rest == b"second\n" and proc.returncode == 0


# --------------------------------------------------------------------------
# Mounts, inputs, outputs
# --------------------------------------------------------------------------


def test_read_only_and_read_write_mounts(envbuild: Run, tmp_path: Path) -> None:
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    options = ("--mount", f"{ro}:/ro", "--mount", f"{rw}:/rw:rw")
    proc = envbuild("write.py", "/ro/x", "/rw/x", "/workspace/x", options=options)
    assert proc.stdout.decode().splitlines() == ["/ro/x EROFS", "/rw/x ok", "/workspace/x EROFS"]
    assert not (ro / "x").exists()
    assert (rw / "x").read_text() == "written" and (rw / "x").stat().st_uid == os.getuid()


def test_input_mount_vs_download(envbuild: Run, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_text("A")
    (data / "sub" / "b.txt").write_text("B")
    before = _tree_digest(data)

    mounted = envbuild(
        "write.py",
        "${{inputs.d}}/a.txt",
        "${{inputs.d}}/new.txt",
        options=("--input", f"d={data}"),
    )
    assert mounted.stdout.decode().splitlines() == [
        "/inputs/d/a.txt EROFS",
        "/inputs/d/new.txt EROFS",
    ]
    downloaded = envbuild(
        "write.py",
        "${{inputs.d}}/a.txt",
        "${{inputs.d}}/new.txt",
        options=("--input", f"d={data}:download"),
    )
    assert downloaded.stdout.decode().splitlines() == [
        "/inputs/d/a.txt ok",  # the script may change its copy ...
        "/inputs/d/new.txt ok",
    ]
    assert _tree_digest(data) == before  # ... never the host data
    listing = envbuild("listing.py", "${{inputs.d}}", options=("--input", f"d={data}:download"))
    assert listing.stdout.decode().splitlines() == ["a.txt A", "sub/b.txt B"]


def test_seed_pattern_data_variable_output(envbuild: Run, tmp_path: Path) -> None:
    """ScriptRunConfig(script='train.py', arguments=['--data-folder', ds.as_mount()]) + a variable."""
    data = tmp_path / "mnist"
    data.mkdir()
    for index in range(3):
        (data / f"part{index}").write_text("x")
    out = tmp_path / "outputs" / "model"
    proc = envbuild(
        "train.py",
        "--data-folder",
        "${{inputs.mnist}}",
        "--out",
        "${{outputs.model}}",
        options=("-e", "MESSAGE=Hi", "--input", f"mnist={data}", "--output", f"model={out}"),
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stdout == b"Hi from /inputs/mnist 3 files\n"
    assert (out / "model.txt").read_text() == "trained on 3"
    assert (out / "model.txt").stat().st_uid == os.getuid()


@pytest.mark.parametrize(
    "options",
    [
        ("--mount", "/var/run/docker.sock:/var/run/docker.sock"),
        ("--mount", "/run:/host-run"),
        ("--mount", "/:/host"),
        ("--input", "etc=/etc"),
        ("--mount", "/proc:/host-proc"),
    ],
)
def test_dangerous_mounts_refused(envbuild: Run, options: tuple[str, ...]) -> None:
    proc = envbuild("exit.py", "0", options=options)
    assert proc.returncode == 125
    assert b"refusing to mount" in proc.stderr and b"--allow-dangerous-mount" in proc.stderr


def test_symlink_to_a_dangerous_path_refused(envbuild: Run, tmp_path: Path) -> None:
    link = tmp_path / "harmless-looking"
    link.symlink_to("/var/lib/docker")
    proc = envbuild("exit.py", "0", options=("--mount", f"{link}:/data"))
    assert proc.returncode == 125 and b"/var/lib/docker" in proc.stderr


# --------------------------------------------------------------------------
# A caller who is not root
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def caller(
    tmp_path_factory: pytest.TempPathFactory, docker_cli: str
) -> Iterator[dict[str, object]]:
    """A fresh user in the docker group, and a Python it can run envbuild with.

    The test interpreter may live where the new user cannot read (pyenv under
    /root), so the user runs a Python of the same version it can execute, with
    envbuild's source and copies of its pure-Python dependencies on PYTHONPATH.
    """
    if os.geteuid() != 0:
        pytest.skip("creating a user needs root")
    name = f"ebit{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--create-home", "--groups", "docker", name], check=True)
    base: Path | None = None
    try:
        uid = int(subprocess.check_output(["id", "-u", name]))
        gid = int(subprocess.check_output(["id", "-g", name]))
        # Not under pytest's tmp folder: that one is private to root (0700).
        base = Path(tempfile.mkdtemp(prefix="envbuild-caller-"))
        base.chmod(0o755)
        source = base / "src"
        source.mkdir()
        for script, text in SCRIPTS.items():
            (source / script).write_text(text, encoding="utf-8")
        deps = base / "deps"
        import click
        import jinja2
        import markupsafe

        for module in (click, jinja2, markupsafe):
            assert module.__file__ is not None
            folder = Path(module.__file__).parent
            shutil.copytree(folder, deps / folder.name)
        tools = base / "bin"  # programs the build side runs, e.g. uv
        tools.mkdir()
        try:
            from envbuild.lock.makers import uv_binary

            shutil.copy2(uv_binary(), tools / "uv")
        except ImportError:  # pragma: no cover - a build side without uv
            pass
        work = base / "work"
        work.mkdir()
        for path in (deps, work, source, tools, *deps.rglob("*"), *source.rglob("*")):
            os.chown(path, uid, gid)
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        env = {
            "PATH": f"{tools}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": f"/home/{name}",
            "PYTHONPATH": f"{deps}:{ROOT / 'builder'}",
            "PYTHONDONTWRITEBYTECODE": "1",
            "ENVBUILD_HOME": str(work / "home"),
            "ENVBUILD_CONFIG": str(work / "no-config.toml"),
            "ENVBUILD_DOCKER": docker_cli,
        }
        python = None
        for candidate in (
            sys.executable,
            f"/usr/bin/python{version}",
            f"/usr/local/bin/python{version}",
        ):
            probe = subprocess.run(
                [
                    RUNUSER,
                    "-u",
                    name,
                    "--",
                    candidate,
                    "-c",
                    "import envbuild.cli.main, click",
                ],
                env=env,
                capture_output=True,
                check=False,
            )
            if probe.returncode == 0:
                python = candidate
                break
        if python is None:
            pytest.fail(f"no Python {version} that user {name} can run envbuild with")
        yield {
            "name": name,
            "uid": uid,
            "gid": gid,
            "python": python,
            "env": env,
            "work": work,
            "src": source,
        }
    finally:
        subprocess.run(["userdel", "--remove", name], capture_output=True, check=False)
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)


def test_outputs_belong_to_a_non_root_caller(caller: dict[str, object], hello: BuildResult) -> None:
    work, src = caller["work"], caller["src"]
    assert isinstance(work, Path) and isinstance(src, Path)
    out = work / "outputs" / "model"  # does not exist yet: envbuild creates it, as the caller
    data = work / "data"
    data.mkdir()
    (data / "part0").write_text("x")
    os.chown(data, caller["uid"], caller["gid"])  # type: ignore[arg-type]
    os.chown(data / "part0", caller["uid"], caller["gid"])  # type: ignore[arg-type]
    env = caller["env"]
    assert isinstance(env, dict)
    proc = subprocess.run(
        [
            *(RUNUSER, "-u", str(caller["name"]), "--", str(caller["python"])),
            *("-m", "envbuild", "run", "--source-dir", str(src)),
            *("--input", f"mnist={data}", "--output", f"model={out}", str(HELLO), "train.py"),
            *("--data-folder", "${{inputs.mnist}}", "--out", "${{outputs.model}}"),
        ],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stdout == b"Hello from /inputs/mnist 1 files\n"
    for path in (out.parent, out, out / "model.txt"):
        assert (path.stat().st_uid, path.stat().st_gid) == (caller["uid"], caller["gid"]), path
    # The caller can delete every output without sudo.
    cleanup = subprocess.run(
        [RUNUSER, "-u", str(caller["name"]), "--", "rm", "-r", str(out.parent)],
        capture_output=True,
        check=False,
    )
    assert cleanup.returncode == 0, cleanup.stderr
    who = subprocess.run(
        [
            *(RUNUSER, "-u", str(caller["name"]), "--", str(caller["python"])),
            *("-m", "envbuild", "run", "--source-dir", str(src), str(HELLO), "whoami.py"),
        ],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    got = _json(who)
    assert (got["uid"], got["gid"]) == (caller["uid"], caller["gid"])  # type: ignore[index]


def test_another_users_state_folder_keeps_the_job(
    caller: dict[str, object], hello: BuildResult
) -> None:
    """ENVBUILD_HOME owned by root (0700): the caller can write neither log nor history."""
    work, src = caller["work"], caller["src"]
    assert isinstance(work, Path) and isinstance(src, Path)
    home = Path(tempfile.mkdtemp(prefix="envbuild-root-home-"))
    home.chmod(0o700)
    env = caller["env"]
    assert isinstance(env, dict)
    try:
        proc = subprocess.run(
            [
                *(RUNUSER, "-u", str(caller["name"]), "--", str(caller["python"])),
                *("-m", "envbuild", "run", "--source-dir", str(src), str(HELLO), "exit.py", "4"),
            ],
            env={**env, "ENVBUILD_HOME": str(home)},
            capture_output=True,
            timeout=120,
            check=False,
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 4, err
    assert proc.stdout == b"exiting 4\n"
    assert "Traceback" not in err
    assert sum(line.startswith("warning:") for line in err.splitlines()) == 2, err  # log, history


# --------------------------------------------------------------------------
# History, logs, dry run
# --------------------------------------------------------------------------


def test_history_rows_and_logs(envbuild: Run, cli_env: dict[str, str]) -> None:
    proc = envbuild("whoami.py", options=("-e", "SECRET_TOKEN=hunter2-value"))
    run_id = _json(proc)["run_id"]  # type: ignore[index]
    shown = subprocess.run(
        [sys.executable, "-m", "envbuild", "runs", "show", run_id, "--json"],
        capture_output=True,
        env=cli_env,
        check=True,
    )
    row = json.loads(shown.stdout)
    assert row["id"] == run_id and row["status"] == "exited" and row["exit_code"] == 0
    assert row["environment"]["name"] == "hello" and len(row["environment"]["hash"]) == 64
    assert row["image_id"].startswith("sha256:")
    assert row["script"] == "whoami.py" and row["argv"][:2] == ["python", "/workspace/whoami.py"]
    assert "SECRET_TOKEN" in row["variables"]
    assert "hunter2-value" not in shown.stdout.decode()
    logs = subprocess.run(
        [sys.executable, "-m", "envbuild", "logs", run_id[:6]],
        capture_output=True,
        env=cli_env,
        check=True,
    )
    assert logs.stdout == proc.stdout
    listing = subprocess.run(
        [sys.executable, "-m", "envbuild", "runs", "--json", "--all"],
        capture_output=True,
        env=cli_env,
        check=True,
    )
    assert run_id in {r["id"] for r in json.loads(listing.stdout)}
    state = Path(cli_env["ENVBUILD_HOME"])
    for path in state.rglob("*"):
        if path.is_file():
            assert b"hunter2-value" not in path.read_bytes(), path


def test_concurrent_runs_share_the_history(
    hello: BuildResult, src: Path, cli_env: dict[str, str], tmp_path: Path
) -> None:
    cli_env = {**cli_env, "ENVBUILD_HOME": str(tmp_path / "shared-home")}
    procs = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "envbuild", "run", "--source-dir", str(src)),
                *(str(HELLO), "exit.py", str(code)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=cli_env,
        )
        for code in range(4)
    ]
    codes = sorted(p.wait(timeout=120) for p in procs)
    assert codes == [0, 1, 2, 3]
    db = tmp_path / "shared-home" / "runs.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT exit_code, status FROM runs ORDER BY exit_code").fetchall()
    assert rows == [(0, "exited"), (1, "exited"), (2, "exited"), (3, "exited")]


def test_dry_run_json_starts_nothing(envbuild: Run, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = envbuild(
        "argv.py",
        "${{outputs.o}}",
        "-e",
        "x",
        options=("--dry-run", "--json", "--output", f"o={out}", "-e", "A=secret-value"),
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    doc = json.loads(proc.stdout)
    assert isinstance(doc, dict)
    assert doc["schema"] == 1 and doc["environment"]["name"] == "hello"
    assert doc["argv"] == ["python", "/workspace/argv.py", "/outputs/o", "-e", "x"]
    assert doc["image"].startswith("envbuild/hello:")
    assert doc["outputs"] == {"o": {"host": str(out), "container": "/outputs/o"}}
    assert "A" in doc["variables"] and b"secret-value" not in proc.stdout
    assert not out.exists()


# --------------------------------------------------------------------------
# The library API and the engine channels
# --------------------------------------------------------------------------


def test_api_with_an_existing_image_and_the_sdk_channel(
    hello: BuildResult, src: Path, tmp_path: Path
) -> None:
    """image:REF through run(), once over the raw socket and once through the docker SDK."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("A")
    settings = load_settings()
    for channel in ("raw", "sdk"):
        engine = DockerEngine(settings.docker)
        if channel == "sdk":
            engine._run_api_cache = SdkApi(engine)  # what a tcp/ssh DOCKER_HOST uses
        chunks: list[tuple[str, bytes]] = []

        def collect(stream: str, data: bytes, chunks: list[tuple[str, bytes]] = chunks) -> None:
            chunks.append((stream, data))

        result = run(
            RunConfig(
                environment=f"image:{hello.image}",
                script="listing.py",
                arguments=("${{inputs.d}}",),
                source_directory=src,
                inputs=(Input("d", data, "download"),),
                outputs=(Output("o", tmp_path / "o"),),
            ),
            settings=settings,
            engine=engine,
            output=collect,
            log=lambda line: None,
        )
        assert result.exit_code == 0 and result.status == "exited", channel
        assert b"".join(d for _, d in chunks) == b"a.txt A\n", channel
        assert result.image_id == hello.id
        assert result.log_path is not None
        assert result.log_path.read_bytes() == b"a.txt A\n"


# --------------------------------------------------------------------------
# Privileges: no-new-privileges and a reduced capability set by default
# --------------------------------------------------------------------------

CAP_BITS = {"CHOWN": 0, "SETUID": 7, "SETPCAP": 8, "NET_RAW": 13, "SYS_CHROOT": 18, "MKNOD": 27}


def _caps(envbuild: Run, *options: str) -> tuple[set[str], bool]:
    got = _json(envbuild("caps.py", options=("-u", "0:0", *options)))
    assert isinstance(got, dict)
    bounding = int(got["CapBnd"], 16)
    return {name for name, bit in CAP_BITS.items() if bounding >> bit & 1}, got["NoNewPrivs"] == "1"


def test_runs_drop_what_a_script_does_not_need_and_can_restore_it(envbuild: Run) -> None:
    caps, no_new_privileges = _caps(envbuild)
    assert no_new_privileges
    assert caps == {"CHOWN", "SETUID"}  # NET_RAW, MKNOD, SYS_CHROOT, SETPCAP dropped
    caps, no_new_privileges = _caps(envbuild, "--cap-add", "NET_RAW", "--cap-add", "mknod")
    assert caps == {"CHOWN", "SETUID", "NET_RAW", "MKNOD"} and no_new_privileges
    caps, no_new_privileges = _caps(envbuild, "--privileges", "default")
    assert caps == set(CAP_BITS) and not no_new_privileges  # Docker's defaults
    refused = envbuild("caps.py", options=("--cap-add", "SYS_ADMIN"))
    assert refused.returncode == 125 and b"default capabilities" in refused.stderr


# --------------------------------------------------------------------------
# A full or broken state folder never costs the job
# --------------------------------------------------------------------------


@pytest.fixture
def full_home(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs as ENVBUILD_HOME, filled up (root only: it mounts)."""
    home = tmp_path / "full-home"
    home.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(home)],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.decode(errors='replace').strip()}")
    try:
        with contextlib.suppress(OSError), (home / "filler").open("wb") as filler:
            while True:
                filler.write(b"\0" * 4096)
                filler.flush()
        yield home
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)


def test_a_full_state_folder_keeps_the_job_and_its_outputs(
    envbuild: Run, cli_env: dict[str, str], full_home: Path, tmp_path: Path
) -> None:
    cli_env["ENVBUILD_HOME"] = str(full_home)
    out = tmp_path / "out"
    proc = envbuild(
        "chatty_output.py",
        "${{outputs.model}}",
        "20000",
        options=("--output", f"model={out}"),
    )
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, err
    assert proc.stdout.count(b"\n") == 20000  # every line still reached the user
    assert (out / "result.txt").read_text() == "the job is done"
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert 1 <= len(warnings) <= 2, err  # the log, the history: once each
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "breakage", ["locks-is-a-file", "runs-is-a-file", "garbage-db", "read-only"]
)
def test_a_broken_state_folder_keeps_the_job(
    envbuild: Run, cli_env: dict[str, str], tmp_path: Path, breakage: str
) -> None:
    home = tmp_path / "broken-home"
    home.mkdir()
    if breakage == "read-only":  # a read-only bind mount: even root cannot write (root only)
        made = subprocess.run(["mount", "--bind", str(home), str(home)], capture_output=True)
        if made.returncode != 0:
            pytest.skip(f"cannot bind-mount: {made.stderr.decode(errors='replace').strip()}")
        subprocess.run(["mount", "-o", "remount,ro,bind", str(home)], check=True)
    try:
        _break_and_run(envbuild, cli_env, home, breakage)
    finally:
        if breakage == "read-only":
            subprocess.run(["umount", "-l", str(home)], check=False)


def _break_and_run(envbuild: Run, cli_env: dict[str, str], home: Path, breakage: str) -> None:
    if breakage == "read-only":
        assert subprocess.run(["touch", str(home / "x")], capture_output=True).returncode != 0
    elif breakage == "locks-is-a-file":
        (home / "locks").write_text("")
    elif breakage == "runs-is-a-file":
        (home / "runs").write_text("")
    elif breakage == "garbage-db":
        (home / "runs.db").write_bytes(b"garbage" * 1000)
    cli_env["ENVBUILD_HOME"] = str(home)
    proc = envbuild("exit.py", "3")
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 3, err
    assert "Traceback" not in err
    listing = subprocess.run(
        [sys.executable, "-m", "envbuild", "runs"], capture_output=True, env=cli_env, timeout=60
    )
    assert b"Traceback" not in listing.stderr
