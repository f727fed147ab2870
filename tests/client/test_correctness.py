"""The correctness pass: per-member operations stay on their member, what a call starts it stops,
every blocking wait keeps the deadline, and unused clients release everything."""

from __future__ import annotations

import gc
import io
import threading
import time

import pytest

import resilient_etcd as etcd3
from resilient_etcd.testing import EtcdCluster, wait_until

DEFRAG_COUNT = "etcd_disk_backend_defrag_duration_seconds_count"


def _fill(cluster: EtcdCluster, keys: int, batch: int = 5000) -> None:
    """``keys`` small live keys, then the compacted history of a rewrite of half of them: defragment
    copies key by key, so its time grows with the number of keys more than with their size."""
    with etcd3.client(endpoints=cluster.direct_endpoints, timeout=60) as c:
        t = c.transactions
        value = b"v" * 100
        for rewrite in (False, True):
            for start in range(0, keys, batch):
                stop = min(start + batch, keys)
                c.transaction([], [t.put(f"/fill/{i:07d}", value) for i in range(start, stop)
                                   if not rewrite or i % 2 == 0], [])
        c.compact(c.get_response("/fill/").header.revision, physical=True)


@pytest.mark.etcd_cluster(size=3, extra_args=("--quota-backend-bytes=4294967296", "--max-txn-ops=5000",
                                              "--max-request-bytes=10485760"))
def test_defragment_stays_on_its_member(etcd_cluster: EtcdCluster) -> None:
    """A defragment that outlasts the probe deadline (Status waits for the defragment's lock in 3.6)
    used to eject its member and be re-sent to the next, then the next: the whole cluster at once."""
    _fill(etcd_cluster, 1_000_000)
    members = etcd_cluster.members
    before = [m.metric(DEFRAG_COUNT) for m in members]
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=10) as c:
        started = time.monotonic()
        c.defragment(timeout=120)  # the member in use: the first endpoint
        took = time.monotonic() - started
        assert c.get("/fill/0000001")[0] is not None, "the client still works afterwards"
        ejections = sum(s.ejections for s in c.endpoint_health())
    after = [m.metric(DEFRAG_COUNT) for m in members]
    print(f"defragment took {took:.2f} s")
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 0, 0], (before, after, took)
    assert ejections == 0, "our own defragment must not get its member ejected"


def test_per_member_calls_name_their_member(etcd_cluster: EtcdCluster) -> None:
    m0, m1 = etcd_cluster.members[0], etcd_cluster.members[1]
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5) as c:
        assert c.status(endpoint=m1.endpoint).raft_index > 0
        assert c.hash(endpoint=m0.endpoint) == c.hash(endpoint=m0.endpoint)
        with pytest.raises(etcd3.ConfigurationError, match="not one of this client's endpoints"):
            c.status(endpoint="127.0.0.1:1")


def test_status_of_a_stopped_member_is_an_error_not_another_members_answer(etcd_cluster: EtcdCluster) -> None:
    m0 = etcd_cluster.members[0]
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=2) as c:
        m0.require_proxy().cut()
        try:
            with pytest.raises(etcd3.Etcd3Exception):
                c.status(endpoint=m0.endpoint)
        finally:
            m0.require_proxy().heal()


def test_snapshot_streams_without_a_default_deadline(etcd_cluster: EtcdCluster) -> None:
    """The snapshot is written chunk by chunk (the file grows while the stream runs) and the client's
    default deadline does not apply to it (a scope or ``timeout`` still does)."""
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=0.2) as c:
        for i in range(20):
            c.put(f"/snap/{i}", b"y" * 100_000, timeout=5)
        m0 = etcd_cluster.members[0]
        m0.require_proxy().latency(100)  # every flow-control window costs a round trip: well past 0.2 s
        sizes: list[int] = []

        class Recorder(io.BytesIO):
            def write(self, b: bytes) -> int:  # type: ignore[override]
                sizes.append(len(b))
                return super().write(b)

        out = Recorder()
        started = time.monotonic()
        try:
            c.snapshot(out, endpoint=m0.endpoint)
        finally:
            m0.require_proxy().heal()
        assert time.monotonic() - started > 0.2, "the test needs a snapshot slower than the client's default"
        assert out.tell() > 2_000_000 and len(sizes) > 1
        with etcd3.deadline(0.3), pytest.raises(etcd3.DeadlineExceeded):
            m0.require_proxy().latency(400)  # not even the first chunk within the scope
            try:
                c.snapshot(io.BytesIO(), endpoint=m0.endpoint)
            finally:
                m0.require_proxy().heal()


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("resilient-etcd")}


def test_unclosed_clients_release_their_threads_and_channels(etcd_cluster: EtcdCluster) -> None:
    """A client dropped without close() used to keep its prober (and ~30 probes/s) forever."""
    baseline = threading.active_count()
    for _ in range(50):
        c = etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5)
        c.put("/unclosed", "1")
        del c
    gc.collect()
    wait_until(lambda: threading.active_count() <= baseline + 2, timeout=10,
               what=f"threads back to baseline {baseline} (now {threading.active_count()}: {_threads()})")
    # a client with a watch is released too
    c = etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5)
    _, cancel = c.watch("/unclosed")
    cancel()
    del c, cancel
    gc.collect()
    wait_until(lambda: not _threads(), timeout=10, what=f"no resilient-etcd thread left ({_threads()})")


def test_calls_on_a_closed_client_fail_at_once(etcd_cluster: EtcdCluster) -> None:
    c = etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5)
    c.close()
    started = time.monotonic()
    with pytest.raises(etcd3.ClientClosedError):
        c.get("/x")
    with pytest.raises(etcd3.ClientClosedError):
        c.put("/x", "1")
    with pytest.raises(etcd3.ClientClosedError):
        c.watch("/x")
    assert time.monotonic() - started < 1
