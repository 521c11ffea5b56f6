"""The book: valuation, ratios, levels, liquidation prices, refusals, and properties.

Hand cases write their arithmetic in comments; the expected numbers are never computed by the
engine. Property tests compare the vectorised book with incremental ticks, with its own
liquidation prices, and with a straightforward per-position reference written here.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.book import Book
from engine.levels import Level, Thresholds, classify_one
from engine.model import Account, Bracket, InputError, Instrument, OpenOrder, Position

# Binance USD-M BTCUSDT brackets; derived cum: 0, 50, 1300, 16300, 266300, ...
BTC = Instrument(
    symbol="BTCUSDT",
    brackets=[
        {"floor": f, "mmr": m, "max_leverage": lev}
        for f, m, lev in [
            (0, 0.004, 125),
            (50_000, 0.005, 100),
            (250_000, 0.01, 50),
            (1_000_000, 0.025, 20),
            (10_000_000, 0.05, 10),
            (20_000_000, 0.1, 5),
            (50_000_000, 0.125, 4),
            (100_000_000, 0.15, 3),
            (200_000_000, 0.25, 2),
            (300_000_000, 0.5, 1),
        ]
    ],
)
# An ETH-like table: cum 0, 50_000*(0.0065-0.005) = 75, 250_000*(0.01-0.0065) + 75 = 950.
ETH = Instrument(
    symbol="ETHUSDT",
    brackets=[
        {"floor": 0, "mmr": 0.005, "max_leverage": 100},
        {"floor": 50_000, "mmr": 0.0065, "max_leverage": 75},
        {"floor": 250_000, "mmr": 0.01, "max_leverage": 50},
    ],
)
# One flat tier at 1/16, so ratios on the thresholds are exact in binary.
FLAT = Instrument(symbol="FLAT", brackets=[{"floor": 0, "mmr": 0.0625, "max_leverage": 8}])
# No max leverage: initial margin unknown.
NOLEV = Instrument(symbol="NOLEV", brackets=[{"floor": 0, "mmr": 0.01}, {"floor": 10_000, "mmr": 0.02}])


def pos(symbol: str, qty: float, entry: float, **kw) -> Position:
    return Position(symbol=symbol, qty=qty, entry_price=entry, **kw)


def book_of(accounts: list[Account], prices: dict[str, float], instruments=(BTC, ETH, FLAT, NOLEV)) -> Book:
    book = Book(list(instruments), accounts)
    book.set_prices(prices, received=0.0)
    book.revalue()
    return book


def one(acct_id="a1", wallet=10_000.0, positions=(), **kw) -> Account:
    return Account(id=acct_id, wallet_balance=wallet, positions=list(positions), **kw)


# ---------------------------------------------------------------------------- hand-computed cases
def test_half_btc_long_at_61k_has_ratio_86_07():
    # 0.5 BTC @ 60_000, mark 61_000, wallet 10_000:
    #   notional 0.5 * 61_000 = 30_500 -> tier 0 (mmr 0.004, cum 0)
    #   upnl 0.5 * 1_000 = 500; equity 10_500
    #   MM 30_500 * 0.004 = 122; ratio 10_500 / 122 = 86.0655737704918
    #   IM 30_500 / 125 = 244
    #   LP = (10_000 + 0 - 0.5*60_000) / (0.5*0.004 - 0.5) = -20_000 / -0.498 = 40_160.64257028112
    #   (notional there 20_080: tier 0, as assumed)
    book = book_of([one(positions=[pos("BTCUSDT", 0.5, 60_000)])], {"BTCUSDT": 61_000})
    assert book.notional[0] == pytest.approx(30_500)
    assert book.unrealized_pnl[0] == pytest.approx(500)
    assert book.equity[0] == pytest.approx(10_500)
    assert book.maintenance_margin[0] == pytest.approx(122)
    assert book.ratio[0] == pytest.approx(86.0655737704918, rel=1e-12)
    assert book.initial_margin[0] == pytest.approx(244)
    assert book.acct_im[0] == pytest.approx(244)
    assert book.liquidation_prices()[0] == pytest.approx(40_160.64257028112, rel=1e-12)
    assert book.level[0] == Level.SAFE


def test_two_btc_short_at_60k_liquidates_at_64_701_49():
    # short 2 BTC @ 60_000, mark 60_000, wallet 10_000 (cross):
    #   notional 120_000 -> tier 1 (mmr 0.005, cum 50); MM 600 - 50 = 550; ratio 10_000/550 = 18.1818...
    #   LP = (10_000 + 50 - (-1)*2*60_000) / (2*0.005 - (-1)*2) = 130_050 / 2.01 = 64_701.49253731343
    #   notional there 129_402.99: tier 1, as assumed.
    #   check: equity 10_000 - 2*4_701.4925 = 597.015 = 129_402.985*0.005 - 50
    book = book_of([one(positions=[pos("BTCUSDT", -2, 60_000)])], {"BTCUSDT": 60_000})
    assert book.maintenance_margin[0] == pytest.approx(550)
    assert book.ratio[0] == pytest.approx(10_000 / 550)
    assert book.liquidation_prices()[0] == pytest.approx(64_701.49253731343, rel=1e-12)


def test_cross_account_liquidation_prices_count_the_other_positions():
    # wallet 5_000; long 1 BTC @ 60_000 (mark 61_000); short 10 ETH @ 3_000 (mark 3_100)
    #   BTC: notional 61_000 -> tier 1: MM 305 - 50 = 255, upnl +1_000
    #   ETH: notional 31_000 -> tier 0: MM 155, upnl -1_000
    #   equity 5_000; MM 410; ratio 5_000/410 = 12.195121951219512
    #   LP BTC (others: MM 155, upnl -1_000), tier 1:
    #     (5_000 - 155 - 1_000 + 50 - 60_000) / (0.005 - 1) = -56_105 / -0.995 = 56_386.93467336683
    #   LP ETH (others: MM 255, upnl +1_000), tier 0:
    #     (5_000 - 255 + 1_000 + 0 + 30_000) / (10*0.005 + 10) = 35_745 / 10.05 = 3_556.7164179104477
    acct = one(wallet=5_000, positions=[pos("BTCUSDT", 1, 60_000), pos("ETHUSDT", -10, 3_000)])
    book = book_of([acct], {"BTCUSDT": 61_000, "ETHUSDT": 3_100})
    assert book.maintenance_margin.tolist() == pytest.approx([255, 155])
    assert book.equity[0] == pytest.approx(5_000)
    assert book.ratio[0] == pytest.approx(12.195121951219512, rel=1e-12)
    lp = book.liquidation_prices()
    assert lp[0] == pytest.approx(56_386.93467336683, rel=1e-12)
    assert lp[1] == pytest.approx(3_556.7164179104477, rel=1e-12)


def test_isolated_account_ratio_is_the_lowest_position_ratio():
    # isolated, wallet 20_000 (not used by the ratios)
    #   BTC long 0.5 @ 60_000, isolated margin 1_000, mark 61_000: upnl 500, MM 122
    #     ratio (1_000 + 500) / 122 = 12.295081967213115
    #     LP (1_000 - 30_000) / (0.5*0.004 - 0.5) = -29_000 / -0.498 = 58_232.93172690763
    #   ETH short 10 @ 3_000, isolated margin 1_300, mark 3_100: upnl -1_000, MM 155
    #     ratio (1_300 - 1_000) / 155 = 1.935483870967742 -> WARNING (<= 2)
    #     LP (1_300 + 30_000) / (10*0.005 + 10) = 31_300 / 10.05 = 3_114.427860696517
    #   account ratio = min = 1.935483870967742, level WARNING
    acct = one(
        wallet=20_000,
        margin_mode="isolated",
        positions=[
            pos("BTCUSDT", 0.5, 60_000, isolated_margin=1_000),
            pos("ETHUSDT", -10, 3_000, isolated_margin=1_300),
        ],
    )
    book = book_of([acct], {"BTCUSDT": 61_000, "ETHUSDT": 3_100})
    assert book.position_ratio(np.arange(2)).tolist() == pytest.approx([12.295081967213115, 1.935483870967742])
    assert book.ratio[0] == pytest.approx(1.935483870967742, rel=1e-12)
    assert book.level[0] == Level.WARNING
    lp = book.liquidation_prices()
    assert lp[0] == pytest.approx(58_232.93172690763, rel=1e-12)
    assert lp[1] == pytest.approx(3_114.427860696517, rel=1e-12)


def test_liquidation_price_in_a_lower_tier_than_the_current_one():
    # long 5 BTC @ 60_000, mark 60_000, wallet 60_000: notional 300_000 -> tier 2 (0.01, cum 1_300)
    #   tier 2: (60_000 + 1_300 - 300_000) / (5*0.01 - 5) = 48_222.22 -> notional 241_111 < 250_000: not tier 2
    #   tier 1: (60_000 + 50 - 300_000) / (5*0.005 - 5) = -239_950 / -4.975 = 48_231.155778894475
    #           -> notional 241_155.78 in [50_000, 250_000): tier 1
    book = book_of([one(wallet=60_000, positions=[pos("BTCUSDT", 5, 60_000)])], {"BTCUSDT": 60_000})
    assert book.pos_bracket[0] - book.table.start[0] == 2
    assert book.liquidation_prices()[0] == pytest.approx(48_231.155778894475, rel=1e-12)


def test_a_maintenance_amount_that_makes_margin_jump_still_gets_its_liquidation_price():
    # Explicit cum -5_000 on the upper tier (not the continuous 1_000*(0.02-0.01) = 10):
    #   MM jumps at notional 1_000 from 10 to 1_000*0.02 + 5_000 = 5_020.
    # long 1 @ 2_000, wallet 2_100: base = 2_100 - 2_000 = 100 > 0 (no root below the jump),
    #   tier 1: LP = (100 + (-5_000)) / (1*0.02 - 1) = -4_900 / -0.98 = 5_000 -> notional 5_000, tier 1
    jumpy = Instrument(
        symbol="JUMPY",
        brackets=[{"floor": 0, "mmr": 0.01}, {"floor": 1_000, "mmr": 0.02, "maintenance_amount": -5_000}],
    )
    book = book_of([one(wallet=2_100, positions=[pos("JUMPY", 1, 2_000)])], {"JUMPY": 2_000}, instruments=(jumpy,))
    assert book.liquidation_prices()[0] == pytest.approx(5_000)


def test_a_fully_collateralised_long_has_no_liquidation_price():
    # long 0.5 BTC @ 60_000, wallet 40_000: LP = (40_000 - 30_000) / (0.002 - 0.5) < 0 -> none
    book = book_of([one(wallet=40_000, positions=[pos("BTCUSDT", 0.5, 60_000)])], {"BTCUSDT": 61_000})
    assert math.isnan(book.liquidation_prices()[0])


@pytest.mark.parametrize(
    "wallet,level",
    [
        (12.5, Level.WARNING),  # 12.5 / 6.25 = 2.0 exactly
        (12.500001, Level.SAFE),
        (9.375, Level.CRITICAL),  # 9.375 / 6.25 = 1.5 exactly
        (9.375001, Level.WARNING),
        (7.5, Level.LIQUIDATION),  # 7.5 / 6.25 = 1.2 (the double nearest 1.2, as the threshold)
        (7.500001, Level.CRITICAL),
        (0.0, Level.LIQUIDATION),  # equity 0
        (-5.0, Level.LIQUIDATION),  # equity < 0
    ],
)
def test_a_ratio_exactly_on_a_threshold_takes_the_more_severe_level(wallet, level):
    # long 1 FLAT @ 100, mark 100: notional 100, MM 100 * 0.0625 = 6.25, upnl 0, equity = wallet
    book = book_of([one(wallet=wallet, positions=[pos("FLAT", 1, 100)])], {"FLAT": 100})
    assert book.maintenance_margin[0] == 6.25
    assert book.level[0] == level
    assert classify_one(float(book.ratio[0]), Thresholds()) == level


def test_negative_equity_from_a_loss_is_liquidation():
    # long 1 FLAT @ 100, mark 80, wallet 10: equity 10 - 20 = -10, MM 80/16 = 5, ratio -2
    book = book_of([one(wallet=10, positions=[pos("FLAT", 1, 100)])], {"FLAT": 80})
    assert book.equity[0] == -10
    assert book.ratio[0] == -2
    assert book.level[0] == Level.LIQUIDATION


def test_an_account_without_positions_has_infinite_ratio_and_is_safe():
    book = book_of([one(wallet=1_000), one("a2", positions=[pos("FLAT", 1, 100)])], {"FLAT": 100})
    assert math.isinf(book.ratio[0]) and book.ratio[0] > 0
    assert book.level[0] == Level.SAFE
    assert book.acct_mm[0] == 0 and book.equity[0] == 1_000


def test_available_margin_counts_only_exposure_increasing_orders():
    # long 1 BTC @ 60_000, mark 60_000, wallet 10_000: IM 60_000/100 = 600, free 9_400
    #   buy 0.5 @ 59_000 (grows the long): 88_500 after -> tier 1 (100x): 0.5*59_000/100 = 295
    #   reduce-only sell 0.5 @ 62_000: 0
    #   sell 0.4 @ 62_000 (reduces, smaller than the long): 0
    #   sell 3 @ 100_000 (flips to short 2): 2 * 100_000 = 200_000 -> tier 1 (100x): 2_000
    #     (the flipped position is 2, not 1 + 2 = 3 -> 300_000, tier 2 at 50x)
    #   available = 9_400 - 295 - 2_000 = 7_105
    orders = {
        "grow": OpenOrder(symbol="BTCUSDT", side="buy", qty=0.5, price=59_000),
        "reduce_only": OpenOrder(symbol="BTCUSDT", side="sell", qty=0.5, price=62_000, reduce_only=True),
        "smaller_opposite": OpenOrder(symbol="BTCUSDT", side="sell", qty=0.4, price=62_000),
        "flip": OpenOrder(symbol="BTCUSDT", side="sell", qty=3, price=100_000),
    }
    expected = {"grow": 295, "reduce_only": 0, "smaller_opposite": 0, "flip": 2_000}
    for name, order in orders.items():
        acct = one(positions=[pos("BTCUSDT", 1, 60_000)], open_orders=[order])
        book = book_of([acct], {"BTCUSDT": 60_000})
        assert book.equity[0] - book.acct_im[0] == pytest.approx(9_400)
        assert book.reserved_initial_margin()[0] == pytest.approx(expected[name]), name
    acct = one(positions=[pos("BTCUSDT", 1, 60_000)], open_orders=list(orders.values()))
    book = book_of([acct], {"BTCUSDT": 60_000})
    assert book.equity[0] - book.acct_im[0] - book.reserved_initial_margin()[0] == pytest.approx(7_105)


def test_an_instrument_without_max_leverage_leaves_initial_margin_unknown():
    book = book_of([one(positions=[pos("NOLEV", 1, 100), pos("FLAT", 1, 100)])], {"NOLEV": 100, "FLAT": 100})
    assert math.isnan(book.initial_margin[0])
    assert book.initial_margin[1] == pytest.approx(100 / 8)
    assert math.isnan(book.acct_im[0])
    # maintenance margin is known: 100 * 0.01 + 100 * 0.0625 = 7.25
    assert book.acct_mm[0] == pytest.approx(7.25)


def test_an_unpriced_position_leaves_the_ratio_unknown_and_a_first_tick_does_not_count_it_as_zero():
    acct = one(wallet=100, positions=[pos("FLAT", 1, 100), pos("ETHUSDT", -1_000, 1)])
    book = Book([BTC, ETH, FLAT], [acct])
    assert math.isnan(book.ratio[0]) and book.level[0] == -1
    book.apply_tick(2, 100.0, 1.0)  # FLAT priced, ETH still not
    assert math.isnan(book.ratio[0]) and book.level[0] == -1
    # ETH at 1: short 1_000 @ 1, notional 1_000, MM 5; FLAT MM 6.25; equity 100 -> 100 / 11.25
    book.apply_tick(1, 1.0, 2.0)
    assert book.ratio[0] == pytest.approx(100 / 11.25)
    assert book.level[0] == Level.SAFE


# ---------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 0.0, -1.0])
def test_a_bad_price_is_refused_and_leaves_the_book_unchanged(bad):
    book = book_of([one(positions=[pos("BTCUSDT", 0.5, 60_000)])], {"BTCUSDT": 61_000, "ETHUSDT": 3_000})
    mark, ratio = book.mark.copy(), book.ratio.copy()
    with pytest.raises(InputError, match="price for BTCUSDT"):
        book.set_prices({"ETHUSDT": 3_100, "BTCUSDT": bad}, received=1.0)
    np.testing.assert_array_equal(book.mark, mark)  # ETH, listed first, was not applied either
    with pytest.raises(InputError, match="price for BTCUSDT"):
        book.set_marks(np.array([1, 0]), np.array([3_100, bad]), received=1.0)
    np.testing.assert_array_equal(book.mark, mark)
    with pytest.raises(InputError, match="price for BTCUSDT"):
        book.apply_tick(0, bad, 1.0)
    np.testing.assert_array_equal(book.mark, mark)
    np.testing.assert_array_equal(book.ratio, ratio)


def test_a_price_for_an_unknown_symbol_is_refused_and_leaves_the_book_unchanged():
    book = book_of([one(positions=[pos("BTCUSDT", 0.5, 60_000)])], {"BTCUSDT": 61_000})
    mark = book.mark.copy()
    with pytest.raises(InputError, match="unknown symbol 'DOGEUSDT'"):
        book.set_prices({"BTCUSDT": 62_000, "DOGEUSDT": 0.1}, received=1.0)
    np.testing.assert_array_equal(book.mark, mark)


def test_a_position_in_an_unknown_symbol_is_refused():
    with pytest.raises(InputError, match="account a1 position 1: unknown symbol 'DOGEUSDT'"):
        Book([BTC], [one(positions=[pos("BTCUSDT", 1, 1), pos("DOGEUSDT", 1, 1)])])


def test_an_open_order_in_an_unknown_symbol_is_refused():
    order = OpenOrder(symbol="DOGEUSDT", side="buy", qty=1, price=1)
    with pytest.raises(InputError, match="account a1 open order 0: unknown symbol"):
        Book([BTC], [one(open_orders=[order])])


def test_duplicate_account_ids_are_refused():
    with pytest.raises(InputError, match="account a1: duplicate account id"):
        Book([BTC], [one(), one()])
    with pytest.raises(InputError, match="account a1: duplicate account id"):
        Book.from_arrays([BTC], ["a1", "a1"], [1.0, 2.0], [False, False], [], [], [], [])


def test_an_instrument_listed_twice_is_refused():
    with pytest.raises(InputError, match="instrument BTCUSDT: listed twice"):
        Book([BTC, BTC], [])


@pytest.mark.parametrize("qty", [math.nan, math.inf, -math.inf])
def test_a_non_finite_quantity_is_refused(qty):
    with pytest.raises(ValidationError, match="qty"):
        pos("BTCUSDT", qty, 60_000)
    with pytest.raises(InputError, match=r"position 0 \(account a1\): qty"):
        Book.from_arrays([BTC], ["a1"], [1.0], [False], [0], [0], [qty], [60_000.0])


@pytest.mark.parametrize("entry", [0.0, -1.0, math.nan, math.inf])
def test_a_bad_entry_price_is_refused(entry):
    with pytest.raises(ValidationError, match="entry_price"):
        pos("BTCUSDT", 1, entry)


def test_an_isolated_account_position_without_isolated_margin_is_refused():
    with pytest.raises(ValidationError, match=r"position 0 \(BTCUSDT\) needs isolated_margin"):
        one(margin_mode="isolated", positions=[pos("BTCUSDT", 1, 1)])
    with pytest.raises(InputError, match="isolated_margin"):
        Book.from_arrays([BTC], ["a1"], [1.0], [True], [0], [0], [1.0], [1.0])


def test_a_non_finite_wallet_is_refused():
    with pytest.raises(ValidationError, match="wallet_balance"):
        one(wallet=math.nan)
    with pytest.raises(InputError, match="account a1: wallet_balance"):
        Book.from_arrays([BTC], ["a1"], [math.inf], [False], [], [], [], [])


def test_from_arrays_refuses_positions_not_grouped_by_account():
    with pytest.raises(InputError, match="grouped by ascending account"):
        Book.from_arrays([BTC], ["a1", "a2"], [1.0, 1.0], [False, False], [1, 0], [0, 0], [1.0, 1.0], [1.0, 1.0])


# ---------------------------------------------------------------------------- random books
@st.composite
def instruments(draw, n: int):
    out = []
    for i in range(n):
        k = draw(st.integers(1, 6))
        steps = draw(st.lists(st.floats(100.0, 1e6), min_size=k - 1, max_size=k - 1))
        floors = [0.0, *np.cumsum(steps).tolist()]
        rate = draw(st.floats(0.001, 0.05))
        brackets = []
        for f in floors:
            lev = draw(st.one_of(st.none(), st.floats(1.0, 125.0))) if i == 0 else min(125.0, 0.5 / rate)
            brackets.append({"floor": f, "mmr": rate, "max_leverage": lev})
            rate = min(0.9, rate * draw(st.floats(1.05, 2.5)))
        size = draw(st.sampled_from([1.0, 1.0, 0.001, 10.0]))
        out.append(Instrument(symbol=f"I{i}", contract_size=size, brackets=brackets))
    return out


@st.composite
def books(draw):
    """Instruments with random tiers, cross and isolated accounts, random positions and prices."""
    n_inst = draw(st.integers(1, 4))
    insts = draw(instruments(n_inst))
    prices = {i.symbol: draw(st.floats(1.0, 1e5)) for i in insts}
    accounts = []
    for a in range(draw(st.integers(1, 6))):
        isolated = draw(st.booleans())
        # One-way mode: at most one position per symbol in an account (the Book refuses more).
        held = draw(st.lists(st.integers(0, n_inst - 1), max_size=n_inst, unique=True))
        positions = []
        for i in held:
            size = draw(st.floats(0.01, 1_000.0)) * draw(st.sampled_from([1.0, -1.0]))
            entry = prices[insts[i].symbol] * draw(st.floats(0.5, 1.5))
            margin = draw(st.floats(0.0, 1e6)) if isolated else None
            positions.append(pos(insts[i].symbol, size, entry, isolated_margin=margin))
        wallet = draw(st.floats(-1e3, 1e7))
        mode = "isolated" if isolated else "cross"
        accounts.append(Account(id=f"a{a}", wallet_balance=wallet, margin_mode=mode, positions=positions))
    return insts, accounts, prices


def fresh_book(insts, accounts, prices) -> Book:
    book = Book(insts, accounts)
    book.set_prices(prices, received=0.0)
    book.revalue()
    return book


def scale_of(book: Book) -> np.ndarray:
    """Per account: |wallet| + sum |PnL| + sum MM + sum notional, the size rounding is relative to."""
    parts = np.abs(book.unrealized_pnl) + np.abs(book.maintenance_margin) + np.abs(book.notional)
    return np.abs(book.wallet) + np.bincount(book.pos_account, weights=parts, minlength=book.n_accounts)


def assert_close(got, want, tol, what):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    with np.errstate(invalid="ignore"):
        ok = same | (np.abs(got - want) <= tol)
    assert ok.all(), f"{what}: {got[~ok]} vs {want[~ok]}"


def assert_books_agree(book: Book, ref: Book, lazy: bool = True) -> None:
    """Every account's equity, MM, ratio, level and every position's bracket and MM, to 1e-9.

    With lazy=False the figures computed on first read (IM, account notional) are not read:
    reading them reloads the tick plans, which could hide a missing reload elsewhere.
    """
    scale = scale_of(ref)
    assert book.pos_bracket.tolist() == ref.pos_bracket.tolist()
    assert_close(book.maintenance_margin, ref.maintenance_margin, 1e-9 * np.abs(ref.maintenance_margin), "pos MM")
    assert_close(book.notional, ref.notional, 1e-9 * np.abs(ref.notional), "notional")
    assert_close(book.unrealized_pnl, ref.unrealized_pnl, 1e-9 * scale[ref.pos_account], "pos PnL")
    assert_close(book.equity, ref.equity, 1e-9 * scale, "equity")
    assert_close(book.acct_mm, ref.acct_mm, 1e-9 * scale, "account MM")
    if lazy:
        assert_close(book.acct_notional, ref.acct_notional, 1e-9 * scale, "account notional")
        assert_close(book.acct_im, ref.acct_im, 1e-9 * scale, "account IM")
        assert_close(book.initial_margin, ref.initial_margin, 1e-9 * np.abs(ref.notional), "pos IM")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_tol = 1e-9 * (np.abs(ref.ratio) + np.where(ref.acct_mm > 0, scale / ref.acct_mm, 0.0))
    assert_close(book.ratio, ref.ratio, ratio_tol, "ratio")
    near = np.zeros(ref.n_accounts, dtype=bool)
    for thr in (ref.warning, ref.critical, ref.liquidation):
        with np.errstate(invalid="ignore"):
            near |= np.abs(ref.ratio - thr) <= ratio_tol
    assert book.level[~near].tolist() == ref.level[~near].tolist()


# (b) incremental ticks == full recompute
@settings(max_examples=80)
@given(books(), st.data())
def test_incremental_ticks_equal_a_full_recompute(spec, data):
    insts, accounts, prices = spec
    book = fresh_book(insts, accounts, prices)
    marks = dict(prices)
    ticks = data.draw(st.lists(st.tuples(st.integers(0, len(insts) - 1), st.floats(0.3, 3.0)), max_size=25))
    for i, factor in ticks:
        symbol = insts[i].symbol
        marks[symbol] *= factor
        book.apply_tick(i, marks[symbol], 1.0)
    assert_books_agree(book, fresh_book(insts, accounts, marks))


def recomputed(book: Book, insts) -> Book:
    """A fresh book from another's current state (quantities, wallets, marks), fully revalued."""
    ref = Book.from_arrays(
        insts,
        [i.id for i in book.info],
        book.wallet,
        book.isolated,
        book.pos_account,
        book.pos_instrument,
        book.pos_qty,
        book.pos_entry,
        book.pos_isolated_margin,
    )
    ref.set_marks(np.arange(len(insts)), book.mark, 0.0)
    ref.revalue()
    return ref


@settings(max_examples=60)
@given(books(), st.data())
def test_ticks_between_fills_equal_a_full_recompute(spec, data):
    # A fill changes a quantity and the wallet: the next tick must not use the old quantity.
    insts, accounts, prices = spec
    book = fresh_book(insts, accounts, prices)
    ops = data.draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("tick"), st.integers(0, len(insts) - 1), st.floats(0.5, 2.0)),
                st.tuples(st.just("fill"), st.integers(0, 50), st.floats(0.1, 1.0)),
            ),
            max_size=20,
        )
    )
    for op, k, x in ops:
        if op == "tick":
            book.apply_tick(k, float(book.mark[k]) * x, 1.0)
        elif book.pos_qty.size and book.pos_qty[k % book.pos_qty.size] != 0:
            p = k % book.pos_qty.size
            book.apply_fill(p, -book.pos_qty[p] * x, float(book.mark[book.pos_instrument[p]]))
        assert_books_agree(book, recomputed(book, insts), lazy=False)
    assert_books_agree(book, recomputed(book, insts))


@settings(max_examples=60)
@given(books(), st.data())
def test_ticks_between_marks_revalues_and_reads_equal_a_full_recompute(spec, data):
    # The guard sets marks, then ticks the instruments or revalues everything; the IM figures
    # are computed when read. Every mix must equal a full recompute.
    insts, accounts, prices = spec
    n_inst = len(insts)
    book = fresh_book(insts, accounts, prices)
    factor = st.floats(0.5, 2.0)
    ops = data.draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("tick"), st.integers(0, n_inst - 1), factor),
                st.tuples(st.just("marks+revalue"), st.integers(0, n_inst - 1), factor),
                st.tuples(st.just("marks+tick"), st.integers(0, n_inst - 1), factor),
                st.tuples(st.just("read"), st.just(0), st.just(1.0)),
            ),
            max_size=20,
        )
    )
    for op, k, x in ops:
        if op == "tick":
            book.apply_tick(k, float(book.mark[k]) * x, 1.0)
        elif op == "marks+revalue":
            book.set_marks(np.array([k]), book.mark[[k]] * x, 1.0)
            book.revalue()
        elif op == "marks+tick":
            book.set_marks(np.array([k]), book.mark[[k]] * x, 1.0)
            book.apply_tick(k, float(book.mark[k]), 1.0)
        else:
            _ = book.acct_im, book.initial_margin
        assert_books_agree(book, recomputed(book, insts), lazy=False)
    assert_books_agree(book, recomputed(book, insts))


# (c) at the liquidation price, equity == maintenance margin
@settings(max_examples=80)
@given(books())
def test_revaluing_at_the_liquidation_price_gives_ratio_one(spec):
    insts, accounts, prices = spec
    book = fresh_book(insts, accounts, prices)
    lp = book.liquidation_prices()
    for p in np.flatnonzero(np.isfinite(lp)):
        symbol = insts[book.pos_instrument[p]].symbol
        at = fresh_book(insts, accounts, {**prices, symbol: float(lp[p])})
        a = book.pos_account[p]
        if book.isolated[a]:
            equity = at.pos_isolated_margin[p] + at.unrealized_pnl[p]
            mm = at.maintenance_margin[p]
            scale = abs(at.pos_isolated_margin[p]) + abs(at.unrealized_pnl[p]) + at.notional[p]
            scale += abs(at.pos_qty[p] * at.pos_cs[p]) * at.pos_entry[p]
        else:
            equity, mm = at.equity[a], at.acct_mm[a]
            scale = scale_of(at)[a] + np.sum(np.abs(at.pos_qty * at.pos_cs * at.pos_entry)[at.pos_account == a])
        # ratio == 1 to 1e-7 relative, allowing for rounding of the figures it is the balance of
        assert abs(equity - mm) <= 1e-7 * mm + 1e-11 * scale, (p, equity, mm)


# (d) the vectorised book against a straightforward per-position reference
def reference(insts, accounts, prices):
    """Per-position Python: values, brackets, sums, ratio, level and liquidation prices."""
    by_symbol = {i.symbol: i for i in insts}
    out_pos, out_acct = [], []
    for acct in accounts:
        rows = []
        for p in acct.positions:
            inst = by_symbol[p.symbol]
            mark = prices[p.symbol]
            units = p.qty * inst.contract_size
            notional = abs(units) * mark
            k = 0
            while k + 1 < len(inst.brackets) and notional >= inst.brackets[k + 1].floor:
                k += 1
            b = inst.brackets[k]
            mm = notional * b.mmr - b.maintenance_amount
            im = notional / b.max_leverage if b.max_leverage else math.nan
            rows.append({"k": k, "notional": notional, "upnl": units * (mark - p.entry_price), "mm": mm, "im": im})
        upnl = sum(r["upnl"] for r in rows)
        mm = sum(r["mm"] for r in rows)
        equity = acct.wallet_balance + upnl
        if acct.margin_mode == "isolated" and rows:
            ratios = [
                (p.isolated_margin + r["upnl"]) / r["mm"] if r["mm"] > 0 else math.inf
                for p, r in zip(acct.positions, rows, strict=True)
            ]
            ratio = min(ratios)
        else:
            ratio = equity / mm if mm > 0 else math.inf
        for p, r in zip(acct.positions, rows, strict=True):
            inst = by_symbol[p.symbol]
            q = abs(p.qty) * inst.contract_size
            s = 1.0 if p.qty > 0 else -1.0
            if acct.margin_mode == "isolated":
                base = p.isolated_margin - s * q * p.entry_price
            else:
                base = acct.wallet_balance - (mm - r["mm"]) + (upnl - r["upnl"]) - s * q * p.entry_price
            lp = math.nan
            for j, b in enumerate(inst.brackets):  # every tier; keep the one holding its own price
                cand = (base + b.maintenance_amount) / (q * b.mmr - s * q)
                n = q * max(cand, 0.0)
                cap = inst.brackets[j + 1].floor if j + 1 < len(inst.brackets) else math.inf
                if b.floor <= n < cap:
                    lp = cand
            r["lp"] = lp if lp > 0 else math.nan
            r["base_scale"] = abs(base) + q * p.entry_price + q * prices[p.symbol]
            out_pos.append(r)
        out_acct.append({"equity": equity, "mm": mm, "ratio": ratio, "level": classify_one(ratio, Thresholds())})
    return out_pos, out_acct


@settings(max_examples=80)
@given(books())
def test_the_vectorised_book_agrees_with_a_per_position_reference(spec):
    insts, accounts, prices = spec
    assume(all(p.qty != 0 for a in accounts for p in a.positions))
    book = fresh_book(insts, accounts, prices)
    ref_pos, ref_acct = reference(insts, accounts, prices)
    scale = scale_of(book)
    local = book.pos_bracket - book.table.start[book.pos_instrument]
    assert local.tolist() == [r["k"] for r in ref_pos]
    assert_close(book.notional, [r["notional"] for r in ref_pos], 1e-9 * book.notional, "notional")
    assert_close(book.maintenance_margin, [r["mm"] for r in ref_pos], 1e-9 * book.notional, "MM")
    assert_close(book.initial_margin, [r["im"] for r in ref_pos], 1e-9 * book.notional, "IM")
    assert_close(book.unrealized_pnl, [r["upnl"] for r in ref_pos], 1e-9 * scale[book.pos_account], "PnL")
    assert_close(book.equity, [r["equity"] for r in ref_acct], 1e-9 * scale, "equity")
    assert_close(book.acct_mm, [r["mm"] for r in ref_acct], 1e-9 * scale, "account MM")
    want_ratio = np.array([r["ratio"] for r in ref_acct])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_tol = 1e-9 * (np.abs(want_ratio) + np.where(book.acct_mm > 0, scale / book.acct_mm, 0.0))
    assert_close(book.ratio, want_ratio, ratio_tol, "ratio")
    for a, r in enumerate(ref_acct):
        near = any(abs(r["ratio"] - t) <= ratio_tol[a] for t in (2.0, 1.5, 1.2))
        if not near:
            assert book.level[a] == r["level"]
    # Liquidation prices: the same to 1e-9, judged on the notional (Q * LP) against the size
    # of the figures LP is the balance of; a price within that rounding of 0 may be missing on
    # one side only.
    lp = book.liquidation_prices()
    q = np.abs(book.pos_qty * book.pos_cs)
    want = np.array([r["lp"] for r in ref_pos])
    tol = np.array([r["base_scale"] for r in ref_pos]) * 1e-9
    one_sided = np.isnan(lp) != np.isnan(want)
    assert np.all(q[one_sided] * np.nan_to_num(np.fmax(lp, want)[one_sided]) <= tol[one_sided])
    both = ~np.isnan(lp) & ~np.isnan(want)
    assert np.all(q[both] * np.abs(lp[both] - want[both]) <= tol[both])


def test_from_arrays_builds_the_same_book_as_the_records():
    accts = [
        one("c", wallet=5_000, positions=[pos("BTCUSDT", 1, 60_000), pos("ETHUSDT", -10, 3_000)]),
        one("e"),
        one("i", margin_mode="isolated", positions=[pos("ETHUSDT", 3, 2_900, isolated_margin=500)]),
    ]
    prices = {"BTCUSDT": 61_000, "ETHUSDT": 3_100}
    a = book_of(accts, prices, instruments=(BTC, ETH))
    b = Book.from_arrays(
        [BTC, ETH],
        ["c", "e", "i"],
        [5_000, 10_000, 10_000],
        [False, False, True],
        [0, 0, 2],
        [0, 1, 1],
        [1, -10, 3],
        [60_000, 3_000, 2_900],
        [math.nan, math.nan, 500],
    )
    b.set_prices(prices, received=0.0)
    b.revalue()
    for name in ("equity", "ratio", "acct_mm", "acct_upnl", "acct_im", "level", "maintenance_margin"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a.liquidation_prices(), b.liquidation_prices())


def test_two_positions_in_one_symbol_in_one_account_are_refused_by_name():
    inst = Instrument(symbol="BTCUSDT", brackets=[Bracket(floor=0, mmr=0.004)])
    acct = Account(
        id="acct-9",
        wallet_balance=1000,
        positions=[
            Position(symbol="BTCUSDT", qty=1, entry_price=100),
            Position(symbol="BTCUSDT", qty=-1, entry_price=100),
        ],
    )
    with pytest.raises(InputError, match="account acct-9: more than one position in BTCUSDT"):
        Book([inst], [acct])


@pytest.mark.parametrize("field", ["max_leverage", "maintenance_amount"])
def test_a_non_finite_bracket_value_is_refused(field):
    with pytest.raises(ValidationError, match="finite"):
        Bracket(floor=0, mmr=0.01, **{field: float("inf")})


@settings(max_examples=40)
@given(books())
def test_liquidation_prices_of_some_positions_equal_the_full_solve(spec):
    book = fresh_book(*spec)
    full = book.liquidation_prices()
    for a in range(book.n_accounts):
        pos = book.account_positions(a)
        np.testing.assert_array_equal(book.liquidation_prices(pos), full[pos])


# ---------------------------------------------------------------------------- later account records
def test_update_accounts_writes_a_new_quantity_and_wallet_in_place():
    # Before: 0.5 BTC @ 60_000, mark 61_000, wallet 10_000 -> ratio 10_500 / 122 = 86.0655737704918.
    # After: 1.0 BTC @ 60_000, wallet 12_000:
    #   notional 61_000 -> tier 1 (mmr 0.005, cum 50): MM 305 - 50 = 255
    #   upnl 1_000; equity 13_000; ratio 13_000 / 255 = 50.98039215686274
    book = book_of([one(positions=[pos("BTCUSDT", 0.5, 60_000)]), one("a2")], {"BTCUSDT": 61_000})
    columns = (book.ratio, book.equity, book.wallet, book.acct_mm, book.pos_qty)
    assert book.ratio[0] == pytest.approx(86.0655737704918, rel=1e-12)
    sync = book.update_accounts([one(wallet=12_000.0, positions=[pos("BTCUSDT", 1.0, 60_000)])])
    assert book.pos_qty.tolist() == [1.0] and book.wallet[0] == 12_000.0
    assert book.equity[0] == pytest.approx(13_000.0, rel=1e-12)
    assert book.acct_mm[0] == pytest.approx(255.0, rel=1e-12)
    assert book.ratio[0] == pytest.approx(50.98039215686274, rel=1e-12)
    assert sync.resized == [("a1", "BTCUSDT", 0.5, 1.0)] and sync.wallet == ["a1"] and not sync.structural
    assert sync.changed.tolist() == [0]
    # Written in place: the public columns are the same arrays, and a tick still moves them.
    now = (book.ratio, book.equity, book.wallet, book.acct_mm, book.pos_qty)
    assert all(x is y for x, y in zip(columns, now, strict=True))
    book.apply_tick(0, 62_000.0, 1.0)
    # notional 62_000: MM 310 - 50 = 260; equity 12_000 + 2_000 = 14_000; ratio 53.84615384615385
    assert book.ratio[0] == pytest.approx(53.84615384615385, rel=1e-12)


def test_a_position_missing_from_the_record_becomes_zero_and_keeps_its_index():
    # 0.5 BTC @ 60_000 and -10 ETH @ 3_000; marks 61_000 and 2_900; wallet 10_000.
    # ETH gone: only BTC counts: equity 10_500, MM 122, ratio 86.0655737704918.
    a = one(positions=[pos("BTCUSDT", 0.5, 60_000), pos("ETHUSDT", -10, 3_000)])
    book = book_of([a], {"BTCUSDT": 61_000, "ETHUSDT": 2_900})
    sync = book.update_accounts([one(positions=[pos("BTCUSDT", 0.5, 60_000)])])
    assert sync.closed == [("a1", "ETHUSDT")] and not sync.structural
    assert book.pos_qty.tolist() == [0.5, 0.0]  # still there, closed, as apply_fill leaves it
    assert book.equity[0] == pytest.approx(10_500.0, rel=1e-12)
    assert book.ratio[0] == pytest.approx(86.0655737704918, rel=1e-12)
    # Reopened later: in place again (the slot is there).
    sync = book.update_accounts([a])
    assert sync.opened == [("a1", "ETHUSDT")] and not sync.structural and book.pos_qty.tolist() == [0.5, -10.0]


def test_records_that_need_a_new_layout_are_named_and_left_untouched():
    book = book_of(
        [one(positions=[pos("BTCUSDT", 0.5, 60_000)]), one("a2", positions=[pos("ETHUSDT", 1, 3_000)])],
        {"BTCUSDT": 61_000, "ETHUSDT": 3_000},
    )
    before = (book.pos_qty.copy(), book.wallet.copy(), book.ratio.copy())
    sync = book.update_accounts(
        [
            one(wallet=1.0, positions=[pos("BTCUSDT", 0.5, 60_000), pos("ETHUSDT", 1, 3_000)]),  # a new symbol
            one("a2", wallet=2.0, margin_mode="isolated", positions=[pos("ETHUSDT", 1, 3_000, isolated_margin=50)]),
            one("a3"),  # a new account
        ]
    )
    assert sync.structural == ["a1", "a2", "a3"] and sync.empty
    assert all(np.array_equal(x, y) for x, y in zip(before, (book.pos_qty, book.wallet, book.ratio), strict=True))


def test_a_bad_record_refuses_the_whole_update():
    book = book_of([one(positions=[pos("BTCUSDT", 0.5, 60_000)]), one("a2")], {"BTCUSDT": 61_000})
    ratio = book.ratio.copy()
    with pytest.raises(InputError, match="a2 position 0: unknown symbol 'XRPUSDT'"):
        book.update_accounts([one(wallet=1.0), one("a2", positions=[pos("XRPUSDT", 1, 1)])])
    with pytest.raises(InputError, match="a1: duplicate account id"):
        book.update_accounts([one(wallet=1.0), one(wallet=2.0)])
    assert book.wallet.tolist() == [10_000.0, 10_000.0] and book.pos_qty.tolist() == [0.5]
    assert np.array_equal(book.ratio, ratio)


def test_open_orders_are_replaced_per_account():
    order = OpenOrder(symbol="BTCUSDT", side="buy", qty=1.0, price=60_000.0)
    book = book_of([one(open_orders=[order]), one("a2", open_orders=[order])], {"BTCUSDT": 61_000})
    # IM reserved by a buy of 1 BTC @ 60_000 on a flat account: 60_000 in tier 1 -> 1/100 -> 600.
    assert book.reserved_initial_margin().tolist() == pytest.approx([600.0, 600.0])
    sync = book.update_accounts([one(), one("a2", open_orders=[order])])
    assert sync.orders == ["a1"] and book.ord_account.tolist() == [1]
    assert book.reserved_initial_margin().tolist() == pytest.approx([0.0, 600.0])


def test_rebuilt_keeps_indices_marks_thresholds_and_what_fills_did():
    # a1: 1 BTC @ 60_000, mark 61_000, wallet 10_000; a fill sells 0.5 @ 61_000 with fee 5:
    #   realised 0.5 * 1_000 = 500, wallet 10_000 + 500 - 5 = 10_495; 0.5 BTC left.
    # a2 then opens ETH (a new symbol for it): a new book. a1 keeps what the fill did:
    #   notional 30_500 (tier 0): MM 122; equity 10_495 + 500 = 10_995; ratio 90.12295081967213
    book = book_of(
        [one(positions=[pos("BTCUSDT", 1.0, 60_000)]), one("a2", positions=[pos("BTCUSDT", 0.1, 60_000)])],
        {"BTCUSDT": 61_000, "ETHUSDT": 3_000},
    )
    book.set_thresholds(0, Thresholds(warning=3.0, critical=2.0, liquidation=1.5))
    book.apply_fill(0, -0.5, 61_000.0, 5.0)
    a2 = one("a2", wallet=5_000.0, positions=[pos("BTCUSDT", 0.1, 60_000), pos("ETHUSDT", 2, 3_000)])
    new, sync = book.rebuilt([a2, one("a3", wallet=1.0)])
    assert new is not book and [i.id for i in new.info] == ["a1", "a2", "a3"]
    assert new.account_index == {"a1": 0, "a2": 1, "a3": 2}
    assert sync.added == ["a3"] and sync.opened == [("a2", "ETHUSDT")] and sync.wallet == ["a2"]
    assert new.mark[:2].tolist() == [61_000.0, 3_000.0] and np.array_equal(
        new.mark_time, book.mark_time, equal_nan=True
    )
    assert (new.warning[0], new.critical[0], new.liquidation[0]) == (3.0, 2.0, 1.5)
    assert new.wallet[0] == 10_495.0 and new.pos_qty[new.account_positions(0)].tolist() == [0.5]
    assert new.ratio[0] == pytest.approx(90.12295081967213, rel=1e-12)
    # a2: 0.1 BTC (notional 6_100, MM 24.4, PnL 100) + 2 ETH (notional 6_000, MM 30, PnL 0):
    #   equity 5_100, MM 54.4, ratio 93.75
    assert new.ratio[1] == pytest.approx(93.75, rel=1e-12)
    assert book.n_accounts == 2 and book.wallet[1] == 10_000.0  # the old book is untouched


def assert_accounts_agree(book: Book, ref: Book) -> None:
    """Equity, MM, notional, ratio (to 1e-9 relative to the account's size) and level per account.

    Position arrays may differ: a closed position stays in `book` at qty 0."""
    assert [i.id for i in book.info] == [i.id for i in ref.info]
    assert book.info == ref.info
    scale = scale_of(ref)
    assert_close(book.wallet, ref.wallet, 0.0, "wallet")
    assert_close(book.equity, ref.equity, 1e-9 * scale, "equity")
    assert_close(book.acct_mm, ref.acct_mm, 1e-9 * scale, "account MM")
    assert_close(book.acct_notional, ref.acct_notional, 1e-9 * scale, "account notional")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_tol = 1e-9 * (np.abs(ref.ratio) + np.where(ref.acct_mm > 0, scale / ref.acct_mm, 0.0))
    assert_close(book.ratio, ref.ratio, ratio_tol, "ratio")
    near = np.zeros(ref.n_accounts, dtype=bool)
    for thr in (ref.warning, ref.critical, ref.liquidation):
        with np.errstate(invalid="ignore"):
            near |= np.abs(ref.ratio - thr) <= ratio_tol
    assert book.level[~near].tolist() == ref.level[~near].tolist()
    assert book.isolated.tolist() == ref.isolated.tolist()
    # Open positions: the same figures and flags per (account, symbol).
    held = lambda b: {  # noqa: E731
        (b.info[b.pos_account[p]].id, b.pos_instrument[p]): (
            b.pos_qty[p],
            b.pos_entry[p],
            b.pos_liquidate_last[p],
            b.pos_opened[p],
        )
        for p in np.flatnonzero(b.pos_qty).tolist()
    }
    assert held(book) == held(ref)
    # Open orders: the same per account, and the same margin reserved for them.
    rows = lambda b: sorted(  # noqa: E731
        zip(b.ord_account.tolist(), b.ord_instrument.tolist(), b.ord_side.tolist(), b.ord_qty.tolist(), strict=True)
    )
    assert rows(book) == rows(ref)
    assert_close(book.reserved_initial_margin(), ref.reserved_initial_margin(), 1e-9 * scale, "reserved IM")


OPENED = datetime(2026, 11, 1, tzinfo=UTC)


@st.composite
def later_record(draw, acct_id: str, old: Account | None, insts, prices) -> Account:
    """A later record of an account: wallet, quantities, entries, margins and mode may move,
    positions may close or open (in symbols held before or not)."""
    isolated = (old.margin_mode == "isolated") if old is not None else draw(st.booleans())
    if draw(st.integers(0, 9)) == 0:
        isolated = not isolated
    held = {p.symbol: p for p in old.positions} if old is not None else {}
    positions = []
    for inst in insts:
        p = held.get(inst.symbol)
        keep = draw(st.sampled_from(["same", "move", "drop"] if p is not None else ["none", "none", "open"]))
        if keep in ("drop", "none"):
            continue
        if keep == "same" and p is not None:
            qty, entry, margin, last, opened = p.qty, p.entry_price, p.isolated_margin, p.liquidate_last, p.opened
        else:
            qty = draw(st.floats(0.01, 1_000.0)) * draw(st.sampled_from([1.0, -1.0]))
            entry = prices[inst.symbol] * draw(st.floats(0.5, 1.5))
            margin = draw(st.floats(0.0, 1e6))
            last = draw(st.booleans())
            opened = draw(st.sampled_from([None, OPENED]))
        if isolated and margin is None:
            margin = draw(st.floats(0.0, 1e6))
        positions.append(
            pos(
                inst.symbol,
                qty,
                entry,
                isolated_margin=margin if isolated else None,
                liquidate_last=last,
                opened=opened,
            )
        )
    wallet = old.wallet_balance if old is not None and draw(st.booleans()) else draw(st.floats(-1e3, 1e7))
    mode = "isolated" if isolated else "cross"
    desk = draw(st.sampled_from(["default", "d1"]))
    orders = [
        OpenOrder(symbol=insts[i].symbol, side=side, qty=qty, price=prices[insts[i].symbol], reduce_only=ro)
        for i, side, qty, ro in draw(
            st.lists(
                st.tuples(
                    st.integers(0, len(insts) - 1),
                    st.sampled_from(["buy", "sell"]),
                    st.floats(0.01, 100.0),
                    st.booleans(),
                ),
                max_size=2,
            )
        )
    ]
    return Account(
        id=acct_id, wallet_balance=wallet, margin_mode=mode, positions=positions, desk=desk, open_orders=orders
    )


@settings(max_examples=60)
@given(books(), st.data())
def test_any_sequence_of_account_updates_equals_a_fresh_book(spec, data):
    # Later snapshots (in place, or a new book when the layout changes), ticks in between: the
    # book always equals one built afresh from the latest record of every account it holds.
    insts, accounts, prices = spec
    book = fresh_book(insts, accounts, prices)
    latest = {a.id: a for a in accounts}
    marks = dict(prices)
    for step in range(data.draw(st.integers(1, 5))):
        ids = list(latest) + [f"n{step}"] * data.draw(st.integers(0, 1))
        chosen = data.draw(st.lists(st.sampled_from(ids), unique=True)) if ids else []
        records = [data.draw(later_record(i, latest.get(i), insts, marks)) for i in chosen]
        kept = {i.id: n for n, i in enumerate(book.info)}
        sync = book.update_accounts(records)
        if sync.structural:
            book, _ = book.rebuilt([r for r in records if r.id in sync.structural])
        assert {i.id: n for n, i in enumerate(book.info) if i.id in kept} == kept  # indices kept
        latest.update({r.id: r for r in records})
        for i, factor in data.draw(
            st.lists(st.tuples(st.integers(0, len(insts) - 1), st.floats(0.5, 2.0)), max_size=4)
        ):
            marks[insts[i].symbol] *= factor
            book.apply_tick(i, marks[insts[i].symbol], 1.0)
        assert_accounts_agree(book, fresh_book(insts, list(latest.values()), marks))
