"""Per-account figures of the guard: drawdown since start, distance to the liquidation price."""

import numpy as np
import pytest

from engine.model import Account, Position
from tests.engine.guard.support import make_guard


def test_current_and_maximum_drawdown_follow_the_equity_path(tmp_path):
    acct = Account(
        id="dd-1", wallet_balance=100_000.0, positions=[Position(symbol="BTCUSDT", qty=0.0, entry_price=1.0)]
    )
    g = make_guard(tmp_path, "calm", accounts=[acct])
    g.feed.paused = True  # equity moves only by the wallet changes below
    a = 0
    now = g.clock.now()
    for wallet, current, worst in ((120_000.0, 0.0, 0.0), (90_000.0, 0.25, 0.25), (110_000.0, 1 / 12, 0.25)):
        g.book.wallet[a] = wallet  # the book's column, written in place
        g.book.revalue_accounts(np.array([a]))
        now += 1.0
        g.evaluate(now)
        detail = g.account_detail("dd-1")
        assert detail["drawdown"] == pytest.approx(current)
        assert detail["max_drawdown"] == pytest.approx(worst)


def test_the_distance_to_liquidation_is_negative_once_the_mark_is_past_it(tmp_path):
    under = Account(
        id="under", wallet_balance=10_000.0, positions=[Position(symbol="BTCUSDT", qty=1.0, entry_price=100_000.0)]
    )
    fine = Account(
        id="fine", wallet_balance=10_000.0, positions=[Position(symbol="BTCUSDT", qty=-0.1, entry_price=60_000.0)]
    )
    g = make_guard(tmp_path, "calm", accounts=[under, fine])
    snap = g.snapshot()
    mark = float(g.book.mark[g.book.symbol_index["BTCUSDT"]])
    for account, side in (("under", 1.0), ("fine", -1.0)):
        pos = g.account_detail(account)["positions"][0]
        liq = pos["liquidation_price"]
        assert pos["liquidation_distance_pct"] == pytest.approx(side * (mark - liq) / mark * 100)
        column = snap.columns["worst_liq_distance_pct"][g.account_index(account)]
        assert column == pytest.approx(pos["liquidation_distance_pct"])
    # the long bought at 100,000 with 10,000 is under water: its liquidation price is above the mark
    assert g.account_detail("under")["positions"][0]["liquidation_distance_pct"] < 0
    assert g.account_detail("fine")["positions"][0]["liquidation_distance_pct"] > 0
