"""python-etcd3's ``etcd3.leases``."""

from .etcd.lease import Lease

__all__ = ["Lease"]
