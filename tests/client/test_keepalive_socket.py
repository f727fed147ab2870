"""What grpcio really does with our keepalive: TCP_USER_TIMEOUT = keepalive timeout (gRFC A18), an
unanswered PING closes the connection, a slow response does not."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest

import resilient_etcd as etcd3
from resilient_etcd.testing import EtcdCluster

SCRIPT = """
import resilient_etcd as etcd3
c = etcd3.client(endpoints=["127.0.0.1:1"], timeout=0.3, keepalive=etcd3.KeepalivePolicy(time=7, timeout=2.5))
try:
    c.get("k")
except etcd3.Etcd3Exception:
    pass
c.close()
"""


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed (make deps installs it)")
def test_keepalive_timeout_becomes_tcp_user_timeout() -> None:
    proc = subprocess.run(["strace", "-f", "-e", "trace=setsockopt", sys.executable, "-c", SCRIPT],
                          capture_output=True, text=True, timeout=60)
    calls = [line for line in proc.stderr.splitlines() if "TCP_USER_TIMEOUT" in line]
    assert calls, proc.stderr[-2000:]
    assert all("[2500]" in line for line in calls), calls


# Probes out of the way: these tests are about what the connection's own keepalive notices.
_NO_PROBES = etcd3.HealthPolicy(probe_interval=30, dead_after=60)
_KEEPALIVE = etcd3.KeepalivePolicy(time=5, timeout=1)


@pytest.mark.etcd_cluster(size=3, proxied=False)
def test_keepalive_alone_notices_a_frozen_member(etcd_cluster: EtcdCluster) -> None:
    """A frozen member's kernel still acknowledges every byte, so only an unanswered PING can tell.
    grpc-core fires the keepalive timeout only through its general ping timeout (60 s by default):
    without both set, this read waited for its whole deadline."""
    m0 = etcd_cluster.members[0]
    with etcd3.client(endpoints=etcd_cluster.direct_endpoints, timeout=30, health=_NO_PROBES,
                      keepalive=_KEEPALIVE) as c:
        c.put("/ka/k", "v")
        assert next(h for h in c.endpoint_health() if h.active).endpoint == m0.direct_endpoint
        m0.pause()
        try:
            started = time.monotonic()
            value, _ = c.get("/ka/k")
            took = time.monotonic() - started
        finally:
            m0.resume()
    assert value == b"v"
    # keepalive time + timeout = 6 s; the deadline is 30 s
    assert took < 15, f"the read waited {took:.1f} s on a frozen member"


@pytest.mark.etcd_cluster(size=1)
def test_a_slow_response_is_not_taken_for_a_dead_connection(etcd_cluster: EtcdCluster) -> None:
    """1 MiB at 128 KB/s takes 8 s, longer than keepalive time + timeout: data arriving is proof of
    life. (A bandwidth-probe PING queued behind the response used to close the connection.)"""
    member = etcd_cluster.members[0]
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=60, health=_NO_PROBES,
                      keepalive=_KEEPALIVE) as c:
        for i in range(16):
            c.put(f"/slow/{i:02d}", b"x" * 65536)
        member.proxy.bandwidth(128)
        try:
            started = time.monotonic()
            got = list(c.get_prefix("/slow/"))
            took = time.monotonic() - started
        finally:
            member.proxy.heal()
        ejections = sum(h.ejections for h in c.endpoint_health())
    assert len(got) == 16
    assert ejections == 0
    assert took > 6, f"the link was not slow ({took:.1f} s): the test proves nothing"
