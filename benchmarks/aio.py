"""The asyncio client's own scenarios: throughput with 64 tasks beside raw ``grpc.aio`` stubs, a quiet
watch whose member is blackholed, and 10,000 watches on one client through a member's kill."""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from resilient_etcd import aio
from resilient_etcd._proto import rpc_pb2, rpc_pb2_grpc
from resilient_etcd.testing import EtcdCluster, wait_until

from .scenarios import Trial, stall_result, throughput_summary

Op = Callable[[], Awaitable[object]]


def steady64(cluster: EtcdCluster, calls: int, rounds: int, tasks: int = 64) -> dict[str, Any]:
    """Range calls from ``tasks`` concurrent tasks on one loop: raw ``grpc.aio`` stubs vs
    ``resilient_etcd.aio``, in back-to-back pairs of rounds, the order alternating (as ``steady``)."""
    return asyncio.run(_steady64(cluster.endpoints[0], calls, rounds, tasks))


async def _steady64(endpoint: str, calls: int, rounds: int, tasks: int) -> dict[str, Any]:
    results: dict[str, list[float]] = {"raw": [], "resilient": []}
    lat: dict[str, list[float]] = {"raw": [], "resilient": []}
    async with grpc.aio.insecure_channel(endpoint, options=[("grpc.use_local_subchannel_pool", 1)]) as ch, \
            aio.client(endpoints=[endpoint], timeout=5) as client:
        stub = rpc_pb2_grpc.KVStub(ch)
        await client.put("/bench/key", "x")
        ops: dict[str, Op] = {
            "raw": lambda: stub.Range(rpc_pb2.RangeRequest(key=b"/bench/key"), timeout=5),
            "resilient": lambda: client.get("/bench/key"),
        }

        async def loop(fn: Op, n: int, out: list[float]) -> None:
            for _ in range(n):
                s = time.perf_counter()
                await fn()
                out.append(time.perf_counter() - s)

        for fn in ops.values():
            await asyncio.gather(*(loop(fn, 20, []) for _ in range(tasks)))
        pairs: list[float] = []
        for r in range(rounds):
            order = list(ops.items()) if r % 2 == 0 else list(reversed(ops.items()))
            for name, fn in order:
                per = calls // tasks
                outs: list[list[float]] = [[] for _ in range(tasks)]
                t0 = time.perf_counter()
                await asyncio.gather(*(loop(fn, per, outs[i]) for i in range(tasks)))
                results[name].append(per * tasks / (time.perf_counter() - t0))
                for o in outs:
                    lat[name].extend(o)
            pairs.append(results["resilient"][-1] / results["raw"][-1])
    return {**throughput_summary(results, lat, pairs), "tasks": tasks}


def watch_stall_trial(cluster: EtcdCluster) -> Trial:
    """``watch-stall`` for the asyncio client: a quiet watch whose member is blackholed; time until it sees
    a write made right after the fault (through another member)."""
    return asyncio.run(_watch_stall(cluster))


async def _watch_stall(cluster: EtcdCluster) -> Trial:
    async with aio.client(endpoints=cluster.endpoints, timeout=5) as c:
        got: list[tuple[float, Any]] = []
        seen = asyncio.Event()

        def on_response(item: Any) -> None:
            if isinstance(item, BaseException) or item.events:
                got.append((time.monotonic(), item))
                seen.set()

        wid = await c.add_watch_callback("/bench/quiet", on_response)
        active = next(h.endpoint for h in c.endpoint_health() if h.active)
        victim = next(m for m in cluster.members if m.endpoint == active)
        other = next(m for m in cluster.members if m is not victim)
        async with aio.client(endpoints=[other.endpoint], timeout=5) as w2:
            t0 = time.monotonic()
            await asyncio.to_thread(victim.require_proxy().blackhole)
            rev = (await w2.put("/bench/quiet", f"{t0}")).header.revision
            try:
                await asyncio.wait_for(seen.wait(), 20)
                ok = True
            except asyncio.TimeoutError:
                ok = False
        await asyncio.to_thread(victim.require_proxy().heal)
        await c.cancel_watch(wid)
    return stall_result("resilient-aio", got, rev, t0, ok, victim.name)


def watch_many_trial(cluster: EtcdCluster, n: int = 10_000) -> Trial:
    """``n`` watches on one asyncio client; the member in use is killed (and restarted); time until every
    watch has seen a write made right after the kill; Python heap per watch."""
    return asyncio.run(_watch_many(cluster, n))


async def _watch_many(cluster: EtcdCluster, n: int) -> Trial:
    async with aio.client(endpoints=cluster.endpoints, timeout=30) as c:
        seen = [0] * n
        all_seen = asyncio.Event()
        remaining = [n]

        def callback_for(i: int) -> Callable[[Any], None]:
            def cb(item: Any) -> None:
                if isinstance(item, BaseException) or not item.events:
                    return
                seen[i] += len(item.events)
                if seen[i] == len(item.events):
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        all_seen.set()
            return cb

        await c.get("/bench/many")
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        ids = await asyncio.gather(*(c.add_watch_callback("/bench/many", callback_for(i)) for i in range(n)))
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        per_watch = sum(s.size_diff for s in after.compare_to(before, "filename")) / n
        active = next(h.endpoint for h in c.endpoint_health() if h.active)
        victim = next(m for m in cluster.members if m.endpoint == active)
        other = next(m for m in cluster.members if m is not victim)
        if cluster.leader() is victim:  # a killed leader fails the write until an election: S2-leader's topic
            await asyncio.to_thread(cluster.move_leader, other)
            await asyncio.to_thread(wait_until, lambda: cluster.leader() is not victim, timeout=10,
                                    what="the leader moved off the victim")
        async with aio.client(endpoints=[other.endpoint], timeout=10) as w:
            t0 = time.monotonic()
            await asyncio.to_thread(victim.kill)
            await w.put("/bench/many", "after-restart")
            try:
                await asyncio.wait_for(all_seen.wait(), 30)
                ok = True
            except asyncio.TimeoutError:
                ok = False
            took = time.monotonic() - t0
            await asyncio.to_thread(victim.start)
        await asyncio.gather(*(c.cancel_watch(wid) for wid in ids))
    lost = sum(1 for s in seen if s == 0)
    dups = sum(1 for s in seen if s > 1)
    return Trial(f"watch-{n}", "resilient-aio", 30.0, took if ok else None, lost, 0, dups,
                 {"watches": n, "bytes_per_watch": per_watch, "lost": lost, "duplicates": dups})
