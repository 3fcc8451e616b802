"""Checking request bodies as the API does: a wrong body is an :class:`ApiError` (422 mostly), never a crash."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from simulators.services.atomscale.records import ApiError, StoredChunk


def need_post(method: str) -> None:
    if method != "POST":
        raise ApiError(405, "Method Not Allowed")


def json_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(422, "the body must be a JSON object")
    return body


def text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ApiError(422, f"{key} must be a string")
    return value


def same_name(a: str, b: str) -> bool:
    """The server's uniqueness: ASCII case-insensitive (as the SDK matches names)."""
    return a.encode("utf-8").lower() == b.encode("utf-8").lower()


def numbers(value: Any, what: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise ApiError(422, f"{what} must be a list of numbers")
    return tuple(float(v) for v in value)


def channel_chunk(name: str, data: Mapping[str, Any]) -> StoredChunk:
    timestamps = numbers(data.get("timestamps"), f"{name}: timestamps")
    values = numbers(data.get("values"), f"{name}: values")
    if len(timestamps) != len(values):
        raise ApiError(422, f"{name}: timestamps and values differ in length")
    if not timestamps:
        raise ApiError(422, f"{name}: empty chunk")
    units = data.get("units")
    if units is not None and not isinstance(units, str):
        raise ApiError(422, f"{name}: units must be a string")
    return StoredChunk(timestamps, values, units)
