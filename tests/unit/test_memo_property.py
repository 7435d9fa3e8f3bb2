"""Property: for random edits to any input of a small extends chain, the memo answers a
hash only if a full render gives that same hash, and answers it whenever nothing changed.

The chain: ``child`` extends ``parent``; the parent's base is a Dockerfile beside
it (or an image); the child may have an empty ``[base]`` table, its own base
image, pip packages and locks. Edits replace a file with another variant (valid
or not), delete it, append a comment, rewrite it with the same bytes, rewrite it
with other bytes of the same size and the old mtime, or retag the base image in
the engine. After each edit the memo is asked first, then a full render.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import envbuild.lock as locking
from envbuild.build.builder import resolve
from envbuild.cache import memo
from envbuild.definition.model import Environment, Pip
from envbuild.engine.protocols import ImageInfo
from envbuild.errors import EnvbuildError
from envbuild.settings import load_settings
from tests.fakes import BASE, FakeEngine

PLATFORM = "linux/amd64"
PIN_A = "sha256:" + "a" * 64
PIN_B = "sha256:" + "b" * 64
SIX_A = "six==1.16.0 \\\n    --hash=sha256:" + "1" * 64 + "\n"
SIX_B = "six==1.16.0 \\\n    --hash=sha256:" + "2" * 64 + "\n"
OLD_NS = 1_000_000_000_000_000_000  # 2001: a stat the memo trusts


def _index(pin: str, pip: str | None) -> str:
    target = locking.platform_tag(PLATFORM)
    stub = Environment(path=Path("/"), name="x", version=1, pip=Pip(packages=("six==1.16.0",)))
    pip_lock = None
    if pip is not None:
        pip_lock = locking.PipLock(
            requested=("six==1.16.0",),
            inputs=locking.pip_inputs(stub, "3.11", target),
            python="3.11",
            platform=target,
            resolver="uv 0.13.9",
            data=(locking.GENERATED + pip).encode(),
        )
    locks = locking.Locks(base=locking.BasePin(BASE, "image-id", pin), python="3.11", pip=pip_lock)
    return locking.render_index(locks)


VARIANTS: dict[str, list[str]] = {
    "child/env.toml": [
        'schema = 1\nname = "child"\nextends = "../parent"\n[base]\n',
        'schema = 1\nname = "child"\nextends = "../parent"\n[base]\n[pip]\npackages = ["six==1.16.0"]\n',
        'schema = 1\nname = "child"\nextends = "../parent"\n[base]\nimage = "debian:bookworm-slim"\n'
        '[pip]\npackages = ["six==1.16.0"]\n',
        'schema = 1\nname = "child"\nversion = 2\nextends = "../parent"\n[variables]\nA = "1"\n',
        'schema = 1\nname = "child"\nextends = "../parent"\n[base\n',
    ],
    "parent/env.toml": [
        'schema = 1\nname = "parent"\n[base]\ndockerfile = "base.Dockerfile"\n',
        'schema = 1\nname = "parent"\n[base]\ndockerfile = "base.Dockerfile"\n'
        '[system]\npackages = ["git"]\n',
        'schema = 1\nname = "parent"\n[base]\nimage = "debian:bookworm-slim"\n',
        'schema = 1\nname = "parent"\n[variables]\nA = "2"\n',
    ],
    "parent/base.Dockerfile": [
        "FROM debian:bookworm-slim\n",
        "FROM debian:bookworm-slim\nRUN true\n",
        "FROM debian:bookworm-slim\nRUN echo\n",  # the same size as the one above
        "RUN nothing\n",
    ],
    "child/env.lock.toml": [
        _index(PIN_A, None),
        _index(PIN_B, None),
        _index(PIN_A, SIX_A),
        _index(PIN_A, SIX_B),
        "lock_version = [\n",
    ],
    "child/requirements.lock": [locking.GENERATED + SIX_A, locking.GENERATED + SIX_B],
}
FILES = sorted(VARIANTS)
START = {
    "child/env.toml": VARIANTS["child/env.toml"][0],
    "parent/env.toml": VARIANTS["parent/env.toml"][0],
    "parent/base.Dockerfile": VARIANTS["parent/base.Dockerfile"][0],
}


@dataclass(frozen=True)
class Edit:
    kind: str  # set | delete | comment | same-bytes | same-size | retag
    file: str
    variant: int = 0


edits = st.one_of(
    st.builds(
        Edit,
        st.sampled_from(["set", "delete", "comment", "same-bytes", "same-size"]),
        st.sampled_from(FILES),
        st.integers(min_value=0, max_value=4),
    ),
    st.builds(Edit, st.just("retag"), st.just(""), st.integers(min_value=0, max_value=1)),
)


def _apply(root: Path, engine: FakeEngine, edit: Edit) -> None:
    if edit.kind == "retag":
        engine.images[BASE] = ImageInfo(id=(PIN_A, PIN_B)[edit.variant], tags=(BASE,))
        return
    path = root / edit.file
    old = path.read_bytes() if path.exists() else None
    if edit.kind == "set":
        variants = VARIANTS[edit.file]
        path.write_text(variants[edit.variant % len(variants)], encoding="utf-8")
    elif edit.kind == "delete":
        path.unlink(missing_ok=True)
    elif old is None:
        return
    elif edit.kind == "comment":
        path.write_bytes(old + b"# a comment\n")
    elif edit.kind == "same-bytes":
        path.write_bytes(old)
        os.utime(path, ns=(OLD_NS, OLD_NS))
    elif edit.kind == "same-size" and old:
        stat = path.stat()
        flipped = bytes([old[0] ^ 0x20]) + old[1:]  # other bytes, the same size
        path.write_bytes(flipped)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _snapshot(root: Path, engine: FakeEngine) -> tuple[object, ...]:
    files = tuple((f, (root / f).read_bytes() if (root / f).exists() else None) for f in FILES)
    return (files, engine.images[BASE].id)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(edits, min_size=1, max_size=6))
def test_memo_answers_a_hash_iff_a_full_render_gives_it(
    tmp_path_factory: pytest.TempPathFactory, steps: list[Edit]
) -> None:
    root = tmp_path_factory.mktemp("chain")
    for name, text in START.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
        os.utime(root / name, ns=(OLD_NS, OLD_NS))
    child = root / "child"
    options = load_settings()
    engine = FakeEngine()

    def base_id(ref: str) -> str | None:
        info = engine.images.get(ref)
        return info.id if info is not None else None

    def full() -> str | None:
        try:
            return resolve(child, settings=options, memo=False, engine=engine).hash
        except EnvbuildError:
            return None

    recorded = resolve(child, settings=options, engine=engine).hash  # renders and records
    remembered = _snapshot(root, engine)
    for step in steps:
        _apply(root, engine, step)
        found = memo.recall(options.home, child, PLATFORM, base_id=base_id)
        truth = full()
        if found is not None:
            assert found.hash == truth, f"the memo answered {found.hash[:12]} after {step}"
        if _snapshot(root, engine) == remembered:  # nothing an input holds changed
            assert found is not None and found.hash == recorded, f"a miss after {step}"
        # The memo path gives what the full one does, and records it.
        try:
            via_memo: str | None = resolve(child, settings=options, engine=engine).hash
        except EnvbuildError:
            via_memo = None
        assert via_memo == truth
        if truth is not None:
            recorded, remembered = truth, _snapshot(root, engine)
