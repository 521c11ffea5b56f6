"""Look-ahead: an account's ratio and level if a hypothetical order filled now.

The fill is booked on a copy of the account's position arrays, one-way mode (one position per
instrument): a same-way fill grows the position at the volume-weighted entry; an opposite fill
reduces it at its entry (realised PnL and the fee to the wallet) and, past zero, opens the
rest at the fill price. Everything is valued at the current mark, bracket-aware
(engine.margin.value_positions on the new notional). So, for a cross account,
equity after = equity before + traded units * (mark - fill price) - fee.

Isolated accounts: a reduction releases isolated margin in proportion (as Book.apply_fill);
added exposure posts its initial margin at the fill price and the new bracket's rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine import margin
from engine.book import Book
from engine.levels import LEVEL_NAMES, classify
from engine.model import InputError, Side, check_price


@dataclass(frozen=True)
class LookAhead:
    """Before/after figures of one account for one hypothetical fill (quote currency)."""

    account: str
    symbol: str
    qty_before: float  # the position's signed contracts
    qty_after: float
    equity_before: float
    equity_after: float
    maintenance_margin_before: float
    maintenance_margin_after: float
    ratio_before: float
    ratio_after: float
    level_before: str
    level_after: str
    realized_pnl: float


def look_ahead(
    book: Book, account: str, symbol: str, side: Side | str, qty: float, price: float, fee: float = 0.0
) -> LookAhead:
    """The account's ratio and level after `qty` contracts of `symbol` fill at `price` on `side`."""
    if account not in book.account_index:
        raise InputError(f"look-ahead: unknown account {account!r}")
    if symbol not in book.symbol_index:
        raise InputError(f"look-ahead: unknown symbol {symbol!r}")
    if not (math.isfinite(qty) and qty > 0 and math.isfinite(fee)):
        raise InputError(f"look-ahead: qty must be positive and finite and fee finite, got {qty!r}, {fee!r}")
    price = check_price(symbol, price)
    try:
        sign = 1.0 if Side(side) is Side.BUY else -1.0
    except ValueError:
        raise InputError(f"look-ahead: side must be 'buy' or 'sell', got {side!r}") from None
    a = book.account_index[account]
    i = book.symbol_index[symbol]
    mark = float(book.mark[i])
    if not math.isfinite(mark):
        raise InputError(f"look-ahead: no mark for {symbol}")

    pos = book.account_positions(a)
    inst = np.append(book.pos_instrument[pos], i)  # the last row is a would-be new position
    qty_arr = np.append(book.pos_qty[pos], 0.0)
    entry = np.append(book.pos_entry[pos], price)
    iso_margin = np.append(book.pos_isolated_margin[pos], 0.0)
    held = np.flatnonzero(inst[:-1] == i)
    k = int(held[0]) if held.size else qty_arr.size - 1

    cs = float(book.contract_size[i])
    old_units = qty_arr[k] * cs
    trade_units = sign * qty * cs
    new_units = old_units + trade_units
    realized = 0.0
    if old_units == 0 or old_units * trade_units > 0:  # opens or grows: volume-weighted entry
        entry[k] = (old_units * entry[k] + trade_units * price) / new_units
    else:
        closed = -trade_units if abs(trade_units) <= abs(old_units) else old_units  # units closed, sign of old
        realized = closed * (price - entry[k])
        if abs(trade_units) > abs(old_units) or new_units == 0:
            entry[k] = price  # flipped (or flat): what is left opened at the fill price
    qty_arr[k] = new_units / cs

    marks = book.mark[inst]
    cs_arr = book.contract_size[inst]
    notional = np.abs(qty_arr * cs_arr) * marks
    v = margin.value_positions(
        qty_arr, entry, cs_arr, marks, margin.lookup_brackets(notional, inst, book.table), book.table
    )
    wallet = float(book.wallet[a]) + realized - fee
    equity = wallet + float(v.unrealized_pnl.sum())
    mm = float(v.maintenance_margin.sum())
    if book.isolated[a]:
        if old_units * new_units > 0 and abs(new_units) < abs(old_units):  # reduced
            iso_margin[k] *= abs(new_units) / abs(old_units)
        else:  # grown, opened or flipped: post initial margin on what was added
            added = abs(new_units) - (abs(old_units) if old_units * new_units > 0 else 0.0)
            kept = iso_margin[k] if old_units * new_units > 0 else 0.0
            iso_margin[k] = kept + added * price * book.table.im_rate[v.bracket[k]]
        ratio = float(np.min(margin.margin_ratio(iso_margin + v.unrealized_pnl, v.maintenance_margin)))
    else:
        ratio = float(margin.margin_ratio(np.array([equity]), np.array([mm]))[0])

    def level(r: float) -> str:
        code = int(classify(np.array([r]), book.warning[a], book.critical[a], book.liquidation[a])[0])
        return "UNKNOWN" if math.isnan(r) else LEVEL_NAMES[code]

    return LookAhead(
        account=account,
        symbol=symbol,
        qty_before=float(old_units / cs),
        qty_after=float(new_units / cs),
        equity_before=float(book.equity[a]),
        equity_after=equity,
        maintenance_margin_before=float(book.acct_mm[a]),
        maintenance_margin_after=mm,
        ratio_before=float(book.ratio[a]),
        ratio_after=ratio,
        level_before=level(float(book.ratio[a])),
        level_after=level(ratio),
        realized_pnl=realized,
    )
