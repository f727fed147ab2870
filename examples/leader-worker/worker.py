"""A leader-elected worker: run several replicas, exactly one works at a time.

    python examples/leader-worker/worker.py --endpoints 127.0.0.1:2379,127.0.0.1:22379 --name a

Each replica campaigns in the election ``worker``. The leader appends work items to ``/work/log/``;
every write is fenced by a transaction that succeeds only while the leader's election key still
exists with the create revision it won with — so a replica that was paused, cut off or otherwise
lost its lease can never write again, even if it has not noticed yet. When leadership is lost
(``on_lost``, within the lease TTL) the replica stops and campaigns again.

Stop it with SIGTERM or Ctrl-C (SIGINT): it exits within a second. It never reads stdin, so it runs
the same under a shell's ``&``, nohup, systemd or in a pod.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import time

import resilient_etcd as etcd3


def say(**event: object) -> None:
    print(json.dumps({"t": time.monotonic(), **event}), flush=True)


def run(endpoints: list[str], name: str, ttl: int, interval: float, stop: threading.Event) -> None:
    with etcd3.client(endpoints=endpoints, timeout=5) as client:
        done = threading.Event()
        closer = close_on_stop(stop, done, client)
        try:
            work(client, name, ttl, interval, stop)
        except etcd3.ClientClosedError:
            pass  # stopping
        finally:
            done.set()
            stop.set()
            closer.join()
    say(event="stopped", name=name)


def close_on_stop(stop: threading.Event, done: threading.Event, client: etcd3.Etcd3Client) -> threading.Thread:
    """When ``stop`` is set (SIGTERM), give the loop half a second to step down cleanly — resigning
    hands leadership over at once — then close the client, which ends whatever the loop still waits
    in (a campaign, a write) with ClientClosedError. Not a daemon: the caller sets ``done`` and
    ``stop`` when it returns, and joins it."""

    def closer() -> None:
        stop.wait()
        if not done.wait(0.5):
            client.close()

    t = threading.Thread(target=closer, name="closer")
    t.start()
    return t


def work(client: etcd3.Etcd3Client, name: str, ttl: int, interval: float, stop: threading.Event) -> None:
    """Campaign; while leader, append fenced work items every ``interval`` seconds."""
    t = client.transactions
    while not stop.is_set():
        lost = threading.Event()
        election = client.election("worker", ttl=ttl, on_lost=lambda _, lost=lost: lost.set())
        try:
            if not election.campaign(name, timeout=2.0):  # bounded, so a stop request is noticed
                continue
        except etcd3.ClientClosedError:
            raise
        except etcd3.Etcd3Exception as e:  # e.g. the lease grant was cut off with its member: campaign again
            say(event="campaign-error", name=name, error=str(e))
            stop.wait(0.2)
            continue
        fence = election.revision
        say(event="leader", name=name, revision=fence)
        seq = 0
        while not stop.is_set() and not lost.is_set():
            item = f"{name}:{fence}:{seq}"
            try:
                ok, _ = client.transaction(
                    compare=[t.create(election.key) == fence],          # the fence
                    success=[t.put(f"/work/log/{time.time_ns():020d}-{name}", item)],
                    failure=[],
                )
            except etcd3.ClientClosedError:
                raise
            except etcd3.Etcd3Exception as e:
                say(event="write-error", name=name, error=str(e))
                ok = True  # unknown outcome: try again; the fence keeps it single-writer
            if not ok:
                say(event="fenced", name=name, revision=fence)
                break
            seq += 1
            stop.wait(interval)
        say(event="lost" if lost.is_set() else "stepping-down", name=name, revision=fence)
        with contextlib.suppress(etcd3.Etcd3Exception):
            election.resign()

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoints", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--ttl", type=int, default=5)
    p.add_argument("--interval", type=float, default=0.05)
    a = p.parse_args()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run(a.endpoints.split(","), a.name, a.ttl, a.interval, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
