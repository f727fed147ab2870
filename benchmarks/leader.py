"""S2-leader: SIGSTOP the raft leader under a stream of writes; time from the freeze to the first
successful write started after it. ``resilient`` writes to the leader (``prefer_leader``, the default);
``resilient-follower`` is the same client with ``prefer_leader=False`` on a follower, which is where a
client that knows nothing of the leader sits two times out of three."""

from __future__ import annotations

import threading
import time

import resilient_etcd as etcd3
from resilient_etcd.testing import EtcdCluster

from .scenarios import Trial


def leader_freeze_trial(cluster: EtcdCluster, *, prefer_leader: bool, cap: float = 10.0,
                        hold: float = 4.0) -> Trial:
    leader = cluster.leader()
    endpoints = cluster.endpoints
    if not prefer_leader:  # the member in use is a follower
        follower = next(m for m in cluster.members if m is not leader)
        endpoints = [follower.endpoint] + [e for e in endpoints if e != follower.endpoint]
    policy = etcd3.HealthPolicy(prefer_leader=prefer_leader)
    calls: list[tuple[float, float, bool]] = []
    stop = threading.Event()
    with etcd3.client(endpoints=endpoints, timeout=10, health=policy) as c:
        want = int(leader.status().header.member_id)
        end = time.monotonic() + 10
        while prefer_leader and c.put("/bench/leader", "x").header.member_id != want and time.monotonic() < end:
            time.sleep(0.05)  # until the client has learnt the leader (poll with a deadline)

        def loop() -> None:
            i = 0
            while not stop.is_set():
                started = time.monotonic()
                try:
                    c.put("/bench/leader", str(i))
                    calls.append((started, time.monotonic(), True))
                except etcd3.Etcd3Exception:
                    calls.append((started, time.monotonic(), False))
                i += 1
                stop.wait(0.01)

        writer = threading.Thread(target=loop, daemon=True)
        writer.start()
        time.sleep(0.5)  # a stream of writes is under way: part of the scenario
        frozen = time.monotonic()
        leader.pause()
        try:
            first = None
            deadline = frozen + cap
            while first is None and time.monotonic() < deadline:
                first = next((e for s, e, ok in list(calls) if ok and s > frozen), None)
                time.sleep(0.02)
            linger = frozen + hold - time.monotonic()
            if linger > 0:
                time.sleep(linger)  # the freeze lasts ``hold`` seconds
        finally:
            leader.resume()
            stop.set()
            writer.join(15)
    cluster.wait_healthy()
    failed = sum(1 for s, e, ok in calls if not ok)
    name = "resilient" if prefer_leader else "resilient-follower"
    return Trial("S2-leader", name, cap, None if first is None else first - frozen, failed, 0, 0,
                 {"victim_was_leader": True})
