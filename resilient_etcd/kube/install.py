"""``install()``: unmodified code that uses the official ``kubernetes`` package runs on our transport.

After one call at start-up, every ``ApiClient`` the official package or the application builds without
naming one — ``client.CoreV1Api()``, ``kubernetes.watch.Watch()``, ``kubernetes.informer``,
``config.new_client_from_config()``, ``client.ApiClient()`` in the application's own code — is a
:class:`resilient_etcd.kube.ApiClient` with the default configuration (the kubeconfig or in-cluster
configuration the application loaded) plus the ``endpoints`` and ``policy`` given here. Code that passes
a client (``DynamicClient(client)``, ``utils.create_from_yaml(client, …)``) gets whatever it passes:
pass ``kubernetes.client.ApiClient()``, which is then ours. :func:`uninstall` undoes it.

The seams, all in the official package's own names: the ``kubernetes.client.ApiClient`` attribute (what
``Watch()`` and application code call), the ``ApiClient`` that ``kubernetes.config.kube_config``'s
``new_client_from_config*`` build, and ``ApiClient._get_default_or_new`` — what every generated
``*Api()`` class calls when it is given no client (a client registered with ``ApiClient.set_default``
still wins, as in the official package).
"""

from __future__ import annotations

import threading
from typing import Any

import kubernetes.client
import kubernetes.client.api_client
import kubernetes.config.kube_config

from .client import INSTALLED, ApiClient, KubePolicy, _check_url

_lock = threading.Lock()
_saved: dict[str, Any] = {}
_ORIGINAL = kubernetes.client.api_client.ApiClient
_KUBE_CONFIG = vars(kubernetes.config.kube_config)  # (new_client_from_config* build its ApiClient)


def _default_or_ours(cls: type[Any]) -> tuple[Any, bool]:
    """``ApiClient._get_default_or_new`` while installed: the registered default, else one of ours."""
    default = ApiClient._default  # set_default on either class (ours inherits the official one's)
    if default is not None:
        return default, False
    return ApiClient(), True


def install(*, endpoints: list[str] | None = None, policy: KubePolicy | None = None) -> None:
    """Make the official package build our ``ApiClient`` wherever it builds one itself (see the module
    docstring). ``endpoints``: extra apiserver URLs every such client fails over to (beside the
    configuration's host); ``policy``: their :class:`KubePolicy`. Calling it again replaces them."""
    checked = [_check_url(e) for e in (endpoints or [])]
    if policy is not None and not isinstance(policy, KubePolicy):
        from ..exceptions import ConfigurationError

        raise ConfigurationError(f"policy must be a KubePolicy, got {type(policy).__name__}")
    with _lock:
        INSTALLED.endpoints, INSTALLED.policy = checked, policy
        if _saved:
            return
        _saved["client.ApiClient"] = kubernetes.client.ApiClient
        _saved["kube_config.ApiClient"] = _KUBE_CONFIG["ApiClient"]
        _saved["_get_default_or_new"] = _ORIGINAL.__dict__["_get_default_or_new"]
        kubernetes.client.ApiClient = ApiClient  # type: ignore[misc]
        _KUBE_CONFIG["ApiClient"] = ApiClient
        _ORIGINAL._get_default_or_new = classmethod(_default_or_ours)  # type: ignore[assignment,method-assign]


def uninstall() -> None:
    """Undo :func:`install` (clients already built stay ours until closed)."""
    with _lock:
        if not _saved:
            return
        kubernetes.client.ApiClient = _saved.pop("client.ApiClient")  # type: ignore[misc]
        _KUBE_CONFIG["ApiClient"] = _saved.pop("kube_config.ApiClient")
        _ORIGINAL._get_default_or_new = _saved.pop("_get_default_or_new")  # type: ignore[method-assign]
        INSTALLED.endpoints, INSTALLED.policy = [], None


def installed() -> bool:
    """Is :func:`install` in effect?"""
    return bool(_saved)
