"""The config's sections as typed, frozen models (docs/design.md section 8): unknown keys are errors.
"""

from __future__ import annotations

import logging
import re
import ssl
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bridge import units
from bridge.config.runs import RunsConfig
from bridge.config.secrets import INLINE_SECRET, TLS_FILE_MAX_BYTES, FilePath, read_secret, regular_file
from bridge.errors import ConfigError, ConfigProblem
from bridge.names import NAME_PATTERN, check_site, printable
from bridge.schema import StrictModel
from bridge.transports.settings import TcpPort, TransportConfig

log = logging.getLogger("bridge.config")


class _NeedsPassphrase(Exception):
    """Raised by the passphrase callback: OpenSSL would otherwise prompt on the terminal and block."""


def _ssl_reason(exc: BaseException) -> str:
    """The reason of an ssl/OS error without OpenSSL's source location (``(_ssl.c:4154)``)."""
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError) and exc.strerror:
        return exc.strerror
    text = getattr(exc, "reason", None) or str(exc)
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(text))


class TlsConfig(StrictModel):
    """TLS to the broker. The server is always verified (certificate chain and host name)."""

    #: the CA that signed the broker's certificate; without it the system's CAs are trusted
    ca_file: FilePath | None = None
    #: a client certificate and key, for brokers that require them (``require_certificate true``)
    cert_file: FilePath | None = None
    key_file: FilePath | None = None
    #: the passphrase of an encrypted key_file, read from this file (a secret, like password_file)
    key_password_file: FilePath | None = None

    @model_validator(mode="after")
    def _pairs(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (a client certificate and its key)")
        if self.key_password_file is not None and self.key_file is None:
            raise ValueError("key_password_file is the passphrase of key_file, which is not set")
        return self

    def ssl_context(self) -> ssl.SSLContext:
        """The client's TLS context with every file loaded now; a problem is a ConfigError naming its key.

        Used by ``check`` and by every MQTT client alike, so what ``check`` accepts is what connects.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
        if self.ca_file is None:
            context.load_default_certs()
        else:
            regular_file(self.ca_file, "mqtt.tls.ca_file", TLS_FILE_MAX_BYTES)
            try:
                context.load_verify_locations(cafile=str(self.ca_file))
            except (OSError, ValueError) as exc:
                raise ConfigError([ConfigProblem(
                    "mqtt.tls.ca_file", f"cannot load {self.ca_file}: {_ssl_reason(exc)} "
                    "(expected PEM certificates of the CA that signed the broker's certificate)")]) from exc
        if self.cert_file is not None and self.key_file is not None:
            self._load_client_certificate(context, self.cert_file, self.key_file)
        return context

    def _load_client_certificate(self, context: ssl.SSLContext, cert: Path, key: Path) -> None:
        regular_file(cert, "mqtt.tls.cert_file", TLS_FILE_MAX_BYTES)
        regular_file(key, "mqtt.tls.key_file", TLS_FILE_MAX_BYTES)
        passphrase = read_secret(self.key_password_file, None, "mqtt.tls.key_password_file")

        def password() -> str:
            if passphrase is None:
                raise _NeedsPassphrase
            return passphrase

        try:
            context.load_cert_chain(str(cert), str(key), password=password)
        except _NeedsPassphrase:
            raise ConfigError([ConfigProblem(
                "mqtt.tls.key_file", f"{key} is encrypted; put its passphrase in a file (mode 600) and "
                "name it with mqtt.tls.key_password_file")]) from None
        except (OSError, ValueError) as exc:
            hint = ("wrong passphrase in key_password_file, or not PEM" if passphrase is not None
                    else "not a PEM certificate and key, or a key that does not match the certificate")
            raise ConfigError([ConfigProblem(
                "mqtt.tls.key_file", f"cannot load {cert} with {key}: {_ssl_reason(exc)} ({hint})")]) from exc


class MqttConfig(StrictModel):
    host: str = "127.0.0.1"
    port: TcpPort = 1883
    topic_prefix: str = Field(default="lab", pattern=r"^[^#+/][^#+]*$")
    username: str | None = None
    password_file: FilePath | None = None
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


#: ``interval: baseline``: read only with the baselines (at connect and at each run's start and stop)
BASELINE_INTERVAL: Final = "baseline"

IdentityKey = Annotated[str, Field(pattern=NAME_PATTERN)]
IdentityText = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")]


class InstrumentConfig(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    driver: str = Field(min_length=1)
    #: seconds between polls, or ``baseline``: read only at connect and at each run's start and stop
    interval: Annotated[float, Field(gt=0, le=3600)] | Literal["baseline"] = 1.0
    transport: TransportConfig
    options: dict[str, Any] = Field(default_factory=dict)
    #: who the instrument is where its protocol cannot say (``vendor``, ``model``, ``serial``, ``firmware``);
    #: what the instrument reports itself wins (docs/store.md, baseline)
    identity: dict[IdentityKey, IdentityText] = Field(default_factory=dict, max_length=32)

    @property
    def poll_interval(self) -> float | None:
        """Seconds between scheduled polls; None for ``interval: baseline`` (read with the baselines only)."""
        return None if self.interval == BASELINE_INTERVAL else float(self.interval)


def _unit_of(kind: str) -> Any:
    def check(value: str) -> str:
        symbol = units.canonical(value)
        if units.kind(symbol) != kind:
            raise ValueError(f"{symbol} is not a {kind} unit (use one of {', '.join(units.symbols(kind))})")
        return symbol

    return AfterValidator(check)


class UnitsConfig(StrictModel):
    """``bridge.units``: the unit every reading of a kind is converted to at the edge (docs/units.md)."""

    pressure: Annotated[str, _unit_of("pressure")] | None = None
    temperature: Annotated[str, _unit_of("temperature")] | None = None

    def targets(self) -> dict[str, str]:
        """Kind -> unit, for the kinds that are converted."""
        return {kind: unit for kind, unit in (("pressure", self.pressure), ("temperature", self.temperature))
                if unit is not None}


class BridgeSection(StrictModel):
    state_dir: FilePath = Path("/var/lib/chamber-bridge")
    instruments: list[InstrumentConfig] = Field(default_factory=list)
    #: resume across restarts, automatic runs (docs/runs.md)
    runs: RunsConfig = RunsConfig()
    #: convert every pressure and temperature to one unit before it is logged (docs/units.md); none by default
    units: UnitsConfig = UnitsConfig()

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
    path: FilePath = Path("./runs")


class AtomscaleSinkConfig(StrictModel):
    kind: Literal["atomscale"]
    #: plain ``http://`` sends the API key in clear text: refused unless this is set (a loopback
    #: emulator in tests); declared before ``endpoint`` because the endpoint's check reads it
    allow_insecure_http: bool = False
    endpoint: str = Field(pattern=r"^https?://")
    api_key_file: FilePath | None = None
    api_key_env: str | None = None
    api_key: None = None
    #: PEM certificates of the CA that signs the endpoint's certificate (a private CA); default: the system's
    ca_file: FilePath | None = None

    @field_validator("endpoint")
    @classmethod
    def _secure_endpoint(cls, v: str, info: ValidationInfo) -> str:
        split = urlsplit(v)
        if not split.hostname:
            raise ValueError(f"{printable(v, 200)} names no host")
        if split.username is not None or split.password is not None:
            raise ValueError("no user:password@ in the URL: " + INLINE_SECRET.format(file="api_key_file",
                                                                                       env="api_key_env"))
        if split.scheme == "http" and info.data.get("allow_insecure_http") is not True:
            raise ValueError(f"{printable(v, 200)} is plain http: the API key would travel in clear text; "
                             "use https:// (or set uploader.sink.allow_insecure_http: true for a test emulator)")
        return v

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context trusting ``ca_file`` (None: httpx's default CAs); a problem is a ConfigError
        naming the key. Used by ``check`` (:func:`file_problems`) and by the sink alike."""
        if self.ca_file is None:
            return None
        regular_file(self.ca_file, "uploader.sink.ca_file", TLS_FILE_MAX_BYTES)
        try:
            return ssl.create_default_context(cafile=str(self.ca_file))
        except (OSError, ValueError) as exc:
            raise ConfigError([ConfigProblem(
                "uploader.sink.ca_file", f"cannot load {self.ca_file}: {_ssl_reason(exc)} (expected PEM "
                "certificates of the CA that signed the endpoint's certificate)")]) from exc

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
    state_dir: FilePath = Path("/var/lib/chamber-bridge-uploader")
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
    site: str
    mqtt: MqttConfig = MqttConfig()
    bridge: BridgeSection = BridgeSection()
    uploader: UploaderSection = UploaderSection()
    #: secret files readable by others are refused (see :func:`file_problems`); true turns that into a warning
    allow_loose_secret_permissions: bool = False

    @field_validator("site", mode="before")
    @classmethod
    def _site(cls, v: object) -> str:
        return check_site(v)
