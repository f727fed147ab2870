"""resilient_etcd as ``etcd3``: python-etcd3 0.12's module paths and public names, one test per name,
and the behaviour of its helpers. (The names were listed from python-etcd3 0.12.0's source, plus what its
master branch adds — ``Endpoint``, ``MultiEndpointEtcd3Client``, ``SRVDiscoveryEtcd3Client``,
``EtcdTokenCallCredentials``, ``NoServerAvailableError``, ``utils.prefix_range_end`` and the
multi-endpoint client's public attributes; see docs/compatibility.md.)"""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType

import pytest

import resilient_etcd

PUBLIC: dict[str, list[str]] = {
    "etcd3": ["etcdrpc", "Etcd3Client", "Etcd3Exception", "Transactions", "client", "Lease", "Lock", "Member",
              "Endpoint", "MultiEndpointEtcd3Client", "SRVDiscoveryEtcd3Client"],  # the last three: master
    "etcd3.client": ["Etcd3Client", "Transactions", "KVMetadata", "Status", "Alarm", "client",
                     "Endpoint", "EtcdTokenCallCredentials", "MultiEndpointEtcd3Client", "SRVDiscoveryEtcd3Client"],
    "etcd3.utils": ["increment_last_byte", "to_bytes", "lease_to_id", "response_to_event_iterator",
                    "prefix_range_end"],
    "etcd3.members": ["Member"],
    "etcd3.events": ["Event", "PutEvent", "DeleteEvent", "new_event"],
    "etcd3.exceptions": ["Etcd3Exception", "WatchTimedOut", "InternalServerError", "ConnectionFailedError",
                         "ConnectionTimeoutError", "PreconditionFailedError", "RevisionCompactedError",
                         "NoServerAvailableError"],
    "etcd3.leases": ["Lease"],
    "etcd3.locks": ["Lock"],
    "etcd3.transactions": ["BaseCompare", "Value", "Version", "Create", "Mod", "Put", "Get", "Delete", "Txn"],
    "etcd3.watch": ["WatchResponse", "Watcher"],
    "etcd3.etcdrpc": ["KVStub", "WatchStub", "LeaseStub", "ClusterStub", "MaintenanceStub", "AuthStub",
                      "RangeRequest", "RangeResponse", "PutRequest", "DeleteRangeRequest", "TxnRequest", "Compare",
                      "RequestOp", "ResponseOp", "WatchRequest", "WatchCreateRequest", "WatchCancelRequest",
                      "WatchResponse", "LeaseGrantRequest", "LeaseKeepAliveRequest", "LeaseTimeToLiveRequest",
                      "StatusRequest", "AlarmRequest", "AlarmMember", "Member", "MemberListRequest",
                      "SnapshotRequest", "DefragmentRequest", "HashRequest", "CompactionRequest",
                      "AuthenticateRequest", "AuthUserGetRequest", "AuthUserListRequest", "AuthRoleGetRequest",
                      "AuthRoleListRequest", "AuthUserChangePasswordRequest", "AuthUserRevokeRoleRequest",
                      "AuthRoleRevokePermissionRequest", "NONE", "NOSPACE", "CORRUPT"],
    "etcd3.etcdrpc.rpc_pb2": ["RangeRequest", "Compare", "AlarmType"],
    "etcd3.etcdrpc.kv_pb2": ["KeyValue", "Event"],
    "etcd3.etcdrpc.auth_pb2": ["User", "Permission", "Role"],
    "etcd3.etcdrpc.rpc_pb2_grpc": ["KVStub", "KVServicer", "add_KVServicer_to_server"],
}

# python-etcd3 0.12's Etcd3Client methods and attributes
CLIENT = ["close", "get_response", "get", "get_prefix_response", "get_prefix", "get_range_response", "get_range",
          "get_all_response", "get_all", "put", "put_if_not_exists", "replace", "delete", "delete_prefix",
          "status", "add_watch_callback", "add_watch_prefix_callback", "watch_response", "watch",
          "watch_prefix_response", "watch_prefix", "watch_once_response", "watch_once",
          "watch_prefix_once_response", "watch_prefix_once", "cancel_watch", "transaction", "lease",
          "revoke_lease", "refresh_lease", "get_lease_info", "lock", "add_member", "remove_member",
          "update_member", "members", "compact", "defragment", "hash", "create_alarm", "list_alarms",
          "disarm_alarm", "snapshot", "transactions", "watcher", "uses_secure_channel"]


# python-etcd3 master's MultiEndpointEtcd3Client (and so SRVDiscoveryEtcd3Client): its public attributes
# beyond Etcd3Client's (the stub properties kvstub, leasestub … are internals: docs/compatibility.md)
MULTI = ["endpoints", "endpoint_in_use", "failover", "get_watcher", "watcher", "timeout", "transactions", "close",
         "__enter__", "__exit__"]
SRV = ["srv", "refresh_endpoints"]


@pytest.mark.parametrize(("module", "name"), [(m, n) for m, names in PUBLIC.items() for n in names])
def test_public_name(etcd3: ModuleType, module: str, name: str) -> None:
    mod = importlib.import_module(module)
    assert hasattr(mod, name), f"{module}.{name} is missing"


@pytest.mark.parametrize("name", CLIENT)
def test_client_name(etcd3: ModuleType, name: str) -> None:
    client = etcd3.client(host="127.0.0.1", port=1)  # nothing listens there: no call is made
    try:
        # a property such as ``members`` makes a call when read: look it up, do not read it
        assert name in dir(type(client)) or name in vars(client), f"Etcd3Client.{name} is missing"
    finally:
        client.close()


@pytest.mark.parametrize("name", MULTI)
def test_multi_endpoint_client_name(etcd3: ModuleType, name: str) -> None:
    client = etcd3.MultiEndpointEtcd3Client(endpoints=[etcd3.Endpoint("127.0.0.1", 1, secure=False)], failover=True)
    try:
        assert name in dir(type(client)) or name in vars(client), f"MultiEndpointEtcd3Client.{name} is missing"
        assert client.failover is True and list(client.endpoints) == ["127.0.0.1:1"]
        assert client.endpoint_in_use.port == 1
    finally:
        client.close()


@pytest.mark.parametrize("name", SRV)
def test_srv_discovery_client_name(etcd3: ModuleType, name: str) -> None:
    cls = etcd3.SRVDiscoveryEtcd3Client
    assert issubclass(cls, etcd3.MultiEndpointEtcd3Client)
    assert name in dir(cls) or name in inspect.signature(cls).parameters, f"SRVDiscoveryEtcd3Client.{name} is missing"


def test_no_endpoint_answering_is_masters_no_server_available(etcd3: ModuleType) -> None:
    client = etcd3.client(host="127.0.0.1", port=1, timeout=0.5)  # nothing listens there
    try:
        with pytest.raises(etcd3.exceptions.NoServerAvailableError):
            client.get("/nobody")
    finally:
        client.close()


def test_exceptions_are_etcd3_exceptions(etcd3: ModuleType) -> None:
    for name in PUBLIC["etcd3.exceptions"]:
        assert issubclass(getattr(etcd3.exceptions, name), etcd3.Etcd3Exception)


def test_enums_under_python_etcd3s_names(etcd3: ModuleType) -> None:
    rpc = etcd3.etcdrpc
    assert (rpc.RangeRequest.NONE, rpc.RangeRequest.ASCEND, rpc.RangeRequest.DESCEND) == (0, 1, 2)
    assert (rpc.RangeRequest.KEY, rpc.RangeRequest.VERSION, rpc.RangeRequest.CREATE, rpc.RangeRequest.MOD,
            rpc.RangeRequest.VALUE) == (0, 1, 2, 3, 4)
    assert (rpc.Compare.EQUAL, rpc.Compare.GREATER, rpc.Compare.LESS, rpc.Compare.NOT_EQUAL) == (0, 1, 2, 3)
    assert (rpc.NONE, rpc.NOSPACE, rpc.CORRUPT) == (0, 1, 2)
    assert (rpc.WatchCreateRequest.NOPUT, rpc.WatchCreateRequest.NODELETE) == (0, 1)
    assert rpc.WatchCreateRequest.FilterType.Value("NODELETE") == 1
    assert (rpc.AlarmRequest.GET, rpc.AlarmRequest.ACTIVATE, rpc.AlarmRequest.DEACTIVATE) == (0, 1, 2)


def test_compare_op_holds_the_protobuf_enum(etcd3: ModuleType) -> None:
    t = etcd3.transactions
    cases = [(t.Value("k") == "v", "EQUAL"), (t.Version("k") != 1, "NOT_EQUAL"), (t.Create("k") < 5, "LESS"),
             (t.Mod("k") > 5, "GREATER")]
    for cmp, name in cases:
        assert cmp.op == getattr(etcd3.etcdrpc.Compare, name)
        assert cmp.build_message().result == cmp.op


def test_utils(etcd3: ModuleType) -> None:
    u = etcd3.utils
    assert u.increment_last_byte(b"/app/") == b"/app0"
    assert u.increment_last_byte("a") == b"b"
    assert u.increment_last_byte(b"a\xff") == b"b", "python-etcd3 raises here; this is the right range end"
    assert u.to_bytes("k") == b"k" and u.to_bytes(b"k") == b"k" and u.to_bytes(5) == 5
    assert u.lease_to_id(7) == 7 and u.lease_to_id("8") == 8 and u.lease_to_id(None) == 0

    class FakeLease:
        id = 9

    assert u.lease_to_id(FakeLease()) == 9
    response = etcd3.events.WatchResponse(None, ["e1", "e2"])
    assert list(u.response_to_event_iterator([response, response])) == ["e1", "e2", "e1", "e2"]


def test_get_prefix_refuses_range_end(etcd3: ModuleType) -> None:
    client = etcd3.client(host="127.0.0.1", port=1)
    try:
        with pytest.raises(TypeError, match="Don't use 'range_end' with 'get_prefix'"):
            client.get_prefix("/p/", range_end="/q")
    finally:
        client.close()


def test_module_paths_are_ours(etcd3: ModuleType) -> None:
    import etcd3.etcdrpc.rpc_pb2 as rpc_pb2
    import etcd3.utils as utils

    assert etcd3 is resilient_etcd
    assert utils is resilient_etcd.utils
    assert rpc_pb2.RangeRequest is resilient_etcd.etcdrpc.RangeRequest
    assert inspect.ismodule(etcd3.etcdrpc)
