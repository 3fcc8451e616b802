"""The YAML config (DESIGN.md section 8) as typed models, with every problem named by key path.

Validation happens in two passes so that one run reports all problems of a file at once:
pydantic checks structure and types of the whole document, then each instrument's driver,
transport kind and driver options are checked against the driver registry on the raw data,
even where the first pass already failed elsewhere.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bridge.errors import ConfigError, ConfigProblem
from bridge.names import NAME_PATTERN

INLINE_SECRET = "secrets are never written inline; use {file} or {env}"


class StrictModel(BaseModel):
    """Unknown keys are errors: a misspelt key must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def read_secret(file: Path | None, env: str | None, what: str) -> str | None:
    """Read a secret from a file (Docker/systemd secrets) or an environment variable."""
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError([ConfigProblem(what, f"cannot read {file}: {exc.strerror}")]) from exc
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError([ConfigProblem(what, f"environment variable {env} is not set")])
        return value
    return None


# ---------------------------------------------------------------- transports

Parity = Literal["N", "E", "O", "M", "S"]
Timeout = Annotated[float, Field(gt=0, le=60)]
TcpPort = Annotated[int, Field(ge=1, le=65535)]
ModbusUnit = Annotated[int, Field(ge=0, le=247)]
STANDARD_BAUDRATES = (300, 600, 1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200,
                      230400, 460800, 921600)


class _SerialLine(StrictModel):
    port: str = Field(min_length=1)
    baudrate: int = 9600
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Parity = "N"
    stopbits: float = 1
    timeout: Timeout = 1.0

    @field_validator("stopbits")
    @classmethod
    def _stopbits(cls, v: float) -> float:
        if v not in (1, 1.5, 2):
            raise ValueError("stopbits must be 1, 1.5 or 2")
        return v

    @field_validator("baudrate")
    @classmethod
    def _standard_baudrate(cls, v: int) -> int:
        if v not in STANDARD_BAUDRATES:
            raise ValueError(f"{v} is not a standard baud rate ({', '.join(map(str, STANDARD_BAUDRATES))})")
        return v


class SerialTransportConfig(_SerialLine):
    """A serial line: a device path, or a pyserial URL such as socket://host:port."""

    kind: Literal["serial"]


class ModbusTcpTransportConfig(StrictModel):
    kind: Literal["modbus_tcp"]
    host: str = Field(min_length=1)
    port: TcpPort = 502
    unit: ModbusUnit = 1
    timeout: Timeout = 1.0


class ModbusRtuTransportConfig(_SerialLine):
    """Modbus RTU. The baud default is 9600 (Eurotherm's), not pymodbus' 19200."""

    kind: Literal["modbus_rtu"]
    unit: ModbusUnit = 1


class VisaTransportConfig(StrictModel):
    kind: Literal["visa"]
    resource: str = Field(min_length=1)
    backend: str = "@py"
    read_termination: str | None = "\n"
    write_termination: str = "\n"
    timeout: Timeout = 2.0

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if not (v == "@py" or v.endswith("@sim")):
            raise ValueError("backend must be '@py' (pyvisa-py) or '@sim' / 'FILE.yaml@sim' (pyvisa-sim)")
        return v


TransportConfig = Annotated[
    SerialTransportConfig | ModbusTcpTransportConfig | ModbusRtuTransportConfig | VisaTransportConfig,
    Field(discriminator="kind"),
]
TRANSPORT_KINDS = ("serial", "modbus_tcp", "modbus_rtu", "visa")


# ---------------------------------------------------------------- sections


class TlsConfig(StrictModel):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


class MqttConfig(StrictModel):
    host: str = "127.0.0.1"
    port: TcpPort = 1883
    topic_prefix: str = Field(default="lab", pattern=r"^[^#+/][^#+]*$")
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    password: None = None
    tls: TlsConfig | None = None
    keepalive: Annotated[int, Field(ge=2, le=600)] = 15
    #: MQTT protocol version: "5" (reason codes on every ack) or "3.1.1"
    protocol: Literal["5", "3.1.1"] = "5"

    @field_validator("password", mode="before")
    @classmethod
    def _no_inline_password(cls, v: object) -> None:
        if v is not None:
            raise ValueError(INLINE_SECRET.format(file="password_file", env="password_env"))
        return None

    def read_password(self) -> str | None:
        return read_secret(self.password_file, self.password_env, "mqtt.password_file")


class InstrumentConfig(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    driver: str = Field(min_length=1)
    interval: Annotated[float, Field(gt=0, le=3600)] = 1.0
    transport: TransportConfig
    options: dict[str, Any] = Field(default_factory=dict)


class BridgeSection(StrictModel):
    state_dir: Path = Path("/var/lib/chamber-bridge")
    instruments: list[InstrumentConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> BridgeSection:
        seen: set[str] = set()
        for inst in self.instruments:
            if inst.name in seen:
                raise ValueError(f"instrument name {inst.name!r} is used twice")
            seen.add(inst.name)
        return self

    def instrument(self, name: str) -> InstrumentConfig:
        for inst in self.instruments:
            if inst.name == name:
                return inst
        known = ", ".join(i.name for i in self.instruments) or "none"
        raise ConfigError([ConfigProblem("bridge.instruments", f"no instrument named {name!r} (known: {known})")])


class LocalSinkConfig(StrictModel):
    kind: Literal["local"]
    path: Path = Path("./runs")


class AtomscaleSinkConfig(StrictModel):
    kind: Literal["atomscale"]
    endpoint: str = Field(pattern=r"^https?://")
    api_key_file: Path | None = None
    api_key_env: str | None = None
    api_key: None = None

    @field_validator("api_key", mode="before")
    @classmethod
    def _no_inline_key(cls, v: object) -> None:
        if v is not None:
            raise ValueError(INLINE_SECRET.format(file="api_key_file", env="api_key_env"))
        return None

    @model_validator(mode="after")
    def _key_source(self) -> AtomscaleSinkConfig:
        if self.api_key_file is None and self.api_key_env is None:
            raise ValueError("the atomscale sink needs api_key_file or api_key_env")
        return self

    def read_api_key(self) -> str | None:
        return read_secret(self.api_key_file, self.api_key_env, "uploader.sink.api_key_file")


SinkConfig = Annotated[LocalSinkConfig | AtomscaleSinkConfig, Field(discriminator="kind")]


class UploaderSection(StrictModel):
    state_dir: Path = Path("/var/lib/chamber-bridge-uploader")
    points_per_chunk: Annotated[int, Field(ge=1, le=100_000)] = 100
    keep_idle: bool = False
    sink: SinkConfig = LocalSinkConfig(kind="local")
    #: the MQTT client id of the persistent session; one per uploader (two sharing one steal the session)
    client_id: str = Field(default="chamber-bridge-uploader", min_length=1, max_length=64)
    #: seconds the broker keeps the session (and queues data) while the uploader is away (MQTT v5)
    session_expiry: Annotated[int, Field(ge=60, le=4_294_967_294)] = 7 * 24 * 3600
    #: seconds a missing seq is waited for before the run is finalized with the gap recorded
    finalize_grace: Annotated[float, Field(gt=0)] = 3600.0
    #: entries the spool holds at most; past it the alarm is raised and intake pauses (nothing is acked)
    max_spool_entries: Annotated[int, Field(ge=1000)] = 20_000_000


class Config(StrictModel):
    site: str = Field(pattern=NAME_PATTERN)
    mqtt: MqttConfig = MqttConfig()
    bridge: BridgeSection = BridgeSection()
    uploader: UploaderSection = UploaderSection()


# ---------------------------------------------------------------- loading


def format_loc(loc: tuple[int | str, ...]) -> str:
    """Turn pydantic's loc tuple into the key path a person would write.

    Discriminated unions insert the tag (``'serial'``) after the field name; it is not a key
    of the file, so it is dropped.
    """
    out = ""
    previous: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif previous in ("transport", "sink") and part in (*TRANSPORT_KINDS, "local", "atomscale"):
            pass
        else:
            out += f".{part}" if out else part
        previous = part
    return out


def problems_from(exc: ValidationError, prefix: str = "") -> list[ConfigProblem]:
    problems = []
    for err in exc.errors(include_url=False):
        path = format_loc(tuple(err["loc"]))
        if prefix:
            path = f"{prefix}.{path}" if path and not path.startswith("[") else prefix + path
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "union_tag_invalid":
            tag = err["ctx"]["tag"] if "tag" in err.get("ctx", {}) else err["input"]
            message = f"unknown kind {tag!r} (expected one of {err['ctx']['expected_tags']})"
        elif err["type"] == "union_tag_not_found":
            message = "missing key 'kind'"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        problems.append(ConfigProblem(path, message))
    return problems


def _driver_problems(raw: Any) -> list[ConfigProblem]:
    """Check each instrument's driver name, transport kind and options against the registry."""
    from bridge.drivers.registry import default_registry

    if not isinstance(raw, dict):
        return []
    instruments = (raw.get("bridge") or {}).get("instruments") if isinstance(raw.get("bridge"), dict) else None
    if not isinstance(instruments, list):
        return []
    registry = default_registry()
    problems: list[ConfigProblem] = []
    for i, inst in enumerate(instruments):
        if not isinstance(inst, dict) or not isinstance(inst.get("driver"), str):
            continue
        where = f"bridge.instruments[{i}]"
        name = inst["driver"]
        if name not in registry:
            problems.append(ConfigProblem(
                f"{where}.driver", f"unknown driver {name!r} (installed: {', '.join(registry.names())})"))
            continue
        driver = registry.get(name)
        transport = inst.get("transport")
        kind = transport.get("kind") if isinstance(transport, dict) else None
        if kind in TRANSPORT_KINDS and kind not in driver.transports:
            problems.append(ConfigProblem(
                f"{where}.transport.kind",
                f"driver {name!r} does not work over {kind!r} (it supports {', '.join(driver.transports)})"))
        options = inst.get("options", {})
        if options is None:
            options = {}
        try:
            driver.Options.model_validate(options)
        except ValidationError as exc:
            problems.extend(problems_from(exc, f"{where}.options"))
    return problems


def key_lines(node: yaml.Node, path: str = "") -> dict[str, int]:
    """Map every key path of a composed YAML document to its 1-based line number."""
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = f"{path}.{key.value}" if path else str(key.value)
            lines[child] = key.start_mark.line + 1
            lines.update(key_lines(value, child))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.update(key_lines(item, f"{path}[{i}]"))
    return lines


def _order(problems: list[ConfigProblem], lines: dict[str, int] | None) -> list[ConfigProblem]:
    """Drop repeats; list problems in file order (by line where known, else by key path)."""
    unique: dict[tuple[str, str], ConfigProblem] = {}
    for p in problems:
        unique.setdefault((p.path, p.message), p)

    def line_of(path: str) -> int:
        while lines:
            if path in lines:
                return lines[path]
            if not path:
                break
            path = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", path) if re.search(r"[.\[]", path) else ""
        return 0

    def path_order(path: str) -> list[tuple[int, int | str]]:
        return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"[.\[\]]+", path) if part]

    return sorted(unique.values(), key=lambda p: (line_of(p.path), path_order(p.path)))


def parse_config(raw: Any, source: str = "", lines: dict[str, int] | None = None) -> Config:
    """Validate an already-parsed YAML document; raise ConfigError with every problem.

    ``lines`` (key path -> line, from :func:`key_lines`) lets problems be listed in file order.
    """
    problems: list[ConfigProblem] = []
    config: Config | None = None
    if not isinstance(raw, dict):
        raise ConfigError([ConfigProblem("", "the config must be a mapping of keys (site, mqtt, bridge, uploader)")],
                          source)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        problems.extend(problems_from(exc))
    problems.extend(_driver_problems(raw))
    if config is not None:
        from bridge.polling.bus import bus_problems

        problems.extend(bus_problems(config.bridge.instruments))
    if problems or config is None:
        raise ConfigError(_order(problems, lines), source)
    return config


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem("", f"cannot read config: {exc.strerror}")], str(path)) from exc
    try:
        raw = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigProblem("", f"not valid YAML: {where}{problem}")], str(path)) from exc
    return parse_config(raw, str(path), key_lines(node) if node is not None else None)
