"""``python -m resilient_etcd doctor --endpoints a:2379,b:2379 [--json]``: one health line per member.

Each endpoint is asked, on its own fresh connection and with a short deadline, for its status:
reachable, member id, leader, raft term, version, DB size, alarms, round-trip latency, and whether
authentication works. Exit status 0 when every endpoint is healthy, 1 when any is not, 2 on bad
arguments — so it can gate a deploy or a readiness probe.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from . import exceptions
from ._proto import rpc_pb2
from .client import Etcd3Client
from .policies import RetryPolicy
from .transport.endpoints import parse_endpoint


@dataclass
class Report:
    endpoint: str
    healthy: bool
    reachable: bool
    latency_ms: float | None = None
    member_id: str | None = None
    is_leader: bool | None = None
    has_leader: bool | None = None
    raft_term: int | None = None
    version: str | None = None
    db_size: int | None = None
    alarms: list[str] | None = None
    auth: str | None = None
    error: str | None = None


def check(endpoint: str, timeout: float, user: str | None, password: str | None, ca_cert: str | None,
          cert_key: str | None, cert_cert: str | None) -> Report:
    try:
        client = Etcd3Client(endpoints=[endpoint], timeout=timeout, user=user, password=password, ca_cert=ca_cert,
                             cert_key=cert_key, cert_cert=cert_cert, retry=RetryPolicy(max_attempts=1))
    except exceptions.AuthenticationError as e:
        return Report(endpoint, healthy=False, reachable=True, auth=f"failed: {e}", error=str(e))
    except exceptions.Etcd3Exception as e:
        return Report(endpoint, healthy=False, reachable=False, error=f"{type(e).__name__}: {e}")
    try:
        started = time.monotonic()
        st = client._transport.unary("maintenance", "Status", rpc_pb2.StatusRequest(), timeout=timeout)
        latency = (time.monotonic() - started) * 1000
        report = Report(endpoint, healthy=True, reachable=True, latency_ms=round(latency, 2),
                        member_id=f"{st.header.member_id:x}", is_leader=st.leader == st.header.member_id,
                        has_leader=st.leader != 0, raft_term=st.raftTerm, version=st.version, db_size=st.dbSize,
                        alarms=list(st.errors), auth="ok" if user else "not used")
        try:
            client.get("/", timeout=timeout, serializable=True)
        except exceptions.AuthenticationError as e:
            report.auth = f"required: {e}"
        except exceptions.Etcd3Exception as e:
            if "user name is empty" in str(e) or "invalid auth token" in str(e):
                report.auth = "required (no user/password given)"
            else:
                raise
        if not report.has_leader:
            report.healthy, report.error = False, "no leader"
        elif report.alarms:
            report.healthy, report.error = False, "alarms: " + ", ".join(report.alarms)
        return report
    except exceptions.Etcd3Exception as e:
        return Report(endpoint, healthy=False, reachable=not isinstance(e, exceptions.ConnectionFailedError),
                      error=f"{type(e).__name__}: {e}")
    finally:
        client.close()


def _table(reports: list[Report]) -> str:
    cols = ["endpoint", "healthy", "leader", "latency", "member", "term", "version", "db size", "auth", "error"]
    rows = [[r.endpoint, "yes" if r.healthy else "NO", "yes" if r.is_leader else ("no" if r.has_leader else "-"),
             f"{r.latency_ms:.1f} ms" if r.latency_ms is not None else "-", r.member_id or "-",
             str(r.raft_term or "-"), r.version or "-",
             f"{r.db_size / 1024:.0f} KiB" if r.db_size else "-", r.auth or "-", r.error or ""] for r in reports]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m resilient_etcd")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("doctor", help="health of every etcd endpoint; exit 1 if any is unhealthy")
    d.add_argument("--endpoints", required=True, help="comma-separated host:port or http(s)://host:port")
    d.add_argument("--timeout", type=float, default=2.0, help="deadline per endpoint, seconds (default 2)")
    d.add_argument("--user")
    d.add_argument("--password")
    d.add_argument("--ca-cert")
    d.add_argument("--cert-key")
    d.add_argument("--cert-cert")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    a = p.parse_args(argv)
    endpoints = [e.strip() for e in a.endpoints.split(",") if e.strip()]
    if not endpoints:
        p.error("--endpoints is empty")
    if a.timeout <= 0:
        p.error("--timeout must be positive")
    try:
        for e in endpoints:
            parse_endpoint(e)
    except exceptions.ConfigurationError as e:
        p.error(str(e))
    reports = [check(e, a.timeout, a.user, a.password, a.ca_cert, a.cert_key, a.cert_cert) for e in endpoints]
    out: Any = [asdict(r) for r in reports]
    print(json.dumps(out, indent=1) if a.json else _table(reports))
    return 0 if all(r.healthy for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
