"""Configuration mistakes fail fast with their cause; a member that is merely down is waited for.

Errors that waiting cannot heal (a name that does not resolve, a certificate that fails verification,
TLS spoken to a plaintext port or the reverse, files that are not PEM) used to be retried until the
10 s default deadline and raised as ``DeadlineExceeded`` with a multi-line grpc text inside.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import resilient_etcd as etcd3
from resilient_etcd.testing import EtcdCluster
from resilient_etcd.testing.tls import make_certs


def _fails_fast(make: Callable[[], etcd3.Etcd3Client], cause: str) -> None:
    started = time.monotonic()
    with pytest.raises(etcd3.EndpointConfigurationError) as err, make() as c:
        c.get("/x")
    took = time.monotonic() - started
    message = str(err.value)
    assert took < 1.0, f"took {took:.2f} s: {message}"
    assert cause in message and "\n" not in message, message
    assert isinstance(err.value, etcd3.ConnectionFailedError)


def test_unresolvable_host_fails_at_once() -> None:
    _fails_fast(lambda: etcd3.client(host="localhots", timeout=10), "host name 'localhots' does not resolve")


@pytest.mark.etcd_cluster(size=1, tls=True, proxied=False)
def test_tls_mistakes_fail_at_once(etcd_cluster: EtcdCluster, tmp_path: Path) -> None:
    endpoint = etcd_cluster.members[0].direct_endpoint
    _fails_fast(lambda: etcd3.client(endpoints=[endpoint], timeout=10), "speaks TLS")
    other = make_certs(tmp_path / "other", ["127.0.0.1"])
    _fails_fast(lambda: etcd3.client(endpoints=[endpoint], ca_cert=str(other.ca), timeout=10),
                "certificate check failed")


def test_tls_to_a_plaintext_member_fails_at_once(etcd_cluster: EtcdCluster, tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs", ["127.0.0.1"])
    endpoint = etcd_cluster.members[0].direct_endpoint
    _fails_fast(lambda: etcd3.client(endpoints=[endpoint], ca_cert=str(certs.ca), timeout=10), "speaks plaintext")


def test_one_bad_endpoint_among_good_ones_is_only_skipped(etcd_cluster: EtcdCluster) -> None:
    with etcd3.client(endpoints=["localhots:2379", *etcd_cluster.endpoints], timeout=5) as c:
        c.put("/mixed", "ok")
        assert c.get("/mixed")[0] == b"ok"


def test_files_that_are_not_pem_are_refused_at_construction(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(etcd3.ConfigurationError, match="holds no PEM certificate"):
        etcd3.client(ca_cert=str(junk))
    with pytest.raises(etcd3.ConfigurationError, match="not a PEM certificate and its matching private key"):
        etcd3.client(cert_key=str(junk), cert_cert=str(junk))


def test_refused_everywhere_waits_for_the_deadline_and_says_so() -> None:
    """A member restarting refuses connections: that heals, so it is retried until the deadline, and
    then the error is python-etcd3's ConnectionFailedError as well as our DeadlineExceeded."""
    started = time.monotonic()
    with etcd3.client(endpoints=["127.0.0.1:1", "127.0.0.1:2"], timeout=1) as c, \
            pytest.raises(etcd3.EndpointsUnavailable) as err:
        c.get("/x")
    assert 0.9 < time.monotonic() - started < 1.5
    assert isinstance(err.value, etcd3.ConnectionFailedError) and isinstance(err.value, etcd3.DeadlineExceeded)
    message = str(err.value)
    assert "127.0.0.1:1: " in message and "127.0.0.1:2: " in message and "Connection refused" in message
    assert "\n" not in message and set(err.value.errors) == {"127.0.0.1:1", "127.0.0.1:2"}


@pytest.mark.etcd_cluster(size=1, tls=True, proxied=False)
def test_no_grpc_log_lines_on_stderr(etcd_cluster: EtcdCluster, tmp_path: Path) -> None:
    """A wrong CA used to flood stderr with ~300 lines of grpc-core's own log in one 3 s call."""
    other = make_certs(tmp_path / "other", ["127.0.0.1"])
    script = (
        "import resilient_etcd as etcd3, sys\n"
        f"c = etcd3.client(endpoints=[{etcd_cluster.members[0].direct_endpoint!r}], ca_cert={str(other.ca)!r}, "
        "timeout=3)\n"
        "try:\n    c.get('/x')\nexcept etcd3.EndpointConfigurationError as e:\n    print('caught', e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "caught" in proc.stdout, proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr[:2000]


def test_python_etcd3_argument_forms(etcd_cluster: EtcdCluster) -> None:
    member = etcd_cluster.members[0]
    host, port = member.direct_endpoint.rsplit(":", 1)
    with etcd3.client(host=host, port=port, timeout=5) as c:  # python-etcd3 takes the port as a string too
        c.put("/port", "str")
        with pytest.raises(etcd3.ConfigurationError):
            c.lease(0)
        with pytest.raises(etcd3.ConfigurationError):
            c.lock("x", ttl=0)
        lease = c.lease(5)
        lease.revoke()
        with pytest.raises(etcd3.LeaseLostError):
            c.put("/on-lost-lease", "v", lease=lease)
        with pytest.raises(etcd3.LeaseLostError):
            c.put("/on-lost-lease", "v", lease=lease.id)
