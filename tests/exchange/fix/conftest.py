"""Fixtures for the FIX gateway tests (the helpers live in ``_fix_setup``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _fix_setup import log_on, make_gateway

from sdi.exchange import fix


@pytest.fixture
def gateway() -> fix.Gateway:
    return make_gateway()


@pytest.fixture
def alpha(gateway: fix.Gateway) -> tuple[fix.Session, fix.Client]:
    return log_on(gateway)


@pytest.fixture
def login() -> object:
    """``log_on`` itself, for tests that need more than one session."""
    return log_on
