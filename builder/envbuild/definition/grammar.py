"""Full-match grammars for every kind of user string that can reach a Dockerfile.

Each checker returns ``None`` for a good value, or a ``(message, hint)`` pair
for a bad one. Every pattern is used with ``re.fullmatch``: a grammar anchored
at one end only lets ``"vim; curl x | sh"`` through (RELIABILITY.md, T05).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

Verdict = tuple[str, str | None] | None


class _Pattern:
    """A regex compiled on first use: envbuild starts fast and pays only for what it checks."""

    __slots__ = ("_compiled", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._compiled: re.Pattern[str] | None = None

    def fullmatch(self, value: str) -> re.Match[str] | None:
        """``re.fullmatch`` of the pattern against ``value``."""
        if self._compiled is None:
            self._compiled = re.compile(self.source)
        return self._compiled.fullmatch(value)


# Control characters end a Dockerfile instruction or corrupt a log line; no
# string that can reach a Dockerfile may hold one. A tab is allowed only in
# variable values and descriptions, where it is harmless once quoted.
_CONTROL_CLASS = r"\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029"
_CONTROL_OR_TAB_CLASS = r"\x00-\x1f\x7f\x85\u2028\u2029"
_CONTROL = re.compile(f"[{_CONTROL_CLASS}]")
_CONTROL_OR_TAB = re.compile(f"[{_CONTROL_OR_TAB_CLASS}]")

NAME = _Pattern(r"[a-z0-9][a-z0-9._-]{0,127}")
VARIABLE = _Pattern(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
RESERVED_VARIABLES = frozenset({"PATH", "HOME", "VIRTUAL_ENV", "PWD", "HOSTNAME"})
RESERVED_VARIABLE_PREFIXES = ("ENVBUILD_", "BUILDKIT_", "DOCKER_")

# Debian/Ubuntu package names (Debian policy 5.6.1), optionally "=version".
APT_PACKAGE = _Pattern(r"[a-z0-9][a-z0-9.+-]+(?::[a-z0-9]+)?(?:=[A-Za-z0-9.+~:-]+)?")

# PEP 508 requirement, the subset envbuild accepts: name, extras, version
# specifiers and an environment marker. Direct URLs are refused (lock them).
_PEP508_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_EXTRAS = rf"\[\s*{_PEP508_NAME}(?:\s*,\s*{_PEP508_NAME})*\s*\]"
_VERSION_ONE = r"(?:===|==|!=|~=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+"
_VERSIONS = rf"{_VERSION_ONE}(?:\s*,\s*{_VERSION_ONE})*"
_MARKER_VAR = (
    r"(?:python_version|python_full_version|os_name|sys_platform|platform_release"
    r"|platform_system|platform_version|platform_machine|platform_python_implementation"
    r"|implementation_name|implementation_version|extra)"
)
_MARKER_VALUE = r"(?:'[A-Za-z0-9._*+ -]*'|\"[A-Za-z0-9._*+ -]*\")"
_MARKER_OP = r"(?:===|==|!=|~=|<=|>=|<|>|not\s+in|in)"
_MARKER_TERM = rf"(?:{_MARKER_VAR}|{_MARKER_VALUE})"
_MARKER_EXPR = rf"\(?\s*{_MARKER_TERM}\s*{_MARKER_OP}\s*{_MARKER_TERM}\s*\)?"
_MARKER = rf"{_MARKER_EXPR}(?:\s+(?:and|or)\s+{_MARKER_EXPR})*"
_PIP_SPEC = rf"{_PEP508_NAME}\s*(?:{_EXTRAS})?\s*(?:\(\s*{_VERSIONS}\s*\)|{_VERSIONS})?\s*"
PIP_REQUIREMENT = _Pattern(rf"{_PIP_SPEC}(?:;\s*{_MARKER})?")
# Without a marker (most requirements), the far smaller pattern suffices: it
# compiles in a tenth of the time, on the path of every `envbuild build`.
PIP_REQUIREMENT_NO_MARKER = _Pattern(_PIP_SPEC)

# conda MatchSpec, the common forms: name, name=ver, name==ver=build, channel::name>=ver.
CONDA_PACKAGE = _Pattern(
    r"(?:[A-Za-z0-9][A-Za-z0-9._-]*::)?[A-Za-z0-9_][A-Za-z0-9._-]*"
    r"(?:\s*(?:==|=|>=|<=|>|<|!=|~=)\s*[A-Za-z0-9.*+!_,<>=|-]+(?:=[A-Za-z0-9._*-]+)?)?"
)
CONDA_CHANNEL = _Pattern(r"[A-Za-z0-9][A-Za-z0-9._-]*|https?://[A-Za-z0-9._~:/%+-]+")

# An image reference: [registry[:port]/]path[:tag][@digest]
_REF_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REF_DOMAIN = r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?::[0-9]+)?/)"
IMAGE_REF = _Pattern(
    rf"{_REF_DOMAIN}?{_REF_COMPONENT}(?:/{_REF_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?"
)

PYTHON_VERSION = _Pattern(r"3\.[0-9]{1,2}")
CUDA_VERSION = _Pattern(r"[0-9]{1,2}\.[0-9]{1,2}(?:\.[0-9]{1,3})?")
SHM_SIZE = _Pattern(r"[1-9][0-9]*[bkmgBKMG]?")
ABS_PATH = _Pattern(r"/(?:[A-Za-z0-9._@+-]+/?)*")
REL_PATH = _Pattern(r"[A-Za-z0-9._@+-]+(?:/[A-Za-z0-9._@+-]+)*")


def control_chars(value: str, *, allow_tab: bool = False) -> Verdict:
    """Reject newlines and other control characters (RELIABILITY.md, T01)."""
    pattern = _CONTROL if allow_tab else _CONTROL_OR_TAB
    match = pattern.search(value)
    if match is None:
        return None
    return (
        f"contains the control character {match.group()!r}",
        "remove newlines and control characters: they would end a Dockerfile instruction",
    )


def _fullmatch(pattern: _Pattern, value: str, what: str, hint: str | None) -> Verdict:
    bad = control_chars(value)
    if bad:
        return bad
    if pattern.fullmatch(value):
        return None
    return (f"{value!r} is not {what}", hint)


def check_name(value: str) -> Verdict:
    """An environment name: ``[a-z0-9][a-z0-9._-]*``, at most 128 characters."""
    return _fullmatch(
        NAME,
        value,
        "a valid environment name",
        "use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit",
    )


def check_variable_name(value: str) -> Verdict:
    """A variable name: a shell identifier that envbuild does not reserve."""
    bad = _fullmatch(
        VARIABLE,
        value,
        "a valid variable name",
        "use letters, digits and '_', not starting with a digit",
    )
    if bad:
        return bad
    if value in RESERVED_VARIABLES or value.startswith(RESERVED_VARIABLE_PREFIXES):
        return (
            f"{value!r} is reserved: envbuild sets it itself",
            "reserved: "
            + ", ".join(sorted(RESERVED_VARIABLES))
            + " and names starting with "
            + ", ".join(RESERVED_VARIABLE_PREFIXES),
        )
    return None


def check_apt_package(value: str) -> Verdict:
    """A Debian package name, optionally pinned with ``=version``."""
    return _fullmatch(
        APT_PACKAGE,
        value,
        "a Debian package name",
        "use a package name like 'libgomp1' or 'git=1:2.39.5-0+deb12u1'",
    )


def check_pip_requirement(value: str) -> Verdict:
    """A PEP 508 requirement: name, extras, version specifiers, marker."""
    if value.lstrip().startswith("-"):
        return (
            f"{value!r} is a pip option, not a requirement",
            "set indexes with [pip] index_url / extra_index_urls; options are not allowed here",
        )
    if "@" in value or "://" in value:
        return (
            f"{value!r} is a direct URL reference",
            "name a released package with a version, e.g. 'requests==2.32.3'",
        )
    return _fullmatch(
        PIP_REQUIREMENT if ";" in value else PIP_REQUIREMENT_NO_MARKER,
        value.strip(),
        "a PEP 508 requirement",
        "write it like 'numpy>=1.26', 'torch==1.6.0' or 'pkg[extra]==1.0; python_version<\"3.12\"'",
    )


def check_conda_package(value: str) -> Verdict:
    """A conda match spec such as ``mkl=2020.2`` or ``conda-forge::numpy>=1.26``."""
    return _fullmatch(
        CONDA_PACKAGE, value, "a conda package spec", "write it like 'mkl=2020.2' or 'numpy>=1.26'"
    )


def check_conda_channel(value: str) -> Verdict:
    """A conda channel name or http(s) URL without credentials."""
    bad = _fullmatch(
        CONDA_CHANNEL, value, "a conda channel", "a channel name like 'conda-forge' or an URL"
    )
    return bad or _credentials_in_url(value)


def check_image_ref(value: str) -> Verdict:
    """A container image reference, ``[registry/]repo[:tag][@sha256:digest]``."""
    return _fullmatch(
        IMAGE_REF,
        value,
        "an image reference",
        "write it like 'debian:bookworm-slim' or 'registry.example.com/team/base:1.0'",
    )


def check_python_version(value: str) -> Verdict:
    """A Python minor version such as ``3.8`` or ``3.11``."""
    return _fullmatch(PYTHON_VERSION, value, "a Python version", "write it like '3.11'")


def check_cuda_version(value: str) -> Verdict:
    """A CUDA version such as ``10.2`` or ``12.1``."""
    return _fullmatch(CUDA_VERSION, value, "a CUDA version", "write it like '10.2' or '12.1'")


def check_shm_size(value: str) -> Verdict:
    """A shared-memory size for ``docker run --shm-size``, e.g. ``2g``."""
    return _fullmatch(SHM_SIZE, value, "a size", "write it like '2g' or '512m'")


def check_abs_path(value: str) -> Verdict:
    """An absolute POSIX path in the image, without ``..`` or odd characters."""
    bad = _fullmatch(
        ABS_PATH, value, "an absolute path", "write it like '/workspace' (letters, digits, ._@+-)"
    )
    if bad:
        return bad
    if ".." in value.split("/"):
        return (f"{value!r} contains '..'", "use a plain absolute path")
    return None


def check_rel_path(value: str) -> Verdict:
    """A relative path inside the environment folder, without ``..``."""
    bad = _fullmatch(
        REL_PATH,
        value,
        "a relative path inside the environment folder",
        "write it like 'base.Dockerfile' (no leading '/', letters, digits, ._@+-)",
    )
    if bad:
        return bad
    if ".." in value.split("/"):
        return (f"{value!r} leaves the environment folder", "files must live inside its folder")
    return None


def check_extends(value: str) -> Verdict:
    """A relative path to another environment folder (``..`` allowed here)."""
    bad = control_chars(value)
    if bad:
        return bad
    if not value or value.startswith("/"):
        return (
            f"{value!r} is not a relative path",
            "name the parent environment's folder relative to this one, e.g. '../python-3.11'",
        )
    return None


def _credentials_in_url(value: str) -> Verdict:
    parts = urlsplit(value)
    if parts.username or parts.password:
        return (
            "holds credentials",
            "never put credentials in env.toml: pass them at build time as a secret "
            "(--secret id=netrc,src=~/.netrc)",
        )
    return None


def check_index_url(value: str) -> Verdict:
    """A package index URL: http(s), no credentials, no query or fragment."""
    bad = control_chars(value)
    if bad:
        return bad
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return (f"{value!r} is not an http(s) URL", "write it like 'https://pypi.org/simple'")
    cred = _credentials_in_url(value)
    if cred:
        return cred
    if parts.query or parts.fragment or " " in value:
        return (f"{value!r} has a query, fragment or space", "use the plain index URL")
    return None


# --------------------------------------------------------------------------
# The grammars as JSON Schema patterns (docs/env.schema.json)
# --------------------------------------------------------------------------
#
# Each pattern is written from the grammar above, anchored at both ends, and
# uses only what ECMA-262, Python's re and Rust's regex (taplo) all read: no
# lookaround, no inline flags. A pattern is a necessary condition: a few rules
# need code (a path without "..", a reserved variable name is refused by an
# enum beside it), and `envbuild validate` applies them all.


def _anchored(source: str) -> str:
    return f"^(?:{source})$"


def text_pattern(*, allow_tab: bool = False) -> str:
    """A free string: any text without control characters (tab only if allowed)."""
    return f"^[^{_CONTROL_CLASS if allow_tab else _CONTROL_OR_TAB_CLASS}]*$"


_URL_TAIL = r"[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#@]+(?:/[^\s?#]*)?"

JSON_PATTERNS: Mapping[Callable[[str], Verdict], str] = {
    check_name: _anchored(NAME.source),
    check_apt_package: _anchored(APT_PACKAGE.source),
    check_pip_requirement: _anchored(rf"\s*{PIP_REQUIREMENT.source}"),
    check_conda_package: _anchored(CONDA_PACKAGE.source),
    check_conda_channel: _anchored(CONDA_CHANNEL.source),
    check_image_ref: _anchored(IMAGE_REF.source),
    check_python_version: _anchored(PYTHON_VERSION.source),
    check_cuda_version: _anchored(CUDA_VERSION.source),
    check_shm_size: _anchored(SHM_SIZE.source),
    check_abs_path: _anchored(ABS_PATH.source),
    check_rel_path: _anchored(REL_PATH.source),
    check_extends: f"^[^/{_CONTROL_OR_TAB_CLASS}][^{_CONTROL_OR_TAB_CLASS}]*$",
    check_index_url: _anchored(_URL_TAIL),
}
"""The JSON Schema ``pattern`` of each checker that :mod:`envbuild.definition.model` uses."""

VARIABLE_NAME_SCHEMA: dict[str, object] = {
    "pattern": _anchored(VARIABLE.source),
    "not": {
        "anyOf": [
            {"enum": sorted(RESERVED_VARIABLES)},
            {"pattern": "^(?:" + "|".join(RESERVED_VARIABLE_PREFIXES) + ").*$"},
        ]
    },
}
"""The JSON Schema of a ``[variables]`` name: :func:`check_variable_name` as a schema."""
