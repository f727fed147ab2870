"""One test per violation the robustness harness found, named after the seed that found it."""

from __future__ import annotations

import queue
import time

import pytest

import resilient_etcd as etcd3
from resilient_etcd.testing import EtcdCluster
from resilient_etcd.testing.etcd import ROOT_PASSWORD_DEFAULT


@pytest.mark.etcd_cluster(size=1, auth=True, jwt_ttl=2)
def test_seed1_a_watch_created_with_an_expired_token_is_not_lost(etcd_cluster: EtcdCluster) -> None:
    """etcd refuses a watch create with an expired token by answering watch id -1 (created and
    canceled, "invalid auth token"): the answer names no watch. It was read as a progress notice,
    so the watch was never created and never failed: after any stream resume with an expired JWT,
    every watch on the client went silent for good (found by seed 1, a JWT cluster)."""
    with etcd3.client(endpoints=etcd_cluster.endpoints, user="root", password=ROOT_PASSWORD_DEFAULT,
                      timeout=5) as c:
        c.put("/reg/seed1/a", "1")
        time.sleep(3)  # the token's 2 s TTL runs out (the scenario is the passage of time itself)
        got: queue.Queue[object] = queue.Queue()
        c.add_watch_prefix_callback("/reg/seed1/", got.put)  # the stream opens with the expired token
        rev = c.put("/reg/seed1/b", "2").header.revision
        item = got.get(timeout=10)
        assert not isinstance(item, BaseException), item
        assert [e.mod_revision for e in item.events] == [rev]  # type: ignore[attr-defined]
