"""The guard on live connectors (loopback servers speaking the documented formats): accounts
from the REST account service, marks from the WebSocket, and nothing acts once the marks stop."""

import numpy as np

from engine.clock import SimClock
from engine.connectors.base import SourcesConfig
from engine.connectors.ticks import tick
from engine.guard import Guard
from engine.ladder import DataState
from engine.levels import Level
from tests.engine.connectors.support import HttpServer, Response, wait_until
from tests.engine.connectors.test_rest_account import PAYLOAD
from tests.engine.connectors.test_ws_prices import TickServer
from tests.engine.guard.support import T0, config

TS = "2026-11-25T15:47:32.120Z"


async def test_a_guard_on_live_sources_values_real_accounts_and_freezes_when_marks_stop(tmp_path):
    ws = TickServer()
    await ws.start()
    async with HttpServer(lambda req: Response(200, PAYLOAD, headers={"ETag": '"v1"'})) as http:
        sources = SourcesConfig.model_validate(
            {"websocket": {"url": ws.url}, "rest_accounts": {"url": f"{http.url}/accounts"}}
        )
        cfg = config().model_copy(update={"sources": sources})
        clock = SimClock(start=T0, paused=True)
        g = await Guard.connect(cfg, clock=clock, journal_path=tmp_path / "j.sqlite3")
        try:
            assert [i.id for i in g.book.info] == ["acct-01", "acct-02"]  # the service's accounts, not the demo
            assert await wait_until(lambda: g.live_feed.connected)
            # A crash print on both held instruments: inside the sanity band, fresh.
            await ws.send({"ticks": [tick("BTCUSDT", 52000.0, TS), tick("ETHUSDT", 3900.0, TS)]})
            assert await wait_until(lambda: g.sources.prices[0].counters["accepted"] == 2)
            for _ in range(4):
                clock.advance(0.25)
                g.evaluate(clock.now())
            a = g.book.account_index["acct-01"]
            assert g.book.mark[g.book.symbol_index["BTCUSDT"]] == 52000.0
            assert g.ladder.data_state[a] == DataState.OK
            # The socket stays up but goes silent: after max_age the account is STALE.
            for _ in range(30):
                clock.advance(0.25)
                g.evaluate(clock.now())
                g.protection.maybe_act(clock.now())
            assert g.ladder.data_state[a] == DataState.STALE
            assert g.broker.orders() == []
            assert all(r["kind"] != "order_intent" for r in g.journal.records())
            assert np.isfinite(g.book.ratio[a]) and g.ladder.level[a] <= Level.LIQUIDATION
        finally:
            await g.stop(grace=1.0)
            await ws.stop()


async def test_an_account_service_down_at_start_gives_an_empty_book_then_its_accounts(tmp_path):
    up = False

    def answer(req):
        return Response(200, PAYLOAD) if up else Response(503, {"error": "maintenance"})

    async with HttpServer(answer) as http:
        sources = SourcesConfig.model_validate(
            {"rest_accounts": {"url": f"{http.url}/accounts", "retries": 0, "timeout": 1.0, "interval": 0.05}}
        )
        cfg = config().model_copy(update={"sources": sources})
        clock = SimClock(start=T0, paused=True)
        g = await Guard.connect(cfg, clock=clock, journal_path=tmp_path / "j.sqlite3")
        try:
            assert g.book.n_accounts == 0  # never the demo accounts next to real ones
            up = True
            assert await wait_until(lambda: g.sources.accounts[0].snapshot is not None)
            g.evaluate(clock.now())
            assert [i.id for i in g.book.info] == ["acct-01", "acct-02"]
        finally:
            await g.stop(grace=1.0)
