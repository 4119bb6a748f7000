"""Summary keys read as words with their unit, in the terminal and in the HTML report."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from adapters.files.outputs import format_summary
from adapters.report.html import render_html
from adapters.report.labels import OVERRIDES, UNITS, label


def test_units_move_into_brackets() -> None:
    assert label("energy_delivered_kwh") == "energy delivered (kWh)"
    assert label("fast_loop_ms_p99") == "fast loop p99 (ms)"
    assert label("plan_solve_s_median") == "plan solve median (s)"
    assert label("max_line_loading_pct") == "max line loading (%)"
    assert label("uncontrolled_min_voltage_pu") == "uncontrolled min voltage (pu)"
    assert label("price_eur_per_mwh") == "price (EUR/MWh)"  # the longest unit wins
    assert label("fcr_reserve_kw") == "FCR reserve (kW)"
    assert label("evses") == "EVSEs"
    assert label("max_limit_excess_kw") == OVERRIDES["max_limit_excess_kw"]


def test_what_is_not_a_key_stays_as_it_is() -> None:
    for name in ("1-LV-urban6--0-sw", "Site A", "feeder-7", "f1_KW"):
        assert label(name) == name
    assert label("s_count") == "s count"  # never a unit as the first word
    assert label("site_a_count") == "site a count"  # a one-letter unit only at the end


_word = st.sampled_from(["energy", "power", "plan", "site", "max", "loading", "p99", "fcr"])
_unit = st.sampled_from(sorted(UNITS))


@given(st.lists(_word, min_size=1, max_size=4), _unit, st.lists(_word, max_size=2))
def test_a_key_with_a_unit_names_it_once_in_brackets(
    before: list[str], unit: tuple[str, ...], after: list[str]
) -> None:
    if len(unit) == 1 and unit[0] in {"a", "v", "h"}:
        after = []  # those are units only as the last word
    key = "_".join([*before, *unit, *after])
    if key in OVERRIDES:
        return
    text = label(key)
    assert "_" not in text
    assert text.endswith(f"({UNITS[unit]})")
    assert text.count("(") == 1


def test_terminal_summary_and_html_table_show_words_and_units() -> None:
    summary = {"energy_delivered_kwh": 12.5, "plans": 3, "per_feeder": {"f1": 1.0}}
    text = format_summary(summary)
    assert "energy delivered (kWh)" in text and "energy_delivered_kwh" not in text
    page = render_html("t", summary, [])
    heads = re.findall(r"<th>(.*?)</th>", page)
    assert 'energy delivered (kWh) <span class="key">energy_delivered_kwh</span>' in heads
    assert "plans" in heads and "f1" in heads  # nothing to translate: shown once
