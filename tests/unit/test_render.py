"""Golden build contexts, compared byte for byte (``pytest --update-golden`` rewrites them).

Each case ``tests/golden/<case>/`` holds a definition and, under ``context/``,
every file of its rendered build context (the Dockerfile, the lock and helper
files it copies), executable bits included.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from envbuild.definition.model import load
from envbuild.render.dockerfile import apt_packages, image_variables, render

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "env.toml").is_file())


def _on_disk(folder: Path) -> dict[str, tuple[bytes, bool]]:
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes(), bool(p.stat().st_mode & 0o111))
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("case", CASES)
def test_golden_context(case: str, update_golden: bool) -> None:
    context = render(load(GOLDEN / case))
    rendered = {rel: (f.data, f.executable) for rel, f in context.files.items()}
    expected = GOLDEN / case / "context"
    if update_golden or not expected.exists():
        if expected.exists():
            shutil.rmtree(expected)
        context.write(expected)
        if not update_golden:
            pytest.fail(f"wrote the missing golden context {expected}; check it and rerun")
    found = _on_disk(expected)
    assert sorted(found) == sorted(rendered), "the context's file list differs (--update-golden)"
    for rel, (data, executable) in rendered.items():
        assert found[rel][0] == data, f"{case}/context/{rel} differs (--update-golden)"
        assert found[rel][1] == executable, f"{case}/context/{rel}: executable bit differs"


def test_render_is_deterministic() -> None:
    first = render(load(GOLDEN / "full"))
    second = render(load(GOLDEN / "full"))
    assert first == second


def test_packages_sorted_and_deduplicated() -> None:
    env = load(GOLDEN / "full")
    assert apt_packages(env) == ("git", "libgomp1", "python3", "python3-gdbm", "python3-venv")
    context = render(env)
    req = context.files["envbuild/requirements.txt"].data.decode()
    lines = [ln for ln in req.splitlines() if not ln.startswith(("#", "--"))]
    assert lines == sorted(lines)
    assert 'numpy>=1.18,<2; python_version >= "3.8"' in lines


def test_a_system_python_is_made_whole(write_env) -> None:
    """dbm.gnu (python3-gdbm) always; wheel's wheel where the archive has it."""
    env = load(write_env('schema = 1\nname = "t"\n[python]\nsource = "system"\n'))
    assert "python3-gdbm" in apt_packages(env)
    context = render(env)
    assert "python3-gdbm" in context.files["envbuild/apt-packages.txt"].data.decode().split()
    assert "if apt-cache show python3-wheel-whl >/dev/null" in context.dockerfile
    setup = context.files["envbuild/setup-python.sh"].data.decode()
    assert "/usr/share/python-wheels/wheel-*.whl" in setup


def test_only_a_system_python_gets_the_extra_packages(write_env) -> None:
    env = load(write_env('schema = 1\nname = "t"\n[python]\nsource = "uv"\nversion = "3.12"\n'))
    assert "python3-gdbm" not in apt_packages(env)
    assert "python3-wheel-whl" not in render(env).dockerfile


def test_packages_are_files_not_inlined() -> None:
    context = render(load(GOLDEN / "full"))
    assert "torch==1.6.0" not in context.dockerfile
    assert "libgomp1" not in context.dockerfile
    assert "envbuild/apt-packages.txt" in context.files


def test_no_syntax_line_and_no_pull() -> None:
    for case in CASES:
        text = render(load(GOLDEN / case)).dockerfile
        assert "# syntax" not in text.lower()
        assert "--pull" not in text


def test_final_user_is_not_root() -> None:
    for case in CASES:
        text = render(load(GOLDEN / case)).dockerfile
        users = [ln for ln in text.splitlines() if ln.startswith("USER ")]
        assert users[-1] == "USER 1000"


def test_extends_merges_child_wins() -> None:
    env = load(GOLDEN / "extends")
    assert env.name == "child"
    assert env.version == 3
    assert env.base.image == "ubuntu:20.04"  # inherited
    assert dict(env.variables)["OMP_NUM_THREADS"] == "4"  # child wins
    assert "TRICKY" in dict(env.variables)  # parent's kept
    assert "six==1.16.0" in env.pip.packages and "torch==1.6.0" in env.pip.packages
    assert "curl" in env.system_packages and "git" in env.system_packages
    assert env.run.workdir == "/work/space"
    assert len(env.tests) == 1
    assert env.parents == (GOLDEN / "full",)


def test_extends_cycle(tmp_path: Path, write_env) -> None:
    from envbuild.errors import DefinitionError

    write_env('schema = 1\nname = "a"\nextends = "../b"\n', folder="a")
    write_env('schema = 1\nname = "b"\nextends = "../a"\n', folder="b")
    with pytest.raises(DefinitionError) as info:
        load(tmp_path / "a")
    assert "forms a cycle" in info.value.render()


def test_extends_missing_parent(write_env) -> None:
    from envbuild.errors import DefinitionError

    folder = write_env('schema = 1\nname = "a"\nextends = "../nope"\n')
    with pytest.raises(DefinitionError) as info:
        load(folder)
    text = info.value.render()
    assert "extends: the parent" in text and "no such environment definition" in text


@pytest.mark.parametrize(
    "python",
    [
        '[python]\nsource = "system"\n',
        '[python]\nsource = "uv"\nversion = "3.12"\n',
        '[python]\nsource = "conda"\nversion = "3.11"\n[conda]\nchannels = ["conda-forge"]\n',
    ],
    ids=["system", "uv", "conda"],
)
def test_image_variables_are_those_the_dockerfile_sets(write_env, python: str) -> None:
    env = load(write_env(f'schema = 1\nname = "t"\n{python}[variables]\nA_B = "1"\n'))
    dockerfile = render(env).dockerfile
    # Every name an ENV instruction sets (first in its line or continuing one).
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    names = {
        name
        for line in joined.splitlines()
        if line.startswith("ENV ")
        for name in re.findall(r"(?:^ENV |\s)([A-Za-z_][A-Za-z0-9_]*)=", line)
    }
    assert sorted(image_variables(env)) == sorted(names)
