"""Small shared pieces of the test bed: errors, binaries, ports, polling."""

from __future__ import annotations

import os
import random
import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class HarnessError(RuntimeError):
    """The test bed could not do what was asked (a server would not start, a fault failed…)."""


class BinaryNotFoundError(HarnessError):
    """A server binary (etcd, toxiproxy…) is neither built nor on PATH."""


class WaitAborted(HarnessError):
    """Raised by a probe to end a :func:`wait_until` at once (the awaited thing cannot happen)."""


class PortInUseError(HarnessError):
    """A port the test bed was told to use is already taken."""


def cache_dir() -> Path:
    """Where tools/build-servers.sh keeps built binaries (same rule as the script)."""
    explicit = os.environ.get("RESILIENT_ETCD_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "resilient-etcd"


def find_binary(name: str) -> str:
    """Locate ``name``: $RESILIENT_ETCD_BIN_DIR, then the build cache, then PATH."""
    candidates = []
    if os.environ.get("RESILIENT_ETCD_BIN_DIR"):
        candidates.append(Path(os.environ["RESILIENT_ETCD_BIN_DIR"]) / name)
    candidates.append(cache_dir() / "bin" / name)
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    on_path = shutil.which(name)
    if on_path:
        return on_path
    looked = ", ".join(str(c) for c in candidates)
    raise BinaryNotFoundError(
        f"{name} not found (looked in {looked} and on PATH); build it with `make servers` "
        "(tools/build-servers.sh, needs Go) or point RESILIENT_ETCD_BIN_DIR at a directory holding it"
    )


_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago, below the kernel's ephemeral range.

    A port the kernel picks for ``bind(0)`` is an ephemeral one: any outgoing connection (the
    apiserver's own connections to etcd, for one) may take it before our server binds it, and the
    server dies with "address already in use". Ports below the range are never given to outgoing
    connections; a port handed out here is not handed out again soon in this process.
    """
    high = _ephemeral_low()
    low = max(1024, high - 12000)
    with _ports_lock:
        if len(_handed_out) > (high - low) // 2:
            _handed_out.clear()  # the oldest servers are long gone; a bind check still guards reuse
    for _ in range(200):
        port = random.randrange(low, high)
        with _ports_lock:
            if port in _handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise PortInUseError(f"no free port in {low}..{high - 1} on {host}")


def ensure_port_free(host: str, port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise PortInUseError(f"{what}: {host}:{port} is already in use ({exc.strerror})") from None


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.02,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns something truthy, or raise ``HarnessError`` after ``timeout``.

    ``probe`` may raise; the last exception is named in the error. A ``WaitAborted`` from the
    probe ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            result = probe()
            if result:
                return result
        except WaitAborted:
            raise  # the probe knows waiting is pointless (a process exited, …)
        except Exception as exc:
            last = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last!r})" if last else ""
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise HarnessError(f"timed out after {timeout:.1f} s waiting for {what}{detail}{extra}")
        time.sleep(interval)


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return f"--- last {min(lines, len(text))} lines of {path} ---\n" + "\n".join(text[-lines:])
