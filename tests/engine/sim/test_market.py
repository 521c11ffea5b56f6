"""The price process: reproducible, positive and finite, correlated by group, regimes and scripts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.model import InputError
from engine.sim.config import SimMarket
from engine.sim.market import SCENARIOS, SECONDS_PER_YEAR, MarketSimulator

STEPS = [0.25, 0.1, 1.0, 0.25, 0.5, 2.0, 0.05]


def path(sim: MarketSimulator, n: int = 400) -> np.ndarray:
    return np.array([sim.advance(STEPS[k % len(STEPS)]).copy() for k in range(n)])


@pytest.mark.parametrize("scenario", ["calm", "demo", "crash"])
def test_same_seed_same_path_different_seed_different_path(instruments, sim_config, scenario):
    a = path(MarketSimulator(instruments, sim_config, scenario=scenario, seed=11))
    b = path(MarketSimulator(instruments, sim_config, scenario=scenario, seed=11))
    c = path(MarketSimulator(instruments, sim_config, scenario=scenario, seed=12))
    assert np.array_equal(a, b)
    assert not np.allclose(a, c, rtol=1e-9, atol=0)


def test_seed_and_scenario_default_to_the_config(instruments, sim_config):
    sim = MarketSimulator(instruments, sim_config)
    assert sim.seed == sim_config.seed
    assert sim.scenario.name == sim_config.scenario
    assert np.array_equal(path(sim, 50), path(MarketSimulator(instruments, sim_config, seed=sim_config.seed), 50))


def test_starting_marks_and_time(instruments, sim_config):
    sim = MarketSimulator(instruments, sim_config, scenario="calm", seed=1)
    assert sim.time == 0.0
    assert sim.symbols == tuple(i.symbol for i in instruments)
    assert np.array_equal(sim.prices, [sim_config.markets[s].price for s in sim.symbols])
    sim.advance(0.25)
    sim.advance(1.5)
    assert sim.time == pytest.approx(1.75)
    assert not sim.prices.flags.writeable


def test_prices_stay_positive_and_finite_over_a_long_crash(instruments, sim_config):
    sim = MarketSimulator(instruments, sim_config, scenario="crash", seed=3)
    prices = np.array([sim.advance(0.25).copy() for _ in range(4 * 3600)])  # one simulated hour
    assert np.isfinite(prices).all() and (prices > 0).all()


def test_prices_stay_positive_and_finite_under_absurd_volatility_and_steps(instruments, sim_config):
    wild = sim_config.model_copy(
        update={"markets": {s: SimMarket(price=m.price, volatility=9.9) for s, m in sim_config.markets.items()}}
    )
    sim = MarketSimulator(instruments, wild, scenario="crash", seed=5)
    for dt in [1e7] * 50 + [0.25] * 50:
        p = sim.advance(dt)
        assert np.isfinite(p).all() and (p > 0).all()


def test_same_group_returns_correlate_more_than_cross_group(instruments, sim_config):
    sim = MarketSimulator(instruments, sim_config, scenario="calm", seed=21)
    logp = np.log(np.array([sim.advance(1.0).copy() for _ in range(5000)]))
    corr = np.corrcoef(np.diff(logp, axis=0).T)
    groups = np.array(sim.groups)
    same = groups[:, None] == groups[None, :]
    off = ~np.eye(len(groups), dtype=bool)
    within, across = corr[same & off].mean(), corr[~same].mean()
    assert within > across + 0.2
    assert within == pytest.approx(sim_config.group_correlation, abs=0.05)
    assert across == pytest.approx(sim_config.market_correlation, abs=0.06)


def test_calm_is_low_volatility_and_unscripted(instruments, sim_config):
    sim = MarketSimulator(instruments, sim_config, scenario="calm", seed=8)
    assert not np.any(sim.scripted_offset(60.0))
    logp = np.log(np.array([sim.advance(1.0).copy() for _ in range(5000)]))
    realised = np.diff(logp, axis=0).std(axis=0) * math.sqrt(SECONDS_PER_YEAR)
    # calm runs at half the configured (annualised) volatility
    assert np.allclose(realised, 0.5 * sim.volatility, rtol=0.1)
    assert {sim.regime} == {"calm"}


def test_scenarios_force_the_stressed_regime_while_scripted(instruments, sim_config):
    sim = MarketSimulator(instruments, sim_config, scenario="demo", seed=2)
    seen = {}
    while sim.time < 120:
        sim.advance(0.25)
        seen[round(sim.time, 2)] = sim.regime
    assert seen[30.0] == "stressed" and seen[60.0] == "stressed"


def test_the_script_depends_on_time_not_on_step_size(instruments, sim_config):
    coarse = MarketSimulator(instruments, sim_config, scenario="crash", seed=4)
    fine = MarketSimulator(instruments, sim_config, scenario="crash", seed=4)
    for _ in range(20):
        coarse.advance(3.0)
    for _ in range(600):
        fine.advance(0.1)
    assert coarse.time == pytest.approx(fine.time)
    # both paths carry the same scripted fall; only the (small) random part differs
    np.testing.assert_allclose(np.log(coarse.prices / fine.prices), 0.0, atol=0.03)


def test_bad_inputs_are_refused(instruments, sim_config):
    sim = MarketSimulator(instruments, sim_config, seed=1)
    with pytest.raises(ValueError, match="dt"):
        sim.advance(-1.0)
    with pytest.raises(ValueError, match="dt"):
        sim.advance(float("nan"))
    before = sim.prices.copy()
    assert np.array_equal(sim.advance(0.0), before) and sim.time == 0.0
    with pytest.raises(InputError, match="unknown scenario"):
        MarketSimulator(instruments, sim_config, scenario="moon")
    partial = sim_config.model_copy(update={"markets": {"BTCUSDT": sim_config.markets["BTCUSDT"]}})
    with pytest.raises(InputError, match="ETHUSDT"):
        MarketSimulator(instruments, partial)


def test_every_config_scenario_is_implemented(sim_config):
    from typing import get_args

    from engine.sim.config import SimulatorConfig

    names = get_args(SimulatorConfig.model_fields["scenario"].annotation)
    assert set(names) == set(SCENARIOS)
