"""What both faces of the client are made of before any I/O: python-etcd3's constructor arguments,
checked; the transport built from them; and the few answers that need no call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import deadlines
from .etcd import paging, shapes
from .etcd.transactions import Transactions
from .exceptions import ConfigurationError
from .policies import HealthPolicy, KeepalivePolicy, RetryPolicy
from .transport.core import TransportCore
from .transport.endpoints import Endpoint, TlsConfig, parse_endpoint
from .transport.pool import Connection, EndpointStatus

DEFAULT_TIMEOUT = 10.0
"""Seconds a call may take when neither a scope nor ``timeout`` says otherwise (python-etcd3 has none)."""


class ClientBase:
    """python-etcd3's ``etcd3.client(...)`` arguments, checked, and the face's transport
    (:attr:`_transport_class`) made from them; :meth:`_started` is the face's own set-up."""

    _transport_class: type[TransportCore]

    def __init__(
        self,
        host: str = "localhost",
        port: int | str = 2379,
        ca_cert: str | None = None,
        cert_key: str | None = None,
        cert_cert: str | None = None,
        timeout: float | None = None,
        user: str | None = None,
        password: str | None = None,
        grpc_options: Sequence[tuple[str, Any]] | None = None,
        *,
        endpoints: Sequence[str | Endpoint] | None = None,
        keepalive: KeepalivePolicy | None = None,
        health: HealthPolicy | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._endpoints = shapes.parse_endpoints(host, port, endpoints)
        self.timeout = deadlines.validate_timeout("timeout", timeout) or DEFAULT_TIMEOUT
        shapes.check_client_args(user, password, keepalive, health, retry)
        self._user = user
        self.transactions = Transactions()
        health = health or HealthPolicy()
        self._pages = paging.PageSizer(page_time=health.dead_after / 4)  # a probe waits behind one page at most
        self._transport = self._transport_class(
            self._endpoints, tls=TlsConfig.from_files(ca_cert, cert_key, cert_cert), default_timeout=self.timeout,
            keepalive=keepalive or KeepalivePolicy(), health=health, retry=retry or RetryPolicy(),
            grpc_options=list(grpc_options or ()), user=user, password=password)
        self._started()

    def _started(self) -> None:
        """The face's own set-up, once the transport exists."""

    def __repr__(self) -> str:
        eps = ", ".join(e.target for e in self._endpoints)
        auth = f", user={self._user!r}" if self._user else ""
        tls = ", tls=True" if self._transport.tls else ""
        return f"{type(self).__name__}(endpoints=[{eps}], timeout={self.timeout:g}{auth}{tls})"

    def endpoint_health(self) -> list[EndpointStatus]:
        """One record per endpoint: state, whether active, latency, failures, ejections, last error."""
        return self._transport.pool.status()

    @property
    def uses_secure_channel(self) -> bool:
        """True when the client speaks TLS to its endpoints."""
        return self._transport.tls is not None

    def _member_conn(self, endpoint: str | None) -> Connection:
        """The connection a per-member operation is pinned to: ``endpoint`` (as given to the client),
        or the member in use."""
        if endpoint is None:
            return self._transport.pool.pick()
        target = parse_endpoint(endpoint).target
        for c in self._transport.pool.conns:
            if c.name == target:
                return c
        raise ConfigurationError(f"{endpoint!r} is not one of this client's endpoints "
                                 f"({', '.join(c.name for c in self._transport.pool.conns)})")
