"""``etcd3.etcdrpc.kv_pb2``: our generated module under python-etcd3's name."""

from .._proto.kv_pb2 import *  # noqa: F403
