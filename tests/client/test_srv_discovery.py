"""DNS SRV discovery (python-etcd3 master's ``SRVDiscoveryEtcd3Client``) against a real DNS server and a
real cluster: the records name the endpoints, a refresh follows them under traffic, bad names fail clearly."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator

import pytest

import resilient_etcd
from resilient_etcd import ConfigurationError, ConnectionFailedError, SRVDiscoveryEtcd3Client
from resilient_etcd.testing import EtcdCluster, wait_until
from resilient_etcd.testing.dns import SrvServer

NAME = "_etcd-client._tcp.cluster.test."


@pytest.fixture
def dns_server() -> Iterator[SrvServer]:
    with SrvServer() as server:
        yield server


def _port(member_endpoint: str) -> int:
    return int(member_endpoint.rsplit(":", 1)[1])


@pytest.mark.etcd_cluster(size=3)
def test_the_records_name_the_endpoints_and_a_refresh_follows_them_under_traffic(
        etcd_cluster: EtcdCluster, dns_server: SrvServer) -> None:
    p0, p1, p2 = (_port(m.direct_endpoint) for m in etcd_cluster.members)
    # priority first (lower wins), then weight (heavier first): the order endpoints are tried in
    dns_server.publish(NAME, [(10, 0, p1, "localhost"), (0, 5, p0, "localhost")])
    client = SRVDiscoveryEtcd3Client(NAME, timeout=5, resolver=dns_server.resolver())
    try:
        assert [h.endpoint for h in client.endpoint_health()] == [f"localhost:{p0}", f"localhost:{p1}"]
        client.put("/srv/k", "0")
        errors: list[BaseException] = []
        stop = threading.Event()
        done = [0]

        def traffic() -> None:
            while not stop.is_set():
                try:
                    client.put("/srv/k", str(done[0]))
                    assert client.get("/srv/k")[0] == str(done[0]).encode()
                    done[0] += 1
                except BaseException as e:  # every failure is the finding
                    errors.append(e)

        t = threading.Thread(target=traffic, daemon=True)
        t.start()
        try:
            wait_until(lambda: done[0] >= 20, timeout=10, what="traffic before the refresh")
            old = {c.name: c for c in client._transport.pool.conns}
            dns_server.publish(NAME, [(0, 0, p1, "localhost"), (0, 0, p2, "localhost")])  # p0 leaves, p2 joins
            got = client.refresh_endpoints()
            assert sorted(e.target for e in got) == sorted([f"localhost:{p1}", f"localhost:{p2}"])
            assert sorted(client.endpoints) == sorted([f"localhost:{p1}", f"localhost:{p2}"])
            kept = next(c for c in client._transport.pool.conns if c.name == f"localhost:{p1}")
            assert kept is old[f"localhost:{p1}"], "a member still listed keeps its connection and health"
            at = done[0]
            wait_until(lambda: done[0] >= at + 20, timeout=10, what="traffic after the refresh")
        finally:
            stop.set()
            t.join(10)
        assert not errors, f"calls failed across the refresh: {errors[:3]}"
        with pytest.raises(ValueError):  # the removed member's channel is closed
            old[f"localhost:{p0}"].stubs.kv.Range(resilient_etcd.etcdrpc.RangeRequest(key=b"/srv/k"), timeout=1)
    finally:
        client.close()


@pytest.mark.etcd_cluster(size=1)
def test_python_etcd3_code_finds_the_cluster_through_srv(etcd_cluster: EtcdCluster, dns_server: SrvServer) -> None:
    """Unmodified python-etcd3 master code: the system resolver (here: dnspython's default, pointed at the
    test's DNS server) and ``etcd3.SRVDiscoveryEtcd3Client(srv=...)``."""
    dns_server.publish(NAME, [(0, 0, _port(etcd_cluster.members[0].direct_endpoint), "localhost")])
    dns_server.install()
    resilient_etcd.install_as_etcd3()
    try:
        import etcd3

        client = etcd3.SRVDiscoveryEtcd3Client(srv=NAME, timeout=5)
        try:
            client.put("/srv/compat", "1")
            assert client.get("/srv/compat")[0] == b"1"
            assert [e.port for e in client.refresh_endpoints()] == [_port(etcd_cluster.members[0].direct_endpoint)]
            assert client.srv == NAME
        finally:
            client.close()
    finally:
        resilient_etcd.uninstall_as_etcd3()


def test_a_name_without_records_is_a_configuration_error(dns_server: SrvServer) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        SRVDiscoveryEtcd3Client("_etcd-client._tcp.nowhere.test.", resolver=dns_server.resolver())
    dns_server.publish(NAME, [])
    with pytest.raises(ConfigurationError, match="no SRV records"):
        SRVDiscoveryEtcd3Client(NAME, resolver=dns_server.resolver())
    dns_server.publish(NAME, [(0, 0, 2379, ".")])  # RFC 2782: "no service here"
    with pytest.raises(ConfigurationError, match="name no host"):
        SRVDiscoveryEtcd3Client(NAME, resolver=dns_server.resolver())
    assert dns_server.queries == 3


def test_a_silent_dns_server_fails_within_the_timeout() -> None:
    mute = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # takes the question, never answers
    mute.bind(("127.0.0.1", 0))
    try:
        import dns.resolver

        r = dns.resolver.Resolver(configure=False)
        r.nameservers, r.port = ["127.0.0.1"], mute.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ConnectionFailedError, match="looking up"):
            SRVDiscoveryEtcd3Client(NAME, timeout=1, resolver=r)
        assert time.monotonic() - started < 5, "the lookup is bounded by the timeout"
    finally:
        mute.close()


@pytest.mark.etcd_cluster(size=1)
def test_a_failed_refresh_changes_nothing(etcd_cluster: EtcdCluster, dns_server: SrvServer) -> None:
    port = _port(etcd_cluster.members[0].direct_endpoint)
    dns_server.publish(NAME, [(0, 0, port, "localhost")])
    with SRVDiscoveryEtcd3Client(NAME, timeout=5, resolver=dns_server.resolver()) as client:
        dns_server.withdraw(NAME)
        with pytest.raises(ConfigurationError, match="does not exist"):
            client.refresh_endpoints()
        assert list(client.endpoints) == [f"localhost:{port}"]
        client.put("/srv/after", "1")


def test_without_dnspython_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dns.resolver", None)  # as if dnspython were not installed
    with pytest.raises(ConfigurationError, match=r"resilient-etcd\[srv\]"):
        SRVDiscoveryEtcd3Client(NAME)
