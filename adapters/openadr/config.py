"""Configuration of the OpenADR 2.0b VEN: the VTN, TLS material, and what targets mean.

:class:`OpenAdrConfig` is a pydantic model (``extra="forbid"``) meant to sit under the
service settings (``GRIDFLEX_OPENADR__VTN_URL`` …, or an ``openadr:`` section of the YAML
file). Invariants checked on construction: cert and key go together; mutual TLS needs the CA
of the VTN and an ``https://`` URL; the VTN fingerprint is OpenADR's form (the last 10 bytes
of the certificate's SHA-256, upper-case hex pairs joined by ``:``); SIMPLE levels are 0–3
with fractions in [0, 1]. Whether the files exist is checked when the VEN starts
(:meth:`OpenAdrConfig.file_issues`), so a configuration can be validated anywhere.

Target keys are OpenADR target *values* — resource ids, group ids or names, venIDs, party
ids, end-device-asset mRIDs — each mapped to one gridflex feeder, site or the fleet.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from aggregator.errors import Issue

__all__ = ["OpenAdrConfig", "OpenAdrTarget"]

_FINGERPRINT: Final = re.compile(r"^([0-9A-F]{2}:){9}[0-9A-F]{2}$")

Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]


# ------------------------------------------------------------------------- configuration


class OpenAdrTarget(BaseModel):
    """The gridflex target an OpenADR target stands for, and its capacity (kW)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["feeder", "site", "fleet"]
    id: Id
    capacity_kw: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None
    """Basis for ``SIMPLE`` levels and ``LOAD_DISPATCH`` deltas (e.g. the feeder rating)."""
    report: bool = True
    """Offer a TELEMETRY_USAGE report with this OpenADR id as the resource id."""


class OpenAdrConfig(BaseModel):
    """The VEN: where its VTN is, how it authenticates, and what OpenADR targets mean."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vtn_url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$")]
    """E.g. ``https://vtn.example:8443/OpenADR2/Simple/2.0b``."""
    ven_name: Id
    ven_id: Id | None = None
    """A venID provisioned out of band; ``None``: the VTN assigns one at registration."""
    poll_interval_s: Annotated[float, Field(gt=0.0, le=86_400.0)] | None = None
    """Override of the VTN's requested poll frequency (``None``: use the VTN's)."""
    report_interval_s: Annotated[float, Field(gt=0.0, le=86_400.0)] = 60.0
    """Sampling (and reporting) interval offered for TELEMETRY_USAGE."""
    registration_retry_s: Annotated[float, Field(gt=0.0)] | None = 30.0
    """Wait before registering again after a failure; ``None``: try once. Doubles after
    each consecutive failure, up to ``registration_backoff_max_s``."""
    registration_backoff_max_s: Annotated[float, Field(gt=0.0)] = 300.0
    """Longest wait between registration attempts (exponential backoff cap)."""
    max_failed_exchanges: Annotated[int, Field(ge=1, le=100)] = 3
    """Consecutive exchanges the VTN answers with an error status (or not at all) after
    which a registration counts as lost and is started over."""
    cert: Path | None = None
    """PEM client certificate: TLS client auth and XML signatures of outgoing messages."""
    key: Path | None = None
    key_passphrase: SecretStr | None = None
    ca: Path | None = None
    """PEM CA bundle that the VTN's TLS certificate must chain to."""
    vtn_fingerprint: str | None = None
    """OpenADR fingerprint of the VTN's signing certificate (``AA:BB:…``, 10 bytes);
    when set, every incoming message must carry a valid XML signature by that certificate."""
    check_hostname: bool = True
    targets: dict[str, OpenAdrTarget] = Field(default_factory=dict)
    """OpenADR target value (resource id, group id, venID …) → gridflex target."""
    ven_target: OpenAdrTarget | None = None
    """What the VEN as a whole stands for (events targeted at its venID, or untargeted)."""
    simple_levels: dict[int, Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=lambda: {0: 1.0, 1: 0.75, 2: 0.5, 3: 0.25}
    )
    """SIMPLE level → fraction of the target's ``capacity_kw``."""
    default_power_unit: Literal["W", "kW", "MW"] = "kW"
    """Unit of LOAD_DISPATCH values that carry no item base."""
    price_currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "EUR"
    apply_test_events: bool = False
    priority: int = 0
    """Priority given to the limits (OpenADR's event priority is kept when it is set)."""
    source: Id = "openadr"

    @field_validator("vtn_fingerprint")
    @classmethod
    def _fingerprint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().upper()
        if not _FINGERPRINT.match(value):
            raise ValueError("must be 10 colon-separated hex bytes (AA:BB:…:JJ)")
        return value

    @field_validator("simple_levels")
    @classmethod
    def _levels(cls, value: dict[int, float]) -> dict[int, float]:
        extra = sorted(set(value) - {0, 1, 2, 3})
        if extra:
            raise ValueError(f"SIMPLE levels are 0–3; got {extra}")
        return value

    @model_validator(mode="after")
    def _tls(self) -> OpenAdrConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")
        if self.cert is not None and self.ca is None:
            raise ValueError("mutual TLS (cert/key) needs the ca that signs the VTN certificate")
        if self.cert is not None and not self.vtn_url.startswith("https://"):
            raise ValueError("cert/key are for mutual TLS: vtn_url must be https://")
        return self

    def file_issues(self) -> list[Issue]:
        """Certificate, key and CA files that cannot be read (checked when the VEN starts)."""
        issues: list[Issue] = []
        for name in ("cert", "key", "ca"):
            path: Path | None = getattr(self, name)
            if path is not None and not path.is_file():
                issues.append(Issue(f"openadr.{name}", f"no such file: {path}"))
        return issues
