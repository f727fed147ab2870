"""A seeded schedule of real faults on a 3-member test-bed cluster.

Two schedulers run at once, so faults overlap; each draws a fault, holds it, undoes it, and rests.
A fault takes the members it harms; no fault starts that would leave no member untouched (so
never are all members gone at once). Quorum loss takes two members at once, and overlapping
single-member faults reach it too. Cluster-wide operations (compaction, leader move) take no
member. Token expiry is not scheduled here: the runs with ``jwt_ttl`` let tokens expire by
themselves every few seconds.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import resilient_etcd as etcd3
from resilient_etcd.testing import EtcdCluster
from resilient_etcd.testing.etcd import EtcdMember

from .recorder import Recorder

# kind -> weight
KINDS = {
    "kill": 3, "pause": 3, "pause_leader": 2, "blackhole": 2, "latency": 1, "bandwidth": 1,
    "reset_peer": 1, "slow_close": 1, "quorum_loss": 1, "compact": 1, "defragment": 1, "move_leader": 1,
    "partition": 1,  # the clients cut off from every member (their proxies), the cluster itself healthy
}


@dataclass
class Fault:
    """One injected fault: seconds from the run's start, kind, members, how long it was held."""

    at: float
    kind: str
    members: tuple[str, ...]
    hold: float
    note: str = ""

    def __str__(self) -> str:
        who = ",".join(self.members) or "cluster"
        return f"{self.at:7.2f}s {self.kind:<12} {who:<12} {self.hold:5.2f}s {self.note}".rstrip()


class Scheduler:
    """Runs ``schedulers`` fault loops until ``stop``; ``log`` is every fault injected."""

    def __init__(self, cluster: EtcdCluster, client: etcd3.Etcd3Client, recorder: Recorder, rng: random.Random,
                 stop: threading.Event, t0: float, schedulers: int = 2, kinds: dict[str, int] | None = None,
                 hold: tuple[float, float] = (0.5, 2.0)) -> None:
        self.cluster, self.client, self.recorder = cluster, client, recorder
        self.stop, self.t0 = stop, t0
        self.kinds, self.hold = kinds or KINDS, hold
        self.log: list[Fault] = []
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self.compacted = 0  # the highest revision compacted to
        self._threads = [threading.Thread(target=self._loop, args=(random.Random(rng.random()),),
                                          name=f"robustness-faults-{i}", daemon=True) for i in range(schedulers)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def join(self) -> None:
        for t in self._threads:
            t.join(60)
        self.cluster.heal_all()
        self.cluster.wait_healthy()

    # ---- members ----
    def _take(self, members: list[EtcdMember]) -> bool:
        names = {m.name for m in members}
        with self._lock:
            if names & self._busy or len(self._busy | names) >= len(self.cluster.members):
                return False
            self._busy |= names
            return True

    def _give(self, members: list[EtcdMember]) -> None:
        with self._lock:
            self._busy -= {m.name for m in members}

    def _free(self, rng: random.Random, n: int = 1) -> list[EtcdMember]:
        with self._lock:
            free = [m for m in self.cluster.members if m.name not in self._busy]
        return rng.sample(free, n) if len(free) >= n else []

    # ---- the loop ----
    def _loop(self, rng: random.Random) -> None:
        while not self.stop.wait(rng.uniform(0.2, 1.5)):
            kind = rng.choices(list(self.kinds), weights=list(self.kinds.values()))[0]
            try:
                self._one(kind, rng)
            except Exception as e:  # a fault that could not be injected is logged, not fatal
                self.log.append(Fault(time.monotonic() - self.t0, kind, (), 0.0, f"not injected: {e!r}"[:160]))

    def _one(self, kind: str, rng: random.Random) -> None:
        hold = rng.uniform(*self.hold)
        if kind == "partition":
            self._partition(hold)
            return
        if kind == "compact":
            target = self.recorder.last - 5
            if target > self.compacted:
                self.compacted = target
                self.client.compact(target, timeout=5)
                self._record(kind, [], 0.0, f"to revision {target}")
            return
        if kind == "move_leader":
            to = rng.choice(self.cluster.members)
            self.cluster.move_leader(to, timeout=3)
            self._record(kind, [to], 0.0)
            return
        if kind == "pause_leader":
            members = [self.cluster.leader(timeout=2)]
        else:
            members = self._free(rng, 2 if kind == "quorum_loss" else 1)
        if not members or not self._take(members):
            return
        try:
            started = time.monotonic()
            undo = self._inject(kind, members, rng)
            if kind == "defragment":
                hold = time.monotonic() - started  # held as long as the defragment ran
            else:
                self.stop.wait(hold)
            self._record(kind, members, hold)
            undo()
        finally:
            self._give(members)

    def _partition(self, hold: float) -> None:
        """Every client path blackholed at once (no other fault meanwhile): leases whose TTL is
        shorter than ``hold`` expire on a healthy cluster, and their owners must say so."""
        names = {m.name for m in self.cluster.members}
        with self._lock:
            if self._busy:
                return
            self._busy = set(names)
        try:
            for m in self.cluster.members:
                m.require_proxy().blackhole()
            self.stop.wait(hold)
            self._record("partition", self.cluster.members, hold)
            for m in self.cluster.members:
                m.require_proxy().heal()
        finally:
            with self._lock:
                self._busy.clear()

    def _inject(self, kind: str, members: list[EtcdMember], rng: random.Random) -> Callable[[], None]:
        m = members[0]

        def nothing() -> None:
            pass

        if kind in ("kill", "quorum_loss"):
            for x in members:
                x.kill()

            def restart() -> None:
                for x in members:
                    x.start(wait=False)
            return restart
        if kind in ("pause", "pause_leader"):
            m.pause()
            return m.resume
        if kind == "defragment":
            self.client.defragment(endpoint=m.endpoint, timeout=30)
            return nothing
        proxy = m.require_proxy()
        if kind == "blackhole":
            proxy.blackhole()
        elif kind == "latency":
            ms = rng.randrange(50, 400)
            proxy.latency(ms, jitter=ms // 4)
        elif kind == "bandwidth":
            proxy.bandwidth(rng.choice((64, 128, 512)))
        elif kind == "reset_peer":
            proxy.reset_peer(rng.randrange(0, 500))
        elif kind == "slow_close":
            proxy.slow_close(rng.randrange(100, 2000))
        return proxy.heal

    def _record(self, kind: str, members: list[EtcdMember], hold: float, note: str = "") -> None:
        self.log.append(Fault(time.monotonic() - self.t0 - hold, kind, tuple(m.name for m in members), hold, note))
