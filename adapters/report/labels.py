"""Readable labels for summary keys: the words, then the unit in brackets.

Summary keys carry their unit in their name (CONVENTIONS §5: ``energy_delivered_kwh``,
``fast_loop_ms_p99``, ``plan_solve_s_median``); a person reading a table wants
"energy delivered (kWh)", "fast loop p99 (ms)", "plan solve median (s)". :func:`label`
derives that from the key alone, so a new summary figure gets a readable label with no
table to update; :data:`OVERRIDES` holds the few keys whose words read badly on their own.

Invariants: a key that is not a lower-case snake_case name (a feeder id, a site id) is
returned unchanged; at most one unit is recognised per key (the first, scanning from the
left, longest unit first; never the first word; a one-letter unit other than ``s`` only
as the last word); acronyms (FCR, aFRR, DSO, EVSE, CSMS, AC, RMS …) are written
as such.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["OVERRIDES", "UNITS", "label"]

# unit tokens (as sequences of key words) → how the unit is written; longest first
UNITS: Final[dict[tuple[str, ...], str]] = {
    ("eur", "per", "mwh"): "EUR/MWh",
    ("eur", "per", "mw"): "EUR/MW",
    ("eur", "per", "kwh"): "EUR/kWh",
    ("kwh",): "kWh",
    ("mwh",): "MWh",
    ("kw",): "kW",
    ("mw",): "MW",
    ("kva",): "kVA",
    ("pct",): "%",
    ("pu",): "pu",
    ("ms",): "ms",
    ("s",): "s",
    ("h",): "h",
    ("hz",): "Hz",
    ("mhz",): "mHz",
    ("a",): "A",
    ("v",): "V",
    ("eur",): "EUR",
}

_ACRONYMS: Final = {
    "fcr": "FCR",
    "afrr": "aFRR",
    "dso": "DSO",
    "cso": "CSO",
    "evse": "EVSE",
    "evses": "EVSEs",
    "ev": "EV",
    "evs": "EVs",
    "csms": "CSMS",
    "ac": "AC",
    "rms": "RMS",
    "lp": "LP",
    "soc": "SoC",
    "v2g": "V2G",
    "ocpp": "OCPP",
    "id": "id",
}

OVERRIDES: Final[dict[str, str]] = {
    "delivered_share_of_bound": "delivered / upper bound",
    "energy_bound_kwh": "energy, upper bound (kWh)",
    "fcr_tracking_error_kw_rms": "FCR tracking error, RMS (kW)",
    "max_limit_excess_kw": "largest excess over a limit (kW)",
    "grid_violations": "AC grid violations",
    "uncontrolled_grid_violations": "AC grid violations, uncontrolled charging",
    "followable_setpoint_share": "setpoints a car can follow (share)",
    "energy_continuous_kwh": "energy, continuous allocation (kWh)",
    "delivered_share_of_continuous": "delivered / continuous allocation",
    "limit_excess_measured_kw": "largest excess over a limit, measured (kW)",
    "meter_noise_rel": "meter noise (±, relative)",
}

_LAST_ONLY: Final = {("a",), ("v",), ("h",)}  # "site_a" is a site, "current_a" a current
_KEY: Final = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
_UNIT_ORDER: Final = sorted(UNITS, key=len, reverse=True)


def label(key: str) -> str:
    """``"energy_delivered_kwh"`` → ``"energy delivered (kWh)"``; other keys unchanged."""
    if key in OVERRIDES:
        return OVERRIDES[key]
    if not _KEY.match(key):
        return key
    words = key.split("_")
    unit = ""
    for i in range(1, len(words)):  # never the first word: "s" or "a" may be a word there
        found = next(
            (
                u
                for u in _UNIT_ORDER
                if tuple(words[i : i + len(u)]) == u
                and (u not in _LAST_ONLY or i == len(words) - 1)
            ),
            None,
        )
        if found is not None:
            unit = UNITS[found]
            words = words[:i] + words[i + len(found) :]
            break
    text = " ".join(_ACRONYMS.get(w, w) for w in words)
    return f"{text} ({unit})" if unit else text
