"""The fleet table's columns as named views (what callers index: ``fleet.energy_kwh[slot]``).

:class:`SlotColumns` holds the one structured array of
:data:`~aggregator.fleet.table.SLOT_DTYPE` and a cached view of each column. Every
per-slot name the fleet shows (``site``, ``active``, ``energy_kwh`` …) is a view of the
table — never a copy — so writing through it writes the table, and after the table grows
(:meth:`SlotColumns._use_table`) every name shows the new one. Views are ``capacity`` long;
only the first ``n_slots`` rows are meaningful.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["SlotColumns"]


class SlotColumns:
    """The table and its column views (a base of :class:`~aggregator.fleet.FleetState`)."""

    _n: int

    def _use_table(self, table: NDArray[np.void]) -> None:
        """Make ``table`` the storage and cache its column views (hot paths use these)."""
        self._table = table
        self._site: NDArray[np.intp] = table["site"]
        self._active: NDArray[np.bool_] = table["active"]
        self._arrival_s: NDArray[np.float64] = table["arrival_s"]
        self._departure_s: NDArray[np.float64] = table["departure_s"]
        self._last_ts_s: NDArray[np.float64] = table["last_ts_s"]
        self._last_meter_s: NDArray[np.float64] = table["last_meter_s"]
        self._energy_requested_kwh: NDArray[np.float64] = table["energy_requested_kwh"]
        self._energy_kwh: NDArray[np.float64] = table["energy_kwh"]
        self._max_power_kw: NDArray[np.float64] = table["max_power_kw"]
        self._min_power_kw: NDArray[np.float64] = table["min_power_kw"]
        self._power_kw: NDArray[np.float64] = table["power_kw"]
        self._meter_lo_kw: NDArray[np.float64] = table["meter_lo_kw"]
        self._meter_hi_kw: NDArray[np.float64] = table["meter_hi_kw"]
        self._min_charge_kw: NDArray[np.float64] = table["min_charge_kw"]
        self._phase_w: NDArray[np.float64] = table["phase_w"]

    # ------------------------------------------------------------------ columns (views)

    @property
    def table(self) -> NDArray[np.void]:
        """The rows in use (``n_slots`` rows of ``SLOT_DTYPE``), a read-only view."""
        view = self._table[: self._n]
        view.flags.writeable = False
        return view

    @property
    def site(self) -> NDArray[np.intp]:
        """Site index (into ``topology.sites``) per slot; columns are ``capacity`` long."""
        return self._site

    @property
    def min_charge_kw(self) -> NDArray[np.float64]:
        """Least charging power each session's car follows (kW; 0 or at least this)."""
        return self._min_charge_kw

    @property
    def phase_w(self) -> NDArray[np.float64]:
        """Share of each slot's power on L1, L2, L3 (``capacity × 3``)."""
        return self._phase_w

    @property
    def active(self) -> NDArray[np.bool_]:
        return self._active

    @property
    def arrival_s(self) -> NDArray[np.float64]:
        return self._arrival_s

    @property
    def departure_s(self) -> NDArray[np.float64]:
        return self._departure_s

    @property
    def last_ts_s(self) -> NDArray[np.float64]:
        return self._last_ts_s

    @property
    def last_meter_s(self) -> NDArray[np.float64]:
        return self._last_meter_s

    @property
    def energy_requested_kwh(self) -> NDArray[np.float64]:
        return self._energy_requested_kwh

    @property
    def energy_kwh(self) -> NDArray[np.float64]:
        return self._energy_kwh

    @property
    def max_power_kw(self) -> NDArray[np.float64]:
        return self._max_power_kw

    @property
    def min_power_kw(self) -> NDArray[np.float64]:
        return self._min_power_kw

    @property
    def power_kw(self) -> NDArray[np.float64]:
        return self._power_kw
