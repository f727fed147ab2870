"""The asyncio client on a real cluster: python-etcd3's answers, the sync client's guarantees under real
faults, and nothing left behind by a cancelled task or a closed client."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

import resilient_etcd as etcd3
from resilient_etcd import aio
from resilient_etcd.testing import EtcdCluster, EtcdMember, netns_available
from resilient_etcd.testing.etcd import ROOT_PASSWORD_DEFAULT

from ..client.test_faults import LoopResult
from .conftest import SLOW_CALLBACK, run

CALL_TIMEOUT = 3.0
SLACK = 0.2


def member_in_use(client: aio.AsyncEtcd3Client, cluster: EtcdCluster) -> EtcdMember:
    active = next(h.endpoint for h in client.endpoint_health() if h.active)
    return next(m for m in cluster.members if m.endpoint == active)


async def poll(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Wait (awaiting, never blocking the loop) until ``check()`` holds, at most ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def test_answers_match_the_sync_client(etcd_cluster: EtcdCluster) -> None:
    async def main() -> None:
        with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5) as sync:
            async with aio.client(endpoints=etcd_cluster.endpoints, timeout=5) as c:
                await c.put("/p/a", "1")
                await c.put("/p/b", "2")
                value, meta = await c.get("/p/a")
                s_value, s_meta = sync.get("/p/a")
                assert (value, meta.mod_revision, meta.version) == (s_value, s_meta.mod_revision, s_meta.version)
                assert await c.get("/p/none") == (None, None)
                assert [v for v, _ in await c.get_prefix("/p/")] == [v for v, _ in sync.get_prefix("/p/")]
                assert [m.key for _, m in await c.get_range("/p/a", "/p/c")] == [b"/p/a", b"/p/b"]
                ok, responses = await c.transaction(
                    compare=[c.transactions.value("/p/a") == "1"],
                    success=[c.transactions.put("/p/a", "3"), c.transactions.get("/p/b")], failure=[])
                assert ok and responses[1][0][0] == b"2"
                assert await c.replace("/p/a", "3", "4") and not await c.replace("/p/a", "3", "5")
                assert await c.put_if_not_exists("/p/c", "x") and not await c.put_if_not_exists("/p/c", "y")
                assert await c.delete("/p/c") and not await c.delete("/p/c")
                lease = await c.lease(10)
                await c.put("/p/leased", "v", lease=lease)
                assert await lease.keys == [b"/p/leased"]
                assert 0 < await lease.remaining_ttl <= 10
                await lease.revoke()
                assert await c.get("/p/leased") == (None, None)
                with pytest.raises(etcd3.LeaseLostError):
                    await c.put("/p/leased", "v", lease=lease)
                status = await c.status()
                assert status.version == sync.status().version
                assert sorted(m.id for m in await c.members()) == sorted(m.id for m in sync.members)
                assert (await c.delete_prefix("/p/")).deleted == 2
                with pytest.raises(etcd3.ConfigurationError):
                    await c.lease(0)
            with pytest.raises(etcd3.ClientClosedError):
                await c.get("/p/a")

    run(main())


def test_bad_arguments_fail_at_construction() -> None:
    with pytest.raises(etcd3.ConfigurationError, match="running event loop"):
        aio.client(endpoints=["127.0.0.1:2379"])  # no loop: grpc.aio channels belong to one

    async def main() -> None:
        with pytest.raises(etcd3.ConfigurationError):
            aio.client(endpoints=[])
        with pytest.raises(etcd3.ConfigurationError):
            aio.client(timeout=-1)
        with pytest.raises(etcd3.ConfigurationError):
            aio.client(user="u")

    run(main())


@dataclass
class Traffic(LoopResult):
    events: list[int] = field(default_factory=list)  # mod revisions seen by the watch


async def traffic(client: aio.AsyncEtcd3Client, worker: int, out: Traffic, stop: asyncio.Event) -> None:
    i = 0
    while not stop.is_set():
        for op in ("get", "put"):
            started = time.monotonic()
            try:
                if op == "get":
                    await client.get("/loop/seed", timeout=CALL_TIMEOUT)
                    out.gets_ok += 1
                else:
                    key = f"/loop/{worker}/{i}"
                    out.put_keys.append(key)
                    await client.put(key, str(i), timeout=CALL_TIMEOUT)
                    out.puts_ok += 1
            except etcd3.Etcd3Exception as e:
                out.errors.append(f"{op}: {type(e).__name__}: {e}")
            i += op == "put"
            took = time.monotonic() - started
            out.longest = max(out.longest, took)
            if took > CALL_TIMEOUT + SLACK:
                out.overruns.append(took)
        await asyncio.sleep(0.005)


async def exercise(cluster: EtcdCluster, inject: Callable[[EtcdMember], None], heal: Callable[[EtcdMember], None],
                   hold: float) -> Traffic:
    """Four tasks of gets and puts and a prefix watch on one client while ``inject`` holds for ``hold`` s."""
    async with aio.client(endpoints=cluster.endpoints, timeout=CALL_TIMEOUT) as client:
        await client.put("/loop/seed", "x")
        out = Traffic()
        stop = asyncio.Event()
        watched = await client.add_watch_prefix_callback(
            "/loop/", lambda r: out.events.extend(e.mod_revision for e in getattr(r, "events", [])))
        workers = [asyncio.create_task(traffic(client, w, out, stop)) for w in range(4)]
        try:
            await poll(lambda: out.gets_ok > 40, timeout=10, what="the traffic to warm up")
            victim = member_in_use(client, cluster)
            await asyncio.to_thread(inject, victim)
            before = out.gets_ok
            await poll(lambda: out.gets_ok > before + 40, timeout=hold + 5, what="gets to resume during the fault")
            moved = member_in_use(client, cluster) is not victim
            await asyncio.sleep(hold)
            await asyncio.to_thread(heal, victim)
            after = out.gets_ok
            await poll(lambda: out.gets_ok > after + 40, timeout=10, what="gets after healing")
        finally:
            stop.set()
            await asyncio.gather(*workers)
        # every put that succeeded is seen by the watch exactly once, in order
        last = (await client.put("/loop/last", "end")).header.revision
        await poll(lambda: bool(out.events) and out.events[-1] >= last, timeout=10, what="the watch to catch up")
        await client.cancel_watch(watched)
        assert out.events == sorted(set(out.events)), "the watch repeated or reordered an event"
        for key in out.put_keys:
            _, meta = await client.get(key)
            assert meta is None or meta.version == 1, f"{key} applied {meta.version} times"
            if meta is not None:
                assert meta.mod_revision in out.events, f"the watch lost the event of {key}"
        assert moved, "the client should have moved off the faulty member"
        assert not out.overruns, f"calls overran their deadline: {out.overruns}"
        assert not [e for e in out.errors if e.startswith("get")], out.errors
        assert len(out.errors) <= 8, out.errors  # puts in flight when their connection died: typed, never resent
        assert out.puts_ok > 40
        return out


def test_s1_member_in_use_killed_and_restarted(etcd_cluster: EtcdCluster) -> None:
    out = run(exercise(etcd_cluster, lambda m: m.kill(), lambda m: m.start(), hold=3))
    assert out.longest < CALL_TIMEOUT


def test_s2_member_in_use_paused(etcd_cluster: EtcdCluster) -> None:
    out = run(exercise(etcd_cluster, lambda m: m.pause(), lambda m: m.resume(), hold=10))
    assert out.longest < 2.5, f"a call waited {out.longest:.2f} s on the frozen member"


def test_s3_member_in_use_blackholed(etcd_cluster: EtcdCluster) -> None:
    out = run(exercise(etcd_cluster, lambda m: m.require_proxy().blackhole(), lambda m: m.require_proxy().heal(),
                       hold=5))
    assert out.longest < 2.5


def test_connection_reset_mid_traffic(etcd_cluster: EtcdCluster) -> None:
    out = run(exercise(etcd_cluster, lambda m: m.require_proxy().reset_peer(), lambda m: m.require_proxy().heal(),
                       hold=2))
    assert out.longest < 2.5


@pytest.mark.skipif(netns_available() is not None, reason=str(netns_available()))
@pytest.mark.etcd_cluster(size=3, netns=True, proxied=False)
def test_s4_member_in_use_dropped_by_iptables(etcd_cluster: EtcdCluster) -> None:
    out = run(exercise(etcd_cluster, lambda m: m.drop(), lambda m: m.undrop(), hold=5))
    assert out.longest < 2.5


def test_cancelled_tasks_leave_nothing_behind(etcd_cluster: EtcdCluster) -> None:
    """Calls, watch creations and lease keepers cancelled mid-flight: no call counted as waiting, no
    watch, no keeper task; aclose() then leaves no task on the loop (run() checks that)."""

    async def main() -> None:
        async with aio.client(endpoints=etcd_cluster.endpoints, timeout=5) as c:
            await c.put("/c/seed", "x")
            victim = member_in_use(c, etcd_cluster)
            await asyncio.to_thread(victim.require_proxy().blackhole)
            try:
                calls = [asyncio.create_task(c.get("/c/seed")) for _ in range(10)]
                watch = asyncio.create_task(c.add_watch_callback("/c/w", lambda r: None))
                await asyncio.sleep(0.2)  # in flight on the silent member
                for t in [*calls, watch]:
                    t.cancel()
                results = await asyncio.gather(*calls, watch, return_exceptions=True)
                assert all(isinstance(r, (asyncio.CancelledError, tuple, int)) for r in results), results
            finally:
                await asyncio.to_thread(victim.require_proxy().heal)
            lease = (await c.lease(5)).keep_alive()
            keeper = lease._keeper
            await poll(lambda: all(conn.outstanding == 0 for conn in c._transport.pool.conns), timeout=5,
                       what="every cancelled call to end its count")
            assert c._watch_manager is None or not c._watch_manager._watches
        assert keeper.done(), "the lease keeper outlived the client"
        assert c._transport.pool.closed

    run(main())


def test_watch_iterator_and_once(etcd_cluster: EtcdCluster) -> None:
    async def main() -> None:
        async with aio.client(endpoints=etcd_cluster.endpoints, timeout=5) as c:
            events, cancel = await c.watch_prefix("/it/")
            for i in range(3):
                await c.put(f"/it/{i}", str(i))
            got = [await events.__anext__() for _ in range(3)]
            assert [e.key for e in got] == [b"/it/0", b"/it/1", b"/it/2"]
            await cancel()
            assert [e async for e in events] == []
            with pytest.raises(etcd3.WatchTimedOut):
                await c.watch_once("/it/quiet", timeout=0.3)
            waiter = asyncio.create_task(c.watch_once("/it/once", timeout=5))
            await asyncio.sleep(0.2)
            await c.put("/it/once", "x")
            assert (await waiter).value == b"x"

    run(main())


@pytest.mark.etcd_cluster(size=1)
def test_the_reader_waits_after_etcd_cancelled_the_last_watch(etcd_cluster: EtcdCluster) -> None:
    """etcd cancelled the only watch (its start revision was compacted), and the stream then ended (a
    restart): the reader found no watch, started the next stream at once, and again, never yielding —
    the event loop froze for good (robustness seed 19: the asyncio process never ended)."""
    async def main() -> None:
        async with aio.client(endpoints=etcd_cluster.endpoints, timeout=5) as c:
            for i in range(3):
                rev = (await c.put("/cw/k", str(i))).header.revision
            await c.compact(rev)
            got: list[object] = []
            await c.add_watch_callback("/cw/k", got.append, start_revision=1)
            await poll(lambda: bool(got), timeout=10, what="etcd to cancel the watch")
            assert isinstance(got[0], etcd3.RevisionCompactedError), got
            manager = c._watch_manager
            assert manager is not None and manager._call is not None, "the stream stays open, with no watch"
            await asyncio.to_thread(etcd_cluster.members[0].restart)
            await poll(lambda: manager._call is None, timeout=10, what="the stream to end with the restart")
            await asyncio.sleep(0.2)  # the loop keeps running: the reader waits for the next watch
            assert (await c.get("/cw/k"))[0] == b"2"
            events, cancel = await c.watch("/cw/k")
            await c.put("/cw/k", "3")
            assert (await events.__anext__()).value == b"3"
            await cancel()

    done, errors = threading.Event(), []

    def body() -> None:
        try:
            run(main())
        except BaseException as e:  # re-raised below, on the test's thread
            errors.append(e)
        finally:
            done.set()

    threading.Thread(target=body, daemon=True, name="frozen-loop-check").start()
    assert done.wait(90), "the event loop froze (the reader spun without yielding)"
    if errors:
        raise errors[0]


def test_lease_kept_alive_through_a_kill(etcd_cluster: EtcdCluster) -> None:
    async def main() -> None:
        async with aio.client(endpoints=etcd_cluster.endpoints, timeout=5) as c:
            lost: list[object] = []
            lease = (await c.lease(3)).keep_alive(on_lost=lost.append)
            await c.put("/lk/key", "v", lease=lease)
            victim = member_in_use(c, etcd_cluster)
            await asyncio.to_thread(victim.kill)
            try:
                await asyncio.sleep(7)  # more than two TTLs: only refreshes keep the key
                assert (await c.get("/lk/key"))[0] == b"v"
                assert not lost and not lease.is_lost
            finally:
                await asyncio.to_thread(victim.start)
            await lease.revoke()

    run(main())


def test_the_loop_check_catches_a_blocking_call() -> None:
    """run()'s own check (it is what makes "never blocks the loop" a tested promise) fails on a blocking call."""

    async def blocks() -> None:
        time.sleep(SLOW_CALLBACK * 2)

    with pytest.raises(AssertionError, match="the event loop was blocked"):
        run(blocks())


def test_lock_excludes_across_faces_and_cancelled_waiters_leave_nothing(etcd_cluster: EtcdCluster) -> None:
    async def main() -> None:
        async with aio.client(endpoints=etcd_cluster.endpoints, timeout=5) as c:
            with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5) as sync:
                held = sync.lock("shared", ttl=5)
                assert held.acquire()
                mine = c.lock("shared", ttl=5)
                assert not await mine.acquire(timeout=0.5)  # held by the sync client
                waiter = asyncio.create_task(mine.acquire(timeout=None))
                await asyncio.sleep(0.3)
                waiter.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiter
                assert len(list(sync.get_prefix("/locks/shared"))) == 1, "a cancelled waiter left its key"
                await asyncio.to_thread(held.release)
                order: list[str] = []

                async def worker(name: str) -> None:
                    async with c.lock("shared", ttl=5) as lock:
                        order.append(f"{name} in {lock.revision}")
                        await asyncio.sleep(0.1)
                        order.append(f"{name} out")

                await asyncio.gather(worker("a"), worker("b"))
                assert [o.split()[1] for o in order] == ["in", "out", "in", "out"], order
                assert not list(sync.get_prefix("/locks/shared")), "async with left the lock held"
                assert not sync.lock("shared", ttl=5).is_acquired()

    run(main())


def test_election_hands_over_and_observers_follow(etcd_cluster: EtcdCluster) -> None:
    async def main() -> None:
        async with aio.client(endpoints=etcd_cluster.endpoints, timeout=5) as c:
            lost: list[object] = []
            first = c.election("ctl", ttl=5, on_lost=lost.append)
            second = c.election("ctl", ttl=5)
            values, stop_observing = await first.observe()
            assert await anext(values) is None  # nobody leads yet
            assert await first.campaign("a")
            assert await anext(values) == b"a"
            assert await first.is_leader()
            assert not await second.campaign("b", timeout=0.5)  # waits behind the leader, then withdraws
            taking_over = asyncio.create_task(second.campaign("b"))
            await asyncio.sleep(0.3)
            assert not taking_over.done()
            await first.proclaim("a2")
            assert await anext(values) == b"a2"
            await first.resign()
            assert await asyncio.wait_for(taking_over, 5)
            assert await anext(values) == b"b"
            assert (await second.leader())[0] == b"b" and not await first.is_leader()
            # the leader's lease revoked behind its back: leadership is lost, loudly
            await c.revoke_lease(second.lease.id)
            await poll(lambda: second._lost.is_set(), timeout=5, what="the loss of leadership")
            with pytest.raises(etcd3.NotLeaderError):
                await second.proclaim("b2")
            await stop_observing()
            assert not lost

    run(main())


def _count(event: str) -> int:
    from resilient_etcd import metrics

    return sum(metrics.snapshot()["events"].get(event, {}).values())


@pytest.mark.parametrize("fault", ["blackhole", "pause"])
def test_a_read_caught_by_a_hang_is_hedged(etcd_cluster: EtcdCluster, fault: str) -> None:
    """As the sync client: a single-key read on a member that just hung is answered by another member in
    about the hedge delay (0.1 s), not the ~0.9 s detection takes; healthy reads send no hedge."""

    async def main() -> tuple[float, float]:
        async with aio.client(endpoints=etcd_cluster.endpoints, timeout=5,
                              health=etcd3.HealthPolicy(share_connections=False)) as c:
            await c.put("/hedge/k", "v")
            for _ in range(50):
                await c.get("/hedge/k")  # the endpoint's usual read time
            quiet = _count("hedges")
            for _ in range(50):
                await c.get("/hedge/k")
            # steady state: at most the budget's 5 % (a read over the 0.1 s floor on a loaded machine)
            assert _count("hedges") - quiet <= 2, "healthy reads were hedged"
            victim = member_in_use(c, etcd_cluster)
            if etcd_cluster.leader() is victim:  # a frozen leader stalls every linearizable read
                await asyncio.to_thread(etcd_cluster.move_leader,
                                        next(m for m in etcd_cluster.members if m is not victim))
            hedges, won = _count("hedges"), _count("hedges_won")
            inject = victim.require_proxy().blackhole if fault == "blackhole" else victim.pause
            heal = victim.require_proxy().heal if fault == "blackhole" else victim.resume
            await asyncio.to_thread(inject)
            try:
                started = time.monotonic()
                assert (await c.get("/hedge/k"))[0] == b"v"
                first = time.monotonic() - started
                started = time.monotonic()
                assert (await c.get("/hedge/k"))[0] == b"v"
                second = time.monotonic() - started
            finally:
                await asyncio.to_thread(heal)
            assert _count("hedges") > hedges and _count("hedges_won") > won
            assert member_in_use(c, etcd_cluster) is not victim
            return first, second

    first, second = run(main())
    assert first < 0.6, f"the read waited {first:.2f} s"
    assert second < 0.1, f"the next read went to the hung member again ({second:.2f} s)"


def test_one_endpoint_reads_are_sent_once_however_slow(etcd_cluster: EtcdCluster) -> None:
    """As the blocking face's: with one endpoint a slow read is not hedged (and not registered for it)."""
    from ..client.test_hedging import _count, _CountingRange

    member = etcd_cluster.members[0]

    async def go() -> int:
        async with aio.client(endpoints=[member.endpoint], timeout=5,
                              health=etcd3.HealthPolicy(share_connections=False)) as c:
            await c.put("/hedge/one-aio", "v")
            for _ in range(50):
                await c.get("/hedge/one-aio")
            conn = c._transport.pool.conns[0]
            spy = _CountingRange(conn.stubs.kv)
            conn.stubs.kv = spy
            await asyncio.to_thread(member.require_proxy().latency, 300)
            try:
                assert (await c.get("/hedge/one-aio"))[0] == b"v"
                assert conn.call_times.mean is None, "no hedge bookkeeping: nothing to hedge to"
            finally:
                await asyncio.to_thread(member.require_proxy().heal)
            return spy.sent

    hedges = _count("hedges")
    assert run(go()) == 1
    assert _count("hedges") == hedges


@pytest.mark.etcd_cluster(size=1, auth=True)
def test_token_lost_in_restart_is_renewed(etcd_cluster: EtcdCluster) -> None:
    """Simple tokens live in the member's memory: a restart invalidates them. Calls, a watch and a lease
    keeper go on after one re-authentication; the password appears nowhere."""

    async def main() -> None:
        async with aio.client(endpoints=etcd_cluster.endpoints, user="root", password=ROOT_PASSWORD_DEFAULT,
                              timeout=5) as c:
            assert ROOT_PASSWORD_DEFAULT not in repr(c)
            await c.put("/auth/k", "1")
            events, cancel = await c.watch("/auth/w")
            await asyncio.to_thread(etcd_cluster.members[0].restart)
            await c.put("/auth/k", "2")  # a mutation too: a rejected token means it was not applied
            assert (await c.get("/auth/k"))[0] == b"2"
            await c.put("/auth/w", "after")
            event = await asyncio.wait_for(anext(events), 10)  # the watch re-authenticated and resumed
            assert event.value == b"after"
            await cancel()
        with pytest.raises(etcd3.AuthenticationError):
            async with aio.client(endpoints=etcd_cluster.endpoints, user="root", password="wrong", timeout=5):
                pass

    run(main())


def test_quorum_loss_watch_says_no_leader_then_resumes(etcd_cluster: EtcdCluster) -> None:
    """S9: two of three members stopped. A read fails typed within its deadline; the watch reports the
    transient NoLeaderError instead of going silent, keeps its place, and delivers the next write."""

    async def main() -> None:
        async with aio.client(endpoints=etcd_cluster.endpoints, timeout=3) as c:
            responses, cancel = await c.watch_response("/q/s9")
            await c.put("/q/s9", "before")
            assert (await anext(responses)).events[0].value == b"before"
            await asyncio.to_thread(etcd_cluster.stop_quorum)
            try:
                with pytest.raises(etcd3.NoLeaderError):
                    await asyncio.wait_for(anext(responses), 15)
                started = time.monotonic()
                with pytest.raises(etcd3.Etcd3Exception):
                    await c.get("/q/s9")
                assert time.monotonic() - started < 3 + SLACK
            finally:
                await asyncio.to_thread(etcd_cluster.restore_quorum)
            async with aio.client(endpoints=etcd_cluster.endpoints, timeout=10) as writer:
                rev = (await writer.put("/q/s9", "after")).header.revision
            resp = await asyncio.wait_for(anext(responses), 15)  # the same iterator goes on
            assert [(e.value, e.mod_revision) for e in resp.events] == [(b"after", rev)]
            await cancel()

    run(main())
