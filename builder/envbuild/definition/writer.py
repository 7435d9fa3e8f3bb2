"""Write an ``env.toml`` document: plain data in, TOML text out, no string able to change its shape.

The importers (:mod:`envbuild.importers`) turn other tools' definitions into
``env.toml``; what they write comes from files a person did not write for
envbuild, so every key and value goes through one escaping path here:

* a string becomes a TOML basic string with every character TOML forbids
  raw (``"``, ``\\``, U+0000-U+001F, U+007F) escaped, so a value holding
  ``"\\n[base]\\nimage = "x"`` stays one value;
* a key is bare only when it is ``[A-Za-z0-9_-]+``, quoted otherwise;
* a comment line is one line: control characters in it are escaped.

The output is read back by ``tomllib`` in the tests for arbitrary strings
(hypothesis), and by :func:`envbuild.definition.model.load` wherever an
importer writes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f"}
_SHORT_ESCAPES["\r"] = "\\r"

Value = str | int | bool | Sequence[str]


def string(value: str) -> str:
    """``value`` as a TOML basic string (double-quoted, escaped).

    Raises :class:`ValueError` for a lone surrogate, which no TOML (or UTF-8)
    text can hold.
    """
    out = ['"']
    for char in value:
        code = ord(char)
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:
            raise ValueError(f"a lone surrogate (U+{code:04X}) cannot be written to TOML")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def key(name: str) -> str:
    """``name`` as a TOML key: bare when it can be, a quoted string otherwise."""
    return name if _BARE_KEY.fullmatch(name) else string(name)


def value(item: Value) -> str:
    """One TOML value: a string, an integer, a boolean or an array of strings."""
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int):
        return str(item)
    if isinstance(item, str):
        return string(item)
    if isinstance(item, Sequence) and all(isinstance(i, str) for i in item):
        return "[" + ", ".join(string(i) for i in item) + "]"
    raise TypeError(f"cannot write {type(item).__name__} to env.toml")


def comment(text: str) -> str:
    """``text`` as comment lines (``# ...``), one per line of it, control characters escaped."""
    lines = []
    for line in text.split("\n"):
        shown = "".join(
            c if (c == "\t" or (ord(c) >= 0x20 and ord(c) != 0x7F)) else f"\\x{ord(c):02x}"
            for c in line
        )
        lines.append(f"# {shown}".rstrip())
    return "\n".join(lines)


def dumps(document: Mapping[str, Value | Mapping[str, Value]], *, header: str = "") -> str:
    """``document`` as ``env.toml`` text: top-level values first, then one ``[table]`` each.

    Keys keep the order of ``document``; an empty table is left out. ``header``
    becomes comment lines at the top.
    """
    lines = [comment(header)] if header else []
    tables: list[tuple[str, Mapping[str, Value]]] = []
    for name, item in document.items():
        if isinstance(item, Mapping):
            if item:
                tables.append((name, item))
            continue
        lines.append(f"{key(name)} = {value(item)}")
    for name, table in tables:
        lines.append("")
        lines.append(f"[{key(name)}]")
        for sub, item in table.items():
            lines.append(f"{key(sub)} = {value(item)}")
    return "\n".join(lines) + "\n"
