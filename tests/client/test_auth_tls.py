"""Auth tokens that die with a restart or expire, TLS and mTLS — on real members."""

from __future__ import annotations

import logging
import time

import pytest

import resilient_etcd as etcd3
from resilient_etcd.metrics import METRICS
from resilient_etcd.testing import EtcdCluster
from resilient_etcd.testing.etcd import ROOT_PASSWORD_DEFAULT


@pytest.mark.etcd_cluster(size=1, auth=True)
def test_auth_round_trip_and_bad_credentials(etcd_cluster: EtcdCluster) -> None:
    with etcd3.client(endpoints=etcd_cluster.endpoints, user="root", password=ROOT_PASSWORD_DEFAULT) as c:
        c.put("/secret", "v")
        assert c.get("/secret")[0] == b"v"
        assert ROOT_PASSWORD_DEFAULT not in repr(c)
    with pytest.raises(etcd3.AuthenticationError):
        etcd3.client(endpoints=etcd_cluster.endpoints, user="root", password="wrong")
    with etcd3.client(endpoints=etcd_cluster.endpoints) as anonymous, pytest.raises(etcd3.Etcd3Exception):
        anonymous.get("/secret")


@pytest.mark.etcd_cluster(size=1, auth=True)
def test_token_lost_in_restart_is_renewed_transparently(
    etcd_cluster: EtcdCluster, caplog: pytest.LogCaptureFixture
) -> None:
    with etcd3.client(endpoints=etcd_cluster.endpoints, user="root", password=ROOT_PASSWORD_DEFAULT) as c:
        c.put("/k", "1")
        etcd_cluster.members[0].restart()  # simple tokens live in memory: all are invalid now
        with caplog.at_level(logging.DEBUG, logger="resilient_etcd"):
            c.put("/k", "2")  # a mutation too: a rejected token means it was not applied
            assert c.get("/k")[0] == b"2"
        assert ROOT_PASSWORD_DEFAULT not in caplog.text


def _renewals() -> int:
    return int(sum(METRICS.snapshot()["events"].get("token_renewals", {}).values()))


@pytest.mark.etcd_cluster(size=1, auth=True, jwt_ttl=2)
def test_expired_token_is_renewed(etcd_cluster: EtcdCluster) -> None:
    """JWTs expire at their TTL however often they are used (etcd extends *simple* tokens on every
    use, and our prober uses ours ten times a second: with simple tokens this proved nothing)."""
    with etcd3.client(endpoints=etcd_cluster.endpoints, user="root", password=ROOT_PASSWORD_DEFAULT) as c:
        c.put("/k", "1")
        before = _renewals()
        time.sleep(3)  # let the 2 s token TTL run out (the scenario is the passage of time itself)
        assert c.get("/k")[0] == b"1"
        c.put("/k", "2")  # a mutation too: a rejected token means it was not applied
        assert c.get("/k")[0] == b"2"
        assert _renewals() - before == 1, "the expired token must have been renewed, once"


@pytest.mark.etcd_cluster(size=1, tls=True, proxied=False)
def test_tls(etcd_cluster: EtcdCluster) -> None:
    certs = etcd_cluster.certs
    assert certs is not None
    with etcd3.client(endpoints=etcd_cluster.endpoints, ca_cert=str(certs.ca)) as c:
        c.put("/tls", "ok")
        assert c.get("/tls")[0] == b"ok"
        assert "tls=True" in repr(c)
    with etcd3.client(endpoints=[f"https://{etcd_cluster.endpoints[0]}"], ca_cert=str(certs.ca)) as c:
        assert c.get("/tls")[0] == b"ok"
    # plaintext against a TLS port fails typed and within its deadline
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=2) as plain:
        started = time.monotonic()
        with pytest.raises(etcd3.Etcd3Exception):
            plain.get("/tls")
        assert time.monotonic() - started < 2.5


@pytest.mark.etcd_cluster(size=1, tls=True, client_cert_auth=True, proxied=False)
def test_mtls(etcd_cluster: EtcdCluster) -> None:
    certs = etcd_cluster.certs
    assert certs is not None
    with etcd3.client(endpoints=etcd_cluster.endpoints, ca_cert=str(certs.ca), cert_key=str(certs.client_key),
                      cert_cert=str(certs.client_cert)) as c:
        c.put("/mtls", "ok")
        assert c.get("/mtls")[0] == b"ok"
        assert "BEGIN" not in repr(c._transport.tls)
    no_cert = etcd3.client(endpoints=etcd_cluster.endpoints, ca_cert=str(certs.ca), timeout=2)
    with no_cert, pytest.raises(etcd3.Etcd3Exception):
        no_cert.get("/mtls")
