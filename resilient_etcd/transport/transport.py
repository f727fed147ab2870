"""The path of one call: deadline → endpoint pick → gRPC → (on failure) classify → retry.

The first attempt calls grpcio directly on the caller's thread, with no retry machinery in
the way, so a healthy call costs little more than a raw stub call. Only a failed attempt enters
the tenacity loop, which retries on another endpoint when the retry table allows it, inside the
call's absolute deadline.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from .. import deadlines
from .._steps import drive
from ..balancer.health import State
from ..balancer.retrying import make_retrying
from ..exceptions import ClientClosedError, DeadlineExceeded
from ..metrics import METRICS
from .channels import BlockingChannels, Channels, Stubs
from .core import (
    _BASE_OPTIONS,
    _PLANTED,
    _RESET_SKEW,
    _UNSET,
    Authenticate,
    Invoke,
    Metadata,
    PickWriter,
    Step,
    Steps,
    T,
    TransportCore,
    _answered,
    _Attempt,
    _class_of,
    _qualified,
    _rclass,
    _Retry,
    _session_key,
    _Unset,
)
from .diagnose import permanent_cause
from .endpoints import TlsConfig
from .pool import NOT_ANSWERS, Connection
from .retry import RetryableError, RetryClass, server_reset

__all__ = ["_BASE_OPTIONS", "_PLANTED", "Metadata", "Transport", "_session_key"]

# (module globals: an enum member's lookup through its class is the dearer one on the hot path)
_HEALTHY = State.HEALTHY
_MUTATION = RetryClass.MUTATION
_IDEMPOTENT = RetryClass.IDEMPOTENT


class Transport(TransportCore):
    """Endpoints, health, auth token and retries for one client: the blocking face."""

    def _channels(self, tls: TlsConfig | None, options: list[tuple[str, Any]]) -> Channels:
        return BlockingChannels(tls, options)

    def _token_lock(self) -> Any:
        return threading.RLock()

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
        if rclass is _IDEMPOTENT:  # no wait for a leader: HealthDriver.pick, inline while the one in use is usable
            conn = self.pool.balancer.active
            if not conn.health.usable:
                conn = self.pool.pick()
        else:
            conn, budget = self._first_conn(rclass, pin, None if budget is None else started + budget, budget)
        gen = conn.generation
        # a mutation's proof of "never sent" needs the transport's state before the call (classify)
        ready = True if rclass is _IDEMPOTENT else conn.transport_ready()
        md = (self._token_md + metadata) if with_token else metadata
        wait = budget
        # a linearizable single-key read (a serializable one may not move to a member further behind)
        # (one endpoint: nothing to hedge to; a silent connection with calls out is the prober's to check)
        hedge = self._hedge_floor is not None and method == "Range" and rclass is _IDEMPOTENT \
            and len(self.pool.balancer.peers) > 1 and not request.range_end and not request.serializable
        if hedge:  # cut at its endpoint's usual time and hedged, if the budget allows
            self.pool.hedges.deposit()
            delay = conn.call_times.hedge_delay(self._hedge_floor)  # type: ignore[arg-type]
            hedge = (budget is None or delay < budget) and self.pool.hedges.affordable(2)
            if hedge:
                wait = delay
        conn.begin()
        sent = started if rclass is _IDEMPOTENT else time.monotonic()  # (a write may have waited for a leader)
        try:
            result = getattr(getattr(conn.stubs, service), method)(request, timeout=wait, metadata=md)
        except (grpc.RpcError, ValueError) as e:
            conn.end(_answered(e))
            first: BaseException = e
            # cut by us at the hedge delay (or reset by the server at that deadline: see server_reset), not by the
            # call's own deadline
            if hedge and isinstance(e, grpc.RpcError) and (e.code() == grpc.StatusCode.DEADLINE_EXCEEDED or (
                    server_reset(e.code(), e.details()) and time.monotonic() >= sent + (wait or 0.0) - _RESET_SKEW)) \
                    and (budget is None or time.monotonic() < started + budget):
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
            now = time.monotonic()
            conn.answered_at(now)
            took = now - sent
            if hedge:
                conn.call_times.observe(took)
            if took > self.pool.slow_call:
                conn.want_probe = True  # a slow call: the prober measures the connection against the others
            if conn.health.state is not _HEALTHY:
                self.pool.report_success(conn, gen)
            if rclass is _MUTATION:
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
        ready = True if rclass is _IDEMPOTENT else conn.transport_ready()
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
        left = None if deadline is None else deadline - time.monotonic()
        other = self.pool.hedge_start(conn, 2, left)
        if other is None:
            raise _NoHedge
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
                            self.pool.hedge_answered(conn, other, time.monotonic() - hedged_at)
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

    def _recover(
        self, invoke: Callable[[Stubs, float | None, Metadata], T], deadline: float | None,
        rclass: RetryClass, with_token: bool, metadata: Metadata, first_attempt: _Attempt, first: BaseException,
    ) -> T:
        """The first attempt failed: classify it, and retry as the core's steps decide."""
        r = _Retry(deadline, rclass, with_token, metadata, first_attempt.conn)
        r.last = self._run_steps(self._failure_steps(first_attempt, first, rclass, deadline), invoke)
        retrying = make_retrying(RetryableError, r.left, **self._retrying_args(r))
        try:
            result: T = retrying(lambda: self._run_steps(self._attempt_steps(r), invoke))
        except RetryableError as e:
            raise self._gave_up(r, e) from e.error
        return result

    def _run_steps(self, steps: Steps[T], invoke: Callable[[Stubs, float | None, Metadata], Any]) -> T:
        """Do each step's I/O on this thread (see :mod:`resilient_etcd._steps`)."""
        return drive(steps, lambda step: self._do(step, invoke))

    def _do(self, step: Step, invoke: Callable[[Stubs, float | None, Metadata], Any]) -> Any:
        if isinstance(step, Invoke):
            return self.pool.run(step.conn, lambda peer: invoke(peer.stubs, step.remaining, step.md),
                                 generation=step.gen, answered=_answered)
        if isinstance(step, PickWriter):
            return self.pool.pick_writer(step.deadline, avoid=step.avoid)
        if isinstance(step, Authenticate):
            return self.authenticate(step.remaining, stale=step.stale)
        return permanent_cause(step.conn.endpoint, self.tls is not None, step.details, probe_timeout=step.timeout)


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


