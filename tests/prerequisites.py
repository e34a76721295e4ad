"""Whether a test may skip when a program or package it drives is missing.

`make test` installs every Debian package and Python package the suite drives (Chromium,
Firefox, nginx, ClickHouse, Redis, libfaketime, Playwright, ...) before it runs pytest, and
tells the suite so with `GATEWAY_TEST_PREREQUISITES=required`; CI sets `CI`. Under either, a
missing one is a failure: a run that skipped the browser or database tests must not pass.
`pytest` run by hand on a machine without them skips those tests, saying why.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["required", "unavailable"]


def required() -> bool:
    """True when a missing prerequisite must fail the run (`make test`, or CI)."""
    return bool(os.environ.get("CI")) or os.environ.get("GATEWAY_TEST_PREREQUISITES") == "required"


def unavailable(reason: str) -> NoReturn:
    """Skip the test for `reason`, or fail it when prerequisites are required."""
    if required():
        pytest.fail(f"{reason} (make test installs it: a missing one fails the run)", pytrace=False)
    pytest.skip(reason)
