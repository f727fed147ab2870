"""Endpoint connections, the pick of the one to use, ejection with redial, and the prober.

Each endpoint has exactly one gRPC channel, opened with a *local* subchannel pool: grpcio
otherwise shares one TCP connection between channels to the same target, so "a new channel"
could silently reuse the hung connection. Ejection closes the channel — calls stuck on it
return at once with CANCELLED — and opens a fresh one, which dials a new TCP connection.

The prober thread sends ``Maintenance.Status`` on each endpoint's channel (the one traffic
uses) when a probe buys something — the connection has calls waiting and has been quiet for
``HealthPolicy.probe_interval``, or is idle and due its heartbeat (``idle_probe_interval``) — and
feeds the answers to the health state machine. It sleeps until the next probe is due (at most
1 s) unless a call starts on an idle connection, which wakes it. gRPC completion callbacks only
enqueue; all decisions and channel work happen on the prober thread or on the calling thread,
never inside gRPC's callback threads.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from .._proto import rpc_pb2, rpc_pb2_grpc
from ..metrics import METRICS
from ..policies import HealthPolicy
from .endpoints import Endpoint
from .health import EndpointHealth, State, Transition

log = logging.getLogger("resilient_etcd.health")

_STATUS_REQUEST = rpc_pb2.StatusRequest()
# the codes grpc gives a call the server never answered; any other status, even an error, is an answer
# from the server: proof that the connection carries data
NOT_ANSWERS = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
_READY = 2  # grpc_connectivity_state GRPC_CHANNEL_READY, as cygrpc reports it
# latency-aware choice: the member in use gives way when its round trips are over twice the best
# other's and at least this much longer (loopback noise never reaches it)
_SLOW_MARGIN = 0.02
# ... and not within this many seconds of the last such move: when every path is slow (the member in use
# only looks slower because our own large answers queue ahead of its probes), reads move seldom
_SLOW_HOLD = 5.0
_SLOW_PROBE_EVERY = 1.0  # slow reads ask for a probe of their connection at most this often


class Stubs:
    """The generated stubs bound to one channel."""

    __slots__ = ("auth", "cluster", "kv", "lease", "maintenance", "watch")

    def __init__(self, channel: grpc.Channel) -> None:
        self.kv = rpc_pb2_grpc.KVStub(channel)
        self.watch = rpc_pb2_grpc.WatchStub(channel)
        self.lease = rpc_pb2_grpc.LeaseStub(channel)
        self.cluster = rpc_pb2_grpc.ClusterStub(channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(channel)
        self.auth = rpc_pb2_grpc.AuthStub(channel)


@dataclass(frozen=True)
class EndpointStatus:
    """A snapshot of one endpoint's health, as returned by ``client.endpoint_health()``.

    ``state``: healthy, suspect, ejected, probing, or closed (the client was closed). ``since``: the
    wall-clock time (``time.time()``) of the last state change. ``latency``: mean recent probe round
    trip in seconds."""

    endpoint: str
    state: str
    active: bool
    since: float
    latency: float | None
    consecutive_failures: int
    ejections: int
    redials: int
    last_error: str | None


class Connection:
    """One endpoint: its channel, stubs and health. ``generation`` counts redials; ``outstanding``
    counts the calls waiting on it (:meth:`begin` / :meth:`end`)."""

    def __init__(self, endpoint: Endpoint, dial: Callable[[Endpoint], grpc.Channel], policy: HealthPolicy,
                 wake: Callable[[], None] = lambda: None) -> None:
        self.endpoint = endpoint
        self.outstanding = 0
        self._count = threading.Lock()
        self._wake = wake
        self.name = endpoint.target
        self._dial = dial
        self.channel = dial(endpoint)
        self.stubs = Stubs(self.channel)
        self.generation = 0
        self.health = EndpointHealth(policy, time.monotonic())
        self.server_version: tuple[int, str] | None = None  # (generation, etcd version) once asked
        self.member_id: int | None = None  # the etcd member behind this endpoint, from its Status answers
        self.want_probe = False  # a call took long: measure this connection's round trip (latency-aware choice)
        self.permanent_error: str | None = None  # why this endpoint can never work as configured (diagnose)

    def begin(self) -> None:
        """A call starts on this connection (the first one on an idle connection wakes the prober)."""
        with self._count:
            self.outstanding += 1
            first = self.outstanding == 1
        if first:
            self._wake()

    def end(self, answered: bool) -> None:
        """The call ended; ``answered``: the server answered it (proof of life, no probe needed)."""
        with self._count:
            self.outstanding -= 1
        if answered:
            self.heard()

    def heard(self) -> None:
        """Something arrived from the server on this connection (an answer, a watch event, a chunk of
        a stream): it is alive, and a probe queued behind it is no verdict."""
        self.health.last_heard = time.monotonic()

    def transport_ready(self) -> bool:
        """Does the channel have a READY connection right now? (True when grpcio does not say: a
        caller uses False as proof that a failed call was never sent, so unknown must not be False.)"""
        try:
            return bool(self.channel._channel.check_connectivity_state(False) == _READY)
        except (AttributeError, ValueError):  # ValueError: closed; the call itself will say so
            return True

    def redial(self) -> grpc.Channel:
        """Swap in a fresh channel; returns the old one for the caller to close."""
        old = self.channel
        self.channel = self._dial(self.endpoint)
        self.stubs = Stubs(self.channel)
        self.generation += 1
        return old


class EndpointPool:
    """All endpoints of one client. ``pick()`` is the hot path: one attribute read when healthy."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        dial: Callable[[Endpoint], grpc.Channel],
        policy: HealthPolicy,
        probe_metadata: Callable[[], Any],
    ) -> None:
        self.policy = policy
        self._events: queue.SimpleQueue[tuple[Connection, int, grpc.Future] | None] = queue.SimpleQueue()
        self._dozing = [False]  # the prober sleeps past its tick: a call starting must wake it
        wake = functools.partial(_wake, self._dozing, self._events)
        self.conns = [Connection(e, dial, policy, wake) for e in endpoints]
        for c in self.conns:
            METRICS.set_state(c.name, c.health.state.value)
        self.active = self.conns[0]
        self._lock = threading.RLock()
        # the raft leader, from Status answers (probes): writes go there while its connection is usable
        self.leader: Connection | None = None
        self._leader_id = 0
        self._term = 0
        self._leader_news = threading.Condition(self._lock)
        self._hunting = False  # the leader's connection is out: probe every endpoint until one names another
        self._hunt_since = 0.0
        self._calm_until = 0.0  # a fruitless hunt ended: no new one before this (except on the leader's ejection)
        # a call slower than this asks for a probe of its connection (then compared with the others)
        self.slow_call = _SLOW_MARGIN
        self._moved_at = float("-inf")  # the last move for slowness
        self._unreachable_leader: tuple[int, int] | None = None  # (term, id): raft follows it, we cannot reach it
        self._probe_metadata = probe_metadata
        self._closed = threading.Event()
        # the prober holds the pool weakly: a pool nobody uses any more is collected, and its
        # finalizer stops the thread and closes the channels
        self._prober = threading.Thread(target=_probe_loop, args=(weakref.ref(self), self._closed),
                                        name="resilient-etcd-prober", daemon=True)
        self._finalizer = weakref.finalize(self, _shut, self._closed, self._events, self._prober, self.conns)
        self._prober.start()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @contextlib.contextmanager
    def maintenance(self, conn: Connection) -> Iterator[None]:
        """Around a long action on one member (our own defragment): traffic moves to the others
        and the member is neither probed nor ejected while the action runs (a defragmenting etcd
        3.6 member holds the backend lock that ``Status`` waits for)."""
        with self._lock:
            conn.health.maintenance += 1
            conn.health.probe_sent_at = None
        try:
            yield
        finally:
            with self._lock:
                conn.health.maintenance -= 1
                conn.health.last_probe_at = time.monotonic()

    # ---- choosing ----
    def pick(self, avoid: Connection | None = None) -> Connection:
        a = self.active
        if a is not avoid and a.health.usable:
            return a
        with self._lock:
            return self._choose(avoid)

    def pick_writer(self, deadline: float | None, avoid: Connection | None = None) -> Connection:
        """The connection for a write: the leader's while it is usable (see ``HealthPolicy.prefer_leader``).
        When the leader's connection is out, wait (up to ``leader_wait`` and ``deadline``) for the other
        members to name a new leader rather than hand the write to a follower that would hold it until
        etcd's request timeout."""
        lead = self.leader
        if not self.policy.prefer_leader or lead is None:
            return self.pick(avoid)
        if lead is not avoid and lead.health.usable:
            return lead
        with self._lock:
            if self._unreachable_leader == (self._term, self._leader_id):
                return self.pick(avoid)  # raft follows a leader we cannot reach: go through the others
            self._hunt()
            give_up = self._hunt_since + self.policy.leader_wait  # one clock for every write that waits
            while True:
                lead = self.leader
                if lead is not None and lead is not avoid and lead.health.usable:
                    return lead
                if not any(c.health.usable for c in self.conns if c is not lead) or (
                        lead is None and all(x.member_id for x in self.conns)):
                    return self.pick(avoid)  # nobody left to ask, or a leader we have no endpoint for
                now = time.monotonic()
                if now >= give_up:
                    # the members still follow it after an election's time: it is alive, our path is not
                    self._unreachable_leader = (self._term, self._leader_id)
                    self._hunting = False
                    log.warning("raft leader %s is unreachable from here but still leads; writes go through "
                                "the other members", lead.name if lead else self._leader_id,
                                extra={"event": "leader_unreachable"})
                    return self.pick(avoid)
                if deadline is not None and now >= deadline:
                    return self.pick(avoid)  # the caller's deadline says the rest
                self._leader_news.wait(min(give_up, deadline or give_up) - now)

    def _hunt(self, *, force: bool = False) -> None:
        """Probe every endpoint each ``probe_interval`` until a usable leader is named (lock held).
        ``force``: the leader's connection went out (the other signals wait out a fruitless hunt's calm)."""
        if not self._hunting and (force or time.monotonic() >= self._calm_until):
            self._hunting = True
            self._hunt_since = time.monotonic()
            _wake(self._dozing, self._events)  # a prober sleeping past its tick starts probing now

    def saw_header(self, c: Connection, header: rpc_pb2.ResponseHeader) -> None:
        """A call on ``c`` was answered with ``header``: who answered (a busy connection is never probed,
        so this is how its member is known), and in which raft term (a newer one: a leader to learn)."""
        if header.member_id != c.member_id or header.raft_term > self._term:
            with self._lock:
                if header.member_id != c.member_id:
                    c.member_id = header.member_id
                    if c.member_id == self._leader_id and self.leader is not c:
                        self.leader = c
                        self._leader_news.notify_all()
                if header.raft_term > self._term and self.policy.prefer_leader:
                    self._hunt()

    def _learn_leader(self, c: Connection, resp: rpc_pb2.StatusResponse) -> None:
        """Take the leader named in a Status answer, unless an answer of a newer term named another (lock held)."""
        c.member_id = resp.header.member_id
        term, leader = resp.raftTerm, resp.leader
        if leader == 0 and self.policy.prefer_leader:
            self._hunt()  # an election is under way: ask again each probe interval until it is over
        if leader == 0 or term < self._term:
            return
        self._term, self._leader_id = term, leader
        lead = next((x for x in self.conns if x.member_id == leader), None)
        if lead is not self.leader:
            self.leader = lead
            log.info("raft leader: %s (term %d)", "unknown endpoint" if lead is None else lead.name, term,
                     extra={"event": "leader", "endpoint": None if lead is None else lead.name, "term": term})
        if (lead is not None and lead.health.usable) or (lead is None and all(x.member_id for x in self.conns)):
            self._hunting = False  # found; or led by a member none of our endpoints names
        self._leader_news.notify_all()

    def _compare_round_trips(self) -> None:
        """Latency-aware choice (lock held): a slow but alive member in use gives way to a healthy one
        whose recent probe round trips are under half of its own (and 20 ms shorter); no ejection, and it
        is chosen again like any other once its own probes are fast. Also sets :attr:`slow_call`."""
        timed = [(rt, c) for c in self.conns if c.health.state is State.HEALTHY and not c.health.maintenance
                 and (rt := c.health.round_trip()) is not None]
        if not timed:
            return
        a = self.active
        others = [(rt, c) for rt, c in timed if c is not a]
        best_rt, best = min(others, key=lambda x: x[0], default=(None, None))
        self.slow_call = _SLOW_MARGIN
        self._moved_at = float("-inf")  # the last move for slowness + 2 * min(rt for rt, _ in timed)
        trips = a.health.round_trips
        if best is None or best_rt is None or len(trips) < 2:
            return
        recent = min(trips[-1], trips[-2])  # two slow answers in a row, not one outlier
        settled = time.monotonic() - self._moved_at > _SLOW_HOLD  # when every path is slow, move seldom
        if recent > 2 * best_rt and recent - best_rt > _SLOW_MARGIN and settled:
            self._moved_at = time.monotonic()
            log.info("endpoint %s answers in %.0f ms, %s in %.0f ms: reads move", a.name, recent * 1000,
                     best.name, best_rt * 1000, extra={"endpoint": best.name, "event": "slower"})
            self._activate(best)

    def _choose(self, avoid: Connection | None) -> Connection:
        n = len(self.conns)
        start = self.conns.index(self.active)
        order = [self.conns[(start + i) % n] for i in range(n)]
        for wanted in (State.HEALTHY, State.SUSPECT):
            for c in order:
                if c is not avoid and c.health.state is wanted:
                    return self._activate(c)
        # panic mode: nothing usable — keep trying every endpoint, the least recently ejected last
        candidates = [c for c in order if c is not avoid] or order
        return self._activate(min(candidates, key=lambda c: c.health.since))

    def _activate(self, c: Connection) -> Connection:
        if c is not self.active:
            old = self.active
            self.active = c
            METRICS.inc("failovers", c.name)
            log.info("active endpoint %s -> %s", old.name, c.name,
                     extra={"endpoint": c.name, "previous": old.name, "event": "failover"})
        return c

    # ---- outcomes ----
    def report_failure(self, conn: Connection, generation: int, error: str, *, hard: bool) -> None:
        """A real call failed on ``conn`` (as of ``generation``). Hard failures eject now."""
        with self._lock:
            if generation != conn.generation:
                return  # already redialled since that call started
            was_ejected = conn.health.state is State.EJECTED
            t = conn.health.fail(time.monotonic(), error, hard=hard)
            old = self._apply(conn, t)
            if hard and was_ejected:
                # panic mode sends traffic to ejected endpoints; a failed dial leaves the channel in
                # gRPC's reconnect backoff, so the next try gets a fresh channel that dials at once
                METRICS.inc("redials", conn.name)
                old = conn.redial()
        if old is not None:
            old.close()

    def misconfigured(self) -> dict[str, str] | None:
        """``{endpoint: cause}`` when *every* endpoint failed in a way waiting cannot heal, else None."""
        causes = {c.name: c.permanent_error for c in self.conns}
        if all(causes.values()):
            return {k: v for k, v in causes.items() if v}
        return None

    def report_success(self, conn: Connection, generation: int) -> None:
        """A real call succeeded on a connection that was not marked healthy (the rare path)."""
        conn.permanent_error = None
        with self._lock:
            if generation == conn.generation:
                self._apply(conn, conn.health.succeeded(time.monotonic()))

    def _apply(self, conn: Connection, t: Transition | None) -> grpc.Channel | None:
        """Log a transition; on ejection swap in a fresh channel and return the old one to close."""
        if t is None:
            return None
        METRICS.set_state(conn.name, t.new.value)
        level = logging.WARNING if t.new in (State.EJECTED, State.SUSPECT) else logging.INFO
        if State.PROBING in (t.old, t.new) and t.new is not State.HEALTHY:
            level = logging.DEBUG  # re-admission attempts of an endpoint already known to be out
        log.log(
            level, "endpoint %s %s -> %s: %s", conn.name, t.old.value, t.new.value, t.reason,
            extra={"endpoint": conn.name, "from_state": t.old.value, "to_state": t.new.value, "reason": t.reason},
        )
        if conn is self.leader:
            if t.ejected and self.policy.prefer_leader:
                self._hunt(force=True)  # start learning the next leader now, not at the next write
            self._leader_news.notify_all()
        if t.ejected:
            METRICS.inc("ejections", conn.name)
            METRICS.inc("redials", conn.name)
            return conn.redial()
        return None

    def status(self) -> list[EndpointStatus]:
        closed = self.closed
        wall = time.time() - time.monotonic()  # monotonic -> wall clock
        with self._lock:
            return [
                EndpointStatus(
                    endpoint=c.name, state="closed" if closed else c.health.state.value,
                    active=c is self.active and not closed,
                    since=wall + c.health.since, latency=c.health.latency,
                    consecutive_failures=c.health.consecutive_failures, ejections=c.health.ejections,
                    redials=c.generation, last_error=c.health.last_error,
                )
                for c in self.conns
            ]

    # ---- the prober ----
    def _probe_step(self) -> None:
        self._dozing[0] = True  # first: a call starting while the sleep is worked out still wakes us
        sleep = self._sleep()
        if sleep <= self._tick:
            self._dozing[0] = False
        try:
            item = self._events.get(timeout=sleep)
        except queue.Empty:
            self._probe_round()
        else:
            if item is None:  # a call started on an idle connection
                self._probe_round()
            else:
                self._on_probe_done(*item)

    @property
    def _tick(self) -> float:
        """The prober's step while anything is waiting, out or unwell (suspect marking needs it)."""
        return min(self.policy.probe_interval / 2, 0.05)

    def _sleep(self) -> float:
        """Until the next probe is due; :attr:`_tick` while anything is waiting, out or unwell, at most
        1 s otherwise."""
        tick = self._tick
        now = time.monotonic()
        due = float("inf")
        for c in self.conns:
            h = c.health
            if c.outstanding or h.probe_sent_at is not None or h.state is not State.HEALTHY or self._hunting:
                return tick
            due = min(due, h.next_probe_at(busy=False))
        return min(1.0, max(tick, due - now))

    def _probe_round(self) -> None:
        now = time.monotonic()
        to_close = []
        with self._lock:
            if self._hunting and now - self._hunt_since > 2 * self.policy.leader_wait:
                # no member named a usable leader (quorum lost, Status refused): back to the usual schedule
                # rather than ten probes a second per endpoint for as long as that lasts; only a leader's
                # ejection starts another hunt within the next 30 s
                self._hunting = False
                self._calm_until = now + 30.0
                self._leader_news.notify_all()
            for c in self.conns:
                h = c.health
                to_close.append(self._apply(c, h.tick(now)))
                due = h.probe_due(now, busy=c.outstanding > 0 or self._hunting)
                if not due and c.want_probe:  # reads were slow: how slow is the connection itself? (1/s at most)
                    due = h.probe_sent_at is None and now - h.last_probe_at >= _SLOW_PROBE_EVERY
                if due:
                    c.want_probe = False
                    to_close.append(self._apply(c, h.probe_sent(now)))
                    self._send_probe(c, h.dead_time())
        for ch in to_close:
            if ch is not None:
                ch.close()

    def _send_probe(self, c: Connection, timeout: float) -> None:
        gen = c.generation
        try:
            fut = c.stubs.maintenance.Status.future(_STATUS_REQUEST, timeout=timeout,
                                                    metadata=self._probe_metadata())
        except ValueError:  # channel closed between redial and send; the next round probes again
            c.health.probe_sent_at = None
            return
        events = self._events
        fut.add_done_callback(lambda f, c=c, gen=gen: events.put((c, gen, f)))

    def _on_probe_done(self, c: Connection, gen: int, fut: grpc.Future) -> None:
        now = time.monotonic()
        code = fut.code()
        with self._lock:
            if gen != c.generation:
                c.health.probe_sent_at = None
                return
            if c.health.maintenance:
                c.health.probe_sent_at = None  # sent before our own defragment began: says nothing
                return
            # any answer from the server — even an error status — proves the connection carries data
            if code in NOT_ANSWERS:
                t = c.health.probe_failed(now, f"probe: {code.name}: {fut.details()}",
                                          timed_out=code == grpc.StatusCode.DEADLINE_EXCEEDED)
            else:
                c.permanent_error = None
                t = c.health.probe_answered(now)
                if c.health.latencies:
                    METRICS.observe_probe(c.name, c.health.latencies[-1])
                if code == grpc.StatusCode.OK:
                    self._learn_leader(c, fut.result())
                self._compare_round_trips()
            old = self._apply(c, t)
        if old is not None:
            old.close()

    def close(self) -> None:
        self._finalizer()


def _probe_loop(ref: weakref.ReferenceType[EndpointPool], closed: threading.Event) -> None:
    while not closed.is_set():
        pool = ref()
        if pool is None:
            return
        pool._probe_step()
        del pool


def _wake(dozing: list[bool], events: queue.SimpleQueue[Any]) -> None:
    """Wake the prober if it sleeps past its tick (while it ticks, it will see the call anyway: the
    hot path of back-to-back calls then costs no wake-up)."""
    if dozing[0]:
        dozing[0] = False
        events.put(None)


def _shut(closed: threading.Event, events: queue.SimpleQueue[Any], prober: threading.Thread,
          conns: list[Connection]) -> None:
    closed.set()
    events.put(None)  # wake the prober from its sleep
    if prober is not threading.current_thread():
        prober.join(timeout=2)
    for c in conns:
        c.channel.close()
