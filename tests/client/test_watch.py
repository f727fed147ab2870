"""Watches on real clusters: python-etcd3's API, resume without loss or duplicates, stall
detection on a quiet watch, compaction while away, token loss in a restart."""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

import resilient_etcd as etcd3
from resilient_etcd._proto import rpc_pb2, rpc_pb2_grpc
from resilient_etcd.etcd.events import DeleteEvent, PutEvent
from resilient_etcd.testing import EtcdCluster, wait_until
from resilient_etcd.testing.etcd import ROOT_PASSWORD_DEFAULT


def next_within(events: Iterator[etcd3.Event], seconds: float) -> etcd3.Event | None:
    """The next event, or None if none arrives within ``seconds`` (the iterator blocks, so use a thread)."""
    got: list[etcd3.Event] = []
    t = threading.Thread(target=lambda: got.append(next(events)), daemon=True)
    t.start()
    t.join(seconds)
    return got[0] if got else None


def test_watch_api(client: etcd3.Etcd3Client) -> None:
    events, cancel = client.watch("/w/a", prev_kv=True)
    client.put("/w/a", "1")
    client.put("/w/a", "2")
    client.delete("/w/a")
    got = [next(events) for _ in range(3)]
    assert [type(e) for e in got] == [PutEvent, PutEvent, DeleteEvent]
    assert [e.value for e in got[:2]] == [b"1", b"2"] and got[1].prev_value == b"1"
    assert got[0].key == b"/w/a" and got[1].version == 2
    cancel()
    assert list(events) == []


def test_seed128_no_callback_runs_after_cancel_returns(client: etcd3.Etcd3Client) -> None:
    """Robustness seed 128: cancel_watch waits for a callback in progress, and nothing is delivered after
    it returns (the harness saw a callback that had passed its own "cancelled?" check deliver after the
    user had cancelled and re-created the watch: its events came twice)."""
    inside, release = threading.Event(), threading.Event()
    log: list[tuple[str, float]] = []

    def callback(resp: object) -> None:
        if isinstance(resp, BaseException):
            return
        log.append(("callback start", time.monotonic()))
        inside.set()
        release.wait(10)
        log.append(("callback end", time.monotonic()))

    wid = client.add_watch_callback("/cancel-wait/k", callback)
    client.put("/cancel-wait/k", "1")
    assert inside.wait(10)
    client.put("/cancel-wait/k", "2")  # queued behind the running callback

    def cancel() -> None:
        client.cancel_watch(wid)
        log.append(("cancel returned", time.monotonic()))

    canceller = threading.Thread(target=cancel)
    canceller.start()
    canceller.join(0.3)
    assert canceller.is_alive(), "cancel returned while the callback was still running"
    release.set()
    canceller.join(10)
    client.put("/cancel-wait/k", "3")
    client.get("/cancel-wait/k")
    assert [name for name, _ in log] == ["callback start", "callback end", "cancel returned"]


def test_watch_prefix_once_and_timeouts(client: etcd3.Etcd3Client) -> None:
    with pytest.raises(etcd3.WatchTimedOut):
        client.watch_once("/w/none", timeout=0.3)
    threading.Timer(0.2, lambda: client.put("/w/p/x", "v")).start()
    ev = client.watch_prefix_once("/w/p/", timeout=5)
    assert ev.key == b"/w/p/x" and ev.value == b"v"


def test_start_revision_replays_and_callbacks(client: etcd3.Etcd3Client) -> None:
    first = client.put("/w/r", "1").header.revision
    client.put("/w/r", "2")
    seen: queue.SimpleQueue[object] = queue.SimpleQueue()
    wid = client.add_watch_callback("/w/r", seen.put, start_revision=first)
    resp = seen.get(timeout=5)
    assert isinstance(resp, etcd3.WatchResponse)
    values = [e.value for e in resp.events]
    while len(values) < 2:
        values += [e.value for e in seen.get(timeout=5).events]  # type: ignore[attr-defined]
    assert values == [b"1", b"2"]
    client.cancel_watch(wid)


def test_compacted_start_revision_raises(client: etcd3.Etcd3Client) -> None:
    first = client.put("/w/c", "1").header.revision
    latest = client.put("/w/c", "2").header.revision
    client.compact(latest)
    # etcd creates the watch, then cancels it with the compacted revision: the error reaches the iterator
    events, cancel = client.watch("/w/c", start_revision=first)
    with pytest.raises(etcd3.RevisionCompactedError) as info:
        next(events)
    assert info.value.compacted_revision == latest
    cancel()


def test_quiet_watch_on_blackholed_member_resumes_and_sees_next_write(etcd_cluster: EtcdCluster) -> None:
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5) as c, \
            etcd3.client(endpoints=etcd_cluster.endpoints[1:], timeout=5) as writer:
        events, cancel = c.watch("/w/quiet")
        active = next(h.endpoint for h in c.endpoint_health() if h.active)
        member = next(m for m in etcd_cluster.members if m.endpoint == active)
        watcher = c._watcher
        before = watcher.resumes
        started = time.monotonic()
        member.require_proxy().blackhole()
        wait_until(lambda: watcher.resumes > before, timeout=5, what="the watch to resume elsewhere")
        resumed_after = time.monotonic() - started
        writer.put("/w/quiet", "after")
        got = next_within(events, 5)
        cancel()
        assert got is not None and got.value == b"after"
        assert resumed_after < 2.5, f"the stalled quiet watch took {resumed_after:.2f} s to resume"


@pytest.mark.etcd_cluster(size=1)
def test_compaction_while_away_is_reported(etcd_cluster: EtcdCluster) -> None:
    member = etcd_cluster.members[0]
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5) as c:
        responses, cancel = c.watch_response("/w/away")
        c.put("/w/away", "seen")
        assert next(responses).events[0].value == b"seen"
        member.require_proxy().cut()  # the watcher is away: its stream breaks and cannot come back
        with grpc.insecure_channel(member.direct_endpoint) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            kv.Put(rpc_pb2.PutRequest(key=b"/w/away", value=b"missed"), timeout=5)
            rev = kv.Put(rpc_pb2.PutRequest(key=b"/w/other", value=b"x"), timeout=5).header.revision
            kv.Compact(rpc_pb2.CompactionRequest(revision=rev, physical=True), timeout=5)
        member.require_proxy().heal()
        with pytest.raises(etcd3.RevisionCompactedError) as info:
            next(responses)
        assert info.value.compacted_revision == rev
        cancel()


@pytest.mark.etcd_cluster(size=1, auth=True)
def test_watch_survives_restart_with_auth(etcd_cluster: EtcdCluster) -> None:
    creds = {"user": "root", "password": ROOT_PASSWORD_DEFAULT}
    with etcd3.client(endpoints=etcd_cluster.endpoints, **creds) as c:
        events, cancel = c.watch("/w/auth")
        c.put("/w/auth", "1")
        assert next(events).value == b"1"
        etcd_cluster.members[0].restart()  # every simple token dies with the process
        with etcd3.client(endpoints=etcd_cluster.endpoints, **creds) as writer:
            writer.put("/w/auth", "2")
        got = next_within(events, 10)
        cancel()
        assert got is not None and got.value == b"2"


def etcd_history(cluster: EtcdCluster, prefix: bytes, start: int, end: int) -> list[tuple[int, bytes, int, bytes]]:
    """Every event etcd itself recorded under ``prefix`` in [start, end], replayed by a raw watch."""
    out: list[tuple[int, bytes, int, bytes]] = []
    req = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
        key=prefix, range_end=prefix[:-1] + bytes([prefix[-1] + 1]), start_revision=start))
    with grpc.insecure_channel(cluster.direct_endpoints[0]) as ch:
        stream = rpc_pb2_grpc.WatchStub(ch).Watch(iter([req]), timeout=60)
        for resp in stream:
            for e in resp.events:
                out.append((e.kv.mod_revision, e.kv.key, e.type, e.kv.value))
            if out and out[-1][0] >= end:
                break
        stream.cancel()
    return out


def test_history_equals_etcd_history_under_faults(etcd_cluster: EtcdCluster) -> None:
    """≥ 5,000 writes under a prefix while S1, S2, S3 and S8 hit the watcher's member at random times."""
    rng = random.Random(7)
    prefix = b"/hist/"
    delivered: list[tuple[int, bytes, int, bytes]] = []
    errors: list[BaseException] = []

    def on_response(item: object) -> None:
        if isinstance(item, BaseException):
            errors.append(item)
            return
        for e in item.events:  # type: ignore[attr-defined]
            delivered.append((e.mod_revision, e.key, int(isinstance(e, DeleteEvent)), e.value))

    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5) as c, \
            etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5) as writer:
        start = writer.put(b"/hist-start", b"x").header.revision + 1
        c.add_watch_prefix_callback(prefix, on_response)
        written = 0
        stop = threading.Event()

        def write() -> None:
            nonlocal written
            i = 0
            while not stop.is_set() and written < 5000:
                key = prefix + f"{i % 50:02d}".encode()
                try:
                    if i % 10 == 9:
                        writer.delete(key)
                    else:
                        writer.put(key, str(i))
                    written += 1
                except etcd3.Etcd3Exception:
                    pass  # an ambiguous write during a fault; etcd's history says what happened
                i += 1

        w = threading.Thread(target=write)
        w.start()
        faults = ["S1", "S2", "S3", "S8"] * 2
        rng.shuffle(faults)
        try:
            for fault in faults:
                time.sleep(rng.uniform(0.3, 1.2))  # random moments are the point of the scenario
                active = next(h.endpoint for h in c.endpoint_health() if h.active)
                m = next(m for m in etcd_cluster.members if m.endpoint == active)
                if fault == "S1":
                    m.kill()
                    m.start()
                elif fault == "S2":
                    m.pause()
                    time.sleep(rng.uniform(1.0, 2.5))
                    m.resume()
                elif fault == "S3":
                    m.require_proxy().blackhole()
                    time.sleep(rng.uniform(1.0, 2.5))
                    m.require_proxy().heal()
                else:
                    m.require_proxy().reset_peer()
                    time.sleep(0.5)
                    m.require_proxy().heal()
                etcd_cluster.wait_healthy()
        finally:
            w.join(120)
            stop.set()
        end = writer.put(prefix + b"~end", b"x").header.revision  # a marker inside the prefix closes the history
        truth = etcd_history(etcd_cluster, prefix, start, end)
        last = truth[-1][0]
        wait_until(lambda: delivered and delivered[-1][0] >= last, timeout=30,
                   what="the watcher to catch up with etcd's history")
        resumes = c._watcher.resumes
        during = list(errors)  # (closing the client tells the callback, with ClientClosedError: not a fault's)
    assert resumes >= 4, f"the faults should have broken the watch stream repeatedly (resumed {resumes} times)"
    assert written >= 5000 or len(truth) >= 5000
    assert not during, during
    assert [type(e) for e in errors[len(during):]] == [etcd3.ClientClosedError], "close() ends the watch, once"
    assert len(delivered) == len(set(delivered)), "duplicate events"
    assert delivered == truth, f"lost {len(set(truth) - set(delivered))}, extra {len(set(delivered) - set(truth))}"


def test_no_quorum_require_leader_watch_fails_fast_then_resumes(etcd_cluster: EtcdCluster) -> None:
    """S9: stop 2 of 3 members. The watch says NoLeaderError (typed, transient) instead of going
    silent, keeps its place, and delivers the next write once quorum is back."""
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5) as c:
        responses, cancel = c.watch_response("/w/s9")
        c.put("/w/s9", "before")
        assert next(responses).events[0].value == b"before"
        started = time.monotonic()
        etcd_cluster.stop_quorum()
        with pytest.raises(etcd3.NoLeaderError):
            next(responses)
        noticed = time.monotonic() - started
        etcd_cluster.restore_quorum()
        with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=10) as writer:
            rev = writer.put("/w/s9", "after").header.revision
        resp = next(responses)  # the same iterator goes on
        assert [(e.value, e.mod_revision) for e in resp.events] == [(b"after", rev)]
        cancel()
    assert noticed < 15, f"no-leader took {noticed:.1f} s to surface"


DEBIAN_ETCD = "/usr/bin/etcd"  # Debian's etcd-server 3.4.23 (make deps installs it): before etcd #15220's fix


def _resumed_history(cluster: EtcdCluster, n: int) -> tuple[list[int], bool]:
    """Write ``n`` keys while the member restarts twice under a prefix watch; the revisions the watch
    delivered, and whether its stream trusted progress answers."""
    with etcd3.client(endpoints=cluster.endpoints, timeout=5) as c:
        events, cancel = c.watch_prefix("/v34/")
        manager = c._watch_manager
        assert manager is not None

        def write() -> None:
            for i in range(n):
                for _ in range(100):  # through the restarts: retry until it lands (unique values, checked below)
                    try:
                        c.put(f"/v34/{i}", str(i))
                        break
                    except etcd3.Etcd3Exception:
                        time.sleep(0.05)
                if i in (n // 3, 2 * n // 3):
                    cluster.members[0].restart()

        writer = threading.Thread(target=write)
        writer.start()
        revisions: list[int] = []
        keys: set[bytes] = set()
        while len(keys) < n:
            ev = next_within(events, 15)
            assert ev is not None, f"the watch stopped after {len(keys)} of {n} keys"
            revisions.append(ev.mod_revision)
            keys.add(ev.key)
        writer.join(30)
        ordered = manager._progress_ordered
        cancel()
    return revisions, ordered


@pytest.mark.etcd_cluster(size=1, etcd_binary=DEBIAN_ETCD)
def test_watch_on_etcd_34_resumes_without_trusting_progress_answers(etcd_cluster: EtcdCluster) -> None:
    """etcd before 3.4.25 / 3.5.8 could answer a progress request ahead of pending events (etcd #15220):
    on such a server progress answers prove the stream alive but never raise the resume floor."""
    version = etcd_cluster.members[0].status().version
    assert version.startswith("3.4."), version
    revisions, ordered = _resumed_history(etcd_cluster, 150)
    assert not ordered, f"progress answers of etcd {version} must not move the floor"
    assert revisions == sorted(set(revisions)), "in order, no duplicates"


@pytest.mark.etcd_cluster(size=1)
def test_watch_on_etcd_36_trusts_progress_answers(etcd_cluster: EtcdCluster) -> None:
    revisions, ordered = _resumed_history(etcd_cluster, 150)
    assert ordered, "a 3.6 member's progress answers move the resume floor"
    assert revisions == sorted(set(revisions)), "in order, no duplicates"


@pytest.mark.etcd_cluster(size=1)
def test_a_stream_opened_before_its_member_told_its_version_asks_again(etcd_cluster: EtcdCluster,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The version lookup at stream open fails while the member restarts; that stream must not stay
    untrusting for its whole life (it did: the 3.6 test above failed 2 runs in 14): once the member
    answers on the stream, the version is asked again."""
    from resilient_etcd.etcd.watch import WatchManager

    real = WatchManager._server_version
    asked: list[str | None] = []

    def first_fails(self: WatchManager, conn: object) -> str | None:
        version = None if not asked else real(self, conn)  # type: ignore[arg-type]
        asked.append(version)
        return version

    monkeypatch.setattr(WatchManager, "_server_version", first_fails)
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5) as c:
        events, cancel = c.watch_prefix("/unknown-version/")
        manager = c._watch_manager
        assert manager is not None
        wait_until(lambda: manager._progress_ordered, timeout=10, what="the stream to trust progress answers")
        assert asked[0] is None and asked[1] is not None and asked[1].startswith("3.6."), asked
        c.put("/unknown-version/a", "1")
        ev = next_within(events, 10)
        assert ev is not None and ev.key == b"/unknown-version/a"
        cancel()


def test_progress_order_by_version() -> None:
    from resilient_etcd.etcd.watch import progress_is_ordered

    assert [progress_is_ordered(v) for v in ("3.4.23", "3.4.25", "3.5.7", "3.5.8", "3.6.0", "3.6.16-rc.0")] == [
        False, True, False, True, True, True]
    assert not progress_is_ordered(None) and not progress_is_ordered("") and not progress_is_ordered("x")
