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


def test_seed2_a_progress_answer_older_than_a_watch_does_not_move_it() -> None:
    """A user re-created a watch from a past revision while a progress request was out. etcd acked
    the create, then answered the older progress request (both leave one `select` in etcd's send
    loop, in either order), and we moved every watch's floor to that answer's revision, the new one
    too: the events it was still replaying from history were dropped as already seen (found by
    seed 2: 2 events lost at a user's resume). etcd's answers are fed in that order without a
    server, since its send order cannot be forced."""
    from types import SimpleNamespace

    from resilient_etcd._proto import kv_pb2, rpc_pb2
    from resilient_etcd.etcd.watch import _ALL_WATCHERS, WatchManager, _Watch

    def answer(watch_id: int, revision: int, created: bool = False,
               events: tuple[int, ...] = ()) -> rpc_pb2.WatchResponse:
        return rpc_pb2.WatchResponse(
            header=rpc_pb2.ResponseHeader(revision=revision), watch_id=watch_id, created=created,
            events=[kv_pb2.Event(kv=kv_pb2.KeyValue(key=b"/k", mod_revision=r)) for r in events])

    m = WatchManager(SimpleNamespace())  # type: ignore[arg-type]  # no stream: its answers are fed by hand
    try:
        m._progress_ordered = True  # etcd 3.6: a progress answer means every event before it was sent
        got: list[object] = []
        old = _Watch(1, b"/k", b"/l", lambda _: None, None, False, [], False, on_stream=True)
        new = _Watch(2, b"/k", b"/l", got.append, 90, False, [], False, on_stream=True)
        with m._lock:
            m._watches[1] = old
        m._handle(answer(1, 100, created=True))
        m._progress_requests = getattr(m, "_progress_requests", 0) + 1  # the watchdog asks for progress ...
        with m._lock:
            m._watches[2] = new  # ... and the user adds a watch from revision 90
        m._handle(answer(2, 120, created=True))
        m._handle(answer(_ALL_WATCHERS, 120))  # the answer to the request sent before the create
        assert old.next_revision == 121
        assert new.next_revision == 90, "the new watch is still replaying history from 90"
        m._handle(answer(2, 120, events=(90, 95)))
        assert [e.mod_revision for r in got for e in r.events] == [90, 95]  # type: ignore[attr-defined]
    finally:
        m.close()


@pytest.mark.etcd_cluster(size=1, auth=True, jwt_ttl=2)
def test_seed1_reauthentication_keeps_the_callers_deadline(etcd_cluster: EtcdCluster) -> None:
    """A get with a 2 s deadline returned 2 s late: its token had expired, another thread was
    re-authenticating, and once that was done the get's own Authenticate was given the whole
    budget again instead of what was left of it (found by seed 1, a JWT cluster)."""
    import threading

    member = etcd_cluster.members[0]
    with etcd3.client(endpoints=etcd_cluster.endpoints, user="root", password=ROOT_PASSWORD_DEFAULT,
                      timeout=5) as c:
        c.get("/reg/seed1")
        transport = c._transport
        released = threading.Event()

        def hold() -> None:
            with transport._session.token_lock:
                released.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()  # "another thread" is re-authenticating ...
        member.require_proxy().blackhole()  # ... and the server stops answering
        try:
            timer = threading.Timer(0.6, released.set)
            timer.start()
            started = time.monotonic()
            with pytest.raises(etcd3.DeadlineExceeded):
                transport.authenticate(timeout=1.0)
            took = time.monotonic() - started
        finally:
            released.set()
            holder.join(10)
            member.require_proxy().heal()
    assert took < 1.3, f"authenticate(timeout=1.0) took {took:.2f} s (0.6 s waiting for the lock, then its own call)"


@pytest.mark.etcd_cluster(size=3)
def test_seed102_a_writes_wait_for_a_new_leader_counts_against_its_deadline(etcd_cluster: EtcdCluster) -> None:
    """Seed 102: a LeaseGrant returned 716 ms after its 2 s deadline. Its first attempt provably never
    left (the leader's connection was down), the retry waited for the cluster to name a new leader, and
    then went out with the time left as it was before the wait."""
    import contextlib

    leader = etcd_cluster.leader()
    want = int(leader.status().header.member_id)
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=10) as c:
        end = time.monotonic() + 10
        while c.put("/seed102/k", "x").header.member_id != want and time.monotonic() < end:
            time.sleep(0.05)  # until writes go to the leader (poll with a deadline)
        leader.kill()
        try:
            time.sleep(0.3)  # the reset reaches the client: the leader's connection is down, not hung
            started = time.monotonic()
            with contextlib.suppress(etcd3.Etcd3Exception):  # no new leader within 0.5 s: an election takes 1 s
                c.put("/seed102/k", "v", timeout=0.5)
            took = time.monotonic() - started
        finally:
            leader.start()
    assert took < 0.5 + 0.25, f"a put with a 0.5 s deadline took {took:.2f} s"
