"""``etcd3.etcdrpc.auth_pb2``: our generated module under python-etcd3's name."""

from .._proto.auth_pb2 import *  # noqa: F403
