"""Transaction compares and operations, as ``client.transactions.*`` in python-etcd3.

>>> from resilient_etcd.etcd.transactions import Value, Version, Put
>>> cmp = Value("/k") == "v"
>>> cmp.build_message().result == 0   # EQUAL
True
>>> (Version("/k") > 0).build_message().version
0
"""

from __future__ import annotations

from typing import Any

from .._proto import rpc_pb2
from .models import Key, to_bytes

_SYMBOLS: dict[int, str] = {rpc_pb2.Compare.EQUAL: "==", rpc_pb2.Compare.NOT_EQUAL: "!=",
            rpc_pb2.Compare.LESS: "<", rpc_pb2.Compare.GREATER: ">"}


class BaseCompare:
    """``Target(key) <op> value``: build with ``==``, ``!=``, ``<`` or ``>``. As in python-etcd3, ``op``
    holds the protobuf enum (``etcdrpc.Compare.EQUAL`` …) once an operator was applied."""

    target: Any = 0
    field: str = ""

    def __init__(self, key: Key, range_end: Key | None = None) -> None:
        self.key = to_bytes(key)
        self.range_end = to_bytes(range_end) if range_end is not None else None
        self.op: rpc_pb2.Compare.CompareResult | None = None
        self.value: Any = None

    def _set(self, op: rpc_pb2.Compare.CompareResult, other: Any) -> BaseCompare:
        self.op, self.value = op, other
        return self

    def __eq__(self, other: object) -> BaseCompare:  # type: ignore[override]
        return self._set(rpc_pb2.Compare.EQUAL, other)

    def __ne__(self, other: object) -> BaseCompare:  # type: ignore[override]
        return self._set(rpc_pb2.Compare.NOT_EQUAL, other)

    def __lt__(self, other: Any) -> BaseCompare:
        return self._set(rpc_pb2.Compare.LESS, other)

    def __gt__(self, other: Any) -> BaseCompare:
        return self._set(rpc_pb2.Compare.GREATER, other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        op = "?" if self.op is None else _SYMBOLS[self.op]
        return f"{type(self).__name__}({self.key!r}) {op} {self.value!r}"

    def build_message(self) -> rpc_pb2.Compare:
        if self.op is None:
            raise ValueError(f"{type(self).__name__}({self.key!r}) needs a comparison (==, !=, < or >)")
        msg = rpc_pb2.Compare(key=self.key, target=self.target, result=self.op)
        if self.range_end is not None:
            msg.range_end = self.range_end
        setattr(msg, self.field, self._wire_value())
        return msg

    def _wire_value(self) -> Any:
        return int(self.value)


class Value(BaseCompare):
    target, field = rpc_pb2.Compare.VALUE, "value"

    def _wire_value(self) -> bytes:
        return to_bytes(self.value, "compared value")


class Version(BaseCompare):
    target, field = rpc_pb2.Compare.VERSION, "version"


class Create(BaseCompare):
    target, field = rpc_pb2.Compare.CREATE, "create_revision"


class Mod(BaseCompare):
    target, field = rpc_pb2.Compare.MOD, "mod_revision"


class Lease(BaseCompare):
    target, field = rpc_pb2.Compare.LEASE, "lease"


class Put:
    def __init__(self, key: Key, value: Key, lease: Any = None, prev_kv: bool = False) -> None:
        self.key, self.value, self.lease, self.prev_kv = to_bytes(key), to_bytes(value, "value"), lease, prev_kv


class Get:
    def __init__(self, key: Key, range_end: Key | None = None) -> None:
        self.key = to_bytes(key)
        self.range_end = to_bytes(range_end) if range_end is not None else None


class Delete:
    def __init__(self, key: Key, range_end: Key | None = None, prev_kv: bool = False) -> None:
        self.key = to_bytes(key)
        self.range_end = to_bytes(range_end) if range_end is not None else None
        self.prev_kv = prev_kv


class Txn:
    def __init__(self, compare: list[BaseCompare], success: list[Any] | None = None,
                 failure: list[Any] | None = None) -> None:
        self.compare, self.success, self.failure = compare, success or [], failure or []


def lease_id(lease: Any) -> int:
    """A lease given as an id or as an object with ``.id``."""
    if lease is None:
        return 0
    return int(getattr(lease, "id", lease))


def op_to_request(op: Any) -> rpc_pb2.RequestOp:
    if isinstance(op, Put):
        return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
            key=op.key, value=op.value, lease=lease_id(op.lease), prev_kv=op.prev_kv))
    if isinstance(op, Get):
        return rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=op.key, range_end=op.range_end or b""))
    if isinstance(op, Delete):
        return rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(
            key=op.key, range_end=op.range_end or b"", prev_kv=op.prev_kv))
    if isinstance(op, Txn):
        return rpc_pb2.RequestOp(request_txn=build_txn(op.compare, op.success, op.failure))
    raise TypeError(f"not a transaction operation: {op!r} (use client.transactions.put/get/delete/txn)")


def build_txn(compare: list[BaseCompare], success: list[Any], failure: list[Any]) -> rpc_pb2.TxnRequest:
    return rpc_pb2.TxnRequest(
        compare=[c.build_message() for c in compare],
        success=[op_to_request(o) for o in success],
        failure=[op_to_request(o) for o in failure],
    )


def is_read_only(ops: list[Any]) -> bool:
    """True when no operation (nested ones included) writes: such a Txn is safe to retry."""
    for op in ops:
        if isinstance(op, (Put, Delete)):
            return False
        if isinstance(op, Txn) and not is_read_only(op.success + op.failure):
            return False
    return True


class Transactions:
    """The ``client.transactions`` namespace."""

    value = Value
    version = Version
    create = Create
    mod = Mod
    lease = Lease
    put = Put
    get = Get
    delete = Delete
    txn = Txn
