"""Throw-away certificates for TLS test clusters (CA, server, client), made with ``cryptography``."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    ca_key: Path  # to issue more client certificates (rotation tests)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
    )
    path.chmod(0o600)


def make_certs(directory: Path, ips: list[str], client_cn: str = "root") -> CertFiles:
    """A CA and a server certificate valid for ``ips`` and ``localhost``, plus a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _self_signed_ca("resilient-etcd test CA")

    sans: list[x509.GeneralName] = [x509.DNSName("localhost")]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    server, server_key = _leaf(ca, ca_key, "etcd", ExtendedKeyUsageOID.SERVER_AUTH, sans)
    client, client_key = _leaf(ca, ca_key, client_cn, ExtendedKeyUsageOID.CLIENT_AUTH, [])

    files = CertFiles(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
        ca_key=directory / "ca-key.pem",
    )
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    files.client_cert.write_bytes(client.public_bytes(serialization.Encoding.PEM))
    _write_key(server_key, files.server_key)
    _write_key(client_key, files.client_key)
    _write_key(ca_key, files.ca_key)
    return files


def issue_client_cert(files: CertFiles, cn: str = "root",
                      valid_for: dt.timedelta = dt.timedelta(days=2)) -> tuple[bytes, bytes]:
    """A new client certificate from the test CA: ``(certificate PEM, private key PEM)``; ``valid_for``
    from now (a short one expires during a test: a connection dialled with it afterwards is refused)."""
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    cert, key = _leaf(ca, ca_key, cn, ExtendedKeyUsageOID.CLIENT_AUTH, [], valid_for)
    return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def other_ca() -> bytes:
    """An unrelated CA certificate (PEM): appended to a CA file, it makes a bundle (a CA rotation's first step)."""
    return _self_signed_ca("resilient-etcd next CA")[0].public_bytes(serialization.Encoding.PEM)


def _self_signed_ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    now = dt.datetime.now(dt.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return ca, key


def _leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, cn: str, usage: x509.ObjectIdentifier,
          sans: list[x509.GeneralName], valid_for: dt.timedelta = dt.timedelta(days=2),
          ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    now = dt.datetime.now(dt.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + valid_for)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_jwt_keys(directory: Path) -> tuple[Path, Path]:
    """An ES256 key pair for etcd's ``--auth-token jwt,...``: ``(private key, public key)`` PEM files."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    priv, pub = directory / "jwt.key", directory / "jwt.pub"
    _write_key(key, priv)
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub
