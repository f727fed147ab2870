"""Code written for python-etcd3 0.12, unmodified: run by test_install.py after install_as_etcd3()."""

import sys

import etcd3
import etcd3.utils
from etcd3 import etcdrpc
from etcd3.events import PutEvent

host, port = sys.argv[1].rsplit(":", 1)
client = etcd3.client(host=host, port=int(port), timeout=5)

client.put("/legacy/a", "1")
value, meta = client.get("/legacy/a")
assert value == b"1" and meta.key == b"/legacy/a" and meta.version >= 1

status, responses = client.transaction(
    compare=[client.transactions.value("/legacy/a") == "1"],
    success=[client.transactions.put("/legacy/b", "2")],
    failure=[],
)
assert status is True

cmp = client.transactions.version("/legacy/b") > 0
assert cmp.op == etcdrpc.Compare.GREATER

assert [v for v, _ in client.get_prefix("/legacy/", sort_order="ascend")] == [b"1", b"2"]
resp = client.get_prefix_response("/legacy/", sort_order="descend")
assert isinstance(resp, etcdrpc.RangeResponse) and resp.kvs[0].key == b"/legacy/b"

lease = client.lease(10)
client.put("/legacy/leased", "x", lease=lease)
assert etcd3.utils.lease_to_id(lease) == lease.id
lease.revoke()

with client.lock("legacy-lock", ttl=5) as lock:
    assert lock.is_acquired()

responses = []
watch_id = client.watcher.add_callback("/legacy/w", responses.append)
client.put("/legacy/w", "w")
client.cancel_watch(watch_id)
timed_out = False
try:
    client.watch_once("/legacy/quiet", timeout=0.2)
except etcd3.exceptions.WatchTimedOut:
    timed_out = True
assert timed_out

members = list(client.members)
assert members and all(isinstance(m, etcd3.members.Member) for m in members)
assert client.uses_secure_channel is False
alarms = list(client.list_alarms())
assert all(a.alarm_type in (etcdrpc.NOSPACE, etcdrpc.CORRUPT) for a in alarms)

assert issubclass(etcd3.exceptions.ConnectionFailedError, etcd3.Etcd3Exception)
assert isinstance(PutEvent, type)
client.delete_prefix("/legacy/")
client.close()
print("legacy app ok")
