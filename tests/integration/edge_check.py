"""An independent check of every charging profile the stations received.

Knows nothing of the edge's bookkeeping: it replays, per station, the profiles in arrival
order (each stamped with the simulated time it arrived) and the transactions the test ran,
and evaluates at every instant where anything changes what each site may draw:

* per EVSE with an open transaction: the TxProfile of *that* transaction while
  ``startSchedule ≤ t < startSchedule + duration``, else the TxDefaultProfile (the EVSE's
  own, else EVSE 0's); converted to kW with the profile's unit and phase count;
* ``strict``: Σ over the site's charging EVSEs ≤ cap;
* ``physical``: Σ over the site's stations of min(ChargingStationMaxProfile, Σ EVSEs)
  ≤ cap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

VOLTAGE_V = 230.0


def kw(sched: dict[str, Any]) -> float:
    p = sched["charging_schedule_period"][0]
    lim = float(p.get("limit", 0.0))
    if sched["charging_rate_unit"] == "W":
        return lim / 1000.0
    return lim * VOLTAGE_V * int(p.get("number_phases", 3)) / 1000.0


def _t(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


@dataclass
class StationLog:
    site_id: str
    profiles: list[tuple[datetime, int, dict[str, Any]]] = field(default_factory=list)
    # (evse, transaction id, start, end or None)
    transactions: list[tuple[int, str, datetime, datetime | None]] = field(default_factory=list)


def violations(
    stations: dict[str, StationLog], caps: dict[str, float], tol_kw: float = 1e-6
) -> list[str]:
    times: set[datetime] = set()
    for log in stations.values():
        for at, _e, p in log.profiles:
            times.add(at)
            if p["charging_profile_purpose"] == "TxProfile":
                sch = p["charging_schedule"][0]
                if "start_schedule" in sch and "duration" in sch:
                    times.add(_t(sch["start_schedule"]) + timedelta(seconds=sch["duration"]))
        for _e, _tx, a, b in log.transactions:
            times.add(a)
            if b is not None:
                times.add(b)
    out: list[str] = []
    for t in sorted(times):
        strict: dict[str, float] = {}
        phys: dict[str, float] = {}
        for log in stations.values():
            seen = [(e, p) for at, e, p in log.profiles if at <= t]
            max_kw = float("inf")
            default: dict[int, float] = {}
            tx: dict[int, dict[str, Any]] = {}
            for e, p in seen:
                purpose = p["charging_profile_purpose"]
                if purpose == "ChargingStationMaxProfile":
                    max_kw = kw(p["charging_schedule"][0])
                elif purpose == "TxDefaultProfile":
                    default[e] = kw(p["charging_schedule"][0])
                elif purpose == "TxProfile":
                    tx[e] = p
            total = 0.0
            for e, txid, a, b in log.transactions:
                if not (a <= t and (b is None or t < b)):
                    continue
                lim = default.get(e, default.get(0, float("inf")))
                p = tx.get(e)
                if p is not None and p.get("transaction_id") == txid:
                    sch = p["charging_schedule"][0]
                    start = _t(sch["start_schedule"])
                    if start <= t < start + timedelta(seconds=sch["duration"]):
                        lim = kw(sch)
                total += lim
            strict[log.site_id] = strict.get(log.site_id, 0.0) + total
            phys[log.site_id] = phys.get(log.site_id, 0.0) + min(total, max_kw)
        for site, cap in caps.items():
            if strict.get(site, 0.0) > cap + tol_kw:
                out.append(
                    f"{t.isoformat()} site {site}: charging EVSEs may draw "
                    f"{strict[site]:.3f} kW > cap {cap}"
                )
            if phys.get(site, 0.0) > cap + tol_kw:
                out.append(
                    f"{t.isoformat()} site {site}: stations may draw {phys[site]:.3f} kW "
                    f"> cap {cap}"
                )
    return out
