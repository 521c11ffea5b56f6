"""The one clock. The guard owns it and injects it everywhere: every dwell, cooldown,
expiry, escalation delay and staleness check reads `now()` from here, never the OS.

`SimClock` runs simulated time at `speed` times wall-clock speed (or is stepped by hand in
tests); `WallClock` is real time. Both return seconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time."""
        ...


class WallClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class SimClock:
    """Simulated time: starts at `start` and runs `speed` times faster than the wall clock.

    `paused` freezes it; `advance(seconds)` steps it by hand (tests, frozen snapshots).
    """

    def __init__(self, start: float | None = None, speed: float = 1.0, paused: bool = False) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.speed = speed
        self._base = time.time() if start is None else start
        self._wall0 = time.monotonic()
        self._offset = 0.0
        self.paused = paused
        self._frozen_at = self._base if paused else None
        self._waiters: list[asyncio.Future[None]] = []

    def now(self) -> float:
        if self._frozen_at is not None:
            return self._frozen_at
        return self._base + (time.monotonic() - self._wall0) * self.speed + self._offset

    def pause(self) -> None:
        self._frozen_at = self.now()

    def resume(self) -> None:
        if self._frozen_at is not None:
            self._base, self._wall0, self._offset = self._frozen_at, time.monotonic(), 0.0
            self._frozen_at = None
            self._wake()

    async def sleep(self, seconds: float) -> None:
        """Wait until `seconds` of simulated time have passed, however the clock is driven: by
        the wall clock at `speed`, or (paused) by hand through `advance`, which wakes sleepers."""
        until = self.now() + seconds
        while (left := until - self.now()) > 0:
            if self._frozen_at is not None:
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                await waiter
            else:
                await asyncio.sleep(min(left / self.speed, 0.05))

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def advance(self, seconds: float) -> None:
        if self._frozen_at is not None:
            self._frozen_at += seconds
        else:
            self._offset += seconds
        self._wake()


def iso(ts: float) -> str:
    """ISO-8601 UTC with milliseconds, e.g. 2026-11-25T15:47:32.120Z."""
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
