"""Simulated mark prices: correlated geometric Brownian motion with jumps and volatility regimes.

The log price of instrument i is the sum of a random part and a scripted part:

    log(P_i(t) / P_i(0)) = X_i(t) + S_i(t)

X is the random process, advanced step by step:

    dX_i = -sigma_i^2 / 2 * dt + sigma_i * sqrt(dt) * Z_i + J_i
    Z_i  = a * M + b * G_group(i) + c * E_i      (a^2 = rho_market, a^2 + b^2 = rho_group, a^2 + b^2 + c^2 = 1)

with sigma_i the annualised volatility (dt in years: 365.25 days of 24 h, crypto never closes)
times the current regime's multiplier, M a market factor shared by every instrument, G one
factor per group, E idiosyncratic noise, and J Poisson jumps (market-wide, scaled by each
instrument's volatility relative to the median, plus idiosyncratic ones). Returns of two
instruments of the same group correlate at `group_correlation`, of different groups at
`market_correlation`.

The regime (calm or stressed) is a two-state Markov chain; a scenario can force the stressed
regime over time windows or pin the calm one.

S is the scenario: a deterministic schedule of moves (ramps over a duration, or gaps with no
duration) per instrument group. It is a function of simulated time only, so the scripted path
does not depend on how time is cut into steps; a gap lands entirely in the step that crosses it.

Every step draws the same number of random variates whatever the state, from one seeded
numpy Generator: the same seed and the same sequence of `advance(dt)` calls give identical
prices. Simulated time is independent of wall time; the caller chooses dt.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from engine.model import InputError, Instrument
from engine.sim.config import SimulatorConfig

SECONDS_PER_YEAR = 365.25 * 24 * 3600.0
# Log prices are kept within exp(+-LOG_LIMIT) of the start, so prices stay positive and finite.
LOG_LIMIT = 30.0


@dataclass(frozen=True)
class Regime:
    """Volatility regime: a multiplier on every volatility and jump intensities (per second)."""

    name: str
    vol_multiplier: float
    market_jump_rate: float  # market-wide jumps per second
    market_jump_mean: float  # mean log size of a market jump (scaled by instrument beta)
    market_jump_sd: float
    idio_jump_rate: float  # jumps per second per instrument
    idio_jump_sd: float
    leave_rate: float  # per second: rate of switching to the other regime


CALM = Regime("calm", 1.0, 1 / 900, -0.0005, 0.003, 1 / 1800, 0.004, leave_rate=1 / 1800)
STRESSED = Regime("stressed", 3.0, 1 / 120, -0.002, 0.006, 1 / 300, 0.008, leave_rate=1 / 300)
REGIMES: tuple[Regime, ...] = (CALM, STRESSED)


@dataclass(frozen=True)
class Move:
    """A scripted change of price per group: a ramp over `duration` seconds, or a gap if 0.

    `change` maps group names to fractional price changes (-0.08 = down 8%); the key "*"
    applies to any group not named (absent: 0). Changes compound: they add in log space.
    """

    start: float
    duration: float
    change: Mapping[str, float]

    def change_for(self, group: str) -> float:
        return float(self.change.get(group, self.change.get("*", 0.0)))


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    moves: tuple[Move, ...] = ()
    vol_scale: float = 1.0  # multiplies every instrument's volatility
    jump_scale: float = 1.0  # multiplies every jump intensity
    stressed: tuple[tuple[float, float], ...] = ()  # [start, end) windows forced into the stressed regime
    pin_calm: bool = False  # outside forced windows, stay calm (no regime switching)


def _ramp(start: float, end: float, change: dict[str, float]) -> Move:
    """A move spread evenly (in log price) from `start` to `end`."""
    return Move(start, end - start, change)


# demo: two quiet minutes' worth of action. A slide from t=10 s to t=70 s (accelerating: a
# third of the fall in the first 25 s, the rest in the next 35 s), alts falling harder than
# majors, then a rebound from t=70 s to t=115 s that recovers most of it. Built so that,
# with the bundled demo book and positions untouched, accounts pass through WARNING,
# CRITICAL and LIQUIDATION and several come back to SAFE.
_DEMO_SLIDE_1 = {"majors": -0.02, "l1": -0.03, "defi": -0.035, "meme": -0.045, "*": -0.035}
_DEMO_SLIDE_2 = {"majors": -0.035, "l1": -0.05, "defi": -0.055, "meme": -0.075, "*": -0.055}
_DEMO_REBOUND = {"majors": 0.05, "l1": 0.075, "defi": 0.083, "meme": 0.11, "*": 0.083}

# crash: a slide from t=4 s, a gap at t=8 s (one step, several percent), then the fall runs on
# to about -25% (majors) by t=45 s, a dead-cat bounce, and a stressed market throughout.
_CRASH_SLIDE = {"majors": -0.03, "l1": -0.035, "defi": -0.04, "meme": -0.045, "*": -0.04}
_CRASH_GAP = {"majors": -0.09, "l1": -0.10, "defi": -0.11, "meme": -0.12, "*": -0.11}
_CRASH_FALL = {"majors": -0.16, "l1": -0.16, "defi": -0.15, "meme": -0.14, "*": -0.15}
_CRASH_BOUNCE = {"majors": 0.03, "l1": 0.03, "defi": 0.025, "meme": 0.02, "*": 0.025}

SCENARIOS: dict[str, Scenario] = {
    "calm": Scenario(
        "calm",
        "low volatility, no scripted moves, no jumps",
        vol_scale=0.5,
        jump_scale=0.0,
        pin_calm=True,
    ),
    "demo": Scenario(
        "demo",
        "a slide over 60 s and a rebound over 45 s: every level is visited within 120 s",
        moves=(
            _ramp(10.0, 35.0, _DEMO_SLIDE_1),
            _ramp(35.0, 70.0, _DEMO_SLIDE_2),
            _ramp(70.0, 115.0, _DEMO_REBOUND),
        ),
        stressed=((10.0, 70.0),),
    ),
    "crash": Scenario(
        "crash",
        "a 20-30% crash from t=4 s with a gap at t=8 s",
        moves=(
            _ramp(4.0, 8.0, _CRASH_SLIDE),
            Move(8.0, 0.0, _CRASH_GAP),  # a gap: lands whole in the step that crosses t=8 s
            _ramp(8.0, 45.0, _CRASH_FALL),
            _ramp(45.0, 70.0, _CRASH_BOUNCE),
        ),
        stressed=((4.0, 180.0),),
    ),
}


class MarketSimulator:
    """Mark prices for `instruments`, advanced by the caller in simulated seconds."""

    def __init__(
        self,
        instruments: list[Instrument],
        config: SimulatorConfig,
        scenario: str | None = None,
        seed: int | None = None,
    ) -> None:
        self.instruments: list[Instrument] = list(instruments)
        if not self.instruments:
            raise InputError("simulator: at least one instrument is required")
        self.symbols: tuple[str, ...] = tuple(i.symbol for i in self.instruments)
        missing = [s for s in self.symbols if s not in config.markets]
        if missing:
            raise InputError(f"simulator.markets: no starting price and volatility for {', '.join(missing)}")
        name = config.scenario if scenario is None else scenario
        if name not in SCENARIOS:
            raise InputError(f"simulator: unknown scenario {name!r} (known: {', '.join(SCENARIOS)})")
        self.scenario: Scenario = SCENARIOS[name]
        self.seed: int = config.seed if seed is None else seed
        self.config = config
        self._rng = np.random.default_rng(self.seed)

        n = len(self.instruments)
        self.groups: tuple[str, ...] = tuple(str(i.group) for i in self.instruments)
        self.group_names: tuple[str, ...] = tuple(dict.fromkeys(self.groups))
        self._group_index = np.array([self.group_names.index(g) for g in self.groups], dtype=np.int64)
        self.start_prices = np.array([config.markets[s].price for s in self.symbols], dtype=np.float64)
        self.volatility = np.array([config.markets[s].volatility for s in self.symbols], dtype=np.float64)
        self._beta = self.volatility / float(np.median(self.volatility))
        rho_m, rho_g = config.market_correlation, config.group_correlation
        self._a = math.sqrt(rho_m)
        self._b = math.sqrt(rho_g - rho_m)
        self._c = math.sqrt(1.0 - rho_g)

        moves = self.scenario.moves
        self._move_start = np.array([m.start for m in moves], dtype=np.float64)
        self._move_duration = np.array([m.duration for m in moves], dtype=np.float64)
        self._move_log = np.array(
            [[math.log1p(m.change_for(g)) for g in self.groups] for m in moves], dtype=np.float64
        ).reshape(len(moves), n)

        self.time: float = 0.0
        self.steps: int = 0
        self._free_regime = 0  # the Markov chain's own state, whatever a scenario forces
        self._random = np.zeros(n)  # X: the random part of the log price
        self._prices = self._compose()

    # ------------------------------------------------------------------ state
    @property
    def prices(self) -> np.ndarray:
        """Current marks, aligned with `instruments` (read-only)."""
        return self._prices

    @property
    def regime(self) -> str:
        """The regime in force from the current time on: "calm" or "stressed"."""
        return REGIMES[self._effective_regime(self.time)].name

    def scripted_offset(self, t: float) -> np.ndarray:
        """The scenario's log-price offset per instrument at simulated time t."""
        if not self._move_start.size:
            return np.zeros(len(self.instruments))
        elapsed = t - self._move_start
        with np.errstate(divide="ignore", invalid="ignore"):
            ramp = np.clip(elapsed / self._move_duration, 0.0, 1.0)
        progress = np.where(self._move_duration > 0, ramp, (elapsed >= 0).astype(np.float64))
        return progress @ self._move_log

    def _effective_regime(self, t: float) -> int:
        if any(lo <= t < hi for lo, hi in self.scenario.stressed):
            return 1
        return 0 if self.scenario.pin_calm else self._free_regime

    def _compose(self) -> np.ndarray:
        log = np.clip(self._random + self.scripted_offset(self.time), -LOG_LIMIT, LOG_LIMIT)
        prices = self.start_prices * np.exp(log)
        prices.flags.writeable = False
        return prices

    # ------------------------------------------------------------------ stepping
    def advance(self, dt: float) -> np.ndarray:
        """Move simulated time forward by dt seconds; return the new marks."""
        dt = float(dt)
        if not (math.isfinite(dt) and dt >= 0):
            raise ValueError(f"advance: dt must be a non-negative finite number of seconds, got {dt!r}")
        if dt == 0:
            return self._prices
        rng = self._rng
        n = len(self.instruments)
        n_groups = len(self.group_names)

        # Regime: the free chain may switch; scenarios force or pin the effective regime.
        u = rng.random()
        if u < -math.expm1(-REGIMES[self._free_regime].leave_rate * dt):
            self._free_regime = 1 - self._free_regime
        t_new = self.time + dt
        reg = REGIMES[self._effective_regime(self.time)]
        scn = self.scenario

        # Fixed draw counts per step (1 uniform, 2 + groups + 2n normals, 1 + n Poisson) keep
        # the stream aligned whatever the state.
        z = rng.standard_normal(2 + n_groups + 2 * n)
        rates = np.empty(n + 1)
        rates[0] = reg.market_jump_rate * scn.jump_scale * dt
        rates[1:] = reg.idio_jump_rate * scn.jump_scale * dt
        counts = rng.poisson(rates).astype(np.float64)

        market, groups = z[0], z[1 : 1 + n_groups]
        idio = z[1 + n_groups : 1 + n_groups + n]
        jump_z, idio_jump_z = z[1 + n_groups + n], z[2 + n_groups + n :]
        shock = self._a * market + self._b * groups[self._group_index] + self._c * idio

        dt_years = dt / SECONDS_PER_YEAR
        sigma = self.volatility * (scn.vol_scale * reg.vol_multiplier)
        diffusion = sigma * math.sqrt(dt_years) * shock - 0.5 * sigma * sigma * dt_years
        k = counts[0]
        market_jump = k * reg.market_jump_mean + math.sqrt(k) * reg.market_jump_sd * jump_z
        idio_jump = np.sqrt(counts[1:]) * reg.idio_jump_sd * idio_jump_z
        self._random = np.clip(self._random + diffusion + self._beta * (market_jump + idio_jump), -LOG_LIMIT, LOG_LIMIT)

        self.time = t_new
        self.steps += 1
        self._prices = self._compose()
        return self._prices

    def price_of(self, symbol: str) -> float:
        return float(self._prices[self.symbols.index(symbol)])

    def symbol_prices(self) -> dict[str, float]:
        return dict(zip(self.symbols, self._prices.tolist(), strict=True))
