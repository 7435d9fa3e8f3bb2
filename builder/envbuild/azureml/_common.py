"""What every part of ``envbuild.azureml`` shares: notices said once, unsupported features."""

from __future__ import annotations

import sys
import threading
from typing import Any, NoReturn

from envbuild.errors import UnsupportedAzureMLAttribute, UnsupportedAzureMLFeature

DOCS = "docs/migrating-from-azureml.md"

_said: set[str] = set()
_said_lock = threading.Lock()


def notice(key: str, text: str) -> bool:
    """Print ``text`` to stderr the first time ``key`` is noticed in this process.

    Returns whether it was printed. Mapping an Azure ML setting to a local
    default is said once, never raised: the user's code goes on.
    """
    with _said_lock:
        if key in _said:
            return False
        _said.add(key)
    print(f"envbuild.azureml: {text}", file=sys.stderr, flush=True)
    return True


def forget_notices() -> None:
    """Say every notice again (tests)."""
    with _said_lock:
        _said.clear()


def unsupported(feature: str, alternative: str, *, detail: str | None = None) -> NoReturn:
    """Raise :class:`UnsupportedAzureMLFeature` for ``feature``, proposing ``alternative``."""
    raise UnsupportedAzureMLFeature(feature, alternative, detail=detail)


class Shim:
    """Base of the stand-ins for Azure ML's classes.

    An Azure ML attribute the stand-in does not have raises
    :class:`UnsupportedAzureMLAttribute` (an :class:`AttributeError` too, so
    ``hasattr`` and ``getattr(obj, name, default)`` behave), naming the class,
    the attribute and where the alternatives are written down.
    """

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise UnsupportedAzureMLAttribute(
            f"{type(self).__name__}.{name}",
            f"see {DOCS} for what envbuild offers instead",
        )
