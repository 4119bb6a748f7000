"""OpenADR events → DSO limits, prices and the opt decision: pure mapping, no network.

The last section drives the VEN's event handler directly (no VTN, no thread).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from openleadr.messaging import (  # type: ignore[import-untyped, unused-ignore]
    create_message,
    parse_message,
)
from pydantic import ValidationError

from adapters.dso.audit import AuditLog, verify
from adapters.dso.intake import LimitIntake
from adapters.openadr import (
    OpenAdrConfig,
    OpenAdrTarget,
    OpenAdrVen,
    PricePoint,
    decide_opt,
    event_to_limits,
    event_to_prices,
    limit_event_id,
    price_series,
)
from aggregator.interfaces import ManualClock
from aggregator.messages import DsoLimitCancel, DsoLimitMessage
from aggregator.topology import Feeder, Site, Topology

T0 = datetime(2026, 1, 14, 17, 0, tzinfo=UTC)
NOW = T0 - timedelta(minutes=30)
F1 = OpenAdrTarget(type="feeder", id="f1", capacity_kw=60.0)
S1 = OpenAdrTarget(type="site", id="s1", capacity_kw=40.0)
NO_CAP = OpenAdrTarget(type="site", id="s2")
FLEET = OpenAdrTarget(type="fleet", id="fleet", capacity_kw=1000.0)


def config(**kw: Any) -> OpenAdrConfig:
    base: dict[str, Any] = {
        "vtn_url": "http://127.0.0.1:8080/OpenADR2/Simple/2.0b",
        "ven_name": "gridflex",
        "targets": {"feeder-f1": F1, "site-s1": S1, "site-s2": NO_CAP, "grp-a": F1},
    }
    return OpenAdrConfig(**(base | kw))


def power(scale: str = "none", unit: str = "W") -> dict[str, Any]:
    return {"name": "powerReal", "description": "RealPower", "unit": unit, "scale": scale}


def signal(
    name: str = "LOAD_DISPATCH",
    stype: str = "setpoint",
    values: tuple[float, ...] = (12.0,),
    *,
    measurement: dict[str, Any] | None = None,
    minutes: int = 10,
    dtstart: bool = True,
) -> dict[str, Any]:
    intervals = []
    for i, v in enumerate(values):
        iv: dict[str, Any] = {"duration": timedelta(minutes=minutes), "signal_payload": v}
        if dtstart:
            iv["dtstart"] = T0 + i * timedelta(minutes=minutes)
        intervals.append(iv)
    sig: dict[str, Any] = {"intervals": intervals, "signal_name": name, "signal_type": stype}
    if measurement is not None:
        sig["measurement"] = measurement
    return sig


def event(
    *signals: dict[str, Any],
    targets: list[dict[str, Any]] | None = None,
    status: str = "far",
    ramp_up: timedelta | None = None,
    tolerance: dict[str, Any] | None = None,
    event_id: str = "E1",
    **descriptor: Any,
) -> dict[str, Any]:
    sigs = list(signals) or [signal()]
    total = sum((iv["duration"] for iv in sigs[0]["intervals"]), timedelta(0))
    period: dict[str, Any] = {"dtstart": T0, "duration": total}
    if ramp_up is not None:
        period["ramp_up"] = ramp_up
    if tolerance is not None:
        period["tolerance"] = tolerance
    return {
        "event_descriptor": {
            "event_id": event_id,
            "modification_number": 0,
            "event_status": status,
            "priority": 0,
            "test_event": False,
        }
        | descriptor,
        "active_period": period,
        "event_signals": sigs,
        "targets": [{"resource_id": "feeder-f1"}] if targets is None else targets,
        "response_required": "always",
    }


def limits_of(ev: dict[str, Any], cfg: OpenAdrConfig | None = None) -> list[DsoLimitMessage]:
    out, issues = event_to_limits(ev, cfg or config(), NOW)
    assert issues == []
    assert all(isinstance(m, DsoLimitMessage) for m in out)
    return [m for m in out if isinstance(m, DsoLimitMessage)]


# ------------------------------------------------------------------ LOAD_DISPATCH


@pytest.mark.parametrize(
    ("value", "scale", "unit", "expected_kw"),
    [
        (12_000.0, "none", "W", 12.0),
        (12.0, "k", "W", 12.0),
        (0.012, "M", "W", 12.0),
    ],
)
def test_setpoint_is_converted_to_kw_from_the_item_base(
    value: float, scale: str, unit: str, expected_kw: float
) -> None:
    (lim,) = limits_of(event(signal(values=(value,), measurement=power(scale, unit))))
    assert lim.limit_kw == pytest.approx(expected_kw)
    assert (lim.target_type, lim.target_id) == ("feeder", "f1")
    assert (lim.start, lim.end) == (T0, T0 + timedelta(minutes=10))
    assert lim.event_id == "oadr:E1:s0:i0:feeder:f1" == limit_event_id("E1", 0, 0, F1)
    assert lim.source == "openadr" and lim.ts == NOW


def test_setpoint_without_item_base_uses_the_configured_default_unit() -> None:
    (lim,) = limits_of(event(signal(values=(12.0,))))
    assert lim.limit_kw == pytest.approx(12.0)
    (lim,) = limits_of(event(signal(values=(12.0,))), config(default_power_unit="MW"))
    assert lim.limit_kw == pytest.approx(12_000.0)


def test_raw_item_base_shape_left_by_openleadr_is_understood() -> None:
    sig = signal(values=(3.0,))
    sig["powerReal"] = {"item_description": "RealPower", "item_units": "W", "si_scale_code": "k"}
    (lim,) = limits_of(event(sig))
    assert lim.limit_kw == pytest.approx(3.0)


def test_power_in_another_item_base_is_an_issue() -> None:
    bad = {"name": "energyReal", "description": "RealEnergy", "unit": "Wh", "scale": "none"}
    out, issues = event_to_limits(event(signal(measurement=bad)), config(), NOW)
    assert out == []
    assert len(issues) == 1 and "powerReal" in issues[0].message


def test_delta_is_a_reduction_from_capacity_and_needs_one() -> None:
    ev = event(
        signal(stype="delta", values=(-15.0,), measurement=power("k")),
        targets=[{"resource_id": "feeder-f1"}, {"resource_id": "site-s2"}],
    )
    out, issues = event_to_limits(ev, config(), NOW)
    (lim,) = out
    assert isinstance(lim, DsoLimitMessage)
    assert lim.target_id == "f1" and lim.limit_kw == pytest.approx(45.0)
    assert len(issues) == 1
    assert "capacity_kw" in issues[0].message and "site:s2" in issues[0].ids


# --------------------------------------------------------------------------- SIMPLE


@pytest.mark.parametrize(("level", "fraction"), [(0, 1.0), (1, 0.75), (2, 0.5), (3, 0.25)])
def test_simple_levels_are_fractions_of_capacity(level: int, fraction: float) -> None:
    (lim,) = limits_of(event(signal("SIMPLE", "level", (float(level),))))
    assert lim.limit_kw == pytest.approx(fraction * 60.0)


def test_simple_levels_are_configurable_and_checked() -> None:
    cfg = config(simple_levels={0: 1.0, 1: 0.9, 2: 0.6, 3: 0.0})
    (lim,) = limits_of(event(signal("SIMPLE", "level", (3.0,))), cfg)
    assert lim.limit_kw == 0.0
    out, issues = event_to_limits(event(signal("SIMPLE", "level", (2.5,))), config(), NOW)
    assert out == [] and "SIMPLE level 2.5" in issues[0].message
    ev = event(signal("SIMPLE", "level", (1.0,)), targets=[{"resource_id": "site-s2"}])
    out, issues = event_to_limits(ev, config(), NOW)
    assert out == [] and "capacity_kw" in issues[0].message


# ------------------------------------------------------------------------- prices


def test_electricity_price_becomes_price_points_in_eur_per_mwh() -> None:
    cur = {"name": "currencyPerKWh", "description": "currencyPerKWh", "unit": "EUR"}
    ev = event(
        signal("ELECTRICITY_PRICE", "price", (0.25, 0.10), measurement=cur | {"scale": "none"})
    )
    prices, issues = event_to_prices(ev, config(), NOW)
    assert issues == []
    assert [(p.start, p.end, p.event_id) for p in prices] == [
        (T0, T0 + timedelta(minutes=10), "E1"),
        (T0 + timedelta(minutes=10), T0 + timedelta(minutes=20), "E1"),
    ]
    assert [p.price_eur_per_mwh for p in prices] == pytest.approx([250.0, 100.0])
    assert event_to_limits(ev, config(), NOW) == ([], [])  # prices are no limits, no issue
    series = price_series(prices)
    assert list(series.eur_per_mwh) == pytest.approx([250.0, 100.0])
    assert series.start_s[0] == T0.timestamp()


def test_price_in_another_currency_or_type_is_an_issue() -> None:
    usd = {
        "name": "currencyPerKWh",
        "description": "currencyPerKWh",
        "unit": "USD",
        "scale": "none",
    }
    prices, issues = event_to_prices(
        event(
            signal("ELECTRICITY_PRICE", "price", (0.2,), measurement=usd),
            signal("ELECTRICITY_PRICE", "priceRelative", (0.01,)),
        ),
        config(),
        NOW,
    )
    assert prices == []
    assert len(issues) == 2
    assert "EUR" in issues[0].message and "priceRelative" in issues[1].message
    prices, issues = event_to_prices(
        event(signal("ELECTRICITY_PRICE", "price", (0.2,))), config(), NOW
    )
    assert issues == [] and prices[0].price_eur_per_mwh == pytest.approx(200.0)  # EUR/kWh assumed


# ----------------------------------------------------------------------------- time


def test_ramp_up_moves_the_first_interval_start_earlier() -> None:
    ev = event(signal(values=(20.0, 10.0)), ramp_up=timedelta(minutes=5))
    first, second = limits_of(ev)
    assert first.start == T0 - timedelta(minutes=5)
    assert first.end == T0 + timedelta(minutes=10)
    assert (second.start, second.end) == (T0 + timedelta(minutes=10), T0 + timedelta(minutes=20))
    assert second.event_id == "oadr:E1:s0:i1:feeder:f1"


@pytest.mark.parametrize(
    "tolerance",
    [
        {"tolerate": {"startafter": timedelta(minutes=2)}},  # openleadr's parsed shape
        {"startafter": timedelta(minutes=2)},  # openleadr's object shape
    ],
)
def test_randomisation_keeps_the_earliest_start_and_the_latest_end(
    tolerance: dict[str, Any],
) -> None:
    first, second = limits_of(event(signal(values=(20.0, 10.0)), tolerance=tolerance))
    assert (first.start, first.end) == (T0, T0 + timedelta(minutes=12))
    assert (second.start, second.end) == (T0 + timedelta(minutes=10), T0 + timedelta(minutes=22))


def test_intervals_without_dtstart_follow_the_active_period() -> None:
    a, b, c = limits_of(event(signal(values=(1.0, 2.0, 3.0), minutes=5, dtstart=False)))
    assert [(x.start, x.end) for x in (a, b, c)] == [
        (T0 + timedelta(minutes=5 * i), T0 + timedelta(minutes=5 * (i + 1))) for i in range(3)
    ]


def test_open_ended_intervals_are_an_issue() -> None:
    sig = signal(values=(5.0,))
    sig["intervals"][0]["duration"] = timedelta(0)
    out, issues = event_to_limits(event(sig), config(), NOW)
    assert out == [] and "open-ended" in issues[0].message


def test_ended_windows_completed_and_test_events_give_no_limits() -> None:
    ev = event(signal(values=(20.0, 10.0)))
    out, _ = event_to_limits(ev, config(), T0 + timedelta(minutes=15))
    assert [m.event_id for m in out] == ["oadr:E1:s0:i1:feeder:f1"]
    assert event_to_limits(event(status="completed"), config(), NOW) == ([], [])
    assert event_to_limits(event(test_event=True), config(), NOW) == ([], [])
    assert len(limits_of(event(test_event=True), config(apply_test_events=True))) == 1


def test_event_priority_is_kept() -> None:
    (lim,) = limits_of(event(priority=2))
    assert lim.priority == 2
    (lim,) = limits_of(event(), config(priority=5))
    assert lim.priority == 5


# --------------------------------------------------------------------- cancellation


def test_cancelled_event_cancels_every_limit_it_announced() -> None:
    targets = [{"resource_id": "feeder-f1"}, {"group_id": "grp-a"}, {"resource_id": "site-s1"}]
    sigs = (signal(values=(20.0, 10.0)), signal("SIMPLE", "level", (1.0, 2.0)))
    announced = {m.event_id for m in limits_of(event(*sigs, targets=targets))}
    assert len(announced) == 8  # 2 signals × 2 intervals × 2 gridflex targets (f1 deduplicated)
    out, issues = event_to_limits(event(*sigs, targets=targets, status="cancelled"), config(), NOW)
    assert issues == []
    assert all(isinstance(m, DsoLimitCancel) and m.source == "openadr" for m in out)
    assert {m.event_id for m in out} == announced
    assert event_to_prices(event(*sigs, status="cancelled"), config(), NOW) == ([], [])


# -------------------------------------------------------------------------- targets


def test_unknown_target_is_an_issue_and_known_ones_still_get_limits() -> None:
    ev = event(targets=[{"resource_id": "feeder-f1"}, {"resource_id": "nowhere"}])
    out, issues = event_to_limits(ev, config(), NOW)
    assert [m.target_id for m in out if isinstance(m, DsoLimitMessage)] == ["f1"]
    assert len(issues) == 1
    assert issues[0].field == "targets.resource_id" and "'nowhere'" in issues[0].message


def test_ven_target_covers_ven_id_and_untargeted_events() -> None:
    cfg = config(ven_target=FLEET)
    (lim,) = limits_of(event(targets=[{"ven_id": "ven-7"}]), cfg)
    assert (lim.target_type, lim.target_id) == ("fleet", "fleet")
    (lim,) = limits_of(event(targets=[]), cfg)
    assert lim.target_type == "fleet"
    out, issues = event_to_limits(event(targets=[{"ven_id": "ven-7"}]), config(), NOW)
    assert out == [] and "'ven-7'" in issues[0].message
    out, issues = event_to_limits(event(targets=[]), config(), NOW)
    assert out == [] and "no target" in issues[0].message


def test_signal_targets_and_end_device_assets_are_mapped() -> None:
    sig = signal(values=(9.0,))
    sig["targets"] = [{"end_device_asset": {"mrid": "site-s1"}}]
    (lim,) = limits_of(event(sig))
    assert (lim.target_type, lim.target_id) == ("site", "s1")


# ----------------------------------------------------------------- what is refused


def test_unsupported_signals_are_issues() -> None:
    out, issues = event_to_limits(
        event(
            signal("LOAD_CONTROL", "x-loadControlCapacity", (0.5,)),
            signal("LOAD_DISPATCH", "multiplier", (0.5,)),
            signal(values=(12.0,)),
        ),
        config(),
        NOW,
    )
    assert [m.event_id for m in out] == ["oadr:E1:s2:i0:feeder:f1"]
    assert [i.field for i in issues] == ["event_signals[0]", "event_signals[1]"]
    assert "LOAD_CONTROL" in issues[0].message and "multiplier" in issues[1].message


def test_out_of_range_limits_and_malformed_events_are_issues_not_exceptions() -> None:
    out, issues = event_to_limits(
        event(signal(values=(-6.0,), measurement=power("M"))), config(), NOW
    )
    assert out == [] and issues[0].field.endswith("limit_kw")
    sig = signal(values=("twelve",))  # type: ignore[arg-type]
    out, issues = event_to_limits(event(sig), config(), NOW)
    assert out == [] and "not a number" in issues[0].message
    broken = event()
    broken["event_signals"][0]["intervals"] = [None]
    out, issues = event_to_limits(broken, config(), NOW)
    assert out == [] and issues[0].field == "event" and "malformed" in issues[0].message


# ------------------------------------------------------------------------ opt in/out


def test_decide_opt_defaults_to_in_and_opts_out_of_export_limits() -> None:
    (ok,) = limits_of(event())
    assert decide_opt([ok]) == ("optIn", "")
    assert decide_opt([]) == ("optIn", "")
    (neg,) = limits_of(event(signal(values=(-5.0,))))
    opt, reason = decide_opt([ok, neg])
    assert opt == "optOut"
    assert reason.startswith(neg.event_id) and "export" in reason


def test_decide_opt_reports_the_feasibility_reason() -> None:
    (lim,) = limits_of(event(signal(values=(2.0,))))

    def must_run(limit: DsoLimitMessage) -> str | None:
        return "below the sum of must-run loads (3 kW)" if limit.limit_kw < 3.0 else None

    assert decide_opt([lim], must_run) == (
        "optOut",
        f"{lim.event_id}: below the sum of must-run loads (3 kW)",
    )
    cancel = DsoLimitCancel(ts=NOW, event_id=lim.event_id, source="openadr")
    assert decide_opt([cancel], must_run) == ("optIn", "")


# -------------------------------------------------------------------------- config


def test_config_checks_tls_material_fingerprint_and_levels() -> None:
    fp = "aa:bb:cc:dd:ee:ff:00:11:22:33"
    assert config(vtn_fingerprint=fp).vtn_fingerprint == fp.upper()
    bad: list[dict[str, Any]] = [
        {"vtn_fingerprint": "AA:BB"},
        {"vtn_url": "https://vtn:8443/x", "cert": "ven.pem"},
        {"vtn_url": "https://vtn:8443/x", "cert": "ven.pem", "key": "ven.key"},
        {"cert": "ven.pem", "key": "ven.key", "ca": "ca.pem"},  # http:// with mutual TLS
        {"simple_levels": {4: 0.1}},
        {"simple_levels": {1: 1.5}},
        {"vtn_url": "ftp://vtn"},
        {"unknown": 1},
    ]
    for kw in bad:
        with pytest.raises(ValidationError):
            config(**kw)
    tls = config(
        vtn_url="https://vtn:8443/x", cert="/no/ven.pem", key="/no/ven.key", ca="/no/ca.pem"
    )
    assert [i.field for i in tls.file_issues()] == ["openadr.cert", "openadr.key", "openadr.ca"]


# ------------------------------------------------------ openleadr's real event dict


def test_mapping_reads_the_dict_openleadr_parses_from_the_wire() -> None:
    """The event dict shapes (ramp-up, tolerance, item base) are those of openleadr 0.5.36."""
    wire_event = {
        "event_descriptor": {
            "event_id": "W1",
            "modification_number": 0,
            "market_context": "oadr://dso",
            "event_status": "far",
            "created_date_time": NOW,
            "priority": 1,
        },
        "active_period": {
            "dtstart": T0,
            "duration": timedelta(minutes=10),
            "ramp_up_period": timedelta(minutes=3),
            "tolerance": {"startafter": timedelta(minutes=1)},
        },
        "event_signals": [
            {
                "intervals": [
                    {"dtstart": T0, "duration": timedelta(minutes=10), "signal_payload": 12.0}
                ],
                "signal_name": "LOAD_DISPATCH",
                "signal_type": "setpoint",
                "signal_id": "sig-1",
                "measurement": power("k"),
            }
        ],
        "targets": [{"resource_id": "feeder-f1"}],
        "response_required": "always",
    }
    xml = create_message("oadrDistributeEvent", request_id="r1", vtn_id="VTN", events=[wire_event])
    _, payload = parse_message(xml)
    (parsed,) = payload["events"]
    (lim,) = limits_of(parsed)
    assert lim.limit_kw == pytest.approx(12.0)
    assert lim.start == T0 - timedelta(minutes=3)
    assert lim.end == T0 + timedelta(minutes=11)
    assert lim.priority == 1


# ------------------------------------------------ the VEN's event handler, no network


class Recorder:
    def __init__(self, reject: str | None = None) -> None:
        self.sent: list[DsoLimitMessage | DsoLimitCancel] = []
        self.reject = reject

    def __call__(self, msg: DsoLimitMessage | DsoLimitCancel) -> str | None:
        self.sent.append(msg)
        return self.reject


def ven(publish: Recorder, **kw: Any) -> OpenAdrVen:
    return OpenAdrVen(
        config(), publish, measured_kw=lambda target: 0.0, clock=ManualClock(NOW), **kw
    )


def test_ven_publishes_opts_in_and_replaces_a_modified_event() -> None:
    sent = Recorder()
    v = ven(sent)
    assert v.handle_event(event(signal(values=(20.0, 10.0)))) == "optIn"
    assert [m.event_id for m in sent.sent] == [
        "oadr:E1:s0:i0:feeder:f1",
        "oadr:E1:s0:i1:feeder:f1",
    ]
    sent.sent.clear()
    modified = event(signal(values=(15.0,)), modification_number=1)
    assert v.handle_event(modified) == "optIn"
    cancel, limit = sent.sent
    assert isinstance(cancel, DsoLimitCancel) and cancel.event_id == "oadr:E1:s0:i1:feeder:f1"
    assert isinstance(limit, DsoLimitMessage) and limit.limit_kw == pytest.approx(15.0)
    decision = v.decisions["E1"]
    assert (decision.modification_number, decision.opt) == (1, "optIn")
    assert decision.limit_ids == ("oadr:E1:s0:i0:feeder:f1",)
    sent.sent.clear()
    assert v.handle_event(event(signal(values=(15.0,)), status="cancelled")) == "optIn"
    assert [(type(m), m.event_id) for m in sent.sent] == [
        (DsoLimitCancel, "oadr:E1:s0:i0:feeder:f1")
    ]
    assert v.decisions["E1"].limit_ids == ()


def test_ven_opts_out_with_the_reason_but_still_applies_what_it_understood() -> None:
    sent = Recorder()
    v = ven(
        sent,
        feasibility=lambda lim: "below the sum of must-run loads" if lim.limit_kw < 5 else None,
    )
    ev = event(signal(values=(2.0,)), targets=[{"resource_id": "feeder-f1"}, {"resource_id": "x"}])
    assert v.handle_event(ev) == "optOut"
    assert [m.event_id for m in sent.sent] == ["oadr:E1:s0:i0:feeder:f1"]  # the cap holds
    reason = v.decisions["E1"].reason
    assert "unknown OpenADR target 'x'" in reason and "below the sum of must-run loads" in reason


def test_ven_opts_out_when_the_service_rejects_or_publishing_fails() -> None:
    v = ven(Recorder(reject="unknown feeder 'f1'"))
    assert v.handle_event(event()) == "optOut"
    assert "unknown feeder 'f1'" in v.decisions["E1"].reason
    assert v.decisions["E1"].limit_ids == ()

    def broken(msg: DsoLimitMessage | DsoLimitCancel) -> None:
        raise ConnectionError("bus down")

    v = OpenAdrVen(config(), broken, measured_kw=lambda t: 0.0, clock=ManualClock(NOW))
    assert v.handle_event(event()) == "optOut"
    assert "bus down" in v.decisions["E1"].reason
    assert v.handle_event({"event_descriptor": None}) == "optOut"  # never raises


def test_ven_hands_prices_over_and_audits_limits_once_through_the_intake(tmp_path: Path) -> None:
    """Regression (issue 8.5): a limit from OpenADR was audited by the VEN and again by the
    service; now the intake audits it once and the VEN audits only its decision."""
    got: list[PricePoint] = []
    with AuditLog(tmp_path / "audit.jsonl", fsync=False) as audit:
        topology = Topology((Feeder("f1", 600.0),), (Site("s1", "f1", 150.0),))
        intake = LimitIntake(topology, lambda key, msg: None, audit=audit, clock=lambda: NOW)
        v = OpenAdrVen(
            config(),
            intake.relay,
            measured_kw=lambda target: 0.0,
            clock=ManualClock(NOW),
            audit=audit,
            on_prices=got.extend,
        )
        ev = event(signal(values=(12.0,)), signal("ELECTRICITY_PRICE", "price", (0.3,)))
        assert v.handle_event(ev) == "optIn"
    assert [p.price_eur_per_mwh for p in got] == pytest.approx([300.0])
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    kinds = [(json.loads(line)["kind"], json.loads(line)["source"]) for line in lines]
    assert kinds == [("limit.received", "openadr"), ("openadr.opt", "openadr")]
    assert verify(tmp_path / "audit.jsonl") == []


def test_public_surface_of_the_openadr_adapter() -> None:
    import adapters.openadr as openadr

    assert sorted(openadr.__all__) == [
        "Feasibility",
        "OpenAdrConfig",
        "OpenAdrTarget",
        "OpenAdrVen",
        "OptDecision",
        "OptType",
        "PricePoint",
        "VenStatus",
        "decide_opt",
        "event_to_limits",
        "event_to_prices",
        "export_ven_metrics",
        "limit_event_id",
        "price_series",
    ]


@pytest.mark.parametrize("oadr_id", ["E 1/2", "évé\nnt", "x" * 300, "a:b~c"])
def test_limit_ids_are_valid_intake_ids_whatever_the_vtn_sends(oadr_id: str) -> None:
    from adapters.dso.intake import event_id_issues

    lid = limit_event_id(oadr_id, 0, 3, F1)
    assert event_id_issues(lid) == [] and lid.startswith("oadr:")
    assert lid == limit_event_id(oadr_id, 0, 3, F1)  # stable
    assert lid != limit_event_id(oadr_id + "x", 0, 3, F1)  # distinct
