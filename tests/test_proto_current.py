"""The committed stubs match the committed .proto files (regenerate with `make proto`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_stubs_are_current() -> None:
    python = os.environ.get("RESILIENT_ETCD_PROTOC_PYTHON", str(ROOT / ".venv-protoc" / "bin" / "python"))
    assert Path(python).exists(), (
        f"no protoc venv at {python}: run `make test` (it builds .venv-protoc from tools/protoc-requirements.txt)"
    )
    proc = subprocess.run([python, str(ROOT / "tools" / "gen_proto.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_stubs_use_etcd_wire_names() -> None:
    from resilient_etcd._proto import kv_pb2, rpc_pb2

    assert rpc_pb2.DESCRIPTOR.package == "etcdserverpb"
    assert rpc_pb2.DESCRIPTOR.services_by_name["KV"].methods_by_name["Range"].full_name == "etcdserverpb.KV.Range"
    fields = {f.name: f.number for f in rpc_pb2.WatchResponse.DESCRIPTOR.fields}
    assert fields["events"] == 11 and fields["cancel_reason"] == 6
    assert {f.name: f.number for f in kv_pb2.KeyValue.DESCRIPTOR.fields} == {
        "key": 1, "create_revision": 2, "mod_revision": 3, "version": 4, "value": 5, "lease": 6}
    assert rpc_pb2.Compare.DESCRIPTOR.fields_by_name["range_end"].number == 64
