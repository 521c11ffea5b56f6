"""Live risk analytics from the guard's own state, for one account and for the book.

Per account (the account detail, console and API): VaR and ES (parametric) at the configured
confidence and horizon ([risk] confidence, horizon_days), the worst ratio across the configured
named scenarios ([risk] scenarios), the probability of touching the liquidation price (and the
LIQUIDATION threshold) within the horizon, and where the ratio is heading ("reaches CRITICAL
in 3.1 h").

For the book and on demand (GuardView.book_risk, stress, scenario_grid, what_if; the API under
/analytics): parametric, historical and Monte Carlo VaR/ES of the whole book, every named
scenario over the book, initial margin under the configured methods and the maintenance
add-ons; ad-hoc stress tests, an account's price x volatility grid, a hypothetical fill.

Volatility is the realised volatility of the marks the guard has seen, or the simulator's
configured volatility where too few marks have been seen yet; correlation from the
instrument groups. Horizons scale by the square root of time from 1 day. Re-valuations
(stress, grid, what-if) include the maintenance add-ons [risk.maintenance] enables, as the
guard's ratio does (cross accounts only), re-evaluated at the shocked marks and volatility.

account_risk and book_risk are cached per guard: a repeated call at the same guard version,
configuration object and book figures (marks, equity, margin, thresholds) returns the stored
result without recomputing (the console refreshes the detail at 4 Hz).
"""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from engine.analytics.barrier import account_touch_probability
from engine.analytics.history import project_ratio
from engine.analytics.inputs import (
    DAYS_PER_YEAR,
    book_exposure,
    correlation_from_groups,
    covariance,
    exposure_matrix,
    position_units,
)
from engine.analytics.lookahead import look_ahead
from engine.analytics.maintenance import volatility_addon
from engine.analytics.margin_methods import initial_margin
from engine.analytics.revalue import Valuation, value_at_marks
from engine.analytics.stress import StressScenario, _position_pnl, instrument_shocks, loss_drivers
from engine.analytics.var import historical_var, monte_carlo_var, parametric_var
from engine.clock import iso
from engine.levels import LEVEL_NAMES, classify
from engine.margin import lookup_brackets, margin_ratio, value_positions
from engine.model import InputError, Side

if TYPE_CHECKING:
    from engine.guard import Guard

SECONDS_PER_DAY = 86_400.0
HISTORICAL_MIN_RETURNS = 30  # and at least 1 / (1 - confidence), so the quantile lies inside the sample
DRIVERS = 3  # losing symbols named per account in a stress result
GRID_MAX = 101  # price moves (and volatility shocks) per scenario grid
GRID_CELLS = 441  # cells per grid (each re-values the account: ~0.25 ms for 10 positions, on the guard's loop)
DEFAULT_PRICE_MOVES = (-0.3, -0.2, -0.1, -0.05, 0.0, 0.05, 0.1, 0.2, 0.3)
DEFAULT_VOL_SHOCKS = (0.0, 0.5, 1.0)


def _num(x: Any) -> float | None:
    x = float(x) + 0.0
    return x if math.isfinite(x) else None


def _level_name(code: int) -> str:
    return LEVEL_NAMES[code] if 0 <= code < len(LEVEL_NAMES) else "UNKNOWN"


def _level_counts(levels: np.ndarray) -> dict[str, int]:
    """Accounts per level (an unknown ratio, level -1, is counted under none)."""
    return {name: int(np.sum(levels == n)) for n, name in enumerate(LEVEL_NAMES)}


def daily_volatility(g: Guard) -> np.ndarray:
    annual = np.asarray(g._inst_vol, dtype=np.float64).copy()
    markets = g.config.simulator.markets
    configured = np.array([markets[i.symbol].volatility if i.symbol in markets else np.nan for i in g.book.instruments])
    annual = np.where(annual > 0, annual, configured)
    return annual / np.sqrt(DAYS_PER_YEAR)


def _annual_volatility(g: Guard) -> np.ndarray:
    return daily_volatility(g) * math.sqrt(DAYS_PER_YEAR)


def _addons(
    g: Guard,
    cross: np.ndarray,
    inst: np.ndarray,
    notional: np.ndarray,
    mm: np.ndarray,
    vol_moves: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per position (on instruments `inst`, valued at `notional` and venue `mm`; `cross`: held in a
    cross account): the maintenance add-ons [risk.maintenance] enables, (volatility, impact),
    None when not enabled. As the guard applies them: cross accounts only (isolated positions
    get 0); the volatility regime read at the instruments' annualised volatility, shocked by
    `vol_moves`."""
    cfg = g.config.risk.maintenance
    book = g.book
    vol = impact = None
    if cfg.volatility is not None:
        annual = _annual_volatility(g)
        if vol_moves is not None:
            annual = annual * (1.0 + vol_moves)
        vol = np.where(cross, np.nan_to_num(volatility_addon(mm, inst, annual, cfg.volatility)), 0.0)
    if cfg.impact:
        from engine.actions.impact import ImpactModel  # the executor's model; imported when used

        model = ImpactModel(taker_fee=0.0)
        depth = np.array([model.depth(i) for i in book.instruments], dtype=np.float64)
        impact = np.where(cross, np.nan_to_num(np.asarray(model.slippage(notional, depth[inst]))), 0.0)
    return vol, impact


def _value(
    g: Guard, moves: np.ndarray, vol_moves: np.ndarray, accounts: np.ndarray | None = None
) -> tuple[np.ndarray, Valuation]:
    """(shocked marks, Valuation) of `accounts` (None: all) with every mark moved by `moves` and
    volatility by `vol_moves` (per instrument). The maintenance margin includes the add-ons
    [risk.maintenance] enables (re-evaluated at the shocked marks and volatility), as the guard's
    ratio does; for linear contracts a volatility shock matters only through them."""
    book = g.book
    marks = book.mark * (1.0 + moves)
    base = value_at_marks(book, marks, accounts=accounts)
    cross = ~book.isolated[book.pos_account[base.positions]]
    inst = book.pos_instrument[base.positions]
    vol, impact = _addons(g, cross, inst, base.notional, base.maintenance_margin, vol_moves)
    if vol is None and impact is None:
        return marks, base
    addon = sum(x for x in (vol, impact) if x is not None)
    return marks, value_at_marks(book, marks, addon, accounts)


def _revalue(g: Guard, scenario: StressScenario, accounts: np.ndarray | None = None) -> tuple[np.ndarray, Valuation]:
    book = g.book
    moves = instrument_shocks(book.instruments, scenario.moves)
    return _value(g, moves, instrument_shocks(book.instruments, scenario.vol_shocks), accounts)


# ---------------------------------------------------------------------------- cache
@dataclass
class _Cache:
    version: int = -1
    config: Any = None
    book_object: Any = None
    accounts: dict[int, tuple[bytes, dict[str, Any]]] = field(default_factory=dict)
    book: tuple[bytes, dict[str, Any]] | None = None


_CACHES: weakref.WeakKeyDictionary[Any, _Cache] = weakref.WeakKeyDictionary()


def _cache(g: Guard) -> _Cache:
    """The guard's cache, emptied when the guard's version, configuration or book object changed
    (an account sync may rebuild the book)."""
    c = _CACHES.get(g)
    if c is None or c.version != g.version or c.config is not g.config or c.book_object is not g.book:
        c = _Cache(g.version, g.config, g.book)  # holds both: their identity cannot be reused while cached
        _CACHES[g] = c
    return c


def _account_fingerprint(g: Guard, a: int) -> bytes:
    """What can change between two guard steps (a fill, a threshold command) for one account."""
    b = g.book
    return np.array(
        [b.equity[a], b.acct_mm[a], b.wallet[a], b.warning[a], b.critical[a], b.liquidation[a], b.acct_pos_count[a]],
        dtype=np.float64,
    ).tobytes()


def _book_fingerprint(g: Guard) -> bytes:
    b = g.book
    return b"".join(
        np.ascontiguousarray(x, dtype=np.float64).tobytes()
        for x in (b.mark, b.equity, b.acct_mm, b.warning, b.critical, b.liquidation)
    )


# ---------------------------------------------------------------------------- one account
def account_risk(g: Guard, a: int) -> dict[str, Any]:
    """The account detail's risk figures, computed once per guard version (see the module doc)."""
    c = _cache(g)
    key = _account_fingerprint(g, a)
    hit = c.accounts.get(a)
    if hit is None or hit[0] != key:
        hit = (key, _account_risk(g, a))
        c.accounts[a] = hit
    return copy.deepcopy(hit[1])


FUNDING_INTERVAL_HOURS = 8.0  # Binance USD-M's usual funding interval


def funding_per_hour(g: Guard, a: int) -> float | None:
    """Funding the account pays per hour at the live feed's last funding rates (a long pays a
    positive rate; negative: received), or None where no feed gives rates for what it holds.
    The ratio history of the last minutes carries no funding payment (every 8 h), so the
    projection subtracts this drain from the trend (engine.analytics.history.project_ratio)."""
    rates = getattr(g.live_feed, "funding_rate", None)
    book = g.book
    pos = book.account_positions(a)
    if rates is None or pos.size == 0:
        return None
    held = book.pos_instrument[pos]
    rate = np.asarray(rates, dtype=np.float64)[held]
    open_ = book.pos_qty[pos] != 0
    if np.isnan(rate[open_]).any():
        return None
    units = book.pos_qty[pos] * book.contract_size[held]
    return float(np.sum(np.where(open_, units * book.mark[held] * rate, 0.0)) / FUNDING_INTERVAL_HOURS)


def _account_risk(g: Guard, a: int) -> dict[str, Any]:
    book = g.book
    cfg = g.config.risk
    confidence, horizon = cfg.confidence, cfg.horizon_days
    vol = daily_volatility(g)
    pos = book.account_positions(a)
    signed = position_units(book)[pos] * book.mark[book.pos_instrument[pos]]
    exposure = exposure_matrix(np.zeros(pos.size, dtype=np.int64), book.pos_instrument[pos], signed, 1, vol.size)
    figures = _var_es(g, exposure, vol)  # as the book's (method_notes there)
    worst, scenario = None, None
    only = np.array([a])
    for s in cfg.scenarios:  # only this account's positions are re-valued
        r = float(_revalue(g, s, only)[1].ratio[0])
        if np.isfinite(r) and (worst is None or r < worst):
            worst, scenario = r, s.name
    touch_venue = account_touch_probability(book, a, vol, horizon, "venue")  # this account's positions only
    touch_liq = account_touch_probability(book, a, vol, horizon, "liquidation")
    funding = funding_per_hour(g, a)
    history = list(g.history[a])[-60:]
    heading: dict[str, float | None] = {}
    if len(history) >= 3:
        times = np.array([t for t, _ in history])
        ratios = np.array([[r for _, r in history]])
        thresholds = {
            "WARNING": book.warning[a : a + 1],
            "CRITICAL": book.critical[a : a + 1],
            "LIQUIDATION": book.liquidation[a : a + 1],
        }
        projection = project_ratio(
            times, ratios, book.acct_mm[a : a + 1], funding_per_hour=funding or 0.0, thresholds=thresholds
        )
        heading = projection.hours_to_threshold(0)
    return {
        "confidence": confidence,
        "horizon_days": horizon,
        "var_parametric": figures["var"]["parametric"],
        "es_parametric": figures["es"]["parametric"],
        "var_monte_carlo": figures["var"]["monte_carlo"],
        "es_monte_carlo": figures["es"]["monte_carlo"],
        "var_historical": figures["var"]["historical"],  # null until the price window holds enough returns
        "es_historical": figures["es"]["historical"],
        "stress_worst_ratio": worst,
        "stress_worst_scenario": scenario,
        "touch_liquidation_price_prob": _num(touch_venue),
        "touch_liquidation_threshold_prob": _num(touch_liq),
        "hours_to": heading,
        "funding_per_hour": funding,  # paid (negative: received) at the feed's last funding rates
    }


# ---------------------------------------------------------------------------- the book
def tick_returns(g: Guard) -> tuple[np.ndarray, float]:
    """(T x n simple returns between consecutive marks of the guard's price window, seconds
    between them). The window holds the book's marks after each guard step that applied prices,
    taken as one feed tick (`tick_interval`) apart, as the guard's own realised volatility does."""
    window = list(g._price_window)
    dt = float(g.feed.tick_interval)
    if len(window) < 2:
        return np.zeros((0, len(g.book.instruments))), dt
    p = np.array(window, dtype=np.float64)
    p = np.where(p > 0, p, np.nan)
    return p[1:] / p[:-1] - 1.0, dt


def historical_min_returns(confidence: float) -> int:
    return max(HISTORICAL_MIN_RETURNS, math.ceil(1.0 / (1.0 - confidence) - 1e-9))


def _var_es(g: Guard, exposure: np.ndarray, vol: np.ndarray) -> dict[str, Any]:
    """VaR and ES of one exposure row (an account's, or the book's) by the three methods, at
    `[risk]` confidence and horizon: {"var": {method: amount}, "es": {...}, "historical_note"}.
    Historical: the guard's tick returns scaled to a day; null until the window is long enough."""
    cfg = g.config.risk
    conf, h = cfg.confidence, cfg.horizon_days
    cov = covariance(vol, correlation_from_groups(g.book.instruments))  # a held instrument without one: null
    par = parametric_var(exposure, cov, conf, h)
    mc = monte_carlo_var(exposure, cov, conf, h, cfg.mc_paths, cfg.seed, cfg.distribution)
    returns, dt = tick_returns(g)
    need = historical_min_returns(conf)
    scale = math.sqrt(SECONDS_PER_DAY / dt)
    hist_var = hist_es = None
    if returns.shape[0] >= need:
        hist = historical_var(exposure, returns * scale, conf, h)
        hist_var, hist_es = _num(hist.var[0]), _num(hist.es[0])
        note = (
            f"{returns.shape[0]} returns between the guard's last marks, one feed tick ({dt:g} s) apart "
            "(not daily data): "
            f"each scaled to 1 day by sqrt(86400 / {dt:g}) = {scale:.4g}, then by sqrt(horizon_days) "
            "(square root of time; assumes independent returns)"
        )
    else:
        note = (
            f"not computed: {returns.shape[0]} returns in the guard's price window, "
            f"at least {need} needed at confidence {conf:g}"
        )
    return {
        "var": {"parametric": _num(par.var[0]), "historical": hist_var, "monte_carlo": _num(mc.var[0])},
        "es": {"parametric": _num(par.es[0]), "historical": hist_es, "monte_carlo": _num(mc.es[0])},
        "historical_note": note,
    }


def book_risk(g: Guard) -> dict[str, Any]:
    """Book-level figures (engine.view.GuardView.book_risk), computed once per guard version."""
    c = _cache(g)
    key = _book_fingerprint(g)
    if c.book is None or c.book[0] != key:
        c.book = (key, _book_risk(g))
    return copy.deepcopy(c.book[1])


def _book_risk(g: Guard) -> dict[str, Any]:
    book = g.book
    cfg = g.config.risk
    conf, h = cfg.confidence, cfg.horizon_days
    vol = daily_volatility(g)
    figures = _var_es(g, book_exposure(book), vol)
    notes = {
        "parametric": "normal, zero mean: z * sqrt(e' C e) * sqrt(horizon_days); e = net notional per instrument, "
        "C = daily covariance from the guard's realised volatility (the simulator's where too few marks "
        "have been seen) and the instrument-group correlations",
        "monte_carlo": f"{cfg.mc_paths} {cfg.distribution} paths, seed {cfg.seed}, the same daily covariance "
        "scaled to the horizon (variance * horizon_days)",
        "historical": figures["historical_note"],
        "unknown": "null where an input is missing (a held instrument without volatility, history or mark)",
    }

    scenarios = []
    for s in cfg.scenarios:
        marks, v = _revalue(g, s)
        pnl = _position_pnl(book, marks, v.positions)
        ratio = v.ratio
        known = np.flatnonzero(np.isfinite(ratio))
        worst = int(known[np.argmin(ratio[known])]) if known.size else None
        scenarios.append(
            {
                "name": s.name,
                "description": s.description,
                "total_pnl": _num(pnl.sum()),
                "worst_account": book.info[worst].id if worst is not None else None,
                "worst_ratio": _num(ratio[worst]) if worst is not None else None,
                "levels_after": _level_counts(v.level),
            }
        )

    im = initial_margin(book, cfg.margin, vol)
    cross = ~book.isolated[book.pos_account]
    by_vol, by_impact = _addons(g, cross, book.pos_instrument, book.notional, book.maintenance_margin)
    return {
        "version": g.version,
        "time": iso(g.clock.now()),
        "confidence": conf,
        "horizon_days": h,
        "var": figures["var"],
        "es": figures["es"],
        "method_notes": notes,
        "scenarios": scenarios,
        "margin": {
            "methods": {name: _num(amount.sum()) for name, amount in im.by_method.items()},
            "maintenance_addons": {
                "volatility": _num(by_vol.sum()) if by_vol is not None else None,
                "impact": _num(by_impact.sum()) if by_impact is not None else None,
            },
        },
    }


# ---------------------------------------------------------------------------- on demand
def _scenario(g: Guard, scenario: dict[str, Any] | str) -> StressScenario:
    """A configured scenario by name, or an ad-hoc one validated whole (keys must name something)."""
    configured = g.config.risk.scenarios
    if isinstance(scenario, str):
        for s in configured:
            if s.name == scenario:
                return s
        names = ", ".join(repr(s.name) for s in configured) or "none"
        raise InputError(f"scenario: unknown scenario {scenario!r} (configured: {names})")
    if not isinstance(scenario, dict):
        raise InputError(f"scenario: a scenario name or an object with moves/vol_shocks, got {type(scenario).__name__}")
    try:
        s = StressScenario.model_validate({"name": "ad hoc", **scenario})
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err.get("loc", ()))
            msg = "unknown field" if err.get("type") == "extra_forbidden" else err.get("msg", "invalid")
            parts.append(f"scenario.{where}: {str(msg).removeprefix('Value error, ')}" if where else str(msg))
        raise InputError("; ".join(parts)) from None
    book = g.book
    known = {"*"} | {x for i in book.instruments for x in (i.symbol, i.underlying, i.group) if x is not None}
    for name, shocks in (("moves", s.moves), ("vol_shocks", s.vol_shocks)):
        unknown = sorted(k for k in shocks if k not in known)
        if unknown:
            raise InputError(
                f'scenario.{name}: unknown key {unknown[0]!r} (use a symbol, an underlying, a group or "*")'
            )
    return s


def stress(g: Guard, scenario: dict[str, Any] | str, top: int = 20) -> dict[str, Any]:
    """One scenario over the whole book (engine.view.GuardView.stress)."""
    if isinstance(top, bool) or not isinstance(top, int | np.integer) or top < 0:
        raise InputError(f"top: a whole number >= 0, got {top!r}")
    s = _scenario(g, scenario)
    book = g.book
    zero = StressScenario(name="now")
    _, before = _revalue(g, zero)  # the same valuation at today's marks: the book's figures
    marks, after = _revalue(g, s)
    pnl = _position_pnl(book, marks, after.positions)
    drivers = loss_drivers(book.pos_account, pnl, book.n_accounts, DRIVERS)
    order = np.argsort(np.nan_to_num(after.ratio, nan=np.inf), kind="stable")[: int(top)]
    symbols = [i.symbol for i in book.instruments]
    accounts = []
    for a in order.tolist():
        accounts.append(
            {
                "account": book.info[a].id,
                "equity_before": _num(before.equity[a]),
                "equity_after": _num(after.equity[a]),
                "ratio_before": _num(before.ratio[a]),
                "ratio_after": _num(after.ratio[a]),
                "level_before": _level_name(int(before.level[a])),
                "level_after": _level_name(int(after.level[a])),
                "drivers": [symbols[int(book.pos_instrument[p])] for p in drivers[a].tolist() if p >= 0],
            }
        )
    return {
        "scenario": {"name": s.name, "description": s.description, "moves": s.moves, "vol_shocks": s.vol_shocks},
        "total_pnl": _num(pnl.sum()),
        "levels_after": _level_counts(after.level),
        "accounts": accounts,
    }


def _fractions(name: str, values: Sequence[float] | None, default: Sequence[float]) -> list[float]:
    if values is None:
        return list(default)
    try:
        out = [float(x) for x in values]
    except (TypeError, ValueError):
        raise InputError(f"{name}: a list of numbers, got {values!r}") from None
    if not out:
        raise InputError(f"{name}: give at least one value")
    if len(out) > GRID_MAX:
        raise InputError(f"{name}: at most {GRID_MAX} values, got {len(out)}")
    for x in out:
        if not (math.isfinite(x) and x > -1.0):
            raise InputError(f"{name}: each must be a finite fraction above -1, got {x!r}")
    return out


def scenario_grid(
    g: Guard, account_id: str, price_moves: list[float] | None, vol_shocks: list[float] | None
) -> dict[str, Any]:
    """One account under every price move x volatility shock (engine.view.GuardView.scenario_grid):
    every instrument moved alike, the account's positions re-valued once per cell."""
    a = g.account_index(account_id)  # KeyError naming it
    pm = _fractions("price_moves", price_moves, DEFAULT_PRICE_MOVES)
    vs = _fractions("vol_shocks", vol_shocks, DEFAULT_VOL_SHOCKS)
    if len(pm) * len(vs) > GRID_CELLS:
        raise InputError(
            f"price_moves x vol_shocks: at most {GRID_CELLS} cells, got {len(pm)} x {len(vs)} = {len(pm) * len(vs)}"
        )
    book = g.book
    n = len(book.instruments)
    only = np.array([a])
    pnl, equity, ratio, level = [], [], [], []
    for move in pm:
        row: list[tuple[float | None, float | None, float | None, str]] = []
        for shock in vs:
            marks, v = _value(g, np.full(n, move), np.full(n, shock), only)
            row.append(
                (
                    _num(_position_pnl(book, marks, v.positions).sum()),
                    _num(v.equity[0]),
                    _num(v.ratio[0]),
                    _level_name(int(v.level[0])),
                )
            )
        pnl.append([c[0] for c in row])
        equity.append([c[1] for c in row])
        ratio.append([c[2] for c in row])
        level.append([c[3] for c in row])
    return {
        "account": account_id,
        "price_moves": pm,
        "vol_shocks": vs,
        "pnl": pnl,
        "equity": equity,
        "ratio": ratio,
        "level": level,
    }


def _account_addon(g: Guard, a: int, change: tuple[int, float] | None = None) -> float:
    """The account's maintenance add-ons at the marks, its positions as held or with instrument
    i's position set to `qty` contracts (change = (i, qty)); 0 when none is enabled."""
    book = g.book
    pos = book.account_positions(a)
    inst, qty = book.pos_instrument[pos], book.pos_qty[pos].copy()
    if change is not None:
        i, q = change
        held = np.flatnonzero(inst == i)
        if held.size:
            qty[held[0]] = q
        else:
            inst, qty = np.append(inst, i), np.append(qty, q)
    cs, marks = book.contract_size[inst], book.mark[inst]
    notional = np.abs(qty * cs) * marks
    v = value_positions(qty, marks, cs, marks, lookup_brackets(notional, inst, book.table), book.table)
    cross = np.full(inst.size, not book.isolated[a])
    vol, impact = _addons(g, cross, inst, v.notional, v.maintenance_margin)
    return float(sum(x.sum() for x in (vol, impact) if x is not None))


def what_if(g: Guard, account_id: str, symbol: str, side: str, qty: float, price: float | None) -> dict[str, Any]:
    """The account after a hypothetical fill, at `price` or the mark (engine.view.GuardView.what_if).
    With maintenance add-ons enabled, the maintenance margins and ratios include them (cross
    accounts), re-evaluated for the position after the fill."""
    a = g.account_index(account_id)  # KeyError naming it
    book = g.book
    if symbol not in book.symbol_index:
        raise InputError(f"symbol: unknown symbol {symbol!r}")
    try:
        side_name = Side(side).value
    except ValueError:
        raise InputError(f"side: must be 'buy' or 'sell', got {side!r}") from None
    try:
        q = float(qty)
    except (TypeError, ValueError):
        raise InputError(f"qty: not a number ({qty!r})") from None
    if not (math.isfinite(q) and q > 0):
        raise InputError(f"qty: must be positive and finite, got {qty!r}")
    if price is None:
        mark = float(book.mark[book.symbol_index[symbol]])
        if not (math.isfinite(mark) and mark > 0):
            raise InputError(f"price: no mark for {symbol}; give a price")
        fill = mark
    else:
        try:
            fill = float(price)
        except (TypeError, ValueError):
            raise InputError(f"price: not a number ({price!r})") from None
        if not (math.isfinite(fill) and fill > 0):
            raise InputError(f"price: must be positive and finite, got {price!r}")
    r = look_ahead(book, account_id, symbol, side_name, q, fill)
    mm_before, mm_after = r.maintenance_margin_before, r.maintenance_margin_after
    ratio_before, ratio_after = r.ratio_before, r.ratio_after
    level_before, level_after = r.level_before, r.level_after
    cfg = g.config.risk.maintenance
    if (cfg.volatility is not None or cfg.impact) and not book.isolated[a]:
        # the MM the guard's ratio divides by: the venue's plus the enabled add-ons, before and after
        i = book.symbol_index[symbol]
        mm_before += _account_addon(g, a)
        mm_after += _account_addon(g, a, (i, r.qty_after))
        ratios = margin_ratio(np.array([r.equity_before, r.equity_after]), np.array([mm_before, mm_after]))
        levels = classify(ratios, book.warning[a], book.critical[a], book.liquidation[a])
        ratio_before, ratio_after = float(ratios[0]), float(ratios[1])
        level_before = "UNKNOWN" if math.isnan(ratio_before) else _level_name(int(levels[0]))
        level_after = "UNKNOWN" if math.isnan(ratio_after) else _level_name(int(levels[1]))
    return {
        "account": account_id,
        "symbol": symbol,
        "side": side_name,
        "qty": q,
        "price": fill,
        "qty_before": _num(r.qty_before),
        "qty_after": _num(r.qty_after),
        "equity_before": _num(r.equity_before),
        "equity_after": _num(r.equity_after),
        "maintenance_margin_before": _num(mm_before),
        "maintenance_margin_after": _num(mm_after),
        "ratio_before": _num(ratio_before),
        "ratio_after": _num(ratio_after),
        "level_before": level_before,
        "level_after": level_after,
        "realized_pnl": _num(r.realized_pnl),
    }
