"""examples/leader-worker end to end on a real cluster: no failover on a frozen member, clean
failover on a frozen leader process, never two writers (checked from etcd's own data)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import resilient_etcd as etcd3
from resilient_etcd.testing import EtcdCluster

from ._replica import Replica

WORKER = Path(__file__).resolve().parents[2] / "examples" / "leader-worker" / "worker.py"
TTL = 3


def replica(name: str, endpoints: list[str]) -> Replica:
    return Replica(name, [sys.executable, str(WORKER), "--endpoints", ",".join(endpoints), "--name", name,
                          "--ttl", str(TTL)])


def test_single_active_with_fencing(etcd_cluster: EtcdCluster) -> None:
    # step 1 freezes a *follower* that a reads from: a frozen raft leader is another scenario (an election
    # must run before any lease can be refreshed, and a 3 s lease may not outlive detection + election)
    if etcd_cluster.leader() is etcd_cluster.members[0]:
        etcd_cluster.move_leader(etcd_cluster.members[1])
    a = replica("a", etcd_cluster.endpoints)  # a's first endpoint is m0: the member it uses
    b: Replica | None = None
    try:
        assert a.wait("leader", 20), "a never became leader"
        b = replica("b", etcd_cluster.endpoints[::-1])
        time.sleep(1.0)  # b is now campaigning behind a (the scenario's steady state)

        # 1. the member a uses freezes: a's client fails over and keeps its lease — no handover
        etcd_cluster.members[0].pause()
        try:
            assert b.wait("leader", TTL + 2) is None, "a frozen member must not cost leadership"
        finally:
            etcd_cluster.members[0].resume()
        assert not any(e["event"] in ("lost", "fenced") for e in a.drain())

        # 2. the leader *process* freezes past its TTL: b takes over; a, resumed, writes nothing more
        os.kill(a.proc.pid, signal.SIGSTOP)
        took = time.monotonic()
        won = b.wait("leader", TTL + 10)
        took = time.monotonic() - took
        os.kill(a.proc.pid, signal.SIGCONT)
        assert won is not None, "b never took over from the frozen leader"
        assert took < TTL + 5
        assert a.wait("lost", 10) or any(e["event"] in ("lost", "fenced") for e in a.drain())
        time.sleep(1.0)  # let both run a little after the handover (part of the scenario)
    finally:
        a.stop()
        if b is not None:
            b.stop()

    with etcd3.client(endpoints=etcd_cluster.endpoints) as c:
        items = [v.decode().split(":") for v, _ in c.get_prefix("/work/log/", sort_target="mod")]
    assert items, "no work was done"
    fences = [int(f) for _, f, _ in items]
    assert fences == sorted(fences), "a write with an older fencing revision came after a newer one"
    owners: dict[int, set[str]] = {}
    for name, fence, _ in items:
        owners.setdefault(int(fence), set()).add(name)
    assert all(len(names) == 1 for names in owners.values()), owners
    assert [next(iter(owners[f])) for f in sorted(owners)][-1] == "b" and "a" in {n for n, _, _ in items}
