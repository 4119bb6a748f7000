"""Throwaway X.509 certificates for TLS and mutual-TLS tests (EC P-256, valid ±1 day).

Test-only: keys are unencrypted, written as PEM next to each other.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

__all__ = ["issue", "write_pem"]


def issue(
    cn: str,
    key: Any,
    issuer: x509.Name | None,
    issuer_key: Any,
    *,
    ca: bool = False,
    ip: bool = False,
) -> x509.Certificate:
    """A certificate for ``cn`` signed by ``issuer_key`` (self-signed when ``issuer`` is
    None); ``ip`` adds 127.0.0.1 as a subject alternative name (a loopback server)."""
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return b.sign(issuer_key, hashes.SHA256())


def write_pem(path: Path, cert: x509.Certificate, key: Any) -> tuple[str, str]:
    """``path``.crt and ``path``.key (PEM); their paths as strings."""
    c, k = path.with_suffix(".crt"), path.with_suffix(".key")
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(c), str(k)
