"""The test bed's faults are real: checked with raw generated stubs, not with the library."""

from __future__ import annotations

import socket
import time

import grpc
import pytest

from resilient_etcd._proto import rpc_pb2, rpc_pb2_grpc
from resilient_etcd.testing import (
    BinaryNotFoundError,
    EtcdCluster,
    MemberStartError,
    PortInUseError,
    ProcessRegistry,
    netns_available,
    wait_until,
)
from resilient_etcd.testing.netns import leftover_namespaces

Metadata = tuple[tuple[str, str], ...]
pytestmark = pytest.mark.integration

FRESH = [("grpc.use_local_subchannel_pool", 1)]  # a new TCP connection, never a shared one


def range_once(endpoint: str, timeout: float = 1.0, metadata: Metadata = ()) -> int:
    """One linearizable Range on a fresh connection; returns the answering member's id."""
    with grpc.insecure_channel(endpoint, options=FRESH) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        resp = kv.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=timeout, metadata=metadata)
        return int(resp.header.member_id)


def code_of(endpoint: str, timeout: float = 1.0) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        range_once(endpoint, timeout)
    return info.value.code()


def answers(endpoint: str, within: float = 15.0) -> int:
    """The endpoint serves a Range within ``within`` s (elections after a fault may take a moment)."""
    return wait_until(lambda: range_once(endpoint, timeout=1), timeout=within, what=f"{endpoint} to answer")


def others_answer(cluster: EtcdCluster, skip: int) -> None:
    for m in cluster.members:
        if m.index != skip:
            assert answers(m.endpoint)


def test_blackhole_swallows_then_heals(etcd_cluster: EtcdCluster) -> None:
    m = etcd_cluster.members[0]
    with grpc.insecure_channel(m.endpoint, options=FRESH) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        kv.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=2)  # connection established before the fault
        m.proxy.blackhole()
        with pytest.raises(grpc.RpcError) as info:
            kv.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=1)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert code_of(m.endpoint) == grpc.StatusCode.DEADLINE_EXCEEDED  # new connections too
    others_answer(etcd_cluster, skip=0)
    m.proxy.heal()
    assert answers(m.endpoint)


def test_pause_freezes_then_resumes(etcd_cluster: EtcdCluster) -> None:
    m = etcd_cluster.members[1]
    m.pause()
    try:
        started = time.monotonic()
        assert code_of(m.direct_endpoint) == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started >= 0.9
        others_answer(etcd_cluster, skip=1)
    finally:
        m.resume()
    assert answers(m.endpoint)


def test_kill_fails_fast_and_start_serves(etcd_cluster: EtcdCluster) -> None:
    m = etcd_cluster.members[2]
    m.kill()
    assert not m.is_running
    started = time.monotonic()
    assert code_of(m.direct_endpoint, timeout=5) == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - started < 2, "connection refused must not wait for the deadline"
    others_answer(etcd_cluster, skip=2)
    m.start()
    assert answers(m.endpoint)


def test_latency_adds_delay(etcd_cluster: EtcdCluster) -> None:
    m = etcd_cluster.members[0]
    with grpc.insecure_channel(m.endpoint, options=FRESH) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        kv.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=2)
        m.proxy.latency(300)
        started = time.monotonic()
        kv.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=5)
        assert time.monotonic() - started >= 0.3


def test_cut_refuses_and_reset_peer_breaks(etcd_cluster: EtcdCluster) -> None:
    m = etcd_cluster.members[0]
    m.proxy.cut()
    assert code_of(m.endpoint, timeout=5) == grpc.StatusCode.UNAVAILABLE
    m.proxy.heal()
    assert answers(m.endpoint)
    m.proxy.reset_peer()
    assert code_of(m.endpoint, timeout=5) == grpc.StatusCode.UNAVAILABLE
    m.proxy.heal()
    m.proxy.limit_data(64)
    assert code_of(m.endpoint, timeout=5) in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)


def test_stop_quorum_leaves_a_member_without_leader(etcd_cluster: EtcdCluster) -> None:
    stopped = etcd_cluster.stop_quorum()
    assert [m.index for m in stopped] == [1, 2]
    assert etcd_cluster.members[0].is_running
    # a leaderless member times out, says unavailable, or cancels in-flight proposals as it steps down
    assert code_of(etcd_cluster.members[0].endpoint, timeout=2) in (
        grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    etcd_cluster.restore_quorum()
    assert answers(etcd_cluster.members[0].endpoint)


def test_compact_makes_old_revisions_unreadable(etcd_cluster: EtcdCluster) -> None:
    with grpc.insecure_channel(etcd_cluster.endpoints[0], options=FRESH) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        first = kv.Put(rpc_pb2.PutRequest(key=b"c", value=b"1"), timeout=5).header.revision
        kv.Put(rpc_pb2.PutRequest(key=b"c", value=b"2"), timeout=5)
        etcd_cluster.compact(first + 1)
        with pytest.raises(grpc.RpcError) as info:
            kv.Range(rpc_pb2.RangeRequest(key=b"c", revision=first), timeout=5)
        assert "compacted" in (info.value.details() or "")


@pytest.mark.etcd_cluster(size=1, auth=True)
def test_auth_rejects_anonymous_and_accepts_token(etcd_cluster: EtcdCluster) -> None:
    endpoint = etcd_cluster.endpoints[0]
    with pytest.raises(grpc.RpcError) as info:
        range_once(endpoint, timeout=5)
    assert info.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED)
    with grpc.insecure_channel(endpoint, options=FRESH) as ch:
        md = etcd_cluster.auth_metadata(ch)
    assert range_once(endpoint, timeout=5, metadata=md)


needs_netns = pytest.mark.skipif(netns_available() is not None, reason=str(netns_available()))


@needs_netns
@pytest.mark.etcd_cluster(size=3, netns=True, proxied=False)
def test_netns_drop_is_an_l3_blackhole(etcd_cluster: EtcdCluster) -> None:
    m = etcd_cluster.members[0]
    assert answers(m.endpoint)
    m.drop()
    assert code_of(m.endpoint) == grpc.StatusCode.DEADLINE_EXCEEDED
    others_answer(etcd_cluster, skip=0)
    m.undrop()
    assert answers(m.endpoint)


@needs_netns
@pytest.mark.etcd_cluster(size=3, netns=True, proxied=False)
def test_virtual_ip_move_leaves_old_flow_silent(etcd_cluster: EtcdCluster) -> None:
    vip = etcd_cluster.virtual_ip(etcd_cluster.members[0])
    with grpc.insecure_channel(vip.endpoint, options=FRESH) as old:
        kv = rpc_pb2_grpc.KVStub(old)
        first = kv.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=3).header.member_id
        vip.move_to(etcd_cluster.members[1].netns_backend)
        with pytest.raises(grpc.RpcError) as info:
            kv.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=1)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    moved = range_once(vip.endpoint, timeout=3)
    assert moved != first


# ---- bad input and clean-up ----

def test_size_must_be_positive() -> None:
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="size"):
            EtcdCluster(size=bad)  # type: ignore[arg-type]


def test_stop_quorum_refuses_even_or_single() -> None:
    for size in (1, 2, 4):
        c = EtcdCluster(size=size)
        with pytest.raises(ValueError, match="odd cluster size"):
            c.stop_quorum()
        c.close()


def test_missing_binary_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("RESILIENT_ETCD_CACHE", str(tmp_path))
    monkeypatch.delenv("RESILIENT_ETCD_BIN_DIR", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    before = set(ProcessRegistry.running())
    with pytest.raises(BinaryNotFoundError, match=r"etcd not found.*make servers"):
        EtcdCluster(size=1, proxied=False).start()
    assert set(ProcessRegistry.running()) == before


def test_member_that_cannot_start_shows_its_log() -> None:
    with pytest.raises(MemberStartError, match=r"unknown flag|flag provided but not defined"):
        EtcdCluster(size=1, proxied=False, extra_args=("--no-such-flag",)).start()


def test_port_taken_is_a_clear_error() -> None:
    with EtcdCluster(size=1, proxied=False) as cluster:
        m = cluster.members[0]
        m.stop()
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", m.client_port))
            squatter.listen()
            with pytest.raises(PortInUseError, match="already in use"):
                m.start()


def test_close_leaves_no_process_or_namespace() -> None:
    use_netns = netns_available() is None
    with EtcdCluster(size=3, netns=use_netns, proxied=True) as cluster:
        pids = [m.pid for m in cluster.members]
        cluster.members[1].pause()  # a paused member must be reaped too
        workdir = cluster.workdir
    for pid in pids:
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            import os

            os.kill(pid, 0)
    assert not workdir.exists()
    if use_netns:
        assert leftover_namespaces() == []
