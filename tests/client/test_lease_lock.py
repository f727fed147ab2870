"""Leases kept alive through restarts, lost loudly when cut off; locks on top of them."""

from __future__ import annotations

import threading
import time

import pytest

import resilient_etcd as etcd3
from resilient_etcd.testing import EtcdCluster, wait_until


def test_kept_lease_and_its_key_survive_a_restart_of_the_member_in_use(etcd_cluster: EtcdCluster) -> None:
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5) as c:
        lost = threading.Event()
        lease = c.lease(3).keep_alive(on_lost=lambda _: lost.set())
        c.put("/lease/held", "v", lease=lease)
        active = next(h.endpoint for h in c.endpoint_health() if h.active)
        member = next(m for m in etcd_cluster.members if m.endpoint == active)
        member.kill()
        member.start()
        # well past the TTL: the keeper must have refreshed through another member meanwhile
        assert not lost.wait(6), f"lease lost: {lease!r}"
        assert c.get("/lease/held")[0] == b"v"
        assert 0 < lease.remaining_ttl <= 3
        lease.revoke()
        assert c.get("/lease/held") == (None, None)


@pytest.mark.etcd_cluster(size=1)
def test_lease_cut_off_past_its_ttl_is_lost_and_says_so(etcd_cluster: EtcdCluster) -> None:
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=2) as c:
        lost: list[etcd3.Lease] = []
        lease = c.lease(2).keep_alive(on_lost=lost.append)
        etcd_cluster.members[0].require_proxy().cut()
        wait_until(lambda: lost, timeout=8, what="on_lost to fire")
        assert lost == [lease] and lease.is_lost
        etcd_cluster.members[0].require_proxy().heal()
        with pytest.raises(etcd3.LeaseLostError):
            lease.refresh()


@pytest.mark.etcd_cluster(size=1)
def test_lock_on_a_lost_lease_reports_lost(etcd_cluster: EtcdCluster) -> None:
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=2) as c:
        lost = threading.Event()
        lock = c.lock("cutoff", ttl=2, on_lost=lambda _: lost.set())
        assert lock.acquire(timeout=5)
        etcd_cluster.members[0].require_proxy().cut()
        assert lost.wait(8)
        etcd_cluster.members[0].require_proxy().heal()
        assert not lock.is_acquired()
        with pytest.raises(etcd3.LockLostError):
            lock.check()


def test_lock_api_and_fencing(client: etcd3.Etcd3Client) -> None:
    first = client.lock("job", ttl=10)
    assert first.acquire(timeout=5) and first.is_acquired()
    second = client.lock("job", ttl=10)
    assert second.acquire(timeout=0.3) is False
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(second.acquire(timeout=10)))
    t.start()
    time.sleep(0.3)  # the second contender is waiting on the first's key (the scenario, not a sync)
    assert first.release() is True
    t.join(10)
    assert got == [True] and second.is_acquired() and not first.is_acquired()
    assert second.revision is not None and first.revision is not None and second.revision > first.revision
    assert second.release() and not second.release()
    with client.lock("ctx", ttl=5) as held:
        assert held.is_acquired()
    assert client.get("/locks/ctx") == (None, None)


@pytest.mark.etcd_cluster(size=1, auth=True)
def test_keeper_continues_after_restart_with_auth(etcd_cluster: EtcdCluster) -> None:
    """S10 for leases: the restart kills every token; the keeper re-authenticates and keeps going."""
    from resilient_etcd.testing.etcd import ROOT_PASSWORD_DEFAULT

    with etcd3.client(endpoints=etcd_cluster.endpoints, user="root", password=ROOT_PASSWORD_DEFAULT,
                      timeout=3) as c:
        lost = threading.Event()
        lease = c.lease(3).keep_alive(on_lost=lambda _: lost.set())
        c.put("/lease/auth", "v", lease=lease)
        etcd_cluster.members[0].restart()
        assert not lost.wait(6), f"lease lost across an auth restart: {lease!r}"
        assert c.get("/lease/auth")[0] == b"v"
