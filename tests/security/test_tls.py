"""The TLS listeners: the project CA (mosquitto/make-ca.sh) is trusted, anything
else is not; the mTLS listener wants a client certificate from that CA *and* the
device's password; the agent's doctor gets through over TLS with its config's CA."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import ROOT, Broker, free_port, tool
from tests.security.mqtt_probe import NOT_AUTHORIZED, connect

MAKE_CA = str(ROOT / "mosquitto" / "make-ca.sh")


@pytest.fixture(scope="module")
def mtls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("mtls-mosquitto"), mtls_port=free_port()).start()
    yield b
    b.stop()


def client_cert(cert_dir: Path, name: str) -> tuple[Path, Path]:
    subprocess.run([MAKE_CA, str(cert_dir), "--client", name], check=True, capture_output=True)
    return cert_dir / f"{name}.crt", cert_dir / f"{name}.key"


def test_the_server_certificate_names_the_hosts(sec_broker: Broker) -> None:
    out = subprocess.run(
        ["openssl", "x509", "-in", str(sec_broker.cert_dir / "server.crt"), "-noout", "-ext",
         "subjectAltName"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert "IP Address:127.0.0.1" in out and "DNS:localhost" in out


def test_a_device_connects_over_tls_with_the_project_ca(sec_broker: Broker) -> None:
    b = sec_broker
    s = connect(b.host, b.tls_port, "tls-dev-1", b.device_password("tls-dev-1"), "tls-dev-1",
                ca_file=b.ca_file)  # fmt: skip
    assert s.ok
    assert s.subscribe("fleet/v1/tls-dev-1/down/ack") == 1
    s.close()


def test_a_broker_certificate_from_another_ca_is_refused(
    sec_broker: Broker, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca"
    subprocess.run([MAKE_CA, str(other), "127.0.0.1"], check=True, capture_output=True)
    b = sec_broker
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(b.host, b.tls_port, "tls-dev-1", b.device_password("tls-dev-1"), "tls-dev-1",
                ca_file=other / "ca.crt")  # fmt: skip


def test_plain_mqtt_on_the_tls_port_gets_no_connack(sec_broker: Broker) -> None:
    try:
        s = connect(sec_broker.host, sec_broker.tls_port, *sec_broker.observer)
    except (OSError, TimeoutError):
        return  # refused outright: fine too
    s.close()
    assert s.connack is None and s.disconnect_code is not None


def test_mtls_needs_a_ca_client_certificate_and_the_password(
    mtls_broker: Broker, tmp_path: Path
) -> None:
    b = mtls_broker
    assert b.mtls_port is not None
    d = "mtls-dev-1"
    password = b.device_password(d)
    cert = client_cert(b.cert_dir, d)
    ok = connect(b.host, b.mtls_port, d, password, d, ca_file=b.ca_file, cert=cert)
    assert ok.ok
    ok.close()
    # The certificate alone is not a login (the plugin still checks the password,
    # the client id binding and the disabled flag).
    assert connect(b.host, b.mtls_port, d, None, d, ca_file=b.ca_file, cert=cert).connack == (
        NOT_AUTHORIZED
    )
    assert connect(b.host, b.mtls_port, None, None, d, ca_file=b.ca_file, cert=cert).connack == (
        NOT_AUTHORIZED
    )
    # No certificate, or one from another CA: the TLS session fails (with TLS 1.3
    # the server's alert may come after the client's handshake: then no CONNACK).
    assert not logs_in(b, d, password, None)
    other = tmp_path / "other-ca"
    subprocess.run([MAKE_CA, str(other), "127.0.0.1"], check=True, capture_output=True)
    assert not logs_in(b, d, password, client_cert(other, d))


def logs_in(b: Broker, d: str, password: str, cert: tuple[Path, Path] | None) -> bool:
    assert b.mtls_port is not None
    try:
        s = connect(b.host, b.mtls_port, d, password, d, ca_file=b.ca_file, cert=cert)
    except (ssl.SSLError, OSError, TimeoutError):
        return False
    s.close()
    return s.ok


def doctor_broker_row(cfg: Path, tmp_path: Path) -> str:
    r = subprocess.run(
        [tool("fleet-agent"), "doctor", "--config", str(cfg), "--timeout", "1",
         "--gps-serial", str(tmp_path / "no-gps"), "--outbox", str(tmp_path / "outbox.db")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    rows = [line for line in r.stdout.splitlines() if line.strip().startswith("broker ")]
    assert rows, r.stdout
    return rows[0]


def test_the_agent_doctor_logs_in_over_tls(sec_broker: Broker, tmp_path: Path) -> None:
    b = sec_broker
    d = "tls-doctor-1"
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'device_id = "{d}"\n[broker]\nhost = "127.0.0.1"\nport = {b.tls_port}\n'
        f'password = "{b.device_password(d)}"\ntls = true\nca_file = "{b.ca_file}"\n'
    )
    row = doctor_broker_row(cfg, tmp_path)
    assert "PASS" in row and "(TLS)" in row and f"logged in as {d}" in row
    cfg.write_text(cfg.read_text().replace(b.device_password(d), "wrong"))
    row = doctor_broker_row(cfg, tmp_path)
    assert "FAIL" in row and "(TLS)" in row


@pytest.mark.parametrize(
    ("broker", "complaint"),
    [
        ({"tls": True, "cert_file": "/c.crt"}, "cert_file and key_file go together"),
        ({"ca_file": "/ca.crt"}, "need tls = true"),
    ],
)
def test_agent_tls_settings_are_checked(broker: dict[str, object], complaint: str) -> None:
    from fleet_edge.config import ConfigError, load_config

    overrides = {"device_id": "tls-cfg-1", **{f"broker.{k}": v for k, v in broker.items()}}
    with pytest.raises(ConfigError, match=complaint):
        load_config(None, overrides)
