"""``python -m resilient_etcd doctor --endpoints a:2379,b:2379 [--kubeconfig kc] [--json]``: one health line
per etcd member and per Kubernetes API server.

Each etcd endpoint is asked, on its own fresh connection and with a short deadline, for its status:
reachable, member id, leader, raft term, version, DB size, alarms, round-trip latency, whether
authentication works, and whether it answers an HTTP/2 PING (what gRPC keepalive relies on).

Each API server (the kubeconfig's, plus ``--apiservers``) is checked on its own connection:
``/readyz``, the protocol negotiated, an HTTP/2 PING round trip (the keepalive the client relies
on), and whether the kubeconfig's credentials are accepted (``GET /api``). With ``--resources
configmaps,pods,…``, each resource is LISTed (``limit=1``) on each API server: one resource slow or
failing on one API server while the others answer is the incident where that API server's etcd
connection for the resource hung, which ``/readyz`` does not show.

Exit status 0 when everything is healthy, 1 when anything is not, 2 on bad arguments — so it can
gate a deploy or a readiness probe.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from . import exceptions
from ._proto import rpc_pb2
from .client import Etcd3Client
from .policies import RetryPolicy
from .transport.endpoints import parse_endpoint


@dataclass
class Report:
    endpoint: str
    healthy: bool
    reachable: bool
    latency_ms: float | None = None
    member_id: str | None = None
    is_leader: bool | None = None
    has_leader: bool | None = None
    raft_term: int | None = None
    version: str | None = None
    db_size: int | None = None
    alarms: list[str] | None = None
    auth: str | None = None
    keepalive_ok: bool | None = None         # one HTTP/2 PING on a fresh connection: acked? (None: not checked)
    keepalive_ms: float | None = None        # its round trip
    keepalive_error: str | None = None
    error: str | None = None


def keepalive_check(endpoint: str, timeout: float, ca_cert: str | None, cert_key: str | None,
                    cert_cert: str | None) -> tuple[bool | None, float | None, str | None]:
    """One HTTP/2 PING on a fresh connection: what the client's keepalive relies on.

    Returns (answered, round trip in ms, error); ``answered`` is None when it could not be checked."""
    try:
        from .kube.h2pool import H2Connection
    except ImportError:
        return None, None, "not checked (needs the kube extra: h2)"
    import ssl

    ep = parse_endpoint(endpoint)
    ctx: ssl.SSLContext | None = None
    # the same rule as the client's own (TlsConfig.from_files): any certificate file means TLS
    if ep.secure or (ep.secure is None and (ca_cert or cert_cert or cert_key)):
        ctx = ssl.create_default_context(cafile=ca_cert)
        if cert_cert:
            ctx.load_cert_chain(cert_cert, cert_key)
        ctx.set_alpn_protocols(["h2"])
    try:
        conn = H2Connection(ep.host, ep.port, ssl_context=ctx, server_hostname=ep.host, connect_timeout=timeout,
                            read_idle_timeout=3600, ping_timeout=3600, socket_options=[],
                            on_close=lambda *_: None)
    except Exception as e:  # reported, not raised
        return False, None, f"no connection: {type(e).__name__}"
    try:
        return True, round(conn.ping(timeout) * 1000, 2), None
    except Exception as e:  # reported, not raised
        return False, None, f"no PING ack: {e}"
    finally:
        conn.close()


def check(endpoint: str, timeout: float, user: str | None, password: str | None, ca_cert: str | None,
          cert_key: str | None, cert_cert: str | None) -> Report:
    try:
        client = Etcd3Client(endpoints=[endpoint], timeout=timeout, user=user, password=password, ca_cert=ca_cert,
                             cert_key=cert_key, cert_cert=cert_cert, retry=RetryPolicy(max_attempts=1))
    except exceptions.AuthenticationError as e:
        return Report(endpoint, healthy=False, reachable=True, auth=f"failed: {e}", error=str(e))
    except exceptions.Etcd3Exception as e:
        return Report(endpoint, healthy=False, reachable=False, error=f"{type(e).__name__}: {e}")
    try:
        started = time.monotonic()
        st = client._transport.unary("maintenance", "Status", rpc_pb2.StatusRequest(), timeout=timeout,
                                     idempotent=True)  # a read: a failure reads as such, nothing was changed
        latency = (time.monotonic() - started) * 1000
        report = Report(endpoint, healthy=True, reachable=True, latency_ms=round(latency, 2),
                        member_id=f"{st.header.member_id:x}", is_leader=st.leader == st.header.member_id,
                        has_leader=st.leader != 0, raft_term=st.raftTerm, version=st.version, db_size=st.dbSize,
                        alarms=list(st.errors), auth="ok" if user else "not used")
        try:
            client.get("/", timeout=timeout, serializable=True)
        except exceptions.AuthenticationError as e:
            report.auth = f"required: {e}"
        except exceptions.Etcd3Exception as e:
            if "user name is empty" in str(e) or "invalid auth token" in str(e):
                report.auth = "required (no user/password given)"
            else:
                raise
        report.keepalive_ok, report.keepalive_ms, report.keepalive_error = keepalive_check(
            endpoint, timeout, ca_cert, cert_key, cert_cert)
        if not report.has_leader:
            report.healthy, report.error = False, "no leader"
        elif report.keepalive_ok is False:
            report.healthy, report.error = False, f"keepalive: {report.keepalive_error}"
        elif report.alarms:
            report.healthy, report.error = False, "alarms: " + ", ".join(report.alarms)
        return report
    except exceptions.Etcd3Exception as e:
        return Report(endpoint, healthy=False, reachable=not isinstance(e, exceptions.ConnectionFailedError),
                      error=f"{type(e).__name__}: {e}")
    finally:
        client.close()


@dataclass
class ApiServerReport:
    apiserver: str
    healthy: bool
    reachable: bool
    latency_ms: float | None = None
    readyz: str | None = None
    protocol: str | None = None
    ping_ms: float | None = None
    auth: str | None = None
    error: str | None = None


def check_apiserver(url: str, configuration: Any, timeout: float) -> ApiServerReport:
    """``configuration``: the kubeconfig's, loaded once; a copy is pointed at ``url``."""
    from kubernetes.client.exceptions import ApiException

    from .kube import ApiClient, KubePolicy

    cfg = copy.copy(configuration)
    cfg.refresh_api_key_hook = None  # the kubeconfig loader's hook would reset host to the kubeconfig's server
    cfg.host = url
    api = ApiClient(cfg, policy=KubePolicy(probe_interval=0, connect_timeout=timeout, read_idle_timeout=timeout,
                                           default_timeout=timeout))
    report = ApiServerReport(url, healthy=False, reachable=False)
    try:
        started = time.monotonic()
        # authenticated: an anonymous HTTP/2 request makes the apiserver GOAWAY its connection
        # (UnauthenticatedHTTP2DOSMitigation), and the PING below needs that connection
        resp = api.rest_client.pool_manager.request("GET", url.rstrip("/") + "/readyz", headers=api.auth_headers(),
                                                    timeout=timeout)
        report.latency_ms = round((time.monotonic() - started) * 1000, 2)
        report.reachable = True
        conns = api._h2.connections(url.rstrip("/")) if api._h2 is not None else []
        report.protocol = "h2" if conns else "http/1.1"
        if resp.status in (401, 403):  # the credentials are checked before /readyz is served
            report.readyz, report.auth = "not checked", f"rejected ({resp.status})"
        else:
            report.readyz = "ok" if resp.status == 200 else f"{resp.status}: {resp.data[:200].decode(errors='replace')}"
            if conns and conns[0].closed is None:
                report.ping_ms = round(conns[0].ping(timeout) * 1000, 2)
            try:
                api.call_api("GET", url.rstrip("/") + "/api", header_params=api.auth_headers(),
                             _request_timeout=timeout)
                report.auth = "ok"
            except ApiException as e:
                report.auth = f"rejected ({e.status})"
        report.healthy = report.readyz == "ok" and report.auth == "ok"
        if not report.healthy:
            report.error = f"auth {report.auth}" if report.auth != "ok" else f"readyz {report.readyz}"
    except Exception as e:  # any failure is the report's content
        report.error = f"{type(e).__name__}: {e}"
    finally:
        api.close()
    return report


@dataclass
class ResourceReport:
    apiserver: str
    resource: str
    healthy: bool
    latency_ms: float | None = None
    error: str | None = None


def check_resources(url: str, configuration: Any, resources: list[str], timeout: float) -> list[ResourceReport]:
    """Per resource, a ``limit=1`` LIST through ``url`` (core resources by name, others as
    ``resource.group``): its latency or error. One resource slow or failing on one apiserver while the
    others answer is the incident where that apiserver's etcd connection for it hung."""
    import json as _json

    from .kube import ApiClient, KubePolicy

    cfg = copy.copy(configuration)
    cfg.refresh_api_key_hook = None
    cfg.host = url
    api = ApiClient(cfg, policy=KubePolicy(probe_interval=0, connect_timeout=timeout, read_idle_timeout=timeout,
                                           default_timeout=timeout))
    base = url.rstrip("/")
    out = []
    try:
        for name in resources:
            report = ResourceReport(url, name, healthy=False)
            try:
                if "." in name:
                    res, group = name.split(".", 1)
                    found = api.rest_client.pool_manager.request("GET", f"{base}/apis/{group}",
                                                                 headers=api.auth_headers(), timeout=timeout)
                    version = _json.loads(found.data)["preferredVersion"]["groupVersion"]
                    path = f"/apis/{version}/{res}"
                else:
                    path = f"/api/v1/{name}"
                started = time.monotonic()
                resp = api.rest_client.pool_manager.request("GET", f"{base}{path}?limit=1", headers=api.auth_headers(),
                                                            timeout=timeout)
                report.latency_ms = round((time.monotonic() - started) * 1000, 2)
                report.healthy = resp.status == 200
                if not report.healthy:
                    report.error = f"{resp.status}: {resp.data[:200].decode(errors='replace')}"
            except Exception as e:  # any failure is the report's content
                report.error = f"{type(e).__name__}: {e}"
            out.append(report)
    finally:
        api.close()
    return out


def _resource_table(reports: list[ResourceReport]) -> str:
    cols = ["apiserver", "resource", "healthy", "LIST limit=1", "error"]
    rows = [[r.apiserver, r.resource, "yes" if r.healthy else "NO",
             f"{r.latency_ms:.1f} ms" if r.latency_ms is not None else "-", _cut(r.error, 48)] for r in reports]
    return _grid(cols, rows)


def _grid(cols: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def _kube_table(reports: list[ApiServerReport]) -> str:
    cols = ["apiserver", "healthy", "readyz", "latency", "protocol", "ping", "auth", "error"]
    rows = [[r.apiserver, "yes" if r.healthy else "NO", r.readyz or "-",
             f"{r.latency_ms:.1f} ms" if r.latency_ms is not None else "-", r.protocol or "-",
             f"{r.ping_ms:.1f} ms" if r.ping_ms is not None else "-", _cut(r.auth, 16) or "-", _cut(r.error, 48)]
            for r in reports]
    return _grid(cols, rows)


def _keepalive_cell(r: Report) -> str:
    if r.keepalive_ok:
        return f"ack {r.keepalive_ms:.1f} ms"
    return "-" if r.keepalive_ok is None else "NO ACK"


def _cut(text: str | None, width: int) -> str:
    """One table cell: one line, at most ``width`` characters (``--json`` has the whole text)."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[:width - 1] + "…"


def _table(reports: list[Report]) -> str:
    cols = ["endpoint", "healthy", "reachable", "leader", "latency", "term", "version", "db size", "keepalive",
            "alarms", "auth", "error"]
    rows = [[r.endpoint, "yes" if r.healthy else "NO", "yes" if r.reachable else "NO",
             "yes" if r.is_leader else ("no" if r.has_leader else "-"),
             f"{r.latency_ms:.1f} ms" if r.latency_ms is not None else "-", str(r.raft_term or "-"),
             r.version or "-", f"{r.db_size / 1024:.0f} KiB" if r.db_size else "-", _keepalive_cell(r),
             ",".join(r.alarms or []) or "-", _cut(r.auth, 16) or "-", _cut(r.error, 48)]
            for r in reports]
    return _grid(cols, rows)


PASSWORD_ENV = "RESILIENT_ETCD_PASSWORD"


def _password(given: str | None, path: str | None) -> str | None:
    """The etcd password: ``--password-file``, else ``--password``, else ``$RESILIENT_ETCD_PASSWORD``."""
    if path is not None:
        with open(path, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    return given if given is not None else os.environ.get(PASSWORD_ENV)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m resilient_etcd")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("doctor", help="health of every etcd endpoint and API server; exit 1 if any is unhealthy")
    d.add_argument("--endpoints", help="etcd: comma-separated host:port or http(s)://host:port")
    d.add_argument("--kubeconfig", help="check the API server of this kubeconfig (and --apiservers)")
    d.add_argument("--context", help="kubeconfig context")
    d.add_argument("--apiservers", help="extra API server URLs (comma-separated), same credentials")
    d.add_argument("--resources", help="with --kubeconfig: also a limit=1 LIST of each of these resources "
                                       "(comma-separated: configmaps,pods,deployments.apps) on every API server")
    d.add_argument("--timeout", type=float, default=2.0, help="deadline per endpoint, seconds (default 2)")
    d.add_argument("--user")
    d.add_argument("--password", help=f"visible to other users in `ps`: prefer ${PASSWORD_ENV} or --password-file")
    d.add_argument("--password-file", help="read the password from this file (first line)")
    d.add_argument("--ca-cert")
    d.add_argument("--cert-key")
    d.add_argument("--cert-cert")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    a = p.parse_args(argv)
    if (a.password is not None or a.password_file is not None) and a.user is None:
        p.error("a password needs --user")
    try:
        a.password = _password(a.password, a.password_file) if a.user is not None else None
    except OSError as err:
        p.error(f"cannot read --password-file {a.password_file!r}: {err.strerror or err}")
    if not a.endpoints and not a.kubeconfig:
        p.error("give --endpoints (etcd), --kubeconfig (Kubernetes) or both")
    endpoints = [e.strip() for e in (a.endpoints or "").split(",") if e.strip()]
    if a.endpoints is not None and not endpoints:
        p.error("--endpoints is empty")
    if a.timeout <= 0:
        p.error("--timeout must be positive")
    try:
        for e in endpoints:
            parse_endpoint(e)
    except exceptions.ConfigurationError as e:
        p.error(str(e))
    apiservers: list[str] = []
    kube_config: Any = None
    if a.kubeconfig:
        try:
            from .kube import ApiClient, KubePolicy

            loaded = ApiClient.from_kubeconfig(a.kubeconfig, context=a.context, policy=KubePolicy(probe_interval=0),
                                               endpoints=[u.strip() for u in (a.apiservers or "").split(",")
                                                          if u.strip()])
            apiservers, kube_config = list(loaded.endpoints), loaded.configuration
            loaded.close()
        except exceptions.ConfigurationError as e:
            p.error(str(e))
    reports = [check(e, a.timeout, a.user, a.password, a.ca_cert, a.cert_key, a.cert_cert) for e in endpoints]
    kube = [check_apiserver(u, kube_config, a.timeout) for u in apiservers]
    names = [r.strip() for r in (a.resources or "").split(",") if r.strip()]
    if names and not apiservers:
        p.error("--resources needs --kubeconfig")
    per_resource = [r for u in apiservers for r in check_resources(u, kube_config, names, a.timeout)] if names else []
    if a.json:
        out: Any = {"etcd": [asdict(r) for r in reports], "kubernetes": [asdict(r) for r in kube],
                    "resources": [asdict(r) for r in per_resource]}
        print(json.dumps(out, indent=1))
    else:
        tables = (_table(reports) if reports else "", _kube_table(kube) if kube else "",
                  _resource_table(per_resource) if per_resource else "")
        print("\n\n".join(t for t in tables if t))
    healthy = [r.healthy for r in reports] + [r.healthy for r in kube] + [r.healthy for r in per_resource]
    return 0 if all(healthy) else 1


if __name__ == "__main__":
    sys.exit(main())
