"""What the robustness clients do, and what they write down.

KV traffic (put, get linearizable and serializable, compare-and-swap, delete, get_prefix, a two-key
transaction; every written value unique) is recorded for porcupine. Lease, lock and election
workers record what they believed and when, for the checks in :mod:`.checks`. Every call has a
deadline, as a controller's would, and a call that returns later than its deadline + 100 ms is
written down too.

A write whose outcome the client could not know is recorded as *unknown* (no return time: it may
have taken effect at any point after its call, or never); a failed read observed nothing and is
dropped. Multi-key operations are recorded as one operation per key with the same call and return
times: porcupine checks each key on its own, which is sound (never a false alarm) if weaker than
checking the operation whole.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import resilient_etcd as etcd3

T = TypeVar("T")
SLACK_NS = 100_000_000  # a call may return this much after its deadline (the bound)
CALL_TIMEOUT = 2.0


@dataclass
class History:
    """Everything one process's workers wrote down; one monotonic clock (ns) for every thread and
    every process on the machine (CLOCK_MONOTONIC)."""

    ops: list[dict[str, Any]] = field(default_factory=list)
    serial: list[tuple[str, str | None]] = field(default_factory=list)  # serializable reads: key, value
    # what, called, returned, limit, pid, and where the call was 50 ms past its deadline
    overruns: list[tuple[str, int, int, float, int, str]] = field(default_factory=list)
    stalls: list[tuple[int, int, int]] = field(default_factory=list)  # the interpreter's own: when, how long (ns), pid
    leases: list[LeaseRecord] = field(default_factory=list)
    holds: dict[str, list[Hold]] = field(default_factory=dict)  # lock / election name -> who held it when
    lock: threading.Lock = field(default_factory=threading.Lock)
    # thread -> its timed calls, outermost first: (deadline ns, stack seen late). A list, because a timed call
    # may make timed calls of its own (a lock acquire, its lease grant): the outer one must stay watched.
    calls: dict[int, list[tuple[int, list[str]]]] = field(default_factory=dict)
    canary_at: int = 0  # when the canary last looked (monotonic ns): an overrun it never saw says how long ago
    canary_error: str | None = None  # why the canary stopped early, if it did

    def add(self, *ops: dict[str, Any]) -> None:
        with self.lock:
            self.ops.extend(ops)

    def timed(self, what: str, limit: float, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` (a call with ``timeout``), noted if it returned (or raised) past its deadline."""
        called = time.monotonic_ns()
        me = threading.get_ident()
        seen: list[str] = []
        watched = self.calls.setdefault(me, [])
        entry = (called + int(limit * 1e9), seen)
        watched.append(entry)
        try:
            return fn(*args, **kwargs)
        finally:
            returned = time.monotonic_ns()
            watched.remove(entry)
            if returned - called > limit * 1e9 + SLACK_NS:
                ago = (returned - self.canary_at) / 1e6
                where = "".join(seen) or f"(not sampled: the canary last looked {ago:.0f} ms before it returned)\n"
                with self.lock:
                    self.overruns.append((what, called, returned, limit, os.getpid(), where))

    def to_json(self) -> dict[str, Any]:
        with self.lock:
            return {"ops": self.ops, "serial": self.serial, "overruns": self.overruns, "stalls": self.stalls,
                    "canary_error": self.canary_error,
                    "leases": [asdict(r) for r in self.leases],
                    "holds": {k: [asdict(h) for h in v] for k, v in self.holds.items()}}

    def merge(self, other: dict[str, Any]) -> None:
        """Add a second process's history (as written by :meth:`to_json`)."""
        with self.lock:
            self.ops += other["ops"]
            self.serial += [(k, v) for k, v in other["serial"]]
            self.overruns += [(w, c, r, lim, pid, st) for w, c, r, lim, pid, st in other["overruns"]]
            self.canary_error = self.canary_error or other.get("canary_error")
            self.stalls += [(a, b, pid) for a, b, pid in other["stalls"]]
            self.leases += [LeaseRecord(**r) for r in other["leases"]]
            for name, holds in other["holds"].items():
                self.holds.setdefault(name, []).extend(Hold(**h) for h in holds)

    def write_porcupine(self, path: Path, applied: set[tuple[str, str]]) -> int:
        """The history for porcupine-checker, without the writes of unknown outcome that etcd never applied:
        ``applied`` is every (key, value) etcd's complete event history put (values are unique), so such a
        put or compare-and-swap provably had no effect. Left in, each would be an operation that may take
        effect at any time until the end, and a few hundred of them on a fault-heavy seed make the search
        explode (seed 1 timed out at 120 s with 608 of them). Unknown deletes stay (a delete event carries
        no value to match). Returns how many were dropped."""
        with self.lock:
            kept = [o for o in self.ops if o.get("return") is not None or o["op"] not in ("put", "cas")
                    or (o["key"], o["value"]) in applied]
            path.write_text(json.dumps(kept))
            return len(self.ops) - len(kept)


def canary(history: History, stop: threading.Event, period: float = 0.01) -> None:
    """Sleep ``period`` over and over and note how late each wake-up is: on a saturated machine the
    interpreter itself cannot run a thread for a while, and no library can answer faster than that.
    The deadline check subtracts these stalls (see :func:`.checks.check_deadlines`). It also notes
    where each timed call is when it is 50 ms past its deadline (the overrun's explanation)."""
    try:
        _watch(history, stop, period)
    except BaseException as e:  # the deadline check is blind without it: the harness reports this
        history.canary_error = repr(e)
        raise


def _watch(history: History, stop: threading.Event, period: float) -> None:
    while not stop.is_set():
        before = time.monotonic_ns()
        time.sleep(period)  # the measurement itself: how late does a sleeping thread wake?
        now = history.canary_at = time.monotonic_ns()
        late = now - before - int(period * 1e9)
        # every late wake-up beyond timer noise counts: a saturated machine is late by a few ms on most of
        # them, and 30 wake-ups 4 ms late each are a 120 ms stall (a 5 ms floor left those out: seed 3's
        # "414 ms over, 289 ms of it stalled" was 25 ms over the allowance on such uncounted stalls)
        if late > 1_000_000:
            with history.lock:
                history.stalls.append((before, late, os.getpid()))
        for ident, watched in list(history.calls.items()):
            for deadline, seen in list(watched):
                if now > deadline + 50_000_000 and not seen:
                    seen.append(_stack_of(ident))


def _stack_of(ident: int) -> str:
    """Where thread ``ident`` is now (never raises: the canary must outlive what it looks at)."""
    frame = sys._current_frames().get(ident)
    if frame is None:
        return "(the thread has no Python frame)\n"
    try:
        return "".join(traceback.format_stack(frame)[-8:])
    except Exception as e:  # a running thread's frame may change under the formatting
        return f"(its stack could not be read: {e!r})\n"


def _op(worker: int, key: str, kind: str, value: str = "", expect: str | None = None) -> dict[str, Any]:
    return {"client": worker, "key": key, "op": kind, "value": value, "expect": expect}


def kv_traffic(client: etcd3.Etcd3Client, history: History, worker: int, keys: list[str], stop: threading.Event,
               rng: random.Random, timeout: float = CALL_TIMEOUT) -> None:
    """One client thread's loop: a random operation on random keys until ``stop``."""
    prefix = keys[0][:-1]  # the keys are <prefix>0 .. <prefix>N-1
    seq = 0
    while not stop.is_set():
        seq += 1
        kind, ops = plan(history, worker, keys, seq, rng)
        try:
            history.timed(kind, timeout, _do, client, kind, ops, prefix, timeout)
        except etcd3.Etcd3Exception:
            record(history, kind, ops, failed=True)
        else:
            record(history, kind, ops, failed=False)


def plan(history: History, worker: int, keys: list[str], seq: int,
         rng: random.Random) -> tuple[str, list[dict[str, Any]]]:
    """The next random operation of a KV worker (either face): its kind and its records, call time set."""
    key = rng.choice(keys)
    kind = rng.choices(("put", "get", "serial", "cas", "delete", "prefix", "txn2"), weights=(4, 4, 1, 2, 1, 1, 1))[0]
    value = f"w{worker}-{seq}"
    ops: list[dict[str, Any]]
    if kind == "txn2":
        other = rng.choice([k for k in keys if k != key])
        ops = [_op(worker, key, "put", value + "a"), _op(worker, other, "put", value + "b")]
    elif kind == "prefix":
        ops = [_op(worker, k, "get") for k in keys]
    elif kind == "cas":
        ops = [_op(worker, key, "cas", value, _expected(history, key, rng))]
    else:
        ops = [_op(worker, key, kind, value if kind == "put" else "")]
    call = time.monotonic_ns()
    for o in ops:
        o["call"] = call
    return kind, ops


def record(history: History, kind: str, ops: list[dict[str, Any]], *, failed: bool) -> None:
    """Write an operation down: a failed read observed nothing (dropped); a failed write's outcome is
    unknown (no return time); a serializable read is kept apart (not linearizable by contract)."""
    if failed:
        if kind in ("get", "serial", "prefix"):
            return
        for o in ops:
            o["return"] = None
    elif kind == "serial":
        with history.lock:
            history.serial.append((ops[0]["key"], ops[0]["got"] if ops[0]["found"] else None))
        return
    else:
        returned = time.monotonic_ns()
        for o in ops:
            o["return"] = returned
    history.add(*ops)


def _do(client: etcd3.Etcd3Client, kind: str, ops: list[dict[str, Any]], prefix: str, timeout: float) -> None:
    op = ops[0]
    key = op["key"]
    if kind == "put":
        client.put(key, op["value"], timeout=timeout)
    elif kind in ("get", "serial"):
        got, _ = client.get(key, serializable=kind == "serial", timeout=timeout)
        op["found"], op["got"] = got is not None, (got or b"").decode()
    elif kind == "prefix":
        seen = {m.key.decode(): v.decode() for v, m in client.get_prefix(prefix, timeout=timeout)}
        for o in ops:
            o["found"], o["got"] = o["key"] in seen, seen.get(o["key"], "")
    elif kind == "cas":
        if op["expect"] is None:
            op["ok"] = client.put_if_not_exists(key, op["value"], timeout=timeout)
        else:
            op["ok"] = client.replace(key, op["expect"], op["value"], timeout=timeout)
    elif kind == "delete":
        op["ok"] = bool(client.delete(key, timeout=timeout))
    else:  # txn2: both keys in one revision (what the watch's atomicity check needs)
        t = client.transactions
        client.transaction([], [t.put(o["key"], o["value"]) for o in ops], [], timeout=timeout)


def _expected(history: History, key: str, rng: random.Random) -> str | None:
    """An expected value for a compare-and-swap: usually the last value written to ``key`` (so some
    succeed), sometimes absent."""
    with history.lock:
        for op in reversed(history.ops):
            if op["key"] == key and op["op"] in ("put", "cas") and op.get("return") is not None:
                return str(op["value"]) if rng.random() < 0.8 else None
    return None


# ---- leases ----

@dataclass
class LeaseRecord:
    """One lease with a key attached: when it was granted, when we revoked it (if we did), when the
    client said it was lost (if it did). Times in monotonic ns."""

    key: str
    lease: int
    ttl: int
    granted: int
    revoke_called: int | None = None
    lost: int | None = None


def lease_worker(client: etcd3.Etcd3Client, history: History, prefix: str, worker: int, stop: threading.Event,
                 rng: random.Random, timeout: float = CALL_TIMEOUT) -> None:
    """Grant a short lease, attach a key, keep it alive for a while, revoke it; again until ``stop``.
    A fault may take the lease: the keeper must say so (``on_lost``) before its key vanishes."""
    n = 0
    while not stop.is_set():
        n += 1
        ttl = rng.choice((2, 3, 4))
        try:
            lease = history.timed("lease grant", timeout, client.lease, ttl, timeout=timeout)
        except etcd3.Etcd3Exception:
            stop.wait(0.2)
            continue
        rec = kept(history, lease, f"{prefix}lease/{worker}-{n}", ttl)
        with contextlib.suppress(etcd3.Etcd3Exception):  # the key may or may not exist: the checks read etcd's
            history.timed("put with lease", timeout, client.put, rec.key, "x", lease=lease, timeout=timeout)
        stop.wait(rng.uniform(1.0, 6.0))
        if rec.lost is None:
            rec.revoke_called = time.monotonic_ns()
            lease.give_up()  # revoke now, or in the background if the cluster is out of reach


def kept(history: History, lease: Any, key: str, ttl: int) -> LeaseRecord:
    """A granted lease written down and kept alive (either face); its record notes when it was lost."""
    rec = LeaseRecord(key, lease.id, ttl, time.monotonic_ns())
    with history.lock:
        history.leases.append(rec)

    def lost(_: object) -> None:
        rec.lost = time.monotonic_ns()

    lease.keep_alive(on_lost=lost)
    return rec


# ---- locks and elections ----

@dataclass
class Hold:
    """One holder's belief: it held ``name`` from ``start`` to ``end`` (monotonic ns) with fencing
    revision ``revision``; ``how`` it ended (released, lost, resigned, run over)."""

    who: str
    start: int
    end: int
    revision: int
    how: str


@dataclass(frozen=True)
class _Exclusive:
    """How a worker takes and gives up one kind of exclusive thing."""

    kind: str  # "lock" / "election"
    make: Callable[[etcd3.Etcd3Client, str, Callable[[object], None]], Any]
    take: Callable[[Any, str, float], bool]
    give: Callable[[Any], object]
    taken: str
    given: str


LOCK = _Exclusive("lock", lambda c, name, lost: c.lock(name, ttl=3, on_lost=lost),
                  lambda lock, who, timeout: lock.acquire(timeout=timeout), lambda lock: lock.release(),
                  "lock acquire", "released")
ELECTION = _Exclusive("election", lambda c, name, lost: c.election(name, ttl=3, on_lost=lost),
                      lambda e, who, timeout: e.campaign(who, timeout=timeout), lambda e: e.resign(),
                      "campaign", "resigned")


def exclusion_worker(how: _Exclusive, client: etcd3.Etcd3Client, history: History, name: str, who: str,
                     stop: threading.Event, rng: random.Random, timeout: float = CALL_TIMEOUT) -> None:
    """Take the lock / win the election, hold it a moment, give it up; again until ``stop``. Each hold
    is written down as its holder believed it: from taking it until giving it up or hearing it was lost."""
    while not stop.is_set():
        lost = threading.Event()
        thing = how.make(client, name, functools.partial(_set, lost))
        try:
            got = history.timed(how.taken, timeout, how.take, thing, who, timeout)
        except etcd3.Etcd3Exception:
            stop.wait(0.1)
            continue
        if not got:
            continue
        start, revision = time.monotonic_ns(), thing.revision or 0
        ended = how.given if not lost.wait(rng.uniform(0.1, 1.0)) else "lost"
        end = time.monotonic_ns()
        if ended != "lost":
            try:
                history.timed(f"{how.kind} give up", timeout, _within, timeout, functools.partial(how.give, thing))
            except etcd3.Etcd3Exception:
                ended = "giving up failed"
        with history.lock:
            history.holds.setdefault(f"{how.kind} {name}", []).append(Hold(who, start, end, revision, ended))


def _set(event: threading.Event, _: object) -> None:
    event.set()


def _within(timeout: float, fn: Callable[[], object]) -> object:
    """``fn`` (several calls) under one deadline."""
    with etcd3.deadline(timeout):
        return fn()
