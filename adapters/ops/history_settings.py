"""Settings of the InfluxDB history sink (``GRIDFLEX_HISTORY__URL`` etc.; off when unset).

The sink speaks the InfluxDB v2 write API through ``influxdb-client``. On InfluxDB 1.8+
(the server ``scripts/influxdb.sh`` builds) the v2 API maps ``bucket`` to
``"database/retention-policy"`` (or just ``"database"``), ``token`` to ``"user:password"``
(empty when authentication is off) and ignores ``org``; on InfluxDB 2.x they mean what
they say.

Invariants: every size is positive and every period a positive number of seconds, so the
sink's queue is bounded and its thread never spins.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["HistorySettings"]


class HistorySettings(BaseModel):
    """Where history goes and how much of it may wait (``GRIDFLEX_HISTORY__...``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1, description="e.g. http://127.0.0.1:8086")
    bucket: str = "gridflex"
    org: str = "-"
    token: str = ""
    queue_size: int = Field(20_000, ge=1, description="points waiting; the oldest are dropped")
    batch_size: int = Field(2_000, ge=1, description="points per write request")
    flush_s: float = Field(1.0, gt=0, description="the writer thread wakes this often")
    sample_s: float = Field(1.0, gt=0, description="power, setpoints and caps sampled this often")
    timeout_s: float = Field(5.0, gt=0, description="one write request's timeout")
    retry_max_s: float = Field(30.0, gt=0, description="longest wait between failed writes")
