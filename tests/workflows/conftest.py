"""Fixtures of the engine tests: the probe connector's call log, fresh for every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.workflows.engine_probe import PROBE, Probe


@pytest.fixture(autouse=True)
def probe() -> Iterator[Probe]:
    PROBE.reset()
    yield PROBE
    PROBE.reset()
