"""Small books for the analytics tests: flat-rate and tiered instruments, accounts from tuples."""

from __future__ import annotations

from engine.book import Book
from engine.levels import Thresholds
from engine.model import Account, Bracket, Instrument, Position


def flat(symbol: str, mmr: float = 0.01, leverage: float = 50, underlying: str | None = None, group: str | None = None):
    """One-tier instrument: MM = notional * mmr, IM = notional / leverage."""
    return Instrument(
        symbol=symbol,
        underlying=underlying,
        group=group,
        brackets=[Bracket(floor=0, mmr=mmr, max_leverage=leverage)],
    )


def tiered(symbol: str, underlying: str | None = None, group: str | None = None) -> Instrument:
    """Two tiers: [0, 50k) at 0.4% (125x), [50k, inf) at 0.5% (100x), cum 50."""
    return Instrument(
        symbol=symbol,
        underlying=underlying,
        group=group,
        brackets=[
            Bracket(floor=0, cap=50_000, mmr=0.004, max_leverage=125),
            Bracket(floor=50_000, mmr=0.005, max_leverage=100),
        ],
    )


def book(
    instruments: list[Instrument],
    accounts: dict[str, tuple[float, list[tuple[str, float, float]]]],
    prices: dict[str, float],
    isolated: dict[str, list[float]] | None = None,
    thresholds: Thresholds | None = None,
) -> Book:
    """accounts: id -> (wallet, [(symbol, qty, entry)]); isolated: id -> isolated margin per position."""
    isolated = isolated or {}
    accts = []
    for acct_id, (wallet, positions) in accounts.items():
        iso = isolated.get(acct_id)
        accts.append(
            Account(
                id=acct_id,
                wallet_balance=wallet,
                margin_mode="isolated" if iso is not None else "cross",
                positions=[
                    Position(symbol=s, qty=q, entry_price=e, isolated_margin=None if iso is None else iso[n])
                    for n, (s, q, e) in enumerate(positions)
                ],
            )
        )
    b = Book(instruments, accts, thresholds)
    b.set_prices(prices, received=0.0)
    b.revalue()
    return b
