"""Sources into a Book the way the guard will wire them: accounts from the REST service, marks
from the WebSocket, freshness through the price gate's own data-quality check."""

from __future__ import annotations

import json

import numpy as np

from engine.book import Book
from engine.connectors import build_sources
from engine.connectors.ticks import tick
from engine.ladder import DataState
from engine.quality import DataQualityConfig, PriceGate, account_state
from tests.engine.connectors.support import HttpServer, Response, wait_until
from tests.engine.connectors.test_rest_account import PAYLOAD
from tests.engine.connectors.test_ws_prices import TickServer

TS = "2026-11-25T15:47:32.120Z"


async def test_rest_accounts_and_websocket_marks_value_a_book(insts, sim_clock):
    ws = TickServer()
    await ws.start()
    async with HttpServer(lambda req: Response(200, PAYLOAD, headers={"ETag": '"v1"'})) as http:
        sources = build_sources(
            {"websocket": {"url": ws.url}, "rest_accounts": {"url": f"{http.url}/accounts"}}, insts, sim_clock
        )
        await sources.start()
        try:
            (accounts,) = sources.accounts
            assert await wait_until(lambda: accounts.snapshot is not None and sources.price_feed.connected)
            book = Book(insts, accounts.snapshot.accounts)
            gate = PriceGate(len(insts), DataQualityConfig(max_age=5.0))
            await ws.send({"ticks": [tick("BTCUSDT", 64100.0, TS), tick("ETHUSDT", 3390.0, TS)]})
            assert await wait_until(lambda: sources.prices[0].counters["accepted"] == 2)
            sim_clock.advance(4.0)
            await ws.send(json.dumps(tick("BTCUSDT", 64200.0, TS)))  # ETH goes silent
            assert await wait_until(lambda: sources.prices[0].counters["accepted"] == 3)

            ids, prices, times = sources.price_feed.poll(sim_clock.now(), coalesce=True)
            ok = gate.screen(ids, prices, book.mark)
            book.set_marks(ids[ok], prices[ok], times[ok])  # per-instrument receive times
            book.revalue()
            a = book.account_index["acct-01"]
            assert np.isfinite(book.ratio[a]) and book.mark[book.symbol_index["BTCUSDT"]] == 64200.0

            sim_clock.advance(2.0)
            now = sim_clock.now()
            inst = gate.instrument_state(now, book.mark, book.mark_time)
            state = account_state(inst, book.pos_instrument, book._seg_starts, book._nonempty, book.n_accounts)
            assert inst[book.symbol_index["ETHUSDT"]] == DataState.STALE  # silent while the socket is up
            assert inst[book.symbol_index["BTCUSDT"]] == DataState.OK
            assert state[a] == DataState.STALE  # acct-01 holds ETH: automatic action frozen
            assert np.array_equal(sources.price_feed.stale(now, 5.0), inst[: len(insts)] != DataState.OK)
            assert accounts.data_state(now) == DataState.OK
        finally:
            await sources.stop()
            await ws.stop()
