"""`python -m resilient_etcd doctor` on a real cluster: healthy → 0; a paused member → reported, exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resilient_etcd.testing import EtcdCluster
from resilient_etcd.testing.kube import KubeApiServer


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "resilient_etcd", "doctor", *args],
                          capture_output=True, text=True, timeout=60)


def test_healthy_cluster(etcd_cluster: EtcdCluster) -> None:
    proc = doctor("--endpoints", ",".join(etcd_cluster.endpoints), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reports = json.loads(proc.stdout)["etcd"]
    assert [r["healthy"] for r in reports] == [True, True, True]
    assert sum(r["is_leader"] for r in reports) == 1
    assert all(r["keepalive_ok"] is True and r["keepalive_ms"] > 0 for r in reports), reports
    table = doctor("--endpoints", ",".join(etcd_cluster.endpoints))
    header = table.stdout.splitlines()[0]
    assert table.returncode == 0 and "endpoint" in header and "reachable" in header and "alarms" in header
    assert table.stderr == "", "nothing but the table: no log lines on stderr"
    assert max(len(line) for line in table.stdout.splitlines()) <= 160, table.stdout


def test_paused_member_is_unhealthy(etcd_cluster: EtcdCluster) -> None:
    victim = etcd_cluster.members[1]
    victim.pause()
    try:
        proc = doctor("--endpoints", ",".join(etcd_cluster.endpoints), "--json", "--timeout", "1")
    finally:
        victim.resume()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    reports = {r["endpoint"]: r for r in json.loads(proc.stdout)["etcd"]}
    assert reports[victim.endpoint]["healthy"] is False
    error = reports[victim.endpoint]["error"]
    assert "Deadline" in error or "ejected" in error, error
    assert "applied" not in error, f"a read-only check must not speak of writes: {error}"


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    assert doctor("--endpoints", "bad host:1").returncode == 2
    assert doctor("--endpoints", "a:1", "--timeout", "-1").returncode == 2
    assert doctor().returncode == 2  # neither etcd nor Kubernetes
    missing = doctor("--kubeconfig", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "cannot read kubeconfig" in missing.stderr


def test_apiservers_reported_and_a_paused_one_fails(etcd_cluster: EtcdCluster,
                                                     two_apiservers: list[KubeApiServer]) -> None:
    a, b = two_apiservers
    args = ("--kubeconfig", str(a.kubeconfig()), "--apiservers", b.url, "--timeout", "1")
    proc = doctor(*args, "--endpoints", ",".join(etcd_cluster.endpoints), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    kube = {r["apiserver"]: r for r in json.loads(proc.stdout)["kubernetes"]}
    assert set(kube) == {a.url, b.url}
    for r in kube.values():
        assert r["healthy"] and r["readyz"] == "ok" and r["auth"] == "ok" and r["protocol"] == "h2"
        assert r["ping_ms"] is not None
    table = doctor(*args)
    assert table.returncode == 0 and table.stdout.startswith("apiserver"), table.stdout
    # wrong credentials: reachable and ready, but unhealthy
    bad = a.kubeconfig()
    bad.write_text(bad.read_text().replace(a.token, "not-a-token"))
    proc = doctor("--kubeconfig", str(bad), "--json")
    (r,) = json.loads(proc.stdout)["kubernetes"]
    assert proc.returncode == 1 and r["reachable"] and r["auth"] == "rejected (401)", r
    a.kubeconfig()  # restore
    a.pause()
    try:
        proc = doctor(*args, "--json")
    finally:
        a.resume()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    kube = {r["apiserver"]: r for r in json.loads(proc.stdout)["kubernetes"]}
    assert not kube[a.url]["healthy"] and kube[a.url]["error"]
    assert kube[b.url]["healthy"]


@pytest.mark.etcd_cluster(size=1, tls=True, client_cert_auth=True, proxied=False)
def test_tls_member_with_client_certificates(etcd_cluster: EtcdCluster) -> None:
    certs = etcd_cluster.certs
    assert certs is not None
    proc = doctor("--endpoints", etcd_cluster.endpoints[0], "--ca-cert", str(certs.ca),
                  "--cert-key", str(certs.client_key), "--cert-cert", str(certs.client_cert), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (r,) = json.loads(proc.stdout)["etcd"]
    assert r["healthy"] and r["keepalive_ok"], r  # the PING went over TLS + ALPN h2


@pytest.mark.etcd_cluster(size=1, auth=True)
def test_password_from_a_file_or_the_environment(etcd_cluster: EtcdCluster, tmp_path: Path) -> None:
    """--password shows in `ps`; the file and the environment variable do not."""
    from resilient_etcd.testing.etcd import ROOT_PASSWORD_DEFAULT

    secret = tmp_path / "password"
    secret.write_text(ROOT_PASSWORD_DEFAULT + "\n")
    by_file = doctor("--endpoints", etcd_cluster.endpoints[0], "--user", "root", "--password-file", str(secret),
                     "--json")
    assert by_file.returncode == 0, by_file.stdout + by_file.stderr
    assert json.loads(by_file.stdout)["etcd"][0]["auth"] == "ok"
    env = {**os.environ, "RESILIENT_ETCD_PASSWORD": ROOT_PASSWORD_DEFAULT}
    by_env = subprocess.run([sys.executable, "-m", "resilient_etcd", "doctor", "--endpoints",
                             etcd_cluster.endpoints[0], "--user", "root", "--json"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert by_env.returncode == 0, by_env.stdout + by_env.stderr
    assert ROOT_PASSWORD_DEFAULT not in by_env.stdout + by_env.stderr
    assert doctor("--endpoints", "a:1", "--user", "root", "--password-file", str(tmp_path / "nope")).returncode == 2


@pytest.mark.etcd_cluster(size=1, tls=True, client_cert_auth=True, proxied=False)
def test_client_certificate_without_ca_pings_over_tls(etcd_cluster: EtcdCluster) -> None:
    """With a client certificate, no --ca-cert and no https://, the PING check dialled plaintext while
    the main check used TLS (server trusted through the system roots, here the environment's)."""
    certs = etcd_cluster.certs
    assert certs is not None
    env = {**os.environ, "SSL_CERT_FILE": str(certs.ca), "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(certs.ca)}
    proc = subprocess.run([sys.executable, "-m", "resilient_etcd", "doctor", "--endpoints", etcd_cluster.endpoints[0],
                           "--cert-key", str(certs.client_key), "--cert-cert", str(certs.client_cert), "--json"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (r,) = json.loads(proc.stdout)["etcd"]
    assert r["healthy"] and r["keepalive_ok"], r
