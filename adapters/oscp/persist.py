"""The OSCP link kept across restarts: a small JSON file (``OscpConfig.state_file``).

What a restarted FP must still know to go on without a new registration: the CP's URL and
the token gridflex uses towards it, the token gridflex issued (the CP keeps sending it),
the heartbeat interval the CP asked for, and the FALLBACK_CONSUMPTION forecasts (what holds
when the CP falls silent — possibly right after the restart). Written atomically (a
temporary file renamed over the old one) whenever one of them changes; read at start.
A file that cannot be read is ignored with a warning (a fresh link rather than a guess);
one that cannot be written is logged and the link goes on in memory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from adapters.oscp.state import State
from adapters.oscp.wire import ForecastType, GroupCapacityForecast

__all__ = ["LinkFile", "load_link", "save_link"]

log = logging.getLogger("gridflex.oscp")


class _Link(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = 1
    cp_url: str | None = None
    cp_token: str | None = None
    issued: str | None = None
    cp_interval_s: int | None = None
    fallbacks: list[GroupCapacityForecast] = []


class LinkFile:
    """``state_file`` for a provider: restores the link at start, and :meth:`keep` (the
    worker calls it every tick) writes it whenever its durable part changed."""

    def __init__(self, path: Path | None, s: State) -> None:
        self.path = path
        self._saved: object = None
        if path is not None and load_link(path, s):
            self._saved = _key(s)
            log.info("oscp: link restored from %s (CP %s)", path, s.cp_url)

    def keep(self, s: State) -> None:
        if self.path is None:
            return
        key = _key(s)
        if key != self._saved:
            save_link(self.path, s)
            self._saved = key


def _key(s: State) -> object:
    fallbacks = tuple(
        rev for (_g, t), (_fc, rev) in sorted(s.forecasts.items())
        if t is ForecastType.FALLBACK_CONSUMPTION
    )  # fmt: skip
    return (s.cp_url, s.cp_token, s.issued, s.cp_interval_s, fallbacks)


def save_link(path: Path, s: State) -> None:
    """Write the link's durable part of ``s`` to ``path`` (atomically)."""
    doc = _Link(
        cp_url=s.cp_url,
        cp_token=s.cp_token,
        issued=s.issued,
        cp_interval_s=s.cp_interval_s,
        fallbacks=[
            fc
            for (_g, t), (fc, _r) in sorted(s.forecasts.items())
            if t is ForecastType.FALLBACK_CONSUMPTION
        ],
    )
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(doc.model_dump_json(), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        log.error("oscp: cannot write the link state to %s: %s", path, exc)


def load_link(path: Path, s: State) -> bool:
    """Restore the link saved in ``path`` into ``s``; ``False`` when there is none."""
    try:
        doc = _Link.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return False
    except (OSError, ValueError, ValidationError) as exc:
        log.warning("oscp: ignoring the link state in %s: %s", path, exc)
        return False
    s.cp_url, s.cp_token, s.issued = doc.cp_url, doc.cp_token, doc.issued
    s.cp_interval_s = doc.cp_interval_s
    for fc in doc.fallbacks:
        s.revision += 1
        s.forecasts[(fc.group_id, ForecastType.FALLBACK_CONSUMPTION)] = (fc, s.revision)
    return True
