"""Run one step of a run: its cache, its foreach items, each attempt with retry and timeout.

An attempt is the unit that is committed: a ``StepRecord`` is written when it starts (unless
the action finishes at once, like ``transform``) and when it ends, so a restart knows which
attempt was in flight. Built-in actions are implemented here, because ``workflow``,
``sleep`` and ``wait`` suspend the step: its record is ``waiting`` and the run parks.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from weir.connectors.base import ActionContext, ActionSpec
from weir.errors import ActionError, ParamsInvalid, PermanentError, TemplateError, TransientError, WeirError
from weir.records import WHOLE_STEP, Phase, StepRecord
from weir.schemas.common import RetryPolicy, format_duration
from weir.schemas.workflow import Step, StepBody
from weir.types import RunStatus, StepStatus
from weir.workflows.builtins import BUILTIN_ACTIONS
from weir.workflows.jsonvalues import jsonable
from weir.workflows.retry import backoff_delay, should_retry
from weir.workflows.scripts import run_script

if TYPE_CHECKING:
    from weir.workflows.execution import RunExecution, StepState

log = logging.getLogger("weir.engine")

MAX_ITEMS = 10_000
_KINDS = {
    "str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean", "dict": "an object",
    "NoneType": "null",
}  # fmt: skip
"""What a value that should have been a list was, in the words of JSON."""
_IMMEDIATE = frozenset({"transform", "log", "fail", "sleep", "wait"})
"""Built-ins that end (or suspend) without waiting on anything: one record write, not two."""
_SCRIPT_CODE = ("run", "file")
"""The keys of a script step's ``with`` that are code: never rendered, so ``{{`` in a program stays ``{{``."""


@dataclass(frozen=True)
class Outcome:
    """How a step, item or attempt ended."""

    status: StepStatus
    output: Any = None
    error: str | None = None
    kind: str | None = None

    @classmethod
    def ok(cls, output: Any) -> Outcome:
        return cls(StepStatus.SUCCEEDED, output)

    @classmethod
    def failed(cls, error: str, kind: str, output: Any = None) -> Outcome:
        return cls(StepStatus.FAILED, output, error, kind)


WAITING = Outcome(StepStatus.WAITING)


class Suspend(Exception):
    """Raised by sleep, wait and workflow: the attempt waits, durably, for time or an event."""

    def __init__(self, note: str, wake_at: datetime | None = None, child_run_id: str | None = None) -> None:
        super().__init__(note)
        self.note, self.wake_at, self.child_run_id = note, wake_at, child_run_id


class UnitRunner:
    """Runs steps, items and attempts for one ``RunExecution``."""

    def __init__(self, execution: RunExecution) -> None:
        self.ex = execution
        self.engine = execution.engine
        self.store = execution.store
        self.templates = execution.engine.templates
        self.waiting: dict[tuple[str, str, int], StepRecord] = {}
        run = execution.run_record
        trigger = run.trigger
        self._base_scope = {
            "params": run.params,
            "steps": execution.steps_view,
            "payload": trigger.get("payload"),
            "headers": trigger.get("headers", {}),
            "query": trigger.get("query", {}),
            "workflow": {"name": run.workflow, "revision": run.revision},
            "secrets": self.engine.secrets.scope(),
            "env": self.engine.env,
        }
        self._run_view = {
            "id": run.id,
            "trigger": {k: v for k, v in trigger.items() if k not in ("payload", "headers", "query")},
            "started_at": None,
            "error": None,
            "resume_url": lambda step_id: self.engine.resume_url(run.id, str(step_id)),
        }

    # -- scope and templates ------------------------------------------------------------

    def scope(self, item: Any = None, index: int | None = None) -> dict[str, Any]:
        run = self.ex.run_record
        view = dict(self._run_view, error=run.error, started_at=run.started_at)
        scope = {**self._base_scope, **self.ex.failure_scope(), "run": view}
        if index is not None:
            scope["item"], scope["index"] = item, index
        return scope

    def evaluate_if(self, step: Step) -> bool | Outcome:
        try:
            return bool(self.templates.evaluate(step.if_ or "", self.scope()))
        except WeirError as exc:
            return Outcome.failed(f"'if' of step '{step.id}': {exc}", "template")

    def render_outputs(self) -> Any:
        try:
            return self.templates.render_value(self.ex.workflow.outputs, self.scope())
        except WeirError as exc:
            return Outcome.failed(f"[outputs]: {exc}", "template")

    def fallback(self, state: StepState, outcome: Outcome) -> Any:
        scope = self.scope()
        scope["error"] = outcome.error
        try:
            return jsonable(self.templates.render_value(state.step.fallback, scope))
        except WeirError as exc:
            self.ex.log("error", f"fallback of step '{state.step.id}' failed to render: {exc}", state.step.id)
            return None

    def retry_policy(self, step: Step | StepBody) -> RetryPolicy:
        return step.retry or self.ex.default_retry

    def waiting_records(self) -> list[StepRecord]:
        return list(self.waiting.values())

    # -- records -----------------------------------------------------------------------------

    async def save(
        self, record: StepRecord, *, usage: tuple[int, int] = (0, 0), only_if: StepStatus | None = None
    ) -> bool:
        masker = self.engine.masker
        stored = StepRecord(**record.__dict__)
        stored.input = masker.mask(jsonable(record.input))
        stored.output = masker.mask(jsonable(record.output))
        stored.error = masker.mask_text(record.error) if record.error else None
        logs, self.ex.pending_logs = self.ex.pending_logs, []
        saved = await self.store.save_step(stored, logs=logs, usage=usage, only_if=only_if)
        key = (record.phase, record.step_id, record.item_index)
        if record.status == StepStatus.WAITING:
            self.waiting[key] = record
        else:
            self.waiting.pop(key, None)
        if record.status != StepStatus.RUNNING:
            self.engine.emit("step_finished", self.ex.run_record, stored)
        return saved

    # -- a step ------------------------------------------------------------------------------

    async def run_step(self, phase: Phase, state: StepState) -> Outcome:
        step = state.step
        cache_key = None
        if step.cache is not None and not state.records:
            try:
                key = self.templates.render_string(step.cache.key, self.scope())
            except WeirError as exc:
                return await self.record_final(phase, step.id, Outcome.failed(f"cache key: {exc}", "template"))
            # The rendered key may hold a secret ({{ secrets.TENANT_TOKEN }}): the store keeps only its digest.
            digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
            cache_key = f"{self.ex.run_record.workflow}\x00{step.id}\x00{digest}"
            hit, output = await self.store.cache_get(cache_key, self.engine.clock())
            if hit:
                return await self.record_final(phase, step.id, Outcome.ok(output), note="cached")
        if step.foreach is not None or step.matrix is not None:
            outcome = await self._run_foreach(phase, state)
        else:
            latest = max(state.records, key=lambda r: r.attempt, default=None)
            outcome = await self._run_unit(phase, step.id, step, WHOLE_STEP, None, latest)
        if cache_key is not None and outcome.status == StepStatus.SUCCEEDED and step.cache is not None:
            expires = self.engine.clock() + step.cache.ttl
            await self.store.cache_put(cache_key, self.engine.masker.mask(jsonable(outcome.output)), expires_at=expires)
        if outcome.status == StepStatus.FAILED and step.fallback is not None:
            outcome = Outcome.failed(outcome.error or "", outcome.kind or "permanent", self.fallback(state, outcome))
            await self.record_final(phase, step.id, outcome, note="fallback")
        return outcome

    async def run_body(self, phase: Phase, step_id: str, body: StepBody, prior: StepRecord | None) -> Outcome:
        """Run a bare action body (a compensation) as one unit."""
        return await self._run_unit(phase, step_id, body, WHOLE_STEP, None, prior)

    async def record_final(self, phase: Phase, step_id: str, outcome: Outcome, *, note: str | None = None) -> Outcome:
        """Store the final word on a step that did not run an attempt: a skip, a cache hit, a fallback."""
        now = self.engine.clock()
        record = StepRecord(
            run_id=self.ex.run_record.id,
            step_id=step_id,
            status=outcome.status,
            phase=phase,
            attempt=0,
            started_at=now,
            finished_at=now,
            output=outcome.output,
            error=outcome.error,
            error_kind=outcome.kind,
            note=note,
        )
        await self.save(record)
        return outcome

    async def _run_foreach(self, phase: Phase, state: StepState) -> Outcome:
        step = state.step
        summary = next((r for r in state.records if r.item_index == WHOLE_STEP and r.attempt == 0), None)
        if summary is not None and isinstance(summary.input, list):
            items = summary.input
        else:
            items_or_error = self._items(step)
            if isinstance(items_or_error, Outcome):
                return await self.record_final(phase, step.id, items_or_error)
            items = items_or_error
            now = self.engine.clock()
            summary = StepRecord(
                run_id=self.ex.run_record.id, step_id=step.id, status=StepStatus.RUNNING, phase=phase,
                attempt=0, started_at=now, input=items, note=f"{len(items)} items",
            )  # fmt: skip
            await self.save(summary)
        latest: dict[int, StepRecord] = {}
        for record in state.records:
            if record.item_index >= 0 and record.attempt >= latest.get(record.item_index, record).attempt:
                latest[record.item_index] = record
        gate = asyncio.Semaphore(step.parallel)

        async def one(index: int) -> Outcome:
            async with gate:
                return await self._run_unit(phase, step.id, step, index, items[index], latest.get(index))

        outcomes = await asyncio.gather(*(one(i) for i in range(len(items))))
        summary.output = [o.output if o.status == StepStatus.SUCCEEDED else None for o in outcomes]
        if any(o.status == StepStatus.WAITING for o in outcomes):
            return WAITING
        failed = [(i, o) for i, o in enumerate(outcomes) if o.status != StepStatus.SUCCEEDED]
        summary.finished_at = self.engine.clock()
        if failed:
            index, first = failed[0]
            summary.status, summary.error_kind = StepStatus.FAILED, first.kind
            summary.error = f"{len(failed)} of {len(items)} items failed; item {index}: {first.error}"
        else:
            summary.status = StepStatus.SUCCEEDED
        await self.save(summary)
        if failed:
            return Outcome.failed(summary.error or "", summary.error_kind or "permanent", summary.output)
        return Outcome.ok(summary.output)

    def _items(self, step: Step) -> list[Any] | Outcome:
        try:
            if step.matrix is not None:
                axes = self.templates.render_value(step.matrix, self.scope())
                items: Any = [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
            elif isinstance(step.foreach, str):
                items = self.templates.render_string(step.foreach, self.scope())
            else:
                items = self.templates.render_value(step.foreach, self.scope())
        except WeirError as exc:
            return Outcome.failed(f"foreach of step '{step.id}': {exc}", "template")
        if isinstance(items, tuple | range):
            items = list(items)
        if not isinstance(items, list):
            got = _KINDS.get(type(items).__name__, f"a {type(items).__name__}")
            return Outcome.failed(f"foreach of step '{step.id}' gave {got}, not a list", "template")
        if len(items) > MAX_ITEMS:
            return Outcome.failed(
                f"foreach of step '{step.id}' gave {len(items)} items; at most {MAX_ITEMS} are allowed "
                "(batch them, e.g. with the batch filter)",
                "permanent",
            )
        return jsonable(items)  # type: ignore[no-any-return]

    # -- an item: attempts with retry -----------------------------------------------------------

    async def _run_unit(
        self, phase: Phase, step_id: str, step: Step | StepBody, index: int, item: Any, prior: StepRecord | None
    ) -> Outcome:
        policy = self.retry_policy(step)
        spec = self._spec(step.uses)
        idempotent = spec.idempotent if isinstance(spec, ActionSpec) else True
        if isinstance(step, Step) and step.idempotent is not None:
            idempotent = step.idempotent
        attempt = 0
        if prior is not None and prior.attempt > 0:
            attempt = prior.attempt
            resolved = await self._resolve(prior, idempotent)
            if resolved is WAITING or resolved.status == StepStatus.SUCCEEDED:
                return resolved
            if resolved.status == StepStatus.RUNNING:
                attempt -= 1  # run the interrupted attempt again, with the same idempotency key
            elif prior.note == "wait" or not should_retry(policy, resolved.kind or "permanent", attempt):
                # A wait that timed out is never retried: its timeout is the deadline the workflow set, and
                # another attempt would only wait that long again.
                return resolved
        elif prior is not None and prior.finished:
            return Outcome(prior.status, prior.output, prior.error, prior.error_kind)
        while True:
            attempt += 1
            record = StepRecord(
                run_id=self.ex.run_record.id, step_id=step_id, status=StepStatus.RUNNING, phase=phase,
                item_index=index, attempt=attempt, started_at=self.engine.clock(),
            )  # fmt: skip
            usage = [0, 0]
            outcome, retry_after = await self._attempt(record, step, spec, item, usage)
            await self.save(record, usage=(usage[0], usage[1]))
            if outcome.status != StepStatus.FAILED or not should_retry(policy, outcome.kind or "", attempt):
                return outcome
            delay = backoff_delay(policy, attempt, retry_after=retry_after)
            self.ex.log(
                "warning", f"attempt {attempt} of {policy.attempts} failed; retrying in {delay:.2f}s", step_id, index
            )
            await asyncio.sleep(delay)

    def _render_inputs(self, step: Step | StepBody, scope: dict[str, Any]) -> Any:
        """The step's ``with``, rendered; a script's ``run`` and ``file`` are code and stay as written (SPEC §11)."""
        if step.uses == "script" and isinstance(step.with_, dict):
            code = {key: step.with_[key] for key in _SCRIPT_CODE if key in step.with_}
            rest = {key: value for key, value in step.with_.items() if key not in code}
            return {**self.templates.render_value(rest, scope), **code}
        return self.templates.render_value(step.with_, scope)

    async def _attempt(
        self, record: StepRecord, step: Step | StepBody, spec: ActionSpec | PermanentError, item: Any, usage: list[int]
    ) -> tuple[Outcome, float | None]:
        index = record.item_index
        scope = self.scope(item, index if index >= 0 else None)
        retry_after = None
        try:
            if isinstance(spec, PermanentError):
                raise spec
            inputs = self._render_inputs(step, scope)
            record.input = inputs
            if step.uses not in _IMMEDIATE:
                await self.save(record)
            self.engine.emit("step_started", self.ex.run_record, record)
            timeout = step.timeout or self.ex.default_timeout
            output = await self._call(spec, step, record, inputs, timeout, usage)
            outcome = Outcome.ok(jsonable(output))
        except Suspend as suspend:
            record.status, record.note = StepStatus.WAITING, suspend.note
            record.wake_at, record.child_run_id = suspend.wake_at, suspend.child_run_id
            return WAITING, None
        except TransientError as exc:
            outcome, retry_after = Outcome.failed(str(exc), exc.kind), exc.retry_after
        except ActionError as exc:
            outcome = Outcome.failed(str(exc), "fail" if step.uses == "fail" else exc.kind)
        except TemplateError as exc:
            outcome = Outcome.failed(str(exc), "template")
        except ValidationError as exc:
            outcome = Outcome.failed(f"inputs of '{step.uses}' are invalid: {_validation_text(exc)}", "permanent")
        except WeirError as exc:
            outcome = Outcome.failed(str(exc), "permanent")
        except asyncio.CancelledError:
            reason = self.ex.stop_reason
            if reason in ("cancel", "timeout"):
                record.status = StepStatus.CANCELLED if reason == "cancel" else StepStatus.FAILED
                record.error = "cancelled" if reason == "cancel" else "the run timed out while this step ran"
                record.error_kind = "cancelled" if reason == "cancel" else "timeout"
                record.finished_at = self.engine.clock()
                await asyncio.shield(self.save(record))
            raise
        except Exception as exc:  # a connector bug must end as a stored error, not a lost run
            trace = self.engine.masker.mask_text("".join(traceback.format_exception(exc)).rstrip())
            log.error("action %s of run %s failed unexpectedly:\n%s", step.uses, self.ex.run_record.id, trace)
            outcome = Outcome.failed(f"unexpected error in '{step.uses}': {type(exc).__name__}: {exc}", "permanent")
        record.status, record.finished_at = outcome.status, self.engine.clock()
        record.output, record.error, record.error_kind = outcome.output, outcome.error, outcome.kind
        record.input_tokens, record.output_tokens = usage
        return outcome, retry_after

    def _spec(self, uses: str) -> ActionSpec | PermanentError:
        """The action ``uses`` names, or the error that says why it is not installed."""
        builtin = BUILTIN_ACTIONS.get(uses)
        if builtin is not None:
            return builtin
        try:
            return self.engine.registry.action(uses)
        except LookupError as exc:
            return PermanentError(str(exc))

    async def _call(
        self,
        spec: ActionSpec,
        step: Step | StepBody,
        record: StepRecord,
        inputs: Any,
        timeout: timedelta | None,  # noqa: ASYNC109 - the step's per-attempt limit, applied below
        usage: list[int],
    ) -> Any:
        seconds = timeout.total_seconds() if timeout else None
        if spec.connector:

            def add_usage(i: int, o: int) -> None:
                usage[0] += i
                usage[1] += o

            ctx = ActionContext(
                run_id=self.ex.run_record.id,
                step_id=record.step_id,
                phase=str(record.phase),
                attempt=record.attempt,
                item_index=record.item_index if record.item_index >= 0 else None,
                connection_name=step.connection,
                clock=self.engine.clock,
                add_usage=add_usage,
                timeout=seconds,
            )
            pool = self.ex.deployment.connections
            with self.engine.masker.active():  # connectors mask a text before they cut it short
                return await pool.call(spec, step.connection, ctx, inputs if isinstance(inputs, dict) else {})
        parsed = spec.input_model.model_validate(inputs)
        try:
            async with asyncio.timeout(seconds if spec.name == "script" else None):
                with self.engine.masker.active():
                    return await self._builtin(spec.name, parsed, record, seconds)
        except TimeoutError:
            raise TransientError(f"step '{record.step_id}' timed out after {seconds:g}s", timeout=True) from None

    # -- built-in actions ------------------------------------------------------------------------

    async def _builtin(self, name: str, inp: Any, record: StepRecord, limit: float | None) -> Any:
        now = self.engine.clock()
        index = record.item_index if record.item_index >= 0 else None
        if name == "transform":
            return inp.output
        if name == "log":
            self.ex.log(inp.level, inp.message, record.step_id, index)
            return None
        if name == "fail":
            raise PermanentError(inp.message)
        if name == "sleep":
            until = now + inp.duration if inp.duration is not None else _parse_until(inp.until)
            return self._suspend_until(until, "sleep")
        if name == "wait":
            url = self.engine.resume_url(self.ex.run_record.id, record.step_id)
            text = f"{inp.message} — " if inp.message else ""
            self.ex.log("info", f"{text}waiting up to {inp.timeout} for the resume call: {url}", record.step_id, index)
            raise Suspend("wait", (record.started_at or now) + inp.timeout)
        if name == "workflow":
            child = await self._start_child(inp, record)
            raise Suspend("child", None, child)
        if name == "script":
            return await self._script(inp, record, index, limit)
        raise PermanentError(f"built-in action '{name}' has no implementation")

    def _suspend_until(self, until: datetime, note: str) -> None:
        if until <= self.engine.clock():
            return None
        raise Suspend(note, until)

    async def _script(self, inp: Any, record: StepRecord, index: int | None, limit: float | None) -> Any:
        if inp.file is not None:
            entry = self.ex.deployment.revision.tree.entries.get(inp.file)
            if entry is None or entry.problem:
                raise PermanentError(f"script file '{inp.file}' is not in the automation directory of this revision")
            code, name = entry.load().decode("utf-8", "replace"), inp.file
        else:
            code, name = inp.run, record.step_id
        result = await run_script(
            inp.lang,
            code,
            name=name,
            input=inp.input,
            env=inp.env,
            args=inp.args,
            timeout=limit,
            log=lambda line: self.ex.log("info", line, record.step_id, index),
        )
        return result.output

    async def _start_child(self, inp: Any, record: StepRecord) -> str:
        run = self.ex.run_record
        key = f"{run.id}:{record.step_id}:{record.item_index}:{record.attempt}"
        child_id = run.id[:12] + hashlib.sha256(key.encode()).hexdigest()[:14]
        if await self.store.get_run(child_id) is not None:
            return child_id  # started before an interruption: do not start it twice
        step_key = record.step_id if record.item_index < 0 else f"{record.step_id}:{record.item_index}"
        trigger = {"type": "workflow", "parent_run_id": run.id, "step": step_key}
        try:
            submitted = await self.engine.submit(
                inp.workflow, inp.params, trigger=trigger, revision=run.revision, run_id=child_id,
                parent=(run.id, step_key),
            )  # fmt: skip
        except ParamsInvalid as exc:
            raise PermanentError(str(exc)) from None
        if submitted.run is None:
            raise PermanentError(f"child workflow '{inp.workflow}' was skipped by its concurrency policy")
        self.ex.log("info", f"started child run {child_id} of workflow '{inp.workflow}'", record.step_id)
        return child_id

    async def cancel_waiting(self, phase: Phase, state: StepState, *, timed_out: str | None = None) -> None:
        """End the waiting attempts of a step (cancelling the child runs they wait for): cancelled, or failed
        with kind ``timeout`` and the error ``timed_out``."""
        waiting = {r.key: r for r in state.records if r.status == StepStatus.WAITING}
        waiting.update({r.key: r for (p, s, _), r in self.waiting.items() if (p, s) == (phase, state.step.id)})
        for record in waiting.values():
            if record.child_run_id:
                await self.engine.cancel(record.child_run_id)
            record.finished_at = self.engine.clock()
            if timed_out:
                record.status, record.error, record.error_kind = StepStatus.FAILED, timed_out, "timeout"
            else:
                record.status, record.error, record.error_kind = StepStatus.CANCELLED, "cancelled", "cancelled"
            await self.save(record)

    # -- waking up ------------------------------------------------------------------------------

    async def _resolve(self, prior: StepRecord, idempotent: bool) -> Outcome:
        """The state of a stored attempt: still waiting, finished, or interrupted (status RUNNING)."""
        if prior.status == StepStatus.RUNNING:
            if idempotent:
                self.ex.log("warning", "step was interrupted; running it again", prior.step_id, prior.item_index)
                return Outcome(StepStatus.RUNNING)
            prior.status, prior.finished_at = StepStatus.FAILED, self.engine.clock()
            prior.error_kind = "interrupted"
            prior.error = (
                f"step '{prior.step_id}' was interrupted (the server stopped while it ran) and is not idempotent, "
                "so it was not run again; set idempotent = true on the step if running it twice is safe"
            )
            await self.save(prior)
            return Outcome.failed(prior.error, "interrupted")
        if prior.status != StepStatus.WAITING:
            return Outcome(prior.status, prior.output, prior.error, prior.error_kind)
        now = self.engine.clock()
        outcome: Outcome | None = None
        if prior.note == "child" and prior.child_run_id:
            child = await self.store.get_run(prior.child_run_id)
            if child is None or child.status == RunStatus.SUCCEEDED:
                outcome = Outcome.ok(child.outputs if child else None)
            elif child.finished:
                outcome = Outcome.failed(
                    f"child run {child.id} of workflow '{child.workflow}' {child.status}: {child.error}", "permanent"
                )
        elif prior.wake_at is not None and now >= prior.wake_at:
            if prior.note == "wait":
                waited = format_duration(prior.wake_at - (prior.started_at or prior.wake_at))
                outcome = Outcome.failed(f"no resume call arrived within the wait timeout ({waited})", "timeout")
            else:
                outcome = Outcome.ok(None)
        if outcome is None:
            self.waiting[(prior.phase, prior.step_id, prior.item_index)] = prior
            return WAITING
        prior.status, prior.output, prior.error, prior.error_kind = (
            outcome.status, outcome.output, outcome.error, outcome.kind,
        )  # fmt: skip
        prior.finished_at = now
        if not await self.save(prior, only_if=StepStatus.WAITING):  # a resume call won the race
            fresh = [r for r in await self.store.get_steps(prior.run_id) if r.key == prior.key]
            if fresh:
                return Outcome(fresh[0].status, fresh[0].output, fresh[0].error, fresh[0].error_kind)
        return outcome


def _parse_until(text: str | None) -> datetime:
    try:
        moment = datetime.fromisoformat(text or "")
    except ValueError:
        raise PermanentError(
            f"sleep 'until' is not an ISO 8601 time: {text!r} (write e.g. 2030-01-31T09:00:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _validation_text(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'with'}: {err['msg']}" for err in exc.errors(include_input=False)
    )
