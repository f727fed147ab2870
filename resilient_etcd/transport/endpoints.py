"""Endpoint addresses and per-endpoint credentials, validated at construction."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import grpc

from ..exceptions import ConfigurationError

log = logging.getLogger("resilient_etcd.tls")

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


def _check_pem(ca: bytes | None, key: bytes | None, cert: bytes | None, names: _Paths) -> None:
    """Parse the bytes as the TLS stack will, so a junk file is an error now, not a handshake failure
    at every call (grpc accepts any bytes and fails each connection later). The bytes, not the files:
    what is checked is exactly what is used, even while a file is being replaced."""
    import ssl
    import tempfile

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is not None:
        try:
            ctx.load_verify_locations(cadata=ca.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigurationError(f"ca_cert {names[0]!r} holds no PEM certificate: {exc}") from None
    if cert is not None and key is not None:
        with tempfile.TemporaryDirectory(prefix="resilient-etcd-tls-") as tmp:  # 0700: ssl loads chains from files
            cert_file, key_file = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            key_file.touch(0o600)
            key_file.write_bytes(key)
            cert_file.write_bytes(cert)
            try:
                ctx.load_cert_chain(str(cert_file), str(key_file))
            except (ssl.SSLError, ValueError) as exc:
                raise ConfigurationError(f"cert_cert {names[2]!r} / cert_key {names[1]!r}: not a PEM certificate "
                                         f"and its matching private key ({exc})") from None


_Paths = tuple[str | None, str | None, str | None]  # ca, key, cert
_Pem = tuple[bytes | None, bytes | None, bytes | None]


def _read_all(paths: _Paths) -> _Pem:
    ca_path, key_path, cert_path = paths
    return _read(ca_path, "ca_cert"), _read(key_path, "cert_key"), _read(cert_path, "cert_cert")


def digest(parts: Iterable[bytes | None]) -> bytes:
    """One SHA-256 of several secrets (None counts as absent): compared, never shown."""
    h = hashlib.sha256()
    for part in parts:
        h.update(b"-" if part is None else part)
        h.update(b"\0")
    return h.digest()


def _credentials(pem: _Pem) -> grpc.ChannelCredentials:
    ca, key, cert = pem
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


class _Rotation:
    """The certificate files behind a :class:`TlsConfig`, re-read when they change on disk (rotation:
    cert-manager, a Kubernetes secret volume, a script), for the connections dialled from then on.

    Read at each dial (three small files; dials are rare) and compared with what is in use by content, not
    by timestamps (a key rewritten in place within the file system's clock tick has the same size and
    mtime). New contents are used only when they load whole and match — a CA that parses, a certificate
    with its own private key; otherwise the previous ones stay in use, a warning says why (a half-written
    file, a certificate replaced before its key) once per content, and any later change is tried again.
    Connections already open keep their TLS session; they pick the new files up when next dialled."""

    def __init__(self, paths: _Paths, pem: _Pem, creds: grpc.ChannelCredentials) -> None:
        self.paths = paths
        self._digest = digest(pem)
        self._refused: bytes | None = None
        self._creds = creds
        self._lock = threading.Lock()
        self.reloads = 0

    def credentials(self) -> grpc.ChannelCredentials:
        with self._lock:
            try:
                pem = _read_all(self.paths)
            except ConfigurationError as e:  # a file missing for a moment (replaced by a copy, not a rename)
                self._refuse(digest([str(e).encode()]), e)
                return self._creds
            seen = digest(pem)
            if seen in (self._digest, self._refused):
                return self._creds
            try:
                _check_pem(*pem, self.paths)
            except ConfigurationError as e:
                self._refuse(seen, e)
                return self._creds
            self._creds = _credentials(pem)
            self._digest, self._refused = seen, None
            self.reloads += 1
        log.info("TLS files changed: connections dialled from now on use the new ones", extra={"event": "tls_reloaded"})
        return self._creds

    def _refuse(self, seen: bytes, why: ConfigurationError) -> None:
        """Files that do not load: the previous ones stay in use; said once per content (lock held)."""
        if seen != self._refused:
            self._refused = seen
            log.warning("TLS files changed but do not load (%s); new connections keep the previous ones until "
                        "they do", why, extra={"event": "tls_reload_refused"})


@dataclass(frozen=True, repr=False)
class TlsConfig:
    """PEM bytes as read at construction (what two clients compare to share connections); when they came
    from files, the files are followed for rotation (see :class:`_Rotation`). ``repr`` never shows key
    material."""

    ca: bytes | None
    key: bytes | None
    cert: bytes | None
    rotation: _Rotation | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        return f"TlsConfig(ca={'set' if self.ca else None}, client_cert={'set' if self.cert else None})"

    @classmethod
    def from_files(cls, ca_cert: str | None, cert_key: str | None, cert_cert: str | None) -> TlsConfig | None:
        if (cert_key is None) != (cert_cert is None):
            raise ConfigurationError("cert_key and cert_cert must be given together (client certificate and its key)")
        if ca_cert is None and cert_key is None:
            return None
        paths: _Paths = (ca_cert, cert_key, cert_cert)
        pem = _read_all(paths)
        _check_pem(*pem, paths)
        return cls(*pem, _Rotation(paths, pem, _credentials(pem)))

    def credentials(self) -> grpc.ChannelCredentials:
        """The credentials for a connection dialled now (the files' current contents, if they rotated)."""
        if self.rotation is not None:
            return self.rotation.credentials()
        return _credentials((self.ca, self.key, self.cert))
