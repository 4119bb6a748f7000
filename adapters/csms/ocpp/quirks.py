"""Per-vendor quirks of charging stations: ONE table, looked up once per station at boot.

Stations differ in what they accept (a rate unit they insist on, profiles they refuse on
EVSE 0, a smallest limit step, OCPP 2.1 features they claim but do not honour). The
endpoint never branches on a vendor name: it reads the :class:`Quirks` that
:func:`quirks_for` returns for the station's ``BootNotification`` vendor and model, and
everything vendor-specific is a field here.

Invariants: :data:`DEFAULT` is what a station without an entry gets; a table entry
matches when the vendor is equal (case-insensitive) and the model starts with the entry's
model prefix; the first match wins, so more specific entries come first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final, Literal

__all__ = ["DEFAULT", "QUIRKS", "Quirks", "quirks_for"]

RateUnit = Literal["A", "W"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Quirks:
    """What the endpoint must do differently for one vendor/model.

    ``rate_unit``: force this unit (``None``: the station's ``SmartChargingCtrlr.RateUnit``,
    else amperes). ``phases``: force the phase count (``None``: the station's
    ``EVSE.SupplyPhases``, else 3). ``limit_step``: round limits down to this step (A or W).
    ``max_profile_on_evse0``: the station accepts a ChargingStationMaxProfile on EVSE 0.
    ``tx_default_per_evse``: TxDefaultProfile per known EVSE, for a station that refuses
    one on EVSE 0 (the default, one on EVSE 0, also covers EVSEs that appear later).
    ``dynamic_profiles``: ``False`` never uses OCPP 2.1 dynamic profiles even if the
    device model claims them. ``composite_check``: ask GetCompositeSchedule after a
    profile was accepted. ``min_current_a``: the smallest current an EV follows.
    """

    rate_unit: RateUnit | None = None
    phases: int | None = None
    limit_step: float = 0.1
    max_profile_on_evse0: bool = True
    tx_default_per_evse: bool = False
    dynamic_profiles: bool = True
    composite_check: bool = True
    min_current_a: float = 6.0


DEFAULT: Final = Quirks()

QUIRKS: Final[tuple[tuple[str, str, Quirks], ...]] = (
    # (vendor, model prefix, quirks) — most specific first
    ("gridflex-sim", "reject", replace(DEFAULT, composite_check=False)),
    ("gridflex-sim", "", DEFAULT),
    ("ocpp-rpc", "", replace(DEFAULT, limit_step=1.0)),
    ("ExampleVendor", "AC-W", replace(DEFAULT, rate_unit="W", limit_step=10.0)),
    ("ExampleVendor", "", replace(DEFAULT, dynamic_profiles=False, tx_default_per_evse=True)),
)
"""The quirk table. ``ExampleVendor`` rows illustrate the format (no real vendor named)."""


def quirks_for(vendor: str, model: str) -> Quirks:
    """The quirks of a station from its BootNotification vendor name and model."""
    v = vendor.casefold()
    for name, prefix, q in QUIRKS:
        if name.casefold() == v and model.startswith(prefix):
            return q
    return DEFAULT
