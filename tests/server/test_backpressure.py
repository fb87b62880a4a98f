"""A full queue refuses webhooks with 503 and Retry-After, stores nothing, and accepts again once it drains."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from tests.helpers import write_repo
from tests.server.serve_process import ServeProcess, eventually

# One run at a time: the first waits for a human, so the next ones stay queued.
GATE = """
description = "One at a time, each waiting for a human"

[concurrency]
limit = 1

[[on.webhook]]
path = "gate"
auth = { type = "none" }

[[steps]]
id = "ask"
uses = "wait"
with = { timeout = "1h" }
"""


def total_runs(client: httpx.Client) -> int:
    return len(client.get("/api/runs", params={"workflow": "gate", "limit": 100}).json()["runs"])


def oldest_queued_seconds(client: httpx.Client) -> float:
    found = re.search(r"^weir_runs_oldest_queued_seconds (\S+)$", client.get("/metrics").text, re.MULTILINE)
    assert found is not None
    return float(found.group(1))


def test_webhooks_get_503_with_retry_after_above_max_queued_and_nothing_is_stored(tmp_path: Path) -> None:
    repo = tmp_path / "automation"
    write_repo(repo, {"workflows/gate.toml": GATE}, message="add gate")
    serve = ServeProcess(repo, tmp_path / "state", args=["--max-queued", "3"]).start()
    try:
        with serve.client() as client:
            first = client.post("/hooks/gate", json={}).json()["run_id"]
            assert eventually(lambda: client.get(f"/api/runs/{first}").json()["status"] == "waiting")
            time.sleep(1.5)  # the server counts its queue every second: it is empty now
            queued = [client.post("/hooks/gate", json={"n": n}) for n in range(3)]
            assert [r.status_code for r in queued] == [202, 202, 202]

            refused = client.post("/hooks/gate", json={"n": 3})
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "30"
            error = refused.json()["error"]
            assert error["code"] == "overloaded"
            assert "--max-queued" in error["message"]
            assert total_runs(client) == 4
            metrics = client.get("/metrics").text
            assert 'weir_webhook_requests_total{path="gate",status="503"} 1.0' in metrics
            assert 'weir_runs_current{status="queued"} 3.0' in metrics
            time.sleep(1.0)
            assert 1.0 <= oldest_queued_seconds(client) < 60  # the first queued run has waited since it was accepted

            for response in queued:
                client.post(f"/api/runs/{response.json()['run_id']}/cancel")
            accepted = eventually(lambda: client.post("/hooks/gate", json={"n": 4}).status_code == 202, timeout=5)
            assert accepted, "webhooks were still refused after the queue drained"
            assert oldest_queued_seconds(client) < 1.0  # the cancelled runs left the queue; the new one waits now
    finally:
        serve.kill()
