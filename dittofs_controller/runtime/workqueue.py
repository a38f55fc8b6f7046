"""Asyncio work queue with client-go ``util/workqueue`` semantics (dedupe, delay, rate limit)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from .metrics import QueueMetrics
from .ratelimit import RateLimiter, default_controller_rate_limiter

K = TypeVar("K", bound=Hashable)


class ShutDown(Exception):
    """Raised by ``WorkQueue.get`` once the queue is shut down and has nothing left to hand out."""


class WorkQueue(Generic[K]):
    """Queue of keys to reconcile, safe for several worker tasks on one event loop.

    Invariants:

    - A key is waiting at most once: adding a key that is already waiting does nothing.
    - A key is handed to at most one worker at a time. Adding a key that is being processed marks
      it dirty; ``done`` then queues it again. Any number of such adds collapse into one extra pass.
    - ``get`` hands keys out in FIFO order of their (first) add.
    - ``add_after`` keeps only the earliest due time per key: a later one for a key already
      scheduled sooner is ignored, an earlier one replaces it. A delay <= 0 is a plain ``add``
      (which leaves any pending delayed add in place, as client-go does). Delays run on the
      event loop's clock.
    - After ``shut_down`` every add is ignored and pending delayed adds are dropped; keys still
      waiting (or re-queued by ``done``) are still handed out, then ``get`` raises ``ShutDown``.
    - ``shut_down_with_drain`` returns True once no key is handed out, False if the timeout
      elapses first.
    - ``len(queue)`` counts keys waiting to be handed out, not those being processed.

    A getter cancelled while waiting takes nothing. Whoever got a key must call ``done(key)``,
    normally in a ``finally``.
    """

    def __init__(
        self,
        name: str,
        rate_limiter: RateLimiter[K] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``name`` labels the ``workqueue_*`` metrics; ``clock`` times them."""
        self._rate_limiter: RateLimiter[K] = (
            default_controller_rate_limiter() if rate_limiter is None else rate_limiter
        )
        self._metrics = QueueMetrics(name, clock)
        self._queue: deque[K] = deque()
        # Keys that need a pass: everything in _queue plus keys re-added while processing.
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._delayed: dict[K, asyncio.TimerHandle] = {}
        self._shutting_down = False
        # Set exactly when _queue is non-empty or the queue is shutting down. Every waiting getter
        # wakes and re-checks; with a handful of workers that is cheaper than tracking each one.
        self._ready = asyncio.Event()
        # Set exactly when no key is being processed.
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: K) -> None:
        """Mark ``key`` as needing a pass."""
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        self._metrics.added(key)
        if key in self._processing:
            return
        self._queue.append(key)
        self._ready.set()

    async def get(self) -> K:
        """Wait for the next key; raise ``ShutDown`` when shut down and nothing is waiting."""
        while not self._queue:
            if self._shutting_down:
                raise ShutDown
            await self._ready.wait()
        key = self._queue.popleft()
        if not self._queue and not self._shutting_down:
            self._ready.clear()
        self._dirty.discard(key)
        self._processing.add(key)
        self._idle.clear()
        self._metrics.handed_out(key)
        return key

    def done(self, key: K) -> None:
        """End the pass over ``key``; queue it again if it was added meanwhile.

        A key that is not being processed is ignored, so a stray call cannot duplicate it.
        """
        if key not in self._processing:
            return
        self._processing.remove(key)
        self._metrics.done(key)
        if key in self._dirty:
            self._queue.append(key)
            self._ready.set()
        if not self._processing:
            self._idle.set()

    def add_after(self, key: K, delay: float, *, retry: bool = True) -> None:
        """Add ``key`` once ``delay`` seconds have passed, unless it is already due sooner.

        ``retry`` False: a deliberate wait (coalescing changes), not counted as a retry.
        """
        if self._shutting_down:
            return
        if retry:
            self._metrics.retried()
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        scheduled = self._delayed.get(key)
        if scheduled is not None:
            if scheduled.when() <= due:
                return
            scheduled.cancel()
        self._delayed[key] = loop.call_at(due, self._add_delayed, key)

    def _add_delayed(self, key: K) -> None:
        del self._delayed[key]
        self.add(key)

    def add_rate_limited(self, key: K) -> None:
        """Retry ``key`` after the delay its rate limiter asks for (it counts as a failure)."""
        self.add_after(key, self._rate_limiter.when(key))

    def forget(self, key: K) -> None:
        """Reset ``key``'s failure history, e.g. after a successful pass."""
        self._rate_limiter.forget(key)

    def num_requeues(self, key: K) -> int:
        return self._rate_limiter.retries(key)

    def shut_down(self) -> None:
        """Stop accepting adds, drop delayed adds, and wake every waiting getter."""
        self._shutting_down = True
        for handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        self._ready.set()

    # The timeout is a parameter on purpose: running out of time is an answer (False), not an
    # error to raise through a caller's asyncio.timeout block.
    async def shut_down_with_drain(self, timeout: float) -> bool:
        """Shut down, then wait up to ``timeout`` seconds for handed-out keys to be done.

        Returns whether it drained. Workers still pulling leftover waiting keys keep it waiting,
        so no pass is cut short by a caller that cancels its workers after a True result.
        """
        self.shut_down()
        try:
            async with asyncio.timeout(timeout):
                while self._processing:
                    await self._idle.wait()
        except TimeoutError:
            return False
        return True
