"""A real DNS server for tests of SRV discovery: UDP on loopback, answering from records a test changes::

    with SrvServer() as dns_server:
        dns_server.publish("_etcd-client._tcp.test.", [(0, 0, 2379, "localhost.")])
        client = SRVDiscoveryEtcd3Client("_etcd-client._tcp.test.", resolver=dns_server.resolver())

Names with records get them (an SRV question; any other type gets an empty answer), every other name
NXDOMAIN. ``resolver()`` is a dnspython resolver that asks this server only; ``install()`` makes it
dnspython's default resolver, for code that takes none (python-etcd3's ``SRVDiscoveryEtcd3Client``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset

Record = tuple[int, int, int, str]
"""(priority, weight, port, target) of one SRV record."""


class SrvServer:
    """A DNS server on ``127.0.0.1`` (UDP, a free port) serving SRV records (see the module docstring)."""

    def __init__(self) -> None:
        self._records: dict[str, list[Record]] = {}
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.queries = 0
        self._saved: Any = None
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)
        self._thread.start()

    def publish(self, name: str, records: list[Record]) -> None:
        """Serve ``records`` for ``name`` from now on (an empty list: the name exists, with no SRV record)."""
        with self._lock:
            self._records[_absolute(name)] = list(records)

    def withdraw(self, name: str) -> None:
        """``name`` no longer exists (NXDOMAIN)."""
        with self._lock:
            self._records.pop(_absolute(name), None)

    def resolver(self) -> dns.resolver.Resolver:
        """A dnspython resolver that asks this server only, without caching."""
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = ["127.0.0.1"]
        r.port = self.port
        return r

    def install(self) -> None:
        """Make :meth:`resolver` dnspython's default resolver until :meth:`close`."""
        self._saved = dns.resolver.default_resolver
        dns.resolver.default_resolver = self.resolver()

    def close(self) -> None:
        if self._saved is not None:
            dns.resolver.default_resolver = self._saved
            self._saved = None
        with contextlib.suppress(OSError):  # closing a UDP socket does not wake its recvfrom; this does
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> SrvServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self._sock.recvfrom(4096)
            except OSError:  # closed
                return
            try:
                query = dns.message.from_wire(data)
            except Exception:  # not DNS: ignore it, as a server would
                continue
            self.queries += 1
            self._sock.sendto(self._answer(query).to_wire(), peer)

    def _answer(self, query: dns.message.Message) -> dns.message.Message:
        resp = dns.message.make_response(query)
        question = query.question[0]
        with self._lock:
            records = self._records.get(question.name.to_text())
        if records is None:
            resp.set_rcode(dns.rcode.NXDOMAIN)
        elif records and question.rdtype == dns.rdatatype.SRV:
            resp.answer.append(dns.rrset.from_text_list(
                question.name, 5, dns.rdataclass.IN, dns.rdatatype.SRV,
                [f"{prio} {weight} {port} {_absolute(target)}" for prio, weight, port, target in records]))
        return resp


def _absolute(name: str) -> str:
    return name if name.endswith(".") else name + "."
