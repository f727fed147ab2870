"""Tell a member that cannot work as configured from one that is down for now.

A failed dial looks the same to the caller whatever its cause, but some causes heal by waiting — a
member restarting refuses connections for a second — and some never do: a host name that does not
resolve, a certificate the client does not trust, plaintext spoken to a TLS port or TLS to a
plaintext one. :func:`permanent_cause` names the second kind (from grpc's words for the first two,
and a quick handshake of our own for a TLS mismatch, whose grpc words — "Socket closed" — also fit a
server going away), so the client can fail at once with the cause instead of retrying until its
deadline.
"""

from __future__ import annotations

import socket
import ssl
import time

from .endpoints import Endpoint

_DNS = ("errors resolving", "dns resolution failed", "domain name not found", "name or service not known")
_CERT = ("certificate", "ssl_error_ssl", "bad_signature", "unknown_ca", "verify_failed",
         "failed to create security handshaker")
_TLS_MISMATCH_TLS_CLIENT = ("handshake read failed", "wrong_version_number", "wrong version number")
_CLOSED = ("socket closed", "connection reset")


def permanent_cause(endpoint: Endpoint, tls: bool, details: str, *, probe_timeout: float = 0.5) -> str | None:
    """Why ``endpoint`` can never answer this client, from a failed dial's ``details``; None if it may heal."""
    text = details.lower()
    if any(m in text for m in _DNS):
        return f"host name {endpoint.host!r} does not resolve"
    if tls and any(m in text for m in _TLS_MISMATCH_TLS_CLIENT):
        if speaks_tls(endpoint, probe_timeout) is False:
            return "TLS client, but the endpoint speaks plaintext (use http:// or drop ca_cert/cert_*)"
        return None
    if tls and any(m in text for m in _CERT):
        return f"TLS certificate check failed: {short(details)}"
    if not tls and any(m in text for m in _CLOSED) and speaks_tls(endpoint, probe_timeout):
        return "plaintext client, but the endpoint speaks TLS (use https:// and ca_cert)"
    return None


def speaks_tls(endpoint: Endpoint, timeout: float) -> bool | None:
    """Does the endpoint answer a TLS handshake (certificate not checked)? None when it cannot be reached."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    end = time.monotonic() + timeout
    try:
        sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
    except OSError:
        return None
    try:
        sock.settimeout(max(0.01, end - time.monotonic()))  # the handshake gets what the dial left
        with ctx.wrap_socket(sock, server_hostname=endpoint.host):
            return True
    except ssl.SSLError:
        return False
    except OSError:
        return None
    finally:
        sock.close()


def short(details: str) -> str:
    """grpc's error text on one line, without its preamble: what a person needs to read."""
    return " ".join(_tail(details).split())


def _tail(details: str) -> str:
    """The informative end of grpc's text: after its 'last error:' preamble and the address."""
    text = details.split("last error:", 1)[-1].strip()
    return text.split(": ", 2)[-1] if text.count(": ") >= 2 else text
