"""Slow is not dead: large answers over slow links complete, and a path that dies in the middle of
one is still noticed (issue: every member at 256 KB/s; a probe queued behind a 1 MiB answer used to
eject every member in turn, and the read never completed)."""

from __future__ import annotations

import threading
import time

import pytest

import resilient_etcd as etcd3
from resilient_etcd.testing import EtcdCluster, EtcdMember

VALUE = b"x" * 65536
KEYS = 16  # 1 MiB: ~4 s at 256 KB/s


def _fill(c: etcd3.Etcd3Client, prefix: str) -> None:
    for i in range(KEYS):
        c.put(f"{prefix}{i:02d}", VALUE)


def _slow_everywhere(cluster: EtcdCluster, kbps: int = 256) -> None:
    for m in cluster.members:
        m.require_proxy().bandwidth(kbps)


def _active(cluster: EtcdCluster, c: etcd3.Etcd3Client) -> EtcdMember:
    active = next(h.endpoint for h in c.endpoint_health() if h.active)
    return next(m for m in cluster.members if m.endpoint == active)


@pytest.mark.etcd_cluster(size=3)
def test_a_large_range_completes_when_every_member_is_slow(etcd_cluster: EtcdCluster) -> None:
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=60) as c:
        _fill(c, "/slow-all/")
        _slow_everywhere(etcd_cluster)
        try:
            started = time.monotonic()
            got = list(c.get_prefix("/slow-all/"))
            took = time.monotonic() - started
        finally:
            etcd_cluster.heal_all()
        health = c.endpoint_health()
    assert [v for v, _ in got] == [VALUE] * KEYS
    assert sum(h.ejections for h in health) == 0, health
    assert took > 3, f"the links were not slow ({took:.1f} s): the test proves nothing"


@pytest.mark.etcd_cluster(size=3)
def test_pages_are_one_snapshot(etcd_cluster: EtcdCluster) -> None:
    """Keys written while a slow range is being paged are not in it: every page is read at the
    revision of the first, so the result is exactly the store at that revision."""
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=60) as c, \
            etcd3.client(endpoints=etcd_cluster.direct_endpoints, timeout=10) as writer:
        _fill(c, "/snap/")
        _slow_everywhere(etcd_cluster)
        result: list[object] = []
        reader = threading.Thread(target=lambda: result.append(c.get_prefix_response("/snap/")))
        written = 0
        try:
            reader.start()
            while reader.is_alive() and written < 200:  # writes land between pages, all along the range
                i = written % KEYS
                writer.put(f"/snap/{i:02d}-late{written}", b"late")
                writer.put(f"/snap/{i:02d}", f"changed {written}")
                written += 1
                reader.join(0.1)  # pacing: a few writes per page
            reader.join(60)
        finally:
            etcd_cluster.heal_all()
        resp = result[0]
        at_revision = writer.get_prefix_response("/snap/", revision=resp.header.revision)  # type: ignore[attr-defined]
        now = writer.get_prefix_response("/snap/")
    assert not reader.is_alive()
    assert list(resp.kvs) == list(at_revision.kvs)  # type: ignore[attr-defined]
    assert resp.count == len(at_revision.kvs) and not resp.more  # type: ignore[attr-defined]
    assert now.count > resp.count + 10, "no write landed while the range was read: the test proves nothing"  # type: ignore[attr-defined]


@pytest.mark.etcd_cluster(size=3)
def test_a_path_that_dies_in_the_middle_of_a_large_range_is_noticed(etcd_cluster: EtcdCluster) -> None:
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=60) as c:
        _fill(c, "/mid/")
        _slow_everywhere(etcd_cluster)
        result: list[int] = []
        reader = threading.Thread(target=lambda: result.append(len(list(c.get_prefix("/mid/")))))
        try:
            started = time.monotonic()
            reader.start()
            reader.join(1.5)  # a few pages in
            victim = _active(etcd_cluster, c)
            victim.require_proxy().blackhole()
            reader.join(60)
            took = time.monotonic() - started
        finally:
            etcd_cluster.heal_all()
        victim_health = next(h for h in c.endpoint_health() if h.endpoint == victim.endpoint)
    assert result == [KEYS]
    assert victim_health.ejections >= 1
    # 4 s of transfer, one detection (~1 s), the lost page again: far below the 60 s deadline
    assert took < 20, f"took {took:.1f} s"


@pytest.mark.etcd_cluster(size=3)
def test_a_watch_delivering_large_events_over_a_slow_link_keeps_its_connection(etcd_cluster: EtcdCluster) -> None:
    """Events of 64 KiB at 256 KB/s: the watch stream is busy for seconds, and a probe queued behind it
    must not eject the member (every event counts as the connection answering)."""
    often = etcd3.HealthPolicy(idle_probe_interval=0.3)  # the heartbeat comes due while events arrive
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=60, health=often) as c, \
            etcd3.client(endpoints=etcd_cluster.direct_endpoints, timeout=10) as writer:
        events, cancel = c.watch_prefix("/wslow/")
        c.get("/wslow/x")  # the stream is on the member in use
        _slow_everywhere(etcd_cluster)
        try:
            for i in range(KEYS):
                writer.put(f"/wslow/{i:02d}", VALUE)
            got: list[bytes] = []

            def consume() -> None:
                for ev in events:
                    got.append(ev.key)
                    if len(got) == KEYS:
                        return

            consumer = threading.Thread(target=consume, daemon=True)
            consumer.start()
            consumer.join(60)  # ~4 s of transfer
        finally:
            cancel()
            etcd_cluster.heal_all()
        health = c.endpoint_health()
    assert got == [f"/wslow/{i:02d}".encode() for i in range(KEYS)]
    assert sum(h.ejections for h in health) == 0, health


@pytest.mark.etcd_cluster(size=3)
def test_a_snapshot_over_a_slow_link_completes(etcd_cluster: EtcdCluster) -> None:
    """snapshot() streams for seconds on a busy connection: every chunk counts as an answer."""
    import io

    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=60) as c:
        i = 0
        while c.status().db_size < 2_000_000:
            c.put(f"/snapshot-fill/{i:04d}", VALUE)
            i += 1
        size = c.status().db_size
        _slow_everywhere(etcd_cluster, kbps=512)
        sink = io.BytesIO()
        try:
            started = time.monotonic()
            c.snapshot(sink, timeout=120)
            took = time.monotonic() - started
        finally:
            etcd_cluster.heal_all()
        c.delete_prefix("/snapshot-fill/")
        health = c.endpoint_health()
    assert len(sink.getvalue()) >= size
    assert sum(h.ejections for h in health) == 0, health
    assert took > 2, f"the link was not slow ({took:.1f} s): the test proves nothing"
