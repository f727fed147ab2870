"""Certificate rotation: the CA, client certificate and key files replaced on disk under load are used
by the connections dialled afterwards, without a restart; a half-written file is never loaded."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from pathlib import Path

import pytest

import resilient_etcd as etcd3
from resilient_etcd.testing import EtcdCluster, wait_until
from resilient_etcd.testing.tls import issue_client_cert, other_ca

OLD_CERT_LIFE = 20.0  # seconds: the first client certificate expires during the test


# what a write may say when the leader it went to is killed under it (the test restarts every member):
# its outcome is unknown, so it is reported, never retried — the restart's doing, not the rotation's
AMBIGUOUS = ("may or may not have been applied", "leader changed", "request timed out")


class Load:
    """Reads (or writes) in a loop on a thread; every failure is kept."""

    def __init__(self, client: etcd3.Etcd3Client, write: bool = False) -> None:
        self.client, self.write, self.ok, self.errors = client, write, 0, []  # type: ignore[var-annotated]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                if self.write:
                    self.client.put("/rot/w", str(self.ok), timeout=5)
                else:
                    self.client.get("/rot/k", timeout=5)
                self.ok += 1
            except etcd3.Etcd3Exception as e:
                self.errors.append(f"{type(e).__name__}: {e}")
            self.stop.wait(0.005)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def _restart_and_wait(cluster: EtcdCluster, c: etcd3.Etcd3Client, i: int) -> None:
    """kill -9 and restart member ``i``; wait until the client has redialled it and it answers again."""
    target = cluster.members[i].endpoint
    before = next(h.redials for h in c.endpoint_health() if h.endpoint == target)
    cluster.members[i].restart()
    wait_until(lambda: next((h for h in c.endpoint_health() if h.endpoint == target and h.redials > before
                             and h.state == "healthy"), None), timeout=20, what=f"{target} redialled and healthy")


@pytest.mark.etcd_cluster(size=3, tls=True, client_cert_auth=True, proxied=False)
def test_rotated_certificate_files_are_used_by_new_connections(etcd_cluster: EtcdCluster, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    certs = etcd_cluster.certs
    assert certs is not None
    ca, cert, key = tmp_path / "ca.pem", tmp_path / "client.pem", tmp_path / "client-key.pem"
    ca.write_bytes(certs.ca.read_bytes())
    old_cert, old_key = issue_client_cert(certs, valid_for=dt.timedelta(seconds=OLD_CERT_LIFE))
    expires = time.monotonic() + OLD_CERT_LIFE
    cert.write_bytes(old_cert)
    key.write_bytes(old_key)
    new_cert, new_key = issue_client_cert(certs)
    with etcd3.client(endpoints=etcd_cluster.endpoints, ca_cert=str(ca), cert_key=str(key), cert_cert=str(cert),
                      timeout=5) as c, caplog.at_level(logging.INFO, logger="resilient_etcd.tls"):
        rotation = c._transport.tls.rotation  # type: ignore[union-attr]
        assert rotation is not None
        c.put("/rot/k", "v")
        reader, writer = Load(c), Load(c, write=True)
        try:
            # a certificate caught half-written when a connection is dialled: the old files stay in use
            cert.write_bytes(new_cert[: len(new_cert) // 2])
            _restart_and_wait(etcd_cluster, c, 0)
            assert rotation.reloads == 0
            assert "do not load" in caplog.text
            # the rotation: a CA bundle (the old CA and the next one), a new key, its certificate
            ca.write_bytes(certs.ca.read_bytes() + other_ca())
            key.write_bytes(new_key)
            cert.write_bytes(new_cert)
            time.sleep(max(0.0, expires - time.monotonic()) + 1)  # the scenario: the old certificate expires
            c.put("/rot/k", "after expiry")  # connections opened before the expiry keep their TLS session
            for i in range(len(etcd_cluster.members)):  # every member's connection dialled again
                _restart_and_wait(etcd_cluster, c, i)
            assert c.get("/rot/k")[0] == b"after expiry"
            c.put("/rot/k", "through new connections")
        finally:
            reader.close()
            writer.close()
        assert rotation.reloads == 1, "the complete new files are loaded once"
        assert all(h.state == "healthy" for h in c.endpoint_health()), c.endpoint_health()
    assert not reader.errors, reader.errors[:5]
    assert reader.ok > 100 and writer.ok > 100, "the load proves nothing"
    unexplained = [e for e in writer.errors if not any(m in e for m in AMBIGUOUS)]
    assert not unexplained, unexplained[:5]
    assert len(writer.errors) <= len(etcd_cluster.members), f"more failed writes than restarts: {writer.errors}"
    assert b"BEGIN" not in caplog.text.encode(), "key material never reaches a log"
