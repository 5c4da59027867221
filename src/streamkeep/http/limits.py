"""Rate and budget limits per user and per API key (`Settings.limits`).

Three limits, each checked for every subject a request acts as (its user, and its API
key when it came with one); None means unlimited, and an unlimited subject costs no
work at all (no Redis call):

    requests_per_minute      a sliding log: the times of the requests admitted in the
                             last 60 s. Exact (no burst of twice the limit across a
                             window edge, as fixed windows allow) and at most `limit`
                             entries per subject, since refused requests are not logged.
                             Retry-After: until the oldest entry that matters leaves.
    concurrent_generations   the generations a subject holds, each under a lease (60 s
                             by default) that its worker refreshes (`refresh_held`): a
                             crashed worker's generations stop counting when their leases run out.
    tokens_per_period        input + output tokens spent in the current UTC hour, day or
                             month. Checked before a generation, spent after it: the
                             generation that crosses the limit finishes, the next is
                             refused until the next period.

A refused request spends nothing: every subject is checked first, then all are counted,
in one step (one Lua script in Redis; no await in between in memory). Two backends, one
behaviour: in memory for one process, Redis for several workers. Keys in Redis are
`{prefix}limits:...`, each with an expiry, so an idle subject leaves nothing behind.

Times come from one injectable wall clock: windows and leases compare times written by
several workers, and periods start at UTC boundaries (workers' clocks are assumed to be
NTP-synchronised; a skew of a few ms shifts a window by as much).

Errors of Redis propagate (the error table answers them 503): whether a caller lets a
request through without its limits while Redis is down is its own choice.
"""

from __future__ import annotations

import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

import redis.asyncio as aioredis

from streamkeep.config import LimitsConfig, LimitSpec

WINDOW = 60.0  # of requests_per_minute, in seconds
DEFAULT_LEASE = 60.0  # of a generation's slot; refresh well within it
# A refused generation gets no real estimate (nobody knows when the others end): this
# is a polite interval to poll at.
BUSY_RETRY_AFTER = 5
# A period's token counter outlives the period by this much, for workers whose clocks
# are a little behind.
PERIOD_MARGIN = 3600.0

Clock = Callable[[], float]
Period = Literal["hour", "day", "month"]


@dataclass(frozen=True, slots=True)
class Subject:
    """Whom a request counts against: a user or an API key, with its limits."""

    kind: Literal["user", "key"]
    id: str  # the user's or the key's id: what is counted under
    label: str  # its name or prefix: what messages say
    spec: LimitSpec

    def __str__(self) -> str:
        return f"user {self.label}" if self.kind == "user" else f"API key {self.label}"


def subjects_for(
    limits: LimitsConfig,
    *,
    user_id: str,
    user_name: str,
    key_id: str | None = None,
    key_prefix: str | None = None,
) -> tuple[Subject, ...]:
    """The user, and the API key if the request came with one, each with the defaults
    of its kind replaced by the limits its override names (a limit an override leaves
    out keeps its default)."""
    found = [Subject("user", user_id, user_name, _spec(limits.user, limits.users.get(user_name)))]
    if key_id is not None:
        override = limits.keys.get(key_prefix) if key_prefix is not None else None
        found.append(Subject("key", key_id, key_prefix or key_id, _spec(limits.key, override)))
    return tuple(found)


def _spec(default: LimitSpec, override: LimitSpec | None) -> LimitSpec:
    if override is None:
        return default
    return default.model_copy(update={f: getattr(override, f) for f in override.model_fields_set})


class LimitExceeded(Exception):
    """A subject is over one of its limits: HTTP 429 with `headers` (Retry-After)."""

    kind = "rate_limited"

    def __init__(self, message: str, *, limit: str, retry_after: int, subject: Subject) -> None:
        super().__init__(message)
        self.message = message
        self.limit = limit  # the setting's name: "requests_per_minute", ...
        self.retry_after = retry_after  # whole seconds, at least 1
        self.subject = subject

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


def _exceeded(subject: Subject, limit: str, allowed: str, wait: float) -> LimitExceeded:
    seconds = max(1, math.ceil(wait))
    return LimitExceeded(
        f"over the limit of {allowed} for {subject}; try again in {seconds} s",
        limit=limit,
        retry_after=seconds,
        subject=subject,
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def period_bounds(period: Period, now: float) -> tuple[str, float]:
    """The name of the UTC period `now` falls in (its counter's key) and when it ends."""
    t = datetime.fromtimestamp(now, UTC)
    if period == "hour":
        start = t.replace(minute=0, second=0, microsecond=0)
        return start.strftime("%Y-%m-%dT%H"), (start + timedelta(hours=1)).timestamp()
    if period == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.strftime("%Y-%m-%d"), (start + timedelta(days=1)).timestamp()
    start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=t.year + 1, month=1)
        if t.month == 12
        else start.replace(month=t.month + 1)
    )
    return start.strftime("%Y-%m"), end.timestamp()


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class _Backend(Protocol):
    """Where counts live. Times are integer milliseconds of the limiter's clock; keys
    are relative (the Redis backend prefixes them)."""

    async def admit(
        self, keys: Sequence[str], limits: Sequence[int], now: int, window: int
    ) -> tuple[int, int] | None:
        """Log one request under every key, unless one is full: then log nothing and
        return (its index, ms until it has room)."""

    async def start(
        self, keys: Sequence[str], limits: Sequence[int], generation_id: str, now: int, lease: int
    ) -> int | None:
        """Hold a lease on a slot under every key (once per id), unless one is full:
        then hold nothing and return its index."""

    async def refresh(self, held: Mapping[str, Collection[str]], now: int, lease: int) -> None:
        """Extend the leases still held (never revive an expired one)."""

    async def end(self, keys: Sequence[str], generation_id: str) -> None: ...

    async def spent(self, keys: Sequence[str], now: int) -> list[int]: ...

    async def spend(self, keys: Sequence[str], tokens: int, ttls: Sequence[int], now: int) -> None:
        """Add `tokens` under every key; each expires `ttls[i]` ms from now."""


class Limiter:
    """Admits requests and generations against their subjects' limits; see the module
    docstring. Build with `in_memory` (one process) or `with_redis` (several)."""

    def __init__(
        self, backend: _Backend, *, clock: Clock = time.time, lease: float = DEFAULT_LEASE
    ) -> None:
        self._backend = backend
        self._clock = clock
        self.lease = lease  # seconds; `refresh_held` should run every lease / 3 or so
        # The generations this limiter holds slots for, with their limited subjects.
        self._held: dict[str, tuple[Subject, ...]] = {}

    @classmethod
    def in_memory(cls, *, clock: Clock = time.time, lease: float = DEFAULT_LEASE) -> Limiter:
        return cls(_Memory(), clock=clock, lease=lease)

    @classmethod
    def with_redis(
        cls,
        redis: aioredis.Redis,
        prefix: str,
        *,
        clock: Clock = time.time,
        lease: float = DEFAULT_LEASE,
    ) -> Limiter:
        """Counters shared by every limiter on the same Redis and `prefix` (the
        settings' `redis_prefix`)."""
        return cls(_Redis(redis, f"{prefix}limits:"), clock=clock, lease=lease)

    async def admit_request(self, subjects: Sequence[Subject]) -> None:
        """Count one request against every subject's requests_per_minute; raise
        LimitExceeded for the first subject with no room (and count nothing)."""
        limited = [(s, s.spec.requests_per_minute) for s in subjects if s.spec.requests_per_minute]
        if not limited:
            return
        refused = await self._backend.admit(
            [_requests_key(s) for s, _ in limited],
            [n for _, n in limited],
            _ms(self._clock()),
            _ms(WINDOW),
        )
        if refused is not None:
            subject, n = limited[refused[0]]
            allowed = f"{_plural(n, 'request')} per minute"
            raise _exceeded(subject, "requests_per_minute", allowed, refused[1] / 1000)

    async def start_generation(self, subjects: Sequence[Subject], generation_id: str) -> None:
        """Take a slot of every subject's concurrent_generations for `generation_id`
        (again for the same id is no second slot); raise LimitExceeded for the first
        subject with none free (and take none). Hold it with `refresh_held`; give it
        back with `end_generation`."""
        limited = [s for s in subjects if s.spec.concurrent_generations]
        if not limited:
            return
        limits = [s.spec.concurrent_generations or 0 for s in limited]
        refused = await self._backend.start(
            [_slots_key(s) for s in limited],
            limits,
            generation_id,
            _ms(self._clock()),
            _ms(self.lease),
        )
        if refused is not None:
            allowed = _plural(limits[refused], "concurrent generation")
            raise _exceeded(limited[refused], "concurrent_generations", allowed, BUSY_RETRY_AFTER)
        self._held[generation_id] = tuple(limited)

    async def end_generation(self, subjects: Sequence[Subject], generation_id: str) -> None:
        """Give the slots back; ending a generation twice, or one never started, is
        harmless."""
        self._held.pop(generation_id, None)
        keys = [_slots_key(s) for s in subjects if s.spec.concurrent_generations]
        if keys:
            await self._backend.end(keys, generation_id)

    async def refresh_held(self) -> None:
        """Extend the leases of every generation this limiter started and has not
        ended: what a worker runs every `lease / 3` or so, in one round trip."""
        held: dict[str, list[str]] = {}
        for generation_id, subjects in self._held.items():
            for s in subjects:
                held.setdefault(_slots_key(s), []).append(generation_id)
        if held:
            await self._backend.refresh(held, _ms(self._clock()), _ms(self.lease))

    async def check_budget(self, subjects: Sequence[Subject]) -> None:
        """Raise LimitExceeded for the first subject that has already spent its
        tokens_per_period in the current period (Retry-After: until the next one)."""
        now = self._clock()
        limited = [(s, s.spec.tokens_per_period) for s in subjects if s.spec.tokens_per_period]
        if not limited:
            return
        bounds = [period_bounds(s.spec.period, now) for s, _ in limited]
        keys = [_tokens_key(s, name) for (s, _), (name, _) in zip(limited, bounds, strict=True)]
        spent = await self._backend.spent(keys, _ms(now))
        for (s, n), (_, end), used in zip(limited, bounds, spent, strict=True):
            if used >= n:
                allowed = f"{_plural(n, 'token')} per {s.spec.period}"
                raise _exceeded(s, "tokens_per_period", allowed, end - now)

    async def spend(self, subjects: Sequence[Subject], tokens: int) -> None:
        """Add `tokens` (input + output) to every subject's count of this period."""
        limited = [s for s in subjects if s.spec.tokens_per_period]
        if tokens <= 0 or not limited:
            return
        now = self._clock()
        bounds = [period_bounds(s.spec.period, now) for s in limited]
        await self._backend.spend(
            [_tokens_key(s, name) for s, (name, _) in zip(limited, bounds, strict=True)],
            tokens,
            [_ms(end - now + PERIOD_MARGIN) for _, end in bounds],
            _ms(now),
        )


def _requests_key(s: Subject) -> str:
    return f"rpm:{s.kind}:{s.id}"


def _slots_key(s: Subject) -> str:
    return f"gen:{s.kind}:{s.id}"


def _tokens_key(s: Subject, period_name: str) -> str:
    return f"tokens:{s.kind}:{s.id}:{period_name}"


# Every key lives until its expiry (ms) as in Redis; a sweep at most this often drops
# the expired, so subjects gone idle leave nothing behind.
_SWEEP_EVERY = 60_000


class _Memory:
    """The counts of one process, in dicts. No method awaits: each runs whole, so
    the check and the count of one call see no other call in between."""

    def __init__(self) -> None:
        self._logs: dict[str, deque[int]] = {}  # request times, oldest first
        self._leases: dict[str, dict[str, int]] = {}  # generation id -> lease deadline
        self._tokens: dict[str, int] = {}
        self._expires: dict[str, int] = {}
        self._next_sweep = 0

    def _sweep(self, now: int) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_EVERY
        for key, at in list(self._expires.items()):
            if at <= now:
                del self._expires[key]
                self._logs.pop(key, None)
                self._leases.pop(key, None)
                self._tokens.pop(key, None)

    async def admit(
        self, keys: Sequence[str], limits: Sequence[int], now: int, window: int
    ) -> tuple[int, int] | None:
        self._sweep(now)
        for i, (key, limit) in enumerate(zip(keys, limits, strict=True)):
            log = self._logs.get(key)
            if log is None:
                continue
            while log and log[0] <= now - window:
                log.popleft()
            if len(log) >= limit:
                return i, log[len(log) - limit] + window - now
        for key in keys:
            self._logs.setdefault(key, deque()).append(now)
            self._expires[key] = now + window
        return None

    async def start(
        self, keys: Sequence[str], limits: Sequence[int], generation_id: str, now: int, lease: int
    ) -> int | None:
        self._sweep(now)
        for i, (key, limit) in enumerate(zip(keys, limits, strict=True)):
            leases = self._leases.get(key, {})
            for expired in [g for g, deadline in leases.items() if deadline <= now]:
                del leases[expired]
            if generation_id not in leases and len(leases) >= limit:
                return i
        for key in keys:
            self._leases.setdefault(key, {})[generation_id] = now + lease
            self._expires[key] = now + lease
        return None

    async def refresh(self, held: Mapping[str, Collection[str]], now: int, lease: int) -> None:
        for key, ids in held.items():
            leases = self._leases.get(key, {})
            for generation_id in ids:
                if leases.get(generation_id, now) > now:
                    leases[generation_id] = now + lease
                    self._expires[key] = now + lease

    async def end(self, keys: Sequence[str], generation_id: str) -> None:
        for key in keys:
            self._leases.get(key, {}).pop(generation_id, None)

    async def spent(self, keys: Sequence[str], now: int) -> list[int]:
        return [self._tokens.get(key, 0) for key in keys]

    async def spend(self, keys: Sequence[str], tokens: int, ttls: Sequence[int], now: int) -> None:
        self._sweep(now)
        for key, ttl in zip(keys, ttls, strict=True):
            self._tokens[key] = self._tokens.get(key, 0) + tokens
            self._expires[key] = now + ttl


# KEYS: one sliding log (sorted set: request -> time) per subject.
# ARGV: now, window (ms), this request's member, then each key's limit.
# Returns {0, 0} once logged everywhere; {i, ms until KEYS[i] has room} if it is full.
_ADMIT = """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local limit = tonumber(ARGV[3 + i])
  local n = redis.call('ZCARD', key)
  if n >= limit then
    local oldest = redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')
    return {i, tonumber(oldest[2]) + window - now}
  end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[3])
  redis.call('PEXPIRE', key, window)
end
return {0, 0}
"""

# KEYS: one set of leases (sorted set: generation id -> deadline) per subject.
# ARGV: now, lease (ms), the generation id, then each key's limit.
# Returns 0 once held everywhere; i if KEYS[i] is full.
_START = """
local now, lease, id = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if not redis.call('ZSCORE', key, id) and redis.call('ZCARD', key) >= tonumber(ARGV[3 + i]) then
    return i
  end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + lease, id)
  redis.call('PEXPIRE', key, lease)
end
return 0
"""


class _Redis:
    """Counts shared by every worker on one Redis; one atomic step per call. A key's
    expiry is reset at each write to as long as its newest entry lasts."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._admit = redis.register_script(_ADMIT)
        self._start = redis.register_script(_START)

    def _keys(self, keys: Sequence[str]) -> list[str]:
        return [self._prefix + key for key in keys]

    async def admit(
        self, keys: Sequence[str], limits: Sequence[int], now: int, window: int
    ) -> tuple[int, int] | None:
        member = f"{now}:{secrets.token_hex(6)}"  # unique: two requests in one ms both count
        index, wait = await self._admit(keys=self._keys(keys), args=[now, window, member, *limits])
        return None if index == 0 else (int(index) - 1, int(wait))

    async def start(
        self, keys: Sequence[str], limits: Sequence[int], generation_id: str, now: int, lease: int
    ) -> int | None:
        index = await self._start(keys=self._keys(keys), args=[now, lease, generation_id, *limits])
        return None if index == 0 else int(index) - 1

    async def refresh(self, held: Mapping[str, Collection[str]], now: int, lease: int) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            for key, ids in held.items():
                full = self._prefix + key
                # Expired leases go first, so XX (only members still there) revives none.
                pipe.zremrangebyscore(full, "-inf", now)
                pipe.zadd(full, dict.fromkeys(ids, now + lease), xx=True)
                pipe.pexpire(full, lease)
            await pipe.execute()

    async def end(self, keys: Sequence[str], generation_id: str) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in self._keys(keys):
                pipe.zrem(key, generation_id)
            await pipe.execute()

    async def spent(self, keys: Sequence[str], now: int) -> list[int]:
        values = await self._redis.mget(self._keys(keys))
        return [int(v) if v is not None else 0 for v in values]

    async def spend(self, keys: Sequence[str], tokens: int, ttls: Sequence[int], now: int) -> None:
        # One transaction: a counter never stays behind without its expiry.
        async with self._redis.pipeline(transaction=True) as pipe:
            for key, ttl in zip(self._keys(keys), ttls, strict=True):
                pipe.incrby(key, tokens)
                pipe.pexpire(key, ttl)
            await pipe.execute()
