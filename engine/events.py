"""In-process publish/subscribe. A slow consumer never slows the engine: each subscriber has a
bounded queue; when it is full the oldest event is dropped and counted.

One event object is shared by every subscriber: consumers must treat it as read-only.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

Event = dict[str, Any]


class Subscription:
    def __init__(self, hub: EventHub, maxsize: int, kinds: set[str] | None) -> None:
        self._hub = hub
        self._queue: deque[Event] = deque(maxlen=maxsize)
        self._wakeup = asyncio.Event()
        self.kinds = kinds
        self.dropped = 0
        self.closed = False

    def _offer(self, event: Event) -> None:
        if self.kinds is not None and event["type"] not in self.kinds:
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(event)
        self._wakeup.set()

    def drain(self) -> list[Event]:
        """Everything queued so far, without waiting."""
        out = list(self._queue)
        self._queue.clear()
        self._wakeup.clear()
        return out

    async def get(self) -> Event:
        """The next event; raises StopAsyncIteration once the subscription is closed and drained."""
        while not self._queue:
            if self.closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._queue.popleft()

    def close(self) -> None:
        self.closed = True
        self._hub._subs.discard(self)
        self._wakeup.set()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Event]:
        while True:
            try:
                yield await self.get()
            except StopAsyncIteration:
                return


class EventHub:
    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self.published = 0

    def subscribe(self, maxsize: int = 1000, kinds: set[str] | None = None) -> Subscription:
        sub = Subscription(self, maxsize, kinds)
        self._subs.add(sub)
        return sub

    def publish(self, event: Event) -> None:
        self.published += 1
        for sub in tuple(self._subs):
            sub._offer(event)
