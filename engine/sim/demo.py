"""The demo book: accounts generated from the `[[simulator.accounts]]` templates and a seed.

Each template gives a wallet, a leverage (gross notional / wallet at the starting marks), a
number of positions and a long bias; the positions themselves are drawn from the seed:

* instruments are chosen without replacement (one position per instrument, one-way mode),
  favouring liquid ones (weight ~ sqrt(average daily volume)); a template asking for more
  positions than there are instruments gets one per instrument;
* the gross notional is spread over them with the same weights, jittered;
* exactly round(long_bias * positions) of them are long, the rest short;
* sizes are rounded to the lot size and are at least the minimum notional;
* entry prices lie within about 1% of the starting marks, rounded to the tick size;
* isolated-mode accounts post notional / leverage of isolated margin per position;
* about one account in four flags one position `liquidate_last`, about one in three holds
  a few open orders (resting adds, and reduce-only take-profits);
* `opened` lies between a minute and a few weeks before `now`.

The same config, instruments, seed and `now` give the same accounts.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np

from engine.model import Account, InputError, Instrument, OpenOrder, Position, Side
from engine.sim.config import SimAccount, SimulatorConfig

# Deterministic default for `opened` timestamps, so the book is reproducible without a clock.
REFERENCE_TIME = datetime(2025, 1, 1, tzinfo=UTC)
_STREAM = 0xDE30  # keeps the demo book's random stream apart from the market's


def round_to(value: float, step: float, mode: str = "nearest") -> float:
    """`value` rounded to a multiple of `step` (unchanged if step is 0), as a clean float."""
    if step <= 0:
        return float(value)
    q = value / step
    n = math.ceil(q - 1e-9) if mode == "up" else math.floor(q + 1e-9) if mode == "down" else round(q)
    return float(Decimal(repr(step)) * n)


def _qty(notional: float, price: float, inst: Instrument) -> float:
    """Contracts for a notional: rounded to the lot size, at least the minimum notional (and one lot)."""
    unit = price * inst.contract_size
    qty = round_to(notional / unit, inst.lot_size)
    floor_qty = max(inst.min_notional / unit, inst.lot_size)
    if qty < floor_qty or qty <= 0:
        qty = round_to(max(floor_qty, 1e-12), inst.lot_size, "up") if inst.lot_size else max(floor_qty, 1e-12)
    return qty


def _price(value: float, inst: Instrument) -> float:
    p = round_to(value, inst.tick_size)
    return p if p > 0 else max(value, inst.tick_size or value)


def demo_accounts(
    config: SimulatorConfig,
    instruments: list[Instrument],
    seed: int | None = None,
    now: datetime | None = None,
) -> list[Account]:
    """Build the demo book from `config.accounts`; deterministic from the seed (default config.seed)."""
    instruments = list(instruments)
    if not instruments:
        raise InputError("demo accounts: at least one instrument is required")
    missing = [i.symbol for i in instruments if i.symbol not in config.markets]
    if missing:
        raise InputError(f"simulator.markets: no starting price for {', '.join(missing)}")
    rng = np.random.default_rng([config.seed if seed is None else seed, _STREAM])
    now = now or REFERENCE_TIME
    marks = np.array([config.markets[i.symbol].price for i in instruments])
    liquidity = np.array([i.avg_daily_volume or 1e8 for i in instruments])
    weight = np.sqrt(liquidity / liquidity.max())
    return [_account(t, instruments, marks, weight, rng, now) for t in config.accounts]


def _account(
    t: SimAccount,
    instruments: list[Instrument],
    marks: np.ndarray,
    weight: np.ndarray,
    rng: np.random.Generator,
    now: datetime,
) -> Account:
    n_inst = len(instruments)
    k = min(t.positions, n_inst)
    chosen = rng.choice(n_inst, size=k, replace=False, p=weight / weight.sum())
    share = weight[chosen] * rng.lognormal(0.0, 0.25, size=k)
    notional = t.leverage * t.wallet_balance * share / share.sum()
    n_long = round(t.long_bias * k)
    side = np.where(rng.permutation(k) < n_long, 1.0, -1.0)
    entry_jitter = rng.normal(0.0, 0.004, size=k)
    age = np.clip(rng.exponential(4 * 86400.0, size=k), 60.0, 30 * 86400.0)
    flag_last = int(rng.integers(k)) if rng.random() < 0.25 and k > 1 else -1

    positions = []
    for j in range(k):
        inst = instruments[int(chosen[j])]
        mark = float(marks[chosen[j]])
        entry = _price(mark * math.exp(float(entry_jitter[j])), inst)
        qty = _qty(float(notional[j]), mark, inst)
        isolated = None
        if t.margin_mode == "isolated":
            isolated = round(qty * inst.contract_size * entry / t.leverage, 2)
        positions.append(
            Position(
                symbol=inst.symbol,
                qty=float(side[j]) * qty,
                entry_price=entry,
                opened=(now - timedelta(seconds=int(age[j]))),
                isolated_margin=isolated,
                liquidate_last=(j == flag_last),
            )
        )

    orders: list[OpenOrder] = []
    if rng.random() < 0.35:
        for j in rng.choice(k, size=min(k, int(rng.integers(1, 4))), replace=False):
            pos, inst = positions[int(j)], instruments[int(chosen[j])]
            mark = float(marks[chosen[j]])
            long = pos.qty > 0
            if rng.random() < 0.5:
                # A resting add: buy below the mark on a long, sell above on a short.
                away = float(rng.uniform(0.01, 0.03))
                price = mark * (1 - away if long else 1 + away)
                frac, reduce_only = float(rng.uniform(0.1, 0.3)), False
                side_ = Side.BUY if long else Side.SELL
            else:
                # A reduce-only take-profit on the favourable side.
                away = float(rng.uniform(0.02, 0.05))
                price = mark * (1 + away if long else 1 - away)
                frac, reduce_only = float(rng.uniform(0.25, 0.5)), True
                side_ = Side.SELL if long else Side.BUY
            orders.append(
                OpenOrder(
                    symbol=inst.symbol,
                    side=side_,
                    qty=_qty(abs(pos.qty) * frac * mark * inst.contract_size, mark, inst),
                    price=_price(price, inst),
                    reduce_only=reduce_only,
                )
            )

    return Account(
        id=t.id,
        name=t.name,
        desk=t.desk,
        strategy=t.strategy,
        risk_class=t.risk_class,
        wallet_balance=t.wallet_balance,
        margin_mode=t.margin_mode,
        positions=positions,
        open_orders=orders,
    )
