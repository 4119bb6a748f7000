"""The LPC state machine of a controllable system (CSMS / EVSE side), as pure logic.

"Limitation of Power Consumption" (EEBus UC LPC 1.0 / VDE FNN, taken over by IEC 63380-1):
an energy guard (here gridflex) sends heartbeats and an active power consumption limit;
the controllable system keeps its consumption under that limit, and when the guard falls
silent it holds the **failsafe consumption limit** for at least the **failsafe duration**
(2 h – 24 h) before it may run unlimited again. This module owns that behaviour for one
controllable system (one EVSE): no I/O, no clock — every function takes ``now`` (a
UTC-aware datetime) and :func:`step` returns a new frozen :class:`LpcState`.

States (:class:`LpcStateName`) and what the system may draw (:func:`allowed_power_kw`):

==========================  =====================  =====================================
state                       allowed power          meaning
==========================  =====================  =====================================
``init``                    failsafe limit         after a (re)start, no guard yet
                                                   ([LPC-901/1])
``limited``                 the limit              an active limit is in force
``unlimited/controlled``    unlimited (``None``)   guard present, no active limit
``failsafe``                failsafe limit         guard lost: heartbeat timed out or
                                                   the lease ended
``unlimited/autonomous``    unlimited (``None``)   no guard for long enough: init timed
                                                   out or the failsafe duration ended
==========================  =====================  =====================================

Transitions (``hb`` = time of the last heartbeat, ``T_hb`` = heartbeat timeout, 120 s;
``T_fs`` = failsafe duration; a *write* is :class:`LimitReceived` or
:class:`LimitDeactivated`; *contact* = a write at most :data:`CONTACT_WINDOW_S` = 60 s
after a heartbeat, [LPC-TS-036]; "controlled" and "autonomous" are the two unlimited
states; a limit "cannot be applied" when it is not finite or already ended):

==========  ==============================================  ==========  =============
from        trigger                                         to          ref
==========  ==============================================  ==========  =============
init        contact + active limit that can be applied      limited     LPC-904
init        contact + limit that cannot be applied          controlled  LPC-902
init        contact + deactivated limit                     controlled  LPC-905
init        ``T_hb`` after entering init, no contact write  autonomous  LPC-906
            (a heartbeat alone is not enough)
limited     new active limit (replaces the old one)         limited     LPC-910
limited     limit that cannot be applied (ignored)          limited     LPC-907/2
limited     deactivated limit                               controlled  LPC-909
limited     the limit's duration ends (no lease)            controlled  LPC-908
limited     the limit's lease ends (at ``until``)           failsafe    gridflex lease
limited     no heartbeat for ``T_hb``, at ``hb + T_hb``     failsafe    LPC-912
controlled  active limit that can be applied                limited     LPC-910
controlled  no heartbeat for ``T_hb``, at ``hb + T_hb``     failsafe    LPC-911
failsafe    contact + active limit that can be applied      limited     LPC-919
failsafe    contact + deactivated / non-applicable limit    controlled  LPC-918/920
failsafe    ``T_fs`` after entering failsafe                autonomous  LPC-922
autonomous  contact + active limit that can be applied      limited     LPC-919
autonomous  contact + deactivated / non-applicable limit    controlled  LPC-918/920
==========  ==============================================  ==========  =============

Choices where the use case leaves room, and gridflex extensions:

* **Init never goes to failsafe.** It already holds the failsafe limit ([LPC-901/1]) and,
  per [LPC-906], leaves for ``unlimited/autonomous`` after 120 s without a heartbeat
  followed by a write (the init timeout is ``heartbeat_timeout_s``).
* **[LPC-921] is not implemented** (a *may*: leave failsafe for unlimited/autonomous when
  heartbeats come back but no write follows within 120 s). A guard that heartbeats but
  cannot compute limits must not release the fleet; failsafe ends only by a contact
  write or by the failsafe duration.
* **Leases.** A limit written with ``lease=True`` is a gridflex setpoint lease: when it
  ends without renewal the system falls back to failsafe *at* ``until`` (DESIGN.md,
  "Failure is normal"), so the failsafe duration counts from ``valid_until``. A limit with
  ``lease=False`` is an LPC limit with a duration and ends in unlimited/controlled.
* **Negative limits** are V2G setpoints in gridflex's sign convention and are applied as
  they are ([LPC-001] would refuse them). The failsafe limit is an import cap and must
  be ≥ 0. A limit "cannot be applied" when it is not finite or its ``until`` is not
  after ``now``; in a connected state it is then ignored ([LPC-907]).
* **Timed transitions happen at their deadline**, not when noticed: :func:`advance` walks
  every deadline up to ``now`` in order, so stepping late gives the same state as
  ticking often, and ``entered_at`` is the deadline itself. At equal deadlines the
  heartbeat timeout wins (failsafe, the safer side).
* **Failsafe values** (:class:`FailsafeValues`) outside ``failsafe_kw ≥ 0`` and 2–24 h
  are rejected: :func:`step` raises :class:`~aggregator.errors.InvalidInput` with every
  :class:`~aggregator.errors.Issue` and the state is unchanged. Valid values are
  accepted in ``limited`` / ``unlimited/controlled`` and, elsewhere, only with contact
  ([LPC-TS-037]); otherwise they are ignored.
* Writes in init, failsafe and unlimited/autonomous without contact are ignored
  ([LPC-TS-036]).

Invariants (property-tested): ``limited`` always has a finite ``limit_kw``; the other
states have none; in init and failsafe the allowed power is ``failsafe_kw`` ≥ 0; from a
connected state, reaching ``hb + T_hb`` without a heartbeat always means failsafe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from aggregator.errors import InvalidInput, Issue
from aggregator.pebc import is_utc

__all__ = [
    "CONNECTED",
    "CONTACT_WINDOW_S",
    "DEFAULT_FAILSAFE_DURATION_S",
    "DEFAULT_FAILSAFE_KW",
    "FAILSAFE_DURATION_MAX_S",
    "FAILSAFE_DURATION_MIN_S",
    "HEARTBEAT_TIMEOUT_S",
    "FailsafeValues",
    "Heartbeat",
    "LimitDeactivated",
    "LimitReceived",
    "LpcEvent",
    "LpcState",
    "LpcStateName",
    "Tick",
    "advance",
    "allowed_power_kw",
    "has_contact",
    "initial_state",
    "next_deadline",
    "step",
]

HEARTBEAT_TIMEOUT_S: Final = 120.0
"""No heartbeat for this long and a connected system goes to failsafe ([LPC-911/912])."""
CONTACT_WINDOW_S: Final = 60.0
"""Outside the connected states a write counts only this soon after a heartbeat."""
FAILSAFE_DURATION_MIN_S: Final = 7_200.0
FAILSAFE_DURATION_MAX_S: Final = 86_400.0
DEFAULT_FAILSAFE_DURATION_S: Final = 7_200.0
DEFAULT_FAILSAFE_KW: Final = 4.2
"""The German §14a EnWG floor, per EVSE."""


class LpcStateName(StrEnum):
    """The five LPC states of a controllable system (names as in the use case)."""

    INIT = "init"
    LIMITED = "limited"
    UNLIMITED_CONTROLLED = "unlimited/controlled"
    UNLIMITED_AUTONOMOUS = "unlimited/autonomous"
    FAILSAFE = "failsafe"


CONNECTED: Final = frozenset({LpcStateName.LIMITED, LpcStateName.UNLIMITED_CONTROLLED})
"""States in which the energy guard is known to be present (heartbeat fresh)."""


# ------------------------------------------------------------------------------ events


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The energy guard is alive (received at ``now``)."""


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passes; only timed transitions can happen."""


@dataclass(frozen=True, slots=True)
class LimitReceived:
    """A write on the active power consumption limit (kW, positive = import).

    ``until`` ends the limit (``None``: until further notice). With ``lease=True`` the end
    of the limit without renewal means failsafe (a gridflex setpoint lease); with
    ``lease=False`` it is an LPC duration and means unlimited/controlled. ``active=False``
    is a deactivation, like :class:`LimitDeactivated`.
    """

    limit_kw: float
    active: bool = True
    until: datetime | None = None
    lease: bool = False

    def problems(self, now: datetime) -> list[Issue]:
        """Why this limit cannot be applied at ``now`` (empty when it can)."""
        issues: list[Issue] = []
        if not math.isfinite(self.limit_kw):
            issues.append(Issue("limit_kw", "must be finite"))
        if self.until is not None and self.until <= now:
            issues.append(Issue("until", "must be after now (the limit already ended)"))
        return issues


@dataclass(frozen=True, slots=True)
class LimitDeactivated:
    """A write deactivating the active power consumption limit."""


@dataclass(frozen=True, slots=True)
class FailsafeValues:
    """A write of the failsafe consumption limit (kW, ≥ 0) and duration (2 h – 24 h)."""

    failsafe_kw: float
    failsafe_duration_s: float

    def validate(self) -> list[Issue]:
        issues: list[Issue] = []
        if not (math.isfinite(self.failsafe_kw) and self.failsafe_kw >= 0.0):
            issues.append(Issue("failsafe_kw", "must be finite and ≥ 0 (an import cap)"))
        if not FAILSAFE_DURATION_MIN_S <= self.failsafe_duration_s <= FAILSAFE_DURATION_MAX_S:
            issues.append(
                Issue("failsafe_duration_s", "must be between 2 h and 24 h (7200–86400 s)")
            )
        return issues


LpcEvent = Heartbeat | Tick | LimitReceived | LimitDeactivated | FailsafeValues

# ------------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class LpcState:
    """One controllable system's LPC state; build the first with :func:`initial_state`.

    ``entered_at`` is when ``state`` was entered (for a timed transition: its deadline);
    ``limit_kw``, ``limit_until`` and ``limit_is_lease`` describe the limit in force and
    are set only in ``limited``; ``last_heartbeat`` is ``None`` until the first heartbeat.
    """

    state: LpcStateName
    limit_kw: float | None
    failsafe_kw: float
    failsafe_duration_s: float
    heartbeat_timeout_s: float
    last_heartbeat: datetime | None
    entered_at: datetime
    limit_until: datetime | None = None
    limit_is_lease: bool = False


def initial_state(
    now: datetime,
    *,
    failsafe_kw: float = DEFAULT_FAILSAFE_KW,
    failsafe_duration_s: float = DEFAULT_FAILSAFE_DURATION_S,
    heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S,
) -> LpcState:
    """The state after a (re)start: ``init``, held at ``failsafe_kw``.

    Raises :class:`~aggregator.errors.InvalidInput` with every problem of the values.
    """
    issues = _time_issues("now", now)
    issues += FailsafeValues(failsafe_kw, failsafe_duration_s).validate()
    if not (math.isfinite(heartbeat_timeout_s) and heartbeat_timeout_s > 0):
        issues.append(Issue("heartbeat_timeout_s", "must be finite and > 0"))
    if issues:
        raise InvalidInput(issues)
    return LpcState(
        state=LpcStateName.INIT,
        limit_kw=None,
        failsafe_kw=float(failsafe_kw),
        failsafe_duration_s=float(failsafe_duration_s),
        heartbeat_timeout_s=float(heartbeat_timeout_s),
        last_heartbeat=None,
        entered_at=now,
    )


# --------------------------------------------------------------------------- queries


def allowed_power_kw(state: LpcState) -> float | None:
    """What the system may draw in ``state`` (kW); ``None`` means unlimited.

    Use ``allowed_power_kw(advance(state, now))`` for "now": a state does not age by itself.
    """
    s = state.state
    if s is LpcStateName.LIMITED:
        return state.limit_kw
    if s is LpcStateName.INIT or s is LpcStateName.FAILSAFE:
        return state.failsafe_kw
    return None


def has_contact(state: LpcState, now: datetime) -> bool:
    """True when a heartbeat came at most :data:`CONTACT_WINDOW_S` before ``now``."""
    hb = state.last_heartbeat
    return hb is not None and hb <= now and (now - hb).total_seconds() <= CONTACT_WINDOW_S


def next_deadline(state: LpcState) -> datetime | None:
    """When the next timed transition happens if nothing is received (``None``: never)."""
    nxt = _next_timed(state)
    return None if nxt is None else nxt[0]


# ------------------------------------------------------------------------ transitions


def advance(state: LpcState, now: datetime) -> LpcState:
    """Take every timed transition due by ``now``, each at its own deadline, in order."""
    s = state
    for _ in range(8):  # at most init/limited → controlled → failsafe → autonomous
        nxt = _next_timed(s)
        if nxt is None or now < nxt[0]:
            return s
        s = _enter(s, nxt[1], nxt[0])
    return s  # pragma: no cover - the chain above is at most four transitions long


def step(state: LpcState, event: LpcEvent, now: datetime) -> LpcState:
    """The state after ``event`` received at ``now`` (timed transitions first).

    Raises :class:`~aggregator.errors.InvalidInput` for a naive ``now`` or ``until`` and
    for failsafe values out of range; ``state`` is then unchanged (it is frozen anyway).
    """
    issues = _time_issues("now", now)
    if isinstance(event, LimitReceived) and event.until is not None:
        issues += _time_issues("until", event.until)
    if isinstance(event, FailsafeValues):
        issues += event.validate()
    if issues:
        raise InvalidInput(issues)

    s = advance(state, now)
    if isinstance(event, Tick):
        return s
    if isinstance(event, Heartbeat):
        return replace(s, last_heartbeat=now)
    if isinstance(event, FailsafeValues):
        if s.state not in CONNECTED and not has_contact(s, now):
            return s  # not evaluated without contact ([LPC-TS-037])
        s = replace(
            s,
            failsafe_kw=float(event.failsafe_kw),
            failsafe_duration_s=float(event.failsafe_duration_s),
        )
        return advance(s, now)  # a shorter duration may end a failsafe already
    return _write(s, event, now)


def _write(s: LpcState, event: LimitReceived | LimitDeactivated, now: datetime) -> LpcState:
    connected = s.state in CONNECTED
    if not connected and not has_contact(s, now):
        return s  # a write without a preceding heartbeat is not evaluated ([LPC-TS-036])
    if isinstance(event, LimitDeactivated) or not event.active:
        return _enter(s, LpcStateName.UNLIMITED_CONTROLLED, now)  # LPC-905/909/920
    if event.problems(now):
        # cannot be applied: stay when connected ([LPC-907]), else controlled ([LPC-902/918])
        return s if connected else _enter(s, LpcStateName.UNLIMITED_CONTROLLED, now)
    return _enter(
        s,
        LpcStateName.LIMITED,
        now,
        limit_kw=float(event.limit_kw),
        limit_until=event.until,
        limit_is_lease=event.lease,
    )


def _enter(
    s: LpcState,
    to: LpcStateName,
    at: datetime,
    *,
    limit_kw: float | None = None,
    limit_until: datetime | None = None,
    limit_is_lease: bool = False,
) -> LpcState:
    """``s`` in state ``to`` from ``at`` (``entered_at`` kept when the state is the same)."""
    return replace(
        s,
        state=to,
        entered_at=s.entered_at if to is s.state else at,
        limit_kw=limit_kw,
        limit_until=limit_until,
        limit_is_lease=limit_is_lease,
    )


def _next_timed(s: LpcState) -> tuple[datetime, LpcStateName] | None:
    """The next timed transition of ``s``: (deadline, target state)."""
    name = s.state
    if name is LpcStateName.UNLIMITED_AUTONOMOUS:
        return None
    if name is LpcStateName.INIT:
        return s.entered_at + timedelta(seconds=s.heartbeat_timeout_s), _AUTONOMOUS
    if name is LpcStateName.FAILSAFE:
        return s.entered_at + timedelta(seconds=s.failsafe_duration_s), _AUTONOMOUS
    seen = s.last_heartbeat if s.last_heartbeat is not None else s.entered_at
    lost = seen + timedelta(seconds=s.heartbeat_timeout_s)
    if name is LpcStateName.LIMITED and s.limit_until is not None and s.limit_until < lost:
        to = LpcStateName.FAILSAFE if s.limit_is_lease else LpcStateName.UNLIMITED_CONTROLLED
        return s.limit_until, to
    return lost, LpcStateName.FAILSAFE


_AUTONOMOUS: Final = LpcStateName.UNLIMITED_AUTONOMOUS


def _time_issues(field: str, ts: datetime) -> list[Issue]:
    return [] if is_utc(ts) else [Issue(field, "must be a UTC-aware datetime")]
