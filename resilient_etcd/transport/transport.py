"""The path of one call: deadline → endpoint pick → gRPC → (on failure) classify → retry.

The first attempt calls grpcio directly on the caller's thread, with no retry machinery in
the way, so a healthy call costs little more than a raw stub call. Only a failed attempt enters
the tenacity loop, which retries on another endpoint when the retry table allows it, inside the
call's absolute deadline.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import grpc

from .. import deadlines
from .._proto import rpc_pb2
from ..balancer.health import State
from ..balancer.retrying import deadline_gone, make_retrying
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
from .channels import BlockingChannels, Stubs
from .diagnose import permanent_cause, short
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

# grpc's words for a call that failed while its channel was dialing (the pick or the resolver failed);
# used only to decide whether to diagnose the endpoint, never to decide a retry
_DIAL_FAILED = ("failed to connect to all addresses", "errors resolving", "dns resolution failed")


class _Unset:
    """The type of :data:`_UNSET`: "argument not given" where None means something."""


_UNSET = _Unset()


class Transport:
    """Endpoints, health, auth token and retries for one client."""

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
        self._session = _acquire(key, lambda: _Session(endpoints, tls, options, health, user, password))
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

    def authenticate(self, timeout: float | None = None, *, stale: Metadata | None = None) -> None:
        """Fetch a fresh token within ``timeout`` (and the scope), single-flight.

        ``stale``: the token metadata a call saw rejected. Threads that all saw the same token die
        wait for one ``Authenticate``; the ones that get the lock after it was renewed use the new
        token without asking again. The password never leaves this object.
        """
        budget = deadlines.call_timeout(timeout, self.default_timeout)
        end = None if budget is None else time.monotonic() + budget
        session = self._session
        if not session.token_lock.acquire(timeout=-1 if budget is None else budget):
            raise DeadlineExceeded(f"deadline exceeded waiting {budget:.3g} s for another thread's re-authentication")
        try:
            if stale is not None and session.token_md != stale:
                return  # renewed by another thread (or another client sharing the connections) while we waited
            left = None if end is None else end - time.monotonic()  # the wait for the lock used some of it
            if left is not None and left <= 0:
                raise DeadlineExceeded("deadline exceeded waiting for another thread's re-authentication")
            resp = self.unary("auth", "Authenticate", session.auth_request(), timeout=left, with_token=False)
            session.token_md = (("token", resp.token),)
            METRICS.inc("token_renewals")
        finally:
            session.token_lock.release()

    # ---- calls ----
    def unary(
        self,
        service: str,
        method: str,
        request: Any,
        *,
        timeout: float | None = None,
        idempotent: bool | None = None,
        pin: Connection | None = None,
        with_token: bool = True,
        metadata: Metadata = (),
    ) -> Any:
        """Call ``service.method`` (stub attribute names, e.g. ``"kv", "Range"``) with resilience.

        ``idempotent`` overrides the retry table (False: retry only if the request never left);
        ``pin`` sends the call to that member only (see :class:`RetryClass`). This is the hot path,
        so its first attempt is written out inline rather than going through :meth:`call`'s closure.
        """
        if self._closed:
            raise ClientClosedError(f"the client was closed; {method} was not sent")
        budget = deadlines.call_timeout(timeout, self.default_timeout)
        started = time.monotonic()
        rclass = _class_of(service, method) if idempotent is None and pin is None else \
            _rclass(_qualified(service, method), idempotent, pin)
        if rclass is RetryClass.IDEMPOTENT:  # no wait for a leader: inline pick
            conn = self.pool.pick()
        else:
            conn, budget = self._first_conn(rclass, pin, None if budget is None else started + budget, budget)
        gen = conn.generation
        # a mutation's proof of "never sent" needs the transport's state before the call (classify)
        ready = True if rclass is RetryClass.IDEMPOTENT else conn.transport_ready()
        md = (self._token_md + metadata) if with_token else metadata
        wait = budget
        # a linearizable single-key read (a serializable one may not move to a member further behind)
        hedge = self._hedge_floor is not None and method == "Range" and rclass is RetryClass.IDEMPOTENT \
            and not request.range_end and not request.serializable
        if hedge:  # cut at its endpoint's usual time and hedged, if the budget allows
            self.pool.hedges.deposit()
            delay = conn.call_times.hedge_delay(self._hedge_floor)  # type: ignore[arg-type]
            hedge = (budget is None or delay < budget) and self.pool.hedges.affordable(2)
            if hedge:
                wait = delay
        conn.begin()
        sent = time.monotonic()
        try:
            result = getattr(getattr(conn.stubs, service), method)(request, timeout=wait, metadata=md)
        except (grpc.RpcError, ValueError) as e:
            conn.end(_answered(e))
            first: BaseException = e
            if hedge and isinstance(e, grpc.RpcError) and e.code() == grpc.StatusCode.DEADLINE_EXCEEDED \
                    and (budget is None or time.monotonic() < started + budget):  # cut by us, not by the deadline
                deadline = None if budget is None else started + budget
                try:
                    return self._hedge(service, method, request, conn, deadline, md, sent)
                except _NoHedge:  # send it again on the same connection, as if it had never been cut
                    left = None if deadline is None else max(0.001, deadline - time.monotonic())
                    conn.begin()
                    try:
                        result = getattr(getattr(conn.stubs, service), method)(request, timeout=left, metadata=md)
                    except (grpc.RpcError, ValueError) as e2:
                        conn.end(_answered(e2))
                        first = e2
                    else:
                        conn.end(True)
                        return result
                except _HedgeLost as lost:  # neither copy was answered: the usual recovery, from the last
                    conn, gen, first = lost.conn, lost.gen, lost.error
        else:
            conn.end(True)
            took = time.monotonic() - sent
            if hedge:
                conn.call_times.observe(took)
            if took > self.pool.slow_call:
                conn.want_probe = True  # a slow call: the prober measures the connection against the others
            if conn.health.state is not State.HEALTHY:
                self.pool.report_success(conn, gen)
            if rclass is RetryClass.MUTATION:
                self.pool.saw_header(conn, result.header)  # the member behind conn; a newer term: a new leader
            return result

        def invoke(stubs: Stubs, left: float | None, md: Metadata) -> Any:
            return getattr(getattr(stubs, service), method)(request, timeout=left, metadata=md)

        deadline = None if budget is None else started + budget
        return self._recover(invoke, deadline, rclass, with_token, metadata, _Attempt(conn, gen, ready, md), first)

    def call(
        self,
        name: str,
        invoke: Callable[[Stubs, float | None, Metadata], T],
        *,
        timeout: float | None = None,
        idempotent: bool | None = None,
        pin: Connection | None = None,
        with_token: bool = True,
        metadata: Metadata = (),
        default_timeout: float | _Unset | None = _UNSET,
    ) -> T:
        """Run ``invoke(stubs, timeout, metadata)`` against the picked endpoint, retrying as allowed.

        ``name`` ("KV.Range") looks up the retry table unless ``idempotent`` or ``pin`` is given.
        ``invoke`` must do all of its I/O before returning (drain a stream into a list, for
        instance), so that every failure is seen here. ``default_timeout`` replaces the client's default
        (None: only ``timeout`` and the scope bound the call).
        """
        if self._closed:
            raise ClientClosedError(f"the client was closed; {name} was not sent")
        default = self.default_timeout if isinstance(default_timeout, _Unset) else default_timeout
        budget = deadlines.call_timeout(timeout, default)
        deadline = None if budget is None else time.monotonic() + budget
        rclass = _rclass(name, idempotent, pin)
        conn, budget = self._first_conn(rclass, pin, deadline, budget)
        gen = conn.generation
        ready = True if rclass is RetryClass.IDEMPOTENT else conn.transport_ready()
        md = (self._token_md + metadata) if with_token else metadata
        try:
            return self.pool.run(conn, lambda peer: invoke(peer.stubs, budget, md), generation=gen,
                                 answered=_answered)
        except (grpc.RpcError, ValueError) as e:
            first: BaseException = e
        return self._recover(invoke, deadline, rclass, with_token, metadata, _Attempt(conn, gen, ready, md), first)

    def _hedge(self, service: str, method: str, request: Any, conn: Connection, deadline: float | None,
               md: Metadata, sent: float) -> Any:
        """A read on ``conn`` was cut at its hedge delay: send it again to ``conn`` and to another healthy
        endpoint; the first answer wins and the other call is cancelled. Raises :class:`_NoHedge` when no
        hedge can be sent (the caller sends the read again on ``conn`` alone), :class:`_HedgeLost` when
        neither copy was answered."""
        conn.want_probe = True  # how slow is that connection itself? (latency-aware choice, ejection)
        self.pool.wake()
        other = self.pool.hedge_target(conn)
        left = None if deadline is None else deadline - time.monotonic()
        if other is None or (left is not None and left <= 0) or not self.pool.hedges.withdraw(2):
            raise _NoHedge
        METRICS.inc("hedges", conn.name)
        hedged_at = time.monotonic()
        done = threading.Event()
        calls: list[tuple[Connection, int, Any]] = []
        for c in (other, conn):
            gen = c.generation
            c.begin()
            try:
                f = getattr(getattr(c.stubs, service), method).future(request, timeout=left, metadata=md)
            except ValueError as e:  # closed under us (ejected): the other copy may still answer
                c.end(False)
                last: tuple[Connection, int, BaseException] = (c, gen, e)
                continue
            # every copy ends its connection's count once, winner or cancelled loser
            f.add_done_callback(functools.partial(_copy_done, c, done))
            calls.append((c, gen, f))
        try:
            pending = list(calls)
            while pending:
                done.wait()
                done.clear()
                for item in [p for p in pending if p[2].done()]:
                    pending.remove(item)
                    c, gen, f = item
                    if f.code() == grpc.StatusCode.OK:
                        if c is other:
                            METRICS.inc("hedges_won", other.name)
                            other.call_times.observe(time.monotonic() - hedged_at)
                            self.pool.hedge_won(conn, other)
                        else:  # slow but alive: its usual time grows, and reads of this size stop being cut
                            conn.call_times.observe(time.monotonic() - sent)
                        return f.result()
                    last = (c, gen, f.exception())
            raise _HedgeLost(*last)
        finally:
            for _, _, f in calls:
                if not f.done():
                    f.cancel()

    def _first_conn(self, rclass: RetryClass, pin: Connection | None, deadline: float | None,
                    budget: float | None) -> tuple[Connection, float | None]:
        """The connection for a call's first attempt, and the budget left for it: a write goes to the
        leader, and a wait for a new one (see :meth:`EndpointPool.pick_writer`) comes out of its deadline."""
        if pin is not None:
            return pin, budget
        if rclass is not RetryClass.MUTATION:
            return self.pool.pick(), budget
        conn = self.pool.pick_writer(deadline)
        if deadline is None:
            return conn, budget
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("deadline exceeded waiting for the cluster to name a new leader")
        return conn, left

    def _attempt_failed(self, a: _Attempt, error: BaseException, rclass: RetryClass,
                        deadline: float | None) -> RetryableError:
        """Classify one failed attempt, feed the health machine, and decide: retry or raise."""
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
                    conn.permanent_error = permanent_cause(conn.endpoint, self.tls is not None, details,
                                                           probe_timeout=left)
            self.pool.report_failure(conn, f"{code.name}: {short(details)}", hard=is_hard(failure), generation=a.gen)
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

    def _recover(
        self, invoke: Callable[[Stubs, float | None, Metadata], T], deadline: float | None,
        rclass: RetryClass, with_token: bool, metadata: Metadata, first_attempt: _Attempt, first: BaseException,
    ) -> T:
        last = self._attempt_failed(first_attempt, first, rclass, deadline)
        current = first_attempt.conn
        reauthed = False

        def left() -> float | None:
            return None if deadline is None else deadline - time.monotonic()

        def attempt() -> T:
            nonlocal last, current, reauthed
            remaining = left()
            if remaining is not None and remaining <= 0:
                raise self._out_of_time(last)
            if last.failure is Failure.AUTH_TOKEN:
                if reauthed:
                    raise AuthenticationError(f"token rejected again after re-authentication [{last.endpoint}]")
                reauthed = True
                self.authenticate(remaining, stale=last.token)
                remaining = left()
                if remaining is not None and remaining <= 0:
                    raise DeadlineExceeded(f"deadline exceeded during re-authentication; last error: {last}")
            avoid = None if last.failure is Failure.AUTH_TOKEN else current  # a stale token is not the endpoint's
            if rclass is RetryClass.PINNED:
                c = current  # an answer about, or an action on, this member: never another one
            elif rclass is RetryClass.MUTATION:
                c = self.pool.pick_writer(deadline, avoid=avoid)
                remaining = left()  # the wait for a new leader used some of it
                if remaining is not None and remaining <= 0:
                    raise self._out_of_time(last)
            else:  # move off the endpoint that failed
                c = self.pool.pick(avoid=avoid)
            g = c.generation
            METRICS.inc("retries", c.name)
            current = c
            ready = True if rclass is RetryClass.IDEMPOTENT else c.transport_ready()
            md = (self._token_md + metadata) if with_token else metadata
            try:
                return self.pool.run(c, lambda peer: invoke(peer.stubs, remaining, md), generation=g,
                                     answered=_answered)
            except (grpc.RpcError, ValueError) as e:
                last = self._attempt_failed(_Attempt(c, g, ready, md), e, rclass, deadline)
                raise last from e

        try:
            policy = self.retry_policy
            retrying = make_retrying(RetryableError, left, backoff_initial=policy.backoff_initial,
                                     backoff_max=policy.backoff_max,  # (the first attempt ran outside it)
                                     attempts=None if policy.max_attempts is None else policy.max_attempts - 1)
            result: T = retrying(attempt)
        except RetryableError as e:
            if deadline_gone(left):
                raise self._out_of_time(e) from e.error
            raise to_exception(e.error, e.endpoint) from e.error
        return result

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

    def __init__(self, endpoints: Sequence[Endpoint], tls: TlsConfig | None, options: list[tuple[str, Any]],
                 health: HealthPolicy, user: str | None, password: str | None) -> None:
        self.tls = tls
        self.user = user
        self.__password = password
        self.token_md: Metadata = ()
        self.token_lock = threading.RLock()
        self.users = 0
        # the dial function holds no reference to this object, so the pool's finalizer does not either
        self.pool = EndpointPool(endpoints, BlockingChannels(tls, options), health,
                                 self._probe_metadata, secure=tls is not None)

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


class _NoHedge(Exception):
    """No hedge could be sent (no other healthy endpoint, no budget, no time)."""


class _HedgeLost(Exception):
    """Neither copy of a hedged read was answered: the last failure, and where."""

    def __init__(self, conn: Connection, gen: int, error: BaseException) -> None:
        super().__init__(str(error))
        self.conn, self.gen, self.error = conn, gen, error


def _copy_done(conn: Connection, done: threading.Event, f: Any) -> None:
    """A copy of a hedged read finished (answered, failed or cancelled)."""
    code = f.code()
    conn.end(code is not None and code not in NOT_ANSWERS)
    done.set()


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
