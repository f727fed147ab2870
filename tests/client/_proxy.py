"""A real HTTP proxy for the proxy tests: CONNECT tunnels on loopback (what urllib3 asks of a proxy for an
``https://`` target), optionally spoken to over TLS (an ``https://`` proxy), counting what it tunnels."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading


class ConnectProxy:
    """``ConnectProxy()`` (plain) or ``ConnectProxy(ssl_context)`` (TLS to its clients); ``url``, ``tunnels``."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._tls = tls
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self._server.getsockname()[1]}"
        self.tunnels: list[str] = []  # the CONNECT targets, in order
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name="test-proxy", daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        self._server.close()

    def __enter__(self) -> ConnectProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.ExitStack() as stack:
            stack.callback(conn.close)
            try:
                client: socket.socket = self._tls.wrap_socket(conn, server_side=True) if self._tls else conn
            except (ssl.SSLError, OSError):  # a client that does not trust our certificate
                return
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            line = head.split(b"\r\n", 1)[0].decode()
            verb, target, _ = line.split(" ", 2)
            if verb != "CONNECT":
                client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            host, port = target.rsplit(":", 1)
            try:
                upstream = socket.create_connection((host, int(port)), timeout=5)
            except OSError:
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            stack.callback(upstream.close)
            upstream.settimeout(None)
            self.tunnels.append(target)
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            t = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
            t.start()
            _pipe(client, upstream)
            t.join(5)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
