"""Settings: where envbuild keeps its state and which programs it drives.

Each setting comes from, in order: an environment variable, the user's config
file (``$ENVBUILD_CONFIG``, else ``$XDG_CONFIG_HOME/envbuild/config.toml``, else
``~/.config/envbuild/config.toml``), then a default. The config file is plain
TOML with top-level keys named like the fields of :class:`Settings`::

    docker = "/usr/bin/docker"     # the docker CLI that drives BuildKit builds
    prefix = "envbuild"            # image repository prefix: <prefix>/<name>
    debian_mirror = "http://deb.debian.org/debian"
    ubuntu_mirror = "http://archive.ubuntu.com/ubuntu"
    registry = "registry.example.com/team"   # HOST[:PORT][/NAMESPACE]; "" for none
    registry_ca = "/etc/ssl/private-ca.pem"  # a private CA for that registry
    base_drift = "fail"            # "allow": build on a base that moved from its lock
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import NamedTuple

from envbuild.errors import UsageError

_PREFIX_RE = re.compile(
    r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
)


#: What a build does when a locked base is no longer the pinned image (``--base-drift``):
#: ``fail`` (refuse, saying how to fix it) or ``allow`` (build on the base at hand, an
#: image labelled as drifted that never carries the locked hash).
BASE_DRIFT_CHOICES = ("fail", "allow")

#: The build target platform when nothing else is set (``ENVBUILD_PLATFORM``, config ``platform``).
DEFAULT_PLATFORM = "linux/amd64"


class Settings(NamedTuple):
    """The resolved settings of one envbuild invocation.

    A named tuple (``settings._replace(home=...)`` makes a changed copy), not a
    dataclass: every command reads the settings, the console script's cache-hit
    path included, where importing :mod:`dataclasses` costs a tenth of the hit.
    """

    docker: str = "docker"
    prefix: str = "envbuild"
    home: Path = Path("~/.local/share/envbuild")
    debian_mirror: str = "http://deb.debian.org/debian"
    ubuntu_mirror: str = "http://archive.ubuntu.com/ubuntu"
    platform: str = DEFAULT_PLATFORM
    registry: str = ""  # HOST[:PORT][/NAMESPACE] of the image registry; "" for none
    registry_ca: str = ""  # a CA bundle (PEM) for that registry's TLS
    base_drift: str = "fail"  # one of BASE_DRIFT_CHOICES

    @property
    def allow_drift(self) -> bool:
        """Whether a build may go on over a drifted base (``base_drift = "allow"``)."""
        return self.base_drift == "allow"

    @property
    def locks_dir(self) -> Path:
        """Where build locks (one per content hash) live."""
        return self.home / "locks"


_ENV_VARS = {
    "docker": "ENVBUILD_DOCKER",
    "prefix": "ENVBUILD_PREFIX",
    "home": "ENVBUILD_HOME",
    "debian_mirror": "ENVBUILD_DEBIAN_MIRROR",
    "ubuntu_mirror": "ENVBUILD_UBUNTU_MIRROR",
    "platform": "ENVBUILD_PLATFORM",
    "registry": "ENVBUILD_REGISTRY",
    "registry_ca": "ENVBUILD_REGISTRY_CA",
    "base_drift": "ENVBUILD_BASE_DRIFT",
}


def config_path(environ: dict[str, str] | None = None) -> Path:
    """The path of the user's config file (which may not exist)."""
    env = os.environ if environ is None else environ
    if env.get("ENVBUILD_CONFIG"):
        return Path(env["ENVBUILD_CONFIG"]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "envbuild" / "config.toml"


def _default_home(env: dict[str, str] | os._Environ[str]) -> Path:
    if env.get("XDG_DATA_HOME"):
        return Path(env["XDG_DATA_HOME"]) / "envbuild"
    return Path.home() / ".local" / "share" / "envbuild"


# A config file of only ``key = "text"`` lines (the usual one, e.g.
# ``docker = "/usr/bin/docker"``), comments and blank lines means the same to
# any TOML reader: such a file is read without importing tomllib, which costs a
# twentieth of the console script's cache hit. Anything else (another string
# form, an escape, a table, a repeated key) goes to tomllib. A property test
# holds the two to the same answer.
_PLAIN_LINE = re.compile(
    r'[ \t]*(?:([A-Za-z0-9_-]+)[ \t]*=[ \t]*"([^"\\\x00-\x08\x0a-\x1f\x7f]*)"[ \t]*)?'
    r"(?:#[^\x00-\x08\x0a-\x1f\x7f]*)?"
)


def plain_config(text: str) -> dict[str, str] | None:
    """The keys of a config text made only of ``key = "text"`` lines (and comments,
    blank lines), as TOML reads them; ``None`` for any other text."""
    data: dict[str, str] = {}
    for line in text.split("\n"):
        match = _PLAIN_LINE.fullmatch(line)
        if match is None:
            return None
        key, value = match.groups()
        if key is not None:
            if key in data:
                return None  # a repeated key: tomllib reports it
            data[key] = value
    return data


def _read_config(path: Path) -> dict[str, object]:
    """The config file's keys: plain files directly, others through tomllib."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the envbuild config file: {exc}") from exc
    plain = plain_config(text)
    if plain is not None:
        return dict(plain)
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib
    try:
        data: dict[str, object] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: cannot read the envbuild config file: {exc}") from exc
    return data


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Resolve the settings from the environment, the config file and defaults."""
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    path = config_path(dict(env))
    if path.is_file():
        data = _read_config(path)
        known = set(Settings._fields)
        for key, value in data.items():
            if key not in known:
                raise UsageError(
                    f"{path}: {key}: unknown setting",
                    hint="known settings: " + ", ".join(sorted(known)),
                )
            if not isinstance(value, str):
                raise UsageError(f"{path}: {key}: expected a string, got {type(value).__name__}")
            values[key] = value
    for key, var in _ENV_VARS.items():
        if env.get(var):
            values[key] = env[var]
    settings = Settings(home=_default_home(env))
    updates: dict[str, object] = {}
    for key, value in values.items():
        updates[key] = Path(value).expanduser() if key == "home" else value
    settings = settings._replace(**updates)  # type: ignore[arg-type]
    if not _PREFIX_RE.fullmatch(settings.prefix):
        raise UsageError(
            f"image prefix {settings.prefix!r} is not a valid repository prefix",
            hint="use lowercase letters, digits, '.', '_', '-' and '/', e.g. 'envbuild' "
            "or 'localhost:5000/team'",
        )
    if settings.base_drift not in BASE_DRIFT_CHOICES:
        where = "ENVBUILD_BASE_DRIFT" if env.get("ENVBUILD_BASE_DRIFT") else f"{path}: base_drift"
        raise UsageError(
            f"{where}: expected one of {', '.join(BASE_DRIFT_CHOICES)}, "
            f"got {settings.base_drift!r}",
            hint="fail refuses a build over a base that moved from its lock; allow builds "
            "on the base at hand, labelled as drifted",
        )
    return settings
