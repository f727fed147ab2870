"""A real test bed for code that talks to etcd: clusters, toxiproxy and fault verbs.

``EtcdCluster`` starts real etcd members (built by ``make servers``) on loopback or in network
namespaces, each behind its own toxiproxy proxy, and breaks them for real:

* member verbs — ``kill()``, ``stop()``, ``start()``, ``restart()``, ``pause()``, ``resume()``,
  ``drop()``/``undrop()`` (iptables in the member's namespace);
* network verbs on ``member.proxy`` — ``blackhole()``, ``latency()``, ``bandwidth()``,
  ``reset_peer()``, ``slow_close()``, ``limit_data()``, ``cut()``, ``heal()``;
* cluster verbs — ``compact()``, ``stop_quorum()``/``restore_quorum()``, ``enable_auth()``,
  ``virtual_ip()`` (a DNAT front whose backend can move, leaving old flows stale).

``KubeApiServer(etcd_cluster, toxiproxy=…)`` runs a real kube-apiserver (built the same way) on
such a cluster, with TLS, a bearer token, a kubeconfig, the same process verbs and a proxy.

The pytest plugin (installed with the package) exposes them as fixtures; see
:mod:`resilient_etcd.testing.plugin`.
"""

from ._procs import ProcessRegistry
from ._support import BinaryNotFoundError, HarnessError, PortInUseError, find_binary, wait_until
from .etcd import EtcdCluster, EtcdMember, MemberStartError
from .kube import ApiServerStartError, KubeApiServer
from .netns import NetnsHost, VirtualIP, netns_available
from .toxiproxy import Proxy, ToxiproxyError, ToxiproxyServer

__all__ = [
    "ApiServerStartError",
    "BinaryNotFoundError",
    "EtcdCluster",
    "EtcdMember",
    "HarnessError",
    "KubeApiServer",
    "MemberStartError",
    "NetnsHost",
    "PortInUseError",
    "ProcessRegistry",
    "Proxy",
    "ToxiproxyError",
    "ToxiproxyServer",
    "VirtualIP",
    "find_binary",
    "netns_available",
    "wait_until",
]
