"""Retry rate limiters for the work queue (client-go ``util/workqueue`` semantics).

A limiter answers "how long should this key wait before its next attempt?". The per-key
exponential limiter backs off a key that keeps failing; the token bucket caps the overall retry
rate so a mass failure (API server down, every object erroring) cannot become a retry storm.
The controller default takes the larger of the two.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

K = TypeVar("K", bound=Hashable)
K_contra = TypeVar("K_contra", bound=Hashable, contravariant=True)

Clock = Callable[[], float]
"""Returns monotonic seconds; injectable so tests can drive time by hand."""


class RateLimiter(Protocol[K_contra]):
    """Decides retry delays per key."""

    def when(self, key: K_contra) -> float:
        """Record a failure of ``key`` and return the seconds to wait before retrying it."""
        ...

    def forget(self, key: K_contra) -> None:
        """Stop tracking ``key`` (it succeeded), so its next failure starts from scratch."""
        ...

    def retries(self, key: K_contra) -> int:
        """How many failures of ``key`` are being tracked."""
        ...


class ItemExponentialFailureRateLimiter:
    """Per-key backoff: ``base * 2**failures``, capped at ``max_delay``.

    The first ``when`` returns ``base`` (the count starts at zero), then it doubles.
    """

    def __init__(self, base: float = 0.005, max_delay: float = 1000.0) -> None:
        if base <= 0 or max_delay < base:
            raise ValueError("need 0 < base <= max_delay")
        self._base = base
        self._max_delay = max_delay
        # From this many failures on the result is the cap. Checking the exponent first keeps a
        # key that failed millions of times from overflowing ``2.0 ** n``.
        self._doublings_to_cap = math.ceil(math.log2(max_delay / base))
        self._failures: dict[Hashable, int] = {}

    def when(self, key: Hashable) -> float:
        exp = self._failures.get(key, 0)
        self._failures[key] = exp + 1
        if exp >= self._doublings_to_cap:
            return self._max_delay
        return min(self._base * 2.0**exp, self._max_delay)

    def forget(self, key: Hashable) -> None:
        self._failures.pop(key, None)

    def retries(self, key: Hashable) -> int:
        return self._failures.get(key, 0)


class BucketRateLimiter:
    """Token bucket shared by all keys: ``burst`` retries at once, then ``rate`` per second.

    ``when`` always reserves a token, letting the balance go negative, and returns how long until
    that reservation is covered; so concurrent retries get spaced ``1/rate`` apart instead of all
    being told the same wait (golang.org/x/time/rate ``Reserve`` semantics).
    """

    def __init__(self, rate: float = 10.0, burst: int = 100, clock: Clock = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("need rate > 0 and burst >= 1")
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def when(self, key: Hashable) -> float:
        now = self._clock()
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate) - 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    def forget(self, key: Hashable) -> None:
        """Nothing to forget: the bucket is not per key."""

    def retries(self, key: Hashable) -> int:
        return 0


class MaxOfRateLimiter(Generic[K]):
    """Combines limiters: the longest wait and the highest retry count win.

    Every limiter sees every ``when`` call, so each keeps its own bookkeeping current.
    """

    def __init__(self, *limiters: RateLimiter[K]) -> None:
        if not limiters:
            raise ValueError("need at least one limiter")
        self._limiters = limiters

    def when(self, key: K) -> float:
        return max([limiter.when(key) for limiter in self._limiters])

    def forget(self, key: K) -> None:
        for limiter in self._limiters:
            limiter.forget(key)

    def retries(self, key: K) -> int:
        return max(limiter.retries(key) for limiter in self._limiters)


def default_controller_rate_limiter(clock: Clock = time.monotonic) -> RateLimiter[Hashable]:
    """controller-runtime's default: per-key 5 ms doubling to 1000 s, and 10/s burst 100 overall."""
    return MaxOfRateLimiter[Hashable](
        ItemExponentialFailureRateLimiter(0.005, 1000.0),
        BucketRateLimiter(10.0, 100, clock),
    )
