"""The health state machine with a fake clock: ejection, slow-but-alive, re-admission."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient_etcd.balancer.health import EndpointHealth, State
from resilient_etcd.exceptions import ConfigurationError
from resilient_etcd.policies import HealthPolicy

P = HealthPolicy(probe_interval=0.2, dead_after=1.0, latency_factor=3.0, readmit_backoff=0.2,
                 readmit_backoff_max=1.6)


def probe(h: EndpointHealth, now: float, rtt: float) -> None:
    assert h.probe_due(now)
    h.probe_sent(now)
    h.probe_answered(now + rtt)


def test_healthy_probes_on_schedule() -> None:
    h = EndpointHealth(P, 0.0)
    probe(h, 0.0, 0.001)
    assert not h.probe_due(0.1)
    assert h.probe_due(0.2)
    assert h.state is State.HEALTHY and h.latency == 0.001


def test_late_probe_makes_suspect_then_dead_probe_ejects() -> None:
    h = EndpointHealth(P, 0.0)
    h.probe_sent(0.0)
    assert h.tick(0.4) is None
    t = h.tick(0.6)
    assert t is not None and t.new is State.SUSPECT
    assert h.usable, "suspect endpoints still carry traffic: slow is not dead"
    t = h.probe_failed(1.0, "DEADLINE_EXCEEDED")
    assert t is not None and t.ejected and h.state is State.EJECTED and not h.usable


def test_slow_but_alive_is_never_ejected() -> None:
    h = EndpointHealth(P, 0.0)
    now = 0.0
    for rtt in [0.001] * 5 + [0.6, 0.8, 0.7, 0.9] * 10:
        now += P.probe_interval
        probe(h, now, rtt)
        now += rtt
        assert h.state is not State.EJECTED
    assert h.dead_time() >= 3.0 * 0.9 - 1e-9  # the dead time stretched with the observed latency


def test_readmission_with_doubling_backoff() -> None:
    h = EndpointHealth(P, 0.0)
    h.fail(0.0, "connection refused", hard=True)
    assert h.state is State.EJECTED and not h.probe_due(0.1) and h.probe_due(0.2)
    h.probe_sent(0.2)
    assert h.state is State.PROBING
    h.probe_failed(0.3, "refused")
    assert h.state is State.EJECTED and h.readmit_at == 0.3 + 0.4
    h.probe_sent(0.7)
    t = h.probe_answered(0.71)
    assert t is not None and t.new is State.HEALTHY


def test_soft_failures_do_not_eject() -> None:
    h = EndpointHealth(P, 0.0)
    for i in range(10):
        assert h.fail(float(i), "etcdserver: leader changed", hard=False) is None
    assert h.state is State.HEALTHY and h.consecutive_failures == 10


@given(st.lists(st.floats(min_value=0.0, max_value=0.9), min_size=1, max_size=50))
def test_any_answer_within_dead_time_keeps_it_in(rtts: list[float]) -> None:
    h = EndpointHealth(P, 0.0)
    now = 0.0
    for rtt in rtts:
        now += P.probe_interval
        h.probe_sent(now)
        h.tick(now + rtt)
        h.probe_answered(now + rtt)
        now += rtt
        assert h.state is State.HEALTHY


def test_probe_deadline_doubles_after_timeouts_so_a_slow_path_can_answer() -> None:
    h = EndpointHealth(P, 0.0)
    assert h.dead_time() == 1.0
    h.probe_sent(0.0)
    h.probe_failed(1.0, "DEADLINE_EXCEEDED", timed_out=True)
    assert h.state is State.EJECTED and h.dead_time() == 2.0
    h.probe_sent(1.2)
    h.probe_failed(3.2, "DEADLINE_EXCEEDED", timed_out=True)
    assert h.dead_time() == 4.0
    for i in range(10):
        h.probe_sent(10.0 + 40 * i)
        h.probe_failed(10.0 + 40 * i + h.dead_time(), "DEADLINE_EXCEEDED", timed_out=True)
    assert h.dead_time() == 32.0, "capped"
    h.probe_sent(11.0)
    h.probe_answered(12.5)  # re-admitted; slow path or thawed member? the doubled dead time holds
    assert h.state is State.HEALTHY and h.dead_time() == 32.0 and h.latency is None
    assert h.probe_due(12.5, busy=False), "a second probe at once tells"
    h.probe_sent(12.5)
    h.probe_answered(14.0)  # slow again: the path is slow, and latency-based timing now knows it
    assert h.dead_time() == 3.0 * 1.5
    h.probe_failed(20.0, "refused")  # a refused connection is not a timeout: no doubling
    assert h.dead_time() == 3.0 * 1.5


def test_probes_only_when_they_buy_something() -> None:
    """Busy (calls waiting): probed after probe_interval of quiet. An answered call is quiet's end,
    like a probe answer. Idle: a heartbeat every idle_probe_interval."""
    p = HealthPolicy(probe_interval=0.2, idle_probe_interval=5.0, dead_after=1.0)
    h = EndpointHealth(p, 0.0)
    probe(h, 0.0, 0.001)
    assert not h.probe_due(0.3, busy=False)
    assert h.probe_due(5.0, busy=False)
    assert h.probe_due(0.3, busy=True)
    h.last_heard = 0.25  # a call was answered: the connection is alive without asking
    assert not h.probe_due(0.3, busy=True) and h.next_probe_at(busy=True) == 0.45
    assert h.next_probe_at(busy=False) == 5.25
    h.probe_sent(0.5)
    assert h.next_probe_at(busy=True) == float("inf"), "one probe out at a time"


def test_unwell_endpoints_keep_their_schedule_whatever_the_traffic() -> None:
    p = HealthPolicy(probe_interval=0.2, idle_probe_interval=5.0, dead_after=1.0, readmit_backoff=0.4)
    h = EndpointHealth(p, 0.0)
    h.probe_sent(0.0)
    h.tick(0.6)
    assert h.state is State.SUSPECT
    h.probe_answered(0.7)
    h.fail(1.0, "UNAVAILABLE", hard=True)
    assert h.state is State.EJECTED and h.next_probe_at(busy=False) == 1.4  # re-admission, not the heartbeat


def test_idle_interval_below_probe_interval_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="idle_probe_interval"):
        HealthPolicy(probe_interval=1.0, idle_probe_interval=0.5, dead_after=2.0)


def test_a_probe_behind_answers_still_arriving_is_no_verdict() -> None:
    """Silence is timed from the last answer on the connection: a probe queued behind a page of a
    large range says "busy", not "dead"."""
    h = EndpointHealth(P, 0.0)
    h.probe_sent(0.0)
    h.last_heard = 0.7  # a page arrived while the probe waited
    assert h.tick(0.9) is None, "quiet for 0.2 s only: not suspect"
    assert h.probe_failed(1.0, "DEADLINE_EXCEEDED", timed_out=True) is None
    assert h.state is State.HEALTHY and h.probe_sent_at is None and h.probe_timeouts == 0
    assert h.probe_due(0.9 + P.probe_interval), "asked again one interval after the last answer"


def test_a_connection_that_goes_quiet_after_its_answers_is_ejected() -> None:
    h = EndpointHealth(P, 0.0)
    h.last_heard = 0.5
    h.probe_sent(0.7)  # the path died at 0.5: nothing arrives any more
    t = h.tick(1.3)
    assert t is not None and t.new is State.SUSPECT
    t = h.probe_failed(1.7, "DEADLINE_EXCEEDED", timed_out=True)
    assert t is not None and t.ejected


def test_latency_of_a_probe_that_waited_behind_a_page_is_its_own() -> None:
    h = EndpointHealth(P, 0.0)
    h.probe_sent(0.0)
    h.last_heard = 0.6  # the page ahead of it
    h.probe_answered(0.61)
    assert h.latency == pytest.approx(0.01)
    assert h.dead_time() == P.dead_after, "queueing behind answers does not stretch the dead time"


def test_a_thawed_member_does_not_stretch_the_next_dead_time() -> None:
    """A frozen member answers its re-admission probe when it wakes, seconds late: that is no latency.
    (It was: the next freeze of the same member then took 3x the thaw to notice.)"""
    h = EndpointHealth(P, 0.0)
    h.probe_sent(0.0)
    h.probe_failed(1.0, "DEADLINE_EXCEEDED", timed_out=True)  # frozen at 0
    h.probe_sent(1.2)
    h.probe_answered(5.0)  # woke up at 5 s
    h.probe_sent(5.0)
    h.probe_answered(5.001)  # the confirmation: a fast path
    assert h.dead_time() == P.dead_after


def test_usable_follows_state_and_maintenance() -> None:
    """``usable`` is kept as an attribute (the pick reads it on every call): every way it can change
    must update it."""
    h = EndpointHealth(P, 0.0)
    assert h.usable
    h.maintenance += 1
    assert not h.usable, "a member under our own defragment carries no traffic"
    h.maintenance += 1
    h.maintenance -= 1
    assert not h.usable, "two actions: still one running"
    h.maintenance -= 1
    assert h.usable
    h.probe_sent(0.0)
    assert h.probe_failed(1.0, "UNAVAILABLE") is not None
    assert h.state is State.EJECTED and not h.usable
    h.maintenance += 1
    h.maintenance -= 1
    assert not h.usable, "the end of a maintenance does not re-admit an ejected member"
