"""Rate limiter semantics, driven by a fake clock so every value is exact."""

from __future__ import annotations

import pytest

from dittofs_controller.runtime.ratelimit import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    default_controller_rate_limiter,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_exponential_doubles_from_base_per_key() -> None:
    limiter = ItemExponentialFailureRateLimiter()
    assert [limiter.when("a") for _ in range(5)] == pytest.approx([0.005, 0.01, 0.02, 0.04, 0.08])
    assert limiter.retries("a") == 5
    assert limiter.when("b") == pytest.approx(0.005)
    assert limiter.retries("b") == 1


def test_exponential_caps_at_max_delay() -> None:
    limiter = ItemExponentialFailureRateLimiter()
    delays = [limiter.when("a") for _ in range(20)]
    # 0.005 * 2**17 = 655.36 is the last uncapped step; 2**18 would be 1310.72.
    assert delays[17] == pytest.approx(655.36)
    assert delays[18:] == [1000.0, 1000.0]


def test_exponential_survives_huge_retry_counts() -> None:
    # 2.0 ** 1024 overflows a float; the limiter must keep answering the cap well past that.
    limiter = ItemExponentialFailureRateLimiter(base=1.0, max_delay=1e308)
    delays = [limiter.when("a") for _ in range(3000)]
    assert delays[1023] == 2.0**1023
    assert delays[-1] == 1e308
    assert limiter.retries("a") == 3000


def test_exponential_forget_resets_only_that_key() -> None:
    limiter = ItemExponentialFailureRateLimiter()
    for _ in range(3):
        limiter.when("a")
        limiter.when("b")
    limiter.forget("a")
    assert limiter.retries("a") == 0
    assert limiter.when("a") == pytest.approx(0.005)
    assert limiter.retries("b") == 3
    limiter.forget("never-seen")


@pytest.mark.parametrize(("base", "max_delay"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_exponential_rejects_bad_config(base: float, max_delay: float) -> None:
    with pytest.raises(ValueError):
        ItemExponentialFailureRateLimiter(base, max_delay)


def test_bucket_allows_burst_then_spaces_at_rate() -> None:
    clock = FakeClock()
    limiter = BucketRateLimiter(rate=10.0, burst=100, clock=clock)
    # Keys do not matter: the bucket is shared.
    assert [limiter.when(f"k{i}") for i in range(100)] == [0.0] * 100
    assert limiter.when("x") == pytest.approx(0.1)
    assert limiter.when("y") == pytest.approx(0.2)
    assert limiter.when("x") == pytest.approx(0.3)
    # 0.2 s refills two tokens; three reservations are outstanding, so the next waits 0.2 s.
    clock.advance(0.2)
    assert limiter.when("z") == pytest.approx(0.2)


def test_bucket_refills_at_rate_up_to_burst_only() -> None:
    clock = FakeClock()
    limiter = BucketRateLimiter(rate=10.0, burst=100, clock=clock)
    for i in range(100):
        limiter.when(i)
    clock.advance(0.5)
    assert [limiter.when(i) for i in range(5)] == [0.0] * 5
    assert limiter.when("next") == pytest.approx(0.1)
    clock.advance(3600.0)
    assert [limiter.when(i) for i in range(100)] == [0.0] * 100
    assert limiter.when("over") == pytest.approx(0.1)


def test_bucket_tracks_no_retries() -> None:
    limiter = BucketRateLimiter(clock=FakeClock())
    limiter.when("a")
    limiter.forget("a")
    assert limiter.retries("a") == 0


def test_max_of_takes_largest_delay_and_retry_count() -> None:
    clock = FakeClock()
    slow = ItemExponentialFailureRateLimiter(base=1.0, max_delay=100.0)
    fast = ItemExponentialFailureRateLimiter(base=0.001, max_delay=100.0)
    bucket = BucketRateLimiter(rate=1.0, burst=1, clock=clock)
    limiter = MaxOfRateLimiter[str](fast, slow, bucket)
    assert limiter.when("a") == 1.0
    assert limiter.when("a") == 2.0  # bucket wants 1.0, slow wants 2.0
    # Every limiter saw both calls, even the ones that lost.
    assert fast.retries("a") == 2
    assert limiter.retries("a") == 2
    limiter.forget("a")
    assert (slow.retries("a"), fast.retries("a"), limiter.retries("a")) == (0, 0, 0)
    # forget does not refill the bucket: it still owes a token, so this one waits 2 s.
    assert limiter.when("a") == pytest.approx(2.0)


def test_max_of_needs_a_limiter() -> None:
    with pytest.raises(ValueError):
        MaxOfRateLimiter[str]()


def test_default_controller_limiter_combines_per_key_backoff_and_bucket() -> None:
    clock = FakeClock()
    limiter = default_controller_rate_limiter(clock)
    # Per-key backoff dominates while the bucket has tokens.
    assert [limiter.when("a") for _ in range(3)] == pytest.approx([0.005, 0.01, 0.02])
    assert limiter.retries("a") == 3
    for i in range(97):
        assert limiter.when(i) == pytest.approx(0.005)
    # Bucket exhausted (100 tokens used): a fresh key waits for the bucket, not 5 ms.
    assert limiter.when("fresh") == pytest.approx(0.1)
    assert limiter.when("fresh2") == pytest.approx(0.2)
    limiter.forget("a")
    assert limiter.retries("a") == 0
    clock.advance(1000.0)
    assert limiter.when("a") == pytest.approx(0.005)
    # Capped per-key backoff beats the bucket.
    assert [limiter.when("stuck") for _ in range(30)][-1] == 1000.0
