"""Fixtures for the simulator tests: the bundled config.toml, parsed here with tomllib so these
tests do not depend on the configuration loader."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from engine.book import Book
from engine.levels import Thresholds
from engine.model import Instrument
from engine.sim.config import SimulatorConfig
from engine.sim.demo import demo_accounts
from engine.sim.feed import SimulatedFeed
from engine.sim.market import MarketSimulator

CONFIG_PATH = Path(__file__).resolve().parents[3] / "config.toml"


@pytest.fixture(scope="session")
def raw_config() -> dict:
    with CONFIG_PATH.open("rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="session")
def instruments(raw_config) -> list[Instrument]:
    return [Instrument.model_validate(i) for i in raw_config["instruments"]]


@pytest.fixture(scope="session")
def sim_config(raw_config) -> SimulatorConfig:
    return SimulatorConfig.model_validate(raw_config["simulator"])


@pytest.fixture(scope="session")
def thresholds(raw_config) -> Thresholds:
    return Thresholds.model_validate(raw_config.get("thresholds", {}))


@dataclass
class Run:
    """A scenario played through the demo book, tick by tick."""

    book: Book
    simulator: MarketSimulator
    times: np.ndarray  # (ticks + 1,) simulated seconds, 0 first
    prices: np.ndarray  # (ticks + 1, instruments)
    levels: np.ndarray  # (ticks + 1, accounts)
    ratios: np.ndarray  # (ticks + 1, accounts)


@pytest.fixture(scope="session")
def play(instruments, sim_config, thresholds) -> Callable[..., Run]:
    """play(scenario, seconds=120, seed=None): feed the scenario into a Book of the demo accounts."""
    cache: dict[tuple, Run] = {}

    def _play(scenario: str, seconds: float = 120.0, seed: int | None = None) -> Run:
        key = (scenario, seconds, seed)
        if key in cache:
            return cache[key]
        book = Book(instruments, demo_accounts(sim_config, instruments, seed=seed), thresholds)
        sim = MarketSimulator(instruments, sim_config, scenario=scenario, seed=seed)
        feed = SimulatedFeed(sim)
        book.set_marks(np.arange(len(instruments)), sim.prices, 0.0)
        book.revalue()
        times, prices, levels, ratios = [0.0], [sim.prices.copy()], [book.level.copy()], [book.ratio.copy()]
        ticks = round(seconds / feed.tick_interval)
        for k in range(1, ticks + 1):
            now = k * feed.tick_interval
            idx, px = feed.poll(now)
            assert idx.size == len(instruments)  # exactly one tick per poll here
            book.set_marks(idx, px, now)
            book.revalue()
            times.append(now)
            prices.append(px.copy())
            levels.append(book.level.copy())
            ratios.append(book.ratio.copy())
        run = Run(book, sim, np.array(times), np.array(prices), np.array(levels), np.array(ratios))
        cache[key] = run
        return run

    return _play
