"""``envbuild export kubernetes --registry``: the job image, built and pushed for real.

A loopback registry (tests/integration/registry.py) receives the job image
built on envs/hello's image with the source directory copied in; the
manifests must name it by exactly the digest the registry serves, and the
image must hold the source at the workdir.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from envbuild.build.builder import build
from envbuild.build.jobimage import JOB_BASE_LABEL, job_name
from envbuild.cli.main import main
from envbuild.engine.docker import DockerEngine
from envbuild.settings import load_settings
from tests.integration.registry import LoopbackRegistry

pytestmark = pytest.mark.docker

HELLO = Path(__file__).resolve().parents[2] / "envs" / "hello"
JOB = "jobimg-test"


@pytest.fixture
def src(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    (folder / "pkg").mkdir(parents=True)
    (folder / "train.py").write_text("import pkg.util\nprint(pkg.util.WORD)\n")
    (folder / "pkg" / "__init__.py").write_text("")
    (folder / "pkg" / "util.py").write_text("WORD = 'from the job image'\n")
    return folder


@pytest.fixture
def pushed_tag(registry: LoopbackRegistry, docker_cli: str) -> Iterator[str]:
    tag = f"{registry.host}/{job_name('hello')}:{JOB}"
    yield tag
    subprocess.run([docker_cli, "rmi", tag], capture_output=True, check=False)


def test_the_manifests_name_the_job_image_by_the_registrys_digest(
    registry: LoopbackRegistry,
    src: Path,
    tmp_path: Path,
    docker_cli: str,
    pushed_tag: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = load_settings()
    env_image = build(HELLO, settings=settings, engine=DockerEngine(settings.docker))
    argv = [
        *("export", "kubernetes", "-o", str(tmp_path / "k8s"), "--registry", registry.host),
        *("--name", JOB, "--distribution", "pytorch", "--nodes", "2"),
        *("--source-dir", str(src), str(HELLO), "train.py"),
    ]
    assert main(argv) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    _, job = yaml.safe_load_all((tmp_path / "k8s" / f"{JOB}.yaml").read_text())
    ref = job["spec"]["template"]["spec"]["containers"][0]["image"]
    served = registry.manifest_digest(job_name("hello"), JOB)
    assert served is not None and ref == f"{registry.host}/{job_name('hello')}@{served}"
    assert f"job image {ref}" in err
    # The job image is the environment's image with the source at the workdir.
    labels = subprocess.run(
        [
            docker_cli,
            "image",
            "inspect",
            "--format",
            f'{{{{index .Config.Labels "{JOB_BASE_LABEL}"}}}}',
            ref,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert labels == env_image.id
    out = subprocess.run(
        [docker_cli, "run", "--rm", ref, "python", "train.py"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert (out.returncode, out.stdout) == (0, "from the job image\n"), out.stderr
    # Exported again: the same content is the same digest (nothing new to push).
    assert main(argv) == 0
    assert registry.manifest_digest(job_name("hello"), JOB) == served
