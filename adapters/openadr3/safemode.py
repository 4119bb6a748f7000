"""The VEN's safe mode: the failsafe caps of the safe-mode event, when to apply and withdraw
them, and (optionally) a file that keeps them across restarts.

:class:`SafeMode` holds the caps per gridflex target (from
:func:`~adapters.openadr3.mapping.safe_mode_caps`). :meth:`SafeMode.due` says which limits
to publish once the VTN has been unreachable for ``safe_mode_after_s`` — the caps as limits
for :data:`SAFE_MODE_HOLD` from now, and again when half of that has passed (renewal while
the outage lasts) — and :meth:`SafeMode.leave` the cancellations once it answers again.

With :attr:`~adapters.openadr3.config.OpenAdr3Config.safe_mode_file` set, the caps are
written (atomically: a temp file renamed over the old one) whenever they change and read at
start, so a VEN that starts while its VTN is unreachable still has the failsafe it last
heard. A file that cannot be read is ignored with a warning (no caps rather than a guess);
one that cannot be written is logged and the caps are kept in memory.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from adapters.openadr3.config import OpenAdr3Config, OpenAdr3Target
from adapters.openadr3.mapping import limit_id, safe_mode_limits
from aggregator.messages import DsoLimitCancel, DsoLimitMessage

__all__ = ["SAFE_MODE_HOLD", "SafeMode", "load_caps", "save_caps"]

SAFE_MODE_HOLD: Final = timedelta(hours=24)
log = logging.getLogger("gridflex.openadr3")

Caps = dict[OpenAdr3Target, float]


def load_caps(path: Path) -> Caps:
    """The caps kept in ``path`` ({} when there is no such file or it is not one of ours)."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["caps"]
        return {OpenAdr3Target(type=r["type"], id=r["id"]): float(r["kw"]) for r in rows}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("openadr3: ignoring safe-mode file %s: %s", path, exc)
        return {}


def save_caps(path: Path, caps: Caps) -> None:
    rows = [
        {"type": t.type, "id": t.id, "kw": kw}
        for t, kw in sorted(caps.items(), key=lambda kv: (kv[0].type, kv[0].id))
    ]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"caps": rows}, indent=1), encoding="utf-8")
    tmp.replace(path)


class SafeMode:
    """Failsafe caps and whether they are applied (not thread-safe: the VEN holds its lock)."""

    def __init__(self, config: OpenAdr3Config) -> None:
        self.config = config
        self.path = config.safe_mode_file
        self.caps: Caps = load_caps(self.path) if self.path is not None else {}
        self.active_until: datetime | None = None
        self._ids: set[str] = set()

    @property
    def active(self) -> bool:
        return self.active_until is not None

    def set_caps(self, caps: Caps) -> None:
        if caps == self.caps:
            return
        self.caps = dict(caps)
        if self.path is not None:
            try:
                save_caps(self.path, self.caps)
            except OSError as exc:
                log.error("openadr3: cannot write safe-mode file %s: %s", self.path, exc)

    def due(self, now: datetime, offline_s: float) -> list[DsoLimitMessage]:
        """The limits to publish now (none while the VTN is reachable or in force)."""
        if offline_s < self.config.safe_mode_after_s or not self.caps:
            return []
        if self.active_until is not None and self.active_until - now > SAFE_MODE_HOLD / 2:
            return []  # in force, not yet due for renewal
        limits = safe_mode_limits(self.caps, self.config, now, SAFE_MODE_HOLD)
        self.active_until = now + SAFE_MODE_HOLD
        self._ids = {m.event_id for m in limits}
        return limits

    def leave(self, now: datetime) -> list[DsoLimitCancel]:
        """The cancellations of what :meth:`due` published (the VTN answers again)."""
        if self.active_until is None:
            return []
        ids = self._ids | {limit_id("safe-mode", 0, t) for t in self.caps}
        self.active_until, self._ids = None, set()
        return [DsoLimitCancel(ts=now, event_id=i, source=self.config.source) for i in sorted(ids)]
