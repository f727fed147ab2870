"""Endpoint addresses and per-endpoint credentials, validated at construction."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc

from ..exceptions import ConfigurationError

DEFAULT_PORT = 2379
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


@dataclass(frozen=True)
class Endpoint:
    """One etcd member address. ``secure`` is True for ``https://``, False for ``http://``,
    None when no scheme was given (the client's TLS settings decide)."""

    host: str
    port: int
    secure: bool | None = None

    @property
    def target(self) -> str:
        """The gRPC target, ``host:port`` (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return self.target


def parse_endpoint(value: str | Endpoint) -> Endpoint:
    """``host``, ``host:port``, ``[v6]:port`` or ``http(s)://host:port`` → :class:`Endpoint`.

    >>> parse_endpoint("https://10.0.0.1:2379")
    Endpoint(host='10.0.0.1', port=2379, secure=True)
    >>> parse_endpoint("etcd-0")
    Endpoint(host='etcd-0', port=2379, secure=None)
    >>> parse_endpoint("etcd-0:99999")
    Traceback (most recent call last):
    ...
    resilient_etcd.exceptions.ConfigurationError: bad endpoint 'etcd-0:99999': port must be 1-65535
    """
    if isinstance(value, Endpoint):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"bad endpoint {value!r}: expected 'host:port' or 'http(s)://host:port'")
    text = value.strip()
    secure: bool | None = None
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme not in ("http", "https"):
            raise ConfigurationError(f"bad endpoint {value!r}: scheme must be http or https, not {scheme!r}")
        secure = scheme == "https"
    else:
        text = "//" + text
    try:
        parts = urlsplit(text)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        msg = "port must be 1-65535" if "port" in str(exc).lower() else str(exc)
        raise ConfigurationError(f"bad endpoint {value!r}: {msg}") from None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigurationError(f"bad endpoint {value!r}: only scheme, host and port are allowed")
    if not host:
        raise ConfigurationError(f"bad endpoint {value!r}: no host")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOST_RE.match(host):
            raise ConfigurationError(f"bad endpoint {value!r}: {host!r} is not a valid host name") from None
    if port == 0:
        raise ConfigurationError(f"bad endpoint {value!r}: port must be 1-65535")
    return Endpoint(host=host, port=port or DEFAULT_PORT, secure=secure)


def _read(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {what} {path!r}: {exc.strerror or exc}") from None
    if not data.strip():
        raise ConfigurationError(f"{what} {path!r} is empty")
    return data


def _check_pem(ca_cert: str | None, cert_key: str | None, cert_cert: str | None) -> None:
    """Parse the files as the TLS stack will, so a junk file is an error now, not a handshake failure
    at every call (grpc accepts any bytes and fails each connection later)."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_cert is not None:
        try:
            ctx.load_verify_locations(cafile=ca_cert)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigurationError(f"ca_cert {ca_cert!r} holds no PEM certificate: {exc}") from None
    if cert_cert is not None and cert_key is not None:
        try:
            ctx.load_cert_chain(cert_cert, cert_key)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigurationError(f"cert_cert {cert_cert!r} / cert_key {cert_key!r}: not a PEM certificate and "
                                     f"its matching private key ({exc})") from None


@dataclass(frozen=True, repr=False)
class TlsConfig:
    """PEM bytes read once at construction; ``repr`` never shows key material."""

    ca: bytes | None
    key: bytes | None
    cert: bytes | None

    def __repr__(self) -> str:
        return f"TlsConfig(ca={'set' if self.ca else None}, client_cert={'set' if self.cert else None})"

    @classmethod
    def from_files(cls, ca_cert: str | None, cert_key: str | None, cert_cert: str | None) -> TlsConfig | None:
        if (cert_key is None) != (cert_cert is None):
            raise ConfigurationError("cert_key and cert_cert must be given together (client certificate and its key)")
        if ca_cert is None and cert_key is None:
            return None
        config = cls(_read(ca_cert, "ca_cert"), _read(cert_key, "cert_key"), _read(cert_cert, "cert_cert"))
        _check_pem(ca_cert, cert_key, cert_cert)
        return config

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key,
                                            certificate_chain=self.cert)
