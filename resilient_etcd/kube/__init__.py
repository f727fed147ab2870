"""A resilient ``ApiClient`` for the official ``kubernetes`` package (extra ``kube``).

>>> from resilient_etcd.kube import ApiClient      # doctest: +SKIP
>>> api = ApiClient.from_kubeconfig("~/.kube/config", endpoints=["https://10.0.0.2:6443"])  # doctest: +SKIP
>>> kubernetes.client.CoreV1Api(api).list_namespace()                                    # doctest: +SKIP
"""

from .client import ApiClient, KubePolicy
from .informer import Informer
from .watches import watch

__all__ = ["ApiClient", "Informer", "KubePolicy", "watch"]
