"""MQTT over TLS against a private Mosquitto with a TLS listener (issue 11, item 6).

A bridge or uploader given the wrong CA, or a broker whose certificate is for another name, used
to retry in silence (paho says nothing of why); now the first failure is logged at once with its
reason, once per reason, and the reason is in the service's status. With the right CA and an
encrypted client key (key_password_file) the bridge connects.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import Config, parse_config
from bridge.edge.service import BridgeService
from bridge.uploader.service import UploaderService, UploaderSettings
from tests.faults.conftest import Figures
from tests.helpers.cli import run_cli
from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.tls import Pki, make_pki, tls_broker

SITE = "chamber-t"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A second CA: what a Pi holds when it was given the wrong ca.crt."""
    return make_pki(tmp_path_factory.mktemp("other"))


@pytest.fixture
def broker(tmp_path: Path, pki: Pki) -> Iterator[tuple[MosquittoBroker, int]]:
    server, port = tls_broker(tmp_path / "broker", pki)
    server.start()
    try:
        yield server, port
    finally:
        server.kill()


def raw_config(tmp_path: Path, port: int, **tls: Path) -> dict[str, Any]:
    return {"site": SITE,
            "mqtt": {"host": "127.0.0.1", "port": port, "tls": {k: str(v) for k, v in tls.items()}},
            "bridge": {"state_dir": str(tmp_path / "bridge")},
            "uploader": {"state_dir": str(tmp_path / "uploader"),
                         "sink": {"kind": "local", "path": str(tmp_path / "runs")}}}


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout} s")


def link_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == "bridge.wire.mqtt" and "cannot connect to the broker" in r.getMessage()]


def test_a_bridge_with_the_wrong_ca_says_why_at_once_and_once(tmp_path: Path, broker: tuple[MosquittoBroker, int],
                                                              other_ca: Pki, caplog: pytest.LogCaptureFixture,
                                                              figures: Figures) -> None:
    caplog.set_level(logging.INFO, logger="bridge")
    _, port = broker
    service = BridgeService(parse_config(raw_config(tmp_path, port, ca_file=other_ca.ca)))
    started = time.monotonic()
    service.start()
    try:
        record = wait_for(lambda: link_records(caplog), "log line about the failed TLS connection")[0]
        seconds = time.monotonic() - started
        assert record.levelno == logging.ERROR
        assert record.getMessage() == (
            f"cannot connect to the broker at 127.0.0.1:{port}: TLS: the broker's certificate is not trusted "
            "(unable to get local issuer certificate); check mqtt.tls.ca_file; retrying")
        link = service.publisher.client.link
        wait_for(lambda: link.failures >= 2, "another attempt (paho retries after 1 s)")
        assert len(link_records(caplog)) == 1, "the same reason is logged once, not on every retry"
        status = service.status()["mqtt"]
        assert status["connect_failures"] >= 2
        assert "not trusted" in status["last_connect_error"]
        assert not service.publisher.connected
    finally:
        service.stop()
    assert seconds < 10  # "at once": it was 25 s of nothing before
    figures.record(row=0, fault="MQTT TLS: wrong CA", seconds_to_log=round(seconds, 2), log_lines=1)


def test_an_uploader_facing_a_certificate_for_another_name_says_so(tmp_path: Path, other_ca: Pki,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bridge")
    pki = make_pki(tmp_path / "pki", server_names="DNS:broker.example.invalid")
    server, port = tls_broker(tmp_path / "broker", pki)
    server.start()
    service = UploaderService(parse_config(raw_config(tmp_path, port, ca_file=pki.ca)),
                              settings=UploaderSettings(status_interval=0.2))
    service.start()
    try:
        record = wait_for(lambda: link_records(caplog), "log line about the host name")[0]
        assert ("TLS: the broker's certificate does not match mqtt.host (IP address mismatch, certificate is not "
                "valid for '127.0.0.1'.)") in record.getMessage()
        status = wait_for(lambda: (service.last_status or {}).get("mqtt", {}).get("last_connect_error"),
                          "the reason in the uploader's status")
        assert "does not match mqtt.host" in status
    finally:
        service.stop()
        server.kill()


def test_the_right_ca_and_an_encrypted_client_key_connect(tmp_path: Path, broker: tuple[MosquittoBroker, int],
                                                          pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bridge")
    _, port = broker
    config: Config = parse_config(raw_config(tmp_path, port, ca_file=pki.ca, cert_file=pki.client_cert,
                                             key_file=pki.client_key_encrypted,
                                             key_password_file=pki.passphrase_file))
    service = BridgeService(config)
    service.start()
    try:
        wait_for(lambda: service.publisher.connected, "a TLS connection")
        assert service.status()["mqtt"] == {"connect_failures": 0, "last_connect_error": None,
                                            "last_connect_error_time": None}
        assert not link_records(caplog)
    finally:
        service.stop()


def test_a_one_shot_command_reports_the_tls_failure_itself(tmp_path: Path, broker: tuple[MosquittoBroker, int],
                                                           other_ca: Pki) -> None:
    """`health` (like start-run) connects in its own thread and says why in its one error line."""
    _, port = broker
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw_config(tmp_path, port, ca_file=other_ca.ca)))
    assert run_cli("check", str(path)).returncode == 0  # the files load; the CA is just not the broker's
    result = run_cli("health", str(path), "--role", "bridge", "--timeout", "2")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("chamber-bridge: error: "), lines
    assert "certificate verify failed" in lines[0]
