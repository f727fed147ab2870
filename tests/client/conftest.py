from __future__ import annotations

from collections.abc import Iterator

import pytest

import resilient_etcd as etcd3
from resilient_etcd.testing import EtcdCluster


@pytest.fixture
def client(etcd_cluster: EtcdCluster) -> Iterator[etcd3.Etcd3Client]:
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5) as c:
        yield c
