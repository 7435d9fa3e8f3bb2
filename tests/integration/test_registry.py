"""The registry tier against real registries on loopback (tests/integration/registry.py)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from tests.integration.registry import LoopbackRegistry


def test_loopback_registries_answer(
    registry: LoopbackRegistry, auth_registry: LoopbackRegistry
) -> None:
    with urllib.request.urlopen(f"{registry.url}/v2/", timeout=5) as response:
        assert response.status == 200
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{auth_registry.url}/v2/", timeout=5)
    assert refused.value.code == 401
    assert auth_registry.manifest_digest("nothing", "here") is None  # the user is let in
