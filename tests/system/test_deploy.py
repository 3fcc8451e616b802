"""The deployment files, exercised as far as a machine without a Docker engine or a Pi allows.

- docker-compose.yml: parsed and checked against the Dockerfile, the configs it mounts and itself.
- Dockerfile: its COPY and pip install steps run into a fresh virtual environment; the installed
  console script answers --version, health --help and the try-out's simulate chamber.
- deploy/mosquitto: a real mosquitto started with the shipped mosquitto.conf (only paths, port and
  `user` rewritten) and the shipped acl; MQTT v5 clients prove what each user may and may not do,
  and a real bridge and uploader run a whole run through it under those ACLs.
- deploy/pi: systemd-analyze verify on the unit, install.sh --dry-run, the udev rules' syntax.
- deploy/tryout/run-bridge.py against a real simulated chamber.
"""

from __future__ import annotations

import json
import queue
import re
import shlex
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bridge.cli.health import ROLES, check_health
from bridge.config import load_config, parse_config
from bridge.uploader.service import UploaderService, UploaderSettings
from bridge.wire.request import fetch_retained, request
from simulators.services.broker import mosquitto_acl, parse_acl, write_secret
from tests.helpers.cli import ROOT, simulate
from tests.helpers.mosquitto import (
    USERS,
    MosquittoBroker,
    ShippedBroker,
    V5Client,
    allowed,
    conf_settings,
    shipped_broker,
)
from tests.helpers.uploader import RecordingBridge, finalized, wait_for

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
MOSQUITTO = ROOT / "deploy" / "mosquitto"
PI = ROOT / "deploy" / "pi"
CONTAINER_CONFIG = "/etc/chamber-bridge/config.yaml"
MONITOR_CONFIG = "/etc/chamber-bridge/monitor.yaml"


# ====================================================================== Dockerfile


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, args = full.strip().partition(" ")
        instructions.append((keyword.upper(), " ".join(args.split())))
    return instructions


INSTRUCTIONS = dockerfile_instructions(DOCKERFILE.read_text())


def instruction(name: str) -> list[str]:
    return [args for keyword, args in INSTRUCTIONS if keyword == name]


def image_uid() -> int:
    (useradd,) = [a for a in instruction("RUN") if "useradd" in a]
    match = re.search(r"useradd .*--uid (\d+) .*\bchamber$", useradd)
    assert match, useradd
    return int(match[1])


def test_dockerfile_slim_base_non_root_volumes_entrypoint_healthcheck() -> None:
    assert instruction("FROM") == ["python:3.11-slim-bookworm"]
    assert image_uid() >= 1000
    keywords = [k for k, _ in INSTRUCTIONS]
    # the user switch comes after every install step, and nothing runs as root after it
    assert instruction("USER") == ["chamber"]
    assert "RUN" not in keywords[keywords.index("USER"):]
    volumes = yaml.safe_load(instruction("VOLUME")[0])
    assert set(volumes) == {"/var/lib/chamber-bridge-uploader", "/srv/runs"}
    assert yaml.safe_load(instruction("ENTRYPOINT")[0]) == ["chamber-bridge"]
    assert yaml.safe_load(instruction("CMD")[0]) == ["upload", CONTAINER_CONFIG]
    (healthcheck,) = instruction("HEALTHCHECK")
    options, _, command = healthcheck.partition(" CMD ")
    assert "--interval=" in options and "--timeout=" in options
    # as `monitor`, never with the uploader's login (use_username_as_clientid: it would take over its session)
    assert yaml.safe_load(command)[:5] == ["chamber-bridge", "health", MONITOR_CONFIG, "--role", "uploader"]
    # the state directories are created for, and owned by, the non-root user
    (mkdir,) = [a for a in instruction("RUN") if "mkdir" in a]
    for path in ("/var/lib/chamber-bridge-uploader", "/srv/runs"):
        assert path in mkdir.split("chown", 1)[1], path


def test_dockerfile_bakes_in_no_secrets() -> None:
    for keyword in ("ENV", "ARG", "LABEL"):
        for args in instruction(keyword):
            assert not re.search(r"(?i)password|secret|api_?key|token", args), f"{keyword} {args}"
    sources = [src for args in instruction("COPY") for src in args.split()[:-1]]
    assert sources == ["pyproject.toml", "README.md", "bridge", "simulators"]
    for src in sources:
        assert (ROOT / src).exists(), src
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"secrets", "deploy/mosquitto/passwd", ".venv", ".git"} <= set(ignored)


def pip_install_args() -> list[str]:
    """The Dockerfile's `pip install ...` arguments, exactly as its RUN line has them."""
    (run,) = [a for a in instruction("RUN") if "pip install" in a]
    command = run.split("&&")[0]
    words = shlex.split(command)
    assert words[:2] == ["pip", "install"], command
    return words[2:]


#: prints, per distribution, the top-level packages of the files it installed (JSON)
TOP_LEVEL_PACKAGES = """
import json
from importlib.metadata import distribution
top = {}
for name in ("chamber-bridge", "chamber-bridge-simulators"):
    files = distribution(name).files or []
    top[name] = sorted({f.parts[0] for f in files if f.suffix == ".py" and len(f.parts) > 1})
print(json.dumps(top))
"""


def test_the_dockerfile_install_steps_in_a_fresh_virtual_environment(
        tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    """COPY the same sources into a build context, run the same pip install in a fresh venv
    (python3 -m venv: no project packages in it), then run the installed console script."""
    args = pip_install_args()
    assert args == ["--no-cache-dir", ".[server]", "./simulators"]
    context = tmp_path / "src"  # WORKDIR /src
    context.mkdir()
    for copy in instruction("COPY"):
        *sources, dest = copy.split()
        for src in sources:  # Docker: several sources, or a dest ending in "/", copy into that directory
            target = context / dest / Path(src).name if len(sources) > 1 or dest.endswith("/") else context / dest
            if (ROOT / src).is_dir():
                shutil.copytree(ROOT / src, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(ROOT / src, target)
    venv = tmp_path / "venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *args], cwd=context,
                                 capture_output=True, text=True, timeout=600)
        assert install.returncode == 0, install.stderr[-3000:]
        exe = str(venv / "bin" / "chamber-bridge")

        def run(*argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([exe, *argv], capture_output=True, text=True, timeout=60, cwd=tmp_path)

        version = run("--version")
        assert version.returncode == 0 and version.stdout.startswith("chamber-bridge, version "), version.stderr
        assert run("health", "--help").returncode == 0
        assert "simulate" in run("--help").stdout  # the try-out's chamber runs from the same image
        assert run("simulate", "chamber", "--help").returncode == 0
        extras = subprocess.run([str(venv / "bin" / "python"), "-c", "import httpx, matplotlib, pyarrow"],
                                capture_output=True, text=True, timeout=120)
        assert extras.returncode == 0, extras.stderr
        # the main wheel (what the Pi installs) carries bridge/ only; the simulators come from their own
        packages = subprocess.run([str(venv / "bin" / "python"), "-c", TOP_LEVEL_PACKAGES], capture_output=True,
                                  text=True, timeout=120)
        assert packages.returncode == 0, packages.stderr
        assert json.loads(packages.stdout) == {"chamber-bridge": ["bridge"],
                                               "chamber-bridge-simulators": ["simulators"]}
        # the HEALTHCHECK command, from the installed package, against a real broker with no uploader
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({"site": "lab-server",
                                          "mqtt": {"host": mosquitto.host, "port": mosquitto.port}}))
        health = run("health", str(config), "--role", "uploader", "--timeout", "1")
        assert health.returncode == 1 and "error: no status on lab/uploader/status" in health.stderr
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # about 400 MB


# ====================================================================== docker-compose.yml


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default}, with the variables unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (a named volume or a host path), from short-syntax volumes."""
    found = {}
    for spec in service.get("volumes", []):
        source, target, *_ = interpolate(spec).split(":")
        found[target] = source
    return found


def test_compose_services_and_profiles() -> None:
    services = compose()["services"]
    assert set(services) == {"mosquitto", "uploader", "chamber", "bridge"}
    assert "profiles" not in services["mosquitto"] and "profiles" not in services["uploader"]
    assert services["chamber"]["profiles"] == ["tryout"] and services["bridge"]["profiles"] == ["tryout"]

    mosquitto = services["mosquitto"]
    assert mosquitto["image"] == "eclipse-mosquitto:2"
    assert mosquitto["user"] == "1883:1883"  # the image's mosquitto user from the start: nothing to drop
    assert "127.0.0.1:1883:1883" in mosquitto["ports"] and "8883:8883" in mosquitto["ports"]
    assert mounts(mosquitto)["/mosquitto/certs"] == "./secrets/mosquitto-tls"
    assert mounts(mosquitto)["/mosquitto/config"] == "./deploy/mosquitto"
    assert any(v.endswith(":ro") for v in mosquitto["volumes"] if v.startswith("./deploy/mosquitto:"))
    assert not mounts(mosquitto)["/mosquitto/data"].startswith(".")  # a named volume

    uploader = services["uploader"]
    assert uploader["build"] == "."
    assert "mosquitto" in uploader["depends_on"]
    assert uploader["restart"] == "unless-stopped"
    assert uploader["command"] == ["upload", CONTAINER_CONFIG]
    assert set(uploader["secrets"]) == {"mqtt_uploader_password", "mqtt_monitor_password", "atomscale_api_key"}
    uid = image_uid()
    assert uploader["user"] == f"{uid}:{uid}"
    health = uploader["healthcheck"]
    assert health["test"][:6] == ["CMD", "chamber-bridge", "health", MONITOR_CONFIG, "--role", "uploader"]
    assert {"interval", "timeout", "retries"} <= set(health)

    chamber, bridge = services["chamber"], services["bridge"]
    assert chamber["command"][:2] == ["simulate", "chamber"]
    assert bridge["network_mode"] == "service:chamber"
    assert bridge["entrypoint"] == ["python", "/opt/tryout/run-bridge.py"]
    assert '"poll"' in (ROOT / "deploy" / "tryout" / "run-bridge.py").read_text()
    assert bridge["healthcheck"]["test"] == ["CMD", "chamber-bridge", "health", MONITOR_CONFIG, "--role", "bridge"]
    for service in services.values():
        if service.get("image", "").startswith("chamber-bridge") or "build" in service:
            assert service["user"] == f"{uid}:{uid}"


def test_compose_hardening() -> None:
    """Every container: no capabilities, no privilege gain, a read-only root file system (writes go
    to named volumes and a tmpfs /tmp), not root; no plain MQTT port open beyond the host."""
    for name, service in compose()["services"].items():
        assert service["cap_drop"] == ["ALL"], name
        assert "cap_add" not in service and "privileged" not in service, name
        assert service["security_opt"] == ["no-new-privileges:true"], name
        assert service["read_only"] is True, name
        assert any(t.split(":")[0] == "/tmp" for t in service["tmpfs"]), name
        assert not service["user"].startswith("0"), name
        for port in service.get("ports", []):
            parts = str(port).split(":")
            if parts[-1] == "1883":  # plain MQTT: bound to the host's loopback only
                assert parts[0] == "127.0.0.1", port
            else:
                assert parts[-1] == "8883", port  # nothing else is published
        for target, source in mounts(service).items():
            if source.startswith("."):
                spec = next(v for v in service["volumes"] if interpolate(v).split(":")[1] == target)
                assert spec.endswith(":ro"), f"{name}: {spec} (a host path: read-only)"


def test_compose_volumes_secrets_and_mounts_are_declared_and_exist() -> None:
    doc = compose()
    declared_volumes = set(doc["volumes"])
    used = {source for service in doc["services"].values() for source in mounts(service).values()
            if not source.startswith((".", "/"))}
    assert used == declared_volumes == {"mosquitto-data", "uploader-state", "runs", "tryout-bridge-state"}
    # every volume is documented in the file's header
    header = COMPOSE.read_text().split("services:")[0]
    for volume in declared_volumes:
        assert f"#   {volume}" in header, volume
    declared_secrets = doc["secrets"]
    used_secrets = {s for service in doc["services"].values() for s in service.get("secrets", [])}
    assert used_secrets == set(declared_secrets)
    for name, secret in declared_secrets.items():
        assert secret["file"] == f"./secrets/{name}", name  # host files, kept out of git and the image
        assert f"#   {name}" in header, name
    assert "/secrets/" in (ROOT / ".gitignore").read_text().split()
    for service in doc["services"].values():
        for target, source in mounts(service).items():
            if source.startswith("./secrets/"):  # made at set-up (make-certs.sh), kept out of git
                assert target == "/mosquitto/certs", target
            elif source.startswith("."):
                assert (ROOT / source).exists(), f"{source} (mounted at {target})"


def compose_cli() -> list[str] | None:
    """A Compose that can validate a file without a Docker engine: the plugin or Debian's docker-compose."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_validates_against_the_compose_schema() -> None:
    """`compose config` checks the file against Compose's schema offline (no engine needed). Not on
    every machine: scripts/test.sh does not install it (Debian's docker-compose is 46 packages)."""
    cli = compose_cli()
    if cli is None:
        pytest.skip("no docker compose / docker-compose to validate with (apt-get install docker-compose)")
    for profile in ([], ["--profile", "tryout"]):
        result = subprocess.run([*cli, "-f", str(COMPOSE), *profile, "config", "-q"], capture_output=True,
                                text=True, timeout=60, cwd=ROOT)
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("service, config", [
    ("uploader", "configs/lab-server-local.yaml"),
    ("uploader", "configs/lab-server-atomscale.yaml"),
    ("bridge", "configs/tryout-bridge.yaml"),
])
def test_the_configs_compose_mounts_fit_the_containers(service: str, config: str) -> None:
    """The broker host is the compose service, every secret file is a secret the service has, and
    state and store directories are volumes (state on the container's own layer would be lost)."""
    spec = compose()["services"][service]
    cfg = load_config(ROOT / config)
    if service == "uploader":
        assert mounts(spec)[CONTAINER_CONFIG] in ("./configs/lab-server-local.yaml", f"./{config}")
        assert config in COMPOSE.read_text()  # the header tells how to choose it
    else:
        assert mounts(spec)[CONTAINER_CONFIG] == f"./{config}"
    assert cfg.mqtt.host in compose()["services"]
    secrets = {f"/run/secrets/{s}" for s in spec["secrets"]}
    assert str(cfg.mqtt.password_file) in secrets
    if cfg.uploader.sink.kind == "atomscale":
        assert str(cfg.uploader.sink.api_key_file) in secrets
    named = {target for target, source in mounts(spec).items() if not source.startswith(".")}
    if service == "uploader":
        assert str(cfg.uploader.state_dir) in named
        if cfg.uploader.sink.kind == "local":
            assert str(cfg.uploader.sink.path) in named
    else:
        assert str(cfg.bridge.state_dir) in named
    # its healthcheck's login: the monitor, a secret it has, and never the service's own user
    assert mounts(spec)[MONITOR_CONFIG] == "./configs/monitor.yaml"
    monitor = load_config(ROOT / "configs" / "monitor.yaml")
    assert monitor.mqtt.username == "monitor" != cfg.mqtt.username
    assert str(monitor.mqtt.password_file) in secrets and monitor.mqtt.host in compose()["services"]
    # a bridge's user name is its site (the acl's %u patterns); the uploader's client id is its user
    if service == "bridge":
        assert cfg.mqtt.username == cfg.site == monitor.site
    else:
        assert cfg.mqtt.username == cfg.uploader.client_id == "uploader"


# ====================================================================== Mosquitto

@pytest.fixture
def deploy_broker(tmp_path: Path) -> Iterator[ShippedBroker]:
    with shipped_broker(tmp_path / "mosquitto") as broker:
        yield broker


def test_mosquitto_settings_that_keep_data() -> None:
    settings = dict(conf_settings((MOSQUITTO / "mosquitto.conf").read_text()))
    assert settings["persistence"] == "true"
    assert 0 < int(settings["autosave_interval"]) <= 300  # docs/design.md section 12: the default 1800 s snapshot
    # docs/design.md section 12: the default 1000 dropped PUBACKed messages;
    # 0 (unlimited) bytes was buggy in 2.0.16-2.0.21
    assert int(settings["max_queued_messages"]) >= 100_000
    assert int(settings["max_queued_bytes"]) >= 100 * 2**20
    assert int(settings["max_inflight_messages"]) > 0
    assert settings["persistence_location"] == "/mosquitto/data/"


def test_mosquitto_settings_that_keep_strangers_out() -> None:
    settings = conf_settings((MOSQUITTO / "mosquitto.conf").read_text())
    single = dict(settings)
    assert single["allow_anonymous"] == "false"
    assert single["password_file"] == "/mosquitto/config/passwd"
    assert single["acl_file"] == "/mosquitto/config/acl"
    assert single["per_listener_settings"] == "false"  # the login and ACL rules hold on every listener
    # two listeners: 1883 plain (published on the host's loopback only), 8883 with TLS; each ties
    # client ids to users (a listener setting: once for all would leave the other listener open)
    listeners = [value for key, value in settings if key == "listener"]
    assert listeners == ["1883", "8883"]
    plain = dict(settings[settings.index(("listener", "1883")):settings.index(("listener", "8883"))])
    after_tls = dict(settings[settings.index(("listener", "8883")):])
    assert plain["use_username_as_clientid"] == after_tls["use_username_as_clientid"] == "true"
    assert after_tls["certfile"] == "/mosquitto/certs/server.crt"
    assert after_tls["keyfile"] == "/mosquitto/certs/server.key"
    assert "certfile" not in dict(settings[:settings.index(("listener", "8883"))])
    ports = compose()["services"]["mosquitto"]["ports"]
    assert sorted(ports) == ["127.0.0.1:1883:1883", "8883:8883"]


def test_the_shipped_acl_is_the_rule_set_the_demo_runs() -> None:
    """deploy/mosquitto/acl and simulators.services.broker.grants() say the same, line for line."""
    shipped = parse_acl((MOSQUITTO / "acl").read_text())
    assert shipped == parse_acl(mosquitto_acl("lab"))
    # a bridge: its own site's topics only, and never an ack or a command
    assert shipped["%u"] == {("readwrite", "lab/%u/status"), ("read", "lab/%u/ack"), ("read", "lab/%u/command"),
                             ("write", "lab/%u/data"), ("write", "lab/%u/run"), ("write", "lab/%u/command/reply")}
    writers = {user: {t for access, t in rules if access in ("write", "readwrite")} for user, rules in shipped.items()}
    assert [u for u, topics in writers.items() if any(t.endswith("/ack") for t in topics)] == ["uploader"]
    assert [u for u, topics in writers.items() if any(t.endswith("/command") for t in topics)] == ["operator"]
    assert writers["monitor"] == set()


def test_mosquitto_accepts_the_config_and_the_acls_hold(deploy_broker: ShippedBroker) -> None:
    def client(user: str | None, password: str | None = None) -> V5Client:
        return V5Client(deploy_broker.host, deploy_broker.port, user, password)

    anonymous = client(None)
    assert anonymous.connect_code.getName() == "Not authorized"
    anonymous.close()
    wrong = client("uploader", "wrong")
    assert wrong.connect_code.is_failure
    wrong.close()

    uploader, site_a, site_sim = client("uploader"), client("chamber-a"), client("sim-chamber")
    operator, monitor = client("operator"), client("monitor")
    clients = [uploader, site_a, site_sim, operator, monitor]
    try:
        assert all(not c.connect_code.is_failure for c in clients)
        # the uploader reads every site's data and status
        assert allowed(uploader.subscribe("lab/+/data")) and allowed(uploader.subscribe("lab/+/status"))
        assert allowed(site_a.publish("lab/chamber-a/data", b"from a"))
        assert allowed(site_sim.publish("lab/sim-chamber/data", b"from sim"))
        received = {uploader.messages.get(timeout=10) for _ in range(2)}
        assert received == {("lab/chamber-a/data", b"from a"), ("lab/sim-chamber/data", b"from sim")}
        # a bridge writes its own site's topics only, and cannot read the others'
        for topic in ("status", "run", "command/reply"):
            assert allowed(site_a.publish(f"lab/chamber-a/{topic}")), topic
        for topic in ("lab/sim-chamber/data", "lab/sim-chamber/status", "lab/sim-chamber/run", "lab/chamber-a/ack",
                      "lab/sim-chamber/ack", "lab/chamber-a/command", "lab/sim-chamber/command", "lab/uploader/status",
                      "lab/chamber-a/data/x", "other/chamber-a/data"):
            assert site_a.publish(topic).getName() == "Not authorized", topic
        assert allowed(site_a.subscribe("lab/chamber-a/ack")) and allowed(site_a.subscribe("lab/chamber-a/command"))
        # Mosquitto 2.0.11 grants any subscription and applies `read` per message: a bridge
        # subscribed to another site's commands gets none of them. The denied message is sent
        # first, so had it been delivered it would arrive before the allowed one.
        assert allowed(site_sim.subscribe("lab/sim-chamber/command"))
        denied = site_a.subscribe("lab/sim-chamber/command")
        assert allowed(operator.publish("lab/sim-chamber/command", b"for sim"))
        assert allowed(operator.publish("lab/chamber-a/command", b"for a"))
        assert site_sim.messages.get(timeout=10) == ("lab/sim-chamber/command", b"for sim")
        assert site_a.messages.get(timeout=10) == ("lab/chamber-a/command", b"for a"), denied
        # the uploader acknowledges and reports, and cannot forge data or commands, not even as a
        # "site" named like itself (the %u patterns would give it lab/uploader/data: denied)
        assert allowed(uploader.publish("lab/chamber-a/ack")) and allowed(uploader.publish("lab/uploader/status"))
        for topic in ("lab/chamber-a/data", "lab/chamber-a/command", "lab/uploader/data", "lab/uploader/run"):
            assert uploader.publish(topic).getName() == "Not authorized", topic
        # operators send commands, read replies, statuses and $SYS; they cannot write data or acks
        assert allowed(operator.subscribe("lab/+/command/reply")) and allowed(operator.subscribe("$SYS/broker/#"))
        for topic in ("lab/chamber-a/data", "lab/chamber-a/ack", "lab/operator/data", "lab/operator/status"):
            assert operator.publish(topic).getName() == "Not authorized", topic
        # the health probes' user writes nothing at all
        for topic in ("lab/chamber-a/status", "lab/uploader/status", "lab/monitor/data", "lab/monitor/status",
                      "lab/chamber-a/ack", "lab/chamber-a/command"):
            assert monitor.publish(topic).getName() == "Not authorized", topic
    finally:
        for c in clients:
            c.close()


def test_no_login_takes_over_another_users_client_id(deploy_broker: ShippedBroker) -> None:
    """use_username_as_clientid: the uploader's fixed client id is worthless to anyone else. A
    bridge, the operator or the monitor claiming it does not disconnect the uploader."""
    def client(user: str | None, client_id: str) -> V5Client:
        return V5Client(deploy_broker.host, deploy_broker.port, user, client_id=client_id)

    uploader = client("uploader", "uploader")
    others = []
    try:
        assert allowed(uploader.connect_code) and allowed(uploader.subscribe("lab/+/data"))
        # (the refused anonymous claim is tests/hostile/test_broker_auth.py's: on Mosquitto < 2.0.13
        # it unlinks the uploader's session, and later same-user logins no longer replace it)
        for user in ("chamber-a", "operator", "monitor"):
            for client_id in ("uploader", "chamber-bridge-uploader"):
                other = client(user, client_id)
                assert allowed(other.connect_code), (user, client_id)
                other.close()  # one at a time: two logins of one user would replace each other
        # the uploader kept its one connection and its subscription
        assert uploader.disconnects.empty() and uploader.client.is_connected()
        site_a = client("chamber-a", "uploader")
        others.append(site_a)
        assert allowed(site_a.publish("lab/chamber-a/data", b"still here"))
        assert uploader.messages.get(timeout=10) == ("lab/chamber-a/data", b"still here")
        assert uploader.disconnects.empty()
        # the price, documented in mosquitto.conf: a second login of the SAME user replaces the first
        second = client("uploader", "whatever")
        others.append(second)
        assert allowed(second.connect_code)
        uploader.disconnects.get(timeout=10)  # 2.0.11 just closes the socket, with no reason code
    finally:
        for c in [uploader, *others]:
            c.close()


def test_tls_listener_checks_the_broker_and_keeps_the_rules(deploy_broker: ShippedBroker, tmp_path: Path) -> None:
    """8883: a client that trusts the lab CA (make-certs.sh) gets in with its login; anonymous
    stays out; a client with another CA refuses the broker; ACLs hold there as on 1883."""
    port, ca = deploy_broker.tls_port, deploy_broker.ca_file
    bridge = V5Client(deploy_broker.host, port, "chamber-a", ca_file=ca)
    try:
        assert allowed(bridge.connect_code)
        assert allowed(bridge.publish("lab/chamber-a/data"))
        assert bridge.publish("lab/sim-chamber/data").getName() == "Not authorized"
        assert bridge.publish("lab/chamber-a/ack").getName() == "Not authorized"
    finally:
        bridge.close()
    anonymous = V5Client(deploy_broker.host, port, None, ca_file=ca)
    assert anonymous.connect_code.getName() == "Not authorized"
    anonymous.close()
    other_ca = tmp_path / "other-ca"
    subprocess.run(["bash", str(MOSQUITTO / "make-certs.sh"), "--out", str(other_ca), "127.0.0.1"], check=True,
                   capture_output=True, timeout=60)
    with pytest.raises(ssl.SSLCertVerificationError):
        V5Client(deploy_broker.host, port, "chamber-a", ca_file=other_ca / "tls-ca" / "ca.crt")
    # the plain listener does not speak TLS, and the TLS one does not speak plain MQTT
    plain = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="plain-on-tls", protocol=MQTTProtocolVersion.MQTTv5)
    plain.username_pw_set("chamber-a", USERS["chamber-a"])
    codes: queue.Queue[Any] = queue.Queue()
    plain.on_connect = lambda c, u, f, rc, p: codes.put(rc)
    plain.connect(deploy_broker.host, port, keepalive=5)
    plain.loop_start()
    try:
        with pytest.raises(queue.Empty):
            codes.get(timeout=2)
    finally:
        plain.disconnect()
        plain.loop_stop()


def test_make_certs_sh(tmp_path: Path) -> None:
    script = MOSQUITTO / "make-certs.sh"
    if shutil.which("shellcheck"):
        lint = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout
    out = tmp_path / "secrets"
    first = subprocess.run(["bash", str(script), "--out", str(out), "lab-server.lab.lan", "10.0.0.5"],
                           capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    for name in ("IP:10.0.0.5", "DNS:lab-server.lab.lan", "DNS:mosquitto"):
        assert name in first.stdout, first.stdout
    ca = (out / "tls-ca" / "ca.crt").read_bytes()
    for key in (out / "tls-ca" / "ca.key", out / "mosquitto-tls" / "server.key"):
        assert key.stat().st_mode & 0o077 == 0, key  # private keys: owner only
    assert (out / "mosquitto-tls" / "ca.crt").read_bytes() == ca
    again = subprocess.run(["bash", str(script), "--out", str(out), "lab-server.lab.lan"], capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 0 and "CA kept" in again.stdout
    assert (out / "tls-ca" / "ca.crt").read_bytes() == ca  # renewing keeps the CA the Pis trust
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(out / "tls-ca" / "ca.crt"),
                             str(out / "mosquitto-tls" / "server.crt")], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    bad = subprocess.run(["bash", str(script), "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and "name the broker" in bad.stderr


def test_a_run_goes_through_the_shipped_broker_config_under_its_acls(
        deploy_broker: ShippedBroker, gauges: Any, tmp_path: Path) -> None:
    """The real bridge (user chamber-a, over TLS on the 8883 listener as configs/pi-mbe.yaml),
    uploader (uploader, plain 1883 as in compose) and start-run/stop-run (operator) do everything
    they need within the ACLs; health works with the monitor's and the operator's logins; the
    retained status survives a broker restart (persistence)."""
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    for user, password in USERS.items():
        write_secret(secrets / user, password + "\n")

    def mqtt_for(user: str, tls: bool = False) -> dict[str, Any]:
        raw: dict[str, Any] = {"host": deploy_broker.host, "port": deploy_broker.port, "keepalive": 5,
                               "username": user, "password_file": str(secrets / user)}
        if tls:
            raw.update(port=deploy_broker.tls_port, tls={"ca_file": str(deploy_broker.ca_file)})
        return raw

    bridge_raw = {"site": "chamber-a", "mqtt": mqtt_for("chamber-a", tls=True), "bridge": {
        "state_dir": str(tmp_path / "bridge-state"), "instruments": [
            {"name": f"gauge{i}", "driver": "pfeiffer_tpg", "interval": 0.02,
             "transport": {"kind": "serial", "port": server.url, "timeout": 0.3},
             "options": {"channels": [1, 2], "settle": 0.02}} for i, (_, server) in enumerate(gauges, 1)]}}
    store = tmp_path / "store"
    uploader_raw = {"site": "lab-server", "mqtt": mqtt_for("uploader"), "uploader": {
        "state_dir": str(tmp_path / "uploader-state"), "points_per_chunk": 10, "client_id": "uploader",
        "sink": {"kind": "local", "path": str(store)}}}
    operator = parse_config({"site": "chamber-a", "mqtt": mqtt_for("operator")})
    monitor = parse_config({"site": "chamber-a", "mqtt": mqtt_for("monitor")})

    bridge = RecordingBridge(parse_config(bridge_raw)).start()
    uploader = UploaderService(parse_config(uploader_raw),
                               settings=UploaderSettings(status_interval=0.5, backoff_initial=0.1, backoff_cap=1.0))
    uploader.start()
    try:
        wait_for(lambda: bridge.outbox.acked_seq > 20, what="the uploader to acknowledge the bridge's data")
        reply = request(operator.mqtt, "chamber-a", "start_run", {"stream_name": "acl-run", "tags": []})
        assert reply.ok, reply.message
        run_id = reply.message.split()[1]
        wait_for(lambda: len(bridge.recorded.entries) > 100, what="readings in the run")
        stop = request(operator.mqtt, "chamber-a", "stop_run", {"exit_status": "success"})
        stop_seq = stop.seq
        assert stop.ok and stop_seq is not None, stop.message
        wait_for(lambda: finalized(store, run_id), what="the run to be finalized")
        wait_for(lambda: bridge.outbox.acked_seq >= stop_seq, what="the outbox to drain past the run")
        for role in ROLES:
            health = check_health(monitor, role)
            assert health.healthy, health.message
        assert check_health(operator, "bridge").healthy  # operators watch every site
        # the bridge's retained run state got through too (the run is closed now)
        run_state = json.loads(fetch_retained(operator.mqtt, "lab/chamber-a/run", 5.0))
        assert run_state["site"] == "chamber-a" and run_state["run"] is None
        # the probes never disturbed the services' own connections
        assert bridge.service.publisher.connected and uploader.subscriber.connected.is_set()
    finally:
        uploader.stop()
        bridge.stop()
    deploy_broker.stop()  # SIGTERM: the snapshot is written
    assert (deploy_broker.workdir / "mosquitto.db").exists()
    deploy_broker.start()
    after = check_health(monitor, "uploader")
    assert not after.healthy and after.message.startswith("offline: the uploader went offline")


# ====================================================================== Raspberry Pi


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (PI / "chamber-bridge.service").read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def install_setting(name: str) -> str:
    match = re.search(rf"^{name}=(\S+)$", (PI / "install.sh").read_text(), re.M)
    assert match, name
    return match[1]


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: scripts/test.sh installs the Debian package systemd"
    unit = tmp_path / "chamber-bridge.service"
    text = (PI / "chamber-bridge.service").read_text()
    # verify checks that ExecStart's binary exists: point it at one that does (the venv is not here)
    executable = shutil.which("true") or "/bin/true"
    exec_start = re.search(r"^ExecStart=(\S+) ", text, re.M)
    assert exec_start
    unit.write_text(text.replace(f"ExecStart={exec_start[1]} ", f"ExecStart={executable} "))
    result = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # unknown keys and bad values only warn
    security = subprocess.run([analyze, "security", "--offline=yes", str(unit)], capture_output=True, text=True,
                              timeout=60)
    if security.returncode == 0 or "Overall exposure level" in security.stdout:
        exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
        assert exposure and float(exposure[1]) <= 3.0, security.stdout[-2000:]


def test_systemd_unit_settings() -> None:
    settings = unit_settings()
    prefix = install_setting("prefix")
    assert settings["ExecStart"] == [f"{prefix}/bin/chamber-bridge poll {CONTAINER_CONFIG}"]
    assert settings["Restart"] == ["on-failure"] and float(settings["RestartSec"][0]) > 0
    assert settings["User"] == [install_setting("user")] == ["chamber-bridge"]
    assert settings["SupplementaryGroups"] == ["dialout"]
    assert settings["StateDirectory"] == ["chamber-bridge"]
    state_dir = load_config(ROOT / "configs" / "pi-mbe.yaml").bridge.state_dir
    assert str(state_dir) == "/var/lib/chamber-bridge"  # where StateDirectory= puts it
    for key in ("After", "Wants"):
        assert set(" ".join(settings[key]).split()) >= {"network-online.target", "time-sync.target"}
    # options that would cut the bridge off its serial adapters
    for key in ("PrivateDevices", "DeviceAllow", "DevicePolicy", "ProtectClock", "PrivateUsers"):
        assert key not in settings, key
    assert settings["NoNewPrivileges"] == ["yes"] and settings["ProtectSystem"] == ["strict"]


def test_install_sh_dry_run_prints_the_steps_and_changes_nothing() -> None:
    script = PI / "install.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    if shutil.which("shellcheck"):
        lint = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout
    targets = [Path("/opt/chamber-bridge"), Path("/etc/systemd/system/chamber-bridge.service"),
               Path("/etc/udev/rules.d/99-chamber-bridge.rules"), Path("/etc/chamber-bridge")]
    before = {t: t.exists() for t in targets}
    result = subprocess.run(["bash", str(script), "--dry-run"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert {t: t.exists() for t in targets} == before
    assert out.startswith("dry run: nothing is changed")
    steps = [line[3:] for line in out.splitlines() if line.startswith("== ")]
    assert steps == ["Debian packages: python3-venv", "system user chamber-bridge in group dialout",
                     "virtual environment /opt/chamber-bridge", "config /etc/chamber-bridge/config.yaml",
                     "udev rules /etc/udev/rules.d/99-chamber-bridge.rules",
                     "systemd unit /etc/systemd/system/chamber-bridge.service", "done"]
    commands = [line[2:] for line in out.splitlines() if line.startswith("+ ")]
    pip = [c for c in commands if " -m pip install " in c and "--upgrade pip" not in c]
    # the main distribution alone: no server extra, no simulators (their own distribution, simulators/)
    assert pip == [f"/opt/chamber-bridge/bin/python -m pip install --quiet --upgrade {ROOT}"]
    assert f"install -m 0644 {PI}/chamber-bridge.service /etc/systemd/system/chamber-bridge.service" in commands
    assert "systemctl enable chamber-bridge.service" in commands
    assert any("99-chamber-bridge.rules" in c for c in commands) or "rules.d/99-chamber-bridge.rules exists" in out
    user_step = out.split("== system user")[1].split("==")[0]
    assert "useradd --system --user-group --groups dialout" in user_step or "is in dialout" in user_step
    bad = subprocess.run(["bash", str(script), "--no-such-option"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option" in bad.stderr


def test_the_pi_talks_tls_to_8883_with_its_own_site_login() -> None:
    """configs/pi-mbe.yaml: the broker's TLS listener, the lab CA under /etc/chamber-bridge, the
    user named like the site (the acl's patterns); install.sh --ca-file installs that CA."""
    cfg = load_config(ROOT / "configs" / "pi-mbe.yaml")
    assert cfg.mqtt.port == 8883 and cfg.mqtt.tls is not None
    assert str(cfg.mqtt.tls.ca_file) == "/etc/chamber-bridge/ca.crt"
    assert cfg.mqtt.username == cfg.site
    assert str(cfg.mqtt.password_file) == "/etc/chamber-bridge/mqtt_password"
    result = subprocess.run(["bash", str(PI / "install.sh"), "--dry-run", "--ca-file", "/tmp/lab-ca.crt"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "+ install -m 0644 -o root -g root /tmp/lab-ca.crt /etc/chamber-bridge/ca.crt" in result.stdout
    assert "mode 0600" in result.stdout  # the password file: owner-only
    readme = (PI / "README.md").read_text()
    assert "8883" in readme and "/etc/chamber-bridge/ca.crt" in readme


UDEV_MATCH = re.compile(r"^(ACTION|SUBSYSTEMS?|KERNELS?|DRIVERS?|ATTRS?\{[\w/]+\}|ENV\{\w+\})$")
UDEV_ASSIGN = re.compile(r"^(SYMLINK|GROUP|MODE|OWNER|ATTR\{[\w/]+\}|ENV\{\w+\}|TAG|RUN)$")
UDEV_PAIR = re.compile(r'^\s*([A-Z]+(?:\{[\w/]+\})?)\s*(==|!=|\+=|:=|-=|=)\s*"([^"]*)"\s*$')


def udev_rules() -> list[list[tuple[str, str, str]]]:
    """Each rule as (key, operator, value) triples; raises on anything that is not KEY op "value"."""
    rules = []
    for number, line in enumerate((PI / "99-chamber-bridge.rules").read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pairs = []
        for part in re.split(r',(?=(?:[^"]*"[^"]*")*[^"]*$)', line):  # commas outside quotes
            match = UDEV_PAIR.match(part)
            assert match, f"line {number}: not KEY op \"value\": {part!r}"
            pairs.append((match[1], match[2], match[3]))
        rules.append(pairs)
    return rules


def test_udev_rules_syntax_and_names() -> None:
    udevadm = shutil.which("udevadm")
    if udevadm and subprocess.run([udevadm, "verify", "--help"], capture_output=True).returncode == 0:
        result = subprocess.run([udevadm, "verify", str(PI / "99-chamber-bridge.rules")], capture_output=True,
                                text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    rules = udev_rules()
    assert rules
    symlinks = set()
    for rule in rules:
        matches = [(k, v) for k, op, v in rule if op in ("==", "!=")]
        assigns = [(k, op, v) for k, op, v in rule if op not in ("==", "!=")]
        assert matches and assigns, rule
        for key, _ in matches:
            assert UDEV_MATCH.match(key), key
        for key, op, value in assigns:
            assert UDEV_ASSIGN.match(key), key
            if key == "SYMLINK":
                assert op == "+=" and value.startswith("chamber/"), value
                symlinks.add(value)
            if key == "MODE":
                assert re.fullmatch(r"0[0-7]{3}", value), value
            if key == "GROUP":
                assert value == "dialout"
    # USB vendors covered: FTDI, Prolific, WCH (CH340)
    vendors = {v for rule in rules for k, _, v in rule if k == "ATTRS{idVendor}"}
    assert {"0403", "067b", "1a86"} <= vendors
    # every /dev/chamber/<name> the Pi config uses has a rule
    used = set(re.findall(r"/dev/(chamber/[\w.-]+)", (ROOT / "configs" / "pi-mbe.yaml").read_text()))
    assert used and used <= symlinks, used - symlinks


# ====================================================================== the try-out bridge


def test_tryout_run_bridge_merges_the_simulated_chamber_into_the_bridge_config(tmp_path: Path) -> None:
    simulated, merged = tmp_path / "simulated-instruments.yaml", tmp_path / "config.yaml"
    with simulate("chamber", "--site", "sim-chamber", "--write-config", str(simulated)):
        result = subprocess.run(
            [sys.executable, str(ROOT / "deploy" / "tryout" / "run-bridge.py"), str(ROOT / "configs" /
             "tryout-bridge.yaml"), str(simulated), str(merged), "--no-exec", "--wait", "20"],
            capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    base = yaml.safe_load((ROOT / "configs" / "tryout-bridge.yaml").read_text())
    out = yaml.safe_load(merged.read_text())
    assert out["site"] == "sim-chamber" and out["mqtt"] == base["mqtt"]
    assert out["bridge"]["state_dir"] == base["bridge"]["state_dir"]
    assert out["bridge"]["instruments"] == yaml.safe_load(simulated.read_text())["bridge"]["instruments"]
    assert len(out["bridge"]["instruments"]) >= 5
    assert load_config(merged).site == "sim-chamber"
