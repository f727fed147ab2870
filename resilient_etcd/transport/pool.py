"""Endpoint connections, the pick of the one to use, ejection with redial, and the prober.

Each endpoint has exactly one gRPC channel, opened with a *local* subchannel pool: grpcio
otherwise shares one TCP connection between channels to the same target, so "a new channel"
could silently reuse the hung connection. Ejection closes the channel — calls stuck on it
return at once with CANCELLED — and opens a fresh one, which dials a new TCP connection.

The process's prober thread (:mod:`resilient_etcd.balancer.prober`, one for every client) sends
``Maintenance.Status`` on each endpoint's channel (the one traffic uses) when a probe buys
something — the connection has calls waiting and has been quiet for ``HealthPolicy.probe_interval``,
or is idle and due its heartbeat (``idle_probe_interval``) — and feeds the answers to the health
state machine. It sleeps until the next probe is due unless a call starts on an idle connection,
which wakes it. gRPC completion callbacks only enqueue; all decisions and channel work happen on the
prober thread or on the calling thread, never inside gRPC's callback threads. Which endpoint a call
goes to is :class:`~resilient_etcd.balancer.choice.Balancer`'s choice; the leader of the raft
cluster, etcd's own business, is this module's.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from .._proto import rpc_pb2
from ..balancer.choice import Balancer
from ..balancer.driver import BasePeer, Cleanup, HealthDriver, if_alive
from ..balancer.health import Transition
from ..balancer.prober import PROBER, Registration, Waker
from ..metrics import METRICS
from ..policies import HealthPolicy
from .channels import Channels, Outcome, Stubs
from .endpoints import Endpoint, parse_endpoint

log = logging.getLogger("resilient_etcd.health")

_STATUS_REQUEST = rpc_pb2.StatusRequest()
# a linearizable read of nothing (count of the key "\0"): answered only after the leader confirms its read index
_LEADER_READ = rpc_pb2.RangeRequest(key=b"\0", count_only=True)
# the codes grpc gives a call the server never answered; any other status, even an error, is an answer
# from the server: proof that the connection carries data
NOT_ANSWERS = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


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


class Connection(BasePeer):
    """One endpoint: its channel, stubs and health (``generation`` counts redials)."""

    def __init__(self, endpoint: Endpoint, io: Channels, policy: HealthPolicy,
                 wake: Callable[[], None] = lambda: None) -> None:
        super().__init__(endpoint.target, policy, wake)
        self.endpoint = endpoint
        self.io = io
        self.channel = io.dial(endpoint)
        self.stubs = io.stubs(self.channel)
        self.server_version: tuple[int, str] | None = None  # (generation, etcd version) once asked
        self.member_id: int | None = None  # the etcd member behind this endpoint, from its Status answers
        self.permanent_error: str | None = None  # why this endpoint can never work as configured (diagnose)

    def transport_ready(self) -> bool:
        """Does the channel have a READY connection right now? (True when grpcio does not say: a
        caller uses False as proof that a failed call was never sent, so unknown must not be False.)"""
        return self.io.ready(self.channel)

    def redial(self) -> Cleanup:
        """Swap in a fresh channel; returns the closing of the old one, for the caller to run."""
        old, io = self.channel, self.io
        self.channel = io.dial(self.endpoint)
        self.stubs = io.stubs(self.channel)
        self.generation += 1
        return lambda: io.close(old)

    def start(self, method: Callable[[Stubs], Any], request: Any, timeout: float, metadata: Any,
              done: Callable[[Outcome], None]) -> None:
        """Start a call on this connection without blocking; ``done(outcome)`` runs when it ends."""
        self.io.start(self.channel, self.stubs, method, request, timeout, metadata, done)

    def close(self) -> None:
        self.io.close(self.channel)


class EndpointPool(HealthDriver[Connection]):
    """All endpoints of one client. ``pick()`` is the hot path: one attribute read when healthy."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        io: Channels,
        policy: HealthPolicy,
        probe_metadata: Callable[[], Any],
        secure: bool = False,
    ) -> None:
        self._io = io
        self._secure = secure  # which of a member's advertised URLs auto-sync may use
        waker = Waker()
        super().__init__([Connection(e, io, policy, waker) for e in endpoints], policy, waker, log=log,
                         tick_cap=0.05)
        # the raft leader, from Status answers (probes): writes go there while its connection is usable
        self.leader: Connection | None = None
        self._leader_id = 0
        self._term = 0
        self._leader_news = threading.Condition(self._lock)
        self._news_listeners: list[Callable[[], None]] = []
        self._hunting = False  # the leader's connection is out: probe every endpoint until one names another
        self._hunt_since = 0.0
        self._calm_until = 0.0  # a fruitless hunt ended: no new one before this (except on the leader's ejection)
        self._unreachable_leader: tuple[int, int] | None = None  # (term, id): raft follows it, we cannot reach it
        self._asking_leader = False  # a read through another member is out to learn whether the leader is alive
        # (leader, member): our link to that leader is slow, writes go to that member (None: to the leader)
        self._write_via: tuple[Connection | None, Connection | None] = (None, None)
        self._probe_metadata = probe_metadata
        sync = policy.auto_sync_interval
        self._sync_at = float("inf") if sync is None else time.monotonic() + sync
        self._syncing = False
        # the prober holds the pool weakly: a pool nobody uses any more is collected, and its
        # finalizer leaves the prober and closes the channels
        self._reg: Registration = self._register()
        self._finalizer = weakref.finalize(self, _shut, self._closed, self._reg, self.balancer)

    @property
    def conns(self) -> list[Connection]:
        return self.balancer.peers

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
    def pick_writer(self, deadline: float | None, avoid: Connection | None = None) -> Connection:
        """The connection for a write: the leader's while it is usable (see ``HealthPolicy.prefer_leader``).
        When the leader's connection is out, wait (up to ``leader_wait`` and ``deadline``) for the other
        members to name a new leader rather than hand the write to a follower that would hold it until
        etcd's request timeout."""
        got = self.writer_now(avoid)
        if got is not None:
            return got
        with self._lock:
            give_up = self.hunt_for_writer()
            while True:
                step = self.writer_or_wait(avoid, give_up, deadline)
                if isinstance(step, Connection):
                    return step
                self._leader_news.wait(step - time.monotonic())

    def writer_now(self, avoid: Connection | None) -> Connection | None:
        """The write connection when no wait can be needed (the hot path: no lock), else None."""
        lead = self.leader
        if not self.policy.prefer_leader or lead is None:
            return self.pick(avoid)
        if lead is not avoid and lead.health.usable:
            slow, via = self._write_via
            if slow is not lead or via is None or via is avoid or not via.health.usable:
                return lead
            return via  # our link to the leader is slow: a follower forwards over raft's own links
        return None

    def hunt_for_writer(self) -> float:
        """A write waits for a leader (lock held): start the hunt; returns when the wait gives up."""
        self._hunt()
        return self._hunt_since + self.policy.leader_wait  # one clock for every write that waits

    def writer_or_wait(self, avoid: Connection | None, give_up: float,
                       deadline: float | None) -> Connection | float:
        """One look at the leader for a waiting write (lock held): the connection to use, or the time
        until which to wait for news of the leader (:meth:`on_leader_news`)."""
        if self._unreachable_leader == (self._term, self._leader_id):
            return self.pick(avoid)  # raft follows a leader we cannot reach: go through the others
        lead = self.leader
        if lead is not None and lead is not avoid and lead.health.usable:
            return lead
        if not any(c.health.usable for c in self.conns if c is not lead) or (
                lead is None and all(x.member_id for x in self.conns)):
            return self.pick(avoid)  # nobody left to ask, or a leader we have no endpoint for
        now = time.monotonic()
        if now >= give_up:
            # the members still follow it after an election's time: it is alive, our path is not
            self._leader_unreachable("the members still name it after leader_wait")
            return self.pick(avoid)
        if deadline is not None and now >= deadline:
            return self.pick(avoid)  # the caller's deadline says the rest
        return min(give_up, deadline or give_up)

    def on_leader_news(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, from whichever thread, at the next news of the leader (lock held): how a
        write waiting on an event loop learns what :attr:`_leader_news` tells waiting threads."""
        self._news_listeners.append(callback)

    def _news(self) -> None:
        """The leader, or its connection's state, changed (lock held): waiting writes look again."""
        self._leader_news.notify_all()
        listeners, self._news_listeners = self._news_listeners, []
        for callback in listeners:
            callback()

    def _compare_leader(self) -> None:
        """Latency-aware writes (lock held): while our link to the leader answers much slower than another
        member's (the rule of :meth:`Balancer.faster_than`), writes go to that member, which forwards them
        to the leader over raft's own links; they come back once the leader's probes are fast again."""
        lead = self.leader
        via = self.balancer.faster_than(lead) if lead is not None and self.policy.prefer_leader else None
        old = self._write_via[1] if self._write_via[0] is lead else None
        self._write_via = (lead, via)
        if via is old or lead is None:
            return
        if via is None:
            log.info("writes go to the raft leader %s again: its last probe took %.0f ms", lead.name,
                     lead.health.round_trips[-1] * 1000 if lead.health.round_trips else 0.0,
                     extra={"event": "writes_to_leader", "endpoint": lead.name})
        else:
            log.info("writes go through %s (%.0f ms): the raft leader %s answers in %.0f ms", via.name,
                     (via.health.round_trip() or 0.0) * 1000, lead.name, (lead.health.round_trip() or 0.0) * 1000,
                     extra={"event": "writes_via", "endpoint": via.name, "leader": lead.name})

    def _hunt(self, *, force: bool = False) -> None:
        """Probe every endpoint each ``probe_interval`` until a usable leader is named (lock held).
        ``force``: the leader's connection went out (the other signals wait out a fruitless hunt's calm)."""
        if not self._hunting and (force or time.monotonic() >= self._calm_until):
            self._hunting = True
            self._hunt_since = time.monotonic()
            self._reg.wake()  # a prober sleeping past its tick starts probing now

    def saw_header(self, c: Connection, header: rpc_pb2.ResponseHeader) -> None:
        """A call on ``c`` was answered with ``header``: who answered (a busy connection is never probed,
        so this is how its member is known), and in which raft term (a newer one: a leader to learn)."""
        if header.member_id != c.member_id or header.raft_term > self._term:
            with self._lock:
                if header.member_id != c.member_id:
                    c.member_id = header.member_id
                    if c.member_id == self._leader_id and self.leader is not c:
                        self.leader = c
                        self._news()
                if header.raft_term > self._term and self.policy.prefer_leader:
                    self._hunt()

    def _learn_leader(self, c: Connection, resp: rpc_pb2.StatusResponse) -> None:
        """Take the leader named in a Status answer, unless an answer of a newer term named another (lock held)."""
        c.member_id = resp.header.member_id
        c.server_version = (c.generation, resp.version)  # watches ask it only when no probe has told
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
        self._news()

    # ---- outcomes ----
    def _failed_while_out(self, conn: Connection) -> Cleanup:
        # panic mode sends traffic to ejected endpoints; a failed dial leaves the channel in gRPC's
        # reconnect backoff, so the next try gets a fresh channel that dials at once
        METRICS.inc("redials", conn.name)
        return conn.redial()

    def misconfigured(self) -> dict[str, str] | None:
        """``{endpoint: cause}`` when *every* endpoint failed in a way waiting cannot heal, else None."""
        causes = {c.name: c.permanent_error for c in self.conns}
        if all(causes.values()):
            return {k: v for k, v in causes.items() if v}
        return None

    def report_success(self, conn: Connection, generation: int | None = None) -> None:
        conn.permanent_error = None
        super().report_success(conn, generation)

    def _changed(self, conn: Connection, t: Transition) -> Cleanup | None:
        """The leader's connection changed state: writes waiting for it look again (and its ejection
        starts the hunt for the next leader); an ejection swaps in a fresh channel (lock held)."""
        if conn is self.leader:
            if t.ejected and self.policy.prefer_leader:
                self._hunt(force=True)  # start learning the next leader now, not at the next write
            self._news()
        if t.ejected:
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
    def _before_round(self, now: float) -> bool:
        if self._hunting and now - self._hunt_since > 2 * self.policy.leader_wait:
            # no member named a usable leader (quorum lost, Status refused): back to the usual schedule
            # rather than ten probes a second per endpoint for as long as that lasts; only a leader's
            # ejection starts another hunt within the next 30 s
            self._hunting = False
            self._calm_until = now + 30.0
            self._news()
        return self._hunting

    def _after_round(self, now: float) -> float:
        if self._hunting and not self._asking_leader:
            self._ask_leader()
        if now >= self._sync_at and not self._syncing:
            self._syncing = True
            PROBER.run_blocking(functools.partial(_sync, weakref.ref(self)))
        return self._sync_at

    # ---- endpoint sync (HealthPolicy.auto_sync_interval) ----
    def sync_endpoints(self) -> bool:
        """Ask the cluster for its members now and follow the answer (see ``HealthPolicy.auto_sync_interval``);
        True when the endpoint set changed. Errors and answers naming no usable member change nothing."""
        c = self.pick()
        try:
            resp = self._io.call(c.channel, c.stubs, _member_list, rpc_pb2.MemberListRequest(linearizable=True),
                                 max(self.policy.dead_after, 2.0), self._probe_metadata())
        except (grpc.RpcError, ValueError) as e:
            why = e.code().name if isinstance(e, grpc.RpcError) else str(e)
            log.info("endpoint sync: MemberList on %s failed (%s); endpoints unchanged", c.name, why,
                     extra={"event": "sync_failed", "endpoint": c.name})
            return False
        return self._follow(resp.members)

    def _follow(self, members: Sequence[rpc_pb2.Member]) -> bool:
        scheme = "https://" if self._secure else "http://"
        wanted: dict[int, Endpoint] = {}
        for m in members:
            if m.isLearner:
                continue  # learners refuse most requests
            for url in m.clientURLs:
                if url.startswith(scheme):
                    try:
                        wanted[m.ID] = parse_endpoint(url)
                    except Exception:  # a URL we cannot use: that member is left out, the rest still count
                        continue
                    break
        if not wanted:
            log.warning("endpoint sync: the member list names no usable client URL; endpoints unchanged",
                        extra={"event": "sync_ignored"})
            return False

        def choose(conns: list[Connection]) -> tuple[list[Connection], list[Endpoint]]:
            known = {c.member_id for c in conns if c.member_id}
            keep = [c for c in conns if not c.member_id or c.member_id in wanted]
            targets = {c.endpoint.target for c in keep}
            # a member may already be behind an endpoint not yet probed (a proxy's address names no member):
            # add connections only once every endpoint's member is known (the next sync)
            if any(not c.member_id for c in keep):
                return keep, []
            return keep, [e for mid, e in wanted.items() if mid not in known and e.target not in targets]

        return self._replace(choose, "endpoint sync")

    def follow_endpoints(self, endpoints: Sequence[Endpoint], source: str) -> bool:
        """Make ``endpoints`` the endpoint set (a DNS SRV refresh): connections to endpoints still named
        are kept with their health, new ones dialled, the others closed; True when the set changed. An
        empty list changes nothing."""
        if not endpoints:
            log.warning("%s: no endpoints named; endpoints unchanged", source, extra={"event": "sync_ignored"})
            return False
        wanted = {e.target: e for e in endpoints}

        def choose(conns: list[Connection]) -> tuple[list[Connection], list[Endpoint]]:
            keep = [c for c in conns if c.endpoint.target in wanted]
            targets = {c.endpoint.target for c in keep}
            return keep, [e for t, e in wanted.items() if t not in targets]

        return self._replace(choose, source)

    def _replace(self, choose: Callable[[list[Connection]], tuple[list[Connection], list[Endpoint]]],
                 source: str) -> bool:
        """A new endpoint set: ``choose(current)`` says (under the lock) which connections stay and which
        endpoints are new; the rest are closed. Never empty: an empty choice changes nothing."""
        with self._lock:
            if self._closed.is_set():
                return False
            keep, new = choose(self.conns)
            added = [Connection(e, self._io, self.policy, self.waker) for e in new]
            if not keep and not added:
                return False
            gone = [c for c in self.conns if c not in keep]
            self.balancer.replace(keep + added)
            if self.leader in gone:
                self.leader = None
        for c in added:
            METRICS.set_state(c.name, c.health.state.value)
        for c in gone:
            if c.outstanding:  # a write cut by the close would fail as "may have been applied"
                PROBER.run_blocking(functools.partial(_retire, c, time.monotonic() + _RETIRE_GRACE))
            else:
                c.close()
        if added or gone:
            log.info("%s: added %s, removed %s", source, [c.name for c in added], [c.name for c in gone],
                     extra={"event": "sync", "added": [c.name for c in added], "removed": [c.name for c in gone]})
            self._reg.wake()  # new connections get their first probe now
        return bool(added or gone)

    def _ask_leader(self) -> None:
        """Hunting while the members name a leader whose connection is out: is that leader alive? A
        linearizable read through another member is answered only once the leader confirms its read
        index with a quorum (raft's ReadIndex), so an answer in the same term says the leader leads and
        only our path to it is broken — writes then go through the others at once instead of after
        ``leader_wait``. A frozen leader confirms nothing: the read waits, and the election decides (lock held)."""
        lead = self.leader
        if lead is None or lead.health.usable or self._unreachable_leader == (self._term, self._leader_id):
            return
        via = self.hedge_target(lead)
        if via is None:
            return
        self._asking_leader = True
        asked = (self._term, self._leader_id)
        reg, me = self._reg, weakref.ref(self)
        try:
            via.start(_range, _LEADER_READ, self.policy.dead_after, self._probe_metadata(),
                      lambda f: PROBER.post(reg, functools.partial(
                          if_alive, me, EndpointPool._on_leader_answer, via, asked, f)))
        except ValueError:  # the channel closed under us; the next round asks again
            self._asking_leader = False

    def _on_leader_answer(self, via: Connection, asked: tuple[int, int], fut: Outcome) -> None:
        with self._lock:
            self._asking_leader = False
            if fut.code() != grpc.StatusCode.OK:
                return  # no confirmation (a frozen leader, an election, no read permission): the hunt goes on
            term = fut.result().header.raft_term
            lead = self.leader
            if term != asked[0] or asked != (self._term, self._leader_id) or lead is None \
                    or lead.health.usable or not self._hunting:
                return  # a newer term, or the leader is back: nothing to conclude
            self._leader_unreachable(f"it confirmed a read through {via.name}")

    def _leader_unreachable(self, evidence: str) -> None:
        """The raft leader leads but our path to it is broken (lock held): writes go through the other
        members until its connection is re-admitted; the hunt ends, and writes waiting for it go now."""
        self._unreachable_leader = (self._term, self._leader_id)
        self._hunting = False
        self._news()
        lead = self.leader
        log.warning("raft leader %s is alive (%s) but unreachable from here; writes go through the other members",
                    lead.name if lead else self._leader_id, evidence, extra={"event": "leader_unreachable"})

    def _send_probe(self, c: Connection) -> None:
        gen = c.generation
        METRICS.inc("probes", c.name)
        reg, me = self._reg, weakref.ref(self)
        try:
            c.start(_status, _STATUS_REQUEST, c.health.dead_time(), self._probe_metadata(),
                    lambda f: PROBER.post(reg, functools.partial(
                        if_alive, me, EndpointPool._on_probe_done, c, gen, f)))
        except ValueError:  # channel closed between redial and send; the next round probes again
            c.health.probe_sent_at = None

    def _on_probe_done(self, c: Connection, gen: int, fut: Outcome) -> None:
        code = fut.code()
        if code in NOT_ANSWERS:
            self.probe_ended(c, f"probe: {code.name}: {fut.details()}", generation=gen,
                             timed_out=code == grpc.StatusCode.DEADLINE_EXCEEDED)
        else:  # any answer from the server — even an error status — proves the connection carries data
            self.probe_ended(c, generation=gen, answer=fut.result() if code == grpc.StatusCode.OK else None)

    def _probe_answered(self, c: Connection, answer: rpc_pb2.StatusResponse | None) -> None:
        c.permanent_error = None
        if answer is not None:
            self._learn_leader(c, answer)
        self._compare_leader()

    def close(self) -> None:
        self._finalizer()


_RETIRE_GRACE = 5.0  # the longest a connection that left the endpoint set waits for its calls (s)


def _retire(c: Connection, until: float) -> None:
    """Close ``c``, which left the endpoint set, once the calls still on it have ended (or at ``until``):
    it takes no new ones, and a member that left the list may still be serving (on a prober worker)."""
    while c.outstanding and time.monotonic() < until:
        time.sleep(0.01)  # a rare event off every call's path: polling keeps the hot path free of it
    c.close()


def _status(stubs: Stubs) -> Any:
    return stubs.maintenance.Status


def _range(stubs: Stubs) -> Any:
    return stubs.kv.Range


def _member_list(stubs: Stubs) -> Any:
    return stubs.cluster.MemberList


def _sync(ref: weakref.ReferenceType[EndpointPool]) -> None:
    pool = ref()
    if pool is None:
        return
    try:
        pool.sync_endpoints()
    finally:
        interval = pool.policy.auto_sync_interval
        pool._sync_at = time.monotonic() + (interval or 0.0)
        pool._syncing = False


def _shut(closed: threading.Event, reg: Registration, balancer: Balancer[Connection]) -> None:
    closed.set()
    reg.close()
    for c in balancer.peers:
        c.close()
