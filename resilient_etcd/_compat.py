"""``install_as_etcd3()``: unmodified code written for python-etcd3 — ``import etcd3``,
``import etcd3.utils``, ``from etcd3.etcdrpc import rpc_pb2`` — gets resilient_etcd (the idea of
``pymysql.install_as_MySQLdb()``). Call it once at start-up, before anything imports ``etcd3``."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

# python-etcd3 0.12's modules, each served by ours of the same name
MODULES = ("client", "etcdrpc", "etcdrpc.rpc_pb2", "etcdrpc.kv_pb2", "etcdrpc.auth_pb2", "etcdrpc.rpc_pb2_grpc",
           "events", "exceptions", "leases", "locks", "members", "transactions", "utils", "watch")


def _ours(module: ModuleType | None) -> bool:
    return module is not None and getattr(module, "__name__", "").split(".")[0] == "resilient_etcd"


def install_as_etcd3() -> None:
    """Make ``import etcd3`` (and its modules) load resilient_etcd. Idempotent. Raises ImportError when
    a real python-etcd3 is imported already: two clients under one name would be worse than none."""
    pkg = importlib.import_module("resilient_etcd")
    theirs = sorted(name for name, module in list(sys.modules.items())
                    if (name == "etcd3" or name.startswith("etcd3.")) and module is not None and not _ours(module))
    if theirs:
        where = getattr(sys.modules.get(theirs[0]), "__file__", None) or "an unknown place"
        raise ImportError(f"python-etcd3 is already imported ({', '.join(theirs[:3])} from {where}): call "
                          "resilient_etcd.install_as_etcd3() before anything imports etcd3")
    sys.modules["etcd3"] = pkg
    for name in MODULES:
        sys.modules[f"etcd3.{name}"] = importlib.import_module(f"resilient_etcd.{name}")


def uninstall_as_etcd3() -> None:
    """Undo :func:`install_as_etcd3` (modules already holding a reference keep it)."""
    for name in ("etcd3", *(f"etcd3.{n}" for n in MODULES)):
        if _ours(sys.modules.get(name)):
            del sys.modules[name]
