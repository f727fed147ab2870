"""The robustness traffic of :mod:`.traffic` through the asyncio client: the same operations, records and
checks, from tasks on one event loop (the second traffic process runs these for odd seeds)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
import threading
import time
import traceback
from typing import Any

import resilient_etcd as etcd3
from resilient_etcd import aio

from .traffic import CALL_TIMEOUT, SLACK_NS, History, Hold, kept, plan, record

LAGS: list[tuple[int, int]] = []  # (when, how late) the event loop ran a 10 ms timer, from loop_canary
LOOP_TICK = [0]  # when loop_canary last ran (monotonic ns)
# (since when, seen at) the event loop had not run loop_canary for 100 ms, and where its thread was then
BLOCKED: list[tuple[int, int, str]] = []


async def timed(history: History, what: str, limit: float, call: Any) -> Any:
    """Await ``call`` (a coroutine with a timeout), noted if it ended past its deadline (with how long the
    event loop itself lagged meanwhile: the interpreter's stalls are the thread canary's, subtracted, and
    where the task was awaiting 50 ms past its deadline: the overrun's explanation)."""
    called = time.monotonic_ns()
    task = asyncio.current_task()
    seen: list[str] = []
    late = asyncio.get_running_loop().call_later(limit + 0.05, lambda: seen.append(awaiting(task)))
    try:
        return await call
    finally:
        late.cancel()
        returned = time.monotonic_ns()
        if returned - called > limit * 1e9 + SLACK_NS:
            lag = sum(late for at, late in LAGS if called <= at <= returned)
            stuck = "".join(f"the event loop had not run for {(at - since) / 1e6:.0f} ms; its thread was at:\n{where}"
                            for since, at, where in BLOCKED if called <= at <= returned)
            with history.lock:
                history.overruns.append((what, called, returned, limit, os.getpid(),
                                         f"(an asyncio task; the event loop lagged {lag / 1e6:.0f} ms meanwhile)\n"
                                         + "".join(seen) + stuck))


def awaiting(task: asyncio.Task[Any] | None, depth: int = 0) -> str:
    """Where a suspended task is: its chain of awaits, innermost last, and the chains of the unfinished
    tasks its frames hold (``wait_for``'s inner task, a ``gather``'s children): ``Task.get_stack`` gives
    only the outermost frame of a suspended coroutine."""
    if task is None or depth > 3:
        return ""
    indent = "  " * depth
    lines = [f"{indent}{task.get_name()}:\n"]
    held: list[asyncio.Task[Any]] = []
    aw: Any = task.get_coro()
    while aw is not None:
        frame = getattr(aw, "cr_frame", None) or getattr(aw, "gi_frame", None) or getattr(aw, "ag_frame", None)
        if frame is None:
            lines.append(f"{indent}  awaiting {aw!r:.200}\n")
            break
        lines.append(f'{indent}  File "{frame.f_code.co_filename}", line {frame.f_lineno}, in {frame.f_code.co_name}\n')
        held += [v for v in frame.f_locals.values() if isinstance(v, asyncio.Task) and not v.done() and v is not task]
        aw = getattr(aw, "cr_await", None) or getattr(aw, "gi_yieldfrom", None)
    return "".join(lines) + "".join(awaiting(t, depth + 1) for t in held)


async def loop_canary(stop: asyncio.Event, period: float = 0.01) -> None:
    """How late the event loop runs a timer (over 1 ms): for the overruns' explanation."""
    while not stop.is_set():
        before = time.monotonic_ns()
        await asyncio.sleep(period)
        LOOP_TICK[0] = now = time.monotonic_ns()
        late = now - before - int(period * 1e9)
        if late > 1_000_000:
            LAGS.append((before, late))


def loop_watchdog(loop_thread: int, stop: threading.Event, after: float = 0.1) -> None:
    """On its own thread: when the event loop has not run :func:`loop_canary` for ``after`` seconds, note
    where the loop's thread is (a blocking call on the loop, or the GIL: the thread canary tells which)."""
    sampled = 0
    while not stop.wait(0.01):
        tick, now = LOOP_TICK[0], time.monotonic_ns()
        if tick and tick != sampled and now - tick > after * 1e9:
            sampled = tick
            frame = sys._current_frames().get(loop_thread)
            BLOCKED.append((tick, now, "".join(traceback.format_stack(frame)[-12:]) if frame is not None
                            else "(no Python frame)\n"))


async def kv_traffic(client: aio.AsyncEtcd3Client, history: History, worker: int, keys: list[str],
                     stop: asyncio.Event, rng: random.Random, timeout: float = CALL_TIMEOUT) -> None:
    """:func:`.traffic.kv_traffic` as a task."""
    prefix = keys[0][:-1]
    seq = 0
    while not stop.is_set():
        seq += 1
        kind, ops = plan(history, worker, keys, seq, rng)
        try:
            await timed(history, kind, timeout, _do(client, kind, ops, prefix, timeout))
        except etcd3.Etcd3Exception:
            record(history, kind, ops, failed=True)
        else:
            record(history, kind, ops, failed=False)
        await asyncio.sleep(0)  # a fast healthy cluster must not starve the other tasks


async def _do(client: aio.AsyncEtcd3Client, kind: str, ops: list[dict[str, Any]], prefix: str,
              timeout: float) -> None:
    op = ops[0]
    key = op["key"]
    if kind == "put":
        await client.put(key, op["value"], timeout=timeout)
    elif kind in ("get", "serial"):
        got, _ = await client.get(key, serializable=kind == "serial", timeout=timeout)
        op["found"], op["got"] = got is not None, (got or b"").decode()
    elif kind == "prefix":
        seen = {m.key.decode(): v.decode() for v, m in await client.get_prefix(prefix, timeout=timeout)}
        for o in ops:
            o["found"], o["got"] = o["key"] in seen, seen.get(o["key"], "")
    elif kind == "cas":
        if op["expect"] is None:
            op["ok"] = await client.put_if_not_exists(key, op["value"], timeout=timeout)
        else:
            op["ok"] = await client.replace(key, op["expect"], op["value"], timeout=timeout)
    elif kind == "delete":
        op["ok"] = bool(await client.delete(key, timeout=timeout))
    else:
        t = client.transactions
        await client.transaction([], [t.put(o["key"], o["value"]) for o in ops], [], timeout=timeout)


async def lease_worker(client: aio.AsyncEtcd3Client, history: History, prefix: str, worker: int,
                       stop: asyncio.Event, rng: random.Random, timeout: float = CALL_TIMEOUT) -> None:
    """:func:`.traffic.lease_worker` as a task: the keeper is a task too."""
    n = 0
    while not stop.is_set():
        n += 1
        ttl = rng.choice((2, 3, 4))
        try:
            lease = await timed(history, "lease grant", timeout, client.lease(ttl, timeout=timeout))
        except etcd3.Etcd3Exception:
            await asyncio.sleep(0.2)
            continue
        rec = kept(history, lease, f"{prefix}lease/{worker}-{n}", ttl)
        with contextlib.suppress(etcd3.Etcd3Exception):  # the key may or may not exist: the checks read etcd's
            await timed(history, "put with lease", timeout, client.put(rec.key, "x", lease=lease, timeout=timeout))
        await _pause(stop, rng.uniform(1.0, 6.0))
        if rec.lost is None:
            rec.revoke_called = time.monotonic_ns()
            await lease.give_up()


async def lock_worker(client: aio.AsyncEtcd3Client, history: History, name: str, who: str, stop: asyncio.Event,
                      rng: random.Random, timeout: float = CALL_TIMEOUT) -> None:
    """:func:`.traffic.exclusion_worker` for an :class:`AsyncLock`."""
    while not stop.is_set():
        lost = asyncio.Event()
        lock = client.lock(name, ttl=3, on_lost=lambda _, lost=lost: lost.set())
        try:
            got = await timed(history, "lock acquire", timeout, lock.acquire(timeout=timeout))
        except etcd3.Etcd3Exception:
            await asyncio.sleep(0.1)
            continue
        if not got:
            continue
        start, revision = time.monotonic_ns(), lock.revision or 0
        ended = "lost" if await _pause(lost, rng.uniform(0.1, 1.0)) else "released"
        end = time.monotonic_ns()
        if ended != "lost":
            try:
                with etcd3.deadline(timeout):
                    await timed(history, "lock give up", timeout, lock.release())
            except etcd3.Etcd3Exception:
                ended = "giving up failed"
        with history.lock:
            history.holds.setdefault(f"lock {name}", []).append(Hold(who, start, end, revision, ended))


async def _pause(event: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``event``; True when the event came."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
        return True
    except asyncio.TimeoutError:
        return False


async def child(endpoints: list[str], creds: dict[str, Any], history: History, keys: list[str], prefix: str,
                seed: int, duration: float, ready: Any) -> None:
    """The second process's traffic through one asyncio client (see ``harness._child_main``)."""
    rng = random.Random(seed * 7919)
    stop = asyncio.Event()
    async with aio.client(endpoints=endpoints, timeout=2, **creds) as client:
        ready()
        tasks = [asyncio.create_task(kv_traffic(client, history, 100 + w, keys, stop, random.Random(rng.random())))
                 for w in range(4)]
        tasks.append(asyncio.create_task(lease_worker(client, history, prefix, 150, stop,
                                                      random.Random(rng.random()))))
        tasks.append(asyncio.create_task(lock_worker(client, history, f"rob-{seed}", "lock-p2", stop,
                                                     random.Random(rng.random()))))
        tasks.append(asyncio.create_task(loop_canary(stop)))
        done = threading.Event()
        watchdog = threading.Thread(target=loop_watchdog, args=(threading.get_ident(), done), name="loop-watchdog")
        watchdog.start()
        try:
            await asyncio.sleep(duration)
            stop.set()
            await asyncio.gather(*tasks)
        finally:
            done.set()
            watchdog.join()
