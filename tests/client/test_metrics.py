"""Metrics appear on a Prometheus scrape during a real fault; the plain snapshot says the same."""

from __future__ import annotations

import time

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry

import resilient_etcd as etcd3
from resilient_etcd import metrics
from resilient_etcd.testing import EtcdCluster, wait_until


def test_scrape_during_a_blackhole(etcd_cluster: EtcdCluster) -> None:
    registry = CollectorRegistry()
    metrics.enable_prometheus(registry)
    try:
        with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5) as c:
            c.get("/m")
            active = next(h.endpoint for h in c.endpoint_health() if h.active)
            member = next(m for m in etcd_cluster.members if m.endpoint == active)
            member.require_proxy().blackhole()
            try:
                # a call waiting on the blackholed member gets it probed (an idle client only has the 10 s
                # heartbeat); the call is retried on another member once it is ejected
                c.get("/m")
                wait_until(lambda: metrics.snapshot()["states"].get(active) == "ejected", timeout=5,
                           what="the ejection to show in the metrics")
                scrape = prometheus_client.generate_latest(registry).decode()
            finally:
                member.require_proxy().heal()
        assert f'resilient_etcd_events_total{{endpoint="{active}",event="ejections"}}' in scrape
        assert f'resilient_etcd_endpoint_state{{endpoint="{active}",state="ejected"}} 1.0' in scrape
        assert "resilient_etcd_probe_seconds_bucket" in scrape
        assert metrics.snapshot()["events"]["ejections"][active] >= 1
    finally:
        metrics.METRICS.disable_prometheus()


def test_states_times_and_ids_read_as_users_expect(etcd_cluster: EtcdCluster) -> None:
    """metrics states were {} while every endpoint was healthy; EndpointStatus.since was a monotonic
    value; lease ids were hex in logs and decimal in reprs."""
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5) as c:
        states = metrics.snapshot()["states"]
        assert all(states.get(ep) == "healthy" for ep in etcd_cluster.endpoints), states
        for s in c.endpoint_health():
            assert abs(s.since - time.time()) < 60, "since is wall-clock time"
        lease = c.lease(5)
        assert f"{lease.id:#x}" in repr(lease)
        lease.revoke()
        with pytest.raises(etcd3.LeaseLostError, match=f"{lease.id:#x}"):
            lease.refresh()
