"""What grpcio really does to our sockets: keepalive on ⇒ TCP_USER_TIMEOUT = keepalive timeout (gRFC A18)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

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
