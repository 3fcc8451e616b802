"""Every YAML under configs/ (the demo, the deployment configs, every driver example) passes the real
`chamber-bridge check`; and what `check` does, and does not do, with the secrets they name."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from tests.helpers.cli import ROOT, run_cli
from tests.helpers.net import free_port

CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
#: the deployment configs the Pi, the lab server and docker-compose.yml use
DEPLOYMENT = ("pi-mbe.yaml", "lab-server-local.yaml", "lab-server-atomscale.yaml", "tryout-bridge.yaml",
              "operator.yaml", "monitor.yaml")


def test_every_shipped_config_passes_check() -> None:
    assert {p.name for p in CONFIGS} >= {"demo.yaml", *DEPLOYMENT}
    assert any(p.parent.name == "examples" for p in CONFIGS)
    with ThreadPoolExecutor(4) as pool:
        # --no-files: the CA and secrets they name exist on the deployment machines, not here
        # (tests/hostile/test_tls.py)
        results = list(pool.map(lambda p: (p, run_cli("check", "--no-files", str(p))), CONFIGS))
    failed = [f"{p.relative_to(ROOT)}: exit {r.returncode}: {r.stderr.strip()}" for p, r in results if r.returncode]
    assert not failed, "\n".join(failed)
    for path, result in results:
        assert result.stdout.startswith(f"{path}: ok (site "), result.stdout


def secret_files(path: Path) -> list[str]:
    raw = yaml.safe_load(path.read_text())
    mqtt = raw.get("mqtt") or {}
    sink = (raw.get("uploader") or {}).get("sink") or {}
    return [f for f in (mqtt.get("password_file"), sink.get("api_key_file")) if f]


def test_check_validates_without_the_secrets_and_the_service_names_a_missing_one(tmp_path: Path) -> None:
    """`check` validates the file alone, so it runs where the secrets are not (a laptop, CI): the
    Docker secrets under /run/secrets do not exist here and it still passes (previous test). The
    secret is read when a command connects, and a missing one is then named by its key path."""
    config = ROOT / "configs" / "lab-server-local.yaml"
    secret = Path(secret_files(config)[0])
    assert secret.parts[:3] == ("/", "run", "secrets")
    assert not secret.exists(), "this test expects the Docker secret not to exist on the test machine"
    result = run_cli("health", str(config), "--timeout", "1")
    assert result.returncode == 2
    assert result.stderr.strip() == f"mqtt.password_file: cannot read {secret}: No such file or directory"

    # with the secret provided (a file in tmp), the same config gets past it to the broker
    raw = yaml.safe_load(config.read_text())
    (tmp_path / "mqtt_uploader_password").write_text("s3cret\n")
    (tmp_path / "mqtt_uploader_password").chmod(0o600)  # a secret others can read is refused
    raw["mqtt"].update(password_file=str(tmp_path / "mqtt_uploader_password"), host="127.0.0.1", port=free_port())
    provided = tmp_path / "lab-server-local.yaml"
    provided.write_text(yaml.safe_dump(raw))
    result = run_cli("health", str(provided), "--timeout", "1")
    assert result.returncode == 1
    assert result.stderr.startswith("chamber-bridge: error: no broker at 127.0.0.1:")


def test_deployment_configs_take_every_secret_from_a_file_never_inline() -> None:
    for name in DEPLOYMENT:
        path = ROOT / "configs" / name
        text = path.read_text()
        assert "password:" not in text.replace("password_file:", "") and "api_key:" not in text, name
        assert secret_files(path), f"{name} logs in without a password"
        if name not in ("pi-mbe.yaml", "operator.yaml"):  # these two run outside Docker
            assert all(f.startswith("/run/secrets/") for f in secret_files(path)), name
    assert secret_files(ROOT / "configs" / "lab-server-atomscale.yaml") == [
        "/run/secrets/mqtt_uploader_password", "/run/secrets/atomscale_api_key"]


def test_every_config_that_talks_to_a_broker_logs_in_as_its_own_user() -> None:
    """The shipped broker refuses anonymous clients and gives each user only its topics
    (deploy/mosquitto/acl): a bridge's user is its site, the uploader's client id is its user (the
    broker makes it so: use_username_as_clientid). The driver examples are for `read` only and
    name no broker at all."""
    for path in CONFIGS:
        raw = yaml.safe_load(path.read_text())
        if path.parent.name == "examples":
            assert "mqtt" not in raw and "uploader" not in raw, path.name
            continue
        mqtt = raw["mqtt"]
        assert mqtt.get("username") and mqtt.get("password_file"), path.name
        if raw.get("bridge"):
            assert mqtt["username"] == raw["site"], path.name
        if raw.get("uploader", {}).get("client_id"):
            assert raw["uploader"]["client_id"] == mqtt["username"] == "uploader", path.name
    # off the lab server's loopback, MQTT goes over TLS, checked against the lab CA
    pi = yaml.safe_load((ROOT / "configs" / "pi-mbe.yaml").read_text())["mqtt"]
    assert pi["port"] == 8883 and pi["tls"]["ca_file"].startswith("/etc/chamber-bridge/")
