"""The correctness pass: per-member operations stay on their member, what a call starts it stops,
every blocking wait keeps the deadline, and unused clients release everything."""

from __future__ import annotations

import contextlib
import contextvars
import gc
import io
import os
import queue
import threading
import time
from collections.abc import Callable

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


def _threads() -> set[threading.Thread]:
    """Our threads, but for the prober's workers: the process's pool (at most four, each ending after
    30 s idle), holding no client — a cancelled watch's idle stream is closed on one."""
    return {t for t in threading.enumerate() if t.name.startswith("resilient-etcd") and not t.name.endswith("-worker")}


def _sockets() -> int:
    """Sockets this process holds open."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed while we looked
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


def test_unclosed_clients_release_their_threads_and_channels(etcd_cluster: EtcdCluster) -> None:
    """A client dropped without close() used to keep its prober (and ~30 probes/s) forever."""
    keeper = etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5)  # holds grpc's event engine steady
    keeper.get("/warm")
    baseline = threading.active_count()
    ours = _threads()
    sockets = _sockets()
    for _ in range(50):
        c = etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5)
        c.put("/unclosed", "1")
        del c
    gc.collect()
    wait_until(lambda: threading.active_count() <= baseline + 2, timeout=10,
               what=f"threads back to baseline {baseline} (now {threading.active_count()}: {_threads()})")
    wait_until(lambda: _sockets() <= sockets + 2, timeout=10,
               what=f"sockets back to baseline {sockets} (now {_sockets()})")
    # a client with a watch is released too
    c = etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5)
    events, cancel = c.watch("/unclosed")  # (an iterator in use keeps its client alive)
    cancel()
    del c, events, cancel
    gc.collect()
    wait_until(lambda: not (_threads() - ours), timeout=10, what=f"no new thread left ({_threads() - ours})")
    keeper.close()


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


# ---- what a call starts, it stops (item 2) and lock expiry (item 3) ----

def _outcome(fn: Callable[[], object]) -> object:
    try:
        return fn()
    except BaseException as e:
        return e


def _keys(c: etcd3.Etcd3Client, prefix: str) -> list[bytes]:
    return [m.key for _, m in c.get_prefix(prefix)]


def test_failed_campaign_withdraws_its_candidacy(etcd_cluster: EtcdCluster) -> None:
    """A campaign that fails while waiting (quorum lost) used to leave its key kept alive; a second
    campaign then waited behind its own older key forever."""
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=2) as a_client, \
            etcd3.client(endpoints=etcd_cluster.endpoints, timeout=2) as b_client:
        a = a_client.election("withdraw", ttl=30)
        assert a.campaign("a", timeout=5)
        b = b_client.election("withdraw", ttl=2)
        result: list[object] = []
        waiter = threading.Thread(target=lambda: result.append(_outcome(lambda: b.campaign("b", timeout=60))))
        waiter.start()
        wait_until(lambda: len(_keys(a_client, "/election/withdraw/")) == 2, timeout=5, what="b's candidacy")
        etcd_cluster.stop_quorum()
        try:
            waiter.join(30)
            assert not waiter.is_alive(), "the campaign must end when the cluster loses its leader"
        finally:
            etcd_cluster.restore_quorum()
        assert isinstance(result[0], etcd3.Etcd3Exception), result
        assert b.lease is None and b.key is None
        wait_until(lambda: len(_keys(a_client, "/election/withdraw/")) == 1, timeout=20,
                   what="the failed candidate's key to go (revoked, or expired within its 2 s TTL)")
        a.resign()
        assert b.campaign("b", timeout=5), "a second campaign must not wait behind the first one's key"
        b.resign()


def test_failed_lock_release_stops_the_keeper(etcd_cluster: EtcdCluster) -> None:
    """release() used to run its delete before stopping the keeper: when the delete failed, the
    lease was refreshed and the lock held until the process exited."""
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=2) as c:
        lock = c.lock("release-fails", ttl=3)
        assert lock.acquire(timeout=5)
        lease = lock.lease
        assert lease is not None
        etcd_cluster.stop_quorum()
        try:
            with etcd3.deadline(2), pytest.raises(etcd3.Etcd3Exception):
                lock.release()
            keeper = lease._keeper
            assert keeper is not None
            # release() does not wait for a keep-alive in flight (that would overrun its deadline); the
            # keeper ends when that keep-alive does, at the latest when the lease's TTL runs out
            wait_until(lambda: not keeper.is_alive(), timeout=5, what="the keeper to stop")
        finally:
            etcd_cluster.restore_quorum()
        wait_until(lambda: c.get("/locks/release-fails") == (None, None), timeout=20,
                   what="the lock key to go with its lease")


@pytest.mark.etcd_cluster(size=1)
def test_lock_without_keep_alive_expires_like_python_etcd3(etcd_cluster: EtcdCluster) -> None:
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=2) as c:
        refreshed = c.lock("refreshed", ttl=2, keep_alive=False)
        assert refreshed.acquire(timeout=5)
        lost = threading.Event()
        lapsed = c.lock("lapsed", ttl=2, keep_alive=False, on_lost=lambda _: lost.set())
        assert lapsed.acquire(timeout=5)
        end = time.monotonic() + 4
        while time.monotonic() < end:  # the owner refreshes one lock and forgets the other
            refreshed.refresh()
            assert not lost.wait(0.5) or time.monotonic() > lapsed.lease.expires_at  # type: ignore[union-attr]
        assert lost.is_set(), "on_lost must say when an unrefreshed lock expired"
        with pytest.raises(etcd3.LockLostError):
            lapsed.check()
        wait_until(lambda: c.get("/locks/lapsed") == (None, None), timeout=5, what="the server to expire it")
        assert refreshed.is_acquired()
        assert refreshed.release()


# ---- every blocking wait keeps the deadline (item 6) ----

def _within(seconds: float, fn: Callable[[], object]) -> tuple[object, float]:
    """Run ``fn`` in a thread (carrying our context); its outcome and duration, failing if it outlives
    ``seconds`` + 5 (so a hang is reported, not waited for)."""
    ctx = contextvars.copy_context()
    out: list[object] = []
    started = time.monotonic()
    th = threading.Thread(target=lambda: out.append(ctx.run(_outcome, fn)), daemon=True)
    th.start()
    th.join(seconds + 5)
    assert not th.is_alive(), f"still blocked {seconds + 5:.1f} s later"
    return out[0], time.monotonic() - started


def test_blocking_waits_keep_the_scope(client: etcd3.Etcd3Client) -> None:
    holder = client.lock("held", ttl=10)
    assert holder.acquire(timeout=5)
    leader = client.election("held", ttl=10)
    assert leader.campaign("x", timeout=5)
    other = client.election("held", ttl=10)
    try:
        for name, fn in [
            ("watch_once(timeout=None)", lambda: client.watch_once("/quiet", timeout=None)),
            ("Lock.acquire(timeout=None)", lambda: client.lock("held").acquire(timeout=None)),
            ("with lock:", lambda: client.lock("held").__enter__()),
            ("campaign(timeout=None)", lambda: other.campaign("y", timeout=None)),
        ]:
            def scoped(fn: Callable[[], object] = fn) -> object:
                with etcd3.deadline(0.5):
                    return fn()

            outcome, took = _within(0.5, scoped)
            assert isinstance(outcome, etcd3.DeadlineExceeded), (name, outcome)
            assert took < 0.5 + 0.1 + 0.2, (name, took)  # +100 ms, +200 ms for a loaded CI machine
    finally:
        holder.release()
        leader.resign()


def test_timeouts_bound_the_whole_operation(etcd_cluster: EtcdCluster) -> None:
    """Lock.acquire(timeout=0.3) used to take 10-20 s with the cluster unreachable (the lease grant
    and the transaction ran on the client default); watch_once's creation waited 10 s."""
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=10) as c:
        for m in etcd_cluster.members:
            m.require_proxy().blackhole()
        try:
            for name, fn, expected in [
                ("Lock.acquire(timeout=0.3)", lambda: c.lock("x").acquire(timeout=0.3), False),
                ("campaign(timeout=0.3)", lambda: c.election("x").campaign("v", timeout=0.3), False),
                ("watch_once(timeout=0.3)", lambda: c.watch_once("/x", timeout=0.3), etcd3.WatchTimedOut),
            ]:
                outcome, took = _within(0.3, fn)
                ok = outcome is expected if isinstance(expected, bool) else isinstance(outcome, expected)
                assert ok, (name, outcome)
                assert took < 0.3 + 0.1 + 0.2, (name, took)
        finally:
            for m in etcd_cluster.members:
                m.require_proxy().heal()


@pytest.mark.etcd_cluster(size=1, auth=True, jwt_ttl=2)
def test_reauthentication_is_single_flight(etcd_cluster: EtcdCluster) -> None:
    from resilient_etcd.metrics import METRICS
    from resilient_etcd.testing.etcd import ROOT_PASSWORD_DEFAULT

    def renewals() -> int:
        return int(sum(METRICS.snapshot()["events"].get("token_renewals", {}).values()))

    with etcd3.client(endpoints=etcd_cluster.endpoints, user="root", password=ROOT_PASSWORD_DEFAULT,
                      timeout=5) as c:
        c.put("/auth/k", "v")
        before = renewals()
        time.sleep(3)  # the token's 2 s TTL runs out (the scenario is the passage of time itself)
        barrier = threading.Barrier(8)

        def reader() -> object:
            barrier.wait()
            return c.get("/auth/k")[0]

        outs: list[object] = []
        threads = [threading.Thread(target=lambda: outs.append(_outcome(reader))) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert outs == [b"v"] * 8, outs
        assert renewals() - before == 1, "eight threads with one stale token must renew it once"


# ---- "never sent" needs proof (item 9) ----

@pytest.mark.etcd_cluster(size=3, netns=True, proxied=False)
def test_refused_on_an_established_connection_is_not_proof_of_never_sent(etcd_cluster: EtcdCluster) -> None:
    """A put reaches a frozen member's socket; the path then answers ICMP port-unreachable, so the
    connection dies with "Connection refused" when its timer fires. That text used to count as "never
    sent": the put was retried on another member, and applied again when the member woke up."""
    m0 = etcd_cluster.members[0]
    # probes would notice the freeze first (ejection: not retried either way); let the connection's
    # own timer (TCP_USER_TIMEOUT = keepalive timeout) speak before the PING's own timeout does
    health = etcd3.HealthPolicy(probe_interval=30, dead_after=60, prefer_leader=False)  # the put goes to m0
    keepalive = etcd3.KeepalivePolicy(time=5, timeout=1)
    with etcd3.client(endpoints=[m.direct_endpoint for m in etcd_cluster.members], timeout=15,
                      health=health, keepalive=keepalive, grpc_options=[("grpc.http2.ping_timeout_ms", 4000)]) as c:
        start = c.put("/icmp/warm", "0").header.revision
        assert next(h for h in c.endpoint_health() if h.active).endpoint == m0.direct_endpoint
        m0.pause()
        outcome: list[object] = []
        writer = threading.Thread(target=lambda: outcome.append(_outcome(lambda: c.put("/icmp/k", "once"))))
        writer.start()
        time.sleep(0.3)  # the put is in m0's socket buffer (the scenario's order, not a synchronisation)
        m0.reject()
        writer.join(20)
        m0.undrop()
        m0.resume()
        assert not writer.is_alive()
        with etcd3.client(endpoints=[etcd_cluster.members[1].direct_endpoint], timeout=5) as other:
            # let the woken member process what it had buffered, then read the key's whole history
            wait_until(lambda: m0.status().raftIndex >= etcd_cluster.members[1].status().raftIndex, timeout=10,
                       what="the woken member to catch up")
            applied = [e for e in _history(other, "/icmp/k", start)]
    assert len(applied) <= 1, f"the put was applied {len(applied)} times (at {applied}; the call: {outcome})"
    assert isinstance(outcome[0], etcd3.ConnectionFailedError), outcome


def _history(c: etcd3.Etcd3Client, key: str, start: int) -> list[int]:
    """Revisions at which ``key`` was written after ``start`` (a replaying watch, read until quiet)."""
    seen: queue.SimpleQueue[object] = queue.SimpleQueue()
    wid = c.add_watch_callback(key, seen.put, start_revision=start + 1)
    revisions: list[int] = []
    try:
        while True:
            try:
                resp = seen.get(timeout=1)
            except queue.Empty:
                return revisions
            revisions += [e.mod_revision for e in resp.events]  # type: ignore[attr-defined]
    finally:
        c.cancel_watch(wid)
