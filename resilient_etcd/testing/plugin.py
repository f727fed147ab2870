"""pytest plugin (entry point ``pytest11``): real etcd clusters and toxiproxy as fixtures.

Fixtures
    ``toxiproxy_server`` (session) — one toxiproxy for the whole run.
    ``etcd_cluster`` — a running cluster, healed and emptied before each test. Configure it
        with the marker ``@pytest.mark.etcd_cluster(size=3, auth=False, tls=False, netns=False)``.
        Plain clusters are shared across tests of the same configuration (fast reset); clusters
        with auth, TLS or namespaces are fresh for each test.
    ``etcd_member`` — the only member of a single-member cluster.
    ``kube_apiserver`` — a real kube-apiserver on a single-member etcd, behind toxiproxy
        (``kubeconfig()``, ``token``, ``certs.ca``; kill/pause/… and ``proxy`` verbs).

Tests that use these fixtures get the ``integration`` marker, so ``-m "not integration"``
runs the fast unit tests alone. At the end of the session the plugin fails the run if any
server process or network namespace it started is still alive.

The plugin is loaded in every pytest run of every project that has resilient-etcd installed, so it
is inert until one of its fixtures is used: importing it needs only pytest and the core
dependencies, and a fixture used without the ``testing`` extra fails *that test* with a message
naming the extra, never the session.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from ._procs import ProcessRegistry
from .netns import leftover_namespaces, netns_available, reap_stale

if TYPE_CHECKING:
    from .etcd import EtcdCluster, EtcdMember
    from .kube import KubeApiServer
    from .toxiproxy import ToxiproxyServer

EXTRA = "resilient-etcd[testing]"


def _needs_extra() -> None:
    """Fail the test using a fixture, not the session, when the test bed's own needs are missing."""
    try:
        import cryptography  # noqa: F401  (certificates and keys of TLS/JWT clusters and kube-apiserver)
    except ImportError as e:
        pytest.fail(f"this fixture needs the test bed's extra: pip install '{EXTRA}' ({e})", pytrace=False)

_FIXTURES = {"etcd_cluster", "etcd_member", "toxiproxy_server", "kube_apiserver"}
_FRESH_KEYS = {"auth", "tls", "client_cert_auth", "netns", "auth_token_ttl", "jwt_ttl", "etcd_binary", "extra_args"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: uses real servers (etcd, toxiproxy, namespaces)")
    config.addinivalue_line(
        "markers", "etcd_cluster(**kwargs): EtcdCluster arguments for the etcd_cluster fixture"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


class _ClusterCache:
    def __init__(self) -> None:
        self.clusters: dict[tuple[tuple[str, Any], ...], EtcdCluster] = {}

    def get(self, toxiproxy: ToxiproxyServer, kwargs: dict[str, Any]) -> EtcdCluster:
        from .etcd import EtcdCluster

        key = tuple(sorted(kwargs.items()))
        cluster = self.clusters.get(key)
        if cluster is not None:
            try:
                cluster.reset()
                return cluster
            except Exception:
                cluster.close()
                del self.clusters[key]
        cluster = EtcdCluster(toxiproxy=toxiproxy, **kwargs).start()
        self.clusters[key] = cluster
        return cluster

    def close(self) -> None:
        for c in self.clusters.values():
            with contextlib.suppress(Exception):
                c.close()
        self.clusters.clear()


@pytest.fixture(scope="session")
def toxiproxy_server() -> Iterator[ToxiproxyServer]:
    """One toxiproxy server for the whole session; every cluster's proxies live on it."""
    _needs_extra()
    from .toxiproxy import ToxiproxyServer

    with ToxiproxyServer() as server:
        yield server


@pytest.fixture(scope="session")
def _etcd_cluster_cache() -> Iterator[_ClusterCache]:
    if netns_available() is None:
        reap_stale()
    cache = _ClusterCache()
    yield cache
    cache.close()


@pytest.fixture
def etcd_cluster(
    request: pytest.FixtureRequest, toxiproxy_server: ToxiproxyServer, _etcd_cluster_cache: _ClusterCache
) -> Iterator[EtcdCluster]:
    """A running cluster, healed and emptied before the test. Configure it with
    ``@pytest.mark.etcd_cluster(size=3, proxied=True, auth=False, tls=False, client_cert_auth=False,
    netns=False, auth_token_ttl=300, jwt_ttl=None, etcd_binary=None, extra_args=())``: plain clusters
    are shared between tests of one configuration; with auth, TLS, namespaces, JWT, another binary
    or extra arguments a fresh one is made for the test (and skipped without root for ``netns``)."""
    marker = request.node.get_closest_marker("etcd_cluster")
    kwargs: dict[str, Any] = {"size": 3, **(marker.kwargs if marker else {})}
    if kwargs.get("netns") and (reason := netns_available()):
        pytest.skip(reason)
    if _FRESH_KEYS & {k for k, v in kwargs.items() if v}:
        from .etcd import EtcdCluster

        with EtcdCluster(toxiproxy=toxiproxy_server, **kwargs) as cluster:
            yield cluster
        return
    yield _etcd_cluster_cache.get(toxiproxy_server, kwargs)


@pytest.fixture
def etcd_member(toxiproxy_server: ToxiproxyServer, _etcd_cluster_cache: _ClusterCache) -> EtcdMember:
    """The only member of a shared single-member cluster."""
    return _etcd_cluster_cache.get(toxiproxy_server, {"size": 1}).members[0]


@pytest.fixture
def kube_apiserver(toxiproxy_server: ToxiproxyServer, _etcd_cluster_cache: _ClusterCache) -> Iterator[KubeApiServer]:
    """A real kube-apiserver (TLS, bearer token, behind toxiproxy) on a shared single-member etcd."""
    from .kube import KubeApiServer

    etcd = _etcd_cluster_cache.get(toxiproxy_server, {"size": 1})
    with KubeApiServer(etcd, toxiproxy=toxiproxy_server) as api:
        yield api


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaks = [f"process {pid}" for pid in ProcessRegistry.running()]
    if netns_available() is None:
        leaks += [f"namespace {ns}" for ns in leftover_namespaces()]
    if leaks:
        ProcessRegistry.kill_all()
        session.config.get_terminal_writer().line(
            f"resilient_etcd.testing: leaked after the session: {', '.join(leaks)}", red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
