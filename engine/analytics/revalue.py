"""Re-valuation of a copy of the book's position arrays at other marks (stress, grids, adjustments).

The book is never modified. Positions are valued with engine.margin.value_positions (tiered,
bracket-aware); account figures follow the book's rules: equity = wallet + sum of unrealised
PnL, ratio = equity / maintenance margin (cross), or the lowest position ratio
(isolated margin + PnL) / MM (isolated accounts); level by the account's thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine import margin
from engine.book import Book, ranges
from engine.levels import classify


@dataclass(frozen=True)
class Valuation:
    """Figures at some marks: per valued position (`positions`, book indices) and per valued
    account (`accounts`, book indices)."""

    positions: np.ndarray
    accounts: np.ndarray
    notional: np.ndarray
    unrealized_pnl: np.ndarray
    maintenance_margin: np.ndarray  # per position, including any add-on passed in
    equity: np.ndarray
    account_mm: np.ndarray
    ratio: np.ndarray
    level: np.ndarray  # 0..3, -1 where the ratio is unknown


def account_sums(book: Book, per_position: np.ndarray) -> np.ndarray:
    """Sum per account of a per-position array over the whole book (positions grouped by account)."""
    out = np.zeros(book.n_accounts)
    nonempty = np.flatnonzero(book.acct_pos_count > 0)
    if nonempty.size:
        out[nonempty] = np.add.reduceat(per_position, book.acct_pos_start[nonempty])
    return out


def account_positions(book: Book, accounts: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(account indices, their positions in account order); None means every account."""
    if accounts is None:
        return np.arange(book.n_accounts), np.arange(book.pos_qty.size)
    ids = np.asarray(accounts, dtype=np.int64)
    return ids, ranges(book.acct_pos_start[ids], book.acct_pos_count[ids])


def account_figures(
    book: Book, unrealized_pnl: np.ndarray, maintenance_margin: np.ndarray, accounts: np.ndarray | None = None
) -> tuple[np.ndarray, ...]:
    """(equity, account MM, ratio, level) per account from per-position PnL and MM.

    The per-position arrays cover the positions of `accounts` (every account when None) in
    account order, as `account_positions` lists them.
    """
    ids, pos = account_positions(book, accounts)
    counts = book.acct_pos_count[ids]
    starts = np.cumsum(counts) - counts
    full = np.flatnonzero(counts > 0)
    sums = np.zeros((2, ids.size))
    if full.size:
        sums[:, full] = np.add.reduceat(np.stack([unrealized_pnl, maintenance_margin]), starts[full], axis=1)
    equity = book.wallet[ids] + sums[0]
    account_mm = sums[1]
    ratio = margin.margin_ratio(equity, account_mm)
    iso = np.flatnonzero(book.isolated[ids] & (counts > 0))
    if iso.size:
        local = ranges(starts[iso], counts[iso])
        pos_ratio = margin.margin_ratio(
            book.pos_isolated_margin[pos[local]] + unrealized_pnl[local], maintenance_margin[local]
        )
        ratio[iso] = np.minimum.reduceat(pos_ratio, np.cumsum(counts[iso]) - counts[iso])
    level = classify(ratio, book.warning[ids], book.critical[ids], book.liquidation[ids])
    level[np.isnan(ratio)] = -1
    return equity, account_mm, ratio, level


def value_at_marks(
    book: Book, marks: np.ndarray, mm_addon: np.ndarray | None = None, accounts: np.ndarray | None = None
) -> Valuation:
    """Value the positions of `accounts` (every account when None) at `marks` (one per
    instrument) and derive the account figures.

    `mm_addon` (per valued position, quote currency) is added to the maintenance margin, for
    the opt-in volatility and market-impact adjustments.
    """
    ids, pos = account_positions(book, accounts)
    inst = book.pos_instrument[pos]
    v = margin.value_positions(
        book.pos_qty[pos],
        book.pos_entry[pos],
        book.contract_size[inst],
        np.asarray(marks, dtype=np.float64)[inst],
        book.pos_bracket[pos],
        book.table,
    )
    mm = v.maintenance_margin if mm_addon is None else v.maintenance_margin + mm_addon
    equity, account_mm, ratio, level = account_figures(book, v.unrealized_pnl, mm, accounts)
    return Valuation(pos, ids, v.notional, v.unrealized_pnl, mm, equity, account_mm, ratio, level)
