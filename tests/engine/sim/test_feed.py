"""SimulatedFeed: fixed ticks of simulated time, independent of the polling rhythm; pausing."""

from __future__ import annotations

import numpy as np
import pytest

from engine.sim.feed import SimulatedFeed
from engine.sim.market import MarketSimulator


def feed(instruments, sim_config, scenario="demo", seed=9) -> SimulatedFeed:
    return SimulatedFeed(MarketSimulator(instruments, sim_config, scenario=scenario, seed=seed))


def test_polling_rhythm_does_not_change_the_path(instruments, sim_config):
    often = feed(instruments, sim_config)
    n = len(instruments)
    updates = 0
    for k in range(1, 41):
        idx, px = often.poll(k * 0.25)
        assert np.array_equal(idx, np.arange(n)) and px.shape == (n,)
        updates += idx.size
    assert updates == 40 * n

    once = feed(instruments, sim_config)
    idx, px = once.poll(10.0)
    assert idx.size == 40 * n
    assert np.array_equal(px[-n:], often.prices)
    assert np.array_equal(once.prices, often.prices)
    assert once.time == often.time == pytest.approx(10.0)

    irregular = feed(instruments, sim_config)
    for now in (0.1, 0.37, 0.5, 0.51, 2.0, 2.0, 7.3, 9.99, 10.0):
        irregular.poll(now)
    assert np.array_equal(irregular.prices, often.prices)


def test_updates_come_in_time_order_and_can_be_coalesced(instruments, sim_config):
    a = feed(instruments, sim_config)
    b = feed(instruments, sim_config)
    n = len(instruments)
    idx, px = a.poll(1.0)
    assert np.array_equal(idx, np.tile(np.arange(n), 4))
    steps = px.reshape(4, n)
    latest_idx, latest_px = b.poll(1.0, coalesce=True)
    assert np.array_equal(latest_idx, np.arange(n))
    assert np.array_equal(latest_px, steps[-1])
    assert not np.array_equal(steps[0], steps[-1])


def test_nothing_is_due_before_the_first_tick(instruments, sim_config):
    f = feed(instruments, sim_config)
    idx, px = f.poll(0.2)
    assert idx.size == px.size == 0 and f.time == 0.0


def test_a_paused_feed_returns_nothing_and_does_not_advance(instruments, sim_config):
    f = feed(instruments, sim_config)
    f.poll(1.0)
    before = f.prices.copy()
    f.paused = True
    for now in (2.0, 5.0, 30.0):
        idx, px = f.poll(now)
        assert idx.size == 0 and px.size == 0
    assert np.array_equal(f.prices, before) and f.time == pytest.approx(1.0)
    # resuming continues from where it stopped: the paused time is skipped, not replayed
    f.paused = False
    idx, _ = f.poll(30.5)
    assert idx.size == 2 * len(instruments)
    assert f.time == pytest.approx(1.5)
    # and the path is the one an unpaused feed takes over the same number of ticks
    ref = feed(instruments, sim_config)
    ref.poll(1.5)
    assert np.array_equal(ref.prices, f.prices)


def test_single_stepping_a_paused_feed(instruments, sim_config):
    f = feed(instruments, sim_config)
    f.paused = True
    idx, _ = f.step()
    assert idx.size == len(instruments) and f.time == pytest.approx(0.25)
    f.step(3)
    assert f.time == pytest.approx(1.0)
    assert f.poll(100.0)[0].size == 0
    f.paused = False
    assert f.poll(100.25)[0].size == len(instruments)  # one tick after the last paused poll
    assert f.time == pytest.approx(1.25)


def test_tick_interval_comes_from_the_config(instruments, sim_config):
    f = feed(instruments, sim_config)
    assert f.tick_interval == sim_config.tick_interval
    assert f.symbols == tuple(i.symbol for i in instruments)
    with pytest.raises(ValueError, match="tick_interval"):
        SimulatedFeed(f.simulator, tick_interval=0.0)
