"""`chamber-bridge health` judging a status: online and fresh is healthy, anything else says why."""

from __future__ import annotations

import json
from typing import Any

from bridge.cli.health import judge

NOW = 1_763_700_000.0
TOPIC = "lab/uploader/status"


def status(**fields: Any) -> bytes:
    return json.dumps({"v": 1, "state": "online", "time": NOW - 2.0, **fields}).encode()


def test_online_and_fresh_is_healthy_with_the_numbers_an_operator_looks_at() -> None:
    payload = status(spool={"depth": 1800, "alarm": False}, runs_open=[{"run_id": "r"}],
                     sinks={"local": {"backlog": 3, "alarm": False, "last_error": None}})
    health = judge(payload, "the uploader", TOPIC, max_age=30, now=NOW)
    assert health.healthy
    assert health.message == "online: the uploader, status 2.0 s old; spool depth 1800, 1 runs open, local backlog 3"


def test_alarms_are_named_but_an_online_fresh_status_stays_healthy() -> None:
    payload = status(spool={"depth": 5, "alarm": True},
                     sinks={"atomscale": {"backlog": 9, "alarm": True, "last_error": "401 Unauthorized"}})
    health = judge(payload, "the uploader", TOPIC, max_age=30, now=NOW)
    assert health.healthy
    assert health.message.endswith("ALARM: spool full (intake paused); atomscale sink: 401 Unauthorized")


def test_bridge_status_names_unavailable_instruments_outbox_and_clock() -> None:
    payload = status(instruments=[{"name": "gauge", "available": True}, {"name": "pyro", "available": False}],
                     outbox={"depth": 120, "overflow": False}, clock={"ntp_synchronized": False})
    health = judge(payload, "the bridge of site chamber-a", "lab/chamber-a/status", max_age=30, now=NOW)
    assert health.healthy
    assert "outbox depth 120, 1/2 instruments available, ntp NOT synchronized; ALARM: unavailable: pyro" \
        in health.message


def test_offline_is_unhealthy() -> None:
    health = judge(json.dumps({"v": 1, "state": "offline", "time": NOW - 60}).encode(), "the uploader", TOPIC,
                   max_age=30, now=NOW)
    assert not health.healthy
    assert health.message == "offline: the uploader went offline 60 s ago (lab/uploader/status)"


def test_an_old_online_status_is_stale() -> None:
    health = judge(status(time=NOW - 31), "the uploader", TOPIC, max_age=30, now=NOW)
    assert not health.healthy
    assert health.message.startswith("stale: the uploader last reported 31 s ago (max 30 s)")
    assert judge(status(time=NOW - 29), "the uploader", TOPIC, max_age=30, now=NOW).healthy


def test_garbage_is_unhealthy_and_named() -> None:
    assert judge(b"\x81\xa1v\x01", "u", TOPIC, max_age=30, now=NOW).message == f"unreadable status on {TOPIC}: not JSON"
    assert judge(b"[1]", "u", TOPIC, max_age=30, now=NOW).message.endswith("not a JSON object but list")
    deep = b"[" * 100_000 + b"]" * 100_000
    assert judge(deep, "u", TOPIC, max_age=30, now=NOW).message.endswith("JSON nested too deeply")
    assert judge(b" " * 300_000, "u", TOPIC, max_age=30, now=NOW).message.endswith("at most 262144 are accepted")
    assert judge(b'{"state": "online"}', "u", TOPIC, max_age=30, now=NOW).message.endswith("no 'time'")
    unknown = judge(status(state="starting"), "u", TOPIC, max_age=30, now=NOW)
    assert not unknown.healthy and unknown.message == f"unknown state 'starting' on {TOPIC}"


def test_a_status_from_a_clock_far_ahead_is_healthy_and_says_so() -> None:
    health = judge(status(time=NOW + 100), "the uploader", TOPIC, max_age=30, now=NOW)
    assert health.healthy and health.message.endswith("its clock is 100 s ahead of this one")


def test_runs_set_aside_and_replayed_run_ids_are_alarms_printed_escaped() -> None:
    payload = status(runs_failed=[{"run_id": "ab" * 16, "reason": "KeyError: 'x'\x1b[2J"}],
                     sources_failed=[{"site": "chamber-b", "epoch": "e1", "reason": "JSONDecodeError"}],
                     bad_messages={"evil": {"bad_seq": 3, "run_id_reused": 2}, "chamber-b": {"bad_status": 1}})
    health = judge(payload, "the uploader", TOPIC, max_age=30, now=NOW)
    assert "6 messages quarantined" in health.message
    assert f"run {'ab' * 16} set aside: KeyError: 'x'\\x1b[2J" in health.message
    assert "site chamber-b epoch e1 set aside: JSONDecodeError" in health.message
    assert "site evil replayed run ids 2 times" in health.message
    assert "\x1b" not in health.message


def test_a_sink_warning_is_named() -> None:
    payload = status(sinks={"atomscale": {"backlog": 0, "alarm": False, "last_error": None,
                                          "warning": "plain http: the API key travels in clear text"}})
    health = judge(payload, "the uploader", TOPIC, max_age=30, now=NOW)
    assert health.healthy
    assert health.message.endswith("ALARM: atomscale sink: plain http: the API key travels in clear text")
