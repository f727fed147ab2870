"""``etcd3.etcdrpc.rpc_pb2_grpc``: our generated module under python-etcd3's name."""

from .._proto.rpc_pb2_grpc import *  # noqa: F403
