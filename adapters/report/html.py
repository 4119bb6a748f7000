"""Self-contained HTML reports with hand-written inline SVG charts.

It owns turning a summary mapping and time series into one HTML5 file that opens offline
in any browser: inline CSS, no scripts, no external URLs, no plotting library (stdlib only).

Invariants of the SVG it writes:

* every coordinate is a finite number inside the ``viewBox`` (no ``nan``/``inf`` text);
* non-finite values (NaN, ±inf — e.g. an infinite limit meaning "no limit") are gaps: they
  break a series into one ``<path class="series …">`` per contiguous run of finite values;
* all text is XML-escaped, so each ``<svg>…</svg>`` block parses as XML on its own;
* a series longer than :data:`DECIMATE_ABOVE` points is reduced to the minimum and maximum
  of each pixel column (gaps kept), so spikes survive and a day of 1 s data stays small.

A page (:func:`render_html`) is the title, the summary table, notes, the charts, then
each :class:`Section` (a titled part with its own table, notes and charts).

Invalid charts (naive datetimes, x not increasing, lengths differ) are reported by
:func:`validate_chart` as ``list[Issue]``; :func:`render_svg` raises ``InvalidInput``.
"""

from __future__ import annotations

import html
import itertools
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from adapters.report.labels import label
from adapters.report.ticks import (
    CHAR_W,
    DAY_S,
    Labels,
    nice_ticks,
    tick_label,
    time_labels,
    time_ticks,
)
from aggregator.errors import Issue, raise_if_issues

__all__ = [
    "DECIMATE_ABOVE",
    "Chart",
    "Section",
    "Series",
    "render_html",
    "render_svg",
    "validate_chart",
    "write_html_report",
]

DECIMATE_ABOVE = 2000  #: longer series are cut to min/max per pixel column

Style = Literal["line", "step", "dashed", "area"]
_STYLES: tuple[str, ...] = ("line", "step", "dashed", "area")
# Okabe–Ito: distinguishable under the common colour-vision deficiencies.
_PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
_TITLE_H = 28.0
_ROW_H, _LEFT, _RIGHT = 16.0, 72.0, 18.0


@dataclass(frozen=True)
class Series:
    """One line on a chart; NaN/inf values are gaps (an infinite limit means "no limit")."""

    label: str
    values: Sequence[float]
    style: Style = "line"
    color: str | None = None  # CSS colour; ``None`` takes the next palette colour


@dataclass(frozen=True)
class Chart:
    """A chart: x is UTC-aware datetimes or plain numbers, strictly increasing."""

    title: str
    x: Sequence[datetime] | Sequence[float]
    series: Sequence[Series]
    y_label: str  # include the unit, e.g. "power (kW)"
    x_label: str = "time (UTC)"


@dataclass(frozen=True)
class Section:
    """A titled part of a page, after its main charts: a table, notes and its own charts."""

    title: str
    summary: Mapping[str, object]
    notes: Sequence[str] = ()
    charts: Sequence[Chart] = ()


@dataclass(frozen=True)
class _Frame:
    """Plot rectangle in pixels and the data window it shows."""

    left: float
    top: float
    right: float
    bottom: float
    x0: float
    x1: float
    y0: float
    y1: float

    def px(self, x: float) -> float:
        return self.left + _frac(x, self.x0, self.x1) * (self.right - self.left)

    def py(self, y: float) -> float:
        return self.bottom - _frac(y, self.y0, self.y1) * (self.bottom - self.top)


def _frac(v: float, a: float, b: float) -> float:
    """Position of ``v`` in ``[a, b]`` clamped to [0, 1]; halves first so nothing overflows."""
    half = b * 0.5 - a * 0.5
    f = (v * 0.5 - a * 0.5) / half if half > 0 else 0.5
    return min(1.0, max(0.0, f)) if math.isfinite(f) else 0.5


def _finite_or(v: float, fallback: float) -> float:
    return v if math.isfinite(v) else fallback


def _n(v: float) -> str:
    """A coordinate as SVG text: one decimal, never ``-0.0``."""
    return f"{v:.1f}".replace("-0.0", "0.0")


def _esc(s: str) -> str:
    return html.escape(s, quote=True)


def validate_chart(chart: Chart, *, width: int = 860, height: int = 300) -> list[Issue]:
    """Every problem that stops ``chart`` from being drawn, as values (empty when fine)."""
    issues: list[Issue] = []
    xs: list[object] = list(chart.x)
    n_dt = sum(isinstance(v, datetime) for v in xs)
    if 0 < n_dt < len(xs):
        issues.append(Issue("x", "mixes datetimes and numbers"))
    elif n_dt:
        naive = [str(i) for i, v in enumerate(xs) if _is_naive(v)]
        if naive:
            issues.append(Issue("x", "datetimes must be timezone-aware (UTC)", tuple(naive[:5])))
    else:
        bad = [str(i) for i, v in enumerate(xs) if not _is_finite_real(v)]
        if bad:
            issues.append(Issue("x", "numbers must be finite reals", tuple(bad[:5])))
    if not issues:
        ts = _x_numbers(chart)
        back = [str(i) for i in range(1, len(ts)) if not ts[i] > ts[i - 1]]
        if back:
            issues.append(Issue("x", "must be strictly increasing", tuple(back[:5])))
    for i, s in enumerate(chart.series):
        if len(s.values) != len(xs):
            msg = f"has {len(s.values)} values for {len(xs)} x points"
            issues.append(Issue(f"series[{i}].values", msg, (s.label,)))
        if s.style not in _STYLES:
            issues.append(Issue(f"series[{i}].style", f"must be one of {_STYLES}", (s.label,)))
    if width < 200 or height < 120:
        issues.append(Issue("size", f"needs width >= 200 and height >= 120, got {width}x{height}"))
    return issues


def _is_naive(v: object) -> bool:
    return isinstance(v, datetime) and v.utcoffset() is None


def _is_finite_real(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _x_numbers(chart: Chart) -> list[float]:
    """x as floats: POSIX seconds for datetimes, the numbers themselves otherwise."""
    return [v.timestamp() if isinstance(v, datetime) else float(v) for v in chart.x]


def _decimate(xs: list[float], ys: list[float], n_buckets: int) -> tuple[list[float], list[float]]:
    """Keep, per pixel column, the min, the max and the first/last gap, in index order."""
    if len(ys) <= DECIMATE_ABOVE or n_buckets < 1:
        return xs, ys
    half = xs[-1] * 0.5 - xs[0] * 0.5  # halves: no overflow even for extreme x
    scale, off = (n_buckets / half if half > 0 else 0.0), xs[0] * 0.5
    keep: list[int] = []
    start = 0
    while start < len(ys):
        bucket = int((xs[start] * 0.5 - off) * scale)
        end = start + 1
        while end < len(ys) and int((xs[end] * 0.5 - off) * scale) == bucket:
            end += 1
        lo = hi = gap_first = gap_last = -1
        for i in range(start, end):
            v = ys[i]
            if not math.isfinite(v):
                gap_first = i if gap_first < 0 else gap_first
                gap_last = i
            else:
                lo = i if lo < 0 or v < ys[lo] else lo
                hi = i if hi < 0 or v > ys[hi] else hi
        keep.extend(sorted({i for i in (lo, hi, gap_first, gap_last) if i >= 0}))
        start = end
    return [xs[i] for i in keep], [ys[i] for i in keep]


def _runs(ys: list[float]) -> list[tuple[int, int]]:
    """``[start, end)`` index ranges of contiguous finite values."""
    runs: list[tuple[int, int]] = []
    start = 0
    for finite, group in itertools.groupby(ys, key=math.isfinite):
        end = start + sum(1 for _ in group)
        if finite:
            runs.append((start, end))
        start = end
    return runs


def _y_range(values: list[float], *, with_zero: bool) -> tuple[float, float]:
    """Cover every finite value plus 5 % padding; pin 0 when the data sits near it."""
    lo, hi = min(values), max(values)
    if with_zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    if 0 < lo <= 0.3 * hi:
        lo = 0.0
    if 0.3 * lo <= hi < 0:
        hi = 0.0
    if lo == hi:
        d = abs(lo) * 0.1 if abs(lo) > 1e-300 else 1.0
        return _finite_or(lo - d, lo), _finite_or(hi + d, hi)
    pad = (hi * 0.5 - lo * 0.5) * 0.1
    new_lo = lo if lo == 0 and min(values) >= 0 else _finite_or(lo - pad, lo)
    new_hi = hi if hi == 0 and max(values) <= 0 else _finite_or(hi + pad, hi)
    return new_lo, new_hi


def render_svg(chart: Chart, *, width: int = 860, height: int = 300) -> str:
    """The chart as a standalone ``<svg>``; raises ``InvalidInput`` with every issue found."""
    return _svg(chart, width, height, standalone=True)


def _svg(chart: Chart, width: int, height: int, *, standalone: bool) -> str:
    raise_if_issues(validate_chart(chart, width=width, height=height))
    ns = ' xmlns="http://www.w3.org/2000/svg"' if standalone else ""
    out = [
        f'<svg{ns} viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{_esc(chart.title)}" font-family="system-ui, sans-serif" '
        f'font-size="11"><title>{_esc(chart.title)}</title>'
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>'
    ]
    top = 8.0
    if standalone:
        out.append(f'<text x="{_n(_LEFT)}" y="19" font-size="14" font-weight="bold">')
        out.append(f"{_esc(chart.title)}</text>")
        top = _TITLE_H
    is_time = any(isinstance(v, datetime) for v in chart.x)
    xs = _x_numbers(chart)
    data = [[float(v) for v in s.values] for s in chart.series]
    finite = [v for ys in data for v in ys if math.isfinite(v)]
    if not finite:
        out.append(f'<text x="{_n(width / 2)}" y="{_n(height / 2)}" text-anchor="middle" ')
        out.append('font-size="14" fill="#666666">no data</text></svg>')
        return "".join(out)
    right = width - _RIGHT
    top = _legend(out, chart.series, _LEFT, right, top, max_y=max(top + 4, height - 126.0))
    x0, x1 = xs[0], xs[-1]
    if len(xs) > 1 and any(s.style == "step" for s in chart.series):
        x1 = _finite_or(x1 + (x1 - xs[-2]), x1)  # the last step holds for one more interval
    if x0 == x1:
        pad = 1800.0 if is_time else (abs(x0) * 0.1 or 1.0)
        x0, x1 = _finite_or(x0 - pad, x0), _finite_or(x1 + pad, x1)
    if is_time:
        xticks, xstep = time_ticks(x0, x1, right - _LEFT)
        dated = x1 - x0 > DAY_S or x0 // DAY_S != x1 // DAY_S  # more than one UTC date
        xlabels = time_labels(xticks, xstep, dated)
    else:
        xticks, xstep = nice_ticks(x0, x1, (right - _LEFT) / 80)
        xlabels = [(tick_label(t, xstep), "") for t in xticks]
    two_lines = any(second for _, second in xlabels)
    bottom = height - (52.0 if two_lines else 40.0)
    y0, y1 = _y_range(finite, with_zero=any(s.style == "area" for s in chart.series))
    f = _Frame(_LEFT, top, right, bottom, x0, x1, y0, y1)
    _axes(out, f, chart, xticks, xlabels, height)
    for k, (s, ys) in enumerate(zip(chart.series, data, strict=True)):
        dx, dy = _decimate(xs, ys, int(right - _LEFT))
        _series(out, f, s, _color(s, k), k, dx, dy)
    out.append(f'<rect x="{_n(f.left)}" y="{_n(f.top)}" width="{_n(f.right - f.left)}" ')
    out.append(f'height="{_n(f.bottom - f.top)}" fill="none" stroke="#888888"/></svg>')
    return "".join(out)


def _color(s: Series, k: int) -> str:
    return s.color if s.color else _PALETTE[k % len(_PALETTE)]


def _legend(
    out: list[str], series: Sequence[Series], left: float, right: float, top: float, max_y: float
) -> float:
    """Draw the legend in rows from ``top``; return the y where the plot may start."""
    x, y = left, top + 4
    hidden = 0
    for k, s in enumerate(series):
        label = s.label if len(s.label) <= 40 else s.label[:39] + "…"
        w = 30 + len(label) * CHAR_W + 14
        if x + w > right and x > left:
            if y + _ROW_H > max_y:
                hidden = len(series) - k
                break
            x, y = left, y + _ROW_H
        c, ym = _esc(_color(s, k)), y + _ROW_H / 2
        if s.style == "area":
            out.append(f'<rect x="{_n(x)}" y="{_n(ym - 5)}" width="24" height="10" fill="{c}" ')
            out.append(f'fill-opacity="0.3" stroke="{c}"/>')
        else:
            dash = ' stroke-dasharray="6 4"' if s.style == "dashed" else ""
            out.append(f'<line x1="{_n(x)}" y1="{_n(ym)}" x2="{_n(x + 24)}" y2="{_n(ym)}" ')
            out.append(f'stroke="{c}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{_n(x + 30)}" y="{_n(ym + 4)}">{_esc(label)}</text>')
        x += w
    if hidden:
        out.append(f'<text x="{_n(x)}" y="{_n(y + _ROW_H / 2 + 4)}" fill="#666666">')
        out.append(f"+{hidden} more</text>")
    return y + _ROW_H + 8


def _axes(out: list[str], f: _Frame, c: Chart, ticks: list[float], labels: Labels, h: int) -> None:
    """Gridlines, tick labels, the zero line and the axis labels."""
    yticks, ystep = nice_ticks(f.y0, f.y1, max(2.0, (f.bottom - f.top) / 45))
    for t in yticks:
        y = _n(f.py(t))
        out.append(f'<line x1="{_n(f.left)}" y1="{y}" x2="{_n(f.right)}" y2="{y}" ')
        out.append('stroke="#e3e3e3"/>')
        out.append(f'<text x="{_n(f.left - 6)}" y="{_n(f.py(t) + 4)}" text-anchor="end">')
        out.append(f"{_esc(tick_label(t, ystep))}</text>")
    for t, (first, second) in zip(ticks, labels, strict=True):
        x = _n(f.px(t))
        out.append(f'<line x1="{x}" y1="{_n(f.top)}" x2="{x}" y2="{_n(f.bottom)}" ')
        out.append('stroke="#e3e3e3"/>')
        out.append(f'<text x="{x}" y="{_n(f.bottom + 15)}" text-anchor="middle">')
        out.append(f"{_esc(first)}</text>")
        if second:
            out.append(f'<text x="{x}" y="{_n(f.bottom + 27)}" text-anchor="middle" ')
            out.append(f'fill="#555555">{_esc(second)}</text>')
    if f.y0 < 0 < f.y1:
        y = _n(f.py(0.0))
        out.append(f'<line x1="{_n(f.left)}" y1="{y}" x2="{_n(f.right)}" y2="{y}" ')
        out.append('stroke="#999999"/>')
    cy = _n((f.top + f.bottom) / 2)
    out.append(f'<text x="14" y="{cy}" transform="rotate(-90 14 {cy})" text-anchor="middle">')
    out.append(f"{_esc(c.y_label)}</text>")
    out.append(f'<text x="{_n((f.left + f.right) / 2)}" y="{_n(h - 6)}" ')
    out.append(f'text-anchor="middle">{_esc(c.x_label)}</text>')


def _series(
    out: list[str], f: _Frame, s: Series, color: str, k: int, xs: list[float], ys: list[float]
) -> None:
    """One ``<path class="series">`` per run of finite values (plus its fill for areas)."""
    c = _esc(color)
    dash = ' stroke-dasharray="6 4"' if s.style == "dashed" else ""
    base = f.py(min(max(0.0, f.y0), f.y1))
    for start, end in _runs(ys):
        pts: list[tuple[float, float]] = []
        for i in range(start, end):
            pts.append((f.px(xs[i]), f.py(ys[i])))
            if s.style == "step":  # hold until the next x (the last: to the axis end)
                pts.append((f.px(xs[i + 1] if i + 1 < len(xs) else f.x1), f.py(ys[i])))
        if len(pts) == 1:
            pts.append(pts[0])  # zero-length segment: drawn as a dot by the round cap
        d = "M" + "L".join(f"{_n(x)} {_n(y)}" for x, y in pts)
        if s.style == "area":
            edge = f"L{_n(pts[-1][0])} {_n(base)}L{_n(pts[0][0])} {_n(base)}Z"
            out.append(f'<path class="fill s{k}" d="{d}{edge}" fill="{c}" fill-opacity="0.25" ')
            out.append('stroke="none"/>')
        out.append(f'<path class="series s{k}" d="{d}" fill="none" stroke="{c}" ')
        out.append(f'stroke-width="1.6" stroke-linejoin="round" stroke-linecap="round"{dash}/>')


_CSS = """body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:920px;margin:0 auto;padding:16px 24px 48px}h1{font-size:1.5em;margin:.6em 0}
h2{font-size:1.1em;margin:1.4em 0 .4em}table{border-collapse:collapse;background:#fff}
h3{font-size:1em;margin:1em 0 .3em}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}th .key{color:#999}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
table table{margin:-1px}svg{max-width:100%;height:auto;background:#fff;border:1px solid #e5e5e5}"""


def _format_float(v: float) -> str:
    """3 decimals for ordinary magnitudes, 3 significant digits below 1, exponent when huge."""
    a = abs(v)
    if not math.isfinite(v) or a == 0:
        return str(v) if a else "0"
    if a < 1:
        return f"{v:.3g}"
    if a < 1e9:
        return f"{v:.3f}".rstrip("0").rstrip(".")
    return f"{v:.4g}"


def _format_scalar(v: object) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real):
        return _format_float(float(v))
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, list | tuple):
        return ", ".join(_format_scalar(i) for i in v)
    return str(v)


def _table(summary: Mapping[str, object], depth: int = 0) -> str:
    rows = []
    for key, value in summary.items():
        if isinstance(value, Mapping) and depth < 4:
            cell = f"<td>{_table(value, depth + 1)}</td>"
        else:
            num = isinstance(value, numbers.Real) and not isinstance(value, bool)
            cls = ' class="num"' if num else ""
            cell = f"<td{cls}>{_esc(_format_scalar(value))}</td>"
        name, shown = str(key), label(str(key))  # words and unit; the JSON key beside
        note = f' <span class="key">{_esc(name)}</span>' if shown != name else ""
        rows.append(f"<tr><th>{_esc(shown)}{note}</th>{cell}</tr>")
    return "<table>" + "".join(rows) + "</table>"


def render_html(
    title: str,
    summary: Mapping[str, object],
    charts: Sequence[Chart],
    *,
    notes: Sequence[str] = (),
    sections: Sequence[Section] = (),
) -> str:
    """A self-contained HTML5 page: title, summary table, notes, each chart, then each
    section (its table, notes and charts)."""
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>\n<body><main>",
        f"<h1>{_esc(title)}</h1>",
    ]
    if summary:
        parts.append(f"<section><h2>Summary</h2>{_table(summary)}</section>")
    if notes:
        items = "".join(f"<li>{_esc(n)}</li>" for n in notes)
        parts.append(f"<section><h2>Notes</h2><ul>{items}</ul></section>")
    for chart in charts:
        svg = _svg(chart, 860, 300, standalone=False)
        parts.append(f"\n<section><h2>{_esc(chart.title)}</h2>\n{svg}\n</section>")
    for sec in sections:  # its table, its notes, its charts under <h3>
        parts.append(f'\n<section class="part"><h2>{_esc(sec.title)}</h2>{_table(sec.summary)}')
        if sec.notes:
            parts.append("<ul>" + "".join(f"<li>{_esc(n)}</li>" for n in sec.notes) + "</ul>")
        for chart in sec.charts:
            svg = _svg(chart, 860, 300, standalone=False)
            parts.append(f"\n<h3>{_esc(chart.title)}</h3>\n{svg}\n")
        parts.append("</section>")
    parts.append("\n</main></body></html>\n")
    return "".join(parts)


def write_html_report(
    path: Path,
    title: str,
    summary: Mapping[str, object],
    charts: Sequence[Chart],
    *,
    notes: Sequence[str] = (),
    sections: Sequence[Section] = (),
) -> Path:
    """Write :func:`render_html` to ``path`` (UTF-8, parent directories created)."""
    page = render_html(title, summary, charts, notes=notes, sections=sections)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
