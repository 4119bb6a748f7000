"""Configuration of ``gridflex edge``: a YAML file and/or the environment (``GRIDFLEX_EDGE__``
prefix, nested with ``__``; a value in the file wins over the environment), validated at
once (every problem as an Issue in one ConfigError).

Example YAML (one CSMS id, one site, two stations)::

    csms_id: csms-a
    edge_id: edge-site-1
    state_dir: /var/lib/gridflex-edge
    kafka_bootstrap: broker:9092          # empty: embedded bus (demo / tests)
    ocpp: {host: 0.0.0.0, port: 9000, security_profile: 2,
           certfile: /etc/edge/server.pem, keyfile: /etc/edge/server.key}
    sites:
      - {id: s1, feeder: f1, cap_kw: 100, stations: [cs-1, cs-2]}
    stations:
      - {id: cs-1, password: "…", max_power_kw: 22}
      - {id: cs-2, password: "…"}
"""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aggregator.errors import ConfigError, Issue
from aggregator.interfaces import DEFAULT_TOPICS, Topics

__all__ = [
    "EdgeSettings",
    "OcppSettings",
    "S2EdgeSettings",
    "SiteSettings",
    "StationSettings",
    "load_edge_settings",
]


class OcppSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(9000, ge=0, le=65535)
    security_profile: Literal[0, 1, 2, 3] = 1
    certfile: str | None = None
    keyfile: str | None = None
    cafile: str | None = None
    heartbeat_interval_s: int = Field(60, ge=1)
    voltage_v: float = Field(230.0, gt=0)
    tx_profile_s: int = Field(900, ge=60)
    deadband_kw: float = Field(0.2, ge=0)
    min_interval_s: float = Field(10.0, ge=0)
    call_timeout_s: float = Field(30.0, gt=0)
    needs_wait_s: float = Field(10.0, ge=0)
    phase_timeout_s: float = Field(5.0, gt=0)
    fcr_reserve_kw: float = Field(0.0, ge=0)


class SiteSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    feeder: str = Field(min_length=1)
    cap_kw: float = Field(ge=0)
    stations: list[str]


class StationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    password: SecretStr | None = None
    max_power_kw: float = Field(11.0, gt=0)


class S2EdgeSettings(BaseSettings):
    """The CEM's place in ``gridflex edge``: ``GRIDFLEX_EDGE__S2__PORT`` … in the environment
    and ``s2:`` in the edge's YAML file."""

    model_config = SettingsConfigDict(env_prefix="GRIDFLEX_EDGE__S2__", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(9100, ge=0, le=65535)
    instruction_s: float = Field(900.0, ge=60.0)
    deadband_kw: float = Field(0.2, ge=0.0)
    bearer_token: str | None = None
    heartbeat_s: float = Field(60.0, gt=0.0)
    certfile: str | None = None
    keyfile: str | None = None
    cafile: str | None = None

    def ssl_context(self) -> ssl.SSLContext | None:
        """``wss`` with the server certificate when ``certfile`` is set; with ``cafile`` as
        well, mutual TLS (a client certificate signed by that CA is required)."""
        if self.certfile is None:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.certfile, self.keyfile)
        if self.cafile is not None:
            ctx.load_verify_locations(self.cafile)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


class EdgeSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GRIDFLEX_EDGE__", env_nested_delimiter="__", extra="forbid"
    )

    csms_id: str = Field(min_length=1)
    edge_id: str = "edge"
    state_dir: Path = Path("./edge-state")
    kafka_bootstrap: str = ""
    telemetry_topic: str = DEFAULT_TOPICS.telemetry
    grid_signals_topic: str = DEFAULT_TOPICS.grid_signals
    setpoints_topic: str = DEFAULT_TOPICS.setpoints
    reports_topic: str = "gridflex.edge-reports"
    targets: list[str] = ["ocpp"]
    cycle_s: float = Field(1.0, gt=0)
    # /livez, /readyz, /metrics (adapters.csms.edge.health); None = no health server
    http_host: str = "127.0.0.1"
    http_port: int | None = Field(None, ge=0, le=65_535)
    buffer_max_records: int = Field(1_000_000, ge=1)
    failsafe_duration_s: float = Field(7_200.0, ge=7_200.0, le=86_400.0)
    heartbeat_timeout_s: float = Field(120.0, gt=0)
    default_failsafe_kw: float = Field(4.2, ge=0)
    ocpp: OcppSettings = OcppSettings()
    s2: S2EdgeSettings = Field(default_factory=S2EdgeSettings)  # the "s2" target's section
    sites: list[SiteSettings]
    stations: list[StationSettings] = []

    def topics(self) -> Topics:
        """The bus topics the edge reads and writes (the others keep their defaults)."""
        return dataclasses.replace(
            DEFAULT_TOPICS,
            telemetry=self.telemetry_topic,
            grid_signals=self.grid_signals_topic,
            setpoints=self.setpoints_topic,
        )

    @model_validator(mode="after")
    def _stations_known(self) -> EdgeSettings:
        known = {s.id for s in self.stations}
        placed: dict[str, str] = {}
        for site in self.sites:
            for sid in site.stations:
                if sid in placed:
                    raise ValueError(f"station {sid} is on sites {placed[sid]} and {site.id}")
                placed[sid] = site.id
        if self.ocpp.security_profile in (1, 2):
            missing = sorted(s.id for s in self.stations if s.password is None)
            if missing:
                raise ValueError(f"security profile 1/2 needs a password for {', '.join(missing)}")
        o = self.ocpp
        if o.security_profile >= 2 and not o.certfile:
            raise ValueError("security profiles 2 and 3 need ocpp.certfile (and keyfile)")
        if o.security_profile == 3 and not o.cafile:
            raise ValueError("security profile 3 needs ocpp.cafile (the stations' CA)")
        unplaced = sorted(known - set(placed))
        if unplaced:
            raise ValueError(f"stations on no site: {', '.join(unplaced)}")
        return self


def load_edge_settings(file: Path | None = None, **overrides: Any) -> EdgeSettings:
    """Environment < YAML file (optional) < ``overrides``; ConfigError lists every problem."""
    data: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError([Issue(str(file), f"cannot read: {exc}")]) from exc
        if not isinstance(loaded, dict):
            raise ConfigError([Issue(str(file), "must be a mapping")])
        data.update(loaded)
    data.update(overrides)
    try:
        return EdgeSettings(**data)
    except ValidationError as exc:
        raise ConfigError(
            [
                Issue(".".join(str(p) for p in e["loc"]) or "settings", e["msg"], code=e["type"])
                for e in exc.errors(include_url=False)
            ]
        ) from exc
