"""Metrics appear on a Prometheus scrape during a real fault; the plain snapshot says the same."""

from __future__ import annotations

import prometheus_client
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
                wait_until(lambda: metrics.snapshot()["states"].get(active) == "ejected", timeout=5,
                           what="the ejection to show in the metrics")
                c.get("/m")
                scrape = prometheus_client.generate_latest(registry).decode()
            finally:
                member.require_proxy().heal()
        assert f'resilient_etcd_events_total{{endpoint="{active}",event="ejections"}}' in scrape
        assert f'resilient_etcd_endpoint_state{{endpoint="{active}",state="ejected"}} 1.0' in scrape
        assert "resilient_etcd_probe_seconds_bucket" in scrape
        assert metrics.snapshot()["events"]["ejections"][active] >= 1
    finally:
        metrics.METRICS.disable_prometheus()
