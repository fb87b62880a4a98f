"""When a failed attempt is tried again, and after how long.

Error kinds (``ActionError.kind`` and the engine's own): ``transient``, ``timeout``,
``permanent``, ``circuit_open``, ``interrupted``, ``template``, ``fail``, ``cancelled``.
``retry.on`` lists the kinds worth another attempt: ``transient`` covers transient errors and
timeouts, ``timeout`` only timeouts, ``permanent`` permanent errors, ``any`` every kind that can
pass on a later try. An open circuit, an interrupted non-idempotent step, a ``fail`` step, a
template error and a cancellation are never retried: trying again cannot help or is unsafe.
"""

from __future__ import annotations

import random

from weir.schemas.common import RetryPolicy

NEVER_RETRIED = frozenset({"circuit_open", "interrupted", "template", "fail", "cancelled"})
_MATCHES = {
    "transient": frozenset({"transient", "timeout"}),
    "timeout": frozenset({"timeout"}),
    "permanent": frozenset({"permanent"}),
}

NO_RETRY = RetryPolicy()


def should_retry(policy: RetryPolicy, kind: str, attempt: int) -> bool:
    """Whether attempt number ``attempt`` (1-based) that failed with ``kind`` gets another try."""
    if attempt >= policy.attempts or kind in NEVER_RETRIED:
        return False
    return any(on == "any" or kind in _MATCHES.get(on, ()) for on in policy.on)


def backoff_delay(
    policy: RetryPolicy, attempt: int, *, retry_after: float | None = None, rng: random.Random | None = None
) -> float:
    """Seconds to wait after failed attempt ``attempt`` before the next one.

    ``fixed`` waits ``delay`` each time, ``exponential`` ``delay * 2**(attempt-1)``; both are capped
    at ``max_delay``. Jitter spreads the wait over ±50% so clients that failed together do not
    retry together. A server's ``Retry-After`` is honoured when longer (still capped).
    """
    base = policy.delay.total_seconds()
    cap = policy.max_delay.total_seconds()
    wait = base if policy.backoff == "fixed" else base * 2 ** (attempt - 1)
    wait = min(wait, cap)
    if policy.jitter and wait > 0:
        wait *= 0.5 + (rng or random).random()
        wait = min(wait, cap)
    if retry_after is not None:
        wait = max(wait, min(retry_after, cap))
    return wait
