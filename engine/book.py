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
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine import margin
from engine.levels import Thresholds, classify
from engine.model import Account, InputError, Instrument, OpenOrder, Position, Side, check_price


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


@dataclass
class AccountSync:
    """What taking new account records changed (Book.update_accounts, Book.rebuilt).

    Positions are named (account id, symbol). `opened`: a position going from none or 0 to a
    quantity; `closed`: from a quantity to 0 (or gone from the record); `resized`: (account,
    symbol, qty before, qty after) between two non-zero quantities. `structural` lists the
    records update_accounts could not take in place (a new account, a position in a symbol the
    account held none of, a changed margin mode): they are not applied, see `rebuilt`.
    """

    added: list[str] = field(default_factory=list)
    opened: list[tuple[str, str]] = field(default_factory=list)
    closed: list[tuple[str, str]] = field(default_factory=list)
    resized: list[tuple[str, str, float, float]] = field(default_factory=list)
    wallet: list[str] = field(default_factory=list)  # accounts whose wallet balance changed
    orders: list[str] = field(default_factory=list)  # accounts whose open orders changed
    other: list[str] = field(default_factory=list)  # entry, isolated margin, flags or descriptive fields only
    structural: list[str] = field(default_factory=list)
    changed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # revalued in place

    @property
    def empty(self) -> bool:
        return not (
            self.added or self.opened or self.closed or self.resized or self.wallet or self.orders or self.other
        )


_ACCT_ROWS = 10  # fields of an account record in Book._acct, see Book._set_accounts


class _TickPlan:
    """What a tick on one instrument touches, prepared once per book layout.

    Besides the index it holds contiguous mirrors of its positions' inputs and values (units,
    entry, bracket, bracket bounds and rates, the four values), so a tick reads nothing
    scattered across the book. The mirrors are refreshed from the book when `epoch` is behind
    the book's (anything that re-values positions in bulk moves the book's epoch on).
    """

    __slots__ = (
        "abs_units",
        "accts",
        "bracket",
        "bracket_start",
        "contract_size",
        "entry",
        "epoch",
        "flat_pos",
        "floors",
        "iso_flat",
        "iso_local",
        "iso_margin",
        "iso_pos",
        "iso_starts",
        "pos",
        "starts",
        "tier",
        "units",
        "vals",
    )

    def __init__(
        self,
        pos: np.ndarray,
        local: np.ndarray,
        accts: np.ndarray,
        contract_size: float,
        floors: np.ndarray,
        bracket_start: int,
        iso_local: np.ndarray,
        iso_pos: np.ndarray,
        iso_starts: np.ndarray,
        n_positions: int,
        n_accounts: int,
    ) -> None:
        self.pos = pos  # its positions, in account order
        self.accts = accts  # the distinct accounts holding it
        # reduceat starts of each account's run in `pos`; None when every account holds one position
        self.starts = None if accts.size == pos.size else np.flatnonzero(np.concatenate([[True], np.diff(local) != 0]))
        self.contract_size = contract_size
        self.floors = floors  # the instrument's bracket floors, and its first flat bracket index
        self.bracket_start = bracket_start
        self.iso_local = iso_local  # indices into `accts` of isolated accounts
        self.iso_pos = iso_pos  # all positions of those accounts (account order)
        self.iso_starts = iso_starts  # reduceat starts of each of them in `iso_pos`
        # Flat indices into the raveled (4, n) position values and (4, n_accounts) account sums.
        # And PnL and MM of the isolated accounts' positions.
        self.flat_pos = (np.arange(4)[:, None] * n_positions + pos).ravel()
        self.iso_flat = (np.arange(2)[:, None] * n_positions + iso_pos).ravel()
        self.epoch = -1
        self.units = self.abs_units = self.entry = self.bracket = self.tier = self.vals = np.zeros(0)
        self.iso_margin = np.zeros(0)


class Book:
    def __init__(
        self,
        instruments: Iterable[Instrument],
        accounts: Iterable[Account],
        thresholds: Thresholds | None = None,
    ) -> None:
        self._set_instruments(instruments)
        accounts = list(accounts)
        self.account_index: dict[str, int] = {}
        for n, acct in enumerate(accounts):
            if acct.id in self.account_index:
                raise InputError(f"account {acct.id}: duplicate account id")
            self.account_index[acct.id] = n
            for k, pos in enumerate(acct.positions):
                if pos.symbol not in self.symbol_index:
                    raise InputError(f"account {acct.id} position {k}: unknown symbol {pos.symbol!r}")
            held = [p.symbol for p in acct.positions]
            twice = sorted({s for s in held if held.count(s) > 1})
            if twice:
                # One-way mode: one net position per symbol (a hedge-mode pair would be priced wrong).
                raise InputError(f"account {acct.id}: more than one position in {', '.join(twice)}")
            for k, order in enumerate(acct.open_orders):
                if order.symbol not in self.symbol_index:
                    raise InputError(f"account {acct.id} open order {k}: unknown symbol {order.symbol!r}")
        self.info = [
            AccountInfo(a.id, a.name or a.id, a.desk, a.strategy, a.risk_class, a.margin_mode) for a in accounts
        ]
        self._set_accounts(
            np.array([a.wallet_balance for a in accounts], dtype=np.float64),
            np.array([a.margin_mode == "isolated" for a in accounts], dtype=bool),
            thresholds,
        )
        self._load_positions(accounts)
        self._load_orders(accounts)

    @classmethod
    def from_arrays(
        cls,
        instruments: Iterable[Instrument],
        account_ids: list[str],
        wallet: np.ndarray,
        isolated: np.ndarray,
        pos_account: np.ndarray,
        pos_instrument: np.ndarray,
        pos_qty: np.ndarray,
        pos_entry: np.ndarray,
        pos_isolated_margin: np.ndarray | None = None,
        thresholds: Thresholds | None = None,
    ) -> Book:
        """A book built straight from arrays (bulk loads, benchmarks), checked like the records.

        Positions must be grouped by account in ascending account order (`pos_account`
        non-decreasing); isolated margins are required for positions of isolated accounts.
        There are no open orders. Descriptive fields default to the account id.
        """
        self = cls.__new__(cls)
        self._set_instruments(instruments)
        ids = [str(a) for a in account_ids]
        self.account_index = {}
        for n, acct_id in enumerate(ids):
            if not acct_id:
                raise InputError(f"account {n}: empty account id")
            if acct_id in self.account_index:
                raise InputError(f"account {acct_id}: duplicate account id")
            self.account_index[acct_id] = n
        wallet = np.array(wallet, dtype=np.float64)
        isolated = np.array(isolated, dtype=bool)
        if wallet.shape != (len(ids),) or isolated.shape != (len(ids),):
            raise InputError(f"wallet and isolated must hold one value per account ({len(ids)})")
        bad = np.flatnonzero(~np.isfinite(wallet))
        if bad.size:
            raise InputError(f"account {ids[bad[0]]}: wallet_balance must be a finite number, got {wallet[bad[0]]!r}")
        self.info = [
            AccountInfo(i, i, "default", "default", "standard", "isolated" if iso else "cross")
            for i, iso in zip(ids, isolated.tolist(), strict=True)
        ]
        self._set_accounts(wallet, isolated, thresholds)

        pos_account = np.array(pos_account, dtype=np.int64)
        n = pos_account.size
        pos_instrument = np.array(pos_instrument, dtype=np.int64)
        pos_qty = np.array(pos_qty, dtype=np.float64)
        pos_entry = np.array(pos_entry, dtype=np.float64)
        iso_margin = np.full(n, np.nan) if pos_isolated_margin is None else np.array(pos_isolated_margin, np.float64)
        for name, arr in (
            ("pos_instrument", pos_instrument),
            ("pos_qty", pos_qty),
            ("pos_entry", pos_entry),
            ("pos_isolated_margin", iso_margin),
        ):
            if arr.shape != (n,):
                raise InputError(f"{name} must hold one value per position ({n})")

        def refuse(mask: np.ndarray, what: str) -> None:
            bad = np.flatnonzero(mask)
            if bad.size:
                k = int(bad[0])
                owner = ids[pos_account[k]] if 0 <= pos_account[k] < len(ids) else f"#{pos_account[k]}"
                raise InputError(f"position {k} (account {owner}): {what}")

        refuse((pos_account < 0) | (pos_account >= len(ids)), "account index out of range")
        refuse(np.concatenate([[False], np.diff(pos_account) < 0]), "positions must be grouped by ascending account")
        refuse((pos_instrument < 0) | (pos_instrument >= len(self.instruments)), "unknown instrument index")
        refuse(~np.isfinite(pos_qty), "qty must be a finite number")
        refuse(~(np.isfinite(pos_entry) & (pos_entry > 0)), "entry_price must be a positive finite number")
        needs = isolated[pos_account]
        refuse(needs & ~(np.isfinite(iso_margin) & (iso_margin >= 0)), "needs a finite isolated_margin >= 0")
        self.pos_account, self.pos_instrument = pos_account, pos_instrument
        self.pos_qty, self.pos_entry = pos_qty, pos_entry
        self.pos_isolated_margin = np.where(needs, iso_margin, np.nan)
        self.pos_liquidate_last = np.zeros(n, dtype=bool)
        self.pos_opened = [None] * n
        self._index_positions()
        self._load_orders([])
        return self

    def _set_instruments(self, instruments: Iterable[Instrument]) -> None:
        self.instruments: list[Instrument] = list(instruments)
        self.symbol_index: dict[str, int] = {}
        for n, inst in enumerate(self.instruments):
            if inst.symbol in self.symbol_index:
                raise InputError(f"instrument {inst.symbol}: listed twice")
            self.symbol_index[inst.symbol] = n
        self.table = margin.BracketTable.from_instruments(self.instruments)
        n_inst = len(self.instruments)
        self.contract_size = np.array([i.contract_size for i in self.instruments], dtype=np.float64)
        self.mark = np.full(n_inst, np.nan)
        self.mark_time = np.full(n_inst, np.nan)  # receive time, seconds since the epoch

    def _set_accounts(self, wallet: np.ndarray, isolated: np.ndarray, thresholds: Thresholds | None) -> None:
        self.n_accounts = wallet.size
        self.isolated = isolated
        t = thresholds or Thresholds()
        # Everything per account in one record of 10 numbers (an (n_accounts, 10) block), so a
        # tick gathers and scatters its accounts' figures in one go, a few cache lines each.
        # Fields: PnL, MM, notional and IM sums, equity, ratio, wallet, warning, critical and
        # liquidation thresholds. The public names are (strided) views of the columns: write
        # them in place (book.warning[:] = ..., book.wallet[a] += ...), never rebind them.
        self._acct = np.zeros((self.n_accounts, _ACCT_ROWS))
        self._acct_rec = self._acct.view(np.dtype((np.void, 8 * _ACCT_ROWS))).reshape(-1)
        self._acct_vals = self._acct[:, :4].T  # the four sums, as rows
        self.acct_upnl, self.acct_mm = self._acct[:, 0], self._acct[:, 1]
        self.equity, self.ratio, self.wallet = self._acct[:, 4], self._acct[:, 5], self._acct[:, 6]
        self.warning, self.critical, self.liquidation = self._acct[:, 7], self._acct[:, 8], self._acct[:, 9]
        self._acct_views = (
            self.acct_upnl,
            self.acct_mm,
            self.equity,
            self.ratio,
            self.wallet,
            self.warning,
            self.critical,
            self.liquidation,
        )
        self.wallet[:] = wallet
        self.warning[:], self.critical[:], self.liquidation[:] = t.warning, t.critical, t.liquidation
        # Maintenance-margin add-ons of the guard (set_mm_addon): the ratio is equity / (MM +
        # add-on); acct_mm stays the venue's. Zero and off by default: the venue's figures, unchanged.
        self.acct_mm_addon = np.zeros(self.n_accounts)
        self._mm_addon_on = False

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
        """(Re)build the account segments, the instrument index and the cached brackets.

        Call it again after adding or removing positions. Besides the public index it keeps,
        for the hot paths: each position's contract size, the bounds and rates of its current
        bracket (`_pos_tier`, rows floor, cap, mmr, cum, im rate; written only by
        `_set_brackets`), and per instrument a ready-made tick plan (`_tick`).
        """
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
        # Isolated accounts holding positions: their positions (account order) and segment starts,
        # for the account ratio = lowest position ratio.
        self._iso_ids = self._nonempty[self.isolated[self._nonempty]]
        self._iso_pos = ranges(self.acct_pos_start[self._iso_ids], counts[self._iso_ids])
        self._iso_starts = np.cumsum(counts[self._iso_ids]) - counts[self._iso_ids]
        # Per instrument: the distinct accounts holding it, and for each of its positions the
        # local index of its account in that list. Positions are in account order, so `local`
        # is non-decreasing and deltas reduce with one reduceat.
        self.inst_accounts: list[np.ndarray] = []
        self.inst_local: list[np.ndarray] = []
        self._tick: list[_TickPlan | None] = []
        for i in range(len(self.instruments)):
            pos = order[self.inst_pos_start[i] : self.inst_pos_start[i + 1]]
            accts, local = np.unique(self.pos_account[pos], return_inverse=True)
            self.inst_accounts.append(accts)
            self.inst_local.append(local)
            if not pos.size:
                self._tick.append(None)
                continue
            iso_local = np.flatnonzero(self.isolated[accts])
            iso_ids = accts[iso_local]
            self._tick.append(
                _TickPlan(
                    pos=pos,
                    local=local,
                    accts=accts,
                    contract_size=float(self.contract_size[i]),
                    floors=self.table.floor[self.table.start[i] : self.table.start[i] + self.table.count[i]],
                    bracket_start=int(self.table.start[i]),
                    iso_local=iso_local,
                    iso_pos=ranges(self.acct_pos_start[iso_ids], counts[iso_ids]),
                    iso_starts=np.cumsum(counts[iso_ids]) - counts[iso_ids],
                    n_positions=n,
                    n_accounts=self.n_accounts,
                )
            )
        self.pos_cs = self.contract_size[self.pos_instrument]
        t = self.table
        self._tier_table = np.stack([t.floor, t.cap, t.mmr, t.cum, t.im_rate])
        self.pos_bracket = t.start[self.pos_instrument].copy()
        self._pos_tier = np.ascontiguousarray(self._tier_table[:, self.pos_bracket])  # rows contiguous
        self._pos_tier_flat = self._pos_tier.reshape(-1)
        self._tier_rows = np.arange(5)[:, None] * n  # row offsets into _pos_tier_flat
        # Values per position and sums per account, as rows of one array each so a tick moves
        # all four with one gather and one scatter. The public names are views of the rows.
        self._pos_vals = np.zeros((4, n))
        self.unrealized_pnl, self.maintenance_margin, self.notional = self._pos_vals[:3]
        # Account sums in the same row order. The ratio needs only PnL and MM: after a full
        # revalue, position IM and the account notional and IM sums are computed on first read
        # (see initial_margin, acct_notional, acct_im).
        self._acct_vals[:] = 0.0
        self._lazy_sums_stale = False
        self._im_stale = False
        self._pos_flat = self._pos_vals.reshape(-1)  # views, for flat (fast) fancy indexing
        self._epoch = 0  # moves on whenever positions are re-valued in bulk (tick plans then reload)
        self._buf = np.empty(n)
        self._mark_buf = np.empty(n)
        self._unit_contracts = bool(np.all(self.pos_cs == 1.0))
        self._mask = np.empty((2, n), dtype=bool)
        self.equity[:] = self.wallet
        self.ratio[:] = np.inf
        self.level = np.zeros(self.n_accounts, dtype=np.int8)
        # Start from the valued state at the current marks (NaN, i.e. unknown, where unpriced), so
        # a first apply_tick never counts an unpriced position's margin as 0.
        self.revalue()

    def _set_brackets(self, pos: np.ndarray, bracket: np.ndarray) -> None:
        """Move positions to brackets, keeping the cached bracket bounds and rates in step."""
        self.pos_bracket[pos] = bracket
        self._pos_tier_flat[(self._tier_rows + pos).ravel()] = self._tier_table[:, bracket].ravel()

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

    def set_marks(self, instruments: np.ndarray, prices: np.ndarray, received: float | np.ndarray) -> None:
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
        """Full vectorised revaluation of every position and account.

        Same arithmetic as margin.value_positions (bit for bit), on cached per-position data and
        preallocated buffers: only positions that left their cached bracket are re-walked.
        """
        mark = np.take(self.mark, self.pos_instrument, out=self._mark_buf, mode="clip")
        # Every contract size 1 (as on USD-M linear contracts): units are the quantities themselves.
        units = self.pos_qty if self._unit_contracts else np.multiply(self.pos_qty, self.pos_cs, out=self._buf)
        upnl, mm, notional = self._pos_vals[:3]
        np.abs(units, out=notional)
        notional *= mark
        np.subtract(mark, self.pos_entry, out=upnl)
        upnl *= units
        lo, hi, mmr, cum, _ = self._pos_tier
        below, above = self._mask
        np.less(notional, lo, out=below)
        np.greater_equal(notional, hi, out=above)
        below |= above
        if below.any():
            moved = np.flatnonzero(below)
            self._set_brackets(moved, margin.walk_brackets(notional[moved], self.pos_bracket[moved], self.table))
        np.multiply(notional, mmr, out=mm)
        mm -= cum
        self._sum_accounts(slice(0, 2))
        self._im_stale = self._lazy_sums_stale = True
        self._epoch += 1
        self._finish_accounts(slice(None))

    def _sum_accounts(self, rows: slice) -> None:
        """Account sums of some rows of the position values, from the positions."""
        out = self._acct_vals[rows]
        if self._nonempty.size == self.n_accounts:
            np.add.reduceat(self._pos_vals[rows], self._seg_starts, axis=1, out=out)
        else:
            out[:] = 0.0
            if self._nonempty.size:
                out[:, self._nonempty] = np.add.reduceat(self._pos_vals[rows], self._seg_starts, axis=1)

    @property
    def acct_notional(self) -> np.ndarray:
        """Notional per account (quote currency)."""
        self._fresh_lazy_sums()
        return self._acct_vals[2]

    @property
    def acct_im(self) -> np.ndarray:
        """Initial margin per account; NaN where some position's bracket has no max leverage."""
        self._fresh_lazy_sums()
        return self._acct_vals[3]

    @property
    def initial_margin(self) -> np.ndarray:
        """Initial margin per position (notional / max leverage); NaN where the bracket has none."""
        self._fresh_position_im()
        return self._pos_vals[3]

    def _fresh_position_im(self) -> None:
        if self._im_stale:
            np.multiply(self._pos_vals[2], self._pos_tier[4], out=self._pos_vals[3])
            self._im_stale = False
            self._epoch += 1

    def _fresh_lazy_sums(self) -> None:
        if self._lazy_sums_stale:
            self._fresh_position_im()
            self._sum_accounts(slice(2, 4))
            self._lazy_sums_stale = False

    def apply_tick(self, instrument: int, price: float, received: float) -> np.ndarray:
        """Set one instrument's mark and re-value only what it touches.

        Returns the indices of the accounts whose ratio and level were updated. The position
        values are computed exactly as in `revalue()`; the account sums move by deltas.
        """
        if not (math.isfinite(price) and price > 0):
            raise InputError(
                f"price for {self.instruments[instrument].symbol}: must be positive and finite, got {price!r}"
            )
        self.mark[instrument] = price
        self.mark_time[instrument] = received
        plan = self._tick[instrument]
        if plan is None:
            return self.inst_accounts[instrument]
        if plan.epoch != self._epoch:
            self._refresh_plan(plan)
        accts = plan.accts
        new = np.empty((4, plan.pos.size))
        upnl, mm, notional, im = new
        tier = plan.tier
        np.multiply(plan.abs_units, price, out=notional)
        np.subtract(price, plan.entry, out=upnl)
        upnl *= plan.units
        moved = notional < tier[0]
        moved |= notional >= tier[1]
        crossed = np.logical_or.reduce(moved)
        if crossed:
            # The instrument's brackets are contiguous [floor, next floor): a binary search finds
            # the same bracket walk_brackets would.
            m = np.flatnonzero(moved)
            b = np.searchsorted(plan.floors, notional[m], side="right") + (plan.bracket_start - 1)
            tb = self._tier_table[:, b]
            pm = plan.pos[m]
            self.pos_bracket[pm] = b
            self._pos_tier_flat[(self._tier_rows + pm).ravel()] = tb.ravel()
            plan.bracket[m] = b
            tier[:, m] = tb
        np.multiply(notional, tier[2], out=mm)
        mm -= tier[3]
        np.multiply(notional, tier[4], out=im)
        old = plan.vals
        plan.vals = new
        # While position IM is stale (after a full revalue, until read) leave its row alone.
        if self._im_stale:
            self._pos_flat[plan.flat_pos[: 3 * plan.pos.size]] = new[:3].ravel()
        else:
            self._pos_flat[plan.flat_pos] = new.ravel()
        delta = new - old
        if plan.starts is not None:  # some account holds more than one position in it
            delta = np.add.reduceat(delta, plan.starts, axis=1)
        if not self._views_intact():
            self._resum(accts)
            self._finish_accounts(accts)
            return accts
        # The accounts' records: PnL, MM, notional, IM sums, equity, ratio, wallet, thresholds.
        blk = np.take(self._acct, accts, axis=0)
        # Column by column (a (k, 4) strided add is far slower); the lazy sums only when fresh.
        for c in range(2 if self._lazy_sums_stale else 4):
            blk[:, c] += delta[c]
        equity, ratio, account_mm = blk[:, 4], blk[:, 5], blk[:, 1]
        np.add(blk[:, 6], blk[:, 0], out=equity)
        if self._mm_addon_on:  # the guard's MM add-ons (set_mm_addon); the record keeps the venue MM
            account_mm = account_mm + self.acct_mm_addon[accts]
        # Plain division when every account holds margin (the usual case), else the full rules.
        if np.minimum.reduce(account_mm) > 0:
            np.divide(equity, account_mm, out=ratio)
        else:
            ratio[:] = margin.margin_ratio(equity, account_mm)
        if plan.iso_local.size:
            upnl_mm = self._pos_flat[plan.iso_flat].reshape(2, -1)
            iso_mm = upnl_mm[1]
            iso_eq = plan.iso_margin + upnl_mm[0]
            r = iso_eq / iso_mm if np.minimum.reduce(iso_mm) > 0 else margin.margin_ratio(iso_eq, iso_mm)
            ratio[plan.iso_local] = np.minimum.reduceat(r, plan.iso_starts)
        total = np.add.reduce(ratio)  # NaN exactly when some ratio is NaN (no ratio is -inf)
        has_unknown = total != total
        # A NaN delta that replaces a NaN (first price of an unpriced position, or a bracket move
        # from a tier without max leverage) must not stay in the sums: recompute those exactly.
        # Either shows as a NaN ratio or happens on a bracket move. NaN -> NaN needs nothing.
        if (crossed or has_unknown) and (np.isnan(old) & ~np.isnan(new)).any():
            self._resum(accts)
            self._finish_accounts(accts)
            return accts
        self._acct_rec[accts] = blk.view(self._acct_rec.dtype).reshape(-1)
        # levels.classify on the thresholds in the records
        level = np.add(ratio <= blk[:, 7], ratio <= blk[:, 8], dtype=np.int8)
        level += ratio <= blk[:, 9]
        if has_unknown:
            level[np.isnan(ratio)] = -1
        self.level[accts] = level
        return accts

    def _views_intact(self) -> bool:
        """True while the public per-account arrays are still the rows of the account block."""
        a = self._acct_views
        return (
            self.acct_upnl is a[0]
            and self.acct_mm is a[1]
            and self.equity is a[2]
            and self.ratio is a[3]
            and self.wallet is a[4]
            and self.warning is a[5]
            and self.critical is a[6]
            and self.liquidation is a[7]
        )

    def _refresh_plan(self, plan: _TickPlan) -> None:
        """Load a tick plan's mirrors from the book."""
        pos = plan.pos
        n = pos.size
        plan.units = self.pos_qty[pos] * plan.contract_size
        plan.abs_units = np.abs(plan.units)
        plan.entry = self.pos_entry[pos]
        plan.bracket = self.pos_bracket[pos]
        plan.tier = self._pos_tier_flat[(self._tier_rows + pos).ravel()].reshape(5, n)
        plan.vals = self._pos_flat[plan.flat_pos].reshape(4, n)  # row 3 (IM) may be stale: see apply_tick
        plan.iso_margin = self.pos_isolated_margin[plan.iso_pos]
        plan.epoch = self._epoch

    def _resum(self, accts: np.ndarray) -> None:
        """Exact sums for some accounts from their positions."""
        accts = np.asarray(accts, dtype=np.int64)
        counts = self.acct_pos_count[accts]
        pos = ranges(self.acct_pos_start[accts], counts)
        sums = np.zeros((4, accts.size))
        if pos.size:
            nonempty = counts > 0
            starts = (np.cumsum(counts) - counts)[nonempty]
            sums[:, nonempty] = np.add.reduceat(self._pos_vals[:, pos], starts, axis=1)
        self._acct_vals[:, accts] = sums

    def _classify(self, ratio: np.ndarray, accts: np.ndarray | slice) -> np.ndarray:
        """Level per account (levels.classify); an unknown (NaN) ratio is level -1."""
        level = classify(ratio, self.warning[accts], self.critical[accts], self.liquidation[accts])
        # An unpriced position leaves the ratio unknown: level -1 (shown as "—"), never an action.
        unknown = np.isnan(ratio)
        if unknown.any():
            level[unknown] = -1
        return level

    def _finish_accounts(self, accts: np.ndarray | slice) -> None:
        """Equity, ratio and level of some accounts (or all, with slice(None)) from their sums.

        Cross accounts: ratio = equity / (MM + acct_mm_addon) while add-ons are set (see
        set_mm_addon), else equity / MM. Isolated accounts: the lowest position ratio, never
        with an add-on.
        """
        if isinstance(accts, slice) and accts == slice(None):
            np.add(self.wallet, self.acct_upnl, out=self.equity)
            mm = self.acct_mm + self.acct_mm_addon if self._mm_addon_on else self.acct_mm
            ratio = margin.margin_ratio(self.equity, mm)
            if self._iso_ids.size:
                ratio[self._iso_ids] = np.minimum.reduceat(self.position_ratio(self._iso_pos), self._iso_starts)
            self.ratio[:] = ratio
            self.level[:] = self._classify(ratio, accts)
            return
        ids = np.arange(self.n_accounts)[accts] if isinstance(accts, slice) else np.asarray(accts, dtype=np.int64)
        equity = self.wallet[ids] + self.acct_upnl[ids]
        mm = self.acct_mm[ids] + self.acct_mm_addon[ids] if self._mm_addon_on else self.acct_mm[ids]
        ratio = margin.margin_ratio(equity, mm)
        iso = np.flatnonzero(self.isolated[ids] & (self.acct_pos_count[ids] > 0))
        if iso.size:
            sub = ids[iso]
            counts = self.acct_pos_count[sub]
            pos = ranges(self.acct_pos_start[sub], counts)
            ratio[iso] = np.minimum.reduceat(self.position_ratio(pos), np.cumsum(counts) - counts)
        self.equity[ids] = equity
        self.ratio[ids] = ratio
        self.level[ids] = self._classify(ratio, ids)

    def set_mm_addon(self, addon: np.ndarray | None, finish: bool = True) -> None:
        """Set the maintenance-margin add-on per account (quote currency), or None for none.

        The ratio (and so the level) becomes equity / (venue MM + add-on) in every path
        (revalue, apply_tick, revalue_accounts); acct_mm, liquidation prices and position
        figures stay the venue's. The amounts are held as given until set again (the guard
        recomputes them once a second). Isolated accounts get none: their ratio is the lowest
        position ratio on each position's own isolated margin, which an account-level amount
        cannot be split into. Unknown (NaN) amounts count as 0 (an unpriced position already
        leaves the ratio unknown). With `finish`, every account's ratio and level are
        recomputed now; otherwise at the next revalue or _finish_accounts.
        """
        if addon is None:
            self.acct_mm_addon[:] = 0.0
            self._mm_addon_on = False
        else:
            addon = np.asarray(addon, dtype=np.float64)
            if addon.shape != (self.n_accounts,):
                raise InputError(f"maintenance-margin add-on must hold one value per account ({self.n_accounts})")
            if ((addon < 0) | np.isinf(addon)).any():
                raise InputError("maintenance-margin add-on must be finite and not negative")
            self.acct_mm_addon[:] = np.where(self.isolated | np.isnan(addon), 0.0, addon)
            self._mm_addon_on = True
        if finish:
            self._finish_accounts(slice(None))

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
                self.pos_cs[pos],
                self.mark[pi],
                self.pos_bracket[pos],
                self.table,
            )
            self._pos_vals[:, pos] = (v.unrealized_pnl, v.maintenance_margin, v.notional, v.initial_margin)
            self._set_brackets(pos, v.bracket)
            self._epoch += 1  # quantities, values or brackets may have changed: tick plans reload
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
    def liquidation_prices(self, positions: np.ndarray | None = None) -> np.ndarray:
        """Liquidation price per position (NaN where none exists); see margin.liquidation_prices.

        With `positions`, only those (e.g. one account's, for a detail view) are solved, in
        that order. base = collateral - other_mm + other_upnl - s*Q*EP. Cross: collateral -
        other_mm + other_upnl = (wallet + account PnL - account MM) + MM - PnL of the position,
        and PnL + s*Q*EP = s*Q*mark = s * notional. Isolated: the isolated margin - s*Q*EP.
        """
        lo, hi, mmr, cum, _ = self._pos_tier
        if positions is not None:
            p = np.asarray(positions, dtype=np.int64)
            units = self.pos_qty[p] * self.pos_cs[p]
            accts = self.pos_account[p]
            base = (self.wallet + self.acct_upnl - self.acct_mm)[accts] + self.maintenance_margin[p]
            base -= np.copysign(self.notional[p], units)
            iso = self.isolated[accts]
            base[iso] = self.pos_isolated_margin[p][iso] - units[iso] * self.pos_entry[p][iso]
            return margin.solve_liquidation(
                units,
                base,
                self.pos_bracket[p],
                self.table,
                (lo[p], hi[p], mmr[p], cum[p]),
                instrument=self.pos_instrument[p],
            )
        units = self.pos_qty if self._unit_contracts else self.pos_qty * self.pos_cs
        base = np.take(self.wallet + self.acct_upnl - self.acct_mm, self.pos_account)
        base += self.maintenance_margin
        base -= np.copysign(self.notional, units)
        if self._iso_pos.size:
            ip = self._iso_pos
            base[ip] = self.pos_isolated_margin[ip] - units[ip] * self.pos_entry[ip]
        return margin.solve_liquidation(
            units, base, self.pos_bracket, self.table, (lo, hi, mmr, cum), instrument=self.pos_instrument
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

    # ------------------------------------------------------------------ account updates
    def check_records(self, accounts: Iterable[Account]) -> list[Account]:
        """Account records checked against this book as the constructor checks them: unique ids,
        configured symbols, one position per symbol. InputError names the first problem."""
        out = list(accounts)
        seen: set[str] = set()
        for acct in out:
            if acct.id in seen:
                raise InputError(f"account {acct.id}: duplicate account id")
            seen.add(acct.id)
            held = [p.symbol for p in acct.positions]
            if not self.symbol_index.keys() >= set(held):
                k, symbol = next((k, s) for k, s in enumerate(held) if s not in self.symbol_index)
                raise InputError(f"account {acct.id} position {k}: unknown symbol {symbol!r}")
            if len(set(held)) != len(held):
                twice = sorted({s for s in held if held.count(s) > 1})
                raise InputError(f"account {acct.id}: more than one position in {', '.join(twice)}")
            for k, order in enumerate(acct.open_orders):
                if order.symbol not in self.symbol_index:
                    raise InputError(f"account {acct.id} open order {k}: unknown symbol {order.symbol!r}")
        return out

    def update_accounts(self, accounts: Iterable[Account], *, checked: bool = False) -> AccountSync:
        """Take later records of accounts this book holds, in place (an account source's new snapshot).

        For each record that fits the book's layout (the account is held, has the same margin
        mode, and holds no symbol the book holds no position in for it): wallet balance,
        descriptive fields, open orders, and quantity, entry price, isolated margin and flags of
        its positions are written in place (column arrays are never rebound); a position the
        record no longer lists becomes qty 0 with no isolated margin, as `apply_fill` leaves a
        closed one. The accounts whose figures moved are then revalued (`revalue_accounts`).
        Records that do not fit are left untouched and named in `structural` (see `rebuilt`).
        Every record is checked first (unless `checked`: check_records passed them already) and
        the whole call refused (InputError) on a bad one.
        """
        accounts = list(accounts) if checked else self.check_records(accounts)
        sync = AccountSync()
        known: list[tuple[int, Account]] = []
        for acct in accounts:
            a = self.account_index.get(acct.id)
            if a is None or (acct.margin_mode == "isolated") != bool(self.isolated[a]):
                sync.structural.append(acct.id)
            else:
                known.append((a, acct))
        if known:
            # Accounts opening a symbol they hold no position in need a new layout.
            r_acct = np.fromiter((a for a, acct in known for _ in acct.positions), dtype=np.int64)
            r_inst = np.fromiter((self.symbol_index[p.symbol] for _, acct in known for p in acct.positions), np.int64)
            k = self.find_positions(r_acct, r_inst)
            new_slot = set(np.unique(r_acct[k < 0]).tolist())
            if new_slot:
                moved = {acct.id for a, acct in known if a in new_slot} | set(sync.structural)
                sync.structural = [acct.id for acct in accounts if acct.id in moved]  # in record order
                known = [(a, acct) for a, acct in known if a not in new_slot]
                k = k[~np.isin(r_acct, list(new_slot))]
        if not known:
            return sync
        idx = np.array([a for a, _ in known], dtype=np.int64)
        recs = [p for _, acct in known for p in acct.positions]  # aligned with k
        n = len(recs)
        ids = np.unique(idx)
        pos = ranges(self.acct_pos_start[ids], self.acct_pos_count[ids])  # ascending
        at = np.searchsorted(pos, k)  # each record's position, as an index into `pos`
        old_qty, old_entry = self.pos_qty[pos], self.pos_entry[pos]
        old_iso, old_last = self.pos_isolated_margin[pos], self.pos_liquidate_last[pos]
        iso_acct = self.isolated[self.pos_account[pos]]
        qty = np.zeros(pos.size)  # not in its record: closed
        qty[at] = np.fromiter((p.qty for p in recs), dtype=np.float64, count=n)
        entry = old_entry.copy()
        entry[at] = np.fromiter((p.entry_price for p in recs), dtype=np.float64, count=n)
        iso = np.where(iso_acct, 0.0, old_iso)  # a closed isolated position holds no margin
        iso[at] = np.fromiter(
            (np.nan if p.isolated_margin is None else p.isolated_margin for p in recs), dtype=np.float64, count=n
        )
        iso = np.where(iso_acct, iso, old_iso)  # cross accounts: any reported isolated margin counts for nothing
        last = old_last.copy()
        last[at] = np.fromiter((p.liquidate_last for p in recs), dtype=bool, count=n)
        moved = qty != old_qty
        touched = (
            moved
            | (entry != old_entry)
            | (last != old_last)
            | ((iso != old_iso) & ~(np.isnan(iso) & np.isnan(old_iso)))
        )
        wallet = np.array([acct.wallet_balance for _, acct in known], dtype=np.float64)
        wallet_moved = wallet != self.wallet[idx]
        infos = [
            AccountInfo(acct.id, acct.name or acct.id, acct.desk, acct.strategy, acct.risk_class, acct.margin_mode)
            for _, acct in known
        ]
        orders_moved = self._replace_orders(known)
        # Nothing below can fail: write in place.
        self.pos_qty[pos] = qty
        self.pos_entry[pos] = entry
        self.pos_isolated_margin[pos] = iso
        self.pos_liquidate_last[pos] = last
        for p, rec in zip(pos[at].tolist(), recs, strict=True):
            self.pos_opened[p] = rec.opened
        self.wallet[idx] = wallet
        other: set[int] = set(self.pos_account[pos[touched & ~moved]].tolist())
        for a, info in zip(idx.tolist(), infos, strict=True):
            if info != self.info[a]:
                self.info[a] = info
                other.add(a)
        syms = [i.symbol for i in self.instruments]
        for j in np.flatnonzero(moved).tolist():
            p = int(pos[j])
            name = (self.info[self.pos_account[p]].id, syms[self.pos_instrument[p]])
            before, after = float(old_qty[j]), float(qty[j])
            if before == 0:
                sync.opened.append(name)
            elif after == 0:
                sync.closed.append(name)
            else:
                sync.resized.append((*name, before, after))
        sync.wallet = [self.info[a].id for a in idx[wallet_moved].tolist()]
        sync.orders = [self.info[a].id for a in sorted(orders_moved)]
        sync.other = [self.info[a].id for a in sorted(other)]
        sync.changed = np.unique(np.concatenate([self.pos_account[pos[touched]], idx[wallet_moved]]))
        if sync.changed.size:
            self.revalue_accounts(sync.changed)
        return sync

    def _replace_orders(self, records: list[tuple[int, Account]]) -> set[int]:
        """Replace the open orders of some accounts by their records'; returns the accounts whose
        orders differ (as multisets: the order they are listed in does not count)."""
        ids = np.array([a for a, _ in records], dtype=np.int64)
        mine = np.isin(self.ord_account, ids)
        cols = (
            self.ord_account,
            self.ord_instrument,
            self.ord_side,
            self.ord_qty,
            self.ord_price,
            self.ord_reduce_only,
        )
        before = Counter(zip(*(c[mine].tolist() for c in cols), strict=True))
        rows = [
            (a, self.symbol_index[o.symbol], 1.0 if o.side == Side.BUY else -1.0, o.qty, o.price, o.reduce_only)
            for a, acct in records
            for o in acct.open_orders
        ]
        after = Counter(rows)
        moved = {row[0] for row in (before - after) + (after - before)}
        if moved:
            keep = ~mine
            new = list(zip(*rows, strict=True)) if rows else [()] * 6
            merged = [np.concatenate([c[keep], np.array(v, dtype=c.dtype)]) for c, v in zip(cols, new, strict=True)]
            order = np.argsort(merged[0], kind="stable")  # grouped by account, as _load_orders lays them
            for name, col in zip(
                ("ord_account", "ord_instrument", "ord_side", "ord_qty", "ord_price", "ord_reduce_only"),
                merged,
                strict=True,
            ):
                setattr(self, name, col[order])
        return moved

    def account_records(self, accts: Iterable[int] | None = None) -> list[Account]:
        """Accounts (all, or those at `accts`, in that order) as records, as they stand now
        (after fills and updates). Built without validation: the book's figures are checked."""
        wanted = list(range(self.n_accounts)) if accts is None else [int(a) for a in accts]
        syms = [i.symbol for i in self.instruments]
        orders: dict[int, list[OpenOrder]] = {}
        mine = np.flatnonzero(np.isin(self.ord_account, wanted))
        for k in mine.tolist():
            orders.setdefault(int(self.ord_account[k]), []).append(
                OpenOrder.model_construct(
                    symbol=syms[self.ord_instrument[k]],
                    side=Side.BUY if self.ord_side[k] > 0 else Side.SELL,
                    qty=float(self.ord_qty[k]),
                    price=float(self.ord_price[k]),
                    reduce_only=bool(self.ord_reduce_only[k]),
                )
            )
        out = []
        for a in wanted:
            info = self.info[a]
            positions = []
            for p in self.account_positions(a).tolist():
                iso = float(self.pos_isolated_margin[p])
                positions.append(
                    Position.model_construct(
                        symbol=syms[self.pos_instrument[p]],
                        qty=float(self.pos_qty[p]),
                        entry_price=float(self.pos_entry[p]),
                        opened=self.pos_opened[p],
                        isolated_margin=None if math.isnan(iso) else iso,
                        liquidate_last=bool(self.pos_liquidate_last[p]),
                    )
                )
            out.append(
                Account.model_construct(
                    id=info.id,
                    name=info.name,
                    desk=info.desk,
                    strategy=info.strategy,
                    risk_class=info.risk_class,
                    wallet_balance=float(self.wallet[a]),
                    margin_mode=info.margin_mode,
                    positions=positions,
                    open_orders=orders.get(a, []),
                )
            )
        return out

    def rebuilt(self, accounts: Iterable[Account], thresholds: Thresholds | None = None) -> tuple[Book, AccountSync]:
        """A new book: this book's accounts as they stand (after fills and updates), each record
        of `accounts` taking the place of the account with its id, new ids appended. Every
        account keeps its index; positions are laid out anew (their indices change). Marks and
        mark times are carried over and all is revalued; the kept accounts keep their
        thresholds, new ones get `thresholds` (the guard refreshes them all). This book is left
        untouched. Refused whole (InputError) on a bad record. The sync says what changed.
        """
        new = self.check_records(accounts)
        n = self.n_accounts
        sync = AccountSync()
        ids = [i.id for i in self.info]
        index = dict(self.account_index)
        replaced: dict[int, Account] = {}
        for acct in new:
            a = index.get(acct.id)
            if a is None:
                a = index[acct.id] = len(ids)
                ids.append(acct.id)
                sync.added.append(acct.id)
                sync.opened += [(acct.id, p.symbol) for p in acct.positions if p.qty != 0]
            replaced[a] = acct
        kept = [a for a in replaced if a < n]
        for a, old in zip(kept, self.account_records(kept), strict=True):
            _describe_change(old, replaced[a], sync)
        extra = len(ids) - n
        wallet = np.concatenate([self.wallet, np.zeros(extra)])
        isolated = np.concatenate([self.isolated, np.zeros(extra, dtype=bool)])
        info: list[AccountInfo | None] = [*self.info, *([None] * extra)]
        for a, acct in replaced.items():
            wallet[a] = acct.wallet_balance
            isolated[a] = acct.margin_mode == "isolated"
            info[a] = AccountInfo(
                acct.id, acct.name or acct.id, acct.desk, acct.strategy, acct.risk_class, acct.margin_mode
            )
        # Positions: this book's, less those of the replaced accounts, then the records', grouped by account.
        gone = list(replaced)
        keep = ~np.isin(self.pos_account, gone)
        rows = [(a, p) for a, acct in replaced.items() for p in acct.positions]
        k = len(rows)
        order = np.argsort(
            np.concatenate([self.pos_account[keep], np.fromiter((a for a, _ in rows), np.int64, k)]), kind="stable"
        )

        def column(mine: np.ndarray, theirs: Iterable[Any], dtype: Any) -> np.ndarray:
            return np.concatenate([mine[keep], np.fromiter(theirs, dtype, k)])[order]

        book = Book.from_arrays(
            self.instruments,
            ids,
            wallet,
            isolated,
            column(self.pos_account, (a for a, _ in rows), np.int64),
            column(self.pos_instrument, (self.symbol_index[p.symbol] for _, p in rows), np.int64),
            column(self.pos_qty, (p.qty for _, p in rows), np.float64),
            column(self.pos_entry, (p.entry_price for _, p in rows), np.float64),
            column(
                self.pos_isolated_margin,
                (np.nan if p.isolated_margin is None else p.isolated_margin for _, p in rows),
                np.float64,
            ),
            thresholds=thresholds,
        )
        book.info = info  # type: ignore[assignment]  # every slot is filled above
        book.pos_liquidate_last = column(self.pos_liquidate_last, (p.liquidate_last for _, p in rows), bool)
        opened = [o for o, kp in zip(self.pos_opened, keep.tolist(), strict=True) if kp] + [p.opened for _, p in rows]
        book.pos_opened = [opened[j] for j in order.tolist()]
        # Open orders likewise.
        keep_o = ~np.isin(self.ord_account, gone)
        orows = [(a, o) for a, acct in replaced.items() for o in acct.open_orders]
        m = len(orows)
        o_order = np.argsort(
            np.concatenate([self.ord_account[keep_o], np.fromiter((a for a, _ in orows), np.int64, m)]), kind="stable"
        )
        for name, theirs, dtype in (
            ("ord_account", (a for a, _ in orows), np.int64),
            ("ord_instrument", (self.symbol_index[o.symbol] for _, o in orows), np.int64),
            ("ord_side", (1.0 if o.side == Side.BUY else -1.0 for _, o in orows), np.float64),
            ("ord_qty", (o.qty for _, o in orows), np.float64),
            ("ord_price", (o.price for _, o in orows), np.float64),
            ("ord_reduce_only", (o.reduce_only for _, o in orows), bool),
        ):
            col = np.concatenate([getattr(self, name)[keep_o], np.fromiter(theirs, dtype, m)])[o_order]
            setattr(book, name, col)
        book.warning[:n], book.critical[:n], book.liquidation[:n] = self.warning, self.critical, self.liquidation
        book.mark[:] = self.mark
        book.mark_time[:] = self.mark_time
        book.revalue()
        return book, sync


def _describe_change(old: Account, new: Account, sync: AccountSync) -> None:
    """Add what changed from one record of an account to the next to `sync` (not on the hot path)."""
    before = {p.symbol: p for p in old.positions}
    after = {p.symbol: p for p in new.positions}
    other = False
    for symbol in [*before, *(s for s in after if s not in before)]:
        b, n = before.get(symbol), after.get(symbol)
        qb, qa = (b.qty if b else 0.0), (n.qty if n else 0.0)
        if qb != qa:
            if qb == 0:
                sync.opened.append((new.id, symbol))
            elif qa == 0:
                sync.closed.append((new.id, symbol))
            else:
                sync.resized.append((new.id, symbol, qb, qa))
        elif b is not None and n is not None:
            iso = new.margin_mode == "isolated"  # a cross account's isolated margins count for nothing
            figures = (b.entry_price, b.isolated_margin if iso else None, b.liquidate_last)
            other |= figures != (n.entry_price, n.isolated_margin if iso else None, n.liquidate_last)
    if old.wallet_balance != new.wallet_balance:
        sync.wallet.append(new.id)
    key = lambda o: (o.symbol, str(o.side), o.qty, o.price, o.reduce_only)  # noqa: E731
    if Counter(map(key, old.open_orders)) != Counter(map(key, new.open_orders)):
        sync.orders.append(new.id)
    fields = ("name", "desk", "strategy", "risk_class", "margin_mode")
    if other or any(getattr(old, f) != getattr(new, f) for f in fields):
        sync.other.append(new.id)
