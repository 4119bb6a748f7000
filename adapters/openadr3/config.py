"""Configuration of the OpenADR 3.1 VEN: the VTN, OAuth 2.0 client credentials, targets.

:class:`OpenAdr3Config` is a pydantic model (``extra="forbid"``) meant to sit under the
service settings (``GRIDFLEX_OPENADR3__VTN_URL`` …, or an ``openadr3:`` section of the YAML
file). Invariants checked on construction: the VTN URL is http(s); a webhook subscription
names the loopback (or other) host and port it listens on; the safe-mode grace is at least
two poll intervals (one missed poll never trips it); target keys are OpenADR 3 target
strings (1–128 characters).

Target keys are the plain strings OpenADR 3 events carry in ``targets`` (the VTN shows a VEN
only the targets it was given), each mapped to one gridflex feeder, site or the fleet. An
event without targets means :attr:`OpenAdr3Config.ven_target`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, model_validator

__all__ = ["OpenAdr3Config", "OpenAdr3Target"]

Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Seconds = Annotated[float, Field(gt=0.0, le=86_400.0)]


class OpenAdr3Target(BaseModel):
    """The gridflex target an OpenADR 3 target string stands for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["feeder", "site", "fleet"]
    id: Id
    report: bool = True
    """Report USAGE, BASELINE and regulation available for it (as a report resource)."""


class OpenAdr3Config(BaseModel):
    """Where the VTN is, how the VEN authenticates, and what OpenADR 3 targets mean."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vtn_url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$")]
    """Base URL of the VTN's REST API, e.g. ``https://vtn.example/openadr3/3.1.0``."""
    client_id: Id
    client_secret: SecretStr
    token_url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$")] | None = None
    """OAuth 2.0 token endpoint; ``None``: ask the VTN (``GET /auth/server``)."""
    ven_name: Id
    """The VEN object's name; created at start when the VTN has none for this client."""
    program_names: tuple[Id, ...] = ()
    """Programs to follow (by ``programName``); empty: every program the VEN can see."""
    poll_interval_s: Seconds = 30.0
    """How often programs and events are read (also while a subscription delivers)."""
    subscription: Literal["none", "websocket", "webhook"] = "websocket"
    """Push on top of polling: the VTN's websocket notifier, or a webhook (callback) the
    VEN serves on ``callback_host:callback_port``; polling always goes on beside it."""
    callback_host: str = "127.0.0.1"
    callback_port: Annotated[int, Field(ge=0, le=65_535)] = 0
    """Port of the webhook callback (0: any free port)."""
    callback_url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$")] | None = None
    """URL the VTN should call (default ``http://callback_host:port/openadr3/notify``)."""
    report_interval_s: Seconds = 60.0
    """How often USAGE, BASELINE and regulation reports are sent for active events."""
    safe_mode_event_name: Id = "SAFE_MODE"
    """``eventName`` of the safe-mode event: its limits are the failsafe, applied only
    while the VTN is unreachable."""
    safe_mode_after_s: Seconds = 120.0
    """Without a successful exchange with the VTN for this long, the safe-mode limits are
    applied (until the VTN answers again)."""
    safe_mode_file: Path | None = None
    """Where the last safe-mode caps are kept (JSON), so that a VEN starting while its VTN
    is unreachable still has them; ``None``: memory only."""
    targets: dict[Id, OpenAdr3Target] = Field(default_factory=dict)
    """OpenADR 3 target string → gridflex target."""
    ven_target: OpenAdr3Target | None = None
    """What an event without targets stands for (the VEN as a whole)."""
    priority: int = 0
    """Priority given to the limits (OpenADR's event priority is kept when it is set)."""
    source: Id = "openadr3"
    timeout_s: Seconds = 10.0
    """HTTP timeout per request to the VTN and its token endpoint."""

    @model_validator(mode="after")
    def _check(self) -> OpenAdr3Config:
        if self.safe_mode_after_s < 2 * self.poll_interval_s:
            raise ValueError("safe_mode_after_s must be at least two poll intervals")
        if self.subscription == "webhook" and not self.callback_host:
            raise ValueError("a webhook subscription needs callback_host")
        return self
