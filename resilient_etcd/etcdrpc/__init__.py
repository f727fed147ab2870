"""python-etcd3's ``etcd3.etcdrpc``: etcd's messages, enums and stubs (generated from our own ``.proto``
subset, with etcd's wire names), e.g. ``etcdrpc.RangeRequest.ASCEND``, ``etcdrpc.Compare.EQUAL``,
``etcdrpc.NOSPACE``, ``etcdrpc.WatchCreateRequest.NOPUT``, ``etcdrpc.KVStub``."""

from .rpc_pb2 import *  # noqa: F403
from .rpc_pb2_grpc import *  # noqa: F403
