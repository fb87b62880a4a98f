"""Hypothesis profiles of the property-based tests: short in CI, long on request.

``weir-fuzz`` (the default) keeps the whole of tests/fuzz/ within about a minute, so it runs in
every CI build. ``WEIR_FUZZ=long`` selects ``weir-fuzz-long``, which tries many more examples
and longer stateful sequences: run it before a release or after changing a parser (docs/testing.md).
Neither keeps an example database in the working tree; a failure prints the seed and the
``@reproduce_failure`` blob that replays it.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE = "weir-fuzz-long" if os.environ.get("WEIR_FUZZ", "").strip().lower() == "long" else "weir-fuzz"

settings.register_profile(
    "weir-fuzz",
    max_examples=40,
    stateful_step_count=12,
    deadline=None,  # a shared 2-core CI machine has pauses that are not the code's fault
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "weir-fuzz-long",
    max_examples=2000,
    stateful_step_count=40,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(PROFILE)
