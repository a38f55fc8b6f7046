"""Work queue invariants (client-go util/workqueue semantics) and the metrics it records.

The loop's clock is fast-forwarded (looptime): a delay is asserted exactly, and a wait for
something that must not happen costs no real time.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import prometheus_client
import pytest

from dittofs_controller.runtime.metrics import (
    ACTIVE_WORKERS,
    LEADER_ELECTION_MASTER_STATUS,
    RECONCILE_ERRORS,
    RECONCILE_TIME,
    RECONCILE_TOTAL,
    REGISTRY,
    TERMINAL_RECONCILE_ERRORS,
    init_controller_metrics,
)
from dittofs_controller.runtime.ratelimit import ItemExponentialFailureRateLimiter
from dittofs_controller.runtime.workqueue import ShutDown, WorkQueue

pytestmark = pytest.mark.looptime


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
async def no_loop_errors() -> AsyncIterator[None]:
    """Fail on exceptions swallowed by the loop, e.g. from a timer callback."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield
    loop.set_exception_handler(None)
    assert errors == []


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A metrics label unique to the test, since the registry outlives each test."""
    return f"{__name__}.{request.node.name}"


def sample(metric: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(metric, labels)
    assert value is not None, f"{metric}{labels} not exported"
    return value


async def get_soon(queue: WorkQueue[str], within: float = 1.0) -> str:
    return await asyncio.wait_for(queue.get(), within)


async def assert_nothing_arrives(queue: WorkQueue[str], within: float = 0.02) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(queue.get(), within)


# --- add / get / done ------------------------------------------------------------------------


async def test_waiting_key_is_not_queued_twice(name: str) -> None:
    queue = WorkQueue[str](name)
    for key in ("a", "a", "b", "a"):
        queue.add(key)
    assert len(queue) == 2
    assert [await get_soon(queue), await get_soon(queue)] == ["a", "b"]
    assert len(queue) == 0
    await assert_nothing_arrives(queue)


async def test_keys_come_out_in_fifo_order(name: str) -> None:
    queue = WorkQueue[str](name)
    keys = [f"k{i}" for i in range(10)]
    for key in keys:
        queue.add(key)
    assert [await get_soon(queue) for _ in keys] == keys


async def test_queue_takes_any_hashable_key(name: str) -> None:
    queue = WorkQueue[tuple[str, str]](name)
    queue.add(("ns", "a"))
    queue.add(("ns", "a"))
    assert len(queue) == 1
    assert await asyncio.wait_for(queue.get(), 1.0) == ("ns", "a")


async def test_get_waits_for_an_add(name: str) -> None:
    queue = WorkQueue[str](name)
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0.01)
    assert not getter.done()
    queue.add("a")
    assert await asyncio.wait_for(getter, 1.0) == "a"


async def test_readd_while_processing_waits_for_done(name: str) -> None:
    queue = WorkQueue[str](name)
    queue.add("a")
    assert await get_soon(queue) == "a"
    queue.add("a")
    assert len(queue) == 0  # parked until the current pass ends
    second_worker = asyncio.create_task(queue.get())
    await asyncio.sleep(0.01)
    assert not second_worker.done()
    queue.done("a")
    assert await asyncio.wait_for(second_worker, 1.0) == "a"


async def test_many_readds_while_processing_collapse_into_one_pass(name: str) -> None:
    queue = WorkQueue[str](name)
    queue.add("a")
    await get_soon(queue)
    for _ in range(5):
        queue.add("a")
    queue.done("a")
    assert len(queue) == 1
    assert await get_soon(queue) == "a"
    queue.done("a")
    assert len(queue) == 0
    await assert_nothing_arrives(queue)


async def test_two_workers_never_process_one_key_at_once(name: str) -> None:
    queue = WorkQueue[str](name)
    running: set[str] = set()
    passes: Counter[str] = Counter()
    overlaps: list[str] = []
    first_pass_started = asyncio.Event()

    async def worker() -> None:
        while True:
            try:
                key = await queue.get()
            except ShutDown:
                return
            if key in running:
                overlaps.append(key)
            running.add(key)
            passes[key] += 1
            first_pass_started.set()
            await asyncio.sleep(0.03)
            running.discard(key)
            queue.done(key)

    workers = [asyncio.create_task(worker()) for _ in range(2)]
    queue.add("a")
    await asyncio.wait_for(first_pass_started.wait(), 1.0)
    for _ in range(5):
        queue.add("a")
    queue.add("b")
    await asyncio.sleep(0.01)
    # The idle worker took "b" (so both really run in parallel) but not the dirty "a".
    assert running == {"a", "b"}
    assert len(queue) == 0
    # Draining lets "a" finish, run its one extra pass, and finish again.
    assert await queue.shut_down_with_drain(1.0) is True
    await asyncio.wait_for(asyncio.gather(*workers), 1.0)
    assert passes == {"a": 2, "b": 1}
    assert overlaps == []


async def test_done_for_a_key_not_handed_out_is_ignored(name: str) -> None:
    queue = WorkQueue[str](name)
    queue.add("a")
    queue.done("a")  # waiting, not processing: must not queue a duplicate
    assert len(queue) == 1
    await get_soon(queue)
    queue.done("a")
    queue.done("a")
    assert len(queue) == 0
    await assert_nothing_arrives(queue)


async def test_cancelled_getter_takes_nothing(name: str) -> None:
    queue = WorkQueue[str](name)
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    getter.cancel()
    queue.add("a")
    with pytest.raises(asyncio.CancelledError):
        await getter
    assert len(queue) == 1
    assert await get_soon(queue) == "a"


# --- delayed and rate-limited adds -----------------------------------------------------------


async def test_add_after_non_positive_delay_adds_now(name: str) -> None:
    queue = WorkQueue[str](name)
    queue.add_after("a", 0)
    queue.add_after("b", -5.0)
    assert len(queue) == 2


async def test_add_after_adds_once_the_delay_passes(name: str) -> None:
    queue = WorkQueue[str](name)
    loop = asyncio.get_running_loop()
    start = loop.time()
    queue.add_after("a", 0.03)
    assert len(queue) == 0
    assert await get_soon(queue) == "a"
    assert loop.time() - start == pytest.approx(0.03)


async def test_add_after_ignores_a_later_time_for_a_key_due_sooner(name: str) -> None:
    queue = WorkQueue[str](name)
    loop = asyncio.get_running_loop()
    start = loop.time()
    queue.add_after("a", 0.01)
    queue.add_after("a", 0.15)
    assert await get_soon(queue) == "a"
    assert loop.time() - start == pytest.approx(0.01)
    queue.done("a")
    # The 0.15 s entry was dropped, not kept as a second add.
    await assert_nothing_arrives(queue, within=0.2)


async def test_add_after_earlier_time_replaces_a_later_one(name: str) -> None:
    queue = WorkQueue[str](name)
    loop = asyncio.get_running_loop()
    start = loop.time()
    queue.add_after("a", 0.15)
    queue.add_after("a", 0.01)
    assert await get_soon(queue) == "a"
    assert loop.time() - start == pytest.approx(0.01)
    queue.done("a")
    await assert_nothing_arrives(queue, within=0.2)


async def test_delayed_add_of_a_waiting_key_is_deduped(name: str) -> None:
    queue = WorkQueue[str](name)
    queue.add("a")
    queue.add_after("a", 0.01)
    await asyncio.sleep(0.03)
    assert len(queue) == 1


async def test_add_rate_limited_backs_off_and_forget_resets(name: str) -> None:
    limiter = ItemExponentialFailureRateLimiter(base=0.01, max_delay=1.0)
    queue = WorkQueue[str](name, limiter)
    loop = asyncio.get_running_loop()
    for expected_requeues in (1, 2):
        start = loop.time()
        queue.add_rate_limited("a")
        assert queue.num_requeues("a") == expected_requeues
        assert await get_soon(queue) == "a"
        assert loop.time() - start == pytest.approx(0.01 * 2 ** (expected_requeues - 1))
        queue.done("a")
    queue.forget("a")
    assert queue.num_requeues("a") == 0
    assert limiter.when("a") == 0.01


async def test_default_limiter_retries_quickly_at_first(name: str) -> None:
    queue = WorkQueue[str](name)
    queue.add_rate_limited("a")
    assert queue.num_requeues("a") == 1
    assert len(queue) == 0
    assert await get_soon(queue, within=0.5) == "a"


# --- shutdown --------------------------------------------------------------------------------


async def test_shut_down_wakes_every_waiting_getter(name: str) -> None:
    queue = WorkQueue[str](name)
    getters = [asyncio.create_task(queue.get()) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert not any(getter.done() for getter in getters)
    queue.shut_down()
    assert queue.shutting_down
    results = await asyncio.wait_for(asyncio.gather(*getters, return_exceptions=True), 1.0)
    assert all(isinstance(result, ShutDown) for result in results)


async def test_shut_down_hands_out_what_is_waiting_then_raises(name: str) -> None:
    queue = WorkQueue[str](name)
    queue.add("a")
    queue.shut_down()
    assert await get_soon(queue) == "a"
    with pytest.raises(ShutDown):
        await get_soon(queue)


async def test_adds_after_shut_down_are_ignored(name: str) -> None:
    queue = WorkQueue[str](name)
    queue.shut_down()
    queue.add("a")
    queue.add_after("b", 0)
    queue.add_after("c", 0.01)
    queue.add_rate_limited("d")
    assert len(queue) == 0
    with pytest.raises(ShutDown):
        await get_soon(queue)


async def test_shut_down_drops_pending_delayed_adds(name: str) -> None:
    queue = WorkQueue[str](name)
    queue.add_after("a", 0.01)
    queue.shut_down()
    await asyncio.sleep(0.03)  # the timer would have fired by now
    assert len(queue) == 0
    with pytest.raises(ShutDown):
        await get_soon(queue)


async def test_drain_with_nothing_in_flight_returns_at_once(name: str) -> None:
    queue = WorkQueue[str](name)
    assert await asyncio.wait_for(queue.shut_down_with_drain(10.0), 0.5) is True


async def test_drain_waits_for_in_flight_work(name: str) -> None:
    queue = WorkQueue[str](name)
    queue.add("a")
    await get_soon(queue)
    drain = asyncio.create_task(queue.shut_down_with_drain(5.0))
    await asyncio.sleep(0.01)
    assert not drain.done()
    queue.add("b")  # shutting down: ignored
    assert len(queue) == 0
    queue.done("a")
    assert await asyncio.wait_for(drain, 1.0) is True


async def test_drain_returns_false_on_timeout(name: str) -> None:
    queue = WorkQueue[str](name)
    queue.add("a")
    await get_soon(queue)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await queue.shut_down_with_drain(0.03) is False
    assert loop.time() - start == pytest.approx(0.03)


async def test_drain_covers_a_worker_still_emptying_the_queue(name: str) -> None:
    queue = WorkQueue[str](name)
    finished: list[str] = []

    async def worker() -> None:
        while True:
            try:
                key = await queue.get()
            except ShutDown:
                return
            await asyncio.sleep(0.01)
            finished.append(key)
            queue.done(key)

    queue.add("a")
    queue.add("b")
    task = asyncio.create_task(worker())
    await asyncio.sleep(0)  # the worker holds "a"; "b" is waiting
    assert await queue.shut_down_with_drain(1.0) is True
    assert finished == ["a", "b"]
    await asyncio.wait_for(task, 1.0)


# --- metrics ---------------------------------------------------------------------------------


async def test_depth_and_adds_follow_the_queue(name: str) -> None:
    queue = WorkQueue[str](name)
    assert sample("workqueue_depth", name=name) == 0
    for key in ("a", "a", "b"):
        queue.add(key)
    assert sample("workqueue_adds_total", name=name) == 2
    assert sample("workqueue_depth", name=name) == 2
    await get_soon(queue)
    assert sample("workqueue_depth", name=name) == 1
    queue.add("a")  # dirty while processing: pending work, counted like client-go does
    assert sample("workqueue_adds_total", name=name) == 3
    assert sample("workqueue_depth", name=name) == 2
    queue.done("a")
    assert sample("workqueue_depth", name=name) == 2
    await get_soon(queue)
    await get_soon(queue)
    assert sample("workqueue_depth", name=name) == 0


async def test_durations_and_running_time_gauges(name: str) -> None:
    clock = FakeClock()
    queue = WorkQueue[str](name, clock=clock)
    assert sample("workqueue_unfinished_work_seconds", name=name) == 0
    assert sample("workqueue_longest_running_processor_seconds", name=name) == 0
    queue.add("a")
    queue.add("b")
    clock.advance(2.0)
    await get_soon(queue)
    clock.advance(1.0)
    await get_soon(queue)
    assert sample("workqueue_queue_duration_seconds_count", name=name) == 2
    assert sample("workqueue_queue_duration_seconds_sum", name=name) == 5.0  # 2 s + 3 s
    assert sample("workqueue_queue_duration_seconds_bucket", name=name, le="1.0") == 0
    assert sample("workqueue_queue_duration_seconds_bucket", name=name, le="10.0") == 2

    clock.advance(4.0)  # "a" has run 5 s, "b" 4 s
    assert sample("workqueue_unfinished_work_seconds", name=name) == 9.0
    assert sample("workqueue_longest_running_processor_seconds", name=name) == 5.0
    queue.done("a")
    assert sample("workqueue_work_duration_seconds_count", name=name) == 1
    assert sample("workqueue_work_duration_seconds_sum", name=name) == 5.0
    assert sample("workqueue_unfinished_work_seconds", name=name) == 4.0
    assert sample("workqueue_longest_running_processor_seconds", name=name) == 4.0
    queue.done("b")
    assert sample("workqueue_work_duration_seconds_sum", name=name) == 9.0
    assert sample("workqueue_unfinished_work_seconds", name=name) == 0
    assert sample("workqueue_longest_running_processor_seconds", name=name) == 0


async def test_readded_key_waits_from_its_readd(name: str) -> None:
    clock = FakeClock()
    queue = WorkQueue[str](name, clock=clock)
    queue.add("a")
    await get_soon(queue)
    clock.advance(3.0)
    queue.add("a")
    clock.advance(1.0)
    queue.done("a")
    clock.advance(0.5)
    await get_soon(queue)
    assert sample("workqueue_queue_duration_seconds_sum", name=name) == 1.5


async def test_retries_count_every_delayed_add(name: str) -> None:
    queue = WorkQueue[str](name)
    queue.add_after("a", 0)
    queue.add_after("b", 10.0)
    queue.add_rate_limited("c")
    assert sample("workqueue_retries_total", name=name) == 3
    assert sample("workqueue_adds_total", name=name) == 1
    queue.add_after("e", 10.0, retry=False)  # a deliberate wait is not a retry
    assert sample("workqueue_retries_total", name=name) == 3
    queue.shut_down()
    queue.add_rate_limited("d")
    assert sample("workqueue_retries_total", name=name) == 3


async def test_controller_metrics_start_at_zero_and_count(name: str) -> None:
    init_controller_metrics(name, max_concurrent_reconciles=3)
    for result in ("success", "error", "requeue", "requeue_after"):
        assert sample("controller_runtime_reconcile_total", controller=name, result=result) == 0
    assert sample("controller_runtime_reconcile_errors_total", controller=name) == 0
    assert sample("controller_runtime_terminal_reconcile_errors_total", controller=name) == 0
    assert sample("controller_runtime_max_concurrent_reconciles", controller=name) == 3
    assert sample("controller_runtime_active_workers", controller=name) == 0

    ACTIVE_WORKERS.labels(name).inc()
    RECONCILE_TIME.labels(name).observe(0.3)
    RECONCILE_TOTAL.labels(name, "error").inc()
    RECONCILE_ERRORS.labels(name).inc()
    TERMINAL_RECONCILE_ERRORS.labels(name).inc()
    assert sample("controller_runtime_active_workers", controller=name) == 1
    assert sample("controller_runtime_reconcile_total", controller=name, result="error") == 1
    assert sample("controller_runtime_reconcile_errors_total", controller=name) == 1
    assert sample("controller_runtime_terminal_reconcile_errors_total", controller=name) == 1
    bucket = "controller_runtime_reconcile_time_seconds_bucket"
    assert sample(bucket, controller=name, le="0.25") == 0
    assert sample(bucket, controller=name, le="0.3") == 1
    assert sample(bucket, controller=name, le="60.0") == 1

    LEADER_ELECTION_MASTER_STATUS.labels(name).set(1)
    assert sample("leader_election_master_status", name=name) == 1


async def test_metrics_stay_off_the_global_registry(name: str) -> None:
    WorkQueue[str](name).add("a")
    assert sample("workqueue_adds_total", name=name) == 1
    default_registry = prometheus_client.REGISTRY
    assert default_registry.get_sample_value("workqueue_adds_total", {"name": name}) is None
