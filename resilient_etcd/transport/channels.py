"""How a pool talks to its endpoints: the channel I/O, one strategy per face.

:class:`~resilient_etcd.transport.pool.EndpointPool` (endpoints, health, leader, probes) does no I/O
of its own: it asks a :class:`Channels` object to dial an endpoint, close a channel, tell whether a
channel's transport is READY, start a call whose outcome is posted back, and make a blocking call
from a worker thread. :class:`BlockingChannels` is grpcio's blocking stack (the sync client);
``resilient_etcd.aio`` has the ``grpc.aio`` one, whose channels live on one event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import grpc

from .._proto import rpc_pb2_grpc
from .endpoints import Endpoint, TlsConfig

_READY = 2  # grpc_connectivity_state GRPC_CHANNEL_READY, as cygrpc reports it


class Stubs:
    """The generated stubs bound to one channel."""

    __slots__ = ("auth", "cluster", "kv", "lease", "maintenance", "watch")

    def __init__(self, channel: Any) -> None:
        self.kv = rpc_pb2_grpc.KVStub(channel)
        self.watch = rpc_pb2_grpc.WatchStub(channel)
        self.lease = rpc_pb2_grpc.LeaseStub(channel)
        self.cluster = rpc_pb2_grpc.ClusterStub(channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(channel)
        self.auth = rpc_pb2_grpc.AuthStub(channel)


Method = Callable[[Stubs], Any]
"""Which RPC of a channel's stubs, e.g. ``lambda s: s.maintenance.Status``."""


class Outcome(Protocol):
    """How a call started by :meth:`Channels.start` ended (a ``grpc.Future`` is one)."""

    def code(self) -> grpc.StatusCode | None: ...
    def details(self) -> str | None: ...
    def result(self) -> Any: ...


class Channels(Protocol):
    def dial(self, endpoint: Endpoint) -> Any:
        """A new channel to ``endpoint`` (a new TCP connection when first used)."""
        ...

    def stubs(self, channel: Any) -> Stubs: ...

    def close(self, channel: Any) -> None:
        """Close ``channel`` (calls on it end with CANCELLED); from any thread, never blocking."""
        ...

    def ready(self, channel: Any) -> bool:
        """Has ``channel`` a READY transport now? (True when unknown: see ``Connection.transport_ready``)"""
        ...

    def start(self, channel: Any, stubs: Stubs, method: Method, request: Any, timeout: float,
              metadata: Any, done: Callable[[Outcome], None]) -> None:
        """Start a call from any thread without blocking; ``done(outcome)`` runs when it ends (on a
        thread of the I/O's choosing: it must only hand the outcome on). Raises ValueError when the
        channel is closed."""
        ...

    def call(self, channel: Any, stubs: Stubs, method: Method, request: Any, timeout: float,
             metadata: Any) -> Any:
        """A blocking call, from a worker thread (never from the event loop of an asyncio face)."""
        ...


class BlockingChannels:
    """grpcio's blocking stack: the sync client's channels."""

    def __init__(self, tls: TlsConfig | None, options: list[tuple[str, Any]]) -> None:
        self._tls = tls
        self._options = options

    def dial(self, endpoint: Endpoint) -> grpc.Channel:
        if self._tls is not None:  # the credentials of now: certificate files that rotated are used from the next dial
            return grpc.secure_channel(endpoint.target, self._tls.credentials(), options=self._options)
        return grpc.insecure_channel(endpoint.target, options=self._options)

    def stubs(self, channel: grpc.Channel) -> Stubs:
        return Stubs(channel)

    def close(self, channel: grpc.Channel) -> None:
        channel.close()

    def ready(self, channel: grpc.Channel) -> bool:
        try:
            return bool(channel._channel.check_connectivity_state(False) == _READY)
        except (AttributeError, ValueError):  # ValueError: closed; the call itself will say so
            return True

    def start(self, channel: grpc.Channel, stubs: Stubs, method: Method, request: Any, timeout: float,
              metadata: Any, done: Callable[[Outcome], None]) -> None:
        method(stubs).future(request, timeout=timeout, metadata=metadata).add_done_callback(done)

    def call(self, channel: grpc.Channel, stubs: Stubs, method: Method, request: Any, timeout: float,
             metadata: Any) -> Any:
        return method(stubs)(request, timeout=timeout, metadata=metadata)
