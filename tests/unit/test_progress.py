"""The terminal progress display of a BuildKit log."""

from __future__ import annotations

from envbuild.build.progress import BuildProgress

LOG = [
    "#1 [internal] load build definition from Dockerfile",
    "#1 DONE 0.0s",
    "#5 [stage-0 2/9] COPY envbuild/apt-packages.txt /opt/envbuild/apt-packages.txt",
    "#5 CACHED",
    "#7 [stage-0 4/9] RUN sh /opt/envbuild/pip-install.sh",
    "#7 0.553 Collecting six==1.16.0",
    "#7 0.624 Successfully installed six-1.16.0",
    "#7 DONE 0.7s",
    "envbuild: a message of envbuild's own",
]


def test_plain_log_passes_through_off_a_terminal() -> None:
    out: list[str] = []
    display = BuildProgress(out.append, tty=False)
    for line in LOG:
        display(line)
    assert "".join(out) == "\n".join(LOG) + "\n"


def test_terminal_shows_one_line_per_step() -> None:
    out: list[str] = []
    display = BuildProgress(out.append, tty=True, width=200)
    for line in LOG:
        display(line)
    finished = [s.replace("\r\x1b[K", "") for s in out if s.endswith("\n")]
    assert finished == [
        "✔ [2/9] COPY envbuild/apt-packages.txt /opt/envbuild/apt-packages.txt  cached\n",
        "✔ [4/9] RUN sh /opt/envbuild/pip-install.sh  0.7s\n",
        "envbuild: a message of envbuild's own\n",
    ]
    live = [s for s in out if not s.endswith("\n")]
    assert any("Collecting six==1.16.0" in s for s in live)


def test_long_lines_fit_the_terminal() -> None:
    out: list[str] = []
    display = BuildProgress(out.append, tty=True, width=40)
    display("#7 [stage-0 4/9] RUN " + "x" * 200)
    assert all(len(s.replace("\r\x1b[K", "")) <= 40 for s in out)
