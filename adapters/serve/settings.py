"""Configuration of ``gridflex serve``: environment (``GRIDFLEX_`` prefix, nested with
``__``) or a YAML file, validated by pydantic-settings; and the site registry file.

Example environment::

    GRIDFLEX_TOPOLOGY=/etc/gridflex/topology.yaml
    GRIDFLEX_KAFKA__BOOTSTRAP=127.0.0.1:9092
    GRIDFLEX_KAFKA__GROUP_ID=gridflex
    GRIDFLEX_KAFKA__CLIENT=confluent        # or kafka-python
    GRIDFLEX_KAFKA__PARTITIONS=6            # for the topics created at start
    GRIDFLEX_HTTP_PORT=8080
    GRIDFLEX_SERVICE__RESERVE_KW=500

Without ``GRIDFLEX_KAFKA__BOOTSTRAP`` the service runs on the embedded in-process bus.
The topology file lists feeders and sites::

    feeders:
      - {id: f1, limit_kw: 600}
    sites:
      - {id: s1, feeder: f1, connection_limit_kw: 150, csms: csms-a}
"""

from __future__ import annotations

import dataclasses
import math
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, get_type_hints

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from adapters.openadr.config import OpenAdrConfig
from adapters.openadr3.config import OpenAdr3Config
from adapters.ops.history_settings import HistorySettings
from adapters.oscp.config import OscpConfig
from adapters.stream.settings import KafkaSettings
from aggregator.errors import ConfigError, Issue
from aggregator.service.replica import ServiceConfig
from aggregator.topology import Feeder, Site, Topology

__all__ = [
    "ApiSettings",
    "KafkaSettings",
    "ServeSettings",
    "ServiceSettings",
    "load_feeder_models",
    "load_settings",
    "load_topology",
]


# ServiceConfig fields that are not settings: the awarded reserve per block comes from the
# market's award (``gridflex market``), not from the environment; a replica started from
# settings holds the constant ``reserve_kw``.
NOT_SETTINGS = frozenset({"reserve_schedule"})


def _settable() -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(ServiceConfig) if f.name not in NOT_SETTINGS]


def _service_fields() -> dict[str, Any]:
    hints = get_type_hints(ServiceConfig)
    out: dict[str, Any] = {}
    for f in _settable():
        factory = f.default_factory
        default = factory() if callable(factory) else f.default
        out[f.name] = (hints[f.name], default)
    return out


class _ServiceBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def config(self) -> ServiceConfig:
        return ServiceConfig(**{f.name: getattr(self, f.name) for f in _settable()})


# Every field of the service's own config, with its defaults: one source of truth, so a new
# ServiceConfig option is settable from the environment (GRIDFLEX_SERVICE__<NAME>) at once.
ServiceSettings = create_model(
    "ServiceSettings",
    __base__=_ServiceBase,
    __doc__="The ServiceConfig fields, as settings.",
    **_service_fields(),
)


# The values of the settings file being loaded by load_settings (a source *below* the
# environment, so that ``GRIDFLEX_...`` variables override the file).
_FILE_VALUES: ContextVar[dict[str, Any] | None] = ContextVar("gridflex_settings_file", default=None)


class ApiSettings(BaseModel):
    """The REST API beside the service (``GRIDFLEX_API__PORT`` etc.).

    ``tokens`` are ``{sha256, dso, areas: [feeder ids or "*"], scopes: [...]}`` entries:
    only the SHA-256 of each bearer token is configured, never the token itself.
    """

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8443, ge=0, le=65535)
    tokens: list[dict[str, Any]] = []
    certfile: Path | None = None
    keyfile: Path | None = None
    client_ca: Path | None = None  # set: clients must present a certificate (mutual TLS)
    audit_log: Path | None = None


class ServeSettings(BaseSettings):
    """Precedence: keyword arguments, then ``GRIDFLEX_`` environment variables, then the
    YAML file given to :func:`load_settings`, then the defaults (nested models merge
    field by field, so ``GRIDFLEX_KAFKA__GROUP_ID`` overrides only the file's group id)."""

    model_config = SettingsConfigDict(
        env_prefix="GRIDFLEX_", env_nested_delimiter="__", extra="forbid"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        file_values = _FILE_VALUES.get()
        if file_values:
            sources.append(InitSettingsSource(settings_cls, init_kwargs=file_values))
        return (*sources, dotenv_settings, file_secret_settings)

    topology: Path
    kafka: KafkaSettings | None = None
    api: ApiSettings | None = None
    openadr: OpenAdrConfig | None = None  # an OpenADR 2.0b VEN beside the service
    openadr3: OpenAdr3Config | None = None  # an OpenADR 3.1 VEN beside the service
    oscp: OscpConfig | None = None  # an OSCP 2.0 flexibility provider beside the service
    audit_log: Path | None = None  # limits received/cancelled and fallbacks, hash-chained
    history: HistorySettings | None = None  # InfluxDB history (GRIDFLEX_HISTORY__URL); off
    service: ServiceSettings = ServiceSettings()
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    log_format: Literal["json", "console"] = "json"
    log_level: str = "INFO"
    tick_s: float = Field(1.0, gt=0)


def _issues(exc: ValidationError) -> list[Issue]:
    return [Issue(".".join(str(p) for p in e["loc"]) or "settings", e["msg"]) for e in exc.errors()]


def load_settings(file: Path | None = None, **overrides: Any) -> ServeSettings:
    """Settings from a YAML file (optional), overridden by the environment, overridden by
    ``overrides``; every problem is reported at once as a :class:`ConfigError`."""
    data: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError([Issue(str(file), f"cannot read: {exc}")]) from exc
        if not isinstance(loaded, dict):
            raise ConfigError([Issue(str(file), "must be a mapping")])
        data.update(loaded)
    token = _FILE_VALUES.set(data)
    try:
        settings = ServeSettings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_issues(exc)) from exc
    finally:
        _FILE_VALUES.reset(token)
    # the service's own rules (e.g. reserve_kw ≥ 0), checked now rather than at start-up
    issues = [
        dataclasses.replace(i, field=f"service.{i.field}")
        for i in settings.service.config().validate()
    ]
    if issues:
        raise ConfigError(issues)
    return settings


def load_feeder_models(path: Path) -> dict[str, str]:
    """Feeder id → grid model spec (a feeder's optional ``model`` key in the topology
    file: a SimBench code, ``pandapower:NAME`` or a pandapower JSON path)."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out: dict[str, str] = {}
    for f in doc.get("feeders") or []:
        if isinstance(f, dict) and f.get("model") and f.get("id") is not None:
            spec = str(f["model"])
            if spec.endswith(".json") and not Path(spec).is_absolute():
                spec = str(path.parent / spec)
            out[str(f["id"])] = spec
    return out


def load_topology(path: Path) -> Topology:
    """Feeders and sites from a YAML/JSON file; every problem is reported at once."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError([Issue(str(path), f"cannot read: {exc}")]) from exc
    issues: list[Issue] = []
    if not isinstance(doc, dict):
        raise ConfigError([Issue(str(path), "must be a mapping with feeders and sites")])

    def entries(key: str) -> list[Any]:
        value = doc.get(key) or []
        if isinstance(value, list):
            return value
        issues.append(Issue(key, "must be a list"))
        return []

    feeders: list[Feeder] = []
    for i, f in enumerate(entries("feeders")):
        try:
            feeders.append(Feeder(str(f["id"]), float(f["limit_kw"]), str(f.get("name", ""))))
        except (KeyError, TypeError, ValueError, AttributeError):
            issues.append(Issue(f"feeders[{i}]", "needs id and limit_kw"))
    sites: list[Site] = []
    for i, s in enumerate(entries("sites")):
        try:
            sites.append(
                Site(
                    str(s["id"]),
                    str(s["feeder"]),
                    float(s["connection_limit_kw"]),
                    s.get("bus"),
                    str(s.get("csms", "csms")),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            issues.append(Issue(f"sites[{i}]", "needs id, feeder and connection_limit_kw"))
    fleet = doc.get("fleet_limit_kw")
    fleet_kw = math.inf
    if fleet is not None:
        try:
            fleet_kw = float(fleet)
        except (TypeError, ValueError):
            issues.append(Issue("fleet_limit_kw", f"must be a number, got {fleet!r}"))
    topo = Topology(tuple(feeders), tuple(sites), fleet_kw)
    issues.extend(topo.validate())
    if issues:
        raise ConfigError(issues)
    return topo
