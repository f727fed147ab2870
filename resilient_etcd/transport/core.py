"""The part of a transport every face shares: sessions, the retry table, failure classification, retries.

A transport (the sync :class:`~resilient_etcd.transport.transport.Transport`, the asyncio one of
``resilient_etcd.aio``) owns a client's share of a *session* — the connections with their health
records and the auth token, shared by clients in one process that name the same endpoints with the
same credentials (an asyncio face: on the same event loop). What a failed call means, whether and
where it is retried, and what error it finally raises is decided here, once, as *steps*: a generator
that yields the I/O it needs (:class:`Invoke` a call, :class:`PickWriter` wait for a leader,
:class:`Authenticate`, :class:`Diagnose` a failed dial) and is sent each result, or thrown its error.
Each face runs the steps with its own I/O — blocking calls on the caller's thread, or awaits — so the
decisions cannot drift apart between them (the sans-I/O pattern of h11 and httpcore).
"""

from __future__ import annotations

import functools
import os
import threading
import time
import weakref
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import grpc

from .._proto import rpc_pb2
from ..balancer.retrying import deadline_gone
from ..deadlines import retries_enabled
from ..exceptions import (
    AuthenticationError,
    ClientClosedError,
    ConfigurationError,
    ConnectionFailedError,
    DeadlineExceeded,
    EndpointConfigurationError,
    EndpointsUnavailable,
)
from ..metrics import METRICS
from ..policies import HealthPolicy, KeepalivePolicy, RetryPolicy
from .channels import Channels, Stubs
from .diagnose import short
from .endpoints import Endpoint, TlsConfig, digest
from .pool import NOT_ANSWERS, Connection, EndpointPool
from .retry import (
    Failure,
    RetryableError,
    RetryClass,
    classify,
    is_hard,
    may_retry,
    retry_class,
    server_reset,
    to_exception,
)

Metadata = tuple[tuple[str, str], ...]
T = TypeVar("T")

_BASE_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.use_local_subchannel_pool", 1),     # a new channel must mean a new TCP connection
    ("grpc.max_receive_message_length", -1),    # large ranges; etcd bounds requests itself
    # gRPC's own reconnect backoff (1 s, growing to 120 s) would be the gap after a member
    # returns; ours is short. (Not grpc.min_reconnect_backoff_ms: that is the *connect timeout*,
    # and a short one never lets a handshake over a slow path complete.)
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),                 # retries are ours, inside the caller's deadline
    # No bandwidth-probe PINGs: with the ping timeout enforced (KeepalivePolicy), a probe's ack queued
    # behind a large response on a slow link would close a working connection. A fixed 16 MiB stream
    # window gives the throughput the probes found (8 MiB range at 100 ms latency: 0.21 s either way;
    # 1.8 s with the default window and no probes).
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 16 << 20),
]


def _check_user_options(options: Sequence[tuple[str, Any]], keepalive: KeepalivePolicy) -> list[tuple[str, Any]]:
    checked = []
    for item in options:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise ConfigurationError(f"grpc_options entries must be (name, value) pairs, got {item!r}")
        name, value = item
        if name == "grpc.keepalive_time_ms" and not keepalive.allow_below_server_minimum:
            KeepalivePolicy(time=value / 1000, timeout=keepalive.timeout)  # raises when below etcd's minimum
        checked.append((name, value))
    return checked


# Known bugs the robustness tests plant, to show their checks catch them. Never set outside those tests.
_PLANTED = {"retry_ambiguous_writes": False}
# a server's reset this close to a deadline is that deadline (its clock may run a little ahead of ours)
_RESET_SKEW = 0.01

# grpc's words for a call that failed while its channel was dialing (the pick or the resolver failed);
# used only to decide whether to diagnose the endpoint, never to decide a retry
_DIAL_FAILED = ("failed to connect to all addresses", "errors resolving", "dns resolution failed")


class _Unset:
    """The type of :data:`_UNSET`: "argument not given" where None means something."""


_UNSET = _Unset()





# ---- the I/O a retry needs, yielded by the steps and done by the face ----
class Invoke(NamedTuple):
    """Send the call on ``conn`` (of generation ``gen``) within ``remaining`` seconds; its answer is sent back."""
    conn: Connection
    gen: int
    remaining: float | None
    md: Metadata


class PickWriter(NamedTuple):
    """The connection for a write (``EndpointPool.pick_writer``: may wait for a leader until ``deadline``)."""
    deadline: float | None
    avoid: Connection | None


class Authenticate(NamedTuple):
    """Renew the token (``stale``: the one rejected) within ``remaining`` seconds."""
    remaining: float | None
    stale: Metadata


class Diagnose(NamedTuple):
    """A dial to ``conn`` failed: why, when waiting cannot heal it (None when it can; a handshake of our
    own of at most ``timeout`` seconds may tell)."""
    conn: Connection
    details: str
    timeout: float


Step = Invoke | PickWriter | Authenticate | Diagnose
Steps = Generator[Step, Any, T]


@dataclass
class _Retry:
    """The state of one call's retries."""
    deadline: float | None
    rclass: RetryClass
    with_token: bool
    metadata: Metadata
    current: Connection
    last: RetryableError = None  # type: ignore[assignment]  # set from the first failure before any retry
    reauthed: bool = False

    def left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()


class TransportCore:
    """Endpoints, health, auth token, failure classification and retry decisions for one client; the
    face subclassing it does the I/O (see the module docstring)."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        tls: TlsConfig | None,
        default_timeout: float | None,
        keepalive: KeepalivePolicy,
        health: HealthPolicy,
        retry: RetryPolicy,
        grpc_options: Sequence[tuple[str, Any]] = (),
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        for e in endpoints:
            if e.secure is True and tls is None:
                tls = TlsConfig(None, None, None)  # https:// with system roots
            if e.secure is False and tls is not None:
                raise ConfigurationError(f"endpoint http://{e.target} given together with TLS certificates")
        self.tls = tls
        self.default_timeout = default_timeout
        self.retry_policy = retry
        options = _BASE_OPTIONS + keepalive.channel_options() + _check_user_options(grpc_options, keepalive)
        self._closed = False
        key = _session_key(endpoints, tls, options, health, user, password) if health.share_connections else None
        if key is not None:
            key = (*key, *self._scope())
        self._session = _acquire(key, lambda: _Session(endpoints, self._channels(tls, options), health, user,
                                                       password, self._token_lock(), secure=tls is not None))
        self._release = weakref.finalize(self, _release, key, self._session)
        self.pool = self._session.pool
        self._hedge_floor = health.hedge_delay_min

    def close(self) -> None:
        """This client is done: its calls fail at once from now on; the connections close with the
        last client that shares them."""
        self._closed = True
        self._release()

    @property
    def closed(self) -> bool:
        return self._closed or self.pool.closed

    @property
    def shared_by(self) -> int:
        """How many clients use this client's connections and health records (1: none other)."""
        return self._session.users

    # ---- auth ----
    @property
    def has_credentials(self) -> bool:
        return self._session.user is not None

    @property
    def _token_md(self) -> Metadata:
        return self._session.token_md


    # ---- what a face provides ----
    def _channels(self, tls: TlsConfig | None, options: list[tuple[str, Any]]) -> Channels:
        """The channel I/O of this face's connections."""
        raise NotImplementedError

    def _token_lock(self) -> Any:
        """The lock a session's re-authentications take turns on (a thread lock, an asyncio lock)."""
        raise NotImplementedError

    def _scope(self) -> tuple[Any, ...]:
        """What else two clients must share to share connections (an asyncio face: the event loop)."""
        return ()

    def _failure_steps(self, a: _Attempt, error: BaseException, rclass: RetryClass,
                       deadline: float | None) -> Steps[RetryableError]:
        """Classify one failed attempt, feed the health machine, and decide: retry (the returned
        error) or raise. A failed dial may need a handshake of our own to tell whether waiting can heal
        it: a :class:`Diagnose` step."""
        conn = a.conn
        if self.closed:
            raise ClientClosedError(f"the client was closed; the call to {conn.name} was not completed") from error
        code: grpc.StatusCode | None = None
        if isinstance(error, grpc.RpcError):
            code, details = error.code(), error.details() or ""
            failure = classify(code, details, transport_ready=a.ready)
            if code == grpc.StatusCode.CANCELLED and a.gen != conn.generation:
                failure = Failure.EJECTED  # we closed the channel under this call
            if code == grpc.StatusCode.UNAVAILABLE and conn.permanent_error is None and (
                    not a.ready or any(m in details.lower() for m in _DIAL_FAILED)):
                # a dial failed: is it one that waiting cannot heal? (asked once until the next success; a
                # handshake of our own may be needed, bounded by what is left of the call's deadline)
                left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                if left > 0.01:
                    conn.permanent_error = yield Diagnose(conn, details, left)
            self.pool.report_failure(conn, f"{code.name}: {short(details)}", hard=is_hard(failure), generation=a.gen)
            if server_reset(code, details) and deadline is not None and time.monotonic() >= deadline - _RESET_SKEW:
                raise DeadlineExceeded(f"deadline exceeded: {conn.name} reset the call at its deadline") from error
        elif isinstance(error, ValueError) and _is_closed_channel(error):
            # proof of "never sent": grpcio refuses a call on a closed channel before creating it
            failure, details = Failure.NOT_SENT, str(error)
        else:
            raise error
        if _PLANTED["retry_ambiguous_writes"] and failure in (Failure.BROKEN, Failure.EJECTED):
            rclass = RetryClass.IDEMPOTENT  # the planted bug: a write whose outcome is unknown sent again
        if failure is Failure.AUTH_TOKEN and not self.has_credentials:
            raise AuthenticationError(f"{details} (no user/password configured) [{conn.name}]")
        if not may_retry(failure, rclass) or self.retry_policy.max_attempts == 1 or not retries_enabled():
            if failure is Failure.EJECTED:
                why = conn.health.last_error or "it stopped answering health probes"
                outcome = ("the call was abandoned" if rclass is RetryClass.IDEMPOTENT
                           else "the call may or may not have been applied and was not retried")
                raise ConnectionFailedError(
                    f"endpoint {conn.name} was ejected while the call was in flight ({why}); {outcome}") from error
            if isinstance(error, ValueError):
                raise to_exception(ConnectionFailedError(f"channel closed before the call: {error}"), conn.name)
            result = to_exception(error, conn.name)
            if failure is Failure.BROKEN and rclass is not RetryClass.IDEMPOTENT:
                # the connection broke with the request out: say what that means for a write
                result.detail_message = (f"{result.detail_message}: the connection broke with the call in flight; "
                                         "the call may or may not have been applied and was not retried")
                result.args = (result.detail_message,)
            raise result from error
        broken = self.pool.misconfigured()
        if broken is not None:
            lines = "; ".join(f"{ep}: {why}" for ep, why in broken.items())
            raise EndpointConfigurationError(f"no endpoint can work as configured: {lines}", broken) from error
        return RetryableError(failure, error, conn.name, a.token)


    # ---- retries: the same steps for every face, which does their I/O (see Steps) ----
    def _attempt_steps(self, r: _Retry) -> Steps[Any]:
        """One retry of a call: re-authenticate if the token died, choose the endpoint (off the one that
        failed; a write waits for a leader), send; a failure is classified and raised as a RetryableError."""
        remaining = r.left()
        if remaining is not None and remaining <= 0:
            raise self._out_of_time(r.last)
        if r.last.failure is Failure.AUTH_TOKEN:
            if r.reauthed:
                raise AuthenticationError(f"token rejected again after re-authentication [{r.last.endpoint}]")
            r.reauthed = True
            yield Authenticate(remaining, r.last.token)
            remaining = r.left()
            if remaining is not None and remaining <= 0:
                raise DeadlineExceeded(f"deadline exceeded during re-authentication; last error: {r.last}")
        avoid = None if r.last.failure is Failure.AUTH_TOKEN else r.current  # a stale token is not the endpoint's
        if r.rclass is RetryClass.PINNED:
            c = r.current  # an answer about, or an action on, this member: never another one
        elif r.rclass is RetryClass.MUTATION:
            c = yield PickWriter(r.deadline, avoid)
            remaining = r.left()  # the wait for a new leader used some of it
            if remaining is not None and remaining <= 0:
                raise self._out_of_time(r.last)
        else:  # move off the endpoint that failed
            c = self.pool.pick(avoid=avoid)
        g = c.generation
        METRICS.inc("retries", c.name)
        r.current = c
        ready = True if r.rclass is RetryClass.IDEMPOTENT else c.transport_ready()
        md = (self._token_md + r.metadata) if r.with_token else r.metadata
        try:
            return (yield Invoke(c, g, remaining, md))
        except (grpc.RpcError, ValueError) as e:
            r.last = yield from self._failure_steps(_Attempt(c, g, ready, md), e, r.rclass, r.deadline)
            raise r.last from e

    def _retrying_args(self, r: _Retry) -> dict[str, Any]:
        policy = self.retry_policy
        return {"backoff_initial": policy.backoff_initial, "backoff_max": policy.backoff_max,
                # (the first attempt ran outside the loop)
                "attempts": None if policy.max_attempts is None else policy.max_attempts - 1}

    def _gave_up(self, r: _Retry, e: RetryableError) -> Exception:
        """The error a call raises when its retries stopped on ``e``."""
        if deadline_gone(r.left):
            return self._out_of_time(e)
        return to_exception(e.error, e.endpoint)

    def _out_of_time(self, last: RetryableError) -> DeadlineExceeded:
        """The error for a deadline that ran out while retrying: when the endpoints were failing as
        connections (refused, unreachable, silent), :class:`EndpointsUnavailable` with one line each."""
        if last.failure not in (Failure.NOT_SENT, Failure.BROKEN, Failure.EJECTED, Failure.TIMEOUT):
            return DeadlineExceeded(f"deadline exceeded; last error: {last}")
        errors = {c.name: c.health.last_error or "no answer" for c in self.pool.conns}
        lines = "; ".join(f"{ep}: {why}" for ep, why in errors.items())
        return EndpointsUnavailable(f"deadline exceeded, no endpoint answered: {lines}", errors)

    # ---- streams ----
    def stubs(self) -> tuple[Connection, Stubs]:
        c = self.pool.pick()
        return c, c.stubs

    @property
    def token_metadata(self) -> Metadata:
        return self._token_md




class _Session:
    """What clients naming the same endpoints with the same credentials, TLS material, channel options
    and health policy share in one process: the connections with their health records (one prober's
    worth of probes), and the auth token. The password is kept here only, never shown."""

    def __init__(self, endpoints: Sequence[Endpoint], channels: Channels, health: HealthPolicy, user: str | None,
                 password: str | None, token_lock: Any, *, secure: bool) -> None:
        self.user = user
        self.__password = password
        self.token_md: Metadata = ()
        self.token_lock = token_lock
        self.users = 0
        # the channel I/O holds no reference to this object, so the pool's finalizer does not either
        self.pool = EndpointPool(endpoints, channels, health, self._probe_metadata, secure=secure)

    def _probe_metadata(self) -> Metadata:
        return self.token_md

    def auth_request(self) -> rpc_pb2.AuthenticateRequest:
        return rpc_pb2.AuthenticateRequest(name=self.user or "", password=self.__password or "")

    def __repr__(self) -> str:
        return f"_Session({[c.name for c in self.pool.conns]}, user={self.user!r}, users={self.users})"


_SESSIONS: dict[tuple[Any, ...], _Session] = {}
_SESSIONS_LOCK = threading.Lock()


def _session_key(endpoints: Sequence[Endpoint], tls: TlsConfig | None, options: list[tuple[str, Any]],
                 health: HealthPolicy, user: str | None, password: str | None) -> tuple[Any, ...]:
    """Everything that makes two clients' connections interchangeable (secrets only as a digest)."""
    pem = (tls.ca, tls.key, tls.cert) if tls is not None else ()
    secret = digest((*pem, (password or "").encode()))
    return (tuple(e.target for e in endpoints), tls is not None, repr(options), health, user, secret)


def _acquire(key: tuple[Any, ...] | None, make: Callable[[], _Session]) -> _Session:
    """The session for ``key`` (None: not shared, a new one)."""
    with _SESSIONS_LOCK:
        session = None if key is None else _SESSIONS.get(key)
        if session is None or session.pool.closed:
            session = make()
            if key is not None:
                _SESSIONS[key] = session
        session.users += 1
        return session


def _release(key: tuple[Any, ...] | None, session: _Session) -> None:
    with _SESSIONS_LOCK:
        session.users -= 1
        last = session.users == 0
        if last and key is not None and _SESSIONS.get(key) is session:
            del _SESSIONS[key]
    if last:
        session.pool.close()


def _forget_sessions() -> None:
    _SESSIONS.clear()  # a forked child starts with no connections (grpc's are not usable there)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_sessions)



class _Attempt(NamedTuple):
    """One attempt: the connection and its generation, whether its transport was READY when the
    call started (the proof a mutation's "never sent" needs), and the metadata it carried."""

    conn: Connection
    gen: int
    ready: bool
    md: Metadata

    @property
    def token(self) -> Metadata:
        return tuple(kv for kv in self.md if kv[0] == "token")


@functools.cache
def _qualified(service: str, method: str) -> str:
    return f"{_SERVICE_NAMES[service]}.{method}"


@functools.cache
def _class_of(service: str, method: str) -> RetryClass:
    """The retry table's class of ``service.method`` (stub attribute names), cached for the hot path."""
    return retry_class(_qualified(service, method))


def _rclass(name: str, idempotent: bool | None, pin: Connection | None) -> RetryClass:
    if pin is not None:
        return RetryClass.PINNED
    if idempotent is not None:
        return RetryClass.IDEMPOTENT if idempotent else RetryClass.MUTATION
    return retry_class(name)


def _answered(error: BaseException) -> bool:
    """Did the server answer (an error status of its own: proof the connection carries data)?"""
    code = getattr(error, "code", None)
    return isinstance(error, grpc.RpcError) and code is not None and code() not in NOT_ANSWERS


def _is_closed_channel(error: ValueError) -> bool:
    """grpcio's words for "this channel was closed before the call started" (unary and stream paths)."""
    text = str(error).lower()
    return "closed channel" in text or "channel closed" in text


_SERVICE_NAMES = {"kv": "KV", "watch": "Watch", "lease": "Lease", "cluster": "Cluster",
                  "maintenance": "Maintenance", "auth": "Auth"}
