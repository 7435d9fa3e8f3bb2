"""Build contexts are the same on every host: nothing in them comes from the machine that renders.

uv, which installs the pip requirements, is a pinned, hashed requirement the
build installs from the index (``envbuild/uv-requirements.txt``), not a binary
copied from the host. The target platform picks the wheel's hash; the host
never enters.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from envbuild.cache.hashing import content_hash
from envbuild.definition.model import load
from envbuild.errors import UsageError
from envbuild.render import dockerfile as render_mod
from envbuild.render.dockerfile import UV_VERSION, UV_WHEEL_SHA256, render

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "env.toml").is_file())


def _no_host_uv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Make every way to find a uv on this host fail."""
    import shutil

    import envbuild.lock as locking
    from envbuild.lock import makers

    def refuse() -> Path:
        raise AssertionError("rendering looked for the host's uv")

    monkeypatch.setattr(makers, "uv_binary", refuse)
    monkeypatch.setattr(locking, "uv_binary", refuse, raising=False)
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python" / "python"))
    monkeypatch.setitem(sys.modules, "uv", None)  # `import uv` fails
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))


@pytest.mark.parametrize("case", CASES)
def test_same_context_without_any_uv_on_the_host(
    case: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    before = render(load(GOLDEN / case))
    _no_host_uv(monkeypatch, tmp_path)
    after = render(load(GOLDEN / case))
    assert dict(after.files) == dict(before.files)
    assert content_hash(after, platform="linux/amd64") == content_hash(
        before, platform="linux/amd64"
    )


@pytest.mark.parametrize("case", CASES)
def test_no_binary_and_no_host_path_in_a_context(case: str) -> None:
    context = render(load(GOLDEN / case))
    for rel, item in context.files.items():
        assert b"\0" not in item.data, f"{rel} is a binary"
        assert len(item.data) < 64 * 1024, f"{rel} is {len(item.data)} bytes"
        for host_path in (str(ROOT), sys.prefix, sys.base_prefix):
            assert host_path.encode() not in item.data, f"{rel} names {host_path}"


def test_locked_pip_context_installs_a_pinned_hashed_uv() -> None:
    context = render(load(GOLDEN / "locked-pip"))
    requirement = context.files["envbuild/uv-requirements.txt"].data.decode()
    assert re.search(
        rf"^uv=={re.escape(UV_VERSION)} --hash=sha256:{UV_WHEEL_SHA256['linux/amd64']}$",
        requirement,
        re.MULTILINE,
    )
    script = context.files["envbuild/install-uv.sh"].data.decode()
    assert "--require-hashes" in script and "--only-binary=:all:" in script
    assert "--mount=type=bind" not in context.dockerfile  # nothing mounted from the context


def test_the_target_platform_picks_the_wheel_hash() -> None:
    env = load(GOLDEN / "full")  # not locked: renders for any platform
    amd64 = render(env, platform="linux/amd64")
    arm64 = render(env, platform="linux/arm64")
    differ = sorted(rel for rel in amd64.files if amd64.files[rel] != arm64.files[rel])
    assert differ == ["envbuild/uv-requirements.txt"]
    text = arm64.files["envbuild/uv-requirements.txt"].data.decode()
    assert UV_WHEEL_SHA256["linux/arm64"] in text
    assert UV_WHEEL_SHA256["linux/amd64"] not in text


def test_a_platform_without_a_uv_wheel_pin_is_a_clear_error() -> None:
    with pytest.raises(UsageError) as info:
        render(load(GOLDEN / "full"), platform="linux/s390x")
    text = info.value.render()
    assert "linux/s390x" in text and "linux/amd64, linux/arm64" in text
    assert "ENVBUILD_PLATFORM" in text
    # Without pip requirements, no uv: any platform renders.
    render(load(GOLDEN / "minimal"), platform="linux/s390x")


def test_uv_in_images_is_the_version_the_project_locks_with() -> None:
    """The uv pinned for builds moves with the project's own uv pin (pyproject.toml)."""
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    pins = re.findall(r'"uv==([^"]+)"', pyproject)
    assert pins == [UV_VERSION], "update UV_VERSION and UV_WHEEL_SHA256 with the uv pin"
    assert set(UV_WHEEL_SHA256) == {"linux/amd64", "linux/arm64"}
    assert all(re.fullmatch(r"[0-9a-f]{64}", v) for v in UV_WHEEL_SHA256.values())
    assert render_mod.UV_REQUIREMENTS_FILE == "uv-requirements.txt"
