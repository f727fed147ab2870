"""Range reads in pages (pure: a fake server answers from a dict, a fake clock times the pages)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_etcd._proto import kv_pb2, rpc_pb2
from resilient_etcd.etcd.paging import PageSizer, pageable, paged_range
from resilient_etcd.exceptions import RevisionCompactedError


class FakeServer:
    """A store at one revision; answers Range like etcd (count of the whole range, ``more``), and
    takes ``bytes / rate`` seconds of the fake clock per answer."""

    def __init__(self, store: dict[bytes, bytes], rate: float = 256e3) -> None:
        self.store = store
        self.revision = 7
        self.rate = rate
        self.now = 0.0
        self.requests: list[rpc_pb2.RangeRequest] = []
        self.compact_after: int | None = None

    def clock(self) -> float:
        return self.now

    def send(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        self.requests.append(req.__deepcopy__())
        if self.compact_after is not None and len(self.requests) > self.compact_after and req.revision:
            self.compact_after = None
            self.revision += 1
            raise RevisionCompactedError(self.revision - 1)
        keys = sorted(k for k in self.store if req.key <= k < req.range_end)
        resp = rpc_pb2.RangeResponse(count=len(keys))
        resp.header.revision = self.revision
        page = keys if not req.limit else keys[:req.limit]
        resp.more = len(page) < len(keys)
        resp.kvs.extend(kv_pb2.KeyValue(key=k, value=self.store[k], mod_revision=self.revision) for k in page)
        self.now += resp.ByteSize() / self.rate
        return resp


def _req(**kw: object) -> rpc_pb2.RangeRequest:
    return rpc_pb2.RangeRequest(key=b"/p/", range_end=b"/p0", **kw)  # type: ignore[arg-type]


def test_every_key_once_in_order_with_the_first_count_and_revision() -> None:
    store = {f"/p/{i:03d}".encode(): b"x" * 65536 for i in range(16)}
    srv = FakeServer(store)
    resp = paged_range(_req(), srv.send, PageSizer(0.2), srv.clock)
    assert [kv.key for kv in resp.kvs] == sorted(store)
    assert resp.count == 16 and not resp.more and resp.header.revision == 7
    assert len(srv.requests) > 1
    assert all(r.revision == 7 for r in srv.requests[1:]), "every page at the first page's revision"


def test_pages_stay_short_on_a_slow_link() -> None:
    store = {f"/p/{i:03d}".encode(): b"x" * 65536 for i in range(32)}
    srv = FakeServer(store, rate=256e3)
    sizer = PageSizer(0.2)
    paged_range(_req(), srv.send, sizer, srv.clock)
    assert max(r.limit for r in srv.requests) == 1  # one 64 KiB key is already 0.25 s
    again = len(srv.requests)
    paged_range(_req(), srv.send, sizer, srv.clock)
    assert srv.requests[again].limit == 1, "what was learnt about the range sizes its first page"


def test_a_fast_link_gets_big_pages() -> None:
    store = {f"/p/{i:04d}".encode(): b"x" * 1024 for i in range(5000)}
    srv = FakeServer(store, rate=500e6)
    sizer = PageSizer(0.2)
    paged_range(_req(), srv.send, sizer, srv.clock)
    first_time = len(srv.requests)
    assert first_time <= 14, "pages double from one key: 5000 keys in at most 1 + log2(5000) pages"
    paged_range(_req(), srv.send, sizer, srv.clock)
    assert len(srv.requests) - first_time == 1, "a known range on a fast link: one request"


def test_a_small_first_key_does_not_stake_a_page_on_the_keys_after_it() -> None:
    # the first key is tiny and fast, the rest are 64 KiB each: sized by the first key alone, the second
    # page held every key (2 MiB, 8 s at 256 KB/s: silent far beyond the dead time, ejected, sent again)
    store = {b"/p/000": b"v", **{f"/p/{i:03d}".encode(): b"x" * 65536 for i in range(1, 32)}}
    srv = FakeServer(store, rate=256e3)
    took: list[float] = []

    def timed(req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        before = srv.now
        resp = srv.send(req)
        took.append(srv.now - before)
        return resp

    resp = paged_range(_req(), timed, PageSizer(0.2), srv.clock)
    assert [kv.key for kv in resp.kvs] == sorted(store)
    assert max(took) < 0.6, f"a page took {max(took):.2f} s of a 256 KB/s link"


def test_the_callers_limit_is_kept() -> None:
    store = {f"/p/{i:03d}".encode(): b"v" for i in range(10)}
    srv = FakeServer(store)
    resp = paged_range(_req(limit=4), srv.send, PageSizer(0.2), srv.clock)
    assert [kv.key for kv in resp.kvs] == sorted(store)[:4]
    assert resp.more and resp.count == 10
    assert all(r.limit <= 4 for r in srv.requests)


def test_a_compacted_first_revision_starts_the_read_again() -> None:
    store = {f"/p/{i:03d}".encode(): b"x" * 65536 for i in range(4)}
    srv = FakeServer(store)
    srv.compact_after = 2
    resp = paged_range(_req(), srv.send, PageSizer(0.2), srv.clock)
    assert [kv.key for kv in resp.kvs] == sorted(store)
    assert resp.header.revision == 8 and srv.requests[3].revision == 0  # a fresh first page


def test_a_revision_the_caller_asked_for_is_never_replaced() -> None:
    srv = FakeServer({f"/p/{i}".encode(): b"x" * 65536 for i in range(4)})
    srv.compact_after = 1
    with pytest.raises(RevisionCompactedError):
        paged_range(_req(revision=7), srv.send, PageSizer(0.2), srv.clock)


@pytest.mark.parametrize(("kw", "expected"), [
    ({}, True),
    ({"sort_order": rpc_pb2.RangeRequest.ASCEND}, True),
    ({"sort_order": rpc_pb2.RangeRequest.DESCEND}, False),
    ({"sort_order": rpc_pb2.RangeRequest.ASCEND, "sort_target": rpc_pb2.RangeRequest.MOD}, False),
    ({"count_only": True}, False),
])
def test_what_can_be_paged(kw: dict[str, object], expected: bool) -> None:
    assert pageable(_req(**kw)) is expected
    assert not pageable(rpc_pb2.RangeRequest(key=b"k")), "one key is one answer"


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 70000), min_size=0, max_size=40),
       rate=st.sampled_from([64e3, 256e3, 10e6, 1e9]), limit=st.integers(0, 50))
def test_paged_equals_one_range(sizes: list[int], rate: float, limit: int) -> None:
    store = {f"/p/{i:03d}".encode(): b"v" * n for i, n in enumerate(sizes)}
    srv = FakeServer(store, rate=rate)
    whole = srv.send(_req(limit=limit))
    paged = paged_range(_req(limit=limit), FakeServer(store, rate=rate).send, PageSizer(0.2))
    assert list(paged.kvs) == list(whole.kvs)
    assert (paged.count, paged.more, paged.header.revision) == (whole.count, whole.more, whole.header.revision)
