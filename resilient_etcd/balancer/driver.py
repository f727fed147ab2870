"""The health side of one client, for every transport: its endpoints, their health, the choice, the probes.

A client's endpoints (the gRPC transport's connections, the Kubernetes client's apiservers) are
:class:`BasePeer` objects; a :class:`HealthDriver` holds them with their :class:`Balancer`, one lock,
and a place in the process's prober. What is the same for every transport lives here, once:

* one real call on an endpoint (:meth:`HealthDriver.run`): counted as waiting there
  (:meth:`BasePeer.begin` / :meth:`BasePeer.end`; the first on an idle endpoint wakes the prober), its
  answer taken as proof of life, an endpoint not marked healthy re-admitted by it;
* the outcome of a real call (:meth:`HealthDriver.report_failure` / :meth:`HealthDriver.report_success`)
  and of a probe (:meth:`HealthDriver.probe_ended`) fed to the health state machine, and every
  transition logged and counted the same way;
* the prober's step (:meth:`HealthDriver.probe_step`): late probes marked, the probes that buy
  something sent, the next wake-up worked out.

What differs is I/O, left to the subclass: how a probe is sent (:meth:`HealthDriver._send_probe`) and
what its answer says beyond health (:meth:`HealthDriver._probe_answered`; the etcd pool learns the raft
leader there), what an ejection closes (:meth:`HealthDriver._changed`, returning the closing work to run
outside the lock), and what a round adds (:meth:`HealthDriver._before_round`, :meth:`HealthDriver._after_round`:
the etcd pool's leader hunt, the Kubernetes client's per-resource checks).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from ..metrics import METRICS
from ..policies import HealthPolicy
from .choice import SLOW_MARGIN, Balancer
from .health import EndpointHealth, State, Timing, Transition
from .hedge import CallTimes, HedgeBudget
from .prober import PROBER, Registration, Waker

Cleanup = Callable[[], None]
"""Work a transition leaves to be done outside the driver's lock (close a channel, close a connection)."""


class BasePeer:
    """One endpoint of a client: its health record and the calls waiting on it. ``generation`` counts
    the fresh connections dialled to it (a failure seen on an older one says nothing of the new)."""

    def __init__(self, name: str, policy: Timing, wake: Callable[[], None] = lambda: None) -> None:
        self.name = name
        self.health = EndpointHealth(policy, time.monotonic())
        # one entry per call waiting on it now: list.append and list.pop are atomic, so the hot path takes
        # no lock (a contended lock costs a thread switch, and with 16 threads on the GIL every one counts)
        self._calls: list[None] = []
        self.want_probe = False  # a call took long: measure its round trip against the others
        self.generation = 0
        self.call_times = CallTimes()  # of its hedgeable reads: when to hedge one
        self._count = threading.Lock()
        self._wake = wake
        # the driver's Waker: wakes the prober only while it dozes, and it reads every count after it starts
        # dozing, so a call that starts meanwhile is seen or wakes it — no "first call" test, no lock
        self._waker = wake if isinstance(wake, Waker) else None

    @property
    def outstanding(self) -> int:
        """Calls waiting on it now."""
        return len(self._calls)

    def begin(self) -> None:
        """A call starts on this endpoint (the first one on an idle endpoint wakes the prober)."""
        waker = self._waker
        if waker is not None:
            self._calls.append(None)
            if waker.dozing:
                waker()
            return
        with self._count:  # any other wake: only the first call on an idle endpoint calls it
            self._calls.append(None)
            first = len(self._calls) == 1
        if first:
            self._wake()

    def end(self, answered: bool) -> None:
        """The call ended; ``answered``: the server answered it (proof of life, no probe needed)."""
        self._calls.pop()
        if answered:
            self.heard()

    def answered_at(self, now: float) -> None:
        """The call ended with the server's answer at ``now`` (``end(True)`` for a caller that read the clock)."""
        self._calls.pop()
        self.health.last_heard = now

    def heard(self) -> None:
        """Something arrived from the server (an answer, an event, a chunk of a stream): it is alive,
        and a probe queued behind it is no verdict."""
        self.health.last_heard = time.monotonic()


P = TypeVar("P", bound=BasePeer)
T = TypeVar("T")
D = TypeVar("D")


def if_alive(ref: weakref.ReferenceType[D], method: Callable[..., None], *args: Any) -> None:
    """``method(driver, *args)`` — work the prober runs later (a probe, a probe's completion) — unless the
    driver was collected meanwhile: the prober holds drivers weakly, and so must the work it queues."""
    driver = ref()
    if driver is not None:
        method(driver, *args)


class HealthDriver(Generic[P]):
    """The endpoints of one client, their health and the choice among them (see the module docstring).

    The subclass builds its peers with :attr:`waker` as their ``wake``, then calls :meth:`_register`
    once everything its :meth:`probe_step` hooks read exists."""

    kind = "endpoint"  # what log lines call an endpoint

    def __init__(self, peers: Sequence[P], policy: HealthPolicy, waker: Waker, *, log: logging.Logger,
                 tick_cap: float, closed: threading.Event | None = None) -> None:
        self.policy = policy
        self.waker = waker  # wakes the process's prober when a call starts on an idle endpoint
        self._log = log
        self.balancer: Balancer[P] = Balancer(peers, on_move=self._moved)
        self._lock = threading.RLock()
        self._closed = closed or threading.Event()  # (the owner's, when it has one)
        self.slow_call = SLOW_MARGIN  # a call slower than this asks for a probe of its endpoint
        # the prober's step while anything waits, is out or is unwell (suspect marking needs it)
        self._tick = min(policy.probe_interval / 2, tick_cap)
        self._reg: Registration | None = None
        self.hedges = HedgeBudget(policy.hedge_max_extra)
        for p in peers:
            METRICS.set_state(p.name, p.health.state.value)

    def _register(self) -> Registration:
        """Take a place in the process's prober (held weakly: a driver nobody holds is collected)."""
        self._reg = PROBER.register(self)
        self.waker.reg = self._reg
        return self._reg

    @property
    def peers(self) -> list[P]:
        return self.balancer.peers

    @property
    def active(self) -> P:
        return self.balancer.active

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def wake(self) -> None:
        """Let the prober look now (a probe was asked for, or the schedule changed)."""
        if self._reg is not None:
            self._reg.wake()

    # ---- choosing ----
    def pick(self, avoid: P | None = None) -> P:
        """The endpoint in use while it is usable and not ``avoid``, else the balancer's next choice."""
        a = self.balancer.active
        if a is not avoid and a.health.usable:
            return a
        with self._lock:
            return self.balancer.choose(avoid)

    # ---- hedged reads (the I/O is the transport's) ----
    def hedge_target(self, peer: P, also: Callable[[P], bool] = lambda p: True) -> P | None:
        """Where a hedge of a read on ``peer`` goes — or a question that must not go to ``peer`` (the
        leader-liveness read): the healthy other endpoint (and ``also(it)``) with the shortest recent
        round trip. The endpoint in use does not change."""
        others = [p for p in self.balancer.peers if p is not peer and p.health.state is State.HEALTHY
                  and not p.health.maintenance and also(p)]
        if not others:
            return None
        return min(others, key=lambda p: p.health.round_trip() or 0.0)

    def hedge_start(self, slow: P, extra: int, left: float | None = None,
                    also: Callable[[P], bool] = lambda p: True) -> P | None:
        """A read on ``slow`` is past its hedge delay: ``slow`` is probed (how slow is it itself? latency-aware
        choice, ejection), and the endpoint for its copy is returned — None when there is none (see
        :meth:`hedge_target`), no time is ``left``, or the budget cannot afford ``extra`` requests."""
        slow.want_probe = True
        self.wake()
        other = self.hedge_target(slow, also)
        if other is None or (left is not None and left <= 0) or not self.hedges.withdraw(extra):
            return None
        METRICS.inc("hedges", slow.name)
        return other

    def hedge_answered(self, slow: P, fast: P, seconds: float) -> None:
        """The copy on ``fast`` answered first, ``seconds`` after it was sent: counted, its time feeds
        ``fast``'s hedge delay, and reads move there (:meth:`hedge_won`)."""
        METRICS.inc("hedges_won", fast.name)
        fast.call_times.observe(seconds)
        self.hedge_won(slow, fast)

    def hedge_won(self, slow: P, fast: P) -> None:
        """A read on ``slow`` was answered by its hedge on ``fast`` first: reads move there (``slow`` is
        probed, and wins them back like any endpoint once it answers as fast)."""
        with self._lock:
            if self.balancer.active is slow and fast.health.usable:
                self.balancer.activate(fast, f"a hedged read was answered by {fast.name} before {slow.name}")

    # ---- real calls ----
    def run(self, peer: P, call: Callable[[P], T], *, generation: int | None = None, counted: bool = True,
            answered: Callable[[BaseException], bool] = lambda error: False,
            proof: Callable[[T], bool] = lambda result: True) -> T:
        """One real call on ``peer``: it counts as waiting there while it runs (``counted``: a quiet stream
        that its connection's own check covers does not), an answer is proof of life, and an endpoint not
        marked healthy is re-admitted by it. A failure propagates for the caller to classify and report
        (``answered(error)``: the server's own error status, which still proves the connection alive).
        ``proof(result)``: False when the result came from elsewhere (a hedge's copy won): no proof of life."""
        if counted:
            peer.begin()
        try:
            result = call(peer)
        except BaseException as e:
            if counted:
                peer.end(answered(e))
            raise
        alive = proof(result)
        if counted:
            peer.end(alive)
        elif alive:
            peer.heard()
        if alive and peer.health.state is not State.HEALTHY:
            self.report_success(peer, generation)
        return result

    async def arun(self, peer: P, call: Callable[[P], Awaitable[T]], *, generation: int | None = None,
                   answered: Callable[[BaseException], bool] = lambda error: False) -> T:
        """:meth:`run` for a coroutine (an asyncio face): counted while it is awaited, ended however it ends
        (a cancelled task too)."""
        peer.begin()
        try:
            result = await call(peer)
        except BaseException as e:
            peer.end(answered(e))
            raise
        peer.end(True)
        if peer.health.state is not State.HEALTHY:
            self.report_success(peer, generation)
        return result

    def report_failure(self, peer: P, error: str, *, hard: bool, generation: int | None = None) -> None:
        """A real call failed on ``peer`` (on its connection of ``generation``, if given: a failure of a
        connection already replaced says nothing). ``hard``: the connection is gone or hung — eject now."""
        with self._lock:
            if generation is not None and generation != peer.generation:
                return
            was_out = peer.health.state is State.EJECTED
            cleanup = self._apply(peer, peer.health.fail(time.monotonic(), error, hard=hard))
            if hard and was_out:
                cleanup = self._failed_while_out(peer) or cleanup
        if cleanup is not None:
            cleanup()

    def report_success(self, peer: P, generation: int | None = None) -> None:
        """A real call was answered on an endpoint not marked healthy (the rare path)."""
        with self._lock:
            if generation is not None and generation != peer.generation:
                return
            cleanup = self._apply(peer, peer.health.succeeded(time.monotonic()))
        if cleanup is not None:
            cleanup()

    # ---- transitions ----
    def _apply(self, peer: P, t: Transition | None) -> Cleanup | None:
        """Log and count a transition and act on it (lock held); returns work to do outside the lock."""
        if t is None:
            return None
        METRICS.set_state(peer.name, t.new.value)
        level = logging.WARNING if t.new in (State.EJECTED, State.SUSPECT) else logging.INFO
        if State.PROBING in (t.old, t.new) and t.new is not State.HEALTHY:
            level = logging.DEBUG  # re-admission attempts of an endpoint already known to be out
        self._log.log(level, "%s %s %s -> %s: %s", self.kind, peer.name, t.old.value, t.new.value, t.reason,
                      extra={"endpoint": peer.name, "event": "state", "from_state": t.old.value,
                             "to_state": t.new.value, "reason": t.reason})
        if t.ejected:
            METRICS.inc("ejections", peer.name)
        return self._changed(peer, t)

    def _changed(self, peer: P, t: Transition) -> Cleanup | None:
        """Act on a transition (lock held): e.g. an ejection closes the endpoint's connection."""
        return None

    def _failed_while_out(self, peer: P) -> Cleanup | None:
        """A hard failure of an endpoint already ejected (panic mode sends traffic there; lock held)."""
        return None

    def _moved(self, old: P, new: P, why: str) -> None:
        METRICS.inc("failovers", new.name)
        self._log.info("active %s %s -> %s: %s", self.kind, old.name, new.name, why,
                       extra={"endpoint": new.name, "previous": old.name, "event": "failover", "reason": why})

    # ---- probes ----
    def probe_step(self, now: float) -> float:
        """Called by the process's prober: send the probes due, return when to be called next."""
        self.waker.dozing = True  # first: a call starting while the next time is worked out still wakes us
        with self._lock:
            if self._closed.is_set():
                return float("inf")
            hunting = self._before_round(now)
            moves, send = self.balancer.probe_round(now, hunting=hunting)
            cleanups = [self._apply(p, t) for p, t in moves]
            for p in send:
                self._send_probe(p)
            at = min(self.balancer.next_wake(now, self._tick, hunting=hunting), self._after_round(now))
        if at <= now + self._tick:
            self.waker.dozing = False  # ticking anyway: calls starting need not wake us
        for cleanup in cleanups:
            if cleanup is not None:
                cleanup()
        return at

    def _before_round(self, now: float) -> bool:
        """Before a probe round (lock held); True: probe every endpoint at the busy rate (a hunt)."""
        return False

    def _after_round(self, now: float) -> float:
        """After a probe round (lock held); returns the latest time the next step may come."""
        return float("inf")

    def _send_probe(self, peer: P) -> None:
        """Send one probe of ``peer``, already marked sent (lock held: must not block)."""
        raise NotImplementedError

    def probe_ended(self, peer: P, error: str | None = None, *, timed_out: bool = False,
                    generation: int | None = None, answer: Any = None) -> None:
        """A probe of ``peer`` ended (on whatever thread the transport finishes it; lock not held):
        answered (``error`` None; ``answer`` is what the transport got back, for :meth:`_probe_answered`)
        or failed. A probe of a connection already replaced (``generation``), or sent before the
        endpoint's maintenance began, says nothing. Transitions are applied and the prober woken."""
        now = time.monotonic()
        with self._lock:
            h = peer.health
            if (generation is not None and generation != peer.generation) or h.maintenance:
                h.probe_sent_at = None
                return
            if error is not None:
                self._probe_failing(peer)
            t = self.probe_result(peer, now, error, timed_out=timed_out)
            if error is None:
                self._probe_answered(peer, answer)
            cleanup = self._apply(peer, t)
        if cleanup is not None:
            cleanup()
        if t is not None:
            self.wake()  # an ejection or a re-admission changes the schedule

    def _probe_failing(self, peer: P) -> None:
        """Before a failed probe's verdict (lock held): e.g. take a later proof of life into account."""

    def _probe_answered(self, peer: P, answer: Any) -> None:
        """After an answered probe's verdict (lock held): e.g. learn what the answer says of the cluster."""

    def probe_result(self, peer: P, now: float, error: str | None = None, *,
                     timed_out: bool = False) -> Transition | None:
        """A probe of ``peer`` ended (lock held): answered (``error`` None) or failed. An answer feeds the
        latency-aware choice. Returns the transition for :meth:`_apply`."""
        h = peer.health
        if error is not None:
            return h.probe_failed(now, error, timed_out=timed_out)
        t = h.probe_answered(now)
        if h.latencies:
            METRICS.observe_probe(peer.name, h.latencies[-1])
        self.slow_call = self.balancer.compare_round_trips(now)
        return t
