from __future__ import annotations

from collections.abc import Iterator

import pytest

import resilient_etcd as etcd3
from resilient_etcd.testing import EtcdCluster, ToxiproxyServer
from resilient_etcd.testing.kube import KubeApiServer


@pytest.fixture
def client(etcd_cluster: EtcdCluster) -> Iterator[etcd3.Etcd3Client]:
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5) as c:
        yield c


@pytest.fixture
def two_apiservers(etcd_cluster: EtcdCluster, toxiproxy_server: ToxiproxyServer) -> Iterator[list[KubeApiServer]]:
    """Two kube-apiservers of one cluster (shared certificates and tokens), each behind its own proxy."""
    with KubeApiServer(etcd_cluster, toxiproxy=toxiproxy_server) as a, \
            KubeApiServer(etcd_cluster, toxiproxy=toxiproxy_server, peer=a) as b:
        yield [a, b]
