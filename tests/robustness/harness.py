"""Randomized fault schedules under client traffic, every history checked (issue: robustness).

This is the first slice: KV traffic (put, get, compare-and-swap, delete; every written value unique)
from several threads through resilient_etcd, a seeded schedule of real faults on a 3-member cluster,
and the history checked for linearizability by porcupine (``tools/porcupine-checker``). A write
whose outcome the client could not know is recorded as *unknown* (no return time: it may have
taken effect at any point after its call, or never); a failed read is dropped.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import resilient_etcd as etcd3
from resilient_etcd.testing import EtcdCluster, find_binary

FAULTS = ("kill", "pause", "blackhole")


@dataclass
class History:
    """Operations as porcupine-checker reads them; one monotonic clock (ns) for every thread."""

    ops: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, op: dict[str, Any]) -> None:
        with self.lock:
            self.ops.append(op)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.ops))


def traffic(client: etcd3.Etcd3Client, history: History, worker: int, keys: list[str], stop: threading.Event,
            rng: random.Random, timeout: float = 2.0) -> None:
    """One client thread's loop: a random operation on a random key until ``stop``."""
    seq = 0
    while not stop.is_set():
        seq += 1
        key = rng.choice(keys)
        kind = rng.choices(("put", "get", "cas", "delete"), weights=(4, 4, 2, 1))[0]
        value = f"w{worker}-{seq}"
        op: dict[str, Any] = {"client": worker, "key": key, "op": kind, "value": "", "expect": None}
        if kind in ("put", "cas"):
            op["value"] = value
        if kind == "cas":
            current = _last_written(history, key, rng)
            op["expect"] = current
        op["call"] = time.monotonic_ns()
        try:
            if kind == "put":
                client.put(key, value, timeout=timeout)
            elif kind == "get":
                got, _ = client.get(key, timeout=timeout)
                op["found"], op["got"] = got is not None, (got or b"").decode()
            elif kind == "cas":
                if op["expect"] is None:
                    op["ok"] = client.put_if_not_exists(key, value, timeout=timeout)
                else:
                    op["ok"] = client.replace(key, op["expect"], value, timeout=timeout)
            else:
                op["ok"] = bool(client.delete(key, timeout=timeout))
            op["return"] = time.monotonic_ns()
        except etcd3.Etcd3Exception:
            if kind == "get":
                continue  # a failed read observed nothing
            op["return"] = None  # a write whose outcome is unknown
        history.add(op)


def _last_written(history: History, key: str, rng: random.Random) -> str | None:
    """An expected value for a compare-and-swap: usually the last value written to ``key`` (so some
    succeed), sometimes absent."""
    with history.lock:
        for op in reversed(history.ops):
            if op["key"] == key and op["op"] in ("put", "cas") and op.get("return") is not None:
                return str(op["value"]) if rng.random() < 0.8 else None
    return None


def faults(cluster: EtcdCluster, rng: random.Random, stop: threading.Event, log: list[str]) -> None:
    """One fault at a time on a random member, held 0.5-2 s, with 0.2-1.5 s of calm between."""
    start = time.monotonic()
    while not stop.wait(rng.uniform(0.2, 1.5)):
        m = rng.choice(cluster.members)
        kind = rng.choice(FAULTS)
        hold = rng.uniform(0.5, 2.0)
        log.append(f"{time.monotonic() - start:6.2f}s {kind} {m.name} for {hold:.2f}s")
        if kind == "kill":
            m.kill()
            stop.wait(hold)
            m.start()
        elif kind == "pause":
            m.pause()
            stop.wait(hold)
            m.resume()
        else:
            m.require_proxy().blackhole()
            stop.wait(hold)
            m.require_proxy().heal()
    cluster.heal_all()
    cluster.wait_healthy()


Event = tuple[int, str, str, str]  # (revision, key, PUT/DELETE, value)


@dataclass
class WatchRecord:
    """What one prefix watch delivered, and the errors it was given."""

    events: list[Event] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def __call__(self, item: Any) -> None:
        if isinstance(item, BaseException):
            self.errors.append(item)
            return
        for e in item.events:
            self.events.append((e.mod_revision, e.key.decode(), type(e).__name__.replace("Event", "").upper(),
                                e.value.decode()))


def check_watch(delivered: list[Event], truth: list[Event]) -> list[str]:
    """etcd's watch properties for one watch from the start of ``truth`` (etcd's own history of the
    prefix): ordered, unique, reliable (no gap), and every event as etcd recorded it."""
    problems = []
    revisions = [e[0] for e in delivered]
    if revisions != sorted(revisions):
        problems.append("ordered: revisions went backwards")
    if len(set(delivered)) != len(delivered):
        problems.append(f"unique: {len(delivered) - len(set(delivered))} events delivered twice")
    missing = sorted(set(truth) - set(delivered))
    if missing:
        problems.append(f"reliable: {len(missing)} events never delivered, first {missing[:3]}")
    extra = sorted(set(delivered) - set(truth))
    if extra:
        problems.append(f"exact: {len(extra)} events etcd does not have, first {extra[:3]}")
    return problems


def etcd_history(cluster: EtcdCluster, prefix: str, start: int, end: int) -> list[Event]:
    """Every event etcd recorded under ``prefix`` in [start, end], replayed by a raw watch."""
    from resilient_etcd._proto import rpc_pb2, rpc_pb2_grpc
    from resilient_etcd.etcd.models import prefix_range_end

    key = prefix.encode()
    req = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
        key=key, range_end=prefix_range_end(key), start_revision=start))
    out: list[Event] = []
    with cluster.raw_channel(cluster.direct_endpoints[0]) as ch:
        stream = rpc_pb2_grpc.WatchStub(ch).Watch(iter([req]), timeout=60)
        for resp in stream:
            out += [(e.kv.mod_revision, e.kv.key.decode(), "DELETE" if e.type == 1 else "PUT", e.kv.value.decode())
                    for e in resp.events]
            if out and out[-1][0] >= end:
                break
        stream.cancel()
    return [e for e in out if e[0] <= end]


def run(cluster: EtcdCluster, seed: int, duration: float, out: Path, workers: int = 4,
        keys: int = 6) -> tuple[History, list[str], list[str]]:
    """Traffic from ``workers`` threads and a fault schedule for ``duration`` seconds, seeded by ``seed``,
    while a prefix watch (on a client of its own) follows every key; returns the KV history, the fault
    log and the watch's property violations (none expected)."""
    rng = random.Random(seed)
    history = History()
    log: list[str] = []
    stop = threading.Event()
    prefix = f"/rob/{seed}/"
    names = [f"{prefix}k{i}" for i in range(keys)]
    watched = WatchRecord()
    with etcd3.client(endpoints=cluster.endpoints, timeout=2) as client, \
            etcd3.client(endpoints=cluster.endpoints, timeout=2) as watcher:
        start = client.put(f"/rob-start/{seed}", "x", timeout=10).header.revision + 1
        watcher.add_watch_prefix_callback(prefix, watched, start_revision=start)
        threads = [threading.Thread(target=traffic, args=(client, history, w, names, stop,
                                                          random.Random(rng.random())))
                   for w in range(workers)]
        faulter = threading.Thread(target=faults, args=(cluster, random.Random(rng.random()), stop, log))
        for t in (*threads, faulter):
            t.start()
        stop.wait(duration)
        stop.set()
        for t in (*threads, faulter):
            t.join(60)
        end = client.put(f"{prefix}~end", "x", timeout=10).header.revision  # closes the watched history
        deadline = time.monotonic() + 60
        while not (watched.events and watched.events[-1][0] >= end) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling for the watch to catch up, with a deadline
        delivered = list(watched.events)
        errors = list(watched.errors)
    truth = etcd_history(cluster, prefix, start, end)
    problems = check_watch([e for e in delivered if e[0] <= end], truth)
    # NoLeaderError is a transient notice (a member saw no leader for a moment; the watch goes on), and
    # ClientClosedError comes with our own close(): neither ends the watch early
    problems += [f"watch error: {e!r}" for e in errors
                 if not (isinstance(e, etcd3.ClientClosedError) or getattr(e, "transient", False))]
    out.mkdir(parents=True, exist_ok=True)
    history.write(out / f"history-{seed}.json")
    (out / f"faults-{seed}.log").write_text("\n".join(log) + "\n")
    return history, log, problems


def check_linearizable(history_path: Path, html_path: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run porcupine-checker; exit 0 linearizable, 1 not (``html_path`` shows where), 2 undecided."""
    return subprocess.run([find_binary("porcupine-checker"), "-history", str(history_path), "-html", str(html_path),
                           "-timeout", f"{timeout:g}s"], capture_output=True, text=True, timeout=timeout + 30)
