"""python-etcd3's ``etcd3.transactions``: the compares and operations of ``client.transaction()``."""

from .etcd.transactions import BaseCompare, Create, Delete, Get, Lease, Mod, Put, Txn, Value, Version

__all__ = ["BaseCompare", "Create", "Delete", "Get", "Lease", "Mod", "Put", "Txn", "Value", "Version"]
