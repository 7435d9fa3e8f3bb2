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
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path

from envbuild.errors import UsageError

_PREFIX_RE = re.compile(
    r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
)


#: The build target platform when nothing else is set (``ENVBUILD_PLATFORM``, config ``platform``).
DEFAULT_PLATFORM = "linux/amd64"


@dataclass(frozen=True)
class Settings:
    """The resolved settings of one envbuild invocation."""

    docker: str = "docker"
    prefix: str = "envbuild"
    home: Path = Path("~/.local/share/envbuild")
    debian_mirror: str = "http://deb.debian.org/debian"
    ubuntu_mirror: str = "http://archive.ubuntu.com/ubuntu"
    platform: str = DEFAULT_PLATFORM
    registry: str = ""  # HOST[:PORT][/NAMESPACE] of the image registry; "" for none
    registry_ca: str = ""  # a CA bundle (PEM) for that registry's TLS

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


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Resolve the settings from the environment, the config file and defaults."""
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    path = config_path(dict(env))
    if path.is_file():
        # Imported only when there is a config file: the cache-hit path starts here.
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - exercised on Python 3.10 only
            import tomli as tomllib
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path}: cannot read the envbuild config file: {exc}") from exc
        known = {f.name for f in fields(Settings)}
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
    settings = replace(settings, **updates)  # type: ignore[arg-type]
    if not _PREFIX_RE.fullmatch(settings.prefix):
        raise UsageError(
            f"image prefix {settings.prefix!r} is not a valid repository prefix",
            hint="use lowercase letters, digits, '.', '_', '-' and '/', e.g. 'envbuild' "
            "or 'localhost:5000/team'",
        )
    return settings
