"""python-etcd3's ``etcd3.members``."""

from .etcd.models import Member

__all__ = ["Member"]
