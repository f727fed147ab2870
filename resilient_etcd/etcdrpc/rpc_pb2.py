"""``etcd3.etcdrpc.rpc_pb2``: our generated module under python-etcd3's name."""

from .._proto.rpc_pb2 import *  # noqa: F403
