"""The limits engine on both backends (memory, and a real Redis under a prefix of the
test's own), with a clock the tests move instead of sleeping."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis import Redis

from streamkeep.config import LimitsConfig, LimitSpec
from streamkeep.http.limits import (
    BUSY_RETRY_AFTER,
    Limiter,
    LimitExceeded,
    Subject,
    period_bounds,
    subjects_for,
)
from tests.conftest import TEST_REDIS_URL, require_service

# The last hour of a day and of a month: the next hour starts a new day and month.
START = datetime(2025, 1, 31, 23, 0, tzinfo=UTC).timestamp()
PREFIX = "sk-keep-AbCd1234"


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def user(name: str = "alice", **limits: int | str | None) -> Subject:
    return Subject("user", f"u-{name}", name, LimitSpec.model_validate(limits))


def key(**limits: int | str | None) -> Subject:
    return Subject("key", "k-1", PREFIX, LimitSpec.model_validate(limits))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A prefix of this test's own; its keys are deleted at the end."""
    url = urlsplit(TEST_REDIS_URL)
    require_service("Redis", url.hostname or "127.0.0.1", url.port or 6379)
    prefix = f"sktest:{uuid.uuid4().hex[:12]}:"
    yield prefix
    with Redis.from_url(TEST_REDIS_URL) as client:
        stale = list(client.scan_iter(f"{prefix}*"))
        if stale:
            client.delete(*stale)


@contextlib.asynccontextmanager
async def redis_workers(prefix: str, clock: Clock) -> AsyncIterator[Callable[[], Limiter]]:
    """Makes limiters on Redis, each with its own connection pool (as workers have)."""
    clients: list[aioredis.Redis] = []

    def make() -> Limiter:
        clients.append(aioredis.from_url(TEST_REDIS_URL))
        return Limiter.with_redis(clients[-1], prefix, clock=clock)

    try:
        yield make
    finally:
        for client in clients:
            await client.aclose()


@pytest_asyncio.fixture
async def workers(redis_prefix: str, clock: Clock) -> AsyncIterator[Callable[[], Limiter]]:
    async with redis_workers(redis_prefix, clock) as make:
        yield make


@pytest_asyncio.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def limiter(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[Limiter]:
    if request.param == "memory":
        yield Limiter.in_memory(clock=clock)
        return
    async with redis_workers(request.getfixturevalue("redis_prefix"), clock) as make:
        yield make()


async def refused(call: object) -> LimitExceeded:
    with pytest.raises(LimitExceeded) as caught:
        await call  # type: ignore[misc]
    return caught.value


# Requests per minute


async def test_a_request_over_the_limit_is_refused_naming_the_limit_and_the_subject(
    limiter: Limiter, clock: Clock
) -> None:
    alice = user(requests_per_minute=3)
    for _ in range(3):
        await limiter.admit_request([alice])
        clock.advance(10)
    exc = await refused(limiter.admit_request([alice]))
    assert exc.kind == "rate_limited"
    assert exc.limit == "requests_per_minute"
    assert exc.retry_after == 30  # the first request, at 0 s, leaves the window at 60 s
    assert exc.headers == {"Retry-After": "30"}
    assert exc.subject == alice
    assert exc.message == (
        "over the limit of 3 requests per minute for user alice; try again in 30 s"
    )
    assert str(exc) == exc.message


async def test_the_window_slides_one_request_at_a_time(limiter: Limiter, clock: Clock) -> None:
    alice = user(requests_per_minute=2)
    await limiter.admit_request([alice])  # at 0 s
    clock.advance(20)
    await limiter.admit_request([alice])  # at 20 s
    clock.advance(39.999)
    assert (await refused(limiter.admit_request([alice]))).retry_after == 1  # never 0
    clock.advance(0.001)  # 60 s: the first request has left the window
    await limiter.admit_request([alice])
    # The one at 20 s still counts (a fixed window would have forgotten it at 60 s).
    assert (await refused(limiter.admit_request([alice]))).retry_after == 20
    clock.advance(9.6)
    assert (await refused(limiter.admit_request([alice]))).retry_after == 11  # 10.4 s, up
    clock.advance(10.4)
    await limiter.admit_request([alice])


async def test_one_request_per_minute_says_request(limiter: Limiter) -> None:
    alice = user(requests_per_minute=1)
    await limiter.admit_request([alice])
    exc = await refused(limiter.admit_request([alice]))
    assert "the limit of 1 request per minute for user alice; try again in 60 s" in exc.message


@pytest.mark.parametrize("key_first", [False, True])
async def test_a_refused_request_spends_nobodys_quota(limiter: Limiter, key_first: bool) -> None:
    alice, api_key = user(requests_per_minute=5), key(requests_per_minute=1)
    subjects = [api_key, alice] if key_first else [alice, api_key]
    await limiter.admit_request(subjects)
    for _ in range(3):
        exc = await refused(limiter.admit_request(subjects))
        assert exc.subject == api_key
        assert "for API key sk-keep-AbCd1234" in exc.message
    for _ in range(4):  # alice spent 1 of 5 above: the refused three cost her nothing
        await limiter.admit_request([alice])
    assert (await refused(limiter.admit_request([alice]))).subject == alice


async def test_the_first_subject_over_its_limit_is_named(limiter: Limiter) -> None:
    alice, api_key = user(requests_per_minute=1), key(requests_per_minute=1)
    await limiter.admit_request([alice, api_key])
    assert (await refused(limiter.admit_request([alice, api_key]))).subject == alice
    assert (await refused(limiter.admit_request([api_key, alice]))).subject == api_key


async def test_users_are_counted_apart(limiter: Limiter) -> None:
    await limiter.admit_request([user("alice", requests_per_minute=1)])
    await limiter.admit_request([user("bob", requests_per_minute=1)])
    await refused(limiter.admit_request([user("alice", requests_per_minute=1)]))


# Concurrent generations


async def test_concurrent_generations_are_counted_and_given_back(
    limiter: Limiter, clock: Clock
) -> None:
    alice = user(concurrent_generations=2)
    await limiter.start_generation([alice], "g1")
    await limiter.start_generation([alice], "g2")
    await limiter.start_generation([alice], "g1")  # the same generation: no second slot
    exc = await refused(limiter.start_generation([alice], "g3"))
    assert exc.limit == "concurrent_generations"
    assert exc.retry_after == BUSY_RETRY_AFTER
    assert exc.message == (
        f"over the limit of 2 concurrent generations for user alice; "
        f"try again in {BUSY_RETRY_AFTER} s"
    )
    await limiter.end_generation([alice], "g1")
    await limiter.end_generation([alice], "g1")  # twice: harmless, frees nothing more
    await limiter.end_generation([alice], "never-started")
    await limiter.start_generation([alice], "g3")
    await refused(limiter.start_generation([alice], "g4"))


async def test_a_refused_generation_takes_no_slot(limiter: Limiter) -> None:
    alice, api_key = user(concurrent_generations=3), key(concurrent_generations=1)
    await limiter.start_generation([alice, api_key], "g1")
    exc = await refused(limiter.start_generation([alice, api_key], "g2"))
    assert exc.subject == api_key
    await limiter.start_generation([alice], "g3")
    await limiter.start_generation([alice], "g4")  # 3 of 3: g2 took none
    await refused(limiter.start_generation([alice], "g5"))


async def test_a_lease_not_refreshed_stops_counting(limiter: Limiter, clock: Clock) -> None:
    alice = user(concurrent_generations=1)
    await limiter.start_generation([alice], "g1")  # then nobody refreshes it
    clock.advance(59.999)
    await refused(limiter.start_generation([alice], "g2"))
    clock.advance(0.001)  # the lease (60 s) is over
    await limiter.start_generation([alice], "g2")
    # g1's worker is back: refreshing what it holds does not revive g1's lease (g2
    # holds the slot).
    await limiter.refresh_held()
    await refused(limiter.start_generation([alice], "g1"))


async def test_a_refreshed_lease_keeps_counting(limiter: Limiter, clock: Clock) -> None:
    alice = user(concurrent_generations=1)
    await limiter.start_generation([alice], "g1")
    for _ in range(5):
        clock.advance(50)
        await limiter.refresh_held()
    clock.advance(50)
    await refused(limiter.start_generation([alice], "g2"))
    await limiter.end_generation([alice], "g1")
    await limiter.refresh_held()  # forgets the ended generation: revives nothing
    await limiter.start_generation([alice], "g2")


# Token budgets


async def test_a_spent_budget_refuses_until_the_next_period(limiter: Limiter, clock: Clock) -> None:
    alice = user(tokens_per_period=1000)  # per day
    await limiter.check_budget([alice])
    await limiter.spend([alice], 600)
    clock.advance(600)
    await limiter.check_budget([alice])
    await limiter.spend([alice], 400)
    exc = await refused(limiter.check_budget([alice]))
    assert exc.limit == "tokens_per_period"
    assert exc.retry_after == 3000  # START is 23:00 UTC; now 23:10
    assert exc.message == (
        "over the limit of 1000 tokens per day for user alice; try again in 3000 s"
    )
    clock.advance(2999.5)
    assert (await refused(limiter.check_budget([alice]))).retry_after == 1
    clock.advance(0.5)  # midnight UTC
    await limiter.check_budget([alice])
    await limiter.spend([alice], 999)
    await limiter.check_budget([alice])


@pytest.mark.parametrize(
    ("period", "retry_after"), [("hour", 3600), ("day", 3600), ("month", 3600)]
)
async def test_periods_start_at_utc_boundaries(
    limiter: Limiter, clock: Clock, period: str, retry_after: int
) -> None:
    alice = user(tokens_per_period=10, period=period)
    await limiter.spend([alice], 10)
    assert (await refused(limiter.check_budget([alice]))).retry_after == retry_after
    assert f"10 tokens per {period}" in (await refused(limiter.check_budget([alice]))).message
    clock.advance(3599)
    await refused(limiter.check_budget([alice]))
    clock.advance(1)  # 2025-02-01 00:00 UTC: a new hour, day and month
    await limiter.check_budget([alice])


async def test_a_month_is_counted_across_its_days(limiter: Limiter, clock: Clock) -> None:
    clock.now = datetime(2025, 2, 1, tzinfo=UTC).timestamp()
    alice = user(tokens_per_period=100, period="month")
    await limiter.spend([alice], 60)
    clock.advance(15 * 86400)
    await limiter.spend([alice], 40)
    exc = await refused(limiter.check_budget([alice]))
    assert exc.retry_after == 13 * 86400  # to March 1st
    assert exc.message.endswith("100 tokens per month for user alice; try again in 1123200 s")


async def test_budgets_are_per_subject(limiter: Limiter) -> None:
    alice, api_key = user(tokens_per_period=100), key(tokens_per_period=50)
    await limiter.spend([alice, api_key], 50)
    assert (await refused(limiter.check_budget([alice, api_key]))).subject == api_key
    await limiter.check_budget([alice])
    await limiter.check_budget([user("bob", tokens_per_period=100)])


def test_period_bounds() -> None:
    def at(*args: int) -> float:
        return datetime(*args, tzinfo=UTC).timestamp()

    assert period_bounds("hour", at(2025, 1, 31, 23, 59, 59)) == ("2025-01-31T23", at(2025, 2, 1))
    assert period_bounds("day", at(2024, 2, 28, 12)) == ("2024-02-28", at(2024, 2, 29))
    assert period_bounds("month", at(2024, 12, 31, 23)) == ("2024-12", at(2025, 1, 1))
    assert period_bounds("month", at(2025, 1, 1)) == ("2025-01", at(2025, 2, 1))


# Overrides and unlimited subjects


def test_overrides_replace_only_the_limits_they_name() -> None:
    limits = LimitsConfig.model_validate(
        {
            "user": {"requests_per_minute": 60, "tokens_per_period": 1000},
            "key": {"concurrent_generations": 1},
            "users": {"bob": {"requests_per_minute": 600}, "carol": {"tokens_per_period": 0}},
            "keys": {PREFIX: {"concurrent_generations": 4, "period": "hour"}},
        }
    )
    (alice,) = subjects_for(limits, user_id="u1", user_name="alice")
    assert alice == Subject("user", "u1", "alice", limits.user)
    bob, bobs_key = subjects_for(
        limits, user_id="u2", user_name="bob", key_id="k2", key_prefix=PREFIX
    )
    assert bob.spec == LimitSpec(requests_per_minute=600, tokens_per_period=1000)
    assert (bobs_key.kind, bobs_key.id, bobs_key.label) == ("key", "k2", PREFIX)
    assert bobs_key.spec == LimitSpec(concurrent_generations=4, period="hour")
    (carol,) = subjects_for(limits, user_id="u3", user_name="carol")
    assert carol.spec == LimitSpec(requests_per_minute=60)  # 0: unlimited
    _, other_key = subjects_for(
        limits, user_id="u3", user_name="carol", key_id="k3", key_prefix="sk-keep-Zz999999"
    )
    assert other_key.spec == limits.key


async def test_overrides_apply_when_counting(limiter: Limiter) -> None:
    limits = LimitsConfig.model_validate(
        {
            "user": {"requests_per_minute": 1},
            "key": {"requests_per_minute": 1},
            "users": {"bob": {"requests_per_minute": 3}},
            "keys": {PREFIX: {"requests_per_minute": 0}},
        }
    )
    alice = subjects_for(limits, user_id="u1", user_name="alice")
    bob = subjects_for(limits, user_id="u2", user_name="bob", key_id="k2", key_prefix=PREFIX)
    await limiter.admit_request(alice)
    await refused(limiter.admit_request(alice))
    for _ in range(3):  # bob's own 3; his key's 0 is unlimited
        await limiter.admit_request(bob)
    assert (await refused(limiter.admit_request(bob))).subject.label == "bob"
    dave = subjects_for(
        limits, user_id="u4", user_name="dave", key_id="k4", key_prefix="sk-keep-Other000"
    )
    await limiter.admit_request(dave)
    assert (await refused(limiter.admit_request(dave))).message.startswith(
        "over the limit of 1 request per minute for user dave"
    )


async def test_unlimited_never_refuses(limiter: Limiter) -> None:
    subjects = subjects_for(
        LimitsConfig(), user_id="u1", user_name="alice", key_id="k1", key_prefix=PREFIX
    )
    for i in range(200):
        await limiter.admit_request(subjects)
        await limiter.start_generation(subjects, f"g{i}")
    await limiter.spend(subjects, 10**12)
    await limiter.check_budget(subjects)
    await limiter.refresh_held()
    await limiter.end_generation(subjects, "g1")


# Redis: shared between workers, nothing left behind


@pytest.mark.redis
async def test_a_crashed_workers_generations_stop_counting_after_their_lease(
    workers: Callable[[], Limiter], clock: Clock
) -> None:
    alice = user(concurrent_generations=2)
    crashed, alive = workers(), workers()
    await crashed.start_generation([alice], "g1")
    await alive.start_generation([alice], "g2")
    clock.advance(30)
    await alive.refresh_held()  # g2's worker lives on; g1's is gone
    await refused(alive.start_generation([alice], "g3"))
    clock.advance(30)  # g1's lease is over; g2's, refreshed, runs to 90 s
    await alive.start_generation([alice], "g3")
    await refused(alive.start_generation([alice], "g4"))


@pytest.mark.redis
async def test_workers_share_their_counts(workers: Callable[[], Limiter]) -> None:
    one, two = workers(), workers()
    alice = user(requests_per_minute=2, concurrent_generations=1, tokens_per_period=100)
    await one.admit_request([alice])
    await two.admit_request([alice])
    await refused(one.admit_request([alice]))
    await one.start_generation([alice], "g1")
    await refused(two.start_generation([alice], "g2"))
    await two.end_generation([alice], "g1")  # whoever ends it
    await two.start_generation([alice], "g2")
    await one.spend([alice], 60)
    await two.spend([alice], 40)
    await refused(one.check_budget([alice]))


@pytest.mark.redis
async def test_every_redis_key_is_under_the_prefix_and_expires(
    workers: Callable[[], Limiter], redis_prefix: str
) -> None:
    limiter = workers()
    alice = user(requests_per_minute=5, concurrent_generations=5, tokens_per_period=100)
    await limiter.admit_request([alice, key(requests_per_minute=5)])
    await limiter.start_generation([alice], "g1")
    await limiter.refresh_held()
    await limiter.spend([alice], 10)
    await limiter.admit_request([user("bob")])  # unlimited: writes nothing
    client = aioredis.from_url(TEST_REDIS_URL)
    try:
        names = sorted([k.decode() async for k in client.scan_iter(f"{redis_prefix}*")])
        assert names == [
            f"{redis_prefix}limits:gen:user:u-alice",
            f"{redis_prefix}limits:rpm:key:k-1",
            f"{redis_prefix}limits:rpm:user:u-alice",
            f"{redis_prefix}limits:tokens:user:u-alice:2025-01-31",
        ]
        ttls = [await client.pttl(name) for name in names]
        assert all(0 < ttl <= 60_000 for ttl in ttls[:3]), ttls
        # The day's counter: to midnight (1 h) and the margin (1 h).
        assert 7_000_000 < ttls[3] <= 7_200_000, ttls
    finally:
        await client.aclose()


async def test_memory_forgets_idle_subjects(clock: Clock) -> None:
    limiter = Limiter.in_memory(clock=clock)
    alice = user(requests_per_minute=5, concurrent_generations=5, tokens_per_period=100)
    await limiter.admit_request([alice])
    await limiter.start_generation([alice], "g1")
    await limiter.spend([alice], 10)
    clock.advance(3 * 86400)
    await limiter.admit_request([user("bob", requests_per_minute=1)])  # sweeps
    memory = limiter._backend
    assert {k for d in vars(memory).values() if isinstance(d, dict) for k in d} == {
        "rpm:user:u-bob"
    }
