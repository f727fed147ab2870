"""python-etcd3's ``etcd3.locks``."""

from .etcd.lock import Lock

__all__ = ["Lock"]
