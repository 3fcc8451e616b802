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
import os
import queue
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bridge.config import load_config, parse_config
from bridge.health import check_health, fetch_retained
from bridge.publish.request import request
from bridge.uploader.service import UploaderService, UploaderSettings
from simulators.pfeiffer_tpg import TPGSimulator
from simulators.serving import TcpServer
from tests.helpers.cli import ROOT, simulate
from tests.helpers.mosquitto import MosquittoBroker, mosquitto_binary
from tests.helpers.uploader import RecordingBridge, finalized, tpg_gauges, wait_for

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
MOSQUITTO = ROOT / "deploy" / "mosquitto"
PI = ROOT / "deploy" / "pi"
CONTAINER_CONFIG = "/etc/chamber-bridge/config.yaml"


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
    assert yaml.safe_load(command)[:5] == ["chamber-bridge", "health", CONTAINER_CONFIG, "--role", "uploader"]
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


def test_the_dockerfile_install_steps_in_a_fresh_virtual_environment(
        tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    """COPY the same sources into a build context, run the same pip install in a fresh venv
    (python3 -m venv: no project packages in it), then run the installed console script."""
    args = pip_install_args()
    assert args == ["--no-cache-dir", ".[server]"]
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
    assert "1883:1883" in mosquitto["ports"]
    assert mounts(mosquitto)["/mosquitto/config"] == "./deploy/mosquitto"
    assert any(v.endswith(":ro") for v in mosquitto["volumes"] if v.startswith("./deploy/mosquitto:"))
    assert not mounts(mosquitto)["/mosquitto/data"].startswith(".")  # a named volume

    uploader = services["uploader"]
    assert uploader["build"] == "."
    assert "mosquitto" in uploader["depends_on"]
    assert uploader["restart"] == "unless-stopped"
    assert uploader["command"] == ["upload", CONTAINER_CONFIG]
    assert set(uploader["secrets"]) == {"mqtt_uploader_password", "atomscale_api_key"}
    uid = image_uid()
    assert uploader["user"] == f"{uid}:{uid}"
    health = uploader["healthcheck"]
    assert health["test"][:6] == ["CMD", "chamber-bridge", "health", CONTAINER_CONFIG, "--role", "uploader"]
    assert {"interval", "timeout", "retries"} <= set(health)

    chamber, bridge = services["chamber"], services["bridge"]
    assert chamber["command"][:2] == ["simulate", "chamber"]
    assert bridge["network_mode"] == "service:chamber"
    assert bridge["entrypoint"] == ["python", "/opt/tryout/run-bridge.py"]
    assert '"poll"' in (ROOT / "deploy" / "tryout" / "run-bridge.py").read_text()
    assert bridge["healthcheck"]["test"][:3] == ["CMD", "chamber-bridge", "health"]
    assert "--role" in bridge["healthcheck"]["test"] and "bridge" in bridge["healthcheck"]["test"]
    for service in services.values():
        if service.get("image", "").startswith("chamber-bridge") or "build" in service:
            assert service["user"] == f"{uid}:{uid}"


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
            if source.startswith("."):
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


# ====================================================================== Mosquitto

USERS = {"uploader": "up-pw", "operator": "op-pw", "bridge-chamber-a": "a-pw", "bridge-sim-chamber": "sim-pw"}
REWRITTEN = {"listener", "persistence_location", "password_file", "acl_file", "user", "log_dest"}


def conf_settings(text: str) -> list[tuple[str, str]]:
    """(key, value) of every setting line of a mosquitto.conf."""
    settings = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            settings.append((key, value.strip()))
    return settings


def rewrite_for_test(text: str, port: int, workdir: Path, passwd: Path) -> str:
    """The shipped config with only paths, the listener's port and `user` changed."""
    out = []
    for line in text.splitlines():
        key = line.split(None, 1)[0] if line.strip() and not line.lstrip().startswith("#") else ""
        if key == "listener":
            line = f"listener {port} 127.0.0.1"
        elif key == "persistence_location":
            line = f"persistence_location {workdir}/"
        elif key == "password_file":
            line = f"password_file {passwd}"
        elif key == "acl_file":
            line = f"acl_file {MOSQUITTO / 'acl'}"  # the shipped file itself
        elif key == "log_dest":
            line = f"log_dest file {workdir / 'mosquitto.log'}"
        elif key == "user" and os.geteuid() == 0:
            line = "user root"  # the test's files belong to root (RELIABILITY.md: the broker drops privileges)
        out.append(line)
    return "\n".join(out) + "\n"


class DeployBroker(MosquittoBroker):
    """A private mosquitto running the shipped mosquitto.conf and acl."""

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        passwd = self.workdir / "passwd"
        passwd.unlink(missing_ok=True)
        tool = str(Path(mosquitto_binary()).with_name("mosquitto_passwd"))
        if not os.path.exists(tool):
            tool = shutil.which("mosquitto_passwd") or "mosquitto_passwd"
        for name, password in USERS.items():
            create = [] if passwd.exists() else ["-c"]
            subprocess.run([tool, "-b", *create, str(passwd), name, password], check=True)
        shipped = (MOSQUITTO / "mosquitto.conf").read_text()
        rewritten = rewrite_for_test(shipped, self.port, self.workdir, passwd)
        changed = {a[0] for a, b in zip(conf_settings(shipped), conf_settings(rewritten), strict=True) if a != b}
        assert changed <= REWRITTEN, changed
        self.config_path.write_text(rewritten)


@pytest.fixture
def deploy_broker(tmp_path: Path) -> Iterator[DeployBroker]:
    broker = DeployBroker(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


def test_mosquitto_settings_that_keep_data() -> None:
    settings = dict(conf_settings((MOSQUITTO / "mosquitto.conf").read_text()))
    assert settings["persistence"] == "true"
    assert 0 < int(settings["autosave_interval"]) <= 300  # RELIABILITY.md: the default 1800 s snapshot
    # RELIABILITY.md: the default 1000 dropped PUBACKed messages; 0 (unlimited) bytes was buggy in 2.0.16-2.0.21
    assert int(settings["max_queued_messages"]) >= 100_000
    assert int(settings["max_queued_bytes"]) >= 100 * 2**20
    assert int(settings["max_inflight_messages"]) > 0
    assert settings["allow_anonymous"] == "false"
    assert settings["password_file"] == "/mosquitto/config/passwd"
    assert settings["acl_file"] == "/mosquitto/config/acl"
    assert settings["persistence_location"] == "/mosquitto/data/"


class Client:
    """An MQTT v5 client that reports reason codes (3.1.1 would hide denials, RELIABILITY.md)."""

    def __init__(self, broker: MosquittoBroker, user: str | None, password: str | None = None) -> None:
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"acl-test-{user}",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        if user is not None:
            self.client.username_pw_set(user, USERS.get(user) if password is None else password)
        self.client.on_connect = lambda c, u, f, rc, p: self.events.put(("connect", rc))
        self.client.on_publish = lambda c, u, mid, rc, p: self.events.put(("publish", rc))
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.events.put(("subscribe", rcs[0]))
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        self.connect_code = self._next("connect")

    def _next(self, kind: str) -> Any:
        got, value = self.events.get(timeout=10)
        assert got == kind, (got, value)
        return value

    def publish(self, topic: str, payload: bytes = b"x") -> Any:
        self.client.publish(topic, payload, qos=1)
        return self._next("publish")

    def subscribe(self, topic: str) -> Any:
        self.client.subscribe(topic, qos=1)
        return self._next("subscribe")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def allowed(code: Any) -> bool:
    return not code.is_failure  # 0x10 "no matching subscribers" is a success


def test_mosquitto_accepts_the_config_and_the_acls_hold(deploy_broker: DeployBroker) -> None:
    anonymous = Client(deploy_broker, None)
    assert anonymous.connect_code.is_failure
    anonymous.close()
    wrong = Client(deploy_broker, "uploader", "wrong")
    assert wrong.connect_code.is_failure
    wrong.close()

    uploader = Client(deploy_broker, "uploader")
    site_a, site_sim = Client(deploy_broker, "bridge-chamber-a"), Client(deploy_broker, "bridge-sim-chamber")
    operator = Client(deploy_broker, "operator")
    clients = [uploader, site_a, site_sim, operator]
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
        for topic in ("lab/sim-chamber/data", "lab/sim-chamber/status", "lab/chamber-a/ack",
                      "lab/chamber-a/command", "lab/uploader/status"):
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
        # the uploader acknowledges and reports, and cannot forge data or commands
        assert allowed(uploader.publish("lab/chamber-a/ack")) and allowed(uploader.publish("lab/uploader/status"))
        assert uploader.publish("lab/chamber-a/data").getName() == "Not authorized"
        assert uploader.publish("lab/chamber-a/command").getName() == "Not authorized"
        # operators send commands, read replies, statuses and $SYS; they cannot write data
        assert allowed(operator.subscribe("lab/+/command/reply")) and allowed(operator.subscribe("$SYS/broker/#"))
        assert operator.publish("lab/chamber-a/data").getName() == "Not authorized"
        assert operator.publish("lab/chamber-a/ack").getName() == "Not authorized"
    finally:
        for client in clients:
            client.close()


@pytest.fixture
def gauges() -> Iterator[list[tuple[TPGSimulator, TcpServer]]]:
    pairs = tpg_gauges()
    yield pairs
    for _, server in pairs:
        server.stop()


def test_a_run_goes_through_the_shipped_broker_config_under_its_acls(
        deploy_broker: DeployBroker, gauges: Any, tmp_path: Path) -> None:
    """The real bridge (bridge-chamber-a), uploader (uploader) and start-run/stop-run (operator) do
    everything they need within the ACLs; health works with each one's own login; the retained
    status survives a broker restart (persistence)."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for user, password in USERS.items():
        (secrets / user).write_text(password + "\n")

    def mqtt_for(user: str) -> dict[str, Any]:
        return {"host": deploy_broker.host, "port": deploy_broker.port, "keepalive": 5, "username": user,
                "password_file": str(secrets / user)}

    bridge_raw = {"site": "chamber-a", "mqtt": mqtt_for("bridge-chamber-a"), "bridge": {
        "state_dir": str(tmp_path / "bridge-state"), "instruments": [
            {"name": f"gauge{i}", "driver": "pfeiffer_tpg", "interval": 0.02,
             "transport": {"kind": "serial", "port": server.url, "timeout": 0.3},
             "options": {"channels": [1, 2], "settle": 0.02}} for i, (_, server) in enumerate(gauges, 1)]}}
    store = tmp_path / "store"
    uploader_raw = {"site": "lab-server", "mqtt": mqtt_for("uploader"), "uploader": {
        "state_dir": str(tmp_path / "uploader-state"), "points_per_chunk": 10, "client_id": "acl-test-uploader",
        "sink": {"kind": "local", "path": str(store)}}}
    operator = parse_config({"site": "chamber-a", "mqtt": mqtt_for("operator")})

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
        for raw, role in ((uploader_raw, "uploader"), (bridge_raw, "bridge")):
            health = check_health(parse_config(raw), role)  # type: ignore[arg-type]
            assert health.healthy, health.message
        assert check_health(operator, "bridge").healthy  # operators watch every site
        # the bridge's retained run state got through too (the run is closed now)
        run_state = json.loads(fetch_retained(operator.mqtt, "lab/chamber-a/run", 5.0))
        assert run_state["site"] == "chamber-a" and run_state["run"] is None
    finally:
        uploader.stop()
        bridge.stop()
    deploy_broker.stop()  # SIGTERM: the snapshot is written
    assert (deploy_broker.workdir / "mosquitto.db").exists()
    deploy_broker.start()
    after = check_health(parse_config(uploader_raw), "uploader")
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
    assert pip == [f"/opt/chamber-bridge/bin/python -m pip install --quiet --upgrade {ROOT}"]  # no server extra
    assert f"install -m 0644 {PI}/chamber-bridge.service /etc/systemd/system/chamber-bridge.service" in commands
    assert "systemctl enable chamber-bridge.service" in commands
    assert any("99-chamber-bridge.rules" in c for c in commands) or "rules.d/99-chamber-bridge.rules exists" in out
    user_step = out.split("== system user")[1].split("==")[0]
    assert "useradd --system --user-group --groups dialout" in user_step or "is in dialout" in user_step
    bad = subprocess.run(["bash", str(script), "--no-such-option"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option" in bad.stderr


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
