"""Writes go to the raft leader; a frozen leader costs a write about a second, not etcd's 7 s request
timeout; a leader we cannot reach (but raft still follows), or reach only slowly, is written to through
the followers."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

import pytest

import resilient_etcd as etcd3
from resilient_etcd.testing import EtcdCluster, EtcdMember


def _member_id(m: EtcdMember) -> int:
    return int(m.status().header.member_id)


def _wait_for_leader(c: etcd3.Etcd3Client, leader: EtcdMember, timeout: float = 10) -> None:
    """Poll (with a deadline) until the client's writes are answered by ``leader``."""
    want = _member_id(leader)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if c.put("/leader/probe", "x").header.member_id == want:
            return
        time.sleep(0.05)
    raise AssertionError(f"writes never reached the leader {leader}")


@dataclass
class Writer:
    """A put every 10 ms in a thread, each outcome recorded as (start, end, error or None)."""

    client: etcd3.Etcd3Client
    calls: list[tuple[float, float, str | None]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.client.put("/leader/k", str(i))
                self.calls.append((started, time.monotonic(), None))
            except etcd3.Etcd3Exception as e:
                self.calls.append((started, time.monotonic(), f"{type(e).__name__}: {e}"))
            i += 1
            self.stop.wait(0.01)

    def first_success_started_after(self, t: float, timeout: float) -> float | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            done = [e for s, e, err in list(self.calls) if err is None and s > t]
            if done:
                return done[0] - t
            time.sleep(0.02)
        return None

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


@pytest.mark.etcd_cluster(size=3)
def test_writes_go_to_the_leader(etcd_cluster: EtcdCluster) -> None:
    leader = etcd_cluster.leader()
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=10) as c:
        _wait_for_leader(c, leader)
        served = {c.put("/leader/k", str(i)).header.member_id for i in range(20)}
    assert served == {_member_id(leader)}


@pytest.mark.etcd_cluster(size=3)
def test_writes_stay_on_the_active_member_when_asked(etcd_cluster: EtcdCluster) -> None:
    """``prefer_leader=False``: writes go where reads go (python-etcd3's behaviour)."""
    leader = etcd_cluster.leader()
    follower = next(m for m in etcd_cluster.members if m is not leader)
    policy = etcd3.HealthPolicy(prefer_leader=False)
    with etcd3.client(endpoints=[follower.endpoint, leader.endpoint], timeout=10, health=policy) as c:
        served = {c.put("/leader/k", str(i)).header.member_id for i in range(20)}
    assert served == {_member_id(follower)}


@pytest.mark.etcd_cluster(size=3)
def test_a_frozen_leader_costs_a_write_about_a_second(etcd_cluster: EtcdCluster) -> None:
    """SIGSTOP the leader under a stream of writes: the write in flight fails as possibly applied (never
    retried), and the next one goes to the new leader once it is elected. Before, a write sent to a
    follower waited etcd's request timeout (7 s)."""
    leader = etcd_cluster.leader()
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=10) as c:
        _wait_for_leader(c, leader)
        writer = Writer(c)
        try:
            writer.first_success_started_after(time.monotonic(), 5)
            frozen = time.monotonic()
            leader.pause()
            gap = writer.first_success_started_after(frozen, 8)
        finally:
            leader.resume()
            writer.close()
    failures = [err for s, e, err in writer.calls if err is not None]
    assert gap is not None, "no write succeeded within 8 s of the freeze"
    assert gap < 4, f"the next write succeeded {gap:.2f} s after the freeze (etcd's request timeout is 7 s)"
    assert len(failures) <= 1, failures  # only the write that was in flight, reported as possibly applied
    assert all("may or may not have been applied" in f for f in failures), failures


@pytest.mark.etcd_cluster(size=3)
def test_a_leader_we_cannot_reach_is_written_to_through_the_followers(etcd_cluster: EtcdCluster) -> None:
    """Only our path to the leader is blackholed (raft still follows it): a read through a follower is
    answered in the leader's term (it confirmed the read index), so the writes go through the followers
    without waiting out ``leader_wait`` (before: one write waited all of it — 3 s puts in S4)."""
    leader = etcd_cluster.leader()
    policy = etcd3.HealthPolicy(leader_wait=5.0)  # long: a write that waited it cannot pass unnoticed
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=10, health=policy) as c:
        _wait_for_leader(c, leader)
        leader.require_proxy().blackhole()
        try:
            took = []
            for i in range(10):
                started = time.monotonic()
                # the write in flight when our connection to the leader was noticed dead may fail
                with contextlib.suppress(etcd3.ConnectionFailedError):
                    c.put("/leader/k", str(i))
                took.append(time.monotonic() - started)
        finally:
            etcd_cluster.heal_all()
        assert etcd_cluster.leader() is leader, "the leader changed: the test proves nothing"
    assert max(took) < 2.5, f"a write waited for a new leader although the old one still leads: {took}"
    assert sum(t > 0.5 for t in took[-5:]) == 0, took


@pytest.mark.etcd_cluster(size=3)
def test_a_slow_link_to_the_leader_loses_the_writes_and_wins_them_back(etcd_cluster: EtcdCluster) -> None:
    """300 ms each way on our link to the leader only (raft's own links stay fast): writes go to a
    follower, which forwards them, instead of paying 600 ms each; once the link is fast again, the
    leader's heartbeat probes win the writes back. No member is ejected: slow is not dead."""
    leader = etcd_cluster.leader()
    lid = _member_id(leader)
    policy = etcd3.HealthPolicy(idle_probe_interval=1.0)  # how soon an unused leader's probes show it fast again
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=10, health=policy) as c:
        _wait_for_leader(c, leader)
        leader.require_proxy().latency(300)
        try:
            took: list[tuple[float, int]] = []  # (seconds, member that answered)
            end = time.monotonic() + 20
            while time.monotonic() < end and not (len(took) >= 5 and all(t < 0.15 for t, _ in took[-5:])):
                started = time.monotonic()
                served = c.put("/leader/k", "slow").header.member_id
                took.append((time.monotonic() - started, served))
        finally:
            etcd_cluster.heal_all()
        assert any(t > 0.5 for t, _ in took), f"the link was not slow: the test proves nothing ({took})"
        assert all(t < 0.15 and m != lid for t, m in took[-5:]), f"writes stayed on the slow leader: {took}"
        _wait_for_leader(c, leader, timeout=15)  # back on the leader once its link is fast
        assert etcd_cluster.leader() is leader, "the leader changed: the test proves nothing"
        assert sum(h.ejections for h in c.endpoint_health()) == 0, c.endpoint_health()


@pytest.mark.etcd_cluster(size=3)
def test_a_cluster_without_a_leader_is_not_asked_ten_times_a_second(etcd_cluster: EtcdCluster) -> None:
    """Quorum lost with the leader: the client hunts for a new leader (a probe per endpoint every 100 ms)
    for 2 x leader_wait, then goes back to its usual schedule instead of asking at that rate for as long
    as the outage lasts."""
    survivor, _, old_leader = etcd_cluster.members
    etcd_cluster.move_leader(old_leader)
    policy = etcd3.HealthPolicy(leader_wait=1.0)
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=3, health=policy) as c:
        _wait_for_leader(c, old_leader)
        etcd_cluster.stop_quorum()
        try:
            with contextlib.suppress(etcd3.Etcd3Exception):
                c.put("/leader/k", "x")  # refused by the stopped leader: its connection is ejected, the hunt begins
            time.sleep(2.5)  # the scenario: the outage goes on past 2 x leader_wait
            before = survivor.metric("grpc_server_handled_total")
            time.sleep(3)  # the measurement window
            asked = survivor.metric("grpc_server_handled_total") - before
        finally:
            etcd_cluster.restore_quorum()
    assert asked < 5, f"{asked:.0f} RPCs in 3 s to the member without a leader"
