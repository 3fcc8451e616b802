"""The payload schema, version 1 (docs/payload.md): every message on the bridge's topics, in msgpack.

One module encodes and decodes everything so the bridge, the CLI and the uploader cannot drift
apart. Decoders are strict about what they need and lenient about what they do not know: a
missing key, a wrong type or another version raises :class:`~bridge.errors.ProtocolError` naming
it (never a bare ``KeyError`` from deep inside a callback), while unknown extra keys are ignored,
so a newer writer may add optional keys without bumping the version (the rule in docs/payload.md).

msgpack rather than JSON: it encodes about 7x faster and is about 30 % smaller (RELIABILITY.md),
and it carries floats as IEEE doubles, so a value round-trips bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type information

from bridge.errors import ProtocolError
from bridge.model import Quality, Reading

SCHEMA_VERSION: Final = 1

EntryKind = Literal["reading", "run_start", "run_stop"]
ENTRY_KINDS: Final[tuple[str, ...]] = get_args(EntryKind)
#: kinds the outbox always accepts, even when full (docs/payload.md, overflow policy)
RUN_MARKERS: Final = frozenset({"run_start", "run_stop"})

CommandAction = Literal["start_run", "stop_run"]
COMMAND_ACTIONS: Final[tuple[str, ...]] = get_args(CommandAction)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One entry of the bridge's ordered log: a reading or a run marker, numbered by ``seq``."""

    seq: int
    kind: EntryKind
    #: Unix seconds on the bridge's clock when the entry was logged
    time: float
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Batch:
    """What one message on ``{prefix}/{site}/data`` carries: entries of one bridge epoch."""

    site: str
    epoch: str
    entries: tuple[LogEntry, ...]


@dataclass(frozen=True, slots=True)
class Ack:
    """The uploader's word that it has committed every seq up to ``seq`` of ``epoch``."""

    epoch: str
    seq: int


@dataclass(frozen=True, slots=True)
class Command:
    """A request to the bridge on ``{prefix}/{site}/command`` (start-run / stop-run)."""

    request_id: str
    action: CommandAction
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reply:
    """The bridge's answer on ``{prefix}/{site}/command/reply``; ``seq`` is the marker's, if one was logged."""

    request_id: str
    ok: bool
    message: str
    seq: int | None


# ---------------------------------------------------------------- msgpack, once


def pack(obj: Any) -> bytes:
    """msgpack-encode ``obj`` (maps, lists, str, int, float, bool, None); TypeError for anything else."""
    data: bytes = msgpack.packb(obj)
    return data


def unpack_body(data: bytes) -> dict[str, Any]:
    """Decode an entry body stored by :func:`pack` (the outbox's BLOB column)."""
    body = _unpack(data, "entry body")
    if not isinstance(body, dict):
        raise ProtocolError(f"entry body: expected a map, got {type(body).__name__}")
    return body


def _unpack(data: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(data, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"{what}: not valid msgpack ({exc}): {data!r:.120}") from exc


# ---------------------------------------------------------------- checking what arrived

_NUMBER: Final = (int, float)


def _get(obj: Mapping[str, Any], key: str, what: str, types: type | tuple[type, ...], expected: str) -> Any:
    """``obj[key]`` if present and of ``types`` (a bool is not a number here), else a ProtocolError."""
    try:
        value = obj[key]
    except KeyError:
        raise ProtocolError(f"{what}: missing key {key!r}") from None
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        raise ProtocolError(f"{what}: key {key!r} must be {expected}, got {value!r:.200}")
    return value


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _message(data: bytes, what: str) -> dict[str, Any]:
    """Unpack a top-level message and check its version."""
    obj = _unpack(data, what)
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what}: expected a map, got {type(obj).__name__}")
    version = _get(obj, "v", what, int, "an integer")
    if version != SCHEMA_VERSION:
        raise ProtocolError(f"{what}: payload version {version} is not supported (this codec reads {SCHEMA_VERSION})")
    return obj


def _seq(obj: Mapping[str, Any], key: str, what: str, minimum: int) -> int:
    value: int = _get(obj, key, what, int, f"an integer >= {minimum}")
    if value < minimum:
        raise ProtocolError(f"{what}: key {key!r} must be an integer >= {minimum}, got {value}")
    return value


# ---------------------------------------------------------------- readings


def reading_body(r: Reading) -> dict[str, Any]:
    """The compact body of a ``reading`` entry (short keys: one is logged per channel per poll)."""
    body: dict[str, Any] = {
        "i": r.instrument, "c": r.channel, "v": r.value, "q": r.quality.value, "t": r.timestamp, "u": r.units,
    }
    if r.detail:
        body["d"] = r.detail
    return body


def reading_from_body(body: Mapping[str, Any]) -> Reading:
    """The :class:`Reading` a ``reading`` body describes; ProtocolError naming what is wrong."""
    instrument: str = _get(body, "i", "reading", str, "a string")
    channel: str = _get(body, "c", "reading", str, "a string")
    what = f"reading {instrument}/{channel}"
    value: float | int | None = _get(body, "v", what, (int, float, type(None)), "a number or nil")
    quality_name: str = _get(body, "q", what, str, "a string")
    timestamp: float = _get(body, "t", what, _NUMBER, "a number")
    units: str = _get(body, "u", what, str, "a string")
    detail: str = _get(body, "d", what, str, "a string") if "d" in body else ""
    try:
        quality = Quality(quality_name)
    except ValueError:
        raise ProtocolError(f"{what}: unknown quality {quality_name!r}") from None
    try:
        return Reading(instrument, channel, None if value is None else float(value), quality, float(timestamp),
                       units, detail)
    except ValueError as exc:
        raise ProtocolError(f"{what}: {exc}") from None


# ---------------------------------------------------------------- data batches


#: an entry as the outbox stores it: seq, kind, time and the body already msgpack-encoded
StoredEntry = tuple[int, str, float, bytes]


def encode_batch(site: str, epoch: str, entries: Sequence[LogEntry]) -> bytes:
    """One ``data`` message: entries in seq order as ``[seq, kind, time, body]`` arrays."""
    return encode_stored_batch(site, epoch, [(e.seq, e.kind, e.time, pack(e.body)) for e in entries])


def encode_stored_batch(site: str, epoch: str, entries: Sequence[StoredEntry]) -> bytes:
    """The same message from bodies that are msgpack already (the outbox's BLOBs).

    The publish path splices the stored bytes in instead of decoding every body only to encode
    it again; the result is byte for byte what :func:`encode_batch` gives.
    """
    packer = msgpack.Packer()
    parts = [
        packer.pack_map_header(4),
        packer.pack("v"), packer.pack(SCHEMA_VERSION),
        packer.pack("site"), packer.pack(site),
        packer.pack("epoch"), packer.pack(epoch),
        packer.pack("entries"), packer.pack_array_header(len(entries)),
    ]
    for seq, kind, time, body in entries:
        parts.append(packer.pack_array_header(4))
        parts.append(packer.pack(seq))
        parts.append(packer.pack(kind))
        parts.append(packer.pack(time))
        parts.append(body)
    return b"".join(parts)


def decode_batch(data: bytes) -> Batch:
    """Decode a ``data`` message; ProtocolError naming the first thing that is wrong."""
    obj = _message(data, "batch")
    site: str = _get(obj, "site", "batch", str, "a string")
    epoch: str = _get(obj, "epoch", "batch", str, "a string")
    raw: list[Any] = _get(obj, "entries", "batch", list, "an array")
    return Batch(site, epoch, tuple(_entry(item, n) for n, item in enumerate(raw)))


def _entry(item: Any, n: int) -> LogEntry:
    # the common case in one test (a batch holds hundreds of entries); anything else is checked
    # field by field below, for a message that names what is wrong
    if type(item) is list and len(item) == 4:
        seq, kind, time, body = item
        if type(seq) is int and seq >= 1 and kind in ENTRY_KINDS and type(time) is float and type(body) is dict:
            return LogEntry(seq, kind, time, body)
    return _checked_entry(item, f"batch entry {n}")


def _checked_entry(item: Any, what: str) -> LogEntry:
    if not isinstance(item, list) or len(item) != 4:
        raise ProtocolError(f"{what}: expected [seq, kind, time, body], got {item!r:.200}")
    fields = dict(zip(("seq", "kind", "time", "body"), item, strict=True))
    seq = _seq(fields, "seq", what, 1)
    kind: str = _get(fields, "kind", what, str, "a string")
    if kind not in ENTRY_KINDS:
        raise ProtocolError(f"{what}: kind {kind!r} is not one of {', '.join(ENTRY_KINDS)}")
    time: float = _get(fields, "time", what, _NUMBER, "a number")
    body: dict[str, Any] = _get(fields, "body", what, dict, "a map")
    return LogEntry(seq, kind, float(time), body)  # type: ignore[arg-type]  # kind checked against ENTRY_KINDS


# ---------------------------------------------------------------- acknowledgements


def encode_ack(epoch: str, seq: int) -> bytes:
    """The uploader's ack: the highest seq of ``epoch`` such that it has committed every seq up to it."""
    return pack({"v": SCHEMA_VERSION, "epoch": epoch, "seq": seq})


def decode_ack(data: bytes) -> Ack:
    obj = _message(data, "ack")
    return Ack(_get(obj, "epoch", "ack", str, "a string"), _seq(obj, "seq", "ack", 0))


# ---------------------------------------------------------------- commands and replies


def encode_command(request_id: str, action: CommandAction, params: Mapping[str, Any]) -> bytes:
    if action not in COMMAND_ACTIONS:
        raise ValueError(f"unknown command action {action!r} (expected one of {', '.join(COMMAND_ACTIONS)})")
    return pack({"v": SCHEMA_VERSION, "request_id": request_id, "action": action, "params": dict(params)})


def decode_command(data: bytes) -> Command:
    obj = _message(data, "command")
    request_id: str = _get(obj, "request_id", "command", str, "a string")
    what = f"command {request_id}"
    action: str = _get(obj, "action", what, str, "a string")
    if action not in COMMAND_ACTIONS:
        raise ProtocolError(f"{what}: action {action!r} is not one of {', '.join(COMMAND_ACTIONS)}")
    params: dict[str, Any] = _get(obj, "params", what, dict, "a map")
    return Command(request_id, action, params)  # type: ignore[arg-type]  # action checked against COMMAND_ACTIONS


def encode_reply(request_id: str, ok: bool, message: str, seq: int | None) -> bytes:
    return pack({"v": SCHEMA_VERSION, "request_id": request_id, "ok": ok, "message": message, "seq": seq})


def decode_reply(data: bytes) -> Reply:
    obj = _message(data, "reply")
    request_id: str = _get(obj, "request_id", "reply", str, "a string")
    what = f"reply {request_id}"
    seq = None if obj.get("seq", 0) is None else _seq(obj, "seq", what, 1)
    return Reply(request_id, _get(obj, "ok", what, bool, "a boolean"), _get(obj, "message", what, str, "a string"), seq)
