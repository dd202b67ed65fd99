"""Shared fixtures. Real services come from tests/integration/conftest.py."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Makes a topic (or group) name no other test uses: `unique_name("invoice")` -> `t.invoice.u1a2b3c4d`."""

    def make(base: str) -> str:
        return f"t.{base}.u{uuid.uuid4().hex[:8]}"

    return make
