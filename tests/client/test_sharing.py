"""Clients in one process that name the same endpoints with the same credentials, TLS and policies
share one connection per endpoint and one health record (kube-apiserver runs one client per resource)."""

from __future__ import annotations

import gc

import pytest

import resilient_etcd as etcd3
from resilient_etcd.balancer.prober import PROBER
from resilient_etcd.policies import HealthPolicy
from resilient_etcd.testing import EtcdCluster, wait_until
from resilient_etcd.transport.endpoints import TlsConfig, parse_endpoint
from resilient_etcd.transport.transport import _session_key


def test_same_endpoints_share_connections_health_and_the_prober(etcd_cluster: EtcdCluster) -> None:
    drivers = PROBER.drivers
    clients = [etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5) for _ in range(20)]
    try:
        pools = {id(c._transport.pool) for c in clients}
        assert len(pools) == 1, "20 clients, one set of connections"
        assert clients[0]._transport.shared_by == 20
        assert PROBER.drivers == drivers + 1, "one prober entry for all of them"
        clients[3].put("/share/k", "v")
        assert clients[17].get("/share/k")[0] == b"v"
        # a hang noticed through one client is known to all: the same health records
        active = next(h.endpoint for h in clients[0].endpoint_health() if h.active)
        member = next(m for m in etcd_cluster.members if m.endpoint == active)
        member.require_proxy().blackhole()
        try:
            assert clients[5].get("/share/k")[0] == b"v"  # hedged to another member
            wait_until(lambda: {h.endpoint: h.state for h in clients[11].endpoint_health()}[active]
                       in ("ejected", "probing"), timeout=5, what="the ejection, seen through another client")
        finally:
            member.require_proxy().heal()
        # closing one ends it alone
        clients[0].close()
        with pytest.raises(etcd3.ClientClosedError):
            clients[0].get("/share/k")
        assert clients[1].get("/share/k")[0] == b"v"
        assert clients[1]._transport.shared_by == 19
    finally:
        for c in clients:
            c.close()
    assert clients[1]._transport.pool.closed, "the connections close with the last client"
    wait_until(lambda: PROBER.drivers == drivers, timeout=5, what="the prober entry to go")


def test_unclosed_sharing_clients_release_the_connections_when_collected(etcd_cluster: EtcdCluster) -> None:
    c = etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5)
    pool = c._transport.pool
    others = [etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5) for _ in range(3)]
    assert all(o._transport.pool is pool for o in others)
    del c, others
    gc.collect()
    assert pool.closed


def test_different_policies_or_an_opt_out_do_not_share(etcd_cluster: EtcdCluster) -> None:
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5) as a, \
            etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5,
                         health=HealthPolicy(share_connections=False)) as b, \
            etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5, health=HealthPolicy(dead_after=1.0)) as c, \
            etcd3.client(endpoints=list(reversed(etcd_cluster.endpoints)), timeout=5) as d:
        pools = {id(x._transport.pool) for x in (a, b, c, d)}
        assert len(pools) == 4
        assert b._transport.shared_by == 1


def test_secrets_are_part_of_the_key_only_as_a_digest() -> None:
    eps = [parse_endpoint("127.0.0.1:2379")]
    hp = HealthPolicy()
    k1 = _session_key(eps, None, [], hp, "root", "pw-one")
    k2 = _session_key(eps, None, [], hp, "root", "pw-two")
    tls1 = TlsConfig(b"ca", b"key-1", b"cert")
    tls2 = TlsConfig(b"ca", b"key-2", b"cert")
    assert k1 != k2 and _session_key(eps, None, [], hp, "root", "pw-one") == k1
    assert _session_key(eps, tls1, [], hp, None, None) != _session_key(eps, tls2, [], hp, None, None)
    assert "pw-one" not in repr(k1) and "key-1" not in repr(_session_key(eps, tls1, [], hp, None, None))
