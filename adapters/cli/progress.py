"""Progress on a terminal for the long commands (``demo``, ``simulate``, ``grid check``).

Bars are drawn with tqdm on standard error, and only when enabled: the commands default
to ``--progress`` when standard error is a terminal and ``--no-progress`` otherwise, so
piped output, CI logs and ``--json`` stay clean. :func:`stage_bar` is for a command made
of a few named stages with no common unit (load a feeder, run a power flow, compute
hosting capacity): the bar counts stages and names the one under way.

Invariants: a disabled bar draws nothing and costs nothing; ``close`` is safe to call
more than once and always leaves the terminal line finished.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = ["StageBar", "stage_bar"]


@dataclass
class StageBar:
    """``start(name)`` marks the previous stage done and names the next; ``close()`` ends."""

    stages: int
    _bar: tqdm[NoReturn] | None = field(default=None, repr=False)
    _started: int = 0

    def start(self, name: str) -> None:
        if self._bar is None:
            return
        if self._started:
            self._bar.update(1)
        self._started += 1
        self._bar.set_description_str(name)

    def close(self) -> None:
        if self._bar is None:
            return
        if self._started:
            self._bar.update(self.stages - self._bar.n)  # the last stage is done
        self._bar.close()
        self._bar = None


def stage_bar(enabled: bool, *, stages: int) -> StageBar:
    """A bar over ``stages`` named stages on stderr, or a silent one."""
    bar = StageBar(stages)
    if enabled:
        from tqdm import tqdm

        bar._bar = tqdm(
            total=stages,
            unit="stage",
            file=sys.stderr,
            bar_format="{desc:<28} {n_fmt}/{total_fmt} stages |{bar:20}| {elapsed}",
            leave=False,
        )
    return bar
