"""L3 faults: test hosts in network namespaces, iptables DROP, and a movable virtual IP.

Each :class:`NetnsHost` is a namespace joined to the root namespace by a veth
pair on its own /30 in 10.213.0.0/16 (addresses exist only inside the
namespaces we create). The root namespace routes between hosts, so etcd
members in different namespaces form a cluster and a client in the root
namespace reaches each member at its own address.

:class:`VirtualIP` plays kube-proxy: a DNAT rule sends new connections for a
virtual address to one backend; :meth:`VirtualIP.move_to` points new flows at
another backend and blackholes the flows already established to the old one —
the stale cluster-IP mapping of the incident (scenario S5).

Needs root, iproute2 and iptables (installed by ``make deps``).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import threading

from ._support import HarnessError

_counter = itertools.count()
_lock = threading.Lock()
_PREFIX = "re-"


def netns_available() -> str | None:
    """None when namespaces can be used here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iproute2 iptables)"
    return None


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise HarnessError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale() -> list[str]:
    """Delete namespaces (and so their veths) left by test processes that died without cleaning up."""
    removed = []
    out = _run("ip", "netns", "list", check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.strip() else ""
        if not name.startswith(_PREFIX):
            continue
        try:
            pid = int(name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if not _pid_alive(pid):
            _run("ip", "netns", "del", name, check=False)
            removed.append(name)
    return removed


def leftover_namespaces() -> list[str]:
    """This process's namespaces that still exist (for leak checks)."""
    out = _run("ip", "netns", "list", check=False).stdout
    mine = f"{_PREFIX}{os.getpid()}-"
    return [line.split()[0] for line in out.splitlines() if line.startswith(mine)]


class NetnsHost:
    """A network namespace with one address, reachable from the root namespace."""

    def __init__(self) -> None:
        reason = netns_available()
        if reason:
            raise HarnessError(reason)
        with _lock:
            k = next(_counter)
        pid = os.getpid()
        slot = (pid * 7 + k) % 250
        self.name = f"{_PREFIX}{pid}-{k}"
        self.host_if = f"rh{pid % 100000}x{k}"[:15]
        self.ns_if = "eth0"
        self.gateway = f"10.213.{slot}.1"
        self.address = f"10.213.{slot}.2"
        self._up = False

    def create(self) -> NetnsHost:
        """Create the namespace and its veth pair; returns ``self``."""
        _run("ip", "netns", "add", self.name)
        try:
            _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", f"{self.host_if}p")
            _run("ip", "link", "set", f"{self.host_if}p", "netns", self.name)
            self.exec("ip", "link", "set", f"{self.host_if}p", "name", self.ns_if)
            _run("ip", "addr", "add", f"{self.gateway}/30", "dev", self.host_if)
            _run("ip", "link", "set", self.host_if, "up")
            self.exec("ip", "link", "set", "lo", "up")
            self.exec("ip", "addr", "add", f"{self.address}/30", "dev", self.ns_if)
            self.exec("ip", "link", "set", self.ns_if, "up")
            self.exec("ip", "route", "add", "default", "via", self.gateway)
            with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
                f.write("1")
        except BaseException:
            self.destroy()
            raise
        self._up = True
        return self

    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace (raises on failure)."""
        return _run("ip", "netns", "exec", self.name, *argv, check=check)

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` wrapped to run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def drop(self, port: int | None = None) -> None:
        """iptables DROP inside the namespace, both ways: everything, or only TCP ``port`` (S4)."""
        match = ["-p", "tcp", "--dport", str(port)] if port else []
        back = ["-p", "tcp", "--sport", str(port)] if port else []
        self.exec("iptables", "-A", "INPUT", *match, "-j", "DROP")
        self.exec("iptables", "-A", "OUTPUT", *back, "-j", "DROP")

    def reject(self, port: int) -> None:
        """Answer TCP ``port``'s incoming packets with ICMP port-unreachable and drop its replies: an
        established connection's sender then sees "connection refused" when its timer fires."""
        self.exec("iptables", "-A", "INPUT", "-p", "tcp", "--dport", str(port), "-j", "REJECT",
                  "--reject-with", "icmp-port-unreachable")
        self.exec("iptables", "-A", "OUTPUT", "-p", "tcp", "--sport", str(port), "-j", "DROP")

    def undrop(self) -> None:
        """Flush the namespace's INPUT and OUTPUT rules (undoes drop and reject)."""
        self.exec("iptables", "-F", "INPUT")
        self.exec("iptables", "-F", "OUTPUT")

    def destroy(self) -> None:
        """Delete the namespace and its veth pair."""
        _run("ip", "netns", "del", self.name, check=False)
        _run("ip", "link", "del", self.host_if, check=False)
        self._up = False


class VirtualIP:
    """A virtual address DNATed (root namespace, nat OUTPUT) to one backend at a time."""

    def __init__(self, port: int, backend: tuple[str, int], dev: str) -> None:
        reason = netns_available()
        if reason:
            raise HarnessError(reason)
        with _lock:
            k = next(_counter)
        self.address = f"10.213.251.{1 + (os.getpid() * 3 + k) % 250}"
        self.port = port
        self.chain = f"RE{os.getpid() % 1000000}V{k}"[:28]
        self.backend = backend
        self.dev = dev
        self._installed = False

    @property
    def endpoint(self) -> str:
        """``address:port`` clients dial."""
        return f"{self.address}:{self.port}"

    def _dnat(self, action: str, backend: tuple[str, int]) -> None:
        _run("iptables", "-t", "nat", action, "OUTPUT", "-d", self.address, "-p", "tcp",
             "--dport", str(self.port), "-j", "DNAT", "--to-destination", f"{backend[0]}:{backend[1]}")

    def install(self) -> VirtualIP:
        """Install the DNAT rule to the current backend; returns ``self``."""
        # a route only so the kernel picks a source address; DNAT then re-routes to the backend
        _run("ip", "route", "replace", f"{self.address}/32", "dev", self.dev)
        _run("iptables", "-N", self.chain)
        _run("iptables", "-I", "OUTPUT", "-j", self.chain)
        _run("iptables", "-I", "INPUT", "-j", self.chain)
        self._dnat("-A", self.backend)
        self._installed = True
        return self

    def move_to(self, backend: tuple[str, int]) -> None:
        """New flows go to ``backend``; flows already established to the old backend go silent."""
        old = self.backend
        self._dnat("-D", old)
        self._dnat("-A", backend)
        ct = ["-m", "conntrack", "--ctorigdst", self.address, "--ctorigdstport", str(self.port)]
        # match the old backend's port too: the new backend may share its address (two servers on loopback)
        _run("iptables", "-A", self.chain, "-d", old[0], "-p", "tcp", "--dport", str(old[1]), *ct, "-j", "DROP")
        _run("iptables", "-A", self.chain, "-s", old[0], "-p", "tcp", "--sport", str(old[1]), *ct, "-j", "DROP")
        self.backend = backend

    def remove(self) -> None:
        """Remove every rule this virtual IP installed."""
        if not self._installed:
            return
        self._dnat("-D", self.backend)
        _run("iptables", "-D", "OUTPUT", "-j", self.chain, check=False)
        _run("iptables", "-D", "INPUT", "-j", self.chain, check=False)
        _run("iptables", "-F", self.chain, check=False)
        _run("iptables", "-X", self.chain, check=False)
        _run("ip", "route", "del", f"{self.address}/32", check=False)
        self._installed = False
