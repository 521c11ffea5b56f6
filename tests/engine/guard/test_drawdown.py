"""Current and maximum drawdown per account, from the equity the guard has seen since start."""

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
