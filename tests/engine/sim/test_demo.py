"""The demo book built from the `[[simulator.accounts]]` templates in config.toml."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest

from engine.book import Book
from engine.model import InputError
from engine.sim.demo import REFERENCE_TIME, demo_accounts, round_to


@pytest.fixture(scope="module")
def accounts(sim_config, instruments):
    return demo_accounts(sim_config, instruments)


def test_config_covers_every_instrument_and_a_varied_set_of_templates(sim_config, instruments):
    assert {i.symbol for i in instruments} <= set(sim_config.markets)
    templates = sim_config.accounts
    assert len(templates) >= 24
    assert len({t.desk for t in templates}) >= 4
    assert len({t.risk_class for t in templates}) >= 3
    assert sum(t.margin_mode == "isolated" for t in templates) >= 2
    assert any(t.margin_mode == "cross" for t in templates)
    leverage = [t.leverage for t in templates]
    assert min(leverage) <= 2.0 and max(leverage) >= 20.0


def test_demo_book_size(accounts, instruments):
    assert len(accounts) >= 12
    assert len({a.desk for a in accounts}) >= 3
    positions = [p for a in accounts for p in a.positions]
    assert len(positions) >= 200
    assert len({p.symbol for p in positions}) >= 8
    book = Book(instruments, accounts)  # the book accepts it
    assert book.pos_qty.size == len(positions)


def test_positions_follow_the_templates(accounts, sim_config, instruments):
    by_symbol = {i.symbol: i for i in instruments}
    for template, account in zip(sim_config.accounts, accounts, strict=True):
        assert (account.id, account.desk, account.strategy, account.risk_class) == (
            template.id,
            template.desk,
            template.strategy,
            template.risk_class,
        )
        assert account.wallet_balance == template.wallet_balance
        assert account.margin_mode == template.margin_mode
        symbols = [p.symbol for p in account.positions]
        assert len(symbols) == len(set(symbols)) == min(template.positions, len(instruments))  # one-way mode
        longs = sum(p.qty > 0 for p in account.positions)
        assert longs == round(template.long_bias * len(symbols))
        gross = sum(
            abs(p.qty) * by_symbol[p.symbol].contract_size * sim_config.markets[p.symbol].price
            for p in account.positions
        )
        assert gross / account.wallet_balance == pytest.approx(template.leverage, rel=0.05)
        for p in account.positions:
            inst, mark = by_symbol[p.symbol], sim_config.markets[p.symbol].price
            assert abs(p.qty) * inst.contract_size * mark >= inst.min_notional
            lots = abs(p.qty) / inst.lot_size
            assert lots == pytest.approx(round(lots), abs=1e-6)
            ticks = p.entry_price / inst.tick_size
            assert ticks == pytest.approx(round(ticks), rel=1e-9)
            assert abs(math.log(p.entry_price / mark)) < 0.02 + inst.tick_size / mark
            assert p.opened is not None and p.opened < REFERENCE_TIME
            if account.margin_mode == "isolated":
                notional = abs(p.qty) * inst.contract_size * p.entry_price
                assert p.isolated_margin == pytest.approx(notional / template.leverage, abs=0.01)
            else:
                assert p.isolated_margin is None


def test_a_few_liquidate_last_flags_and_open_orders(accounts, instruments):
    flags = [p for a in accounts for p in a.positions if p.liquidate_last]
    assert 1 <= len(flags) <= len(accounts) // 2
    assert all(sum(p.liquidate_last for p in a.positions) <= 1 for a in accounts)
    orders = [(a, o) for a in accounts for o in a.open_orders]
    assert orders
    kinds = Counter(o.reduce_only for _, o in orders)
    assert kinds[True] >= 1 and kinds[False] >= 1
    for a, o in orders:
        held = {p.symbol: p.qty for p in a.positions}
        assert o.symbol in held
        if o.reduce_only:
            # a reduce-only order trades against the position and never exceeds it
            assert (o.side == "sell") == (held[o.symbol] > 0)
            assert o.qty <= abs(held[o.symbol]) + 1e-9
    Book(instruments, accounts).reserved_initial_margin()  # the book can price them


def test_deterministic_from_the_seed(sim_config, instruments, accounts):
    again = demo_accounts(sim_config, instruments, seed=sim_config.seed)
    assert [a.model_dump() for a in again] == [a.model_dump() for a in accounts]
    other = demo_accounts(sim_config, instruments, seed=sim_config.seed + 1)
    assert [a.model_dump() for a in other] != [a.model_dump() for a in accounts]


def test_opened_is_relative_to_now(sim_config, instruments):
    now = datetime(2030, 6, 1, tzinfo=UTC)
    accounts = demo_accounts(sim_config, instruments, now=now)
    opened = [p.opened for a in accounts for p in a.positions]
    assert all(now - o >= np.timedelta64(60, "s") for o in opened)
    assert max(now - o for o in opened).days <= 30


def test_more_positions_than_instruments_is_capped_and_missing_markets_refused(sim_config, instruments):
    few = instruments[:3]
    accounts = demo_accounts(sim_config, few)
    assert all(len(a.positions) == min(3, t.positions) for a, t in zip(accounts, sim_config.accounts, strict=True))
    partial = sim_config.model_copy(update={"markets": {}})
    with pytest.raises(InputError, match="BTCUSDT"):
        demo_accounts(partial, instruments)


def test_round_to():
    assert round_to(0.30000000000000004, 0.1) == 0.3
    assert round_to(1234.5, 1000.0) == 1000.0
    assert round_to(1.0001, 0.001, "up") == 1.001
    assert round_to(1.0, 0.001, "up") == 1.0
    assert round_to(0.123456, 0.0) == 0.123456
