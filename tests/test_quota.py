"""The quota: moving windows with margin, FIFO waiting, penalties, Redis sharing, outages.

Single-process behaviour runs on a frozen clock: ``limits``' storages read ``time.time``
from their own modules, so the ``clock`` fixture replaces that reference in
``limits.storage.memory`` with the same fake clock the :class:`Quota` gets; its ``sleep``
advances that clock. On Redis the server stamps calls with its own clock, so Redis tests
run on real time and check the stamps Redis recorded. Multi-thread and
multi-process tests run on real time with fast limits and only assert upper bounds with
generous slack, or exact storage timestamps.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import limits.storage.memory
import pytest
import redis

import arda_amazon_bp.quota as quota_module
from arda_amazon_bp.config import ConfigError, Settings
from arda_amazon_bp.credentials import Credentials
from arda_amazon_bp.errors import AmazonImportError, ErrorCode
from arda_amazon_bp.quota import Quota, WindowStatus, slots_for_retries

KEY = "cred-hash-1"
T0 = 1_800_000_000.0
WORKER = Path(__file__).with_name("quota_worker.py")


def make_settings(
    limits: str = "1/second;8640/day",
    margin: float = 0.15,
    uri: str = "memory://",
    max_wait: float = 3,
) -> Settings:
    return Settings.from_config(
        {
            "AMAZON_RATE_LIMITS": limits,
            "AMAZON_RATE_MARGIN_SECONDS": margin,
            "AMAZON_RATE_LIMIT_STORAGE_URI": uri,
            "AMAZON_MAX_WAIT_SECONDS": max_wait,
        }
    )


class FakeClock:
    """Epoch seconds that only move when a test (or the quota's sleep) says so."""

    def __init__(self, start: float = T0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def at(self, offset: float) -> None:
        self.now = T0 + offset


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(limits.storage.memory, "time", SimpleNamespace(time=fake.time))
    return fake


@pytest.fixture
def quotas() -> Iterator[list[Quota]]:
    """Quotas a test creates; closed afterwards."""
    made: list[Quota] = []
    yield made
    for quota in made:
        quota.close()


@pytest.fixture
def new_quota(quotas: list[Quota]) -> Any:
    def make(settings: Settings, clock: FakeClock | None = None) -> Quota:
        quota = Quota(settings, clock=clock.time, sleep=clock.sleep) if clock else Quota(settings)
        quotas.append(quota)
        return quota

    return make


#: A real redis-server of each kind the quota accepts (tests/fixtures_redis.py).
SHARED_REDIS = [
    pytest.param("redis_url", id="redis"),
    pytest.param("redis_cluster_uri", id="redis-cluster"),
    pytest.param("redis_sentinel_uri", id="redis-sentinel"),
]


def refusal(quota: Quota, max_wait: float | None = 0) -> AmazonImportError:
    with pytest.raises(AmazonImportError) as info:
        quota.acquire(KEY, max_wait=max_wait)
    assert info.value.code is ErrorCode.AMAZON_RATE_LIMITED
    assert info.value.details["source"] == "local"
    assert info.value.headers["Retry-After"] == str(info.value.details["retryAfter"])
    return info.value


# -- one process, frozen clock ---------------------------------------------------------


def test_second_limit_keeps_the_margin(clock: FakeClock, new_quota: Any) -> None:
    quota = new_quota(make_settings("1/second", margin=0.15), clock)
    quota.acquire(KEY)
    quota.acquire(KEY)  # waits for the slot: 1 s + margin after the first
    assert clock.now - T0 == pytest.approx(1.15, abs=0.01)
    assert clock.now - T0 > 1.15
    assert len(clock.sleeps) == 1  # slept once, straight to the slot: no polling

    second = clock.now
    clock.now = second + 1.10  # a plain 1-second window would admit this one
    error = refusal(quota)
    assert error.details["limit"] == "second"
    assert error.details["quota"] == "1 per 1 second"
    assert error.headers["Retry-After"] == "1"
    clock.now = second + 1.151
    quota.acquire(KEY, max_wait=0)


def test_margin_zero_spaces_calls_by_exactly_the_window(clock: FakeClock, new_quota: Any) -> None:
    quota = new_quota(make_settings("1/second", margin=0), clock)
    quota.acquire(KEY)
    quota.acquire(KEY)
    assert clock.now - T0 == pytest.approx(1.0, abs=0.01)


def test_moving_window_admits_no_burst_across_a_second_boundary(
    clock: FakeClock, new_quota: Any
) -> None:
    quota = new_quota(make_settings("2/second", margin=0), clock)
    clock.at(0.998)
    quota.acquire(KEY)
    quota.acquire(KEY)
    clock.at(1.002)  # a fixed window would have reset at 1.000
    assert refusal(quota).details["limit"] == "second"


def test_daily_quota_is_refused_with_retry_after_until_a_slot_frees(
    clock: FakeClock, new_quota: Any
) -> None:
    quota = new_quota(make_settings("3/day"), clock)
    for offset in (0, 10, 20):
        clock.at(offset)
        quota.acquire(KEY)
    clock.at(30)
    error = refusal(quota, max_wait=3)
    assert error.details["limit"] == "day"
    assert error.details["quota"] == "3 per 1 day"
    assert error.headers["Retry-After"] == str(86_400 - 30)
    assert clock.sleeps == []  # no point waiting for a daily slot
    assert quota.daily(KEY) == WindowStatus("3 per 1 day", 3, 3, 0, T0 + 86_400)

    clock.at(86_400.5)  # the first call has left the window
    quota.acquire(KEY, max_wait=0)
    assert refusal(quota).headers["Retry-After"] == "10"  # the call at +10 frees next


def test_spent_daily_quota_does_not_consume_a_second_slot(clock: FakeClock, new_quota: Any) -> None:
    quota = new_quota(make_settings("1/second;2/day"), clock)
    quota.acquire(KEY)
    clock.at(5)
    quota.acquire(KEY)
    clock.at(10)
    assert refusal(quota, max_wait=3).details["limit"] == "day"
    second, day = quota.status(KEY)
    assert second.used == 0  # the daily window was read before any hit
    assert day.used == 2


def test_wait_beyond_max_wait_is_refused_at_once(clock: FakeClock, new_quota: Any) -> None:
    quota = new_quota(make_settings("1/second", margin=0.15, max_wait=0.5), clock)
    quota.acquire(KEY)
    clock.at(0.2)
    error = refusal(quota, max_wait=0.5)  # the slot frees at +1.15, 0.95 s away
    assert error.headers["Retry-After"] == "1"
    assert clock.sleeps == []
    quota.acquire(KEY, max_wait=1.0)  # within reach: waits
    assert clock.now - T0 == pytest.approx(1.15, abs=0.01)


def test_max_wait_defaults_to_the_setting(clock: FakeClock, new_quota: Any) -> None:
    quota = new_quota(make_settings("1/minute", max_wait=3), clock)
    quota.acquire(KEY)
    clock.at(58)
    quota.acquire(KEY)  # frees at +60 (+margin: sub-minute windows only, none here)
    assert clock.now - T0 == pytest.approx(60, abs=0.01)
    clock.at(62.5)  # the second call was at +60.001: its slot frees at +120.001
    assert refusal(quota, max_wait=None).headers["Retry-After"] == "58"


def test_penalty_makes_acquire_wait_or_refuse(clock: FakeClock, new_quota: Any) -> None:
    quota = new_quota(make_settings("1/second;8640/day"), clock)
    quota.penalize(KEY, 2.5)
    assert quota.penalized_until(KEY) == pytest.approx(T0 + 2.5)
    error = refusal(quota, max_wait=1)
    assert error.details["limit"] == "penalty"
    assert error.headers["Retry-After"] == "3"
    assert quota.status(KEY)[0].used == 0  # a refused acquire takes nothing

    quota.acquire(KEY, max_wait=3)  # the penalty ends within reach: wait for it
    assert clock.now - T0 == pytest.approx(2.5, abs=0.01)
    assert clock.now - T0 >= 2.5


def test_a_shorter_penalty_does_not_cut_a_longer_one_short(
    clock: FakeClock, new_quota: Any
) -> None:
    quota = new_quota(make_settings(), clock)
    quota.penalize(KEY, 30)
    quota.penalize(KEY, 1)
    assert quota.penalized_until(KEY) == pytest.approx(T0 + 30)
    quota.penalize(KEY, 0)  # meaningless values are ignored
    quota.penalize(KEY, float("nan"))
    assert refusal(quota, max_wait=3).headers["Retry-After"] == "30"


def test_status_and_daily_numbers(clock: FakeClock, new_quota: Any) -> None:
    quota = new_quota(make_settings("5/second;100/day", margin=0.15), clock)
    assert quota.status(KEY) == [
        WindowStatus("5 per 1 second", 5, 0, 5, T0),
        WindowStatus("100 per 1 day", 100, 0, 100, T0),
    ]
    quota.acquire(KEY)
    clock.at(0.5)
    quota.acquire(KEY)
    second, day = quota.status(KEY)
    assert second == WindowStatus("5 per 1 second", 5, 2, 3, T0 + 1.15)
    assert day == WindowStatus("100 per 1 day", 100, 2, 98, T0 + 86_400)
    assert quota.daily(KEY) == day
    clock.at(1.3)  # the first call left the 1.15 s window, not the day
    assert quota.status(KEY)[0].used == 1
    assert quota.daily(KEY).used == 2
    assert quota.status("other-key")[1].used == 0  # keyed per credential triple


def test_daily_snapshot_is_reused_until_stale_or_our_own_call(
    clock: FakeClock, new_quota: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    quota = new_quota(make_settings("5/second;100/day", margin=0), clock)
    reads = []
    real_status = quota._status
    monkeypatch.setattr(quota, "_status", lambda *a: reads.append(a) or real_status(*a))
    assert quota.daily(KEY, max_age=60).used == 0
    assert quota.daily(KEY, max_age=60).used == 0
    assert len(reads) == 1  # the second answer came from the snapshot
    quota.acquire(KEY)
    assert quota.daily(KEY, max_age=60).used == 1  # our own call forces a fresh read
    assert len(reads) == 2
    assert quota.daily(KEY).used == 1  # no max_age: always read
    assert len(reads) == 3


def test_memory_windows_are_shared_per_process_by_credential_key(
    clock: FakeClock, new_quota: Any
) -> None:
    """Amazon counts per credential: another app of this process with the same credential
    sees this one's calls; another credential does not."""
    first = new_quota(make_settings("1/day"), clock)
    second = new_quota(make_settings("1/day"), clock)
    first.acquire(KEY)
    assert refusal(second).details["limit"] == "day"
    second.acquire("another-credential", max_wait=0)
    assert second.daily(KEY).used == 1


def test_the_shared_memory_storage_is_released_with_its_last_user() -> None:
    memory = quota_module._ProcessMemory()
    first, second = memory.acquire(), memory.acquire()
    assert first is second
    assert not memory.release(first)  # one user left: keep it
    assert memory.release(second)  # the last one: the caller closes it
    fresh = memory.acquire()
    assert fresh is not first
    assert not memory.release(first)  # a stale storage never touches the new count
    assert memory.release(fresh)
    fresh.timer.cancel()
    first.timer.cancel()


def test_storage_is_rebuilt_after_a_fork(
    clock: FakeClock, new_quota: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    quota = new_quota(make_settings("1/day"), clock)
    quota.acquire(KEY)
    monkeypatch.setattr(quota_module.os, "getpid", lambda: -1)  # "a forked child"
    assert quota.daily(KEY).used == 0
    quota.acquire(KEY, max_wait=0)


@pytest.mark.parametrize(
    ("limits", "uri", "message"),
    [
        ("lots", "memory://", "AMAZON_RATE_LIMITS"),
        ("0/second", "memory://", "AMAZON_RATE_LIMITS"),
        ("1/second", "memcached://127.0.0.1:11211", "moving window"),
        ("1/second", "nosuch://user:hunter2@host", "unknown storage scheme"),
        ("1/second", "async+memory://", "AMAZON_RATE_LIMIT_STORAGE_URI"),
    ],
)
def test_configuration_errors_name_the_key(limits: str, uri: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        Quota(make_settings(limits, uri=uri)).status(KEY)
    assert "hunter2" not in str(info.value)


# -- threads, real time ----------------------------------------------------------------


def test_waiters_are_served_first_in_first_out(new_quota: Any) -> None:
    quota = new_quota(make_settings("5/second", margin=0, max_wait=10))
    done: list[int] = []
    served_at: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def take(index: int) -> None:
        try:
            quota.acquire(KEY)
        except BaseException as exc:  # reported below
            errors.append(exc)
        with lock:
            done.append(index)
            served_at.append(time.monotonic())

    started = time.monotonic()
    threads = []
    for index in range(10):
        thread = threading.Thread(target=take, args=(index,))
        threads.append(thread)
        thread.start()
        # the next one starts once this one is queued or served: a known arrival order
        while quota.waiting(KEY) + len(done) < index + 1:
            time.sleep(0.001)
    for thread in threads:
        thread.join(timeout=15)
    elapsed = time.monotonic() - started

    assert errors == []
    assert sorted(done) == list(range(10))  # nobody starved
    assert all(abs(done.index(i) - i) <= 1 for i in range(10))  # in arrival order
    assert elapsed <= 12 * 0.2  # 5 at once, 5 a second later; far inside 12 intervals
    # ...and no earlier: the sixth waited for the first slot to leave the 1 s window (a
    # limiter that never waits would serve all ten at once)
    assert served_at[5] - served_at[0] >= 0.9


def test_a_waiter_that_cannot_make_it_is_refused_without_waiting(new_quota: Any) -> None:
    quota = new_quota(make_settings("1/second", margin=0))
    quota.acquire(KEY)
    head_done = threading.Event()
    head = threading.Thread(target=lambda: (quota.acquire(KEY, max_wait=5), head_done.set()))
    head.start()
    while quota.waiting(KEY) < 1:
        time.sleep(0.001)
    time.sleep(0.05)  # the head has published when its slot frees (about 1 s from now)

    started = time.monotonic()
    error = refusal(quota, max_wait=1.5)  # second in line: needs about 2 s
    assert time.monotonic() - started < 0.5
    assert error.details["limit"] == "second"
    assert error.headers["Retry-After"] == "2"
    head.join(timeout=5)
    assert head_done.is_set()


# -- Redis -----------------------------------------------------------------------------


# -- late sends: the next slot waits for a call that left after the margin -------------------


@pytest.mark.parametrize(
    ("limits", "margin", "late", "next_slot", "warnings"),
    [
        # One call per window: the window runs from departure to departure, quietly.
        pytest.param("1/second", 0.15, 0.1, 0.1 + 1.15, 0, id="one-per-window"),
        # Several per window: a call later than the margin holds every next slot, loudly.
        pytest.param("2/second", 0.15, 0.5, 0.5 + 1.15, 1, id="several-late"),
        # A margin of 0 turns the check off: the slot's own window decides.
        pytest.param("1/second", 0, 0.6, 1.0, 0, id="margin-zero"),
    ],
)
def test_the_next_slot_after_a_departure(
    clock: FakeClock,
    new_quota: Any,
    caplog: pytest.LogCaptureFixture,
    limits: str,
    margin: float,
    late: float,
    next_slot: float,
    warnings: int,
) -> None:
    quota = new_quota(make_settings(limits, margin=margin), clock)
    taken = quota.acquire(KEY)
    assert taken == T0
    clock.now += late
    with caplog.at_level(logging.WARNING, logger="arda_amazon_bp.quota"):
        quota.sending(KEY, taken)
    assert len(caplog.records) == warnings
    quota.acquire(KEY)
    assert clock.now - T0 == pytest.approx(next_slot, abs=0.01)


def test_several_calls_per_window_ignore_a_departure_within_the_margin(
    clock: FakeClock, new_quota: Any
) -> None:
    quota = new_quota(make_settings("2/second", margin=0.15), clock)
    first = quota.acquire(KEY)
    quota.acquire(KEY)
    clock.now += 0.14
    quota.sending(KEY, first)
    quota.acquire(KEY)  # the third slot: the window of the first two, nothing more
    assert clock.now - T0 == pytest.approx(1.15, abs=0.01)


def test_a_call_leaving_late_holds_the_next_slot_from_its_departure(
    clock: FakeClock, new_quota: Any, caplog: pytest.LogCaptureFixture
) -> None:
    quota = new_quota(make_settings("1/second", margin=0.15), clock)
    taken = quota.acquire(KEY)
    clock.now += 0.6  # a token fetch, or a descheduled thread, between slot and send
    with caplog.at_level(logging.WARNING, logger="arda_amazon_bp.quota"):
        quota.sending(KEY, taken)
    assert "left 0.600 s after its quota slot" in caplog.text
    error = refusal(quota)
    assert error.details["limit"] == "second"  # reported as the window it protects
    clock.now = T0 + 1.2  # the slot's spacing (1.15 s) is over; the departure's is not
    assert refusal(quota).details["limit"] == "second"
    quota.acquire(KEY)
    assert clock.now - T0 == pytest.approx(0.6 + 1.15, abs=0.01)


def test_late_warnings_are_one_a_minute(
    clock: FakeClock, new_quota: Any, caplog: pytest.LogCaptureFixture
) -> None:
    quota = new_quota(make_settings("1/second", margin=0.15), clock)
    with caplog.at_level(logging.WARNING, logger="arda_amazon_bp.quota"):
        for _ in range(3):
            taken = quota.acquire(KEY)
            clock.now += 0.5
            quota.sending(KEY, taken)
        assert len(caplog.records) == 1
        clock.now += 60
        quota.sending(KEY, quota.acquire(KEY) - 1)
    assert len(caplog.records) == 2


def test_a_penalty_longer_than_a_late_calls_hold_still_decides(
    clock: FakeClock, new_quota: Any
) -> None:
    quota = new_quota(make_settings("1/second", margin=0.15), clock)
    taken = quota.acquire(KEY)
    clock.now += 0.5
    quota.sending(KEY, taken)  # holds the next slot for 1.15 s ...
    quota.penalize(KEY, 30)  # ... and Amazon's 429 for 30 s
    error = refusal(quota)
    assert error.details["limit"] == "penalty"
    assert error.headers["Retry-After"] == "30"


def test_a_limit_that_allows_no_call_is_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as raised:
        Quota(make_settings("0/second"))
    assert str(raised.value) == "AMAZON_RATE_LIMITS: 0 per 1 second allows no call at all"


@pytest.mark.parametrize("uri_fixture", SHARED_REDIS)
def test_a_late_calls_hold_is_shared_through_redis(
    uri_fixture: str, request: pytest.FixtureRequest, new_quota: Any
) -> None:
    uri = request.getfixturevalue(uri_fixture)
    settings = make_settings("1/second;100/day", margin=0.15, uri=uri, max_wait=0)
    first, second = new_quota(settings), new_quota(settings)
    taken = first.acquire(KEY)
    time.sleep(1.2)  # the slot's spacing is over ...
    first.sending(KEY, taken - 0.3)  # ... and its call is leaving only now (late)
    error = refusal(second)
    assert error.details["limit"] == "second"
    assert error.details["retryAfter"] in (1, 2)  # what is left of the 1.15 s hold, rounded up
    time.sleep(1.2)
    second.acquire(KEY)
    assert [w.used for w in second.status(KEY)][-1] == 2


@pytest.mark.parametrize("uri_fixture", SHARED_REDIS)
def test_two_quotas_share_limits_and_penalties_through_redis(
    uri_fixture: str, request: pytest.FixtureRequest, new_quota: Any
) -> None:
    settings = make_settings(
        "1/second;100/day", margin=0.15, uri=request.getfixturevalue(uri_fixture)
    )
    first, second = new_quota(settings), new_quota(settings)
    first.acquire(KEY)
    assert refusal(second).details["limit"] == "second"
    assert [w.used for w in second.status(KEY)] == [1, 1]
    assert second.daily(KEY).remaining == 99

    second.penalize(KEY, 30)
    assert first.penalized_until(KEY) == pytest.approx(time.time() + 30, abs=1)
    error = refusal(first, max_wait=3)
    assert error.details["limit"] == "penalty"
    assert int(error.headers["Retry-After"]) in (29, 30)


def test_fractional_window_on_real_redis(redis_url: str, new_quota: Any) -> None:
    quota = new_quota(make_settings("1/second;100/day", 0.15, redis_url, max_wait=3))
    before = time.time()
    quota.acquire(KEY)
    quota.acquire(KEY)  # waits for the slot 1.15 s later

    client = redis.Redis.from_url(redis_url)
    second_key = f"LIMITS:arda_amazon_bp/{{{KEY}}}/1/1/second"
    day_key = f"LIMITS:arda_amazon_bp/{{{KEY}}}/100/1/day"
    later, first = (float(t) for t in client.lrange(day_key, 0, -1))  # server stamps
    assert [float(t) for t in client.lrange(second_key, 0, -1)] == [later]
    assert 1000 < client.pttl(second_key) <= 1150  # PEXPIRE: limits' EXPIRE refuses 1.15
    assert 86_399_000 < client.pttl(day_key) <= 86_400_000
    client.close()
    assert before - 1 < first < before + 1
    assert later - first > 1.15  # the margin, as Redis itself recorded it

    assert refusal(quota).details["limit"] == "second"
    second, day = quota.status(KEY)
    assert second.used == 1
    assert second.reset_at == pytest.approx(later + 1.15, abs=1e-3)
    assert day.used == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_gets_fresh_connections_and_shares_the_limit(
    redis_url: str, new_quota: Any
) -> None:
    quota = new_quota(make_settings("1/second;100/day", uri=redis_url))
    quota.acquire(KEY)  # the parent's connection is open
    pid = os.fork()
    if pid == 0:  # the child, like a gunicorn worker forked after import
        code = 1
        try:
            if quota._primary is not None:
                code = 3  # still holding the parent's storage and sockets
            else:
                try:
                    quota.acquire(KEY, max_wait=0)
                except AmazonImportError as exc:
                    code = 0 if exc.details["limit"] == "second" else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert quota.status(KEY)[1].used == 1  # the parent's connection still works


def run_workers(uri: str, limits: str, margin: float, seconds: float, key: str) -> list[dict]:
    args = [sys.executable, str(WORKER), uri, limits, str(margin), str(seconds), key]
    workers = [
        subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results = []
        for worker in workers:
            out, _ = worker.communicate(timeout=seconds + 20)
            assert worker.returncode == 0
            results.append(json.loads(out))
        return results
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def most_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    most, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most


@pytest.mark.slow
def test_processes_share_the_limit_through_redis(redis_url: str) -> None:
    key = "multi-process"
    results = run_workers(redis_url, "2/second;100000/day", 0.15, 2.5, key)

    # The daily list holds Redis' own stamp of every slot taken by any process: the same
    # stamp the per-second window got, in the same script.
    client = redis.Redis.from_url(redis_url)
    stamps = sorted(
        float(t) for t in client.lrange(f"LIMITS:arda_amazon_bp/{{{key}}}/100000/1/day", 0, -1)
    )
    client.close()
    returned = [t for result in results for t in result["times"]]
    assert len(stamps) == len(returned) >= 4
    assert all(result["times"] for result in results)  # every process got slots
    # no 1.15 s window (1 s + margin) holds more than 2 slots: the margin holds exactly
    assert all(
        later - earlier > 1.15 - 1e-6 for earlier, later in zip(stamps, stamps[2:], strict=False)
    )
    assert most_in_any_window(stamps, 1.0) <= 2
    # and the moments acquire returned agree (0.15 s of margin absorbs scheduling jitter)
    assert most_in_any_window(returned, 1.0) <= 2


@pytest.mark.slow
def test_processes_with_memory_storage_do_exceed_the_limit() -> None:
    results = run_workers("memory://", "2/second", 0.15, 1.0, "multi-process")
    returned = [t for result in results for t in result["times"]]
    assert most_in_any_window(returned, 1.0) > 2  # each process has its own limiter


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(
        1
        for record in caplog.records
        if record.name == "arda_amazon_bp.quota"
        and record.levelno == logging.WARNING
        and text in record.getMessage()
    )


def wait_until_recovered(quota: Quota) -> None:
    deadline = time.monotonic() + 10
    while quota.degraded:
        assert time.monotonic() < deadline, "the quota never went back to Redis"
        quota.status(KEY)  # any use probes (at most every probe_interval)
        time.sleep(0.05)


def test_redis_outage_falls_back_per_process_and_recovers(
    own_redis: Any, new_quota: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="arda_amazon_bp.quota")
    settings = make_settings("2/second;1000/day", margin=0, uri=own_redis.url, max_wait=1.5)
    quota = new_quota(settings)
    quota.probe_interval = 0.2
    quota.acquire(KEY)
    quota.acquire(KEY)  # both slots of this second, in Redis and in the local copy

    own_redis.stop()
    started = time.monotonic()
    quota.acquire(KEY)  # the local copy still knows the two calls: waits ~1 s, no hang
    quota.acquire(KEY)  # the other slot of that second
    assert time.monotonic() - started <= 1.5 + 0.5
    assert quota.degraded
    outage_calls = 2
    started = time.monotonic()
    error = refusal(quota, max_wait=0.2)  # still limited within the process, and promptly
    assert time.monotonic() - started <= 0.2 + 0.5
    assert error.details["limit"] == "second"
    assert warnings_about(caplog, "unreachable") == 1  # once per outage, not per call
    assert quota.status(KEY)[0].used >= 1  # status keeps answering, from the local copy

    own_redis.start()  # empty: no persistence
    wait_until_recovered(quota)
    assert warnings_about(caplog, "shared again") == 1
    quota.acquire(KEY, max_wait=1.5)
    observer = new_quota(settings)
    assert observer.status(KEY)[0].used >= 1  # shared limiting resumed
    # the calls made during the outage were added to the daily count on recovery
    assert observer.daily(KEY).used == outage_calls + 1

    own_redis.stop()  # a second outage is logged once more
    quota.acquire(KEY, max_wait=1.5)
    assert warnings_about(caplog, "unreachable") == 2


def test_unreachable_redis_from_the_start(new_quota: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="arda_amazon_bp.quota")
    uri = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    quota = new_quota(make_settings("1/second", margin=0, uri=uri, max_wait=0))
    started = time.monotonic()
    quota.acquire(KEY)
    assert refusal(quota).details["limit"] == "second"
    assert time.monotonic() - started < 1.0
    assert quota.degraded
    assert warnings_about(caplog, "unreachable") == 1
    assert "s3cret" not in caplog.text


def test_redis_connections_have_short_timeouts(redis_url: str, new_quota: Any) -> None:
    quota = new_quota(make_settings(uri=redis_url))
    quota.status(KEY)
    storage = quota._stores()[0].storage
    kwargs = storage.storage.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == quota_module.REDIS_SOCKET_TIMEOUT
    assert kwargs["socket_connect_timeout"] == quota_module.REDIS_CONNECT_TIMEOUT
    assert math.isfinite(kwargs["socket_timeout"])


def test_slots_for_retries_lets_the_first_attempt_through_and_charges_each_retry() -> None:
    taken: list[tuple[str, float | None]] = []
    sent: list[tuple[str, float]] = []

    class Recorder:
        def acquire(self, key: str, *, max_wait: float | None = None) -> float:
            taken.append((key, max_wait))
            return 100.0 + len(taken)

        def sending(self, key: str, slot_taken_at: float) -> None:
            sent.append((key, slot_taken_at))

    credentials = Credentials("amzn1.application-oa2-client.x", "s" * 20, "2.1", "ab-20")
    before_call = slots_for_retries(cast(Quota, Recorder()), 42.0, max_wait=2.5)
    before_call(credentials)
    assert taken == []  # the caller took the first attempt's slot itself
    before_call(credentials)
    before_call(credentials)
    assert taken == [(credentials.quota_key, 2.5)] * 2
    # Every attempt reports its departure against its own slot's time.
    assert sent == [(credentials.quota_key, t) for t in (42.0, 101.0, 102.0)]


PRELOADED_APP = """
import os

from flask import Flask, jsonify

from arda_amazon_bp.config import Settings
from arda_amazon_bp.errors import AmazonImportError
from arda_amazon_bp.quota import Quota

quota = Quota(Settings.from_config({"AMAZON_RATE_LIMITS": "1/day"}))
quota.acquire("preloaded")  # the master, importing the app (--preload), takes the slot
MASTER = os.getpid()
app = Flask(__name__)


@app.get("/take")
def take():
    try:
        quota.acquire("preloaded", max_wait=0)
        ok = True
    except AmazonImportError:
        ok = False
    return jsonify(pid=os.getpid(), master=MASTER, ok=ok)
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_memory_quota_starts_afresh_in_each_gunicorn_preload_worker(tmp_path: Path) -> None:
    # Real forks by gunicorn itself: the workers inherit a Quota the master already used.
    # memory:// counts per process, so each worker has its own day's slot, and the
    # master's call, made before the fork, is in none of them.
    import urllib.request

    (tmp_path / "preloaded_app.py").write_text(PRELOADED_APP, encoding="utf-8")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "gunicorn", "--preload", "--workers", "2"]
    command += ["--bind", f"127.0.0.1:{port}", "--chdir", str(tmp_path), "preloaded_app:app"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    answers: dict[int, list[bool]] = {}
    try:
        deadline = time.monotonic() + 30
        while len(answers) < 2 and time.monotonic() < deadline:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/take", timeout=5) as r:
                    body = json.loads(r.read())
            except OSError:  # not listening yet
                time.sleep(0.05)
                continue
            assert body["pid"] != body["master"]
            answers.setdefault(body["pid"], []).append(body["ok"])
            if sum(len(seen) for seen in answers.values()) >= 200:
                break  # one worker took everything; what it answered is checked below
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert answers, "gunicorn never answered"
    for seen in answers.values():  # the first call of each worker passes, then the day is spent
        assert seen[0] is True
        assert not any(seen[1:])


# -- refusals, word for word (mutation testing, docs/testing.md) ------------------------


def test_refusal_messages_name_the_limit_and_the_wait(clock: FakeClock, new_quota: Any) -> None:
    quota = new_quota(make_settings("1/second", margin=0.15), clock)
    quota.acquire(KEY)
    clock.now = T0 + 1.10
    window = refusal(quota)
    assert window.message == (
        "Amazon allows 1 per 1 second for these credentials; the next slot frees in 1 s."
    )
    assert window.details == {
        "source": "local",
        "retryAfter": 1,
        "limit": "second",
        "quota": "1 per 1 second",
    }

    quota.penalize(KEY, 0.5)
    penalty = refusal(quota)
    assert penalty.message == "Amazon throttled these credentials (HTTP 429); retry in 1 s."
    assert penalty.details == {"source": "local", "retryAfter": 1, "limit": "penalty"}


def test_a_penalty_ending_with_the_window_is_what_the_refusal_names(
    clock: FakeClock, new_quota: Any
) -> None:
    quota = new_quota(make_settings("1/second", margin=0), clock)
    quota.acquire(KEY)  # the window frees at T0 + 1
    quota.penalize(KEY, 1)  # and so does the penalty: Amazon's own word comes first
    assert refusal(quota).details["limit"] == "penalty"


def test_the_refusal_names_whichever_frees_last(clock: FakeClock, new_quota: Any) -> None:
    quota = new_quota(make_settings("1/second", margin=0), clock)
    quota.acquire(KEY)  # the window frees at T0 + 1...
    quota.penalize(KEY, 30)  # ...the penalty 29 s later
    error = refusal(quota, max_wait=3)
    assert (error.details["limit"], error.headers["Retry-After"]) == ("penalty", "30")


def test_a_call_goes_through_the_moment_a_penalty_ends(clock: FakeClock, new_quota: Any) -> None:
    quota = new_quota(make_settings("1/second", margin=0), clock)
    quota.penalize(KEY, 2)
    clock.now = T0 + 2
    quota.acquire(KEY, max_wait=0)
    assert quota.status(KEY)[0].used == 1


def test_a_window_of_several_units_keeps_its_length(clock: FakeClock, new_quota: Any) -> None:
    quota = new_quota(make_settings("1 per 2 seconds", margin=0), clock)
    quota.acquire(KEY)
    clock.now = T0 + 1.5  # past one second, inside two
    error = refusal(quota)
    assert (error.details["quota"], error.headers["Retry-After"]) == ("1 per 2 second", "1")
    clock.now = T0 + 2
    quota.acquire(KEY, max_wait=0)
