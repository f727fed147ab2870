"""A real kube-apiserver for tests, on an :class:`EtcdCluster`, behind its own toxiproxy proxy.

Built from the Go module proxy by ``tools/build-servers.sh --kube`` (a wrapper module pins
k8s.io/kubernetes and every staging module). It serves TLS on loopback with certificates made
here, accepts two static bearer tokens (``admin`` in ``system:masters``, and ``limited`` with no
groups, for RBAC and API Priority and Fairness tests), writes a kubeconfig, and has the same
process verbs as an etcd member (kill/start/restart/pause/resume) plus its proxy's network verbs.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import ssl
import subprocess
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ._procs import ProcessRegistry, ServerProcess
from ._support import HarnessError, WaitAborted, find_binary, free_port, log_tail, wait_until
from .etcd import EtcdCluster
from .toxiproxy import Proxy, ToxiproxyServer

if TYPE_CHECKING:
    from .netns import NetnsHost
    from .tls import CertFiles


class SilencedFlow:
    """One TCP flow to an etcd member DROPped both ways in the member's namespace (see
    :meth:`KubeApiServer.silence_resource`); :meth:`restore` removes exactly these rules."""

    def __init__(self, netns: NetnsHost, port: int) -> None:
        self.netns = netns
        self.port = port  # the apiserver's side of the connection
        self._rules = (["INPUT", "-p", "tcp", "--sport", str(port), "-j", "DROP"],
                       ["OUTPUT", "-p", "tcp", "--dport", str(port), "-j", "DROP"])

    def install(self) -> SilencedFlow:
        for rule in self._rules:
            self.netns.exec("iptables", "-A", *rule)
        return self

    def restore(self) -> None:
        for rule in self._rules:
            self.netns.exec("iptables", "-D", *rule, check=False)

    def __enter__(self) -> SilencedFlow:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


class ApiServerStartError(WaitAborted):
    """kube-apiserver exited or never became ready; the message carries its log tail."""


class KubeApiServer(ServerProcess):
    """``with KubeApiServer(etcd_cluster) as api: api.kubeconfig`` — see the module docstring."""

    def __init__(self, etcd: EtcdCluster, *, toxiproxy: ToxiproxyServer | None = None,
                 extra_args: tuple[str, ...] = (), start_timeout: float = 90.0,
                 peer: KubeApiServer | None = None) -> None:
        """``peer``: another apiserver of the same cluster whose certificates and token to share (HA)."""
        self.etcd = etcd
        self.label = "kube-apiserver"
        self.toxiproxy = toxiproxy
        self.extra_args = tuple(extra_args)
        self.start_timeout = start_timeout
        self.port = free_port()
        self.token: str = peer.token if peer else secrets.token_hex(16)
        self.limited_token: str = peer.limited_token if peer else secrets.token_hex(16)
        self._tmp = tempfile.TemporaryDirectory(prefix="re-kube-")
        self.dir = Path(self._tmp.name)
        self.log_path = self.dir / "kube-apiserver.log"
        self.proxy: Proxy | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._argv: list[str] | None = None
        from .tls import make_certs  # cryptography (the testing extra): imported when a server is made

        self.certs: CertFiles = peer.certs if peer else make_certs(self.dir / "certs", ["127.0.0.1"], client_cn="admin")

    @property
    def direct_url(self) -> str:
        """The apiserver's own URL (no proxy)."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Through the proxy when there is one."""
        return f"https://{self.proxy.address}" if self.proxy else self.direct_url

    def _write_files(self) -> list[str]:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_path = self.dir / "sa.key"
        key_path.write_bytes(sa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
        tokens = self.dir / "tokens.csv"
        tokens.write_text(f'{self.token},admin,admin-uid,"system:masters"\n'
                          f'{self.limited_token},limited,limited-uid\n')
        return [
            find_binary("kube-apiserver"),
            f"--etcd-servers={','.join('http://' + e for e in self.etcd.direct_endpoints)}",
            "--bind-address=127.0.0.1", f"--secure-port={self.port}",
            f"--tls-cert-file={self.certs.server_cert}", f"--tls-private-key-file={self.certs.server_key}",
            f"--client-ca-file={self.certs.ca}",
            f"--token-auth-file={tokens}",
            f"--service-account-key-file={key_path}", f"--service-account-signing-key-file={key_path}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--service-cluster-ip-range=10.96.0.0/24",
            "--authorization-mode=RBAC",
            f"--cert-dir={self.dir / 'generated'}",
            "--v=1",
            *self.extra_args,
        ]

    def start(self) -> KubeApiServer:
        """Start the apiserver and wait until ``/readyz`` answers; returns ``self``."""
        if self.toxiproxy is not None and self.proxy is None:
            self.proxy = self.toxiproxy.create_proxy(f"kube-{self.port}", f"127.0.0.1:{self.port}")
        if self._argv is None:
            self._argv = self._write_files()
        argv = self._argv
        with open(self.log_path, "ab") as log:
            self._proc = ProcessRegistry.spawn(argv, stdout=log, stderr=log)
        self.wait_ready()
        return self

    def readyz(self, timeout: float = 1.0) -> bool:
        """True when ``/readyz`` answers 200 within ``timeout``."""
        ctx = ssl.create_default_context(cafile=str(self.certs.ca))
        req = urllib.request.Request(self.direct_url + "/readyz", headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def wait_ready(self) -> None:
        """Wait until ``/readyz`` answers; raises with the log tail otherwise."""
        def ready() -> bool:
            if self._proc is None or self._proc.poll() is not None:
                raise ApiServerStartError(f"kube-apiserver exited\n{log_tail(self.log_path)}")
            return self.readyz()

        wait_until(ready, timeout=self.start_timeout, what="kube-apiserver /readyz", interval=0.2,
                   on_timeout=lambda: log_tail(self.log_path))

    def kubeconfig(self, path: Path | None = None, *, direct: bool = False, user: str = "admin") -> Path:
        """Write a kubeconfig (JSON is valid YAML) for ``user``; returns its path.

        ``admin`` and ``limited`` authenticate with their bearer tokens; ``admin-cert`` with the client
        certificate (user ``admin``, no groups: grant it RBAC before use)."""
        if user not in ("admin", "limited", "admin-cert"):
            raise HarnessError(f"unknown test user {user!r}: admin, limited or admin-cert")
        target = path or self.dir / (f"kubeconfig-{user}" + ("-direct" if direct else ""))
        server = self.direct_url if direct else self.url
        creds: dict[str, str] = (
            {"client-certificate": str(self.certs.client_cert), "client-key": str(self.certs.client_key)}
            if user == "admin-cert" else {"token": self.token if user == "admin" else self.limited_token})
        cfg = {
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": server,
                                                      "certificate-authority": str(self.certs.ca)}}],
            "users": [{"name": user, "user": creds}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
        }
        target.write_text(json.dumps(cfg, indent=1))
        target.chmod(0o600)
        return target

    def restart(self) -> None:
        """kill -9, then start again."""
        self.kill()
        self.start()

    def require_proxy(self) -> Proxy:
        """The apiserver's toxiproxy proxy."""
        if self.proxy is None:
            raise HarnessError("this kube-apiserver has no proxy: pass toxiproxy=")
        return self.proxy

    def etcd_flows(self) -> dict[int, tuple[str, int]]:
        """This apiserver's TCP connections to etcd: ``{local port: (member address, bytes it sent)}``."""
        assert self._proc is not None, "the apiserver is not running"
        members = {m.direct_endpoint for m in self.etcd.members}
        out = subprocess.run(["ss", "-tinpH", "state", "established"], capture_output=True, text=True,
                             check=True).stdout.splitlines()
        flows: dict[int, tuple[str, int]] = {}
        for head, info in zip(out[::2], out[1::2], strict=False):
            fields = head.split()
            if len(fields) < 4 or f"pid={self._proc.pid}," not in head or fields[3] not in members:
                continue
            sent = next((int(f.split(":")[1]) for f in info.split() if f.startswith("bytes_acked:")), 0)
            flows[int(fields[2].rsplit(":", 1)[1])] = (fields[3], sent)
        return flows

    def silence_resource(self, traffic: Callable[[], object]) -> SilencedFlow:
        """The incident: one resource's etcd connection of this apiserver goes silent, nothing else does.

        kube-apiserver keeps one etcd client — one TCP connection per member — for each resource.
        ``traffic()`` writes that resource through this apiserver; the connection whose sent bytes grow
        the most meanwhile is the resource's, and it is DROPped both ways inside the member's network
        namespace (the cluster must be started with ``netns=True``). ``/readyz`` and every other resource
        stay fine. The apiserver's own etcd client notices after its TCP_USER_TIMEOUT (~10 s) and
        redials on a new port, which is not silenced (in the incident a kernel bug kept that timer from
        firing for hours). Undo with :meth:`SilencedFlow.restore` (or ``with``)."""
        before = self.etcd_flows()
        traffic()
        after = self.etcd_flows()
        grown = {port: sent - before.get(port, (addr, 0))[1] for port, (addr, sent) in after.items()}
        if not grown or max(grown.values()) <= 0:
            raise HarnessError(f"no etcd connection of the apiserver carried the traffic: {after}")
        port = max(grown, key=lambda p: grown[p])
        address = after[port][0]
        member = next(m for m in self.etcd.members if m.direct_endpoint == address)
        if member.netns is None:
            raise HarnessError("silence_resource() needs an etcd cluster started with netns=True")
        return SilencedFlow(member.netns, port).install()

    def close(self) -> None:
        """Stop the apiserver and its proxy; remove its files."""
        self.kill()
        if self.proxy is not None and self.toxiproxy is not None:
            with contextlib.suppress(HarnessError):
                self.toxiproxy.request("DELETE", f"/proxies/{self.proxy.name}")
        self._tmp.cleanup()

    def __enter__(self) -> KubeApiServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
