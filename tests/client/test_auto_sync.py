"""Endpoint auto-sync (HealthPolicy.auto_sync_interval): members added to or removed from a running
cluster are followed; seeds behind proxies stay as given; an answer naming nobody changes nothing."""

from __future__ import annotations

import threading

import resilient_etcd as etcd3
from resilient_etcd._proto import rpc_pb2
from resilient_etcd.testing import EtcdCluster, wait_until


def test_members_added_and_removed_are_followed_under_traffic() -> None:
    with EtcdCluster(size=3) as cluster:
        health = etcd3.HealthPolicy(auto_sync_interval=0.5)
        with etcd3.client(endpoints=cluster.endpoints, timeout=10, health=health) as c:
            pool = c._transport.pool
            wait_until(lambda: all(x.member_id for x in pool.conns), timeout=10, what="every seed's member id")
            errors: list[BaseException] = []
            stop = threading.Event()

            def traffic() -> None:
                i = 0
                while not stop.is_set():
                    try:
                        c.put("/sync/k", str(i))
                        c.get("/sync/k")
                    except BaseException as e:  # every failure is the finding
                        errors.append(e)
                    i += 1

            t = threading.Thread(target=traffic, daemon=True)
            t.start()
            try:
                new = cluster.add_member()
                wait_until(lambda: new.direct_endpoint in [h.endpoint for h in c.endpoint_health()], timeout=10,
                           what="the added member's endpoint")
                assert [h.endpoint for h in c.endpoint_health()][:3] == cluster.endpoints[:3], \
                    "the seeds (proxies) are kept as given"
                added = next(x for x in pool.conns if x.name == new.direct_endpoint)
                wait_until(lambda: added.health.state.value == "healthy" and added.member_id, timeout=10,
                           what="the new member probed")
                # a member that carries no traffic (not the leader, not the one reads use): a call in flight on
                # a member being removed fails as with any member that goes away, which is not this test's topic
                busy = {pool.active.name, pool.leader.name if pool.leader else None}
                gone = next(m for m in cluster.members[:3] if m.endpoint not in busy)
                gone_conn = next(x for x in pool.conns if x.name == gone.endpoint)
                cluster.remove_member(gone)
                wait_until(lambda: gone.endpoint not in [h.endpoint for h in c.endpoint_health()], timeout=10,
                           what="the removed member's endpoint to go")
                assert c.get("/sync/k")[0] is not None
            finally:
                stop.set()
                t.join(10)
            assert not errors, errors[:3]
            # the removed member's connection was closed: a call on it is refused by grpcio at once
            try:
                gone_conn.stubs.kv.Range(rpc_pb2.RangeRequest(key=b"/x"), timeout=1)
            except ValueError as e:
                assert "closed" in str(e).lower()
            else:
                raise AssertionError("the removed member's channel is still open")


def test_an_answer_naming_no_usable_member_changes_nothing(etcd_cluster: EtcdCluster) -> None:
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5,
                      health=etcd3.HealthPolicy(share_connections=False)) as c:
        pool = c._transport.pool
        before = [x.name for x in pool.conns]
        learner = rpc_pb2.Member(ID=99, name="l", clientURLs=["http://127.0.0.1:1"], isLearner=True)
        wrong_scheme = rpc_pb2.Member(ID=98, name="w", clientURLs=["https://127.0.0.1:2"])
        unstarted = rpc_pb2.Member(ID=97, peerURLs=["http://127.0.0.1:3"])
        for answer in ([], [learner], [wrong_scheme, unstarted]):
            assert pool._follow(answer) is False
            assert [x.name for x in pool.conns] == before
        assert pool.sync_endpoints() is False, "an endpoint not probed yet: nothing added on a guess"
        wait_until(lambda: all(x.member_id for x in pool.conns), timeout=10, what="every seed's member id")
        assert pool.sync_endpoints() is False  # the real answer: the members behind the proxies
        assert [x.name for x in pool.conns] == before, "seeds behind proxies are matched by member id"
        assert c.get("/x") is not None
