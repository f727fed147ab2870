"""A client loop in its own process, for the benchmarks. Runs under *any* venv (ours, python-etcd3's
isolated one, etcd-sdk-python's), so it imports nothing from this repository but the client named.

    python driver.py --client resilient --endpoints 127.0.0.1:1,127.0.0.1:2 --timeout 2

Prints one JSON line per call: {"s": start, "e": end, "ok": bool, "ep": endpoint in use or null,
"err": text}; times are CLOCK_MONOTONIC seconds, comparable across processes on one machine.
Stops when stdin closes or the process is killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from collections.abc import Callable


def make_resilient(endpoints: list[str], timeout: float | None) -> tuple[Callable[[], object], Callable[[], str]]:
    import resilient_etcd

    client = resilient_etcd.client(endpoints=endpoints, timeout=timeout)

    def active() -> str:
        return next(h.endpoint for h in client.endpoint_health() if h.active)

    return (lambda: client.get("/bench/key")), active


def make_raw(endpoints: list[str], timeout: float | None) -> tuple[Callable[[], object], Callable[[], str]]:
    import grpc

    from resilient_etcd._proto import rpc_pb2, rpc_pb2_grpc

    stub = rpc_pb2_grpc.KVStub(grpc.insecure_channel(endpoints[0]))
    req = rpc_pb2.RangeRequest(key=b"/bench/key")
    return (lambda: stub.Range(req, timeout=timeout)), (lambda: endpoints[0])


def make_etcd3(endpoints: list[str], timeout: float | None) -> tuple[Callable[[], object], Callable[[], str]]:
    import etcd3  # type: ignore[import-not-found]  # python-etcd3 0.12, in its own venv (protobuf < 4)

    host, port = endpoints[0].rsplit(":", 1)
    client = etcd3.client(host=host, port=int(port), timeout=timeout)
    return (lambda: client.get("/bench/key")), (lambda: endpoints[0])


def make_pyetcd(endpoints: list[str], timeout: float | None) -> tuple[Callable[[], object], Callable[[], str]]:
    import pyetcd  # type: ignore[import-not-found]  # etcd-sdk-python, in its own venv

    host, port = endpoints[0].rsplit(":", 1)
    client = pyetcd.client(host=host, port=int(port), timeout=timeout)
    return (lambda: client.get("/bench/key")), (lambda: endpoints[0])


def make_resilient_aio(endpoints: list[str], timeout: float | None) -> tuple[Callable[[], object], Callable[[], str]]:
    """resilient_etcd.aio, for :func:`amain` (the call is a coroutine function)."""
    from resilient_etcd import aio

    client = aio.client(endpoints=endpoints, timeout=timeout)

    def active() -> str:
        return next(h.endpoint for h in client.endpoint_health() if h.active)

    return (lambda: client.get("/bench/key")), active


CLIENTS = {"resilient": make_resilient, "resilient-aio": make_resilient_aio, "raw": make_raw, "etcd3": make_etcd3,
           "pyetcd": make_pyetcd}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--client", choices=sorted(CLIENTS), required=True)
    p.add_argument("--endpoints", required=True)
    p.add_argument("--timeout", default="none")
    p.add_argument("--pause", type=float, default=0.01)
    a = p.parse_args()
    timeout = None if a.timeout == "none" else float(a.timeout)
    stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    if a.client.endswith("-aio"):
        asyncio.run(amain(a.client, a.endpoints.split(","), timeout, a.pause, stop))
        return 0
    call, active = CLIENTS[a.client](a.endpoints.split(","), timeout)
    while not stop.is_set():
        s = time.monotonic()
        try:
            call()
            rec: dict[str, object] = {"s": s, "e": time.monotonic(), "ok": True}
        except Exception as e:  # every client's error types differ; the benchmark only needs the text
            rec = {"s": s, "e": time.monotonic(), "ok": False, "err": f"{type(e).__name__}: {e}"[:200]}
        emit(rec, active)
        time.sleep(a.pause)
    return 0


async def amain(name: str, endpoints: list[str], timeout: float | None, pause: float, stop: threading.Event) -> None:
    """The loop of :func:`main` for an asyncio client: one task awaiting one call after another."""
    call, active = CLIENTS[name](endpoints, timeout)
    while not stop.is_set():
        s = time.monotonic()
        try:
            await call()  # type: ignore[misc]
            rec: dict[str, object] = {"s": s, "e": time.monotonic(), "ok": True}
        except Exception as e:
            rec = {"s": s, "e": time.monotonic(), "ok": False, "err": f"{type(e).__name__}: {e}"[:200]}
        emit(rec, active)
        await asyncio.sleep(pause)


def emit(rec: dict[str, object], active: Callable[[], str]) -> None:
    """Write one call's record (with the endpoint in use) as a JSON line."""
    try:
        rec["ep"] = active()
    except Exception:
        rec["ep"] = None
    sys.stdout.write(json.dumps(rec) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
