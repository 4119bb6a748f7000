"""Axis ticks for :mod:`adapters.report.html`: "nice" number ticks and UTC time ticks.

Invariants: number ticks are multiples of 1, 2 or 5 × 10^k inside the range (none when
the range is not finite or would need more than 200); time ticks are UTC-aligned
multiples of 1 s … 4 weeks, as many as fit their labels side by side.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

__all__ = ["CHAR_W", "DAY_S", "Labels", "nice_ticks", "tick_label", "time_labels", "time_ticks"]

CHAR_W = 6.6  # rough advance of an 11 px sans-serif character, for layout only
TIME_STEPS_S: tuple[int, ...] = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
TIME_STEPS_S += (7200, 10800, 21600, 43200, 86400, 2 * 86400, 7 * 86400, 14 * 86400, 28 * 86400)
DAY_S = 86400.0
Labels = list[tuple[str, str]]  # per x tick: (first line, second line or "")


def nice_ticks(lo: float, hi: float, target: float) -> tuple[list[float], float]:
    """Ticks at multiples of 1, 2 or 5 × 10^k inside ``[lo, hi]``, about ``target`` of them."""
    raw = (hi * 0.5 - lo * 0.5) / (max(target, 1.0) * 0.5)
    if not 1e-300 < raw < 1e300:  # also rejects NaN; beyond this there are no ticks
        return [], 0.0
    mag = 10.0 ** math.floor(math.log10(raw))
    norm = raw / mag
    step = mag * (1.0 if norm < 1.5 else 2.0 if norm < 3 else 5.0 if norm < 7 else 10.0)
    k0, k1 = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    if k1 - k0 > 200:
        return [], step
    return [k * step for k in range(k0, k1 + 1)], step


def tick_label(v: float, step: float) -> str:
    """A tick value with just the digits its step needs."""
    if v == 0 or abs(v) < step * 1e-6:
        return "0"
    if step >= 1e-6 and abs(v) < 1e9:
        return f"{v:.{max(0, -math.floor(math.log10(step)))}f}"
    sig = math.floor(math.log10(abs(v))) - math.floor(math.log10(step)) + 1
    return f"{v:.{min(17, max(1, sig))}g}"


def time_ticks(t0: float, t1: float, width_px: float) -> tuple[list[float], float]:
    """UTC-aligned ticks of 1 s … 4 weeks, as many as fit their labels side by side."""
    for step in TIME_STEPS_S:
        chars = 8 if step < 60 else 10 if step >= DAY_S else 5
        if (t1 - t0) / step <= width_px / (chars * CHAR_W + 18):
            return [k * step for k in range(math.ceil(t0 / step), math.floor(t1 / step) + 1)], step
    ticks, days = nice_ticks(t0 / DAY_S, t1 / DAY_S, width_px / (10 * CHAR_W + 18))
    return [t * DAY_S for t in ticks], days * DAY_S


def time_labels(ticks: list[float], step: float, dated: bool) -> Labels:
    """(first line, second line) per tick: HH:MM, with the date under the first of each day."""
    out: Labels = []
    prev_day = ""
    for t in ticks:
        dt = datetime.fromtimestamp(t, tz=UTC)
        day = dt.strftime("%Y-%m-%d")
        if step >= DAY_S:
            out.append((day, ""))
        else:
            hhmm = dt.strftime("%H:%M:%S" if step < 60 else "%H:%M")
            out.append((hhmm, day if dated and day != prev_day else ""))
        prev_day = day
    return out
