"""python-etcd3's documented behaviour, method by method, on a real cluster."""

from __future__ import annotations

import io

import pytest

import resilient_etcd as etcd3
from resilient_etcd.testing import EtcdCluster, wait_until


def test_get_put_roundtrip(client: etcd3.Etcd3Client) -> None:
    assert client.get("missing") == (None, None)
    resp = client.put("/a", "1")
    value, meta = client.get("/a")
    assert value == b"1"
    assert meta.key == b"/a" and meta.version == 1 and meta.mod_revision == resp.header.revision
    assert meta.create_revision == meta.mod_revision and meta.lease_id == 0
    client.put(b"/a", b"2")
    assert client.get("/a")[1].version == 2
    prev = client.put("/a", "3", prev_kv=True)
    assert prev.prev_kv.value == b"2"


def test_get_kwargs(client: etcd3.Etcd3Client) -> None:
    first = client.put("/r", "old").header.revision
    client.put("/r", "new")
    assert client.get("/r", revision=first)[0] == b"old"
    assert client.get("/r", serializable=True)[0] == b"new"
    assert client.get("/r", keys_only=True)[0] == b""
    assert client.get_response("/r", count_only=True).count == 1


def test_prefix_range_all_and_sorting(client: etcd3.Etcd3Client) -> None:
    for k, v in [("/p/b", "2"), ("/p/a", "1"), ("/p/c", "3"), ("/q", "x")]:
        client.put(k, v)
    assert [v for v, _ in client.get_prefix("/p/")] == [b"1", b"2", b"3"]
    assert [v for v, _ in client.get_prefix("/p/", sort_order="descend")] == [b"3", b"2", b"1"]
    assert [m.key for _, m in client.get_prefix("/p/", sort_target="create", sort_order="ascend")] == [
        b"/p/b", b"/p/a", b"/p/c"]
    assert [v for v, _ in client.get_range("/p/a", "/p/c")] == [b"1", b"2"]
    assert len(list(client.get_prefix("/p/", limit=2))) == 2
    assert {m.key for _, m in client.get_all()} >= {b"/p/a", b"/p/b", b"/p/c", b"/q"}
    assert [v for v, _ in client.get_prefix("/p/", keys_only=True)] == [b"", b"", b""]
    with pytest.raises(ValueError, match="sort_order"):
        client.get_prefix("/p/", sort_order="sideways")


def test_put_if_not_exists_and_replace(client: etcd3.Etcd3Client) -> None:
    assert client.put_if_not_exists("/once", "a") is True
    assert client.put_if_not_exists("/once", "b") is False
    assert client.get("/once")[0] == b"a"
    assert client.replace("/once", "zzz", "c") is False
    assert client.replace("/once", "a", "c") is True
    assert client.get("/once")[0] == b"c"


def test_delete_and_delete_prefix(client: etcd3.Etcd3Client) -> None:
    client.put("/d/1", "x")
    client.put("/d/2", "y")
    assert client.delete("/d/1") is True
    assert client.delete("/d/1") is False
    resp = client.delete("/d/2", prev_kv=True, return_response=True)
    assert not isinstance(resp, bool) and resp.prev_kvs[0].value == b"y"
    for i in range(3):
        client.put(f"/e/{i}", "v")
    assert client.delete_prefix("/e/").deleted == 3


def test_transaction_shapes(client: etcd3.Etcd3Client) -> None:
    t = client.transactions
    client.put("/t", "1")
    ok, responses = client.transaction(
        compare=[t.value("/t") == "1", t.version("/t") > 0, t.create("/t") != 0, t.mod("/t") > 0],
        success=[t.put("/t", "2"), t.get("/t"), t.delete("/nothing"),
                 t.txn([t.value("/t") == "1"], [t.get("/t")], [])],  # nested compares see the state before the txn
        failure=[],
    )
    assert ok is True
    assert responses[0].header.revision > 0
    assert [(v, m.key) for v, m in responses[1]] == [(b"2", b"/t")]
    assert responses[2].deleted == 0
    assert responses[3].succeeded is True
    ok, responses = client.transaction([t.value("/t") == "nope"], [t.put("/t", "3")], [t.get("/t")])
    assert ok is False and responses[0][0][0] == b"2"


def test_leases(client: etcd3.Etcd3Client) -> None:
    lease = client.lease(30)
    assert lease.ttl == 30 and lease.id > 0
    client.put("/leased", "v", lease=lease)
    assert client.get("/leased")[1].lease_id == lease.id
    assert lease.keys == [b"/leased"]
    assert 0 < lease.remaining_ttl <= 30 and lease.granted_ttl == 30
    (refreshed,) = lease.refresh()
    assert lease.id == refreshed.ID and refreshed.TTL == 30
    lease.revoke()
    assert client.get("/leased") == (None, None)
    assert client.get_lease_info(lease.id).TTL == -1


def test_status_members_hash_alarms_compact_snapshot(client: etcd3.Etcd3Client, etcd_cluster: EtcdCluster) -> None:
    status = client.status()
    assert status.version.startswith("3.6") and status.db_size > 0 and status.raft_term >= 1
    members = list(client.members)
    assert len(members) == 3 and status.leader in members
    assert {m.name for m in members} == {"m0", "m1", "m2"}
    assert isinstance(client.hash(), int)
    assert client.list_alarms() == []
    rev = client.put("/c", "1").header.revision
    client.put("/c", "2")
    client.compact(rev)
    with pytest.raises(etcd3.RevisionCompactedError):
        client.get("/c", revision=rev - 1)
    buf = io.BytesIO()
    client.snapshot(buf)
    assert len(buf.getvalue()) > 1000
    client.defragment()


def test_member_add_update_remove(client: etcd3.Etcd3Client) -> None:
    def add() -> etcd3.Member | None:
        # etcd's strict reconfig check refuses while a member connected less than 5 s ago
        try:
            return client.add_member(["http://127.0.0.1:1"])  # unstarted; 3 of 4 still make quorum
        except etcd3.ConnectionFailedError as e:
            if "unhealthy cluster" in str(e):
                return None
            raise

    new = wait_until(add, timeout=15, what="etcd to accept a member change", interval=0.5)
    try:
        assert new.peer_urls == ["http://127.0.0.1:1"]
        client.update_member(new.id, ["http://127.0.0.1:2"])
        # MemberList is serializable: the member asked may apply the change a moment after the one that took it
        wait_until(lambda: [m.peer_urls for m in client.members if m.id == new.id] == [["http://127.0.0.1:2"]],
                   timeout=5, what="the member update on the member asked")
    finally:
        new.remove()
    wait_until(lambda: new.id not in {m.id for m in client.members}, timeout=5, what="the removal on the member asked")


def test_errors_are_python_etcd3_types(client: etcd3.Etcd3Client) -> None:
    with pytest.raises(etcd3.Etcd3Exception):
        client.revoke_lease(123456789)
    with pytest.raises(TypeError, match="key must be str or bytes"):
        client.put(1, "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl"):
        client.lease(0)


def test_per_call_timeout_and_scope(client: etcd3.Etcd3Client, etcd_cluster: EtcdCluster) -> None:
    for m in etcd_cluster.members:
        m.proxy.latency(400)
    with pytest.raises(etcd3.DeadlineExceeded), etcd3.deadline(0.2):
        client.get("/x")
    with pytest.raises(etcd3.ConnectionTimeoutError):  # python-etcd3's name still catches it
        client.get("/x", timeout=0.2)
    assert client.get("/x", timeout=5) == (None, None)  # slow, but answers
