"""Health per (apiserver, resource), judged by the balancer's state machine: no servers, a fake clock."""

from __future__ import annotations

import pytest

pytest.importorskip("kubernetes", reason="resilient_etcd.kube needs the 'kube' extra")

from resilient_etcd.balancer.health import State
from resilient_etcd.kube.resources import Resources

A, B = "https://a:6443", "https://b:6443"
CM = ("configmaps", "/api/v1/configmaps")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def resources(clock: Clock, woken: list[int] | None = None) -> Resources:
    return Resources(check_interval=1.0, check_timeout=1.0, clock=clock,
                     wake=(lambda: woken.append(1)) if woken is not None else (lambda: None))


def test_a_request_that_got_no_answer_puts_the_resource_out_there_only() -> None:
    woken: list[int] = []
    r = resources(Clock(), woken)
    r.watch_opened(A, *CM, stream="watch-1")
    assert r.put_out(A, *CM, "GET got no answer within 2.5 s") == ["watch-1"], "its watches there end"
    assert r.is_out(A, "configmaps") and not r.is_out(B, "configmaps") and not r.is_out(A, "namespaces")
    assert r.put_out(A, *CM, "again") == [], "already out: nothing more to end"
    [row] = r.status()
    assert row["state"] == State.EJECTED.value and row["out"] == "again", "why: its latest failure"
    assert row["watches"] == 1 and woken


def test_out_is_checked_at_its_readmission_time_and_an_answer_readmits() -> None:
    clock = Clock()
    r = resources(clock)
    r.put_out(A, *CM, "no answer")
    assert r.due(clock.now + 0.5) == [], "not before the re-admission backoff"
    assert r.next_check(clock.now) == clock.now + 1.0
    clock.now += 1.0
    [path] = r.due(clock.now)
    assert path.health.state is State.PROBING and r.is_out(A, "configmaps"), "out until the check answers"
    assert r.due(clock.now + 5) == [], "one check at a time"
    clock.now += 0.01
    assert r.checked(path, None) == []
    assert not r.is_out(A, "configmaps") and r.status()[0]["out"] is None


def test_a_failed_readmission_check_backs_off() -> None:
    clock = Clock()
    r = resources(clock)
    r.put_out(A, *CM, "no answer")
    clock.now += 1.0
    [path] = r.due(clock.now)
    r.checked(path, "a limit=1 LIST answered 503")
    assert r.is_out(A, "configmaps")
    assert path.health.readmit_at == clock.now + 2.0, "the backoff doubled"


def test_quiet_watches_are_checked_once_per_interval_and_events_postpone_it() -> None:
    clock = Clock()
    r = resources(clock)
    r.watch_opened(A, *CM, stream="w1")
    t2 = r.watch_opened(A, *CM, stream="w2")
    assert r.due(clock.now + 0.5) == [], "just opened: not quiet yet"
    clock.now += 0.8
    r.watch_heard(A, "configmaps")
    assert r.due(clock.now + 0.9) == [], "an event postpones the check"
    clock.now += 1.0
    [path] = r.due(clock.now)
    assert r.due(clock.now + 0.5) == [], "one check for both watches"
    clock.now += 0.02
    assert r.checked(path, None) == [] and not r.is_out(A, "configmaps")
    r.watch_closed(A, "configmaps", 1)
    r.watch_closed(A, "configmaps", t2)
    assert r.due(clock.now + 100) == [] and r.next_check(clock.now) == float("inf"), \
        "a resource in use with no watch is not checked"


def test_a_quiet_check_without_answer_ends_the_watches_unless_they_spoke_meanwhile() -> None:
    clock = Clock()
    r = resources(clock)
    r.watch_opened(A, *CM, stream="w1")
    clock.now += 1.0
    [path] = r.due(clock.now)
    clock.now += 0.5
    r.watch_heard(A, "configmaps")  # an event arrived while the check waited
    clock.now += 0.5
    assert r.checked(path, "no answer within 1 s", timed_out=True) == [], "no verdict: the path delivered"
    assert not r.is_out(A, "configmaps")
    clock.now += 1.0
    [path] = r.due(clock.now)
    clock.now += 1.0
    assert r.checked(path, "no answer within 1 s", timed_out=True) == ["w1"]
    assert r.is_out(A, "configmaps")
    assert path.health.dead_time() == 2.0, "the next check waits longer (a slow path is not a dead one)"
