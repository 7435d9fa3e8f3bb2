"""The one quoting path from a validated value to Dockerfile text.

Each filter encodes a value for one Dockerfile context and returns a
:class:`Quoted` string. The template environment's ``finalize`` hook refuses
any value that did not pass through exactly one of these filters, so a
template cannot emit a user string unquoted by accident (STYLE.md, 6).

Values reaching these filters were already validated (no control
characters); the filters check again, because a quoting function that
silently accepts a newline is how Dockerfile injection happens
(RELIABILITY.md, T01).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence

from envbuild.definition import grammar as grammar


class Quoted(str):
    """A string that a quoting filter produced: safe to place in a Dockerfile."""

    __slots__ = ()


class UnsafeValueError(ValueError):
    """A value cannot be encoded for the context it was meant for."""


def _no_control(value: str, *, allow_tab: bool = False) -> str:
    if not isinstance(value, str):
        raise UnsafeValueError(f"expected a string, got {type(value).__name__}")
    verdict = grammar.control_chars(value, allow_tab=allow_tab)
    if verdict:
        raise UnsafeValueError(f"{value!r} {verdict[0]}")
    return value


def dq(value: str) -> Quoted:
    """A double-quoted ``ENV``/``LABEL`` value that the builder keeps byte for byte.

    The builder expands ``$`` even inside double quotes, so ``$`` is escaped
    along with ``\\`` and ``"`` (RELIABILITY.md, thing 2 and T04).
    """
    text = _no_control(value, allow_tab=True)
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return Quoted(f'"{escaped}"')


def shq(value: str) -> Quoted:
    """One argv word of a shell-form ``RUN`` (``shlex.quote``)."""
    return Quoted(shlex.quote(_no_control(value)))


def jsonlist(values: Sequence[str]) -> Quoted:
    """An exec-form argument list (``CMD``, ``ENTRYPOINT``, ``SHELL``): JSON, always valid."""
    if isinstance(values, str):
        raise UnsafeValueError("jsonlist needs a list of strings, not a string")
    return Quoted(json.dumps([_no_control(v) for v in values]))


def ident(value: str) -> Quoted:
    """A variable name or label key: checked against its grammar, emitted as is."""
    text = _no_control(value)
    if not (grammar.VARIABLE.fullmatch(text) or _LABEL_KEY.fullmatch(text)):
        raise UnsafeValueError(f"{value!r} is not an identifier")
    return Quoted(text)


def imageref(value: str) -> Quoted:
    """An image reference for ``FROM``: checked against the reference grammar."""
    verdict = grammar.check_image_ref(value)
    if verdict:
        raise UnsafeValueError(verdict[0])
    return Quoted(value)


def path(value: str) -> Quoted:
    """An absolute path in the image (``WORKDIR``, ``COPY`` destinations), quoted."""
    verdict = grammar.check_abs_path(value)
    if verdict:
        raise UnsafeValueError(verdict[0])
    return dq(value)


def raw(value: str | int) -> Quoted:
    """A constant of envbuild's own (never user text); greppable on purpose."""
    return Quoted(str(value))


_LABEL_KEY = re.compile(r"[a-z0-9]+(?:[.-][a-z0-9]+)*")

FILTERS = {
    "dq": dq,
    "shq": shq,
    "jsonlist": jsonlist,
    "ident": ident,
    "imageref": imageref,
    "path": path,
    "raw": raw,
}
