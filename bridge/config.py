"""The YAML config (docs/design.md section 8) as typed models, with every problem named by key path.

Validation happens in two passes so that one run reports all problems of a file at once:
pydantic checks structure and types of the whole document, then each instrument's driver,
transport kind and driver options are checked against the driver registry on the raw data,
even where the first pass already failed elsewhere.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bridge.errors import ConfigError, ConfigProblem
from bridge.names import NAME_PATTERN, check_site, printable
from bridge.schema import StrictModel
from bridge.transports.settings import TRANSPORT_KINDS, TcpPort, TransportConfig, bus_key, line_settings

log = logging.getLogger("bridge.config")

INLINE_SECRET = "secrets are never written inline; use {file} or {env}"
#: a secret file is one line (a password, an API key, a passphrase); past this it is not one
SECRET_MAX_BYTES = 64 * 1024
#: a CA bundle, a certificate or a key (the system's whole CA bundle is about 200 kB)
TLS_FILE_MAX_BYTES = 1024 * 1024


def _plain_path(path: Path) -> Path:
    """A path with a NUL or a control character is refused here, not by a traceback from os.stat later."""
    text = str(path)
    if printable(text, len(text) + 1) != text:
        raise ValueError(f"a path must not contain control characters, got {printable(repr(text), 120)}")
    return path


#: every path of the config: checked for control characters when the config is read
FilePath = Annotated[Path, AfterValidator(_plain_path)]


def regular_file(path: Path, what: str, max_bytes: int) -> os.stat_result:
    """Stat a file the config names: it must be a regular file of at most ``max_bytes``.

    A config naming ``/dev/zero``, a FIFO or a directory must get a one-line error, not a read
    that never ends (OpenSSL reads a PEM file until it finds a header).
    """
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError([ConfigProblem(what, f"cannot read {path}: {exc.strerror}")]) from exc
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError([ConfigProblem(what, f"{path} is not a regular file")])
    if st.st_size > max_bytes:
        raise ConfigError([ConfigProblem(what, f"{path} is {st.st_size} bytes; at most {max_bytes} are expected")])
    return st


def read_secret(file: Path | None, env: str | None, what: str) -> str | None:
    """Read a secret from a file (Docker/systemd secrets) or an environment variable.

    The read is bounded: a config naming ``/dev/zero`` or a log file must not hang or fill memory.
    """
    if file is not None:
        regular_file(file, what, SECRET_MAX_BYTES)
        try:
            with file.open("rb") as f:
                data = f.read(SECRET_MAX_BYTES + 1)
        except OSError as exc:
            raise ConfigError([ConfigProblem(what, f"cannot read {file}: {exc.strerror}")]) from exc
        if len(data) > SECRET_MAX_BYTES:
            raise ConfigError([ConfigProblem(what, f"{file} is over {SECRET_MAX_BYTES} bytes: not a secret")])
        try:
            return data.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise ConfigError([ConfigProblem(what, f"{file} is not UTF-8 text")]) from exc
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError([ConfigProblem(what, f"environment variable {env} is not set")])
        return value
    return None


# ---------------------------------------------------------------- sections


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


class InstrumentConfig(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    driver: str = Field(min_length=1)
    interval: Annotated[float, Field(gt=0, le=3600)] = 1.0
    transport: TransportConfig
    options: dict[str, Any] = Field(default_factory=dict)


class BridgeSection(StrictModel):
    state_dir: FilePath = Path("/var/lib/chamber-bridge")
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


# ---------------------------------------------------------------- loading

#: a config is a few kilobytes; a file past this is refused unread
MAX_CONFIG_BYTES = 1_000_000
#: mappings and lists nested deeper than this are refused before anything recursive walks them
MAX_DEPTH = 64
#: keys and values of the document once aliases are expanded (a real config has a few hundred):
#: this keeps an alias bomb ("billion laughs") from costing minutes and gigabytes
MAX_NODES = 20_000
#: characters of one value (a path, a host, a name): bounds the work of resolving one scalar
MAX_SCALAR = 16_384
#: problems listed at most; past it the rest are counted in one more line
MAX_PROBLEMS = 50
#: the only explicit tags a config may carry: every other one (``!!timestamp``, ``!!python/...``,
#: ``!custom``) is refused before anything constructs it
ALLOWED_TAGS = frozenset({"!", "tag:yaml.org,2002:str", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"})

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]  # libyaml's loader when present
    """PyYAML's safe loader, whose value errors (``2024-13-45``, a 5000-digit int) name their line."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, IndexError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value: {exc}", node.start_mark) from exc


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


def _yaml_message(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    if context:  # "while scanning a simple key", "expected a single document in the stream"
        problem = f"{context}, {problem}"
    return _where(mark) + " ".join(str(problem).split())


def _screen(text: str, source: str) -> None:
    """Refuse, from the parser's flat event stream, what would blow up whatever walks the document.

    Events come one at a time and nothing is built, so this pass is bounded by the file's size.
    It refuses nesting past :data:`MAX_DEPTH` (recursive walks), more than :data:`MAX_NODES`
    values with aliases expanded (alias bombs), an alias inside the node it names (a cycle), a
    value longer than :data:`MAX_SCALAR`, and explicit tags. Aliases themselves stay allowed:
    the shipped examples share a transport with ``&line`` / ``*line``.
    """
    sizes: dict[str, int] = {}  # anchor -> values of its node, aliases expanded
    stack: list[tuple[str | None, int]] = []  # open collections: (anchor, values before it)
    total = 0

    def refuse(event: yaml.Event, message: str) -> ConfigError:
        return ConfigError([ConfigProblem("", _where(event.start_mark) + message)], source)

    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.events.AliasEvent):
            name = printable(event.anchor, 80)
            if any(anchor == event.anchor for anchor, _ in stack):
                raise refuse(event, f"the alias *{name} is inside the node &{name} it names (a recursive alias)")
            if event.anchor not in sizes:
                raise refuse(event, f"the alias *{name} names no anchor before it")
            total += sizes[event.anchor]
        elif isinstance(event, yaml.events.NodeEvent):
            tag = getattr(event, "tag", None)
            if tag is not None and tag not in ALLOWED_TAGS:
                raise refuse(event, f"the tag {printable(tag, 80)} is not allowed: a config is plain YAML "
                                    "(strings, numbers, booleans, lists, mappings)")
            total += 1
            if isinstance(event, yaml.events.ScalarEvent):
                if len(event.value) > MAX_SCALAR:
                    raise refuse(event, f"a value of {len(event.value)} characters; at most {MAX_SCALAR} are allowed")
                if event.anchor is not None:
                    sizes[event.anchor] = 1
            else:
                stack.append((event.anchor, total - 1))
                if len(stack) > MAX_DEPTH:
                    raise refuse(event, f"lists and mappings nested more than {MAX_DEPTH} levels deep")
        elif isinstance(event, yaml.events.CollectionEndEvent):
            anchor, before = stack.pop()
            if anchor is not None:
                sizes[anchor] = total - before
        if total > MAX_NODES:
            raise refuse(event, f"more than {MAX_NODES} keys and values once aliases are expanded "
                                "(a config has a few hundred; is this an alias bomb?)")


def _read_text(path: Path) -> str:
    """The file's text, read no further than :data:`MAX_CONFIG_BYTES`."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([ConfigProblem("", f"cannot read config: {exc.strerror}")], str(path)) from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([ConfigProblem(
            "", f"the config is over {MAX_CONFIG_BYTES} bytes; a config is a few kilobytes")], str(path))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError([ConfigProblem(
            "", f"not UTF-8 text: line {line}: byte 0x{data[exc.start]:02x}")], str(path)) from None


def format_loc(loc: tuple[Any, ...]) -> str:
    """Turn pydantic's loc tuple into the key path a person would write.

    Discriminated unions insert the tag (``'serial'``) after the field name; it is not a key
    of the file, so it is dropped.
    """
    out = ""
    previous: object = None
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif previous in ("transport", "sink") and part in (*TRANSPORT_KINDS, "local", "atomscale"):
            pass
        else:
            out += f".{part}" if out else str(part)
        previous = part
    return out


def problems_from(exc: ValidationError, prefix: str = "") -> list[ConfigProblem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        message = err["msg"]
        if len(loc) >= 2 and loc[-1] == "[key]":  # a bad key of a mapping: name the key, not '.[key]'
            message = f"key {loc[-2]!r}: {message}"
            loc = loc[:-2]
        path = format_loc(loc)
        if prefix:
            path = f"{prefix}.{path}" if path and not path.startswith("[") else prefix + path
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
        except Exception as exc:  # a driver's validator that raised something else: still one line
            problems.append(ConfigProblem(f"{where}.options", f"cannot be checked: {type(exc).__name__}: {exc}"))
    return problems


def key_lines(node: yaml.Node, path: str = "") -> dict[str, int]:
    """Map every key path of a composed YAML document to its 1-based line number.

    The walk follows aliases, so it is bounded by :func:`_screen` (depth and expanded size).
    """
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            child = f"{path}.{name}" if path else str(name)
            lines[child] = key.start_mark.line + 1
            lines.update(key_lines(value, child))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.update(key_lines(item, f"{path}[{i}]"))
    return lines


_LAST_PART = re.compile(r"(\.[^.\[]*|\[[^\[\]]*\])$")


def _order(problems: list[ConfigProblem], lines: dict[str, int] | None) -> list[ConfigProblem]:
    """Drop repeats; list problems in file order (by line where known, else by key path)."""
    unique: dict[tuple[str, str], ConfigProblem] = {}
    for p in problems:
        unique.setdefault((p.path, p.message), p)

    def line_of(path: str) -> int:
        """The line of ``path`` or of its nearest ancestor; every step drops a part, so this ends."""
        while lines and path:
            if path in lines:
                return lines[path]
            shorter = _LAST_PART.sub("", path)
            path = shorter if len(shorter) < len(path) else ""
        return lines.get("", 0) if lines else 0

    def path_order(path: str) -> list[tuple[int, int | str]]:
        return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"[.\[\]]+", path) if part]

    return sorted(unique.values(), key=lambda p: (line_of(p.path), path_order(p.path)))


def _shown(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    """Each problem as one printable line (no newline or escape from a value), at most MAX_PROBLEMS."""
    shown = [ConfigProblem(printable(p.path, 200), printable(p.message, 500)) for p in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        shown.append(ConfigProblem("", f"... and {len(problems) - MAX_PROBLEMS} more problems"))
    return shown


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
        try:
            config = Config.model_validate(raw)
        except ValidationError as exc:
            problems.extend(problems_from(exc))
        problems.extend(_driver_problems(raw))
        if config is not None:

            problems.extend(bus_problems(config.bridge.instruments))
    except Exception as exc:  # a validator that raised something else: one line, not a traceback
        log.debug("validating %s failed unexpectedly", source or "the config", exc_info=True)
        problems.append(ConfigProblem("", f"cannot be validated: {type(exc).__name__}: {exc}"))
    if problems or config is None:
        raise ConfigError(_shown(_order(problems, lines)), source)
    return config


def load_config(path: str | Path) -> Config:
    """Read and validate a config file in bounded time and memory, whatever the file holds.

    Up to :data:`MAX_CONFIG_BYTES`, a file is screened (:func:`_screen`) before anything builds
    or walks its document, so every outcome is a Config or a ConfigError of one-line problems.
    """
    path = Path(path)
    source = str(path)
    text = _read_text(path)
    try:
        _screen(text, source)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            raw = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem("", printable(f"not valid YAML: {_yaml_message(exc)}", 500))],
                          source) from exc
    return parse_config(raw, source, key_lines(node) if node is not None else None)


# ---------------------------------------------------------------- the files a config names


def secret_files(config: Config) -> list[tuple[str, Path]]:
    """(key path, file) of every secret file the config names."""
    found: list[tuple[str, Path | None]] = [("mqtt.password_file", config.mqtt.password_file)]
    tls = config.mqtt.tls
    if tls is not None:
        found += [("mqtt.tls.key_file", tls.key_file), ("mqtt.tls.key_password_file", tls.key_password_file)]
    sink = config.uploader.sink
    if isinstance(sink, AtomscaleSinkConfig):
        found.append(("uploader.sink.api_key_file", sink.api_key_file))
    return [(key, path) for key, path in found if path is not None]


def loose_permissions(path: Path) -> str | None:
    """Why the secret file ``path`` is open to others than its owner, or None if it is not.

    Any access by other users and write access by the group are refused. Group read is refused
    too, except on a file root owns: ``root:chamber-bridge 0640`` (deploy/pi) is root giving the
    service's group exactly that. A missing file is not judged here: it is named when read.
    """
    try:
        st = path.stat()
    except (OSError, ValueError):
        return None
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o007:
        who = "open to every user"
    elif mode & 0o020:
        who = "writable by its group"
    elif mode & 0o050 and st.st_uid != 0:
        who = "readable by its group"
    else:
        return None
    return f"{path} is {who} (mode {mode:04o})"


def file_problems(config: Config) -> tuple[list[ConfigProblem], list[ConfigProblem]]:
    """(errors, warnings) about the files the config names: TLS files load, secrets are private.

    The TLS files are loaded exactly as the MQTT client loads them (:meth:`TlsConfig.ssl_context`), and
    the Atomscale sink's CA as the sink does (:meth:`AtomscaleSinkConfig.ssl_context`).
    Loose secret permissions are errors unless ``allow_loose_secret_permissions`` makes them warnings.
    """
    errors: list[ConfigProblem] = []
    warnings: list[ConfigProblem] = []
    for key, path in secret_files(config):
        why = loose_permissions(path)
        if why is None:
            continue
        if config.allow_loose_secret_permissions:
            warnings.append(ConfigProblem(key, f"{why}; accepted because allow_loose_secret_permissions is true"))
        else:
            errors.append(ConfigProblem(key, f"{why}; run chmod 600 {path} (or 640 owned by root and the "
                                             "service's group), or set allow_loose_secret_permissions: true"))
    if config.mqtt.tls is not None:
        try:
            config.mqtt.tls.ssl_context()
        except ConfigError as exc:
            errors.extend(exc.problems)
    if isinstance(config.uploader.sink, AtomscaleSinkConfig):
        try:
            config.uploader.sink.ssl_context()
        except ConfigError as exc:
            errors.extend(exc.problems)
    return _shown(errors), _shown(warnings)


def check_files(config: Config, source: str = "") -> None:
    """Raise ConfigError for the problems of :func:`file_problems`; log its warnings."""
    errors, warnings = file_problems(config)
    for warning in warnings:
        log.warning("%s%s", f"{source}: " if source else "", warning)
    if errors:
        raise ConfigError(errors, source)


# ---------------------------------------------------------------- buses: instruments sharing one transport

#: what the transport of a bus of several instruments calls itself in errors (the instrument's
#: name is put in front by the poller; the transport adds the port)
SHARED_OWNER = "shared bus"


def bus_problems(instruments: Sequence[InstrumentConfig]) -> list[ConfigProblem]:
    """Instruments on one bus whose line settings disagree with the first one's on it.

    A shared line has one set of line settings: two instruments naming the same port with
    different settings are a config error, reported by key path like every other one.
    """
    first: dict[str, tuple[int, InstrumentConfig]] = {}
    problems = []
    for i, inst in enumerate(instruments):
        key = bus_key(inst.transport)
        if key not in first:
            first[key] = (i, inst)
            continue
        j, other = first[key]
        mine, theirs = line_settings(inst.transport), line_settings(other.transport)
        differing = [f"{name} {mine.get(name)!r} vs {theirs.get(name)!r}"
                     for name in sorted(mine.keys() | theirs.keys()) if mine.get(name) != theirs.get(name)]
        if differing:
            problems.append(ConfigProblem(
                f"bridge.instruments[{i}].transport",
                f"on the same bus as {other.name!r} (bridge.instruments[{j}]) but with other settings "
                f"({'; '.join(differing)}); one line has one set of settings"))
    return problems


def group_by_bus(instruments: Sequence[InstrumentConfig]) -> dict[str, list[InstrumentConfig]]:
    """Instruments by :func:`~bridge.transports.settings.bus_key`, buses and their instruments in
    config order; raises ConfigError when instruments on one bus disagree about its settings."""
    problems = bus_problems(instruments)
    if problems:
        raise ConfigError(problems)
    buses: dict[str, list[InstrumentConfig]] = {}
    for inst in instruments:
        buses.setdefault(bus_key(inst.transport), []).append(inst)
    return buses


def shared_transport_config(instruments: Sequence[InstrumentConfig]) -> TransportConfig:
    """The config of the one transport of these instruments' bus: the first one's, waiting as
    long as the longest timeout among them (the most patient instrument's)."""
    longest = max(inst.transport.timeout for inst in instruments)
    return instruments[0].transport.model_copy(update={"timeout": longest})


def transport_owner(instruments: Sequence[InstrumentConfig]) -> str:
    """How the bus's transport names itself in errors: the instrument, or :data:`SHARED_OWNER`."""
    return instruments[0].name if len(instruments) == 1 else SHARED_OWNER
