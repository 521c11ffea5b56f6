"""The simulated venue: reduce-only, square-root impact, limits, idempotency, faults, memory."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.actions.impact import ImpactModel
from engine.model import Account, OpenOrder, Side
from engine.orders import BrokerTimeout, OrderRequest, OrderStatus, OrderType
from engine.sim.broker import SimBroker, SimBrokerParams
from tests.engine.actions.support import instruments, make_book, paused_clock, position, qty_of


def sell(cid: str, qty: float, symbol: str = "BTCUSDT", **kw) -> OrderRequest:
    return OrderRequest(cid, "acct-1", symbol, -1, qty, **kw)


def buy(cid: str, qty: float, symbol: str = "BTCUSDT", **kw) -> OrderRequest:
    return OrderRequest(cid, "acct-1", symbol, 1, qty, **kw)


@pytest.fixture
def book():
    return make_book([position("BTCUSDT", 10.0), position("THINUSDT", -50_000.0)], wallet=50_000.0)


@pytest.fixture
def clock():
    return paused_clock()


@pytest.fixture
def broker(book, clock):
    return SimBroker(book, clock, SimBrokerParams(impact=ImpactModel(k=1.0, taker_fee=0.0005)))


async def test_market_order_fills_at_the_mark_moved_by_square_root_impact(broker, book):
    r = await broker.send(sell("a-1", 4.0))
    # 4 BTC at 50,000 = 200,000 into a depth of 60,000,000: slippage 1% * sqrt(200k / 60M).
    slip = 0.01 * math.sqrt(200_000 / 60_000_000)
    assert r.status == OrderStatus.FILLED and r.filled_qty == 4.0
    assert r.avg_price == pytest.approx(50_000 * (1 - slip))
    assert r.fee == pytest.approx(4.0 * r.avg_price * 0.0005)
    assert r.fills == [(4.0, r.avg_price)]
    assert qty_of(book, "BTCUSDT") == 10.0  # the venue never changes the book; the caller books fills
    # Buying back a short pays above the mark.
    r = await broker.send(buy("a-2", 10_000.0, "THINUSDT"))
    assert r.avg_price == pytest.approx(10.0 * (1 + 0.01 * math.sqrt(100_000 / 1_000_000)))


@pytest.mark.parametrize(
    ("request_", "why"),
    [
        (buy("x-1", 1.0), "would increase"),  # buy on a long
        (sell("x-2", 10.5), "exceeds the position"),  # would flip the long
        (sell("x-3", 1.0, "ETHUSDT"), "no position"),  # nothing to reduce
        (sell("x-4", 1.0, "ETHUSDT", reduce_only=False), "no position"),
        (sell("x-5", 1.0, order_type=OrderType.IOC), "needs a positive price"),
        (OrderRequest("x-6", "nobody", "BTCUSDT", -1, 1.0), "unknown account"),
    ],
)
async def test_exposure_increasing_and_malformed_orders_are_rejected_with_a_reason(broker, request_, why):
    r = await broker.send(request_)
    assert r.status == OrderStatus.REJECTED and r.filled_qty == 0
    assert why in r.reason
    assert broker.fills_since_start() == []


async def test_a_resend_of_the_same_id_returns_the_first_answer_and_fills_once(broker):
    first = await broker.send(sell("dup-1", 2.0))
    again = await broker.send(sell("dup-1", 2.0))
    assert again.status == first.status and again.avg_price == first.avg_price
    assert again.venue_order_id == first.venue_order_id
    assert len(broker.fills_since_start()) == 1
    assert broker.arrivals("dup-1") == 2


async def test_ioc_fills_only_what_stays_within_the_limit(broker):
    # Limit 0.2% below the mark: 0.01 * sqrt(n / 60M) <= 0.002 -> n <= 2,400,000 (48 BTC), so 4 BTC fill.
    r = await broker.send(sell("i-1", 4.0, order_type=OrderType.IOC, price=49_900.0))
    assert r.status == OrderStatus.FILLED
    # THIN: depth 1,000,000; limit 0.5% above the mark for a buy: 0.01 * sqrt(n / 1e6) <= 0.005
    # -> n <= 1e6 * 0.5^2 = 250,000 -> 25,000 of the 50,000 asked.
    r = await broker.send(buy("i-2", 50_000.0, "THINUSDT", order_type=OrderType.IOC, price=10.05))
    assert r.status == OrderStatus.PARTIAL
    assert r.filled_qty == pytest.approx(25_000.0)
    assert r.avg_price <= 10.05
    assert "rest cancelled" in r.reason
    # A limit on the wrong side of the mark fills nothing.
    r = await broker.send(buy("i-3", 10.0, "THINUSDT", order_type=OrderType.IOC, price=9.9))
    assert r.status == OrderStatus.CANCELLED and r.filled_qty == 0


async def test_timeout_next_executes_but_loses_the_answer(broker):
    broker.timeout_next()
    with pytest.raises(BrokerTimeout):
        await broker.send(sell("t-1", 1.0))
    found = await broker.lookup("t-1")
    assert found is not None and found.status == OrderStatus.FILLED and found.filled_qty == 1.0
    assert len(broker.fills_since_start()) == 1


async def test_drop_next_never_arrives(broker):
    broker.drop_next()
    with pytest.raises(BrokerTimeout):
        await broker.send(sell("d-1", 1.0))
    assert await broker.lookup("d-1") is None
    assert broker.arrivals("d-1") == 0
    r = await broker.send(sell("d-1", 1.0))
    assert r.status == OrderStatus.FILLED and broker.arrivals("d-1") == 1


async def test_block_after_lets_n_through_then_times_out_without_executing(broker):
    broker.block_after(1)
    assert (await broker.send(sell("b-1", 1.0))).status == OrderStatus.FILLED
    for cid in ("b-2", "b-3"):
        with pytest.raises(BrokerTimeout):
            await broker.send(sell(cid, 1.0))
        assert await broker.lookup(cid) is None
    broker.unblock()
    assert (await broker.send(sell("b-2", 1.0))).status == OrderStatus.FILLED


async def test_reject_next_and_on_send(broker):
    seen = []
    broker.on_send = seen.append
    broker.reject_next(1, "venue busy")
    r = await broker.send(sell("r-1", 1.0))
    assert r.status == OrderStatus.REJECTED and r.reason == "venue busy"
    assert (await broker.send(sell("r-2", 1.0))).status == OrderStatus.FILLED
    assert [o.client_order_id for o in seen] == ["r-1", "r-2"]


async def test_state_file_keeps_the_venue_memory_across_a_restart(tmp_path, book, clock):
    path = tmp_path / "venue.sqlite3"
    venue = SimBroker(book, clock, state_path=path)
    await venue.send(sell("p-1", 3.0))
    await venue.send(buy("p-2", 20_000.0, "THINUSDT"))
    venue.close()

    fresh = make_book([position("BTCUSDT", 10.0), position("THINUSDT", -50_000.0)], wallet=50_000.0)
    again = SimBroker(fresh, clock, state_path=path)
    found = await again.lookup("p-1")
    assert found is not None and found.filled_qty == 3.0
    r = await again.send(sell("p-1", 3.0))  # idempotent across the restart too
    assert r.venue_order_id == found.venue_order_id
    fills = again.fills_since_start()
    assert [(f.client_order_id, f.qty) for f in fills] == [("p-1", -3.0), ("p-2", 20_000.0)]
    assert again.replay_into(fresh) == 2
    assert qty_of(fresh, "BTCUSDT") == pytest.approx(7.0)
    assert qty_of(fresh, "THINUSDT") == pytest.approx(-30_000.0)
    wallet_moves = sum(-f.qty * (f.price - (50_000.0 if f.symbol == "BTCUSDT" else 10.0)) - f.fee for f in fills)
    assert fresh.wallet[0] == pytest.approx(50_000.0 + wallet_moves)


async def test_cancel_orders_returns_the_exposure_increasing_open_orders(clock):
    from engine.book import Book

    acct = Account(
        id="acct-1",
        wallet_balance=10_000.0,
        positions=[position("BTCUSDT", 1.0)],
        open_orders=[
            OpenOrder(symbol="BTCUSDT", side=Side.BUY, qty=1.0, price=49_000.0),  # adds to the long
            OpenOrder(symbol="BTCUSDT", side=Side.SELL, qty=0.5, price=51_000.0),  # reduces
            OpenOrder(symbol="ETHUSDT", side=Side.SELL, qty=2.0, price=2_100.0),  # opens a short
        ],
    )
    book = Book(instruments(), [acct])
    broker = SimBroker(book, clock)
    assert await broker.cancel_orders("acct-1") == ["acct-1:0", "acct-1:2"]
    assert await broker.cancel_orders("acct-1", exposure_increasing_only=False) == ["acct-1:0", "acct-1:1", "acct-1:2"]
    book.remove_orders(book.exposure_increasing_orders(0))
    assert book.ord_qty.tolist() == [0.5]
    assert await broker.cancel_orders("nobody") == []


async def test_stop_orders_rest_until_the_mark_crosses(broker, book):
    r = await broker.send(sell("s-1", 2.0, order_type=OrderType.STOP, price=49_000.0))
    assert r.status == OrderStatus.OPEN
    assert broker.check_stops() == []
    book.set_prices({"BTCUSDT": 48_900.0}, received=1.0)
    book.revalue()
    (filled,) = broker.check_stops()
    assert filled.client_order_id == "s-1" and filled.status == OrderStatus.FILLED
    assert filled.avg_price < 48_900.0
    assert (await broker.lookup("s-1")).status == OrderStatus.FILLED
    assert [f.client_order_id for f in broker.fills_since_start()] == ["s-1"]


async def test_impact_memory_decays_with_the_half_life(book, clock):
    venue = SimBroker(book, clock, SimBrokerParams(impact_half_life=10.0))
    first = await venue.send(buy("m-1", 10_000.0, "THINUSDT"))
    second = await venue.send(buy("m-2", 10_000.0, "THINUSDT"))
    assert second.avg_price > first.avg_price  # the book has not refilled yet
    # Two back-to-back orders cost what one order of the sum costs: (2n)^1.5 = n^1.5 + ((2n)^1.5 - n^1.5).
    one = 20_000 * 10.0 * 0.01 * math.sqrt(200_000 / 1_000_000)
    two = sum(10_000 * (r.avg_price - 10.0) for r in (first, second))
    assert two == pytest.approx(one)
    clock.advance(1_000.0)  # 100 half lives later the book has refilled
    third = await venue.send(buy("m-3", 10_000.0, "THINUSDT"))
    assert third.avg_price == pytest.approx(first.avg_price)


async def test_latency_is_awaited(book, clock, monkeypatch):
    import engine.sim.broker as mod

    waits = []

    async def fake_sleep(s):
        waits.append(s)

    monkeypatch.setattr(mod.asyncio, "sleep", fake_sleep)
    venue = SimBroker(book, clock, SimBrokerParams(latency=0.05))
    await venue.send(sell("l-1", 1.0))
    await venue.lookup("l-1")
    assert waits == [0.05, 0.05]


def test_params_are_checked():
    with pytest.raises(ValueError):
        SimBrokerParams(latency=-1.0)
    assert np.isfinite(SimBrokerParams().impact.default_depth)
