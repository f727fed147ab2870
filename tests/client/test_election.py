"""Leader election on a real cluster: one active at a time, handover on resign, loss within the TTL."""

from __future__ import annotations

import threading

import pytest

import resilient_etcd as etcd3
from resilient_etcd.testing import EtcdCluster, wait_until


def test_single_active_and_handover(etcd_cluster: EtcdCluster) -> None:
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5) as a_client, \
            etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5) as b_client:
        a = a_client.election("ctl", ttl=5)
        b = b_client.election("ctl", ttl=5)
        assert a.campaign("a", timeout=5)
        assert a.is_leader() and a.leader()[0] == b"a"  # type: ignore[index]
        assert b.campaign("b", timeout=0.5) is False, "a second candidate must wait"
        observed, cancel = b.observe()
        assert next(observed) == b"a"
        won: list[bool] = []
        t = threading.Thread(target=lambda: won.append(b.campaign("b", timeout=10)))
        t.start()
        a.proclaim("a2")
        assert next(observed) == b"a2"
        a.resign()
        t.join(10)
        assert won == [True] and b.is_leader() and not a.is_leader()
        assert b.revision is not None and a.revision is None
        assert b.leader()[0] == b"b"  # type: ignore[index]
        with pytest.raises(etcd3.NotLeaderError):
            a.proclaim("stale")
        cancel()
        b.resign()
        assert b.leader() is None


@pytest.mark.etcd_cluster(size=1)
def test_leadership_lost_when_cut_off(etcd_cluster: EtcdCluster) -> None:
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=2) as c:
        lost = threading.Event()
        e = c.election("cut", ttl=2, on_lost=lambda _: lost.set())
        assert e.campaign("me", timeout=5)
        etcd_cluster.members[0].require_proxy().cut()
        assert lost.wait(8), "leadership loss must be signalled within the lease TTL (+ slack)"
        etcd_cluster.members[0].require_proxy().heal()
        wait_until(lambda: e.leader() is None, timeout=10, what="the server to expire our key")
        assert not e.is_leader()
