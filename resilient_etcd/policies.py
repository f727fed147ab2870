"""Keepalive, health and retry policies: frozen, validated when built, printed usefully.

>>> KeepalivePolicy(time=10, timeout=3)
KeepalivePolicy(time=10.0, timeout=3.0, permit_without_calls=False, allow_below_server_minimum=False)
>>> KeepalivePolicy(time=1)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
resilient_etcd.exceptions.ConfigurationError: KeepalivePolicy.time=1.0 s is below etcd's ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from .exceptions import ConfigurationError

ETCD_KEEPALIVE_MIN_TIME = 5.0
"""etcd's default ``--grpc-keepalive-min-time``: a client pinging more often gets GOAWAY."""


def _seconds(owner: object, name: str) -> None:
    value = getattr(owner, name)
    label = f"{type(owner).__name__}.{name}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{label} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{label} must be > 0 and finite, got {value!r}")
    object.__setattr__(owner, name, float(value))


def _count(owner: object, name: str, minimum: int = 1) -> None:
    value = getattr(owner, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{type(owner).__name__}.{name} must be an integer ≥ {minimum}, got {value!r}")


def _floats(owner: object) -> None:
    for f in fields(owner):  # type: ignore[arg-type]
        if f.type in ("float", float):
            _seconds(owner, f.name)


@dataclass(frozen=True)
class KeepalivePolicy:
    """HTTP/2 keepalive on every connection to etcd.

    ``time``: seconds between PINGs while calls are active; ``timeout``: seconds to wait for the
    PING ack before the connection is closed. grpcio also sets ``TCP_USER_TIMEOUT`` on the socket
    to ``timeout`` when keepalive is on (gRFC A18; our tests check it under strace), so
    unacknowledged data is bounded too. A PING goes out only after ``time`` without anything read
    from the connection, so a connection delivering a large response slowly is never pinged: data
    arriving is proof of life, and only a connection that went quiet is questioned.

    etcd enforces ``--grpc-keepalive-min-time`` (5 s by default) and forbids PINGs without active
    calls: a client that pings faster, or pings an idle connection, gets ``GOAWAY
    ENHANCE_YOUR_CALM``. So ``time`` below 5 s is refused unless ``allow_below_server_minimum``
    says your server permits it, and ``permit_without_calls`` defaults to off. Idle connections
    are watched by the health prober's RPCs instead (see :class:`HealthPolicy`).
    """

    time: float = 10.0
    timeout: float = 3.0
    permit_without_calls: bool = False
    allow_below_server_minimum: bool = False

    def __post_init__(self) -> None:
        _floats(self)
        if self.time < ETCD_KEEPALIVE_MIN_TIME and not self.allow_below_server_minimum:
            raise ConfigurationError(
                f"KeepalivePolicy.time={self.time} s is below etcd's --grpc-keepalive-min-time "
                f"({ETCD_KEEPALIVE_MIN_TIME:g} s): the server would answer with GOAWAY too_many_pings; "
                "pass allow_below_server_minimum=True if your server allows it"
            )

    def channel_options(self) -> list[tuple[str, int]]:
        """The grpcio channel arguments this policy stands for."""
        return [
            ("grpc.keepalive_time_ms", int(self.time * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.timeout * 1000)),
            # grpc-core (≥ 1.5x, still in 1.85) never fires the keepalive timeout by itself: an unanswered
            # PING closes the connection only after the general ping timeout (60 s by default). So that
            # "timeout" means what it says, both are set (grpc/grpc#39239).
            ("grpc.http2.ping_timeout_ms", int(self.timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", int(self.permit_without_calls)),
            ("grpc.http2.max_pings_without_data", 0),
        ]


@dataclass(frozen=True)
class HealthPolicy:
    """How endpoints are judged alive, ejected and re-admitted.

    A prober sends a cheap RPC (``Maintenance.Status``) every ``probe_interval`` on each
    endpoint's own connection — the one the traffic uses. An endpoint whose oldest unanswered
    probe is older than the *dead time* is ejected: its channel is closed (calls stuck on it
    return at once and are retried elsewhere when safe) and a fresh connection is dialled. The
    dead time is ``max(dead_after, latency_factor * slowest recent answer)``, so a slow but
    alive member (answers keep arriving) is never ejected. Half the dead time without an answer
    marks the endpoint *suspect*.

    Ejected endpoints are probed again after ``readmit_backoff`` (doubling up to
    ``readmit_backoff_max``) and re-admitted on the first answer. When every endpoint is
    ejected the client keeps trying them all and lets deadlines speak (no endpoint is
    ever excluded for good).

    Probes are sent only when they buy something. Any answer to a real call proves the connection
    alive, so a connection is probed every ``probe_interval`` only while calls are waiting on it and
    it has been quiet that long; an idle one gets a heartbeat every ``idle_probe_interval``. A busy
    client under steady traffic sends no probes at all; an idle one sends one per endpoint every
    ``idle_probe_interval`` (by default 10 s, or ``probe_interval`` if longer: 0.3 small RPCs per
    second for three endpoints).

    Defaults: a connection that hangs under a waiting call is detected within about
    ``probe_interval + dead_after`` ≈ 0.9 s; a path whose answers take up to ~0.6 s is slow, not dead.

    Writes go to the raft leader (``prefer_leader``), learnt from the probes' ``Status`` answers: one
    forwarding hop less, and no write waits on a follower for a leader that froze. When the leader's
    connection is ejected, a write waits up to ``leader_wait`` for the other members to name a new
    leader (etcd's default election timeout is 1 s, randomized up to 2 s) instead of going to a follower
    that would hold it until etcd's request timeout (7 s by default). Meanwhile a linearizable read is
    sent through another member: answered in the same raft term, it proves the leader alive (it confirmed
    the read index) and only our path to it broken, and writes go through the followers at once until
    that connection is re-admitted; so they do when the members still name the same leader after
    ``leader_wait``.

    Clients in one process that name the same endpoints (in the same order) with the same user and
    password, TLS material, channel options and health policy share one connection per endpoint and
    one health record (``share_connections``; kube-apiserver and controller managers run one client
    per resource): their probes are one client's, and a hang noticed by one is noticed for all.
    Closing one ends its own calls, watches and lease keepers; the connections close with the last.

    ``auto_sync_interval`` (seconds; None, the default, turns it off — as clientv3's ``AutoSyncInterval``):
    ask the cluster for its members (a linearizable ``MemberList``) that often and follow it — a member
    added gets a connection, a removed member's connection is closed. Endpoints are matched to members
    by the member id their answers carry, so seeds behind proxies or load balancers are kept as given.
    An answer that names no usable member, or an error, changes nothing.

    Linearizable single-key reads are *hedged* (serializable ones stay on their member, which may be
    ahead of another): one not answered within its endpoint's usual time (smoothed time plus
    four deviations of recent reads, at least ``hedge_delay_min``; None turns hedging off) is sent again
    to that endpoint and to another healthy one, and the first answer wins — so a read caught by a hang
    waits ~0.1 s, not the ~0.9 s detection takes. Hedges add at most ``hedge_max_extra`` (5 %) to the
    reads sent (a token bucket, as gRPC's retry throttling). Writes are never hedged, nor is anything on
    a client with a single endpoint (nowhere to hedge to).
    """

    probe_interval: float = 0.1
    idle_probe_interval: float = None  # type: ignore[assignment]  # None: max(10 s, probe_interval)
    dead_after: float = 0.8
    latency_factor: float = 3.0
    readmit_backoff: float = 0.2
    readmit_backoff_max: float = 5.0
    latency_window: int = 10
    prefer_leader: bool = True
    leader_wait: float = 3.0
    share_connections: bool = True
    auto_sync_interval: float | None = None
    hedge_delay_min: float | None = 0.1
    hedge_max_extra: float = 0.05

    def __post_init__(self) -> None:
        for name in ("auto_sync_interval", "hedge_delay_min"):
            if getattr(self, name) is not None:
                _seconds(self, name)
        extra = self.hedge_max_extra
        if isinstance(extra, bool) or not isinstance(extra, (int, float)) or not 0 < extra <= 1:
            raise ConfigurationError(f"HealthPolicy.hedge_max_extra must be a fraction in (0, 1], got {extra!r}")
        for flag in ("prefer_leader", "share_connections"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigurationError(f"HealthPolicy.{flag} must be True or False, got {getattr(self, flag)!r}")
        if self.idle_probe_interval is None:
            object.__setattr__(self, "idle_probe_interval", max(10.0, self.probe_interval))
        _floats(self)
        _count(self, "latency_window")
        if self.probe_interval >= self.dead_after:
            raise ConfigurationError(
                f"HealthPolicy.probe_interval ({self.probe_interval} s) must be shorter than "
                f"dead_after ({self.dead_after} s)"
            )
        if self.idle_probe_interval < self.probe_interval:
            raise ConfigurationError(
                f"HealthPolicy.idle_probe_interval ({self.idle_probe_interval} s) must be ≥ probe_interval "
                f"({self.probe_interval} s)"
            )
        if self.latency_factor < 1:
            raise ConfigurationError(f"HealthPolicy.latency_factor must be ≥ 1, got {self.latency_factor}")
        if self.readmit_backoff_max < self.readmit_backoff:
            raise ConfigurationError("HealthPolicy.readmit_backoff_max must be ≥ readmit_backoff")


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of failed calls, driven by tenacity inside the caller's deadline.

    Idempotent RPCs (reads, status, member list, lease TTL …) are retried on another endpoint on
    connection errors; mutating RPCs only when the request provably never left (no connection
    could be made). ``max_attempts`` counts the first try; None means "until the call's deadline"
    (every call has one). Waits are exponential with full jitter, from ``backoff_initial`` up to
    ``backoff_max`` seconds — short, because the wait is spent on *another* endpoint or on a
    member that is coming back, and a long wait would be the gap after it serves again.
    """

    max_attempts: int | None = None
    backoff_initial: float = 0.02
    backoff_max: float = 0.1

    def __post_init__(self) -> None:
        if self.max_attempts is not None:
            _count(self, "max_attempts")
        _seconds(self, "backoff_initial")
        _seconds(self, "backoff_max")
        if self.backoff_max < self.backoff_initial:
            raise ConfigurationError("RetryPolicy.backoff_max must be ≥ backoff_initial")


NO_RETRY = RetryPolicy(max_attempts=1)
