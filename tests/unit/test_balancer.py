"""The balancer with a fake clock (choice, latency moves, probe schedule) and the process's prober."""

from __future__ import annotations

import gc
import threading
import time

from resilient_etcd.balancer.choice import SLOW_HOLD, Balancer
from resilient_etcd.balancer.health import EndpointHealth, State
from resilient_etcd.balancer.prober import WORKERS, Prober
from resilient_etcd.policies import HealthPolicy
from resilient_etcd.testing import wait_until

P = HealthPolicy(probe_interval=0.1, dead_after=0.8, idle_probe_interval=10.0)


class Peer:
    def __init__(self, name: str) -> None:
        self.name = name
        self.health = EndpointHealth(P, 0.0)
        self.outstanding = 0
        self.want_probe = False

    def __repr__(self) -> str:
        return self.name


def peers(n: int = 3) -> list[Peer]:
    return [Peer(f"m{i}") for i in range(n)]


def answer(p: Peer, sent: float, rtt: float) -> None:
    p.health.probe_sent(sent)
    p.health.probe_answered(sent + rtt)


def test_choice_prefers_healthy_then_suspect_in_order_after_the_one_in_use() -> None:
    a, b, c = ps = peers()
    moves: list[tuple[str, str]] = []
    bal = Balancer(ps, on_move=lambda old, new, why: moves.append((old.name, new.name)))
    assert bal.pick() is a
    a.health.fail(1.0, "reset", hard=True)
    assert bal.pick() is None, "the one in use is out: the owner chooses under its lock"
    assert bal.choose() is b and moves == [("m0", "m1")]
    b.health.probe_sent(2.0)
    b.health.tick(2.5)  # late probe: suspect, still usable
    assert b.health.state is State.SUSPECT and bal.pick() is b
    assert bal.choose(avoid=b) is c, "a healthy one before a suspect one"


def test_panic_keeps_every_endpoint_in_play_least_recently_ejected_first() -> None:
    a, b, c = ps = peers()
    bal = Balancer(ps)
    for t, p in ((1.0, b), (2.0, c), (3.0, a)):
        p.health.fail(t, "refused", hard=True)
    assert bal.choose() is b
    assert bal.choose(avoid=b) is c, "b was just tried and failed: the next oldest"


def test_a_slow_endpoint_in_use_gives_way_and_moves_are_held_apart() -> None:
    a, b = ps = peers(2)
    bal = Balancer(ps)
    answer(b, 0.0, 0.001)
    answer(a, 0.0, 0.6)
    assert bal.compare_round_trips(1.0) and bal.active is a, "one slow answer is not a trend"
    answer(a, 1.0, 0.6)
    slow_call = bal.compare_round_trips(2.0)
    assert bal.active is b
    assert abs(slow_call - (0.02 + 2 * 0.001)) < 1e-9, "slow calls: over twice the best round trip + margin"
    # b turns slow too, a recovers: the next move waits out the hold
    answer(a, 2.0, 0.001)
    answer(a, 2.1, 0.001)
    answer(b, 2.0, 0.6)
    answer(b, 2.7, 0.6)
    bal.compare_round_trips(3.0)
    assert bal.active is b, "within the hold"
    bal.compare_round_trips(2.0 + SLOW_HOLD + 0.1)
    assert bal.active is a, "after the hold"


def test_probes_only_when_they_buy_something() -> None:
    a, b = ps = peers(2)
    bal = Balancer(ps)
    _, send = bal.probe_round(0.0)
    assert send == [a, b], "first look: everything, once"
    for p in ps:
        p.health.probe_answered(0.001)
    assert bal.probe_round(1.0)[1] == [], "idle: nothing before the heartbeat"
    assert bal.next_wake(1.0, 0.05) == 10.0
    a.outstanding = 1  # a call waits on a: the busy schedule, ticking
    assert bal.next_wake(1.0, 0.05) == 1.05
    assert bal.probe_round(1.0)[1] == [a]
    a.health.probe_answered(1.001)
    a.health.last_heard = 1.05  # answers keep coming: no probe needed
    assert bal.probe_round(1.1)[1] == []
    assert bal.probe_round(1.16)[1] == [a]
    a.health.probe_answered(1.161)
    a.outstanding = 0
    b.want_probe = True  # slow calls on b: measured at most once a second
    assert bal.next_wake(1.2, 0.05) == 1.2 + 0.05, "want_probe: due now (last probe long ago)"
    assert bal.probe_round(1.5)[1] == [b]
    b.health.probe_answered(1.501)
    b.want_probe = True
    assert bal.probe_round(2.0)[1] == []
    assert bal.probe_round(2.6)[1] == [b]
    assert bal.probe_round(11.0)[1] == []
    assert bal.probe_round(11.2)[1] == [a], "the heartbeat, 10 s after a was last heard of"


def test_a_hunt_probes_endpoints_whose_answers_keep_coming() -> None:
    """A write waiting for a new leader needs Status answers; reads answered on the other members used to
    keep their probes back (they proved the connection alive), so the leader was learnt only after
    leader_wait (seen as a 3 s put in S4 on a netns cluster)."""
    a, b = ps = peers(2)
    bal = Balancer(ps)
    bal.probe_round(0.0)
    for p in ps:
        p.health.probe_answered(0.001)
    b.outstanding = 1
    b.health.last_heard = 1.0  # reads keep being answered on b
    assert bal.probe_round(1.01)[1] == [], "not hunting: answers are proof enough"
    assert bal.probe_round(1.02, hunting=True)[1] == [a, b]


def test_replacing_the_endpoint_set_keeps_the_one_in_use_when_it_stays() -> None:
    a, _, c = ps = peers()
    bal = Balancer(ps)
    bal.replace([a, c])
    assert bal.active is a and bal.peers == [a, c]
    bal.replace([c])
    assert bal.active is c


class Driver:
    def __init__(self, every: float = float("inf")) -> None:  # (a closed pool says inf: never due)
        self.steps = 0
        self.every = every
        self.stepped = threading.Event()

    def probe_step(self, now: float) -> float:
        self.steps += 1
        self.stepped.set()
        return now + self.every


def test_one_thread_for_any_number_of_drivers_and_none_when_they_are_gone() -> None:
    prober = Prober(name="test-prober")
    drivers = [Driver() for _ in range(100)]
    regs = [prober.register(d) for d in drivers]
    steps = [d.steps for d in drivers]
    wait_until(lambda: all(d.steps >= 1 for d in drivers), timeout=5, what="every driver's first step")
    assert sum(t.name == "test-prober" for t in threading.enumerate()) == 1
    steps = [d.steps for d in drivers]
    time.sleep(0.2)  # (checking that nothing happens: idle drivers are not stepped before they are due)
    assert [d.steps for d in drivers] == steps
    drivers[7].stepped.clear()
    regs[7].wake()
    assert drivers[7].stepped.wait(5) and drivers[7].steps == steps[7] + 1
    drivers.clear()
    regs.clear()
    gc.collect()
    keep = Driver()
    prober.register(keep).wake()  # a wake-up lets the thread notice the collected ones
    wait_until(lambda: prober.drivers == 1, timeout=5, what="collected drivers dropped")
    assert keep.steps >= 1


def test_the_thread_ends_with_the_last_driver_and_blocking_probes_are_bounded() -> None:
    prober = Prober(name="test-prober-2")
    driver = Driver()
    reg = prober.register(driver)
    release = threading.Event()
    running: list[int] = []
    for i in range(3 * WORKERS):
        prober.run_blocking(lambda i=i: (running.append(i), release.wait(5)))
    wait_until(lambda: len(running) == WORKERS, timeout=5, what="the workers busy")
    assert sum(t.name == "test-prober-2-worker" for t in threading.enumerate()) == WORKERS
    release.set()
    wait_until(lambda: len(running) == 3 * WORKERS, timeout=5, what="every job run")
    reg.close()
    wait_until(lambda: not any(t.name.startswith("test-prober-2") for t in threading.enumerate()), timeout=5,
               what="the prober thread and its workers to end")
    reg2 = prober.register(Driver())
    wait_until(lambda: any(t.name == "test-prober-2" for t in threading.enumerate()), timeout=5,
               what="a new thread for a new driver")
    reg2.close()


def test_a_blocking_probe_never_waits_behind_another_while_a_worker_could_start() -> None:
    prober = Prober(name="test-prober-3")
    driver = Driver()  # (held: the prober holds drivers weakly, and its workers end with the last one)
    reg = prober.register(driver)
    warmed = threading.Event()
    prober.run_blocking(warmed.set)
    assert warmed.wait(5)
    wait_until(lambda: prober._idle_workers == 1, timeout=5, what="the one worker idle")
    release, second = threading.Event(), threading.Event()
    # two jobs back to back: the idle worker takes one of them, the other needs a worker of its own
    prober.run_blocking(lambda: release.wait(10))
    prober.run_blocking(second.set)
    try:
        assert second.wait(5), "the second job waited behind a blocked one while fewer than WORKERS ran"
    finally:
        release.set()
        reg.close()
