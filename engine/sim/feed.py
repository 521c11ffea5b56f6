"""A price feed backed by the market simulator.

The feed steps the simulator in fixed `tick_interval` increments of simulated time, so the
price path depends only on the simulated time reached, never on how often `poll` is called.
The caller owns the clock (and applies any `--speed` factor to it).
"""

from __future__ import annotations

import math

import numpy as np

from engine.sim.market import MarketSimulator

_EMPTY_INDEX = np.zeros(0, dtype=np.int64)
_EMPTY_PRICE = np.zeros(0, dtype=np.float64)


class SimulatedFeed:
    """Price updates from a `MarketSimulator`, one update per instrument every tick.

    `poll(now)` returns every update due up to the feed's simulated time `now`, in time order,
    as two aligned arrays (instrument indices, prices). A paused feed returns nothing and
    does not advance; the simulated time that passes while paused is skipped, not replayed.
    """

    def __init__(self, simulator: MarketSimulator, tick_interval: float | None = None) -> None:
        self.simulator = simulator
        self.tick_interval = float(tick_interval if tick_interval is not None else simulator.config.tick_interval)
        if not (math.isfinite(self.tick_interval) and self.tick_interval > 0):
            raise ValueError(f"tick_interval must be a positive number of seconds, got {tick_interval!r}")
        self.paused = False
        self._origin = simulator.time  # caller time at which the feed's step 0 lies
        self._ticks = 0  # steps taken by this feed
        self._skipped = 0.0  # caller time not counted: spent paused, or skipped ahead by `step`
        self._local = 0.0  # the feed's own time (caller time minus origin and skipped) last reached
        self._all = np.arange(len(simulator.instruments), dtype=np.int64)

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.simulator.symbols

    @property
    def time(self) -> float:
        """Simulated time of the last update produced."""
        return self.simulator.time

    @property
    def prices(self) -> np.ndarray:
        return self.simulator.prices

    def due(self, now: float) -> int:
        """Number of ticks due at caller time `now` (0 while paused)."""
        if self.paused:
            return 0
        local = now - self._skipped - self._origin
        # A tiny tolerance so that now == k * tick_interval counts step k as due despite rounding.
        target = math.floor(local / self.tick_interval + 1e-9)
        return max(0, target - self._ticks)

    def poll(self, now: float, *, coalesce: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """All price updates due up to simulated time `now`: (instrument indices, prices).

        Updates are in time order, each tick listing every instrument. With `coalesce`, only
        the latest price of each instrument that was updated is returned.
        """
        now = float(now)
        if not math.isfinite(now):
            raise ValueError(f"poll: now must be finite, got {now!r}")
        if self.paused:
            # The feed's clock stands still: whatever time the caller reports is skipped.
            self._skipped = now - self._origin - self._local
            return _EMPTY_INDEX, _EMPTY_PRICE
        self._local = max(self._local, now - self._skipped - self._origin)
        count = self.due(now)
        if count and coalesce:
            self._advance(count - 1)
            return self._advance(1)
        return self._advance(count)

    def step(self, count: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Advance exactly `count` ticks, paused or not (single-stepping for tests and the console).

        The feed's clock moves on with them, so later polls continue from there instead of
        waiting for the caller's time to catch up.
        """
        ahead = max(count, 0) * self.tick_interval
        self._skipped -= ahead
        self._local += ahead
        return self._advance(count)

    def _advance(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        if count <= 0:
            return _EMPTY_INDEX, _EMPTY_PRICE
        prices = np.empty((count, self._all.size))
        for k in range(count):
            prices[k] = self.simulator.advance(self.tick_interval)
        self._ticks += count
        return np.tile(self._all, count), prices.ravel()
