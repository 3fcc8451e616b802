"""The payload schema, version 1 (docs/payload.md): every message on the bridge's topics, in msgpack.

One module encodes and decodes everything so the bridge, the CLI and the uploader cannot drift
apart. Decoders are strict about what they need and lenient about what they do not know: a
missing key, a wrong type or another version raises :class:`~bridge.errors.ProtocolError` naming
it (never a bare ``KeyError`` from deep inside a callback), while unknown extra keys are ignored,
so a newer writer may add optional keys without bumping the version (the rule in docs/payload.md).

msgpack rather than JSON: it encodes about 7x faster and is about 30 % smaller (docs/design.md section 12),
and it carries floats as IEEE doubles, so a value round-trips bit for bit.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, get_args

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type information

from bridge.errors import ProtocolError
from bridge.model import DETAIL_MAX as _DETAIL_MAX
from bridge.model import STRING_MAX, Quality, Reading, ValueType, value_fits
from bridge.names import NAME_PATTERN, TEXT_MAX, check_name, check_tags, check_text, is_name, is_run_id, printable

SCHEMA_VERSION: Final = 1

# ---------------------------------------------------------------- limits of what is accepted (docs/security.md)

#: a message larger than this is refused before it is decoded
MAX_MESSAGE_BYTES: Final = 8 * 1024 * 1024
#: entries in one data message, at most (the bridge sends up to 500)
MAX_BATCH_ENTRIES: Final = 20_000
#: seqs and epochs' counters are SQLite integers: 1 .. 2**63 - 1
SEQ_MAX: Final = 2**63 - 1
#: timestamps (Unix seconds) outside 2000-01-01 .. 2100-01-01 are refused: no instrument of a
#: running chamber reads then, and a value like 1e300 or NaN would break every reader downstream
TIME_MIN: Final = 946_684_800.0
TIME_MAX: Final = 4_102_444_800.0
#: units and details of a reading, at most this many characters
UNITS_MAX: Final = 32
DETAIL_MAX: Final = _DETAIL_MAX
EXIT_STATUSES: Final = ("success", "abort", "fail")
#: how a run was opened: by ``start-run`` or by the automatic trigger (docs/runs.md)
TRIGGERS: Final = ("manual", "auto")
#: a ``why`` (the expression that opened or closed a run, and the values that made it true): bounded
WHY_EXPRESSION_MAX: Final = 1000
WHY_VALUES_MAX: Final = 64
#: an annotation's text, at most this many characters
EVENT_TEXT_MAX: Final = 1000
#: a ``baseline`` entry (identity and configuration, docs/payload.md): when it was read, and its bounds
BASELINE_WHEN: Final = ("connect", "start", "stop")
BASELINE_INSTRUMENTS_MAX: Final = 256
BASELINE_FIELDS_MAX: Final = 128
BASELINE_TEXT_MAX: Final = 200

EntryKind = Literal["reading", "run_start", "run_stop", "run_resume", "event", "baseline"]
ENTRY_KINDS: Final[tuple[str, ...]] = get_args(EntryKind)
#: every kind but readings: committed at once and always accepted, even when the outbox is full
#: (docs/payload.md, overflow policy): they close runs and record what an operator said
MARKERS: Final = frozenset({"run_start", "run_stop", "run_resume", "event", "baseline"})

CommandAction = Literal["start_run", "stop_run", "annotate", "auto", "next_run"]
COMMAND_ACTIONS: Final[tuple[str, ...]] = get_args(CommandAction)


class LogEntry(NamedTuple):
    """One entry of the bridge's ordered log: a reading or a run marker, numbered by ``seq``.

    A NamedTuple rather than a frozen dataclass: the uploader builds about 100,000 a second and a
    tuple is built several times faster.
    """

    seq: int
    kind: EntryKind
    #: Unix seconds on the bridge's clock when the entry was logged
    time: float
    body: dict[str, Any]


class Refused(NamedTuple):
    """An entry of a data message that failed the contract: quarantined, never stored as data.

    ``seq`` is the entry's seq when that much was valid (the uploader then records the seq as
    refused, so the bridge's log moves on past it), else None.
    """

    seq: int | None
    reason: str
    detail: str
    entry: Any


class BadMessage(ProtocolError):
    """A whole message refused; ``reason`` is a short code counted per site (docs/security.md)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Batch:
    """What one message on ``{prefix}/{site}/data`` carries: entries of one bridge epoch.

    ``entries`` passed the contract; ``refused`` did not (each with its reason).
    """

    site: str
    epoch: str
    entries: tuple[LogEntry, ...]
    refused: tuple[Refused, ...] = ()


@dataclass(frozen=True, slots=True)
class Ack:
    """The uploader's word that it has committed every seq up to ``seq`` of ``epoch``."""

    epoch: str
    seq: int


@dataclass(frozen=True, slots=True)
class Command:
    """A request to the bridge on ``{prefix}/{site}/command``, its params checked.

    ``params`` is the class :data:`PARAMS` names for the action: :class:`StartRun` for
    ``start_run``, :class:`StopRun`, :class:`Annotate`, :class:`SetAuto`, :class:`NextRun`.
    """

    request_id: str
    action: CommandAction
    params: CommandParams


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
    return _versioned(_unpack(data, what), what)


def _versioned(obj: Any, what: str) -> dict[str, Any]:
    """A top-level message as unpacked, with its version checked."""
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
    """The compact body of a ``reading`` entry (short keys: one is logged per channel per poll).

    The value type goes along as ``y`` only when it is not ``float``, so the common reading
    stays as small as it was."""
    body: dict[str, Any] = {
        "i": r.instrument, "c": r.channel, "v": r.value, "q": r.quality.value, "t": r.timestamp, "u": r.units,
    }
    if r.detail:
        body["d"] = r.detail
    if r.type is not ValueType.FLOAT:
        body["y"] = r.type.value
    return body


def reading_from_body(body: Mapping[str, Any]) -> Reading:
    """The :class:`Reading` a ``reading`` body describes; ProtocolError naming what is wrong."""
    instrument: str = _get(body, "i", "reading", str, "a string")
    channel: str = _get(body, "c", "reading", str, "a string")
    what = f"reading {instrument}/{channel}"
    quality_name: str = _get(body, "q", what, str, "a string")
    timestamp: float = _get(body, "t", what, _NUMBER, "a number")
    units: str = _get(body, "u", what, str, "a string")
    detail: str = _get(body, "d", what, str, "a string") if "d" in body else ""
    try:
        quality = Quality(quality_name)
    except ValueError:
        raise ProtocolError(f"{what}: unknown quality {quality_name!r}") from None
    try:
        kind = value_type(body)
        value = _get(body, "v", what, (object, bool), "a value or nil")
        if kind is ValueType.FLOAT and type(value) is int:
            value = float(value)
        return Reading(instrument, channel, value, quality, float(timestamp), units, detail, kind)
    except ValueError as exc:
        raise ProtocolError(f"{what}: {exc}") from None


def value_type(body: Mapping[str, Any]) -> ValueType:
    """The value type a reading body names (``y``; absent: ``float``); ValueError for one not known."""
    name = body.get("y")
    if name is None and "y" not in body:
        return ValueType.FLOAT
    try:
        if isinstance(name, str):
            return ValueType(name)
    except ValueError:
        pass
    raise ValueError(f"type (y) {printable(repr(name), 80)} is not one of {', '.join(t.value for t in ValueType)}")


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


def decode_batch(data: bytes, site: str) -> Batch:
    """Decode and check a ``data`` message that arrived on ``site``'s topic.

    The site is the topic's (the broker's ACL vouches for it), never the payload's: a body that
    names another site is refused. The envelope failing the contract raises :class:`BadMessage`;
    a single entry failing it is returned in ``refused`` and the others are kept.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise BadMessage("too_large", f"batch: {len(data)} bytes; at most {MAX_MESSAGE_BYTES} are accepted")
    try:
        unpacked = _unpack(data, "batch")
    except ProtocolError as exc:
        raise BadMessage("not_msgpack", str(exc)) from None
    try:
        obj = _versioned(unpacked, "batch")
        body_site: str = _get(obj, "site", "batch", str, "a string")
        epoch: str = _get(obj, "epoch", "batch", str, "a string")
        raw: list[Any] = _get(obj, "entries", "batch", list, "an array")
    except BadMessage:
        raise
    except ProtocolError as exc:
        raise BadMessage("bad_envelope", str(exc)) from None
    if body_site != site:
        raise BadMessage("site_mismatch", f"batch on the topic of site {printable(site, 80)!r} says it is from "
                                          f"{printable(body_site, 80)!r}")
    if not is_name(epoch):
        raise BadMessage("bad_epoch", f"batch: epoch {printable(repr(epoch), 80)} is not a valid name")
    if len(raw) > MAX_BATCH_ENTRIES:
        raise BadMessage("too_large", f"batch: {len(raw)} entries; at most {MAX_BATCH_ENTRIES} are accepted")
    entries: list[LogEntry] = []
    refused: list[Refused] = []
    for n, item in enumerate(raw):
        checked = _entry(item, n)
        if type(checked) is Refused:
            refused.append(checked)
        else:
            entries.append(checked)  # type: ignore[arg-type]  # the other member of the union
    return Batch(site, epoch, tuple(entries), tuple(refused))


def _finite_time(value: Any) -> bool:
    return (type(value) is float or type(value) is int) and TIME_MIN <= value <= TIME_MAX  # NaN fails both


_INF: Final = math.inf


def _entry(item: Any, n: int) -> LogEntry | Refused:
    """One ``[seq, kind, time, body]`` entry, checked; a :class:`Refused` naming the problem otherwise.

    The common case, a reading as the bridge writes it whose labels were seen before, is
    checked in one expression (it runs for every reading the uploader takes in); whatever
    does not pass it, or raises on the way (an unhashable label), gets the full check below,
    which names the problem. Both accept exactly the same entries.
    """
    try:
        if type(item) is list and len(item) == 4:
            seq, kind, stamp, body = item
            if (kind == "reading" and type(seq) is int and 0 < seq <= SEQ_MAX and type(stamp) is float
                    and TIME_MIN <= stamp <= TIME_MAX and type(body) is dict):
                get = body.get
                t, v, q, p, d = get("t"), get("v"), get("q"), get("p"), get("d")
                if ((get("i"), get("c"), get("u")) in _KNOWN_LABELS and "y" not in body
                        and type(t) is float and TIME_MIN <= t <= TIME_MAX
                        and ((q == "ok" and type(v) is float and -_INF < v < _INF) or (v is None and q in _NOT_OK))
                        and ((p is None and "p" not in body) or (type(p) is float and TIME_MIN <= p <= TIME_MAX))
                        and ((d is None and "d" not in body) or (type(d) is str and len(d) <= DETAIL_MAX))):
                    return LogEntry(seq, kind, stamp, body)
    except TypeError:
        pass
    return _checked_entry(item, n)


def _checked_entry(item: Any, n: int) -> LogEntry | Refused:
    if type(item) is not list or len(item) != 4:
        return Refused(None, "bad_entry", f"batch entry {n}: expected [seq, kind, time, body], got "
                                          f"{printable(repr(item), 120)}", item)
    seq, kind, stamp, body = item
    if type(seq) is not int or not 1 <= seq <= SEQ_MAX:
        return Refused(None, "bad_seq", f"batch entry {n}: seq must be an integer 1..2**63-1, got "
                                        f"{printable(repr(seq), 80)}", item)
    what = f"entry seq {seq}"
    if not _finite_time(stamp):
        return Refused(seq, "bad_time", f"{what}: time must be Unix seconds between 2000 and 2100, got "
                                        f"{printable(repr(stamp), 80)}", item)
    if type(body) is not dict:
        return Refused(seq, "bad_entry", f"{what}: body must be a map, got {type(body).__name__}", item)
    try:
        if kind == "reading":
            _check_reading(body, what)
            return LogEntry(seq, kind, float(stamp), body)
        if kind == "run_start":
            return LogEntry(seq, kind, float(stamp), run_start_body(body, what, seq))
        if kind == "run_stop":
            return LogEntry(seq, kind, float(stamp), run_stop_body(body, what))
        if kind == "run_resume":
            return LogEntry(seq, kind, float(stamp), run_resume_body(body, what))
        if kind == "event":
            return LogEntry(seq, kind, float(stamp), event_body(body, what))
        if kind == "baseline":
            return LogEntry(seq, kind, float(stamp), baseline_body(body, what))
    except ValueError as exc:
        return Refused(seq, f"bad_{kind}", str(exc), item)
    return Refused(seq, "bad_kind", f"{what}: kind {printable(repr(kind), 80)} is not one of "
                                    f"{', '.join(ENTRY_KINDS)}", item)


_QUALITIES: Final = frozenset(q.value for q in Quality)
#: what the value of an ok reading of each type other than float must be (docs/payload.md)
_EXPECTED: Final = {
    ValueType.INT: "an integer within +-2**53", ValueType.BITS: "an integer within 0..2**53",
    ValueType.BOOL: "true or false", ValueType.ENUM: f"printable text of at most {STRING_MAX} characters",
    ValueType.STRING: f"printable text of at most {STRING_MAX} characters",
}
_NOT_OK: Final = _QUALITIES - {Quality.OK.value}
#: (instrument, channel, units) triples already checked: they repeat in every poll
_KNOWN_LABELS: set[tuple[Any, Any, Any]] = set()


def _check_reading(b: dict[str, Any], what: str) -> None:
    """A reading body against the contract (docs/payload.md); ValueError naming the first problem.

    Kept cheap: it runs for every reading the uploader takes in (about 100,000 a second).
    """
    labels = (b.get("i"), b.get("c"), b.get("u"))
    if type(labels[0]) is not str or type(labels[1]) is not str or type(labels[2]) is not str:
        raise ValueError(f"{what}: instrument (i), channel (c) and units (u) must be strings, got "
                         f"{printable(repr(labels), 120)}")
    if labels not in _KNOWN_LABELS:
        check_name(labels[0], f"{what}: instrument (i)")
        check_name(labels[1], f"{what}: channel (c)")
        units = labels[2]
        if len(units) > UNITS_MAX or not units.isprintable():
            raise ValueError(f"{what}: units (u) must be printable text of at most {UNITS_MAX} characters, "
                             f"got {printable(repr(units), 80)}")
        if len(_KNOWN_LABELS) > 100_000:
            _KNOWN_LABELS.clear()
        _KNOWN_LABELS.add(labels)
    quality = b.get("q")
    if quality not in _QUALITIES:
        raise ValueError(f"{what}: quality (q) {printable(repr(quality), 80)} is not one of the known qualities")
    value = b.get("v")
    try:
        kind = value_type(b)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    if quality == "ok":
        if kind is ValueType.FLOAT:
            if (type(value) is not float and type(value) is not int) or not math.isfinite(value):
                raise ValueError(f"{what}: a reading of quality ok needs a finite number (v), got "
                                 f"{printable(repr(value), 80)}")
        elif not value_fits(value, kind) or (type(value) is str and (len(value) > STRING_MAX
                                                                      or not value.isprintable())):
            raise ValueError(f"{what}: a reading of type {kind} and quality ok needs {_EXPECTED[kind]} (v), got "
                             f"{printable(repr(value), 80)}")
    elif value is not None:
        raise ValueError(f"{what}: a reading of quality {quality} must not carry a value, got "
                         f"{printable(repr(value), 80)}")
    if not _finite_time(b.get("t")):
        raise ValueError(f"{what}: timestamp (t) must be Unix seconds between 2000 and 2100, got "
                         f"{printable(repr(b.get('t')), 80)}")
    if "p" in b and not _finite_time(b["p"]):
        raise ValueError(f"{what}: poll mark (p) must be Unix seconds between 2000 and 2100, got "
                         f"{printable(repr(b['p']), 80)}")
    if "d" in b:
        detail = b["d"]
        if not isinstance(detail, str) or len(detail) > DETAIL_MAX:
            raise ValueError(f"{what}: detail (d) must be text of at most {DETAIL_MAX} characters")


def _optional_text(body: Mapping[str, Any], key: str, what: str, max_length: int = TEXT_MAX) -> str | None:
    value = body.get(key)
    return None if value is None else check_text(value, f"{what}: {key}", max_length)


def _run_id(body: Mapping[str, Any], what: str) -> str:
    run_id = body.get("run_id")
    if not is_run_id(run_id):
        raise ValueError(f"{what}: run_id must be 32 lowercase hex digits, got {printable(repr(run_id), 80)}")
    assert isinstance(run_id, str)
    return run_id


def run_start_body(body: Mapping[str, Any], what: str = "run_start", seq: int | None = None) -> dict[str, Any]:
    """The ``run_start`` marker's body as the contract allows it (ValueError otherwise).

    Only the known keys are kept, so a marker's metadata is bounded in size and plain in type.
    ``seq`` is the marker's own, when known: ``pre_roll_from`` must lie before it.
    """
    checked: dict[str, Any] = {
        "run_id": _run_id(body, what),
        "stream_name": check_text(body.get("stream_name"), f"{what}: stream_name"),
        "physical_sample": _optional_text(body, "physical_sample", what),
        "synth_source_id": _optional_text(body, "synth_source_id", what),
        "project_id": _optional_text(body, "project_id", what),
        "tags": check_tags(body.get("tags") or [], f"{what}: tags"),
    }
    if body.get("trigger") is not None:  # absent: manual (a bridge before automatic runs)
        checked["trigger"] = check_trigger(body["trigger"], f"{what}: trigger")
    if body.get("why") is not None:
        checked["why"] = why_body(body["why"], f"{what}: why")
    pre_roll_from = body.get("pre_roll_from")
    if pre_roll_from is not None:
        if type(pre_roll_from) is not int or not 1 <= pre_roll_from <= SEQ_MAX:
            raise ValueError(f"{what}: pre_roll_from must be an integer 1..2**63-1, got "
                             f"{printable(repr(pre_roll_from), 80)}")
        if seq is not None and pre_roll_from >= seq:
            raise ValueError(f"{what}: pre_roll_from ({pre_roll_from}) must be a seq before the marker's own ({seq})")
        checked["pre_roll_from"] = pre_roll_from
    return checked


def run_stop_body(body: Mapping[str, Any], what: str = "run_stop") -> dict[str, Any]:
    """The ``run_stop`` marker's body as the contract allows it (ValueError otherwise)."""
    run_id = _run_id(body, what)
    status = body.get("exit_status")
    if status not in EXIT_STATUSES:
        raise ValueError(f"{what}: exit_status must be one of {', '.join(EXIT_STATUSES)}, got "
                         f"{printable(repr(status), 80)}")
    last_seq = body.get("last_seq")
    if last_seq is not None and (type(last_seq) is not int or not 0 <= last_seq <= SEQ_MAX):
        raise ValueError(f"{what}: last_seq must be an integer 0..2**63-1, got {printable(repr(last_seq), 80)}")
    checked: dict[str, Any] = {"run_id": run_id, "exit_status": status, "last_seq": last_seq}
    reason = _optional_text(body, "reason", what, 1000)
    if reason is not None:
        checked["reason"] = reason
    if body.get("why") is not None:
        checked["why"] = why_body(body["why"], f"{what}: why")
    return checked


def run_resume_body(body: Mapping[str, Any], what: str = "run_resume") -> dict[str, Any]:
    """The ``run_resume`` marker: the run goes on after the bridge was down from ``down_from`` to ``down_to``.

    Both are the bridge's clock (the last entry it had logged, and its restart); they are not
    required to be in order, because a clock stepped back while the bridge was down is a fact
    the report must show, not a reason to refuse the marker.
    """
    checked: dict[str, Any] = {"run_id": _run_id(body, what)}
    for key in ("down_from", "down_to"):
        value = body.get(key)
        if not _finite_time(value):
            raise ValueError(f"{what}: {key} must be Unix seconds between 2000 and 2100, got "
                             f"{printable(repr(value), 80)}")
        checked[key] = float(value)  # type: ignore[arg-type]  # _finite_time: an int or a float
    return checked


def event_body(body: Mapping[str, Any], what: str = "event") -> dict[str, Any]:
    """An ``event`` entry (an annotation): text, tags, who logged it, and the run open then, if any."""
    run_id = body.get("run_id")
    if run_id is not None and not is_run_id(run_id):
        raise ValueError(f"{what}: run_id must be 32 lowercase hex digits or nil, got {printable(repr(run_id), 80)}")
    return {
        "text": check_text(body.get("text"), f"{what}: text", EVENT_TEXT_MAX),
        "tags": check_tags(body.get("tags") or [], f"{what}: tags"),
        "source": check_name(body.get("source"), f"{what}: source"),
        "run_id": run_id,
    }


def baseline_body(body: Mapping[str, Any], what: str = "baseline") -> dict[str, Any]:
    """A ``baseline`` entry: every instrument's identity and configuration, read at ``when``.

    ``when`` is ``connect`` (an instrument connected or reconnected, ``run_id`` the run open then
    or nil), ``start`` (read right after a run's start marker) or ``stop`` (right before its stop
    marker). Only the keys listed are kept, every one bounded: at most 256 instruments, each with
    at most 128 identity, configuration and error fields of texts up to 200 characters.
    """
    when = body.get("when")
    if when not in BASELINE_WHEN:
        raise ValueError(f"{what}: when must be one of {', '.join(BASELINE_WHEN)}, got {printable(repr(when), 80)}")
    run_id = body.get("run_id")
    if run_id is not None and not is_run_id(run_id):
        raise ValueError(f"{what}: run_id must be 32 lowercase hex digits or nil, got {printable(repr(run_id), 80)}")
    if when != "connect" and run_id is None:
        raise ValueError(f"{what}: a baseline read at a run's {when} names its run_id")
    instruments = body.get("instruments")
    if not isinstance(instruments, Mapping):
        raise ValueError(f"{what}: instruments must be a map of instrument name to its snapshot")
    if len(instruments) > BASELINE_INSTRUMENTS_MAX:
        raise ValueError(f"{what}: {len(instruments)} instruments; at most {BASELINE_INSTRUMENTS_MAX} are allowed")
    checked = {check_name(name, f"{what}: instrument"): _snapshot(snapshot, f"{what}: {name}")
               for name, snapshot in instruments.items()}
    return {"when": when, "run_id": run_id, "instruments": checked}


def _snapshot(value: object, what: str) -> dict[str, Any]:
    """One instrument's ``identity``, ``configuration``, ``errors`` (queries refused) and ``error`` (not read)."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a map with identity and configuration, got {type(value).__name__}")
    snapshot: dict[str, Any] = {
        "identity": _fields(value.get("identity", {}), f"{what}.identity", lambda v, w: check_text(
            v, w, BASELINE_TEXT_MAX)),
        "configuration": _fields(value.get("configuration", {}), f"{what}.configuration", _setting),
    }
    if value.get("errors"):
        snapshot["errors"] = _fields(value["errors"], f"{what}.errors",
                                     lambda v, w: check_text(v, w, BASELINE_TEXT_MAX), keys=check_text)
    if value.get("error") is not None:
        snapshot["error"] = check_text(value["error"], f"{what}.error", BASELINE_TEXT_MAX)
    if value.get("t") is not None:
        if not _finite_time(value["t"]):
            raise ValueError(f"{what}.t must be Unix seconds between 2000 and 2100, got {printable(repr(value['t']))}")
        snapshot["t"] = float(value["t"])
    return snapshot


def _fields(value: object, what: str, check: Any, keys: Any = check_name) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a map, got {type(value).__name__}")
    if len(value) > BASELINE_FIELDS_MAX:
        raise ValueError(f"{what}: {len(value)} fields; at most {BASELINE_FIELDS_MAX} are allowed")
    return {keys(key, f"{what} key"): check(item, f"{what}.{printable(key, 64)}") for key, item in value.items()}


def _setting(value: object, what: str) -> str | int | float | bool:
    """A configuration value: a text, a finite number or true/false."""
    if isinstance(value, bool):
        return value
    if type(value) in (int, float):
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise ValueError(f"{what} must be a finite number, got {value!r}")
        return value  # type: ignore[return-value]
    return check_text(value, what, BASELINE_TEXT_MAX)


def check_trigger(value: object, what: str = "trigger") -> str:
    if value not in TRIGGERS:
        raise ValueError(f"{what} must be one of {', '.join(TRIGGERS)}, got {printable(repr(value), 80)}")
    assert isinstance(value, str)
    return value


#: a channel as expressions name it, ``instrument.channel`` (both names; a name may hold dots itself)
_CHANNEL_REF: Final = re.compile(NAME_PATTERN[:-1] + r"\." + NAME_PATTERN[1:])


def why_body(value: object, what: str = "why") -> dict[str, Any]:
    """Why a trigger opened or closed a run: the CEL expression and the values that made it true.

    Bounded (an expression of at most 1000 characters, at most 64 values) and plain: each value
    is a finite number under its ``instrument.channel``, as the expression saw it.
    """
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a map with expression and values, got {type(value).__name__}")
    unknown = [key for key in value if key not in ("expression", "values")]
    if unknown:
        raise ValueError(f"{what}: unknown key {printable(repr(unknown[0]), 80)} (accepted: expression, values)")
    expression = check_text(value.get("expression"), f"{what}.expression", WHY_EXPRESSION_MAX)
    values = value.get("values", {})
    if not isinstance(values, Mapping):
        raise ValueError(f"{what}.values must be a map of instrument.channel to number, got {type(values).__name__}")
    if len(values) > WHY_VALUES_MAX:
        raise ValueError(f"{what}.values: {len(values)} values; at most {WHY_VALUES_MAX} are allowed")
    checked: dict[str, float | int] = {}
    for key, number in values.items():
        if not isinstance(key, str) or _CHANNEL_REF.fullmatch(key) is None:
            raise ValueError(f"{what}.values: {printable(repr(key), 80)} is not instrument.channel")
        if type(number) not in (int, float) or not math.isfinite(number):
            raise ValueError(f"{what}.values[{key}] must be a finite number, got {printable(repr(number), 80)}")
        checked[key] = number
    return {"expression": expression, "values": checked}


# ---------------------------------------------------------------- acknowledgements


def encode_ack(epoch: str, seq: int) -> bytes:
    """The uploader's ack: the highest seq of ``epoch`` such that it has committed every seq up to it."""
    return pack({"v": SCHEMA_VERSION, "epoch": epoch, "seq": seq})


def decode_ack(data: bytes) -> Ack:
    if len(data) > 1024:
        raise ProtocolError(f"ack: {len(data)} bytes; an ack is a few dozen")
    obj = _message(data, "ack")
    epoch: str = _get(obj, "epoch", "ack", str, "a string")
    if not is_name(epoch):
        raise ProtocolError(f"ack: epoch {printable(repr(epoch), 80)} is not a valid name")
    seq = _seq(obj, "seq", "ack", 0)
    if seq > SEQ_MAX:
        raise ProtocolError(f"ack: seq {seq} is beyond 2**63-1")
    return Ack(epoch, seq)


# ---------------------------------------------------------------- commands and replies


#: a command is a few hundred bytes; anything larger is refused before it is decoded
COMMAND_MAX_BYTES: Final = 16 * 1024
#: a request id is echoed in the reply and printed in logs: at most this many characters
REQUEST_ID_MAX: Final = 64


@dataclass(frozen=True, slots=True)
class StartRun:
    """``start_run``'s params as the contract allows them (docs/payload.md, docs/security.md).

    There is no ``run_id``: run ids belong to the bridge (:func:`bridge.names.new_run_id`). A
    run id from outside would become a folder of the store and an id at the API, so a command
    carrying one is refused rather than trusted.
    """

    stream_name: str
    physical_sample: str | None = None
    synth_source_id: str | None = None
    project_id: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StopRun:
    """``stop_run``'s params: ``exit_status`` is one of :data:`EXIT_STATUSES`, ``reason`` a free text."""

    exit_status: str = "success"
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Annotate:
    """``annotate``'s params: an event's text and tags (the bridge adds the time, the source and the run)."""

    text: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SetAuto:
    """``auto``'s params: switch the automatic run triggers on or off (``chamber-bridge auto on|off``)."""

    enabled: bool


@dataclass(frozen=True, slots=True)
class NextRun:
    """``next_run``'s params: metadata for the next run, manual or automatic, used once.

    Every field is optional; none at all clears what an earlier ``next-run`` set.
    """

    stream_name: str | None = None
    physical_sample: str | None = None
    synth_source_id: str | None = None
    project_id: str | None = None
    tags: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self == NextRun()


CommandParams = StartRun | StopRun | Annotate | SetAuto | NextRun
#: the params class of each action
PARAMS: Final[dict[str, type]] = {"start_run": StartRun, "stop_run": StopRun, "annotate": Annotate,
                                  "auto": SetAuto, "next_run": NextRun}

_START_PARAMS: Final = ("stream_name", "physical_sample", "synth_source_id", "project_id", "tags")
_STOP_PARAMS: Final = ("exit_status", "reason")
_ANNOTATE_PARAMS: Final = ("text", "tags")
_AUTO_PARAMS: Final = ("enabled",)


class CommandError(ProtocolError):
    """A command the contract refuses. ``reason`` is one printable line for the reply;
    ``request_id`` is the command's when it could be read, so the refusal can be answered."""

    def __init__(self, reason: str, request_id: str | None = None) -> None:
        self.reason = printable(reason, 300)
        self.request_id = request_id
        super().__init__(f"command {request_id}: {self.reason}" if request_id else f"command: {self.reason}")


def command_params(action: str, params: Mapping[str, Any]) -> CommandParams:
    """``params`` of ``action`` checked against the contract; :class:`CommandError` naming the first problem.

    One check for every side: the bridge applies it to what arrives (:func:`decode_command`),
    senders to what they send (:func:`encode_command`, the CLI before it connects). Unlike the
    data messages, an unknown param is refused, not ignored: a command is an order, and a
    sender that believes a param is obeyed (a newer CLI's, or a ``run_id``) must be told it is not.
    """
    if not isinstance(params, Mapping):
        raise CommandError(f"{action}: params must be a map, got {type(params).__name__}")
    if action in ("start_run", "next_run") and "run_id" in params:
        raise CommandError(f"{action}: params must not carry a run_id; the bridge chooses the run id itself")
    try:
        if action == "start_run":
            _only_known(params, action, _START_PARAMS)
            if "stream_name" not in params:
                raise CommandError("start_run needs a stream_name")
            return StartRun(check_text(params["stream_name"], "start_run: stream_name"),
                            *_metadata(params, action))
        if action == "next_run":
            _only_known(params, action, _START_PARAMS)
            return NextRun(_optional_text(params, "stream_name", action), *_metadata(params, action))
        if action == "stop_run":
            _only_known(params, action, _STOP_PARAMS)
            status = params.get("exit_status", "success")
            if not isinstance(status, str) or status not in EXIT_STATUSES:
                raise CommandError(f"stop_run: exit_status must be one of {', '.join(EXIT_STATUSES)}, got "
                                   f"{printable(repr(status), 80)}")
            return StopRun(status, _optional_text(params, "reason", action))
        if action == "annotate":
            _only_known(params, action, _ANNOTATE_PARAMS)
            if "text" not in params:
                raise CommandError("annotate needs a text")
            tags = params.get("tags")
            return Annotate(check_text(params["text"], "annotate: text", EVENT_TEXT_MAX),
                            tuple(check_tags([] if tags is None else tags, "annotate: tags")))
        if action == "auto":
            _only_known(params, action, _AUTO_PARAMS)
            enabled = params.get("enabled")
            if not isinstance(enabled, bool):
                raise CommandError(f"auto: enabled must be true or false, got {printable(repr(enabled), 80)}")
            return SetAuto(enabled)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    raise CommandError(f"action {printable(repr(action), 80)} is not one of {', '.join(COMMAND_ACTIONS)}")


def _metadata(params: Mapping[str, Any], action: str) -> tuple[str | None, str | None, str | None, tuple[str, ...]]:
    """A run's optional metadata (sample, instrument id, project, tags), checked; ValueError naming a problem."""
    tags = params.get("tags")
    return (_optional_text(params, "physical_sample", action), _optional_text(params, "synth_source_id", action),
            _optional_text(params, "project_id", action), tuple(check_tags([] if tags is None else tags,
                                                                          f"{action}: tags")))


def _only_known(params: Mapping[str, Any], action: str, known: tuple[str, ...]) -> None:
    unknown = [key for key in params if key not in known]
    if unknown:
        raise CommandError(f"{action}: unknown param {printable(repr(unknown[0]), 80)} (accepted: {', '.join(known)})")


def params_map(params: CommandParams) -> dict[str, Any]:
    """The params as the map that goes on the wire (and, for a start, into the ``run_start`` marker)."""
    if isinstance(params, StartRun | NextRun):
        return {"stream_name": params.stream_name, "physical_sample": params.physical_sample,
                "synth_source_id": params.synth_source_id, "project_id": params.project_id,
                "tags": list(params.tags)}
    if isinstance(params, StopRun):
        return {"exit_status": params.exit_status, **({"reason": params.reason} if params.reason else {})}
    if isinstance(params, Annotate):
        return {"text": params.text, "tags": list(params.tags)}
    return {"enabled": params.enabled}


def encode_command(request_id: str, action: CommandAction, params: Mapping[str, Any] | CommandParams) -> bytes:
    """A command; its params are checked first (:class:`CommandError`), so nothing invalid is sent."""
    if action not in COMMAND_ACTIONS:
        raise ValueError(f"unknown command action {action!r} (expected one of {', '.join(COMMAND_ACTIONS)})")
    checked = params if isinstance(params, CommandParams) else command_params(action, params)
    if type(checked) is not PARAMS[action]:
        raise ValueError(f"{type(checked).__name__} params do not go with the action {action}")
    return pack({"v": SCHEMA_VERSION, "request_id": request_id, "action": action, "params": params_map(checked)})


def decode_command(data: bytes) -> Command:
    """Decode and check a command: :class:`CommandError` naming the first problem.

    The error carries the request id whenever it could be read, so the bridge answers every
    refusal it can address; a command without a readable id cannot be answered and is only logged.
    """
    if len(data) > COMMAND_MAX_BYTES:
        raise CommandError(f"{len(data)} bytes; a command is at most {COMMAND_MAX_BYTES}")
    try:
        obj = _message(data, "command")
    except ProtocolError as exc:
        raise CommandError(str(exc).removeprefix("command: "), _readable_request_id(data)) from None
    request_id = _readable_request_id(data, obj)
    if request_id is None:
        raise CommandError(f"request_id must be text of 1-{REQUEST_ID_MAX} printable characters, got "
                           f"{printable(repr(obj.get('request_id')), 80)}")
    action = obj.get("action")
    if not isinstance(action, str) or action not in COMMAND_ACTIONS:
        raise CommandError(f"action {printable(repr(action), 80)} is not one of {', '.join(COMMAND_ACTIONS)}",
                           request_id)
    if "params" not in obj:
        raise CommandError("missing key 'params'", request_id)
    try:
        params = command_params(action, obj["params"])
    except CommandError as exc:
        raise CommandError(exc.reason, request_id) from None
    return Command(request_id, action, params)  # type: ignore[arg-type]  # action checked against COMMAND_ACTIONS


def _readable_request_id(data: bytes, obj: Any = None) -> str | None:
    """The command's request id if it is one the bridge can echo (short printable text), else None."""
    if obj is None:
        try:
            obj = _unpack(data, "command")
        except ProtocolError:
            return None
    value = obj.get("request_id") if isinstance(obj, dict) else None
    try:
        return check_text(value, "request_id", REQUEST_ID_MAX)
    except ValueError:
        return None


def encode_reply(request_id: str, ok: bool, message: str, seq: int | None) -> bytes:
    return pack({"v": SCHEMA_VERSION, "request_id": request_id, "ok": ok, "message": message, "seq": seq})


def decode_reply(data: bytes) -> Reply:
    obj = _message(data, "reply")
    request_id: str = _get(obj, "request_id", "reply", str, "a string")
    what = f"reply {request_id}"
    seq = None if obj.get("seq", 0) is None else _seq(obj, "seq", what, 1)
    return Reply(request_id, _get(obj, "ok", what, bool, "a boolean"), _get(obj, "message", what, str, "a string"), seq)


# ---------------------------------------------------------------- retained JSON statuses


#: a retained status larger than this is refused (a bridge's is about 2 KiB, the uploader's grows with its sites)
STATUS_MAX_BYTES: Final = 256 * 1024


def decode_status(data: bytes, what: str = "status") -> dict[str, Any]:
    """A retained JSON status (a bridge's or the uploader's) as a plain object; BadMessage otherwise.

    Statuses are JSON for people and dashboards, but they arrive from the broker like anything
    else: bounded in size, and a document nested deeper than Python recurses (``[[[[...``)
    is refused rather than let a RecursionError escape into a service's intake.
    """
    if len(data) > STATUS_MAX_BYTES:
        raise BadMessage("bad_status", f"{what}: {len(data)} bytes; at most {STATUS_MAX_BYTES} are accepted")
    try:
        status = json.loads(data)
    except RecursionError:
        raise BadMessage("bad_status", f"{what}: JSON nested too deeply") from None
    except ValueError:
        raise BadMessage("bad_status", f"{what}: not JSON") from None
    if not isinstance(status, dict):
        raise BadMessage("bad_status", f"{what}: not a JSON object but {type(status).__name__}")
    return status


def ntp_synchronized(status: Mapping[str, Any]) -> bool | None:
    """The ``clock.ntp_synchronized`` a bridge's status reports: True, False, or None when unknown or malformed."""
    clock = status.get("clock")
    value = clock.get("ntp_synchronized") if isinstance(clock, dict) else None
    return value if isinstance(value, bool) else None
