"""What the console script's fast paths import, and the settings reader they share.

A cache hit costs interpreter start, imports and one or two engine requests;
`bench/build_cache_hit.py` times it against a cached `docker build`. These
tests hold the imports of that path to what it needs, so that a change which
pulls in `dataclasses` (with `inspect`), tomllib or the engine's protocol
family, each a noticeable share of the whole process, fails here rather than
only in a benchmark.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from envbuild.errors import UsageError
from envbuild.settings import load_settings, plain_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Modules a cache hit must not load (each costs milliseconds at start-up).
HEAVY = ("dataclasses", "inspect", "tomllib", "envbuild.engine.protocols", "click", "jinja2")
# What the console script's cache-hit path imports (envbuild.cli.launcher.cached_build).
HIT_PATH = (
    "envbuild.cli.launcher",
    "envbuild.engine.docker",
    "envbuild.settings",
    "envbuild.cache.memo",
    "envbuild.cache.lookup",
    "envbuild.build.result",
)


def _loaded_by(code: str, env: dict[str, str] | None = None) -> set[str]:
    """The heavy modules a fresh interpreter has loaded after ``code``."""
    probe = (
        f"{code}\nimport sys\n"
        f"print('loaded:', *(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
    )
    return set(out.stderr.splitlines()[-1].split()[1:])


def test_the_cache_hit_modules_import_nothing_heavy() -> None:
    # Loaded before the measurement: an interpreter whose site hooks load them
    # already must not pass where a clean one fails.
    before = _loaded_by("")
    assert _loaded_by("\n".join(f"import {m}" for m in HIT_PATH)) == before


def test_a_whole_cache_hit_imports_nothing_heavy(tmp_path: Path) -> None:
    """The console script's hit path, run to its end on a fake engine, in a fresh interpreter."""
    config = tmp_path / "config.toml"
    config.write_text('docker = "/usr/bin/docker"  # the client\nprefix = "bench"\n')
    code = (
        "from envbuild.cli import launcher\n"
        "from envbuild.cache import memo\n"
        "from envbuild.engine.records import ImageInfo\n"
        "from envbuild.engine.docker import DockerEngine\n"
        "H = 'f' * 64\n"
        "memo.recall = lambda *a, **k: memo.Memo(H, 'hello', 1)\n"
        "image = ImageInfo('sha256:1', ('bench/hello:' + H[:12], 'bench/hello:1'),"
        " {'io.envbuild.hash': H})\n"
        "DockerEngine.inspect_image = lambda self, ref: image\n"
        "assert launcher.cached_build(['build', 'envs/hello', '--json']) == 0\n"
    )
    env = {**_clean_env(), "ENVBUILD_CONFIG": str(config), "ENVBUILD_HOME": str(tmp_path)}
    assert _loaded_by(code, env) == _loaded_by("", env)


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("ENVBUILD_")}


# -- the config file: plain `key = "text"` lines are read without tomllib ---------

_KEY = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_LINE = st.one_of(
    st.builds(lambda k, v: f'{k} = "{v}"', _KEY, _TEXT),
    st.builds(lambda k, v, c: f'  {k}\t=  "{v}" #{c}', _KEY, _TEXT, _TEXT),
    st.builds(lambda c: f"# {c}", _TEXT),
    st.just(""),
    st.builds(lambda k, v: f"{k} = '{v}'", _KEY, _TEXT),  # literal strings: tomllib's
    st.builds(lambda k: f"{k} = 1", _KEY),
    st.just("[table]"),
    _TEXT,
)


@given(st.lists(_LINE, max_size=6), st.sampled_from(["\n", "\r\n"]))
def test_plain_config_reads_what_tomllib_reads(lines: list[str], newline: str) -> None:
    text = newline.join(lines)
    try:
        expected: dict[str, object] | None = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        expected = None
    plain = plain_config(text)
    if plain is not None:  # answered without tomllib: the same keys and values
        assert plain == expected
    if expected is None:
        assert plain is None


def test_a_plain_config_file_is_read_without_tomllib(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('# mine\ndocker = "/usr/bin/docker"\n\nprefix = "team"  # images\n')
    code = "from envbuild.settings import load_settings; s = load_settings(); print(s.prefix)"
    env = {**_clean_env(), "ENVBUILD_CONFIG": str(config)}
    assert "tomllib" not in _loaded_by(code, env)
    settings = load_settings({"ENVBUILD_CONFIG": str(config)})
    assert (settings.docker, settings.prefix) == ("/usr/bin/docker", "team")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('docker = "a"\ndocker = "b"\n', "Cannot overwrite a value"),  # tomllib's words
        ('docker = "a\\tb"\nmirror = 1\n', "unknown setting"),
        ("prefix = 1\n", "expected a string"),
    ],
)
def test_other_config_files_still_go_through_tomllib(
    tmp_path: Path, text: str, message: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    with pytest.raises(UsageError, match=message):
        load_settings({"ENVBUILD_CONFIG": str(config)})


def test_the_run_executor_loads_no_definition_or_rendering() -> None:
    """A run planned from the memo (envbuild.run.planning, recall) needs neither: the
    definition model and rendering are loaded only when a plan resolves a folder."""
    code = (
        "import sys, envbuild.run.local, envbuild.cli.run_fast\n"
        "print(sorted(m for m in sys.modules if m.startswith(('envbuild.definition', "
        "'envbuild.render', 'envbuild.build.builder', 'envbuild.lock'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# Modules the run path does not need before its container starts (each ~0.5-1.5 ms,
# with what they pull in: bz2, lzma, random, struct): imported where they are used.
RUN_PATH_SPARES = ("shutil", "tempfile", "base64")


def test_the_run_path_imports_only_what_starting_a_container_needs() -> None:
    import envbuild

    # -S: without site, whose start-up hooks on some machines import these already.
    code = (
        "import sys, envbuild.run.local, envbuild.cli.run_fast\n"
        f"print(sorted(m for m in {RUN_PATH_SPARES!r} if m in sys.modules))"
    )
    env = {**_clean_env(), "PYTHONPATH": str(Path(envbuild.__file__).parents[1])}
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "[]"


def test_a_ci_answered_from_its_record_imports_nothing_heavy(tmp_path: Path) -> None:
    """The console script's ``ci`` fast path, run to its end in a fresh interpreter (the
    record's checks answered here): no click, definition model, dataclasses, http.client."""
    heavy = (*HEAVY, "http.client", "ssl", "envbuild.definition.model", "xml.etree.ElementTree")
    report: dict[str, object] = {
        "catalog": "curated",
        "registry": "127.0.0.1:5000/ns",
        "since": None,
        "push": True,
        "relock": False,
        "ok": True,
        "seconds": 0.1,
        "stages": {"publish": {"name": "publish", "status": "passed", "seconds": 0.01,
                               "message": "up to date"}},
        "environments": [],
    }  # fmt: skip
    code = (
        "from envbuild.cli import launcher\n"
        "from envbuild.catalog import ci_record\n"
        f"ci_record.recall = lambda *a, **k: ci_record.Recalled({report!r}, ['a line'], {{}})\n"
        "args = ['ci', 'curated', '--registry', '127.0.0.1:5000/ns', '--push', '--json']\n"
        "assert launcher.ci_recorded(args) == 0\n"
    )
    env = {**_clean_env(), "ENVBUILD_HOME": str(tmp_path)}
    probe = (
        f"{code}\nimport sys\n"
        f"print('loaded:', *(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)"
    )

    def loaded(source: str) -> set[str]:
        out = subprocess.run(
            [sys.executable, "-c", source], capture_output=True, text=True, check=True, env=env
        )
        return set(out.stderr.splitlines()[-1].split()[1:])

    before = loaded(
        f"import sys\nprint('loaded:', *(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)"
    )
    assert loaded(probe) == before
