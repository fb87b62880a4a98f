"""Durations as the CLI's tables and the web UI show them: the same rounding, two spellings."""

from __future__ import annotations

import pytest

from weir.server.client import _duration
from weir.server.ui.render import duration


@pytest.mark.parametrize(
    ("millis", "ui", "cli"),
    [
        (0.4, "0 ms", "0ms"),
        (12.3, "12 ms", "12ms"),
        (999.4, "999 ms", "999ms"),
        (999.6, "1.0 s", "1.0s"),  # never "1000 ms"
        (3_400, "3.4 s", "3.4s"),
        (59_940, "59.9 s", "59.9s"),
        (59_960, "1 min 0 s", "1m00s"),  # never "60.0 s"
        (119_600, "2 min 0 s", "2m00s"),  # the same minute in both (the UI used to say 1 min 59 s)
        (125_000, "2 min 5 s", "2m05s"),
        (3_599_600, "1 h 0 min", "1h00m"),
        (3_720_000, "1 h 2 min", "1h02m"),
        (None, "\N{EN DASH}", ""),
    ],
)
def test_a_duration_reads_the_same_in_the_cli_and_the_ui(millis: float | None, ui: str, cli: str) -> None:
    assert duration(millis) == ui
    assert _duration(millis) == cli
