"""The book: instruments, accounts and positions as struct-of-arrays, valued at mark.

Positions are stored grouped by account (contiguous), with an instrument -> positions index
so a tick on one instrument re-values only the positions holding it and the accounts they
belong to. Every result array is kept up to date by `revalue()` (full, vectorised) or
`apply_tick()` (incremental). Nothing here loops over positions in Python.

Incremental ticks add per-account deltas; a full `revalue()` recomputes every sum from the
positions, and the two agree to rounding (a property test holds them to 1e-9 relative).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from engine import margin
from engine.levels import Thresholds, classify
from engine.model import Account, InputError, Instrument, Side, check_price


def ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + c) for each (s, c), without a Python loop."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    nz = counts > 0
    starts, counts = np.asarray(starts, dtype=np.int64)[nz], counts[nz]
    offsets = np.cumsum(counts) - counts
    return np.repeat(starts - offsets, counts) + np.arange(total, dtype=np.int64)


@dataclass(frozen=True)
class AccountInfo:
    """Descriptive fields of an account (not on the hot path)."""

    id: str
    name: str
    desk: str
    strategy: str
    risk_class: str
    margin_mode: str


class Book:
    def __init__(
        self,
        instruments: Iterable[Instrument],
        accounts: Iterable[Account],
        thresholds: Thresholds | None = None,
    ) -> None:
        self.instruments: list[Instrument] = list(instruments)
        self.symbol_index: dict[str, int] = {}
        for n, inst in enumerate(self.instruments):
            if inst.symbol in self.symbol_index:
                raise InputError(f"instrument {inst.symbol}: listed twice")
            self.symbol_index[inst.symbol] = n
        accounts = list(accounts)
        self.account_index: dict[str, int] = {}
        for n, acct in enumerate(accounts):
            if acct.id in self.account_index:
                raise InputError(f"account {acct.id}: duplicate account id")
            self.account_index[acct.id] = n
            for k, pos in enumerate(acct.positions):
                if pos.symbol not in self.symbol_index:
                    raise InputError(f"account {acct.id} position {k}: unknown symbol {pos.symbol!r}")
            for k, order in enumerate(acct.open_orders):
                if order.symbol not in self.symbol_index:
                    raise InputError(f"account {acct.id} open order {k}: unknown symbol {order.symbol!r}")
        self.info = [
            AccountInfo(a.id, a.name or a.id, a.desk, a.strategy, a.risk_class, a.margin_mode) for a in accounts
        ]
        self.table = margin.BracketTable.from_instruments(self.instruments)
        n_inst = len(self.instruments)
        self.contract_size = np.array([i.contract_size for i in self.instruments], dtype=np.float64)
        self.mark = np.full(n_inst, np.nan)
        self.mark_time = np.full(n_inst, np.nan)  # receive time, seconds since the epoch
        self.n_accounts = len(accounts)
        self.wallet = np.array([a.wallet_balance for a in accounts], dtype=np.float64)
        self.isolated = np.array([a.margin_mode == "isolated" for a in accounts], dtype=bool)
        t = thresholds or Thresholds()
        self.warning = np.full(self.n_accounts, t.warning)
        self.critical = np.full(self.n_accounts, t.critical)
        self.liquidation = np.full(self.n_accounts, t.liquidation)
        self._load_positions(accounts)
        self._load_orders(accounts)

    # ------------------------------------------------------------------ structure
    def _load_positions(self, accounts: list[Account]) -> None:
        rows = [(a, p) for a, acct in enumerate(accounts) for p in acct.positions]
        n = len(rows)
        self.pos_account = np.fromiter((a for a, _ in rows), dtype=np.int64, count=n)
        self.pos_instrument = np.fromiter((self.symbol_index[p.symbol] for _, p in rows), dtype=np.int64, count=n)
        self.pos_qty = np.fromiter((p.qty for _, p in rows), dtype=np.float64, count=n)
        self.pos_entry = np.fromiter((p.entry_price for _, p in rows), dtype=np.float64, count=n)
        self.pos_isolated_margin = np.fromiter(
            (np.nan if p.isolated_margin is None else p.isolated_margin for _, p in rows), dtype=np.float64, count=n
        )
        self.pos_liquidate_last = np.fromiter((p.liquidate_last for _, p in rows), dtype=bool, count=n)
        self.pos_opened = [p.opened for _, p in rows]
        self._index_positions()

    def _index_positions(self) -> None:
        """(Re)build the account segments, the instrument index and the cached brackets."""
        n = self.pos_qty.size
        counts = np.bincount(self.pos_account, minlength=self.n_accounts)
        self.acct_pos_start = np.cumsum(counts) - counts
        self.acct_pos_count = counts
        self._nonempty = np.flatnonzero(counts > 0)
        self._seg_starts = self.acct_pos_start[self._nonempty]
        order = np.argsort(self.pos_instrument, kind="stable")
        self.inst_positions = order
        icounts = np.bincount(self.pos_instrument, minlength=len(self.instruments))
        self.inst_pos_start = np.concatenate([[0], np.cumsum(icounts)])
        # Per instrument: the distinct accounts holding it, and for each of its positions the
        # local index of its account in that list (so deltas reduce with one bincount).
        self.inst_accounts: list[np.ndarray] = []
        self.inst_local: list[np.ndarray] = []
        for i in range(len(self.instruments)):
            pos = order[self.inst_pos_start[i] : self.inst_pos_start[i + 1]]
            accts, local = np.unique(self.pos_account[pos], return_inverse=True)
            self.inst_accounts.append(accts)
            self.inst_local.append(local)
        self.pos_bracket = self.table.start[self.pos_instrument].copy()
        self.notional = np.zeros(n)
        self.unrealized_pnl = np.zeros(n)
        self.maintenance_margin = np.zeros(n)
        self.initial_margin = np.zeros(n)
        z = np.zeros(self.n_accounts)
        self.acct_upnl, self.acct_mm, self.acct_im, self.acct_notional = z.copy(), z.copy(), z.copy(), z.copy()
        self.equity = self.wallet.copy()
        self.ratio = np.full(self.n_accounts, np.inf)
        self.level = np.zeros(self.n_accounts, dtype=np.int8)
        # Start from the valued state at the current marks (NaN, i.e. unknown, where unpriced), so
        # a first apply_tick never counts an unpriced position's margin as 0.
        self.revalue()

    def _load_orders(self, accounts: list[Account]) -> None:
        rows = [(a, o) for a, acct in enumerate(accounts) for o in acct.open_orders]
        n = len(rows)
        self.ord_account = np.fromiter((a for a, _ in rows), dtype=np.int64, count=n)
        self.ord_instrument = np.fromiter((self.symbol_index[o.symbol] for _, o in rows), dtype=np.int64, count=n)
        self.ord_side = np.fromiter((1.0 if o.side == Side.BUY else -1.0 for _, o in rows), dtype=np.float64, count=n)
        self.ord_qty = np.fromiter((o.qty for _, o in rows), dtype=np.float64, count=n)
        self.ord_price = np.fromiter((o.price for _, o in rows), dtype=np.float64, count=n)
        self.ord_reduce_only = np.fromiter((o.reduce_only for _, o in rows), dtype=bool, count=n)

    # ------------------------------------------------------------------ prices
    def set_prices(self, prices: Mapping[str, float], received: float) -> np.ndarray:
        """Set mark prices by symbol; all are checked before any is applied.

        Returns the instrument indices that were set. Call `revalue()` afterwards (or use
        `apply_tick` for one instrument).
        """
        idx = []
        values = []
        for symbol, price in prices.items():
            if symbol not in self.symbol_index:
                raise InputError(f"price for unknown symbol {symbol!r}")
            values.append(check_price(symbol, price))
            idx.append(self.symbol_index[symbol])
        ids = np.asarray(idx, dtype=np.int64)
        self.mark[ids] = values
        self.mark_time[ids] = received
        return ids

    def set_marks(self, instruments: np.ndarray, prices: np.ndarray, received: float) -> None:
        """Vectorised form of `set_prices` for feeds that already hold instrument indices."""
        prices = np.asarray(prices, dtype=np.float64)
        bad = ~(np.isfinite(prices) & (prices > 0))
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            symbol = self.instruments[int(instruments[k])].symbol
            raise InputError(f"price for {symbol}: must be positive and finite, got {prices[k]!r}")
        self.mark[instruments] = prices
        self.mark_time[instruments] = received

    # ------------------------------------------------------------------ valuation
    def revalue(self) -> None:
        """Full vectorised revaluation of every position and account."""
        pi = self.pos_instrument
        v = margin.value_positions(
            self.pos_qty, self.pos_entry, self.contract_size[pi], self.mark[pi], self.pos_bracket, self.table
        )
        self.notional, self.unrealized_pnl = v.notional, v.unrealized_pnl
        self.maintenance_margin, self.initial_margin, self.pos_bracket = (
            v.maintenance_margin,
            v.initial_margin,
            v.bracket,
        )
        seg = (self._seg_starts, self._nonempty, self.n_accounts)
        self.acct_upnl = margin.segment_sum(v.unrealized_pnl, *seg)
        self.acct_mm = margin.segment_sum(v.maintenance_margin, *seg)
        self.acct_im = margin.segment_sum(v.initial_margin, *seg)
        self.acct_notional = margin.segment_sum(v.notional, *seg)
        self._finish_accounts(slice(None))

    def apply_tick(self, instrument: int, price: float, received: float) -> np.ndarray:
        """Set one instrument's mark and re-value only what it touches.

        Returns the indices of the accounts whose ratio and level were updated.
        """
        if not (math.isfinite(price) and price > 0):
            raise InputError(
                f"price for {self.instruments[instrument].symbol}: must be positive and finite, got {price!r}"
            )
        self.mark[instrument] = price
        self.mark_time[instrument] = received
        pos = self.inst_positions[self.inst_pos_start[instrument] : self.inst_pos_start[instrument + 1]]
        accts = self.inst_accounts[instrument]
        if not pos.size:
            return accts
        local = self.inst_local[instrument]
        v = margin.value_positions(
            self.pos_qty[pos],
            self.pos_entry[pos],
            self.contract_size[instrument],
            price,
            self.pos_bracket[pos],
            self.table,
        )
        n = accts.size
        for old, new, total in (
            (self.unrealized_pnl, v.unrealized_pnl, self.acct_upnl),
            (self.maintenance_margin, v.maintenance_margin, self.acct_mm),
            (self.initial_margin, v.initial_margin, self.acct_im),
            (self.notional, v.notional, self.acct_notional),
        ):
            delta = new - old[pos]
            # A NaN on either side (first price, or no max leverage) poisons a delta: recompute those sums.
            total[accts] += np.bincount(local, weights=delta, minlength=n)
            old[pos] = new
        self.pos_bracket[pos] = v.bracket
        if np.isnan(self.acct_upnl[accts]).any() or np.isnan(self.acct_im[accts]).any():
            self._resum(accts)
        self._finish_accounts(accts)
        return accts

    def _resum(self, accts: np.ndarray) -> None:
        """Exact sums for some accounts from their positions."""
        pos = ranges(self.acct_pos_start[accts], self.acct_pos_count[accts])
        nonempty = self.acct_pos_count[accts] > 0
        starts = (np.cumsum(self.acct_pos_count[accts]) - self.acct_pos_count[accts])[nonempty]
        for src, dst in (
            (self.unrealized_pnl, self.acct_upnl),
            (self.maintenance_margin, self.acct_mm),
            (self.initial_margin, self.acct_im),
            (self.notional, self.acct_notional),
        ):
            sums = np.zeros(accts.size)
            if pos.size:
                sums[nonempty] = np.add.reduceat(src[pos], starts)
            dst[accts] = sums

    def _finish_accounts(self, accts: np.ndarray | slice) -> None:
        self.equity[accts] = self.wallet[accts] + self.acct_upnl[accts]
        ratio = margin.margin_ratio(self.equity[accts], self.acct_mm[accts])
        self.ratio[accts] = ratio
        if self.isolated.any():
            self._isolated_ratios(accts)
        self.level[accts] = classify(
            self.ratio[accts], self.warning[accts], self.critical[accts], self.liquidation[accts]
        )
        # An unpriced position leaves the ratio unknown: level -1 (shown as "—"), never an action.
        unknown = np.isnan(self.ratio[accts])
        if unknown.any():
            lv = self.level[accts]
            lv[unknown] = -1
            self.level[accts] = lv

    def _isolated_ratios(self, accts: np.ndarray | slice) -> None:
        """In an isolated-mode account each position has its own ratio; the account's is the lowest."""
        ids = np.arange(self.n_accounts)[accts]
        ids = ids[self.isolated[ids] & (self.acct_pos_count[ids] > 0)]
        if not ids.size:
            return
        pos = ranges(self.acct_pos_start[ids], self.acct_pos_count[ids])
        ratios = self.position_ratio(pos)
        starts = np.cumsum(self.acct_pos_count[ids]) - self.acct_pos_count[ids]
        self.ratio[ids] = np.minimum.reduceat(ratios, starts)

    def position_ratio(self, pos: np.ndarray) -> np.ndarray:
        """(isolated margin + unrealised PnL) / maintenance margin per position (isolated accounts)."""
        return margin.margin_ratio(
            self.pos_isolated_margin[pos] + self.unrealized_pnl[pos], self.maintenance_margin[pos]
        )

    def revalue_accounts(self, accts: np.ndarray) -> None:
        """Exact revaluation of some accounts' positions and sums (after fills, wallet changes)."""
        accts = np.asarray(accts, dtype=np.int64)
        pos = ranges(self.acct_pos_start[accts], self.acct_pos_count[accts])
        if pos.size:
            pi = self.pos_instrument[pos]
            v = margin.value_positions(
                self.pos_qty[pos],
                self.pos_entry[pos],
                self.contract_size[pi],
                self.mark[pi],
                self.pos_bracket[pos],
                self.table,
            )
            self.notional[pos], self.unrealized_pnl[pos] = v.notional, v.unrealized_pnl
            self.maintenance_margin[pos], self.initial_margin[pos] = v.maintenance_margin, v.initial_margin
            self.pos_bracket[pos] = v.bracket
        self._resum(accts)
        self._finish_accounts(accts)

    def apply_fill(self, position: int, qty: float, price: float, fee: float = 0.0) -> float:
        """Book a fill that reduces a position (capguard only sends reduce-only orders).

        `qty` is signed contracts traded (negative sells). Realised PnL and the fee move the
        wallet; the entry price of what remains is unchanged. Refused whole when the fill
        would flip or grow the position. Returns the realised PnL (before the fee).
        """
        held = float(self.pos_qty[position])
        if not (math.isfinite(qty) and math.isfinite(price) and price > 0 and math.isfinite(fee)):
            raise InputError(f"fill on position {position}: qty, price and fee must be finite, price positive")
        if qty == 0 or held == 0 or np.sign(qty) == np.sign(held) or abs(qty) > abs(held) * (1 + 1e-12):
            raise InputError(f"fill of {qty} on a position of {held}: only reductions are booked")
        a = int(self.pos_account[position])
        cs = self.contract_size[self.pos_instrument[position]]
        realized = -qty * cs * (price - self.pos_entry[position])
        remaining = held + qty
        self.pos_qty[position] = 0.0 if abs(remaining) <= abs(held) * 1e-12 else remaining
        self.wallet[a] += realized - fee
        if self.isolated[a]:
            # The closed share of the isolated margin is released to the wallet (which already
            # counts it); realised PnL settles in the wallet, as on Binance.
            self.pos_isolated_margin[position] *= abs(self.pos_qty[position]) / abs(held)
        self.revalue_accounts(np.array([a]))
        return realized

    def remove_orders(self, mask: np.ndarray) -> None:
        """Drop open orders (cancelled or filled) selected by a boolean mask."""
        keep = ~np.asarray(mask, dtype=bool)
        for name in ("ord_account", "ord_instrument", "ord_side", "ord_qty", "ord_price", "ord_reduce_only"):
            setattr(self, name, getattr(self, name)[keep])

    def exposure_increasing_orders(self, account: int) -> np.ndarray:
        """Mask of an account's open orders that would increase its exposure."""
        held = np.zeros(self.ord_qty.size)
        k = self.find_positions(self.ord_account, self.ord_instrument)
        held[k >= 0] = self.pos_qty[k[k >= 0]]
        increasing = (held * self.ord_side >= 0) | (self.ord_qty > np.abs(held))
        return (self.ord_account == account) & ~self.ord_reduce_only & increasing

    # ------------------------------------------------------------------ derived figures
    def liquidation_prices(self) -> np.ndarray:
        """Liquidation price per position (NaN where none exists); see margin.liquidation_prices."""
        acct = self.pos_account
        iso = self.isolated[acct]
        collateral = np.where(iso, self.pos_isolated_margin, self.wallet[acct])
        other_mm = np.where(iso, 0.0, self.acct_mm[acct] - self.maintenance_margin)
        other_upnl = np.where(iso, 0.0, self.acct_upnl[acct] - self.unrealized_pnl)
        return margin.liquidation_prices(
            self.pos_qty,
            self.pos_entry,
            self.contract_size[self.pos_instrument],
            self.pos_bracket,
            collateral,
            other_mm,
            other_upnl,
            self.table,
        )

    def reserved_initial_margin(self) -> np.ndarray:
        """Initial margin reserved per account by exposure-increasing open orders.

        A buy on a long (or flat) position increases exposure by its whole quantity; a buy on
        a short only by what exceeds the short. Reduce-only orders reserve nothing. The rate
        is that of the bracket the position would reach if the order filled.
        """
        if not self.ord_qty.size:
            return np.zeros(self.n_accounts)
        held = np.zeros(self.ord_qty.size)
        k = self.find_positions(self.ord_account, self.ord_instrument)
        held[k >= 0] = self.pos_qty[k[k >= 0]]
        same_way = held * self.ord_side >= 0
        increasing = np.where(same_way, self.ord_qty, np.maximum(0.0, self.ord_qty - np.abs(held)))
        increasing = np.where(self.ord_reduce_only, 0.0, increasing)
        cs = self.contract_size[self.ord_instrument]
        # Same way: the position grows to |held| + qty; opposite way it flips to qty - |held|.
        after = np.where(same_way, np.abs(held) + increasing, increasing) * cs * self.ord_price
        bracket = margin.lookup_brackets(after, self.ord_instrument, self.table)
        # An order that adds no exposure reserves 0, even where the rate is unknown (no max leverage).
        reserved = np.where(increasing > 0, increasing * cs * self.ord_price * self.table.im_rate[bracket], 0.0)
        return np.bincount(self.ord_account, weights=reserved, minlength=self.n_accounts)

    def find_positions(self, accounts: np.ndarray, instruments: np.ndarray) -> np.ndarray:
        """Position index for each (account, instrument) pair, -1 where none is held."""
        n_inst = len(self.instruments)
        pkey = self.pos_account * n_inst + self.pos_instrument
        order = np.argsort(pkey, kind="stable")
        want = np.asarray(accounts, dtype=np.int64) * n_inst + np.asarray(instruments, dtype=np.int64)
        at = np.minimum(np.searchsorted(pkey[order], want), max(pkey.size - 1, 0))
        if not pkey.size:
            return np.full(want.shape, -1, dtype=np.int64)
        found = order[at]
        return np.where(pkey[found] == want, found, -1)

    def set_thresholds(self, account: int, thresholds: Thresholds) -> None:
        self.warning[account] = thresholds.warning
        self.critical[account] = thresholds.critical
        self.liquidation[account] = thresholds.liquidation
        self._finish_accounts(np.array([account]))

    def account_positions(self, account: int) -> np.ndarray:
        s = self.acct_pos_start[account]
        return np.arange(s, s + self.acct_pos_count[account])
