"""TLS files followed on disk (no server: files in a temp directory; here, not in tests/unit, because the
certificates are made with cryptography, a test-bed dependency the core-install unit run does not have)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from resilient_etcd.testing.tls import issue_client_cert, make_certs, other_ca
from resilient_etcd.transport.endpoints import TlsConfig


def _config(tmp_path: Path) -> tuple[TlsConfig, Path, Path, Path]:
    certs = make_certs(tmp_path / "certs", ["127.0.0.1"])
    ca, cert, key = tmp_path / "ca.pem", tmp_path / "client.pem", tmp_path / "client-key.pem"
    ca.write_bytes(certs.ca.read_bytes())
    cert.write_bytes(certs.client_cert.read_bytes())
    key.write_bytes(certs.client_key.read_bytes())
    config = TlsConfig.from_files(str(ca), str(key), str(cert))
    assert config is not None and config.rotation is not None
    return config, ca, cert, key


def test_unchanged_files_keep_the_credentials(tmp_path: Path) -> None:
    config, *_ = _config(tmp_path)
    assert config.credentials() is config.credentials()
    assert config.rotation is not None and config.rotation.reloads == 0


def test_complete_new_files_are_used_from_the_next_dial(tmp_path: Path) -> None:
    config, ca, cert, key = _config(tmp_path)
    before = config.credentials()
    new_cert, new_key = issue_client_cert(make_certs(tmp_path / "next", ["127.0.0.1"]))
    ca.write_bytes(ca.read_bytes() + other_ca())
    key.write_bytes(new_key)
    cert.write_bytes(new_cert)
    after = config.credentials()
    assert after is not before
    assert config.rotation is not None and config.rotation.reloads == 1
    assert config.credentials() is after, "loaded once"


@pytest.mark.parametrize("how", ["half-written certificate", "certificate without its key", "empty CA"])
def test_files_that_do_not_load_are_refused_and_the_old_ones_kept(tmp_path: Path, how: str,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    config, ca, cert, key = _config(tmp_path)
    before = config.credentials()
    new_cert, new_key = issue_client_cert(make_certs(tmp_path / "next", ["127.0.0.1"]))
    if how == "half-written certificate":
        cert.write_bytes(new_cert[: len(new_cert) // 2])
    elif how == "certificate without its key":
        cert.write_bytes(new_cert)  # the key is replaced next, not yet
    else:
        ca.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="resilient_etcd.tls"):
        assert config.credentials() is before
        assert config.credentials() is before
    assert config.rotation is not None and config.rotation.reloads == 0
    assert caplog.text.count("do not load") == 1, "the same broken files are reported once, not at every dial"
    assert "BEGIN" not in caplog.text
    # the rest of the rotation arrives: used from then on
    ca.write_bytes(tmp_path.joinpath("certs", "ca.pem").read_bytes())
    key.write_bytes(new_key)
    cert.write_bytes(new_cert)
    assert config.credentials() is not before
    assert config.rotation.reloads == 1
