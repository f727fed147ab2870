"""A slow but alive member loses the reads to a faster one, with no ejection, and is chosen again once
it is fast (the benchmark's S6: 300 ms ± 100 ms each way on the member in use; our p50 was 655 ms)."""

from __future__ import annotations

import statistics
import time

import pytest

import resilient_etcd as etcd3
from resilient_etcd.testing import EtcdCluster, EtcdMember


def _active(cluster: EtcdCluster, c: etcd3.Etcd3Client) -> EtcdMember:
    name = next(h.endpoint for h in c.endpoint_health() if h.active)
    return next(m for m in cluster.members if m.endpoint == name)


def _gets(c: etcd3.Etcd3Client, seconds: float) -> list[float]:
    took = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        c.get("/latency/k")
        took.append(time.monotonic() - started)
    return took


@pytest.mark.etcd_cluster(size=3)
def test_a_slow_member_loses_the_reads_and_wins_them_back(etcd_cluster: EtcdCluster) -> None:
    # heartbeats every second, so that a healed member's round trips are known again soon
    policy = etcd3.HealthPolicy(idle_probe_interval=1.0)
    two = etcd_cluster.endpoints[:2]  # with two, "chosen again" can only mean the healed one
    with etcd3.client(endpoints=two, timeout=10, health=policy) as c:
        c.put("/latency/k", "v")
        _gets(c, 1.5)  # every member has answered a heartbeat or a call
        slow = _active(etcd_cluster, c)
        slow.require_proxy().latency(300, jitter=100)
        try:
            moved = _gets(c, 6)
            after_move = _active(etcd_cluster, c)
        finally:
            slow.require_proxy().heal()
        # the member that took over slows down in turn: the first one, healed, wins the reads back
        second = after_move
        second.require_proxy().latency(300, jitter=100)
        try:
            _gets(c, 6)
            third = _active(etcd_cluster, c)
        finally:
            second.require_proxy().heal()
        ejections = sum(h.ejections for h in c.endpoint_health())
    assert after_move is not slow, "the reads stayed on the slow member"
    assert statistics.median(moved[-20:]) < 0.05, f"reads after the move: median {statistics.median(moved[-20:]):.3f} s"
    assert third is slow, "the healed member did not win the reads back"
    assert ejections == 0, "slow is not dead: nothing may be ejected"
