"""The poller's pure rules on plain numbers: drift-free deadlines, late-but-served vs. missed,
no catching up after a long read, capped backoff, and when an instrument is marked unavailable
(logged once each way)."""

from __future__ import annotations

import itertools
import logging

import pytest

from bridge.edge.polling.availability import Availability, State
from bridge.edge.polling.schedule import Backoff, Grid, spread
from tests.helpers.clock import FakeClock

# ---------------------------------------------------------------------- grid


def run(grid: Grid, durations: list[float], clock: FakeClock) -> list[float]:
    """One instrument alone on its bus: wait for the deadline, read for ``duration``; the read
    start times (relative to the origin)."""
    starts = []
    for duration in durations:
        clock.now = max(clock.now, grid.deadline)
        grid.catch_up(clock.now)
        starts.append(round(clock.now - grid.origin, 9))
        clock.advance(duration)
        grid.advance(clock.now)
    return starts


def test_deadlines_are_computed_from_the_origin_never_accumulated() -> None:
    grid = Grid(origin=1000.0, interval=0.1)
    clock = FakeClock(1000.0)
    run(grid, [0.003] * 36_000, clock)  # an hour at 10 Hz
    assert grid.index == 36_000
    assert grid.deadline == 1000.0 + 36_000 * 0.1
    assert grid.missed == 0


def test_a_read_started_late_within_its_interval_is_served_not_skipped() -> None:
    grid = Grid(origin=0.0, interval=0.1)
    assert grid.catch_up(0.099) == 0  # the bus was busy for 99 ms: still this deadline's read
    assert grid.deadline == 0.0
    grid.advance(0.1005)
    assert grid.deadline == pytest.approx(0.2)  # 0.1 was overrun by this read: missed
    assert grid.missed == 1


def test_after_a_long_wait_the_latest_passed_deadline_is_served_and_the_others_counted() -> None:
    grid = Grid(origin=0.0, interval=0.1)
    assert grid.catch_up(0.52) == 5  # another instrument's 0.5 s timeout held the bus
    assert grid.deadline == pytest.approx(0.5)
    assert grid.missed == 5


def test_a_long_read_skips_to_the_next_deadline_in_the_future_without_bunching() -> None:
    clock = FakeClock(0.0)
    grid = Grid(origin=0.0, interval=0.1)
    starts = run(grid, [0.01, 0.25, 0.01, 0.01], clock)
    # 0.1 and 0.2 passed during the long read: skipped and counted, not fired back to back at 0.26
    assert starts == [0.0, 0.1, 0.4, 0.5]
    assert grid.missed == 2


def test_a_read_taking_longer_than_its_interval_every_time_halves_the_rate_and_says_so() -> None:
    clock = FakeClock(0.0)
    grid = Grid(origin=0.0, interval=0.1)
    starts = run(grid, [0.101] * 5, clock)
    assert starts == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert grid.missed == 5  # every grid point is either read or counted


def test_a_read_ending_exactly_on_a_deadline_does_not_lose_it_to_float_rounding() -> None:
    grid = Grid(origin=0.0, interval=0.1)
    grid.advance(0.3)  # 0.3 / 0.1 = 2.9999999999999996
    assert grid.index == 3 and grid.missed == 2
    grid = Grid(origin=0.0, interval=0.1)
    assert grid.catch_up(0.3) == 3


def test_grid_points_passed_while_connecting_or_down_are_not_missed() -> None:
    grid = Grid(origin=0.0, interval=0.1)
    assert grid.catch_up(0.35, count=False) == 3
    grid.advance(0.72, count=False)  # a slow connect, then the first read
    assert grid.deadline == pytest.approx(0.8)
    assert grid.missed == 0


def test_instruments_on_one_origin_stay_in_phase() -> None:
    fast, slow = Grid(0.0, 0.1), Grid(0.0, 0.3)
    for now in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
        for grid in (fast, slow):
            if grid.deadline <= now + 1e-12:
                grid.catch_up(now)
                grid.advance(now + 0.001)
    assert slow.deadline == pytest.approx(0.9)
    assert fast.deadline == pytest.approx(0.7)


def test_instruments_started_together_are_spread_over_the_shortest_interval() -> None:
    assert spread([0.1, 1.0, 0.5, 0.1]) == pytest.approx([0.0, 0.025, 0.05, 0.075])
    assert spread([]) == []
    offsets = spread([0.1] * 10)
    grids = [Grid(origin=100.0 + offset, interval=0.1) for offset in offsets]
    for grid in grids:
        grid.advance(100.0 + 50 * 0.1 + 0.001)  # 5 s later: still 10 ms apart, none on another's instant
    deadlines = sorted(g.deadline for g in grids)
    assert [round(b - a, 9) for a, b in itertools.pairwise(deadlines)] == [0.01] * 9


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Grid(0.0, 0.0)


# ---------------------------------------------------------------------- backoff


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(initial=1.0, maximum=30.0)
    assert [backoff.delay(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_backoff_stays_capped_in_a_week_long_outage() -> None:
    assert Backoff(initial=0.5, maximum=30.0).delay(100_000) == 30.0


def test_backoff_factor_one_is_a_fixed_delay() -> None:
    assert [Backoff(initial=2.0, maximum=5.0, factor=1).delay(n) for n in (1, 2, 50)] == [2.0, 2.0, 2.0]


@pytest.mark.parametrize(("initial", "maximum", "factor"), [(0.0, 1.0, 2.0), (2.0, 1.0, 2.0), (1.0, 2.0, 0.5)])
def test_backoff_refuses_nonsense(initial: float, maximum: float, factor: float) -> None:
    with pytest.raises(ValueError):
        Backoff(initial, maximum, factor)


def test_retries_count_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        Backoff().delay(0)


# ---------------------------------------------------------------------- health


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bridge.edge.polling" and r.levelno == level]


def test_unavailable_after_the_configured_failures_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "bridge.edge.polling")
    health = Availability("pyrometer", failures_before_unavailable=3, backoff=Backoff(1.0, 30.0))
    assert health.succeeded(1.5e9) is True  # starting -> up: worth publishing
    assert [health.failed("no reply", 10.0), health.failed("no reply", 10.5)] == [False, False]
    assert health.available and health.consecutive_failures == 2
    assert health.failed("no reply within 0.5 s", 11.0) is True
    assert health.state is State.DOWN and not health.available
    assert health.retry_at == 12.0
    assert health.failed("no reply", 12.0) is False  # retries while down change nothing
    assert health.failed("no reply", 14.0) is False
    assert health.retry_at == 18.0  # 1 s, 2 s, then 4 s
    assert messages(caplog, logging.WARNING) == [
        "pyrometer: unavailable after 3 failures: no reply within 0.5 s; retrying with backoff"]
    status = health.status(missed_deadlines=4)
    assert (status.available, status.last_error, status.consecutive_failures, status.failures, status.reads,
            status.missed_deadlines, status.last_reading_at) == (False, "no reply", 5, 5, 1, 4, 1.5e9)


def test_recovery_logged_once_and_counts_reset(caplog: pytest.LogCaptureFixture) -> None:
    health = Availability("gauge", failures_before_unavailable=1, backoff=Backoff(0.1, 0.2))
    health.succeeded(1.0)
    health.failed("lost /dev/ttyUSB0", 5.0)
    caplog.set_level(logging.INFO, "bridge.edge.polling")
    assert health.succeeded(2.0) is True
    assert health.succeeded(3.0) is False
    assert health.available and health.consecutive_failures == 0 and health.last_error is None
    assert health.reads == 3 and health.failures == 1
    assert messages(caplog, logging.INFO) == ["gauge: available again after 1 failed attempt"]


def test_failures_below_the_threshold_are_forgotten_by_a_success() -> None:
    health = Availability("gauge", failures_before_unavailable=3)
    for _ in range(10):
        health.failed("garbled reply", 1.0)
        health.failed("garbled reply", 1.0)
        health.succeeded(None)
    assert health.available and health.failures == 20 and health.last_reading_at is None


def test_an_instrument_that_cannot_connect_at_start_is_down_at_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "bridge.edge.polling")
    health = Availability("psu", failures_before_unavailable=3, backoff=Backoff(0.5, 4.0))
    assert health.failed("cannot open TCPIP::10.0.0.9::5025::SOCKET: refused", 0.0, connecting=True) is True
    assert health.state is State.DOWN and health.retry_at == 0.5
    assert messages(caplog, logging.WARNING) == [
        "psu: cannot start: cannot open TCPIP::10.0.0.9::5025::SOCKET: refused; retrying with backoff"]


def test_a_first_read_failing_after_a_good_connect_counts_like_any_other() -> None:
    health = Availability("gauge", failures_before_unavailable=2)
    assert health.failed("no reply", 0.0) is False
    assert health.state is State.STARTING
    assert health.failed("no reply", 1.0) is True
    assert health.state is State.DOWN


def test_threshold_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Availability("gauge", failures_before_unavailable=0)
