"""`envbuild diff`: the fixture pair, a published version, and images through a fake engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from envbuild.catalog.diff import Side, diff, read_side, render_text
from envbuild.catalog.packages import DPKG_ARGV, PIP_ARGV, Base, PackageList
from envbuild.cli.main import main
from envbuild.engine.protocols import STDOUT, ContainerSpec, ImageInfo
from envbuild.errors import EnvbuildError
from tests.run_fakes import FakeRunEngine

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "diff"


def test_fixture_pair_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", "--json", str(FIXTURES / "a"), str(FIXTURES / "b")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["identical"] is False
    assert data["base"]["changed"] == ["pin"]
    apt = data["packages"]["apt"]
    assert apt["added"] == [{"name": "jq", "version": None}]
    assert apt["removed"] == [{"name": "curl", "version": None}]
    assert apt["changed"] == [
        {"name": "git", "old": "1:2.39.5-0+deb12u1", "new": "1:2.39.5-0+deb12u2"}
    ]
    assert apt["unchanged"] == 3  # python3, python3-gdbm, python3-venv
    pip = data["packages"]["pip"]
    assert pip["added"] == [{"name": "click", "version": "8.1.7"}]
    assert pip["removed"] == [{"name": "six", "version": "1.16.0"}]
    assert pip["changed"] == [{"name": "requests", "old": "2.31.0", "new": "2.32.3"}]
    assert pip["unchanged"] == 1  # numpy>=1.26 on both sides
    assert data["packages"]["conda"] == {"added": [], "removed": [], "changed": [], "unchanged": 0}


def test_fixture_pair_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", str(FIXTURES / "a"), str(FIXTURES / "b")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[2].startswith("base changed (pin): debian:bookworm-slim -> debian:bookworm-slim@")
    pip_at = lines.index("pip: 1 added, 1 removed, 1 changed, 1 unchanged")
    # grouped (added, removed, changed), names aligned in one column
    assert lines[pip_at + 1 : pip_at + 4] == [
        "  + click     8.1.7",
        "  - six       1.16.0",
        "  ~ requests  2.31.0 -> 2.32.3",
    ]
    assert "  ~ git   1:2.39.5-0+deb12u1 -> 1:2.39.5-0+deb12u2" in lines
    assert "conda" not in out  # empty on both sides: not shown


def test_same_folder_is_identical(capsys: pytest.CaptureFixture[str]) -> None:
    a = str(FIXTURES / "a")
    assert main(["diff", "--exit-code", a, a]) == 0
    assert capsys.readouterr().out.rstrip().endswith("no differences")
    assert main(["diff", "--exit-code", a, str(FIXTURES / "b")]) == 1


def test_base_ref_change() -> None:
    a = Side("a", "folder", PackageList(Base("ubuntu:20.04")))
    b = Side("b", "folder", PackageList(Base("ubuntu:22.04")))
    result = diff(a, b)
    assert result.base_changes == ("ref",)
    assert "base changed (ref): ubuntu:20.04 -> ubuntu:22.04" in render_text(result)


def test_published_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    published = tmp_path / "published"
    folder = published / "diff-fixture" / "1"
    folder.mkdir(parents=True)
    (folder / "packages.json").write_text(
        json.dumps(PackageList(Base("debian:bookworm-slim"), pip={"six": "1.15.0"}).to_json()),
        encoding="utf-8",
    )
    args = ["diff", "--json", "--published", str(published), "diff-fixture@1", str(FIXTURES / "a")]
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["a"]["kind"] == "published"
    assert data["packages"]["pip"]["changed"] == [{"name": "six", "old": "1.15.0", "new": "1.16.0"}]
    with pytest.raises(EnvbuildError, match=r"diff-fixture/7/packages\.json does not exist") as exc:
        read_side("diff-fixture@7", published=published)
    assert exc.value.hint == "published versions of diff-fixture: 1"


def test_unknown_side_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", "no/such/env", str(FIXTURES / "a")]) == 2
    err = capsys.readouterr().err
    assert "not an environment folder, a published name@version or image:REF" in err


# --------------------------------------------------------------------------
# image:REF, through a fake engine: the container calls, not their parsing, are faked
# --------------------------------------------------------------------------

DPKG_A = "libc6\t2.36-9+deb12u7\npython3\t3.11.2-1+b1\nless\t590-2.1~deb12u2\n"
DPKG_B = "libc6\t2.36-9+deb12u8\npython3\t3.11.2-1+b1\njq\t1.6-2.1\n"
PIP_A = json.dumps([{"name": "pip", "version": "23.0.1"}, {"name": "six", "version": "1.16.0"}])
PIP_B = json.dumps([{"name": "pip", "version": "23.0.1"}, {"name": "six", "version": "1.17.0"}])


OUTPUTS = {
    ("img/a:1", "dpkg-query"): DPKG_A,
    ("img/a:1", "python"): PIP_A,
    ("img/b:1", "dpkg-query"): DPKG_B,
    ("img/b:1", "python"): PIP_B,
}


def _answer(spec: ContainerSpec) -> list[tuple[int, bytes]] | None:
    text = OUTPUTS.get((spec.image, spec.argv[0]))
    return None if text is None else [(STDOUT, text.encode())]


@pytest.fixture
def fake_engine() -> FakeRunEngine:
    base = {"org.opencontainers.image.base.name": "debian:bookworm-slim"}
    engine = FakeRunEngine(answer=_answer)
    for ref in ("img/a:1", "img/b:1"):
        engine.images[ref] = ImageInfo(id=f"sha256:{ref.encode().hex():0<64}", labels=base, size=1)
    return engine


def test_image_sides(fake_engine: FakeRunEngine, tmp_path: Path) -> None:
    def engine() -> FakeRunEngine:
        return fake_engine

    a = read_side("image:img/a:1", published=tmp_path, engine=engine)
    b = read_side("image:img/b:1", published=tmp_path, engine=engine)
    assert a.kind == "image" and a.packages.base == Base("debian:bookworm-slim")
    result = diff(a, b)
    apt, pip, conda = (result.ecosystems[e] for e in ("apt", "pip", "conda"))
    assert apt.added == (("jq", "1.6-2.1"),)
    assert apt.removed == (("less", "590-2.1~deb12u2"),)
    assert [(c.name, c.old, c.new) for c in apt.changed] == [
        ("libc6", "2.36-9+deb12u7", "2.36-9+deb12u8")
    ]
    assert [(c.name, c.old, c.new) for c in pip.changed] == [("six", "1.16.0", "1.17.0")]
    assert not conda and result.base_changes == ()
    # the commands ran as argv lists (no shell), each container removed again
    argvs = {spec.argv for spec in fake_engine.specs.values()}
    assert DPKG_ARGV in argvs and PIP_ARGV in argvs
    assert len(fake_engine.specs) == 8 and not fake_engine.live  # and cat /etc/os-release


def test_missing_image(fake_engine: FakeRunEngine, tmp_path: Path) -> None:
    with pytest.raises(EnvbuildError, match="no such image in the local engine"):
        read_side("image:img/none:1", published=tmp_path, engine=lambda: fake_engine)
