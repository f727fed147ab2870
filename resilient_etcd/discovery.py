"""Endpoints from DNS SRV records (python-etcd3 master's ``SRVDiscoveryEtcd3Client``), with dnspython.

An SRV name (etcd's convention: ``_etcd-client._tcp.<domain>``, or ``_etcd-client-ssl._tcp.<domain>``
for TLS) lists the members as ``priority weight port target`` records; each target becomes an
endpoint ``target:port``, lowest priority first and, within a priority, heaviest first. A record whose
target is ``.`` says "no service here" (RFC 2782) and is skipped.

dnspython is optional (``pip install 'resilient-etcd[srv]'``); without it, asking for SRV discovery
fails with a :class:`~resilient_etcd.exceptions.ConfigurationError` that says so.
"""

from __future__ import annotations

from typing import Any

from .exceptions import ConfigurationError, ConnectionFailedError
from .transport.endpoints import Endpoint, parse_endpoint

_LIFETIME = 5.0  # seconds a lookup may take in all (dnspython's default), when no timeout is given


def resolve_srv(name: str, *, lifetime: float | None = None, resolver: Any = None) -> list[Endpoint]:
    """The endpoints the SRV records of ``name`` list, in the order to try them.

    ``resolver``: a ``dns.resolver.Resolver`` (default: dnspython's, from ``/etc/resolv.conf``).
    Raises :class:`ConfigurationError` when the name does not exist or has no usable SRV record (or
    dnspython is missing), :class:`ConnectionFailedError` when DNS did not answer.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"srv must be a DNS name such as '_etcd-client._tcp.example.com', got {name!r}")
    try:
        import dns.exception
        import dns.name
        import dns.resolver
    except ImportError:
        raise ConfigurationError("DNS SRV discovery needs dnspython: pip install 'resilient-etcd[srv]'") from None
    try:
        r = resolver if resolver is not None else dns.resolver.get_default_resolver()
        answer = r.resolve(name, "SRV", lifetime=lifetime or _LIFETIME, search=False)
    except dns.resolver.NXDOMAIN:
        raise ConfigurationError(f"SRV discovery: the DNS name {name!r} does not exist") from None
    except dns.resolver.NoAnswer:
        raise ConfigurationError(f"SRV discovery: {name!r} has no SRV records") from None
    except dns.exception.DNSException as e:  # timeouts, no nameserver, SERVFAIL …
        raise ConnectionFailedError(f"SRV discovery: looking up {name!r} failed: {e}") from None
    records = sorted(answer, key=lambda rec: (rec.priority, -rec.weight))
    endpoints = []
    for rec in records:
        if rec.target == dns.name.root:
            continue
        target = rec.target.to_text(omit_final_dot=True)
        ep = parse_endpoint(f"[{target}]:{rec.port}" if ":" in target else f"{target}:{rec.port}")
        if ep not in endpoints:
            endpoints.append(ep)
    if not endpoints:
        raise ConfigurationError(f"SRV discovery: the SRV records of {name!r} name no host")
    return endpoints
