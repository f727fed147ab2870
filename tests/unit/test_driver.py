"""The shared health driver and retry loop, without servers: what every transport gets from balancer/."""

from __future__ import annotations

import logging
import sys
import threading

import pytest

from resilient_etcd.balancer.driver import BasePeer, Cleanup, HealthDriver
from resilient_etcd.balancer.health import State, Transition
from resilient_etcd.balancer.prober import Waker
from resilient_etcd.balancer.retrying import make_retrying
from resilient_etcd.policies import HealthPolicy

P = HealthPolicy(probe_interval=0.1, dead_after=0.8, idle_probe_interval=10.0)


class Driver(HealthDriver[BasePeer]):
    def __init__(self, n: int = 3) -> None:
        waker = Waker()
        super().__init__([BasePeer(f"m{i}", P, waker) for i in range(n)], P, waker,
                         log=logging.getLogger("test"), tick_cap=0.05)
        self.sent: list[str] = []
        self.closed_under_lock: list[bool] = []

    def _send_probe(self, peer: BasePeer) -> None:
        self.sent.append(peer.name)

    def _changed(self, peer: BasePeer, t: Transition) -> Cleanup | None:
        if not t.ejected:
            return None

        def close() -> None:  # the driver runs it after letting go of its lock
            self.closed_under_lock.append(_owned(self._lock))
        return close


def _owned(lock: threading.RLock) -> bool:
    """Is ``lock`` held by this thread? (An RLock acquired again here succeeds either way: ask it.)"""
    return bool(lock._is_owned())  # type: ignore[attr-defined]


def test_a_hard_failure_ejects_and_its_closing_runs_outside_the_lock() -> None:
    d = Driver()
    a, b, _ = d.peers
    d.report_failure(a, "reset", hard=True)
    assert a.health.state is State.EJECTED and d.closed_under_lock == [False]
    assert d.pick() is b, "the next usable endpoint takes the traffic"


def test_a_failure_of_a_connection_already_replaced_says_nothing() -> None:
    d = Driver()
    a = d.peers[0]
    a.generation = 2
    d.report_failure(a, "reset", hard=True, generation=1)
    assert a.health.state is State.HEALTHY and d.closed_under_lock == []


def test_the_first_call_on_an_idle_endpoint_asks_for_a_probe_round_and_an_answer_is_proof_of_life() -> None:
    d = Driver(1)
    (a,) = d.peers
    d.probe_step(0.0)  # a new endpoint: probed at once
    with d._lock:
        d.probe_result(a, 0.005)
    d.sent.clear()
    idle_at = d.probe_step(0.05)
    assert d.sent == [] and idle_at >= P.idle_probe_interval, "idle: only the heartbeat"
    a.begin()  # a call waits, and nothing came back for probe_interval: the next round probes it
    busy_at = d.probe_step(0.11)
    assert d.sent == ["m0"] and busy_at <= 0.11 + P.probe_interval
    a.end(answered=True)
    assert a.outstanding == 0 and a.health.last_heard > 0


def test_calls_are_counted_exactly_without_a_lock_under_forced_thread_switches() -> None:
    """begin/end take no lock on the hot path: the count must still be exact when threads switch between
    any two bytecodes (a counter updated with ``+=`` loses updates here), and a call that starts while the
    prober dozes wakes it once."""
    d = Driver(1)
    (a,) = d.peers
    wakes: list[int] = []
    d.waker.reg = type("Reg", (), {"wake": lambda self: wakes.append(1)})()  # type: ignore[assignment]
    d.waker.dozing = True
    a.begin()
    a.begin()
    assert wakes == [1] and a.outstanding == 2, "woken by the first call only: it ticks from then on"
    a.end(answered=False)
    a.end(answered=False)
    d.waker.dozing = False
    seen_negative: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20_000):
                a.begin()
                if a.outstanding < 1:
                    seen_negative.append(a.outstanding)
                a.end(answered=True)
        except BaseException as e:  # an end() with no call counted: pop from an empty list
            errors.append(e)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == [] and seen_negative == [] and a.outstanding == 0


def test_a_result_that_came_from_elsewhere_is_no_proof_of_life() -> None:
    """A hedged call whose copy answered on another endpoint: the endpoint it ran on is not re-admitted."""
    d = Driver()
    a = d.peers[0]
    d.report_failure(a, "reset", hard=True)
    heard = a.health.last_heard
    assert d.run(a, lambda p: "copy's answer", proof=lambda r: False) == "copy's answer"
    assert a.health.state is State.EJECTED and a.health.last_heard == heard and a.outstanding == 0
    d.run(a, lambda p: "its own answer")
    assert a.health.state is not State.EJECTED and a.health.last_heard > heard


def test_a_hedge_goes_to_the_healthy_endpoint_the_caller_allows_and_a_win_moves_reads_there() -> None:
    d = Driver()
    a, b, c = d.peers
    b.health.round_trip = lambda: 0.001  # type: ignore[method-assign]
    c.health.round_trip = lambda: 0.010  # type: ignore[method-assign]
    assert d.hedge_target(a) is b, "the shortest round trip"
    assert d.hedge_target(a, lambda p: p is not b) is c, "the caller's filter (a resource out there)"
    d.report_failure(c, "reset", hard=True)
    assert d.hedge_target(a, lambda p: p is not b) is None, "nowhere healthy to hedge to"
    d.hedge_won(a, b)
    assert d.pick() is b


def test_retry_after_is_honoured_up_to_its_cap_and_never_past_the_deadline() -> None:
    class Busy(Exception):
        retry_after = 7.0

    waits: list[float] = []
    remaining = [100.0]
    attempts = 0

    def attempt() -> None:
        nonlocal attempts
        attempts += 1
        remaining[0] = {1: 100.0, 2: 2.0}.get(attempts, -1.0)  # the deadline nears, then passes
        raise Busy()

    r = make_retrying(Busy, lambda: remaining[0], attempts=None, backoff_initial=0.05, backoff_max=1.0,
                      retry_after=lambda e: getattr(e, "retry_after", None), retry_after_max=5.0,
                      sleep=waits.append)
    with pytest.raises(Busy):
        r(attempt)
    assert waits == [5.0, 2.0], "7 s asked: capped at retry_after_max, then cut to what is left of the deadline"
    assert attempts == 3, "the deadline gone: no more attempts"


def test_close_stops_the_retries() -> None:
    closed = threading.Event()
    calls = 0

    def attempt() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            closed.set()
        raise ValueError("again")

    r = make_retrying(ValueError, lambda: None, attempts=10, backoff_initial=0.0, backoff_max=0.0,
                      closed=closed.is_set, sleep=lambda s: None)
    with pytest.raises(ValueError):
        r(attempt)
    assert calls == 2


def test_a_real_call_counts_while_it_runs_and_an_answer_readmits_its_endpoint() -> None:
    d = Driver()
    a = d.peers[0]
    seen: list[int] = []
    assert d.run(a, lambda p: seen.append(p.outstanding) or "ok") == "ok"
    assert seen == [1] and a.outstanding == 0
    with pytest.raises(KeyError):  # any failure ends the count, whatever its type
        d.run(a, lambda p: {}["missing"])
    assert a.outstanding == 0
    d.report_failure(a, "reset", hard=True)
    d.run(a, lambda p: None, counted=False)  # a stream's answer (not counted) re-admits it too
    assert a.health.state is State.HEALTHY and a.outstanding == 0 and a.health.last_heard > 0


class Hooked(Driver):
    def __init__(self) -> None:
        super().__init__(2)
        self.seen: list[tuple[str, object, bool]] = []

    def _probe_failing(self, peer: BasePeer) -> None:
        self.seen.append(("failing", peer.health.state, _owned(self._lock)))

    def _probe_answered(self, peer: BasePeer, answer: object) -> None:
        self.seen.append(("answered", answer, _owned(self._lock)))


def test_a_probe_end_runs_the_transport_hooks_under_the_lock_and_ignores_stale_or_maintenance_probes() -> None:
    import time

    d = Hooked()
    a, b = d.peers
    d.probe_step(time.monotonic())  # new endpoints: both probed at once
    assert sorted(d.sent) == ["m0", "m1"] and a.health.probe_sent_at is not None
    a.generation = 2
    d.probe_ended(a, "reset", generation=1)  # sent on a connection since replaced: no verdict
    assert d.seen == [] and a.health.probe_sent_at is None and a.health.state is State.HEALTHY
    d.probe_ended(b, answer="status")
    assert d.seen == [("answered", "status", True)]
    assert b.health.probe_sent_at is None and len(b.health.round_trips) == 1, "an answer is a round trip measured"
    b.health.probe_sent_at = time.monotonic()
    b.health.maintenance = True  # our own defragment: a probe sent before it began says nothing
    d.probe_ended(b, "timed out", timed_out=True)
    assert len(d.seen) == 1 and b.health.probe_sent_at is None
    b.health.maintenance = False
    a.health.probe_sent_at = time.monotonic()
    d.probe_ended(a, "timed out", timed_out=True, generation=2)
    assert d.seen[1] == ("failing", State.HEALTHY, True)
