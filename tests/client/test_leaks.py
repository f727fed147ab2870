"""No thread or file-descriptor leak after many forced redials, and close() releases everything."""

from __future__ import annotations

import contextlib
import gc
import os
import threading

import resilient_etcd as etcd3
from resilient_etcd.testing import EtcdCluster, wait_until


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fd_targets() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed while we looked
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
    return sorted(out)


def test_fifty_forced_redials_leak_nothing(etcd_cluster: EtcdCluster) -> None:
    # A second client on the direct (uncut) endpoints stays open throughout: it keeps grpc's event
    # engine alive, whose epoll/eventfd descriptors come and go with the last channel and are not ours.
    with etcd3.client(endpoints=etcd_cluster.direct_endpoints, timeout=5) as keeper:
        keeper.get("/leak")
        gc.collect()  # earlier tests' garbage (and its sockets) must not be counted as ours
        threads_before, fds_before = threading.active_count(), fds()
        targets_before = fd_targets()
        with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5) as client:
            client.put("/leak", "x")
            warm_threads, warm_fds = threading.active_count(), fds()

            def redials() -> int:
                return sum(h.redials for h in client.endpoint_health())

            for _ in range(50):
                before = redials()
                active = next(m for m in etcd_cluster.members if m.endpoint in
                              [h.endpoint for h in client.endpoint_health() if h.active])
                active.require_proxy().cut()  # connections closed, new ones refused: a real forced redial
                assert client.get("/leak")[0] == b"x"
                wait_until(lambda before=before: redials() > before, timeout=5, what="a redial")
                active.require_proxy().heal()
            assert redials() >= 50
            assert threading.active_count() <= warm_threads + 2
            assert fds() <= warm_fds + 10, f"fds grew from {warm_fds} to {fds()}"
        assert threading.active_count() <= threads_before
        assert fds() <= fds_before + 4, (f"before: {targets_before}\nafter: {fd_targets()}\n"
                                         f"threads: {[t.name for t in threading.enumerate()]}")
