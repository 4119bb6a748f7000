"""Configuration of the OSCP 2.0 Flexibility Provider: its endpoint, tokens, the Capacity
Provider, timing, and what each OSCP group id means in gridflex.

:class:`OscpConfig` is a pydantic model (``extra="forbid"``) meant to sit under the service
settings (``GRIDFLEX_OSCP__REGISTRATION_TOKEN`` …, or an ``oscp:`` section of the YAML file).

Invariants checked on construction: URLs are http(s); the CP's URL and its out-of-band token
go together (both set: gridflex registers first); the time the CP may be silent before the
fallback applies is at least two of its heartbeat intervals; group ids are 1–512 characters
and each maps to one gridflex feeder, site or the fleet, with the voltage and phase count
that turn amperes into kW.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, model_validator

__all__ = ["FP_PATH", "OscpConfig", "OscpGroup"]

FP_PATH: Final = "/oscp/fp/2.0"
"""Where the FP's endpoints live under its server (its OSCP 2.0 base URL's path)."""

Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Url = Annotated[str, StringConstraints(pattern=r"^https?://\S+$")]
Seconds = Annotated[float, Field(gt=0.0, le=86_400.0)]


class OscpGroup(BaseModel):
    """The gridflex target an OSCP group id stands for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["feeder", "site", "fleet"]
    id: Id
    voltage_v: Annotated[float, Field(gt=0.0, le=1_000.0)] = 230.0
    """Phase-to-neutral voltage: capacities in A become kW at the boundary."""
    phases: Annotated[int, Field(ge=1, le=3)] = 3
    measurements: bool = True
    """Send UpdateGroupMeasurements for this group."""


class OscpConfig(BaseModel):
    """The FP's side of one OSCP 2.0 link with one Capacity Provider."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cp_name: Id = "cp"
    """Names the CP in the limits' source (``oscp:<cp_name>``) and their event ids."""
    registration_token: SecretStr
    """Token A, handed to the CP out of band: it authenticates the CP's ``/register`` (and
    only that; after registration the CP uses the token gridflex issued to it)."""
    cp_base_url: Url | None = None
    """The CP's OSCP 2.0 base URL, for a registration gridflex starts (else learnt from
    the CP's ``/register``)."""
    cp_token: SecretStr | None = None
    """The CP's out-of-band token for its ``/register`` (with ``cp_base_url``)."""
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65_535)] = 0
    public_url: Url | None = None
    """The FP's base URL as the CP reaches it (default ``http://host:port/oscp/fp/2.0``)."""
    heartbeat_interval_s: Annotated[int, Field(ge=1, le=86_400)] = 30
    """The interval gridflex asks the CP to send heartbeats at (handshake acknowledgement)."""
    offline_after_s: Seconds = 90.0
    """Without a heartbeat for this long (or past the CP's last ``offline_mode_at``), the
    CP is offline and the FALLBACK_CONSUMPTION capacity applies."""
    degraded_after_s: Seconds | None = None
    """Without a heartbeat for this long the link is degraded and the fallback is published
    as limits starting when offline mode would begin (default 1.5 heartbeat intervals)."""
    measurement_interval_s: Seconds = 60.0
    adjust: bool = True
    """Ask for more capacity (AdjustGroupCapacityForecast) when the sessions need more
    than a CONSUMPTION block in force gives."""
    adjust_margin_kw: Annotated[float, Field(ge=0.0)] = 0.5
    groups: dict[Annotated[str, StringConstraints(min_length=1, max_length=512)], OscpGroup] = (
        Field(default_factory=dict)
    )
    priority: int = 0
    timeout_s: Seconds = 10.0
    # the link across restarts (tokens, the CP's URL, fallbacks): adapters/oscp/persist.py
    state_file: Path | None = None
    """HTTP timeout per request to the CP."""

    @property
    def source(self) -> str:
        return f"oscp:{self.cp_name}"

    @property
    def degraded_s(self) -> float:
        if self.degraded_after_s is not None:
            return self.degraded_after_s
        return 1.5 * self.heartbeat_interval_s

    @model_validator(mode="after")
    def _check(self) -> OscpConfig:
        if (self.cp_base_url is None) != (self.cp_token is None):
            raise ValueError("cp_base_url and cp_token go together")
        if self.offline_after_s < 2 * self.heartbeat_interval_s:
            raise ValueError("offline_after_s must be at least two heartbeat intervals")
        if self.degraded_s > self.offline_after_s:
            raise ValueError("degraded_after_s must not exceed offline_after_s")
        return self
