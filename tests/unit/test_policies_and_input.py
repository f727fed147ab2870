"""Bad input fails at construction with a clear error: policies, endpoints, timeouts, certs."""

from __future__ import annotations

from pathlib import Path

import pytest

import resilient_etcd as etcd3
from resilient_etcd import ConfigurationError, HealthPolicy, KeepalivePolicy, RetryPolicy
from resilient_etcd.transport.endpoints import parse_endpoint


@pytest.mark.parametrize("kwargs, match", [
    ({"time": 1}, "below etcd's --grpc-keepalive-min-time"),
    ({"time": -5}, "must be > 0"),
    ({"timeout": 0}, "must be > 0"),
    ({"time": float("nan")}, "finite"),
    ({"time": "10"}, "number of seconds"),
])
def test_keepalive_policy_rejects(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        KeepalivePolicy(**kwargs)  # type: ignore[arg-type]


def test_keepalive_below_minimum_only_when_allowed() -> None:
    p = KeepalivePolicy(time=1, allow_below_server_minimum=True)
    assert ("grpc.keepalive_time_ms", 1000) in p.channel_options()
    assert ("grpc.keepalive_permit_without_calls", 0) in KeepalivePolicy().channel_options()


def test_policies_are_frozen_and_print_usefully() -> None:
    p = HealthPolicy()
    with pytest.raises(AttributeError):
        p.dead_after = 5  # type: ignore[misc]
    assert "dead_after=0.8" in repr(p)


@pytest.mark.parametrize("kwargs, match", [
    ({"probe_interval": 2, "dead_after": 1}, "shorter than"),
    ({"latency_factor": 0.5}, "≥ 1"),
    ({"latency_window": 0}, "integer ≥ 1"),
    ({"readmit_backoff": 2, "readmit_backoff_max": 1}, "readmit_backoff_max"),
])
def test_health_policy_rejects(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        HealthPolicy(**kwargs)


def test_retry_policy_rejects() -> None:
    with pytest.raises(ConfigurationError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigurationError, match="backoff_max"):
        RetryPolicy(backoff_initial=1, backoff_max=0.5)


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:2379", ("127.0.0.1", 2379, None)),
    ("http://etcd-0.svc:2380", ("etcd-0.svc", 2380, False)),
    ("https://[::1]:2379", ("::1", 2379, True)),
    ("etcd", ("etcd", 2379, None)),
])
def test_endpoint_parsing(text: str, expected: tuple[str, int, bool | None]) -> None:
    e = parse_endpoint(text)
    assert (e.host, e.port, e.secure) == expected


@pytest.mark.parametrize("bad", ["", "   ", "ftp://x:1", "host:0", "host:99999", "host:abc", "http://h:1/path",
                                 "user:pw@host:1", "bad_host!:1", "http://:2379"])
def test_bad_endpoints(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="bad endpoint"):
        parse_endpoint(bad)


@pytest.mark.parametrize("kwargs, match", [
    ({"timeout": 0}, "timeout must be positive"),
    ({"timeout": -1}, "timeout must be positive"),
    ({"port": 70000}, "port must be"),
    ({"endpoints": []}, "must not be empty"),
    ({"endpoints": "a:1"}, "list of addresses"),
    ({"endpoints": ["a:1", "a:1"]}, "duplicate"),
    ({"endpoints": ["a:1"], "host": "b"}, "either host/port or endpoints"),
    ({"user": "u"}, "together"),
    ({"password": "p"}, "together"),
    ({"cert_key": "/k"}, "together"),
    ({"ca_cert": "/nonexistent/ca.pem"}, "cannot read ca_cert"),
    ({"keepalive": KeepalivePolicy(time=1, allow_below_server_minimum=True), "grpc_options": [("x",)]},
     "pairs"),
    ({"grpc_options": [("grpc.keepalive_time_ms", 1000)]}, "below etcd's"),
    ({"health": "fast"}, "must be a HealthPolicy"),
])
def test_client_rejects_bad_input(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        etcd3.client(**kwargs)  # type: ignore[arg-type]


def test_empty_cert_file_is_rejected(tmp_path: Path) -> None:
    empty = tmp_path / "ca.pem"
    empty.write_text("")
    with pytest.raises(ConfigurationError, match="is empty"):
        etcd3.client(ca_cert=str(empty))


def test_construction_does_no_io_and_repr_hides_secrets() -> None:
    # no server listens on this port: building the client must still return at once (auth off)
    c = etcd3.client(endpoints=["127.0.0.1:1"])
    try:
        assert repr(c) == "Etcd3Client(endpoints=[127.0.0.1:1], timeout=10)"
    finally:
        c.close()


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(etcd3.DeadlineExceeded, etcd3.ConnectionTimeoutError)


def test_h2_pool_reads_every_urllib3_timeout_shape() -> None:
    urllib3 = pytest.importorskip("urllib3", reason="the kube extra (the packaging check runs these on core only)")
    from resilient_etcd.kube.h2pool import _timeouts

    assert _timeouts(urllib3.Timeout(total=3.0), 2.0) == (3.0, 3.0)
    assert _timeouts(urllib3.Timeout(connect=1.0, read=4.0), 2.0) == (1.0, 4.0)
    assert _timeouts(urllib3.Timeout(connect=1.0, read=4.0, total=2.5), 2.0) == (1.0, 2.5)
    assert _timeouts(urllib3.Timeout(connect=1.0), 2.0) == (1.0, None)
    assert _timeouts(5, 2.0) == (5.0, 5.0)
    assert _timeouts(None, 2.0) == (2.0, None)
