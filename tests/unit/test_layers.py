"""Only the engine layer talks to Docker: no docker CLI invocation outside ``engine/``.

Imports are checked by the import-linter contracts in pyproject.toml (run by
.ci/run); a subprocess that runs the docker client is not an import, so this
test reads the source instead: any list or tuple display whose first element
names the docker client (``[docker, "run", ...]``, ``(settings.docker, *args)``,
``["docker", "load"]``), or whose second is one of the client's own
subcommands (``[self.binary, "build", ...]``), is an argv for it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "builder" / "envbuild"
ENGINE = PACKAGE / "engine"


def _names_docker(node: ast.expr) -> bool:
    """Whether ``node`` is the docker client: a name or attribute ``*docker``, or "docker"."""
    if isinstance(node, ast.Name):
        return node.id.lower().endswith("docker")
    if isinstance(node, ast.Attribute):
        return node.attr.lower().endswith("docker")
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value == "docker" or node.value.endswith("/docker")
    return False


# The docker client's own subcommands (no other tool envbuild runs uses these
# as its first word); `run` only with `--rm`, since `uv run` exists.
SUBCOMMANDS = frozenset(
    [
        "build",
        "buildx",
        "builder",
        "container",
        "image",
        "images",
        "import",
        "inspect",
        "load",
        "network",
        "pull",
        "push",
        "rmi",
        "save",
        "tag",
        "volume",
    ]
)


def _word(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _is_docker_argv(elts: list[ast.expr]) -> bool:
    if not elts:
        return False
    if _names_docker(elts[0]):
        return True
    words = [_word(e) for e in elts[1:]]
    if not words or words[0] is None:
        return False
    return words[0] in SUBCOMMANDS or (words[0] == "run" and "--rm" in words)


def docker_argvs(source: str, filename: str = "<source>") -> list[int]:
    """Line numbers of the docker CLI argvs (see the module docstring) in ``source``."""
    lines = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.List | ast.Tuple) and _is_docker_argv(node.elts):
            lines.append(node.lineno)
    return sorted(lines)


def _modules() -> list[object]:
    return [
        pytest.param(path, id=path.relative_to(PACKAGE).as_posix())
        for path in sorted(PACKAGE.rglob("*.py"))
        if ENGINE not in path.parents
    ]


def test_the_engine_itself_is_seen_running_the_cli() -> None:
    # The scan is not blind: the engine's own BuildKit build is a docker argv.
    assert any(docker_argvs(p.read_text(encoding="utf-8")) for p in ENGINE.rglob("*.py"))


@pytest.mark.parametrize(
    "source",
    [
        'subprocess.run([docker, "run", "--rm", image])',
        "subprocess.run([settings.docker, *args])",
        'subprocess.Popen(("docker", "load"), stdin=f)',
        'argv = [self._docker, "image", "inspect", ref]',
        'subprocess.run(["/usr/bin/docker", "info"])',
        'argv = [self.binary, "build", "--progress=plain"]',
        'subprocess.run([client, "image", "inspect", ref])',
        'subprocess.run([cli, "run", "--rm", image, "cat", "/etc/os-release"])',
    ],
)
def test_the_scan_finds_docker_argvs(source: str) -> None:
    assert docker_argvs(source) == [1]


@pytest.mark.parametrize(
    "source",
    [
        'subprocess.run(["git", "log"])',
        'DEFAULTS = {"docker": "docker"}',
        "engine = DockerEngine(settings.docker)",
        '[image, "docker"]',
        'subprocess.run([uv, "run", "script.py"])',
        'subprocess.run([str(binary), "pip", "compile", "requirements.in"])',
        'subprocess.run([sys.executable, "-m", "build", "--no-isolation"])',
    ],
)
def test_the_scan_leaves_other_code_alone(source: str) -> None:
    assert docker_argvs(source) == []


@pytest.mark.parametrize("path", _modules())
def test_no_docker_cli_outside_the_engine(path: Path) -> None:
    found = docker_argvs(path.read_text(encoding="utf-8"), str(path))
    assert found == [], (
        f"{path.relative_to(PACKAGE)} runs the docker CLI (lines {found}): "
        "go through the engine protocol in envbuild.engine instead"
    )


def _private_imports_across_packages() -> list[str]:
    """``from envbuild.<pkg>.<mod> import _name`` written outside ``envbuild.<pkg>``."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        package = ".".join(parts[:-1])
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith(
                "envbuild."
            ):
                continue
            source = (node.module or "").rpartition(".")[0]
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and source != package:
                    found.append(f"{path.relative_to(PACKAGE)}: {node.module}.{alias.name}")
    return found


def test_no_module_imports_a_private_name_of_another_package() -> None:
    """A name another layer needs has a public home (e.g. run.local.new_run_id for export)."""
    assert _private_imports_across_packages() == []
