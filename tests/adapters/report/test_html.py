"""Unit tests of the dependency-free HTML/SVG report writer (pure logic, no server)."""

from __future__ import annotations

import itertools
import math
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.report import html as report
from adapters.report.html import Chart, Series, render_html, render_svg, write_html_report
from aggregator.errors import InvalidInput

SVG = "{http://www.w3.org/2000/svg}"
T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _times(n: int, step_s: float = 900.0) -> list[datetime]:
    return [T0 + timedelta(seconds=step_s * i) for i in range(n)]


def _series_paths(svg: str, k: int = 0) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return [p for p in root.iter(f"{SVG}path") if p.get("class") == f"series s{k}"]


def _points(path: ET.Element) -> list[tuple[float, float]]:
    nums = [float(v) for v in NUMBER.findall(path.get("d", ""))]
    return list(zip(nums[0::2], nums[1::2], strict=True))


def _texts(svg: str) -> list[str]:
    return [t.text or "" for t in ET.fromstring(svg).iter(f"{SVG}text")]


def _y_tick_labels(svg: str) -> list[str]:
    root = ET.fromstring(svg)
    return [t.text or "" for t in root.iter(f"{SVG}text") if t.get("text-anchor") == "end"]


def test_public_surface() -> None:
    assert set(report.__all__) == {
        "DECIMATE_ABOVE",
        "Chart",
        "Section",
        "Series",
        "render_html",
        "render_svg",
        "validate_chart",
        "write_html_report",
    }


def test_a_section_comes_after_the_charts_with_its_table_notes_and_charts() -> None:
    chart = Chart("main chart", _times(3), [Series("a", [1.0, 2.0, 3.0])], "power (kW)")
    part = report.Section(
        "Market <FCR>",
        {"settlement_outside_s": 12, "reason": "pool < 1 MW"},
        notes=["gaps: none"],
        charts=[Chart("activation", _times(2), [Series("b", [0.0, 1.0])], "power (kW)")],
    )
    page = render_html("t", {"x": 1}, [chart], sections=[part])
    assert page.index("main chart") < page.index("Market &lt;FCR&gt;") < page.index("activation")
    body = page[page.index("Market &lt;FCR&gt;") :]
    assert "pool &lt; 1 MW" in body and "<li>gaps: none</li>" in body
    assert body.count("<svg") == 1 and "<h3>activation</h3>" in body


def test_known_series_parses_as_one_path_per_segment() -> None:
    values = [1.0, 2.0, 3.0, 2.5, 4.0, 3.0]
    svg = render_svg(Chart("power", _times(6), [Series("fleet", values)], "power (kW)"))
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    paths = _series_paths(svg)
    assert len(paths) == 1
    assert len(_points(paths[0])) == len(values)


def test_nan_in_the_middle_splits_the_path_in_two() -> None:
    values = [1.0, 2.0, math.nan, 3.0, 4.0, 5.0]
    svg = render_svg(Chart("power", _times(6), [Series("fleet", values)], "power (kW)"))
    paths = _series_paths(svg)
    assert [len(_points(p)) for p in paths] == [2, 3]


def test_infinite_limit_is_a_gap_and_no_nan_or_inf_text() -> None:
    limit = [10.0, 10.0, math.inf, math.inf, 8.0, -math.inf, math.nan]
    chart = Chart("limits", _times(7), [Series("DSO limit", limit, style="dashed")], "kW")
    svg = render_svg(chart)
    assert len(_series_paths(svg)) == 2
    assert "nan" not in svg.lower()
    assert "inf" not in svg.lower()
    assert all(p.get("stroke-dasharray") for p in _series_paths(svg))


def test_y_tick_labels_are_nice_numbers() -> None:
    values = [0.37 + 11.9 * math.sin(i / 7) ** 2 for i in range(50)]
    svg = render_svg(Chart("p", list(range(50)), [Series("s", values)], "power (kW)", "slot"))
    ticks = [float(t) for t in _y_tick_labels(svg)]
    assert len(ticks) >= 3
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1
    step = steps.pop()
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 6) in {1.0, 2.0, 5.0}
    assert all(abs(t / step - round(t / step)) < 1e-6 for t in ticks)
    assert 0.0 in ticks  # positive data close to 0 (min < 30 % of max): axis starts at 0


def test_y_range_does_not_force_zero_for_data_far_from_it() -> None:
    values = [100.0, 104.0, 110.0, 107.0]
    svg = render_svg(Chart("v", [0.0, 1.0, 2.0, 3.0], [Series("s", values)], "kW", "x"))
    ticks = [float(t) for t in _y_tick_labels(svg)]
    assert min(ticks) >= 95.0
    assert max(ticks) <= 115.0


def test_step_style_draws_horizontal_then_vertical_segments() -> None:
    values = [1.0, 3.0, 2.0, 5.0]
    svg = render_svg(Chart("plan", _times(4), [Series("plan", values, style="step")], "kW"))
    (path,) = _series_paths(svg)
    pts = _points(path)
    assert len(pts) == 2 * len(values)  # the last value holds for one more interval
    for (xa, ya), (xb, yb) in itertools.pairwise(pts):
        assert xa == xb or ya == yb  # every segment is axis-aligned
    assert pts[0][1] == pts[1][1] and pts[0][0] < pts[1][0]  # holds until the next x
    assert pts[1][0] == pts[2][0] and pts[1][1] != pts[2][1]  # then jumps


def test_area_style_fills_to_zero() -> None:
    values = [2.0, 4.0, 3.0]
    svg = render_svg(Chart("flex", _times(3), [Series("flex", values, style="area")], "kW"))
    root = ET.fromstring(svg)
    fills = [p for p in root.iter(f"{SVG}path") if p.get("class") == "fill s0"]
    assert len(fills) == 1
    assert fills[0].get("d", "").endswith("Z")
    assert "0" in _y_tick_labels(svg)


def test_labels_are_escaped() -> None:
    chart = Chart("a <b> & c", _times(3), [Series("x<&>y", [1.0, 2.0, 3.0])], "p <kW> & q")
    svg = render_svg(chart)
    root = ET.fromstring(svg)  # would fail on a raw "<" or "&"
    texts = _texts(svg)
    assert "x<&>y" in texts
    assert "a <b> & c" in texts
    assert "p <kW> & q" in texts
    assert root.findtext(f"{SVG}title") == "a <b> & c"
    assert "x&lt;&amp;&gt;y" in svg


def test_decimation_keeps_spike_and_small_file() -> None:
    n = 100_000
    x = [float(i) for i in range(n)]
    values = [math.sin(i / 500.0) for i in range(n)]
    values[54_321] = 42.0
    values[77_777] = -17.0
    svg = render_svg(Chart("1 s data", x, [Series("p", values)], "kW", "s"))
    assert len(svg.encode()) < 200_000
    (path,) = _series_paths(svg)
    ys = [y for _, y in _points(path)]
    assert len(ys) < 5_000
    # Same x and y range, four points only: the spike and the dip land on the same pixels.
    ref_x = [0.0, 54_321.0, 77_777.0, n - 1.0]
    ref = render_svg(Chart("1 s data", ref_x, [Series("p", [0.0, 42.0, -17.0, 0.0])], "kW", "s"))
    ref_ys = [y for _, y in _points(_series_paths(ref)[0])]
    assert min(ys) == min(ref_ys)
    assert max(ys) == max(ref_ys)


def test_decimation_keeps_gaps() -> None:
    n = 10_000
    values = [1.0 + (i % 7) for i in range(n)]
    values[5_000:5_200] = [math.nan] * 200
    svg = render_svg(Chart("gap", [float(i) for i in range(n)], [Series("p", values)], "kW", "s"))
    assert len(_series_paths(svg)) == 2


def test_empty_chart_renders_no_data() -> None:
    for chart in (
        Chart("nothing", [], [], "kW"),
        Chart("no series", _times(3), [], "kW"),
        Chart("no points", [], [Series("s", [])], "kW"),
        Chart("all gaps", _times(2), [Series("s", [math.nan, math.inf])], "kW"),
    ):
        svg = render_svg(chart)
        ET.fromstring(svg)
        assert "no data" in _texts(svg)


def test_single_point_is_drawn_as_a_dot() -> None:
    svg = render_svg(Chart("one", _times(1), [Series("s", [3.0])], "kW"))
    (path,) = _series_paths(svg)
    assert path.get("stroke-linecap") == "round"
    assert "nan" not in svg.lower()


def test_datetime_axis_has_hh_mm_labels() -> None:
    svg = render_svg(Chart("day", _times(48), [Series("s", [1.0] * 48)], "kW"))
    texts = _texts(svg)
    assert "18:00" in texts
    assert "time (UTC)" in texts
    assert not any(re.fullmatch(r"\d{4}-\d{2}-\d{2}", t) for t in texts)


def test_datetime_axis_over_several_days_shows_dates() -> None:
    x = _times(3 * 96)
    svg = render_svg(Chart("days", x, [Series("s", [1.0] * len(x))], "kW"))
    texts = _texts(svg)
    assert "2024-06-02" in texts
    assert any(re.fullmatch(r"\d{2}:\d{2}", t) for t in texts)


def test_invalid_charts_are_rejected_with_every_issue() -> None:
    naive = [datetime(2024, 6, 1, 12) + timedelta(hours=i) for i in range(3)]  # noqa: DTZ001
    chart = Chart("bad", naive, [Series("s", [1.0, 2.0])], "kW")
    issues = report.validate_chart(chart)
    assert {i.field for i in issues} == {"x", "series[0].values"}
    with pytest.raises(InvalidInput):
        render_svg(chart)
    backwards = Chart("bad", [0.0, 2.0, 1.0], [Series("s", [1.0, 2.0, 3.0])], "kW", "x")
    assert [i.message for i in report.validate_chart(backwards)] == ["must be strictly increasing"]


class _Checker(HTMLParser):
    VOID = frozenset({"meta", "br", "hr", "img", "link", "input"})
    SVG_LEAVES = frozenset({"rect", "line", "path", "circle"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert not any(k in ("src", "href") for k, _ in attrs)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag in self.VOID or tag in self.SVG_LEAVES

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-3:])
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _sample_html() -> str:
    charts = [
        Chart("Fleet power", _times(8), [Series("fleet", [1.0, 2, 3, 4, 3, 2, 1, 0])], "kW"),
        Chart("Price & <limits>", [0.0, 1.0], [Series("eur", [50.0, 60.0])], "EUR/MWh", "h"),
    ]
    summary: dict[str, object] = {
        "energy_kwh": 1234.56789,
        "peak_power_kw": 0.000123456,
        "sessions": 42,
        "feasible": True,
        "solver": "highs <x>",
        "per_feeder": {"f1_kw": 3.14159265, "f2_kw": 2},
    }
    return render_html("Day-ahead <report>", summary, charts, notes=["limits are hard", "a&b"])


def test_html_parses_and_contains_summary_and_titles() -> None:
    page = _sample_html()
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.stack == []
    text = "".join(checker.text)
    for key in ("energy_kwh", "peak_power_kw", "sessions", "feasible", "solver", "f1_kw"):
        assert key in text
    assert "Fleet power" in text and "Price & <limits>" in text
    assert "1234.568" in text and "0.000123" in text and "3.142" in text
    assert "True" in text and "42" in text and "highs <x>" in text
    assert "limits are hard" in text and "a&b" in text
    assert "<script" not in page and "http" not in page
    blocks = re.findall(r"<svg.*?</svg>", page, flags=re.DOTALL)
    assert len(blocks) == 2
    for block in blocks:
        ET.fromstring(block)


def test_write_html_report_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "report.html"
    chart = Chart("p", _times(3), [Series("s", [1.0, 2.0, 3.0])], "kW")
    out = write_html_report(target, "R ü", {"k": 1.5}, [chart])
    assert out == target
    assert "R ü" in target.read_text(encoding="utf-8")


_VIEWBOX_ATTRS = ("x", "y", "x1", "x2", "y1", "y2", "cx", "cy")


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=60),
    style=st.sampled_from(["line", "step", "dashed", "area"]),
    as_time=st.booleans(),
)
def test_every_coordinate_lies_in_the_viewbox(
    values: list[float], style: str, as_time: bool
) -> None:
    x: list[datetime] | list[float] = (
        _times(len(values), 37.0) if as_time else [i * 0.25 for i in range(len(values))]
    )
    chart = Chart("prop", x, [Series("s", values, style=style)], "kW")  # type: ignore[arg-type]
    svg = render_svg(chart, width=640, height=240)
    assert "nan" not in svg.lower() and "inf" not in svg.lower()
    root = ET.fromstring(svg)
    for el in root.iter():
        for attr in _VIEWBOX_ATTRS:
            if (raw := el.get(attr)) is not None:
                bound = 640 if attr.startswith(("x", "cx")) else 240
                assert 0 <= float(raw) <= bound, (el.tag, attr, raw)
        if el.tag == f"{SVG}path":
            for px, py in _points(el):
                assert 0 <= px <= 640 and 0 <= py <= 240
