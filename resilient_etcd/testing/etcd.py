"""Real etcd members and clusters for tests, each client URL behind its own toxiproxy proxy."""

from __future__ import annotations

import contextlib
import secrets
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from resilient_etcd._proto import auth_pb2, rpc_pb2, rpc_pb2_grpc

if TYPE_CHECKING:
    from .tls import CertFiles

from ._procs import ProcessRegistry, ServerProcess
from ._support import HarnessError, WaitAborted, ensure_port_free, find_binary, free_port, log_tail, wait_until
from .netns import NetnsHost, VirtualIP
from .toxiproxy import Proxy, ToxiproxyServer

ROOT_PASSWORD_DEFAULT = "root-pw"
Metadata = tuple[tuple[str, str], ...]


class MemberStartError(WaitAborted):
    """An etcd member exited or never became ready; the message carries its log tail."""


class EtcdMember(ServerProcess):
    """One etcd process. Verbs: start/stop/kill/restart/pause/resume (+ drop/undrop in a namespace)."""

    def __init__(self, cluster: EtcdCluster, index: int, host: str, netns: NetnsHost | None) -> None:
        self.cluster = cluster
        self.index = index
        self.name = f"m{index}"
        self.label = f"etcd {self.name}"
        self.host = host
        self.netns = netns
        self.client_port = free_port() if netns is None else 2379
        self.peer_port = free_port() if netns is None else 2380
        self.data_dir = cluster.workdir / self.name
        self.log_path = cluster.workdir / f"{self.name}.log"
        self.proxy: Proxy | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.served_at: float | None = None
        self.initial_state = "new"  # "existing": added to a running cluster (EtcdCluster.add_member)

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"EtcdMember({self.name}, {self.direct_endpoint}, {state})"

    @property
    def scheme(self) -> str:
        """``https`` for a TLS cluster, else ``http``."""
        return "https" if self.cluster.tls else "http"

    @property
    def direct_endpoint(self) -> str:
        """``host:port`` of the member itself (no proxy)."""
        return f"{self.host}:{self.client_port}"

    @property
    def endpoint(self) -> str:
        """The address clients should use: through the proxy when proxied."""
        return self.proxy.address if self.proxy else self.direct_endpoint

    @property
    def netns_backend(self) -> tuple[str, int]:
        """(address, client port) of a member in a namespace, for :meth:`EtcdCluster.virtual_ip`."""
        return (self.host, self.client_port)

    @property
    def peer_url(self) -> str:
        """The member's raft peer URL."""
        return f"http://{self.host}:{self.peer_port}"

    def require_proxy(self) -> Proxy:
        """This member's toxiproxy proxy; a clear error when the cluster is not proxied."""
        if self.proxy is None:
            raise HarnessError(f"etcd {self.name} has no proxy: start the cluster with proxied=True")
        return self.proxy

    def _argv(self) -> list[str]:
        c = self.cluster
        client_url = f"{self.scheme}://{self.direct_endpoint}"
        argv = [
            c.etcd_binary or find_binary("etcd"),
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", c.initial_cluster,
            "--initial-cluster-state", self.initial_state,
            "--initial-cluster-token", c.token,
            "--log-level", "warn",
            "--auth-token-ttl", str(c.auth_token_ttl),
            *c.extra_args,
        ]
        if c.jwt_keys is not None:  # JWTs expire at their TTL whatever their use (simple tokens are extended)
            priv, pub = c.jwt_keys
            argv += ["--auth-token", f"jwt,pub-key={pub},priv-key={priv},sign-method=ES256,ttl={c.jwt_ttl}s"]
        if c.certs is not None:
            argv += ["--cert-file", str(c.certs.server_cert), "--key-file", str(c.certs.server_key)]
            if c.client_cert_auth:  # etcd verifies client certificates whenever a trusted CA is set
                argv += ["--trusted-ca-file", str(c.certs.ca), "--client-cert-auth"]
        return self.netns.command(argv) if self.netns else argv

    def start(self, wait: bool = True) -> None:
        """Start (or start again, same data dir and ports); with ``wait``, until it answers /readyz."""
        if self.is_running:
            return
        if self.netns is None:
            ensure_port_free(self.host, self.client_port, f"etcd {self.name} client port")
            ensure_port_free(self.host, self.peer_port, f"etcd {self.name} peer port")
        self.served_at = None
        with open(self.log_path, "ab") as log:
            self._proc = ProcessRegistry.spawn(self._argv(), stdout=log, stderr=log)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the member answers its readiness check; raises with its log tail otherwise."""
        def ready() -> bool:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise MemberStartError(f"etcd {self.name} exited with {code}\n{log_tail(self.log_path)}")
            return self.readyz()

        try:
            wait_until(ready, timeout=timeout, what=f"etcd {self.name} ready",
                       on_timeout=lambda: log_tail(self.log_path))
        except MemberStartError:
            raise
        except HarnessError as exc:
            raise MemberStartError(str(exc)) from None
        self.served_at = time.monotonic()

    def readyz(self, timeout: float = 0.5) -> bool:
        """True when the member's /readyz says ok (it serves linearizable requests); etcd 3.4, which
        has no /readyz, is asked /health."""
        ctx = self.cluster.ssl_context()
        for path in ("/readyz", "/health"):
            try:
                with urllib.request.urlopen(f"{self.scheme}://{self.direct_endpoint}{path}", timeout=timeout,
                                            context=ctx) as resp:
                    return bool(resp.status == 200)
            except urllib.error.HTTPError as e:
                if e.code != 404:
                    return False
            except OSError:
                return False
        return False

    def metric(self, name: str, timeout: float = 5.0) -> float:
        """The sum of every sample of Prometheus metric ``name`` on this member's ``/metrics``."""
        url = f"{self.scheme}://{self.direct_endpoint}/metrics"
        with urllib.request.urlopen(url, timeout=timeout, context=self.cluster.ssl_context()) as resp:
            text = resp.read().decode()
        total = 0.0
        for line in text.splitlines():
            head, _, value = line.rpartition(" ")
            if head == name or head.startswith(name + "{"):
                total += float(value)
        return total

    def restart(self, wait: bool = True) -> None:
        """kill -9, then start again on the same data directory and ports."""
        self.kill()
        self.start(wait=wait)

    def drop(self) -> None:
        """iptables DROP of client traffic, both ways, inside the member's namespace (S4)."""
        if self.netns is None:
            raise HarnessError("drop() needs a cluster started with netns=True")
        self.netns.drop(self.client_port)

    def reject(self) -> None:
        """ICMP port-unreachable for client traffic inside the member's namespace (undo: ``undrop()``)."""
        if self.netns is None:
            raise HarnessError("reject() needs a cluster started with netns=True")
        self.netns.reject(self.client_port)

    def undrop(self) -> None:
        """Remove every iptables rule of :meth:`drop` and :meth:`reject`."""
        if self.netns is None:
            raise HarnessError("undrop() needs a cluster started with netns=True")
        self.netns.undrop()

    def first_served(self, timeout: float = 30.0) -> float:
        """Poll with fresh connections until a linearizable Range succeeds; its ``time.monotonic()``.

        The reference point for "the client's first success after etcd serves again" (S1).
        """
        opts = [("grpc.use_local_subchannel_pool", 1)]
        req = rpc_pb2.RangeRequest(key=b"/")

        def serve() -> float | None:
            with grpc.insecure_channel(self.direct_endpoint, options=opts) as ch:
                try:
                    rpc_pb2_grpc.KVStub(ch).Range(req, timeout=0.2)
                except grpc.RpcError:
                    return None
            return time.monotonic()

        return wait_until(serve, timeout=timeout, what=f"etcd {self.name} to serve", interval=0.002)

    def channel(self) -> grpc.Channel:
        """A fresh raw gRPC channel straight to this member (no proxy), for harness checks."""
        return self.cluster.raw_channel(self.direct_endpoint)

    def status(self, timeout: float = 2.0) -> rpc_pb2.StatusResponse:
        """``Maintenance.Status`` of this member, straight over a fresh channel."""
        with self.channel() as ch:
            resp: rpc_pb2.StatusResponse = rpc_pb2_grpc.MaintenanceStub(ch).Status(
                rpc_pb2.StatusRequest(), timeout=timeout, metadata=self.cluster.auth_metadata(ch)
            )
            return resp


class EtcdCluster:
    """A real etcd cluster on loopback (or in network namespaces), as a context manager.

    Usage (docs/testing.md)::

        with EtcdCluster(size=3) as cluster:
            cluster.endpoints            # through toxiproxy
            cluster.members[0].require_proxy().blackhole()
            cluster.members[1].pause()
    """

    def __init__(
        self,
        size: int = 3,
        *,
        proxied: bool = True,
        auth: bool = False,
        tls: bool = False,
        client_cert_auth: bool = False,
        netns: bool = False,
        toxiproxy: ToxiproxyServer | None = None,
        auth_token_ttl: int = 300,
        jwt_ttl: int | None = None,
        etcd_binary: str | None = None,
        extra_args: tuple[str, ...] = (),
        start_timeout: float = 30.0,
    ) -> None:
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"EtcdCluster size must be a positive integer, got {size!r}")
        if client_cert_auth and not tls:
            raise ValueError("client_cert_auth=True needs tls=True")
        if auth_token_ttl < 1:
            raise ValueError(f"auth_token_ttl must be >= 1 second, got {auth_token_ttl}")
        self.size = size
        self.proxied = proxied
        self.auth = auth
        self.tls = tls
        self.client_cert_auth = client_cert_auth
        self.use_netns = netns
        if jwt_ttl is not None and (isinstance(jwt_ttl, bool) or not isinstance(jwt_ttl, int) or jwt_ttl < 1):
            raise ValueError(f"jwt_ttl must be a whole number of seconds >= 1, got {jwt_ttl!r}")
        self.auth_token_ttl = auth_token_ttl
        self.jwt_ttl = jwt_ttl
        self.etcd_binary = etcd_binary
        self.extra_args = tuple(extra_args)
        self.start_timeout = start_timeout
        self.token = "re-" + secrets.token_hex(4)
        self._tmp = tempfile.TemporaryDirectory(prefix="re-etcd-")
        self.workdir = Path(self._tmp.name)
        self._own_toxiproxy = toxiproxy is None and proxied
        self.toxiproxy = toxiproxy
        self.members: list[EtcdMember] = []
        self.hosts: list[NetnsHost] = []
        self.certs: CertFiles | None = None
        self.jwt_keys: tuple[Path, Path] | None = None
        self.root_password: str | None = None
        self._auth_tokens: dict[str, str] = {}
        self._vips: list[VirtualIP] = []
        self._started = False

    # ---- lifecycle ----
    def start(self) -> EtcdCluster:
        """Start every member (and its proxy); returns ``self``. Cleans up on failure."""
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        for i in range(self.size):
            host = "127.0.0.1"
            ns = None
            if self.use_netns:
                ns = NetnsHost().create()
                self.hosts.append(ns)
                host = ns.address
            self.members.append(EtcdMember(self, i, host, ns))
        if self.jwt_ttl is not None:
            from .tls import make_jwt_keys  # cryptography: only for the clusters that need keys

            self.jwt_keys = make_jwt_keys(self.workdir / "jwt")
        if self.tls:
            ips = sorted({"127.0.0.1", *(m.host for m in self.members)})
            from .tls import make_certs

            self.certs = make_certs(self.workdir / "certs", ips)
        if self.proxied:
            if self.toxiproxy is None:
                self.toxiproxy = ToxiproxyServer().start()
            for m in self.members:
                m.proxy = self.toxiproxy.create_proxy(f"{self.token}-{m.name}", m.direct_endpoint)
        for m in self.members:
            m.start(wait=False)
        for m in self.members:
            m.wait_ready(timeout=self.start_timeout)
        self._started = True
        if self.auth:
            self.enable_auth("root", ROOT_PASSWORD_DEFAULT)

    def close(self) -> None:
        """Stop every member, proxy, namespace and virtual IP; remove the data."""
        for m in self.members:
            with contextlib.suppress(Exception):
                m.kill()
        if self.toxiproxy is not None:
            if self._own_toxiproxy:
                self.toxiproxy.close()
            else:
                for m in self.members:
                    if m.proxy:
                        with contextlib.suppress(Exception):
                            self.toxiproxy.request("DELETE", f"/proxies/{m.proxy.name}")
        for vip in self._vips:
            vip.remove()
        self._vips.clear()
        for h in self.hosts:
            h.destroy()
        self.hosts.clear()
        self._tmp.cleanup()

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- addresses ----
    @property
    def initial_cluster(self) -> str:
        """etcd's ``--initial-cluster`` value for this cluster."""
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def endpoints(self) -> list[str]:
        """host:port for each member, through its proxy when proxied."""
        return [m.endpoint for m in self.members]

    @property
    def direct_endpoints(self) -> list[str]:
        """Every member's own address, bypassing toxiproxy."""
        return [m.direct_endpoint for m in self.members]

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client SSL context trusting the cluster's CA (None without TLS)."""
        if self.certs is None:
            return None
        ctx = ssl.create_default_context(cafile=str(self.certs.ca))
        if self.client_cert_auth:
            ctx.load_cert_chain(str(self.certs.client_cert), str(self.certs.client_key))
        return ctx

    def raw_channel(self, endpoint: str) -> grpc.Channel:
        """A fresh raw gRPC channel to ``endpoint`` with the cluster's TLS settings."""
        if self.certs is None:
            return grpc.insecure_channel(endpoint)
        creds = grpc.ssl_channel_credentials(
            root_certificates=self.certs.ca.read_bytes(),
            private_key=self.certs.client_key.read_bytes() if self.client_cert_auth else None,
            certificate_chain=self.certs.client_cert.read_bytes() if self.client_cert_auth else None,
        )
        return grpc.secure_channel(endpoint, creds)

    def auth_metadata(self, channel: grpc.Channel) -> Metadata:
        """``token`` metadata for raw harness calls once auth is on (root user)."""
        if self.root_password is None:
            return ()
        resp = rpc_pb2_grpc.AuthStub(channel).Authenticate(
            rpc_pb2.AuthenticateRequest(name="root", password=self.root_password), timeout=5
        )
        return (("token", resp.token),)

    # ---- cluster verbs ----
    def running_members(self) -> list[EtcdMember]:
        """The members whose process is running."""
        return [m for m in self.members if m.is_running]

    def leader(self, timeout: float = 10.0) -> EtcdMember:
        """The member that currently leads (waits for an election to settle)."""

        def find() -> EtcdMember | None:
            for m in self.running_members():
                with contextlib.suppress(grpc.RpcError):
                    st = m.status(timeout=0.5)
                    if st.leader and st.leader == st.header.member_id:
                        return m
            return None

        return wait_until(find, timeout=timeout, what="an etcd leader")

    def move_leader(self, target: EtcdMember, timeout: float = 10.0) -> None:
        """Hand leadership to ``target`` (``Maintenance.MoveLeader`` on the current leader)."""
        leader = self.leader(timeout=timeout)
        if leader is target:
            return
        target_id = target.status(timeout=timeout).header.member_id
        with leader.channel() as ch:
            rpc_pb2_grpc.MaintenanceStub(ch).MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=target_id),
                                                        timeout=timeout, metadata=self.auth_metadata(ch))

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every running member is ready and a leader is elected."""
        for m in self.members:
            if m.is_running:
                m.wait_ready(timeout=timeout)

    @contextlib.contextmanager
    def _client(self, member: EtcdMember | None = None) -> Iterator[tuple[grpc.Channel, Metadata]]:
        m = member or self.running_members()[0]
        with m.channel() as ch:
            yield ch, self.auth_metadata(ch)

    def compact(self, revision: int, physical: bool = True) -> None:
        """Compact the history up to ``revision`` (physically by default)."""
        with self._client() as (ch, md):
            rpc_pb2_grpc.KVStub(ch).Compact(
                rpc_pb2.CompactionRequest(revision=revision, physical=physical), timeout=10, metadata=md
            )

    def revision(self) -> int:
        """The cluster's current revision."""
        with self._client() as (ch, md):
            resp = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"\0", count_only=True),
                                                 timeout=5, metadata=md)
            return int(resp.header.revision)

    def add_member(self, timeout: float = 30.0) -> EtcdMember:
        """Add a member to the running cluster (etcd's ``MemberAdd``, then start it with
        ``--initial-cluster-state existing``), behind its own proxy when proxied; returns it once ready."""
        if self.use_netns:
            raise HarnessError("add_member is not supported for clusters in network namespaces")
        index = max((m.index for m in self.members), default=-1) + 1
        m = EtcdMember(self, index, "127.0.0.1", None)
        m.initial_state = "existing"

        def member_add() -> bool:
            with self._client() as (ch, md):
                try:
                    rpc_pb2_grpc.ClusterStub(ch).MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[m.peer_url]),
                                                           timeout=10, metadata=md)
                except grpc.RpcError as e:
                    # etcd refuses a voting member until every member has been connected for a while
                    if "unhealthy cluster" in (e.details() or ""):
                        return False
                    raise
            return True

        wait_until(member_add, timeout=timeout, what=f"etcd to accept a new member {m.name}")
        self.members.append(m)  # initial_cluster now names it
        if self.proxied and self.toxiproxy is not None:
            m.proxy = self.toxiproxy.create_proxy(f"{self.token}-{m.name}", m.direct_endpoint)
        m.start(wait=False)
        m.wait_ready(timeout=timeout)
        self.size = len(self.members)
        return m

    def remove_member(self, member: EtcdMember) -> None:
        """Remove ``member`` from the cluster (``MemberRemove`` through another member) and stop it."""
        member_id = member.status().header.member_id
        other = next(m for m in self.running_members() if m is not member)
        with self._client(other) as (ch, md):
            rpc_pb2_grpc.ClusterStub(ch).MemberRemove(rpc_pb2.MemberRemoveRequest(ID=member_id), timeout=10,
                                                      metadata=md)
        with contextlib.suppress(Exception):
            member.kill()
        self.members.remove(member)
        self.size = len(self.members)
        if member.proxy is not None and self.toxiproxy is not None:
            with contextlib.suppress(Exception):
                self.toxiproxy.request("DELETE", f"/proxies/{member.proxy.name}")

    def stop_quorum(self) -> list[EtcdMember]:
        """Stop a majority so the rest have no quorum; returns the stopped members.

        The first ``size // 2`` members stay up (member 0 among them), so a client pinned to
        member 0 sees a live member without a leader (scenario S9).
        """
        if self.size < 3 or self.size % 2 == 0:
            raise ValueError(
                f"stop_quorum needs an odd cluster size >= 3 (got {self.size}): with one member there is "
                "nothing left running, and with an even size pick the members to stop yourself"
            )
        keep = self.size // 2  # one short of quorum
        stopped = self.members[keep:]
        for m in stopped:
            m.stop()
        return stopped

    def restore_quorum(self, timeout: float = 30.0) -> None:
        """Start every stopped member and wait until the cluster is healthy again."""
        for m in self.members:
            m.start(wait=False)
        self.wait_healthy(timeout)

    def enable_auth(self, user: str = "root", password: str = ROOT_PASSWORD_DEFAULT) -> None:
        """Create ``root`` (and ``user`` with read-write on every key), then turn auth on."""
        if not password:
            raise ValueError("enable_auth needs a non-empty password")
        with self.members[0].channel() as ch:
            auth = rpc_pb2_grpc.AuthStub(ch)
            auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="root", password=password), timeout=10)
            auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"), timeout=10)
            if user != "root":
                auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name=user), timeout=10)
                perm = auth_pb2.Permission(
                    permType=auth_pb2.Permission.READWRITE, key=b"\0", range_end=b"\0"
                )
                auth.RoleGrantPermission(
                    rpc_pb2.AuthRoleGrantPermissionRequest(name=user, perm=perm), timeout=10
                )
                auth.UserAdd(rpc_pb2.AuthUserAddRequest(name=user, password=password), timeout=10)
                auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user=user, role=user), timeout=10)
            auth.AuthEnable(rpc_pb2.AuthEnableRequest(), timeout=10)
        self.root_password = password

    def virtual_ip(self, member: EtcdMember | None = None, port: int = 2379) -> VirtualIP:
        """A kube-proxy-like virtual address in front of ``member`` (default member 0); needs netns=True.

        Removed when the cluster closes. ``vip.move_to(other.netns_backend)`` strands open flows (S5).
        """
        target = member or self.members[0]
        if target.netns is None:
            raise HarnessError("virtual_ip() needs a cluster started with netns=True")
        vip = VirtualIP(port, target.netns_backend, dev=target.netns.host_if).install()
        self._vips.append(vip)
        return vip

    def heal_all(self) -> None:
        """Every member running and resumed, every proxy healed, every namespace rule removed."""
        for m in self.members:
            m.resume()
            if m.proxy:
                m.proxy.heal()
            if m.netns:
                m.undrop()
        for m in self.members:
            m.start(wait=False)
        self.wait_healthy()

    def reset(self) -> None:
        """Fast reset between tests: heal everything and delete every key."""
        self.heal_all()
        with self._client() as (ch, md):
            everything = rpc_pb2.DeleteRangeRequest(key=b"\0", range_end=b"\0")
            rpc_pb2_grpc.KVStub(ch).DeleteRange(everything, timeout=10, metadata=md)
