"""A toxiproxy server we start, and the fault verbs we apply through it.

We talk to toxiproxy's HTTP API directly rather than through ``toxiproxy-python``
0.1.1: that client keeps the server address in class attributes (two servers in
one process clobber each other), sets no request timeout (a hung toxiproxy would
hang the test), lets 5xx answers pass as success and needs the ``future`` package.
The API is a handful of JSON calls, so the adapter below is the smallest that
does the job with errors that say what failed.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ._procs import ProcessRegistry
from ._support import HarnessError, WaitAborted, find_binary, free_port, log_tail, wait_until


class ToxiproxyError(HarnessError):
    """toxiproxy answered with an error, or not at all."""


class ToxiproxyExited(ToxiproxyError, WaitAborted):
    """The toxiproxy process is gone."""


class ToxiproxyServer:
    """A ``toxiproxy-server`` on a free loopback port; a context manager.

    Usage::

        with ToxiproxyServer() as tp:
            p = tp.create_proxy("db", upstream="127.0.0.1:2379")
            p.blackhole()
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, request_timeout: float = 5.0):
        self.host = host
        self.port = port or free_port(host)
        self.request_timeout = request_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="re-toxiproxy-")
        self.log_path = Path(self._tmp.name) / "toxiproxy.log"
        self.proxies: dict[str, Proxy] = {}

    @property
    def url(self) -> str:
        """The toxiproxy HTTP API's base URL."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> ToxiproxyServer:
        """Start toxiproxy-server and wait for its API; returns ``self``."""
        binary = find_binary("toxiproxy-server")
        with open(self.log_path, "wb") as log:
            self._proc = ProcessRegistry.spawn(
                [binary, "-host", self.host, "-port", str(self.port)], stdout=log, stderr=log
            )
        wait_until(
            lambda: self._alive() and self.request("GET", "/version"),
            timeout=10,
            what=f"toxiproxy on {self.url}",
            on_timeout=lambda: log_tail(self.log_path),
        )
        return self

    def _alive(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise ToxiproxyExited(f"toxiproxy exited with {self._proc.returncode}\n{log_tail(self.log_path)}")
        return True

    def stop(self) -> None:
        """Stop toxiproxy-server."""
        if self._proc is not None:
            ProcessRegistry.terminate(self._proc)
            self._proc = None
        self.proxies.clear()

    def close(self) -> None:
        """Remove every proxy and stop the server."""
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> ToxiproxyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One API request (with a timeout); raises ToxiproxyError on any non-2xx answer."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.request_timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace").strip()
            raise ToxiproxyError(f"toxiproxy {method} {path}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ToxiproxyError(f"toxiproxy {method} {path}: {exc}") from None
        return json.loads(raw) if raw.strip() else True

    def create_proxy(self, name: str, upstream: str, listen_port: int | None = None) -> Proxy:
        """A proxy on a fixed port (so disabling and enabling it keeps the address)."""
        port = listen_port or free_port(self.host)
        self.request(
            "POST", "/proxies", {"name": name, "listen": f"{self.host}:{port}", "upstream": upstream}
        )
        proxy = Proxy(self, name, self.host, port, upstream)
        self.proxies[name] = proxy
        return proxy

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        self.request("POST", "/reset")


class Proxy:
    """One toxiproxy proxy and the faults it can inject. Verbs apply to open connections too."""

    def __init__(self, server: ToxiproxyServer, name: str, host: str, port: int, upstream: str):
        self.server, self.name, self.host, self.port, self.upstream = server, name, host, port, upstream

    @property
    def address(self) -> str:
        """``host:port`` clients dial to go through this proxy."""
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"Proxy({self.name!r}, {self.address} -> {self.upstream})"

    def _toxic(self, kind: str, *, both_ways: bool = True, **attributes: float) -> None:
        streams = ("downstream", "upstream") if both_ways else ("downstream",)
        for stream in streams:
            self.server.request(
                "POST",
                f"/proxies/{self.name}/toxics",
                {"name": f"{kind}_{stream}", "type": kind, "stream": stream, "toxicity": 1.0,
                 "attributes": attributes},
            )

    def toxics(self) -> list[dict[str, Any]]:
        """The toxics active on this proxy, as toxiproxy reports them."""
        result: list[dict[str, Any]] = self.server.request("GET", f"/proxies/{self.name}/toxics")
        return result

    def blackhole(self) -> None:
        """Swallow all data both ways and never close (``timeout`` toxic, timeout 0): scenario S3."""
        self._toxic("timeout", timeout=0)

    def latency(self, ms: int, jitter: int = 0) -> None:
        """Delay data each way by ``ms`` ± ``jitter`` milliseconds (S6)."""
        self._toxic("latency", latency=ms, jitter=jitter)

    def bandwidth(self, kbps: int) -> None:
        """Limit each direction to ``kbps`` kilobytes per second (S7)."""
        self._toxic("bandwidth", rate=kbps)

    def reset_peer(self, after_ms: int = 0) -> None:
        """Reset connections with RST after ``after_ms`` (S8)."""
        self._toxic("reset_peer", both_ways=False, timeout=after_ms)

    def slow_close(self, ms: int) -> None:
        """Delay the close of connections by ``ms`` (S8)."""
        self._toxic("slow_close", both_ways=False, delay=ms)

    def limit_data(self, nbytes: int) -> None:
        """Close each connection after ``nbytes`` bytes (S8)."""
        self._toxic("limit_data", both_ways=False, bytes=nbytes)

    def cut(self) -> None:
        """Disable the proxy: open connections close, new ones are refused."""
        self.server.request("POST", f"/proxies/{self.name}", {"enabled": False})

    def heal(self) -> None:
        """Remove every toxic and enable the proxy."""
        for toxic in self.toxics():
            self.server.request("DELETE", f"/proxies/{self.name}/toxics/{toxic['name']}")
        self.server.request("POST", f"/proxies/{self.name}", {"enabled": True})
