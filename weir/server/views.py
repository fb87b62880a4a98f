"""The JSON shapes of runs, steps and log lines, shared by the API, ``weir runs`` and the UI."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from weir.records import LogRecord, RunRecord, StepRecord


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def _millis(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() * 1000, 3)


def run_summary(run: RunRecord) -> dict[str, Any]:
    return {
        "id": run.id,
        "workflow": run.workflow,
        "status": str(run.status),
        "revision": run.revision,
        "trigger": run.trigger.get("type"),
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "duration_ms": _millis(run.started_at, run.finished_at),
        "error": run.error,
        "parent_run_id": run.parent_run_id,
        "rerun_of": run.rerun_of,
    }


def run_detail(run: RunRecord, records: list[StepRecord]) -> dict[str, Any]:
    return {
        **run_summary(run),
        "params": run.params,
        "trigger": run.trigger,
        "outputs": run.outputs,
        "wake_at": iso(run.wake_at),
        "cancel_requested": run.cancel_requested,
        "usage": {"input_tokens": run.input_tokens, "output_tokens": run.output_tokens},
        "steps": steps(records),
    }


def steps(records: list[StepRecord]) -> list[dict[str, Any]]:
    """One entry per step and phase, in the order they started, with its attempts and foreach items."""
    groups: dict[tuple[str, str], list[StepRecord]] = {}
    for record in records:
        groups.setdefault((str(record.phase), record.step_id), []).append(record)
    return [_step(phase, step_id, group) for (phase, step_id), group in groups.items()]


def _step(phase: str, step_id: str, group: list[StepRecord]) -> dict[str, Any]:
    whole = [r for r in group if r.item_index < 0]
    items = [r for r in group if r.item_index >= 0]
    main = whole[-1] if whole else group[-1]
    started = [r.started_at for r in group if r.started_at]
    finished = [r.finished_at for r in group if r.finished_at]
    entry: dict[str, Any] = {
        "id": step_id,
        "phase": phase,
        "status": str(main.status),
        "attempts": max((r.attempt for r in whole), default=0),
        "started_at": iso(min(started)) if started else None,
        "finished_at": iso(max(finished)) if finished and main.finished else None,
        "duration_ms": _millis(min(started), max(finished)) if started and finished and main.finished else None,
        "input": main.input,
        "output": main.output,
        "error": main.error,
        "error_kind": main.error_kind,
        "wake_at": iso(main.wake_at),
        "child_run_id": main.child_run_id,
        "note": main.note,
        "usage": {
            "input_tokens": sum(r.input_tokens for r in group),
            "output_tokens": sum(r.output_tokens for r in group),
        },
    }
    if items:
        latest: dict[int, StepRecord] = {}
        for record in items:
            latest[record.item_index] = record
        entry["items"] = [
            {
                "index": index,
                "status": str(record.status),
                "attempts": record.attempt,
                "duration_ms": _millis(record.started_at, record.finished_at),
                "output": record.output,
                "error": record.error,
            }
            for index, record in sorted(latest.items())
        ]
    return entry


def log_line(record: LogRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "at": iso(record.at),
        "level": record.level,
        "step": record.step_id,
        "item": record.item_index,
        "message": record.message,
    }
