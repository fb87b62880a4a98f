"""Signed resume links under random input: only the signature of the run and step passes.

``run.resume_url('step')`` carries an HMAC of the run and step ids, so whoever holds the link can
resume that one step without an API token. The ``sig`` of a request is whatever its sender wrote.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given, settings, strategies as st

from tests.fuzz.strategies import examples
from weir.connectors.registry import ConnectorRegistry
from weir.store.database import open_database
from weir.store.runs import SqlRunStore
from weir.workflows.engine import Engine

ids = st.text(min_size=1, max_size=30)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    loop = asyncio.new_event_loop()
    store = SqlRunStore(loop.run_until_complete(open_database(None, Path(tmp_path_factory.mktemp("resume")))))
    try:
        yield Engine(store, ConnectorRegistry(discover=False), signing_key=b"resume-links-test-key-0123456789")
    finally:
        loop.run_until_complete(store.close())
        loop.close()


@settings(max_examples=examples(100))
@given(ids, ids)
def test_the_link_of_a_step_verifies(engine: Engine, run_id: str, step_id: str) -> None:
    signature = engine.resume_signature(run_id, step_id)
    assert engine.verify_resume(run_id, step_id, signature)
    assert f"/api/runs/{run_id}/steps/{step_id}/resume?sig={signature}" in engine.resume_url(run_id, step_id)


@settings(max_examples=examples(100))
@given(ids, ids, st.text(max_size=40))
@example("01a1ff0572faffa91863d2a1c2", "ask", "é")
def test_any_other_signature_is_refused_without_an_error(
    engine: Engine, run_id: str, step_id: str, signature: str
) -> None:
    expected = engine.resume_signature(run_id, step_id)
    assert engine.verify_resume(run_id, step_id, signature) is (signature == expected)
