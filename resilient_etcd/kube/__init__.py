"""A resilient ``ApiClient`` for the official ``kubernetes`` package (extra ``kube``).

Usage (docs/kubernetes.md; its samples run against a real kube-apiserver in tests/test_docs.py)::

    from resilient_etcd.kube import ApiClient
    api = ApiClient.from_kubeconfig("~/.kube/config", endpoints=["https://10.0.0.2:6443"])
    kubernetes.client.CoreV1Api(api).list_namespace()
"""

from .client import ApiClient, ApiDeadlineExceeded, KubePolicy
from .informer import Informer
from .install import install, installed, uninstall
from .watches import watch

__all__ = ["ApiClient", "ApiDeadlineExceeded", "Informer", "KubePolicy", "install", "installed", "uninstall", "watch"]
