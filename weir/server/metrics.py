"""Prometheus metrics of one server process (``GET /metrics``).

Every series has the ``weir_`` prefix. Counters count what this process did; the queue gauge
is read from the database when scraped, so every replica reports the same depth.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from weir.records import RunRecord, StepRecord
from weir.types import StepStatus
from weir.workflows.engine import RunListener

STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics(RunListener):
    """The metric series, fed by the engine's run events, the webhook endpoint and git sync."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        # The *_created series double every counter and nobody alerts on them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs = Counter("weir_runs", "Runs finished, by workflow and status.", ["workflow", "status"], registry=r)
        self.runs_started = Counter(
            "weir_runs_started", "Runs started executing, by workflow.", ["workflow"], registry=r
        )
        self.steps = Histogram(
            "weir_step_duration_seconds",
            "Duration of finished step attempts, by workflow and status.",
            ["workflow", "status"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.webhooks = Counter(
            "weir_webhook_requests",
            "Webhook requests, by configured path and HTTP status.",
            ["path", "status"],
            registry=r,
        )
        self._webhook_children: dict[tuple[str, int], Any] = {}
        self.tokens = Counter(
            "weir_llm_tokens",
            "LLM tokens used by finished step attempts, by workflow and direction.",
            ["workflow", "direction"],
            registry=r,
        )
        self.sync_errors = Counter(
            "weir_sync_errors", "Failed reads or fetches of the followed repository.", registry=r
        )
        self.revisions = Counter(
            "weir_revisions", "Revisions seen, by outcome (applied or rejected).", ["outcome"], registry=r
        )
        self.rejected = Gauge(
            "weir_revision_rejected",
            "1 while the newest revision seen was rejected (the last good one serves).",
            registry=r,
        )
        self.schedule_fires = Counter(
            "weir_schedule_fires",
            "Schedule fires, by workflow and outcome (started, duplicate, skipped).",
            ["workflow", "outcome"],
            registry=r,
        )
        self.missed_fires = Counter(
            "weir_schedule_missed_fires",
            "Fire times missed during downtime and not caught up (outside max_catchup or catchup policy).",
            ["workflow"],
            registry=r,
        )
        self.queue = Gauge(
            "weir_runs_current", "Runs in the database by status (queued, running, waiting).", ["status"], registry=r
        )
        self.oldest_queued = Gauge(
            "weir_runs_oldest_queued_seconds",
            "How long the oldest queued run has been waiting to start (0 when none is queued).",
            registry=r,
        )

    # -- run events ---------------------------------------------------------------------------

    def run_started(self, run: RunRecord) -> None:
        self.runs_started.labels(run.workflow).inc()

    def step_finished(self, run: RunRecord, step: StepRecord) -> None:
        if step.attempt < 1 or step.started_at is None or step.finished_at is None:
            return  # skipped, reused or summary records did no work
        if step.input_tokens:
            self.tokens.labels(run.workflow, "input").inc(step.input_tokens)
        if step.output_tokens:
            self.tokens.labels(run.workflow, "output").inc(step.output_tokens)
        if step.status in (StepStatus.SUCCEEDED, StepStatus.FAILED):
            seconds = (step.finished_at - step.started_at).total_seconds()
            self.steps.labels(run.workflow, str(step.status)).observe(max(0.0, seconds))

    def run_finished(self, run: RunRecord) -> None:
        self.runs.labels(run.workflow, str(run.status)).inc()

    # -- other sources --------------------------------------------------------------------------

    def webhook(self, path: str, status: int) -> None:
        child = self._webhook_children.get((path, status))
        if child is None:  # labels() builds its key on every call; webhooks are the hot path
            child = self._webhook_children[path, status] = self.webhooks.labels(path, str(status))
        child.inc()

    def set_queue(self, counts: dict[str, int], oldest_queued: float = 0.0) -> None:
        for status in ("queued", "running", "waiting"):
            self.queue.labels(status).set(counts.get(status, 0))
        self.oldest_queued.set(oldest_queued)

    def render(self) -> bytes:
        return generate_latest(self.registry)
