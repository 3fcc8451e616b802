"""Reading a config file within hard bounds, and every problem as one line naming its key path.

Validation happens in two passes so that one run reports all problems of a file at once:
pydantic checks structure and types of the whole document, then each instrument's driver,
transport kind and driver options are checked against the driver registry on the raw data,
even where the first pass already failed elsewhere. Before either, the YAML parser's event
stream is screened (size, depth, aliases expanded, tags): a config is untrusted input
(docs/security.md).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from bridge.config.auto_runs import auto_runs_problems
from bridge.config.buses import bus_problems
from bridge.config.channels import raw_baseline_only, raw_catalog
from bridge.config.models import Config
from bridge.errors import ConfigError, ConfigProblem
from bridge.names import printable
from bridge.transports.settings import TRANSPORT_KINDS

log = logging.getLogger("bridge.config")


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


def shown(problems: list[ConfigProblem]) -> list[ConfigProblem]:
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
        problems.extend(auto_runs_problems(raw, raw_catalog(raw), raw_baseline_only(raw)))
        if config is not None:
            problems.extend(bus_problems(config.bridge.instruments))
    except Exception as exc:  # a validator that raised something else: one line, not a traceback
        log.debug("validating %s failed unexpectedly", source or "the config", exc_info=True)
        problems.append(ConfigProblem("", f"cannot be validated: {type(exc).__name__}: {exc}"))
    if problems or config is None:
        raise ConfigError(shown(_order(problems, lines)), source)
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
