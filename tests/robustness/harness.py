"""Randomized fault schedules under client traffic, every history checked (issue: robustness).

One run: a 3-member test-bed cluster; KV, lease, lock and election traffic from several threads
and a second process through resilient_etcd (:mod:`.traffic`); library watches of every kind
(plain, ``prev_kv``, filtered, started in the past, re-created by their user); a seeded schedule of
overlapping real faults (:mod:`.faults`); etcd's own history recorded by a raw watch
(:mod:`.recorder`). Afterwards porcupine checks the KV history for linearizability and
:mod:`.checks` the rest.

The second process is this module run as a script: ``python -m tests.robustness.harness``.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import resilient_etcd as etcd3
from resilient_etcd.testing import EtcdCluster, find_binary, wait_until

from . import atraffic, checks
from .checks import Delivery, Segment
from .faults import Fault, Scheduler
from .recorder import Event, Recorder
from .traffic import ELECTION, LOCK, History, canary, exclusion_worker, kv_traffic, lease_worker

ROOT = Path(__file__).resolve().parents[2]
PASSWORD_ENV = "ROBUSTNESS_ETCD_PASSWORD"  # the second process's credentials: never on its command line


def _event(e: Any) -> Event:
    prev = (int(e.prev_mod_revision), e.prev_value.decode()) if e.prev_mod_revision else None
    return Event(int(e.mod_revision), e.key.decode(), type(e).__name__.replace("Event", "").upper(),
                 e.value.decode(), prev)


class Follower:
    """A library watch kept the way a controller keeps one: a ``RevisionCompactedError`` ends the
    segment, and a new watch starts from the compacted revision. ``resume_every``: the user
    cancels and re-creates the watch after the last revision it delivered, over and over."""

    def __init__(self, client: etcd3.Etcd3Client, prefix: str, name: str, start: int, *, prev_kv: bool = False,
                 filters: tuple[int, ...] = (), resume_every: float | None = None,
                 stop: threading.Event | None = None) -> None:
        self.client, self.prefix, self.name = client, prefix, name
        self.prev_kv, self.filters = prev_kv, filters
        self.segments: list[Segment] = []
        self.late: int = 0  # events delivered to a watch after its cancel_watch returned
        self._responses = itertools.count()
        self._lock = threading.Lock()
        self._watch_id: int | None = None
        self._open(start)
        if resume_every is not None and stop is not None:
            threading.Thread(target=self._resume_loop, args=(resume_every, stop), daemon=True,
                             name=f"robustness-resume-{name}").start()

    def _open(self, start: int, give_up_after: float = 60) -> None:
        """A new watch (segment) from ``start``; a create that times out (a fault) is tried again, as a
        controller would."""
        seg = Segment(self.name, start, self.prev_kv, self.filters)
        deadline = time.monotonic() + give_up_after
        while True:
            try:
                self._add(seg, start)
                break
            except etcd3.ClientClosedError:
                return  # the run is over
            except etcd3.Etcd3Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # the pace of a controller's retry, not a synchronisation
        with self._lock:
            self.segments.append(seg)

    def _add(self, seg: Segment, start: int) -> None:

        def callback(item: Any) -> None:
            if isinstance(item, etcd3.RevisionCompactedError):
                seg.compacted = item.compacted_revision
                seg.end = item.compacted_revision - 1
                threading.Thread(target=self._open, args=(item.compacted_revision,), daemon=True,
                                 name=f"robustness-reopen-{self.name}").start()
                return
            if isinstance(item, BaseException):
                # NoLeaderError is a transient notice (the watch goes on); ClientClosedError comes with our close()
                if not (isinstance(item, etcd3.ClientClosedError) or getattr(item, "transient", False)):
                    seg.errors.append(repr(item))
                return
            if getattr(seg, "cancelled", False):
                self.late += len(item.events)
                return
            n, at = next(self._responses), time.monotonic_ns()
            seg.deliveries += [Delivery(_event(e), n, at) for e in item.events]

        self._watch_id = self.client.add_watch_prefix_callback(
            self.prefix, callback, start_revision=start, prev_kv=self.prev_kv, filters=list(self.filters) or None)

    def _resume_loop(self, every: float, stop: threading.Event) -> None:
        while not stop.wait(every):
            seg = self.segments[-1]
            if self._watch_id is not None:
                try:
                    self.client.cancel_watch(self._watch_id)
                except etcd3.Etcd3Exception:
                    continue  # try again next time
            seg.cancelled = True  # type: ignore[attr-defined]
            last = max((d.event.revision for d in seg.deliveries), default=seg.start - 1)
            seg.end = last
            self._open(last + 1)


@dataclass
class Result:
    """One run: its histories, faults, and what the checks said."""

    seed: int
    history: History
    faults: list[Fault]
    violations: list[str] = field(default_factory=list)
    windows: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (seconds from start, op kind)


def credentials(cluster: EtcdCluster) -> dict[str, Any]:
    return {"user": "root", "password": cluster.root_password} if cluster.root_password else {}


def run(cluster: EtcdCluster, seed: int, duration: float, out: Path, *, workers: int = 4, keys: int = 6,
        second_process: bool = True, faults: dict[str, int] | None = None,
        hold: tuple[float, float] = (0.5, 2.0)) -> Result:
    """Traffic, watches and faults for ``duration`` seconds, seeded by ``seed``; then every check
    but porcupine's (see :func:`check_linearizable`). Histories and the fault log go to ``out``.
    ``faults``/``hold``: the fault kinds (with weights) and hold times, when not the default mix."""
    rng = random.Random(seed)
    history = History()
    stop = threading.Event()
    prefix = f"/rob/{seed}-{time.time_ns()}/"
    names = [f"{prefix}k{i}" for i in range(keys)]
    creds = credentials(cluster)
    out.mkdir(parents=True, exist_ok=True)
    with etcd3.client(endpoints=cluster.endpoints, timeout=2, **creds) as client, \
            etcd3.client(endpoints=cluster.endpoints, timeout=2, **creds) as other, \
            etcd3.client(endpoints=cluster.endpoints, timeout=2, **creds) as watcher:
        start = client.put(f"{prefix}~start", "x", timeout=10).header.revision
        recorder = Recorder(cluster, prefix, start, seed)
        t0 = time.monotonic()
        watches = [Follower(watcher, prefix, "plain", start),
                   Follower(watcher, prefix, "prev_kv", start, prev_kv=True),
                   Follower(other, prefix, "no-delete", start, filters=(checks.NODELETE,)),
                   Follower(other, prefix, "no-put", start, filters=(checks.NOPUT,), prev_kv=True),
                   Follower(watcher, prefix, "resumed", start, resume_every=3.0, stop=stop)]
        child = _second_process(cluster, seed, duration, out, prefix, names) if second_process else None
        wrng = random.Random(rng.random())
        threads = [threading.Thread(target=kv_traffic, args=(client if w % 2 else other, history, w, names, stop,
                                                             random.Random(wrng.random())))
                   for w in range(workers)]
        threads += [threading.Thread(target=lease_worker, args=(c, history, prefix, w, stop,
                                                                random.Random(wrng.random())))
                    for w, c in ((50, client), (51, other))]
        threads += [threading.Thread(target=exclusion_worker, args=(how, c, history, f"rob-{seed}", who, stop,
                                                                    random.Random(wrng.random())))
                    for how, who, c in ((LOCK, "lock-a", client), (LOCK, "lock-b", other),
                                        (ELECTION, "leader-a", client), (ELECTION, "leader-b", other))]
        watched = _Canary(history)
        scheduler = Scheduler(cluster, client, recorder, random.Random(rng.random()), stop, t0, kinds=faults,
                              hold=hold)
        # a watch started in the past, a third of the way in
        late = threading.Timer(duration / 3, lambda: watches.append(Follower(watcher, prefix, "from-the-past", start)))
        for t in threads:
            t.start()
        if child is not None:
            _wait_ready(child, out, seed)  # faults start once both processes have their clients
        scheduler.start()
        late.start()
        stop.wait(duration)
        stop.set()
        late.cancel()
        for t in threads:
            t.join(60)
        watched.stop()
        scheduler.join()
        if child is not None:
            _join_child(child, history, out, seed, duration)
        end = client.put(f"{prefix}~end", "x", timeout=30).header.revision  # closes the watched history
        recorder.wait_for(end)
        for w in watches:
            _wait_delivered(w, end, out)
        truth = recorder.history(end)
        recorder.close()
    result = Result(seed, history, scheduler.log)
    result.violations += [f"recorder: {e}" for e in recorder.errors]
    for w in watches:
        if w.name == "resumed":
            result.violations += checks.check_resumable(w.segments, truth, start, end, scheduler.compacted)
            continue
        for seg in w.segments:
            seg.end = seg.end if seg.end is not None else end
            result.violations += checks.check_watch(seg, truth, scheduler.compacted)
    result.violations += checks.check_unique_writes(truth, set(names))
    result.violations += checks.check_serializable(history)
    result.violations += checks.check_deadlines(history, int(t0 * 1e9))
    if history.canary_error is not None:
        result.violations.append(f"harness: the canary stopped early ({history.canary_error}): deadlines unchecked")
    result.violations += checks.check_leases(history, dict(recorder.deleted), int(t0 * 1e9))
    for name, holds in history.holds.items():
        bad, windows = checks.check_exclusion(name, holds)
        result.violations += bad
        result.windows += windows
    result.counts = _counts(history, scheduler.log, truth, watches, recorder)
    result.timeline = sorted(((o["call"] / 1e9 - t0), o["op"]) for o in history.ops)
    applied = {(e.key, e.value) for e in truth if e.kind == "PUT"}
    result.counts["unknown writes never applied"] = history.write_porcupine(out / f"history-{seed}.json", applied)
    (out / f"faults-{seed}.log").write_text("".join(f"{f}\n" for f in scheduler.log))
    return result


def _wait_delivered(w: Follower, end: int, out: Path, timeout: float = 30) -> None:
    """Until the follower's last segment has delivered ``end`` (or what its filter lets through); if
    it never does, every thread's stack goes to ``out/stacks-<watch>.txt`` (the checks then report
    what is missing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seg = w.segments[-1]
        if any(d.event.revision >= end for d in seg.deliveries) or (checks.NOPUT in w.filters and _quiet(seg)):
            return
        time.sleep(0.05)  # polling with a deadline
    names = {t.ident: t.name for t in threading.enumerate()}
    stacks = [f"--- {names.get(ident, ident)}\n{''.join(traceback.format_stack(frame))}"
              for ident, frame in sys._current_frames().items()]
    now = time.monotonic()
    state = [f"watch manager of {w.name}'s client, {now:.2f}: "
             + ", ".join(f"{k}={v!r}" for k, v in vars(m).items() if not k.startswith("_t"))
             + "; watches: " + ", ".join(f"{x.id}: created={x.created.is_set()} next={x.next_revision} "
                                         f"on_stream={x.on_stream}" for x in m._watches.values())
             for m in w.client._watch_holder]
    (out / f"stacks-{w.name}.txt").write_text("\n".join(state + stacks))


def _quiet(seg: Segment) -> bool:
    """A watch that does not see the final put (it filters puts) is done once it has been quiet a moment."""
    last = max((d.at for d in seg.deliveries), default=0)
    return time.monotonic_ns() - last > 1e9


def _counts(history: History, log: list[Fault], truth: list[Event], watches: list[Follower],
            recorder: Recorder) -> dict[str, int]:
    ops = history.ops
    counts = {"operations": len(ops), "unknown": sum(1 for o in ops if o.get("return") is None),
              "serializable reads": len(history.serial), "leases": len(history.leases),
              "leases lost": sum(1 for r in history.leases if r.lost is not None),
              "etcd events": len(truth), "recorder streams": recorder.streams,
              "watch deliveries": sum(len(s.deliveries) for w in watches for s in w.segments),
              "watch segments": sum(len(w.segments) for w in watches),
              "late deliveries after cancel": sum(w.late for w in watches),
              "calls past deadline + 100 ms": len(history.overruns),
              "longest interpreter stall (ms)": max((late // 1_000_000 for _, late, _ in history.stalls), default=0)}
    for name, holds in history.holds.items():
        counts[f"holds of {name}"] = len(holds)
    for f in log:
        key = f"fault {f.kind}" if "not injected" not in f.note else f"fault {f.kind} not injected"
        counts[key] = counts.get(key, 0) + 1
    return counts


# ---- the second process ----

def _second_process(cluster: EtcdCluster, seed: int, duration: float, out: Path, prefix: str,
                    names: list[str]) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if cluster.root_password:
        env[PASSWORD_ENV] = cluster.root_password
    argv = [sys.executable, "-m", "tests.robustness.harness", "--endpoints", ",".join(cluster.endpoints),
            "--seed", str(seed), "--duration", str(duration), "--prefix", prefix, "--keys", ",".join(names),
            "--out", str(out / f"second-{seed}.json")]
    (out / f"second-{seed}.ready").unlink(missing_ok=True)  # a previous run's
    log = open(out / f"second-{seed}.log", "wb")  # noqa: SIM115 (closed when the child is joined)
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


class _Canary:
    """:func:`.traffic.canary` (stall meter, stack sampler) on its own thread from construction until
    :meth:`stop`, called after the workers are joined: their last calls, made after ``stop``, are timed too."""

    def __init__(self, history: History) -> None:
        self._done = threading.Event()
        self._thread = threading.Thread(target=canary, args=(history, self._done), name="robustness-canary")
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _wait_ready(child: subprocess.Popen[bytes], out: Path, seed: int, timeout: float = 60.0) -> None:
    """Wait (poll with a deadline) until the second process has its client: constructing one authenticates,
    and a fault injected before that (a paused leader at t=0) failed the child's construction, not a promise."""
    ready = out / f"second-{seed}.ready"
    wait_until(lambda: ready.exists() or child.poll() is not None, timeout=timeout, interval=0.05,
               what="the second traffic process's client", on_timeout=lambda: _child_log(out, seed))
    if not ready.exists():
        raise AssertionError(f"the second traffic process exited ({child.poll()}) before it had its client:\n"
                             f"{_child_log(out, seed)}")


def _child_log(out: Path, seed: int) -> str:
    """The end of the second process's output (its traceback, when it died)."""
    return (out / f"second-{seed}.log").read_text(errors="replace")[-2000:]


def _join_child(child: subprocess.Popen[bytes], history: History, out: Path, seed: int, duration: float) -> None:
    code = child.wait(timeout=duration + 120)
    if code != 0:
        raise AssertionError(f"the second traffic process exited with {code}:\n{_child_log(out, seed)}")
    history.merge(json.loads((out / f"second-{seed}.json").read_text()))


def _child_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description="robustness traffic from a second process")
    p.add_argument("--endpoints", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--keys", required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    # a child still running well after its time says where every thread is, into its log, each minute
    faulthandler.dump_traceback_later(args.duration + 90, repeat=True)
    password = os.environ.get(PASSWORD_ENV)
    creds: dict[str, Any] = {"user": "root", "password": password} if password else {}
    history = History()
    if args.seed % 2:  # odd seeds: the second process's traffic goes through the asyncio client
        watched = _Canary(history)
        asyncio.run(atraffic.child(args.endpoints.split(","), creds, history, args.keys.split(","), args.prefix,
                                   args.seed, args.duration, args.out.with_suffix(".ready").touch))
        watched.stop()
        args.out.write_text(json.dumps(history.to_json()))
        return
    rng = random.Random(args.seed * 7919)
    stop = threading.Event()
    with etcd3.client(endpoints=args.endpoints.split(","), timeout=2, **creds) as client:
        args.out.with_suffix(".ready").touch()  # the parent starts the faults now
        threads = [threading.Thread(target=kv_traffic, args=(client, history, 100 + w, args.keys.split(","), stop,
                                                             random.Random(rng.random())))
                   for w in range(2)]
        threads.append(threading.Thread(target=lease_worker, args=(client, history, args.prefix, 150, stop,
                                                                   random.Random(rng.random()))))
        threads.append(threading.Thread(target=exclusion_worker, args=(LOCK, client, history, f"rob-{args.seed}",
                                                                       "lock-p2", stop, random.Random(rng.random()))))
        watched = _Canary(history)
        for t in threads:
            t.start()
        stop.wait(args.duration)
        stop.set()
        for t in threads:
            t.join(60)
        watched.stop()
    args.out.write_text(json.dumps(history.to_json()))


def check_linearizable(history_path: Path, html_path: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run porcupine-checker; exit 0 linearizable, 1 not (``html_path`` shows where), 2 undecided."""
    return subprocess.run([find_binary("porcupine-checker"), "-history", str(history_path), "-html", str(html_path),
                           "-timeout", f"{timeout:g}s"], capture_output=True, text=True, timeout=timeout + 30)


if __name__ == "__main__":
    _child_main(sys.argv[1:])
