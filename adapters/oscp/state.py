"""The OSCP provider's state records: the status snapshot it reports, the link's state,
queued jobs for the CP, per-group energy registers, and what readings it needs.

Plain mutable dataclasses owned by :class:`~adapters.oscp.provider.OscpProvider` and only
touched under its lock (:class:`OscpStatus` is a frozen snapshot handed out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

from adapters.oscp.wire import ForecastType, GroupCapacityForecast

__all__ = ["Energy", "GroupReadings", "Job", "Link", "OscpStatus", "State", "utc_now"]

Link = Literal["none", "up", "degraded", "offline"]


class GroupReadings(Protocol):
    def measured_kw(self, target_id: str) -> float: ...
    def required_kw(self, target_id: str) -> float: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class OscpStatus:
    """What the provider knows about its link (a snapshot)."""

    running: bool
    registered: bool  # the CP's URL and token are known
    handshaken: bool
    link: Link
    last_heartbeat: datetime | None
    offline_mode_at: datetime | None
    fallback_active: bool
    limits: int  # CONSUMPTION (and site GENERATION) limits published and not cancelled
    counts: dict[str, int]
    recorded: tuple[str, ...]  # "group/TYPE" of forecasts kept but not applied
    rejected: tuple[str, ...]  # the newest rejections (publish, CP)


@dataclass
class Job:
    name: str
    run: Callable[[], None]
    attempts: int = 0


@dataclass
class Energy:
    since: datetime
    kwh: float = 0.0
    last_kw: float | None = None
    last_at: datetime | None = None


@dataclass
class State:
    cp_url: str | None = None
    cp_token: str | None = None
    issued: str | None = None  # the token the CP uses towards gridflex
    cp_interval_s: int | None = None  # the heartbeat interval the CP asked for
    handshake_at: datetime | None = None
    last_heartbeat: datetime | None = None
    offline_at: datetime | None = None
    forecasts: dict[tuple[str, ForecastType], tuple[GroupCapacityForecast, int]] = field(
        default_factory=dict
    )
    limit_ids: dict[str, frozenset[str]] = field(default_factory=dict)  # group[#gen] → ids
    fallback_ids: frozenset[str] = frozenset()
    fallback_active: bool = False
    asked: set[tuple[str, int, int]] = field(default_factory=set)  # group, revision, block
    revision: int = 0

    def recorded(self) -> tuple[str, ...]:
        """The ``group/TYPE`` of the forecasts kept but not applied as limits."""
        return tuple(
            sorted(
                f"{g}/{t.value}"
                for g, t in self.forecasts
                if t is not ForecastType.CONSUMPTION
                and not (t is ForecastType.GENERATION and f"{g}#gen" in self.limit_ids)
            )
        )
