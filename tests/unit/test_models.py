"""Records shaped like python-etcd3's, read lazily from the messages they come from."""

from __future__ import annotations

import copy
import pickle

import pytest

from resilient_etcd._proto import kv_pb2, rpc_pb2
from resilient_etcd.etcd import shapes
from resilient_etcd.etcd.models import KVMetadata


def _response() -> rpc_pb2.RangeResponse:
    resp = rpc_pb2.RangeResponse(
        header=rpc_pb2.ResponseHeader(cluster_id=1, member_id=2, revision=9, raft_term=4),
        kvs=[kv_pb2.KeyValue(key=b"/k", value=b"v", create_revision=5, mod_revision=7, version=3, lease=11)],
        count=1)
    return rpc_pb2.RangeResponse.FromString(resp.SerializeToString())  # as off the wire


def _check(m: KVMetadata) -> None:
    assert (m.key, m.create_revision, m.mod_revision, m.version, m.lease_id) == (b"/k", 5, 7, 3, 11)
    assert m.response_header is not None and m.response_header.revision == 9


def test_get_shape_reads_every_field() -> None:
    value, meta = shapes.value_of(_response())
    assert value == b"v" and meta is not None
    _check(meta)
    assert "mod_revision=7" in repr(meta)


def test_public_constructor_and_fields_stay_plain_attributes() -> None:
    resp = _response()
    m = KVMetadata(resp.kvs[0], resp.header)
    _check(m)
    m.mod_revision = 99  # python-etcd3's are plain attributes: callers may set them
    assert m.mod_revision == 99


@pytest.mark.parametrize("clone", [copy.copy, copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))])
def test_copies_and_pickles_read_or_unread(clone) -> None:  # type: ignore[no-untyped-def]
    _check(clone(shapes.value_of(_response())[1]))  # nothing read before the copy
    read = shapes.value_of(_response())[1]
    assert read is not None
    _check(read)
    _check(clone(read))


def test_unknown_attribute_is_an_attribute_error() -> None:
    meta = shapes.value_of(_response())[1]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        meta.nope  # type: ignore[union-attr]  # noqa: B018
    assert shapes.value_of(rpc_pb2.RangeResponse()) == (None, None)
