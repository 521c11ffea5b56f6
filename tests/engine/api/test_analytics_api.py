"""Risk analytics over the API (/analytics) and through RemoteGuardView, against a real server
on a small hand-checkable book: "solo" is long 0.5 BTC from 60,000 (cross, 10,000 wallet; 0.5 BTC
at ~64,000 sits in BTCUSDT's first bracket, mmr 0.4 %), "bear" short 5 ETH, "sol" long 100 SOL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from engine.api import ApiServer
from engine.guard import Guard
from engine.model import Account, InputError, Position
from engine.remote import RemoteGuardView
from engine.risk_view import account_risk
from tests.engine.api.support import TOKENS, api_config, base_config, client
from tests.engine.guard.support import make_guard

ACCOUNTS = [
    Account(id="solo", wallet_balance=10_000, positions=[Position(symbol="BTCUSDT", qty=0.5, entry_price=60_000)]),
    Account(id="bear", wallet_balance=20_000, positions=[Position(symbol="ETHUSDT", qty=-5, entry_price=3_500)]),
    Account(id="sol", wallet_balance=5_000, positions=[Position(symbol="SOLUSDT", qty=100, entry_price=140)]),
]


@asynccontextmanager
async def small(tmp_path: Path, tokens: bool = True) -> AsyncIterator[tuple[Guard, ApiServer]]:
    guard = make_guard(tmp_path, "calm", cfg=base_config(), accounts=ACCOUNTS)
    server = ApiServer(guard, api_config(tokens))
    await server.start()
    try:
        yield guard, server
    finally:
        await server.stop()
        guard.journal.close()


def btc(g: Guard) -> float:
    return float(g.book.mark[g.book.symbol_index["BTCUSDT"]])


async def test_a_viewer_reads_book_risk_and_the_configured_scenarios(tmp_path):
    async with small(tmp_path) as (g, server):
        async with client(server, "viewer") as c:
            r = await c.get("/analytics/book")
            assert r.status_code == 200
            book = r.json()
            assert book == g.book_risk()
            assert set(book) >= {"version", "time", "confidence", "horizon_days", "var", "es", "scenarios", "margin"}
            assert set(book["var"]) == set(book["es"]) == {"parametric", "historical", "monte_carlo"}
            assert book["var"]["parametric"] > 0 and book["var"]["historical"] is None  # no price history yet
            assert [s["name"] for s in book["scenarios"]] == [s.name for s in g.config.risk.scenarios]
            assert set(book["scenarios"][0]["levels_after"]) == {"SAFE", "WARNING", "CRITICAL", "LIQUIDATION"}
            scenarios = (await c.get("/analytics/scenarios")).json()["scenarios"]
            assert scenarios == [s.model_dump(mode="json") for s in g.config.risk.scenarios]
            assert {"name", "description", "moves", "vol_shocks"} == set(scenarios[0])
        async with client(server, None) as c:  # tokens configured: a token is needed, even to read
            assert (await c.get("/analytics/book")).status_code == 401
            assert (await c.post("/analytics/stress", json={"scenario": "market -10%"})).status_code == 401


async def test_stress_by_name_and_ad_hoc_is_the_hand_calculation(tmp_path):
    async with small(tmp_path) as (g, server):
        m = btc(g)
        async with client(server, "viewer") as c:
            r = await c.post("/analytics/stress", json={"scenario": "market -10%"})
            assert r.status_code == 200 and r.json() == g.stress("market -10%")
            r = await c.post("/analytics/stress", json={"moves": {"*": 0}, "top": 2})
            out = r.json()
            assert r.status_code == 200 and len(out["accounts"]) == 2 and out["total_pnl"] == 0
            assert all(a["equity_after"] == a["equity_before"] for a in out["accounts"])
            r = await c.post("/analytics/stress", json={"name": "btc", "moves": {"BTCUSDT": -0.1}})
            out = r.json()
            solo = next(a for a in out["accounts"] if a["account"] == "solo")
            assert solo["equity_after"] == pytest.approx(10_000 + 0.5 * (0.9 * m - 60_000), rel=1e-12)
            assert solo["drivers"] == ["BTCUSDT"] and out["scenario"]["name"] == "btc"
    async with small(tmp_path / "open", tokens=False) as (g, server), client(server, None) as c:
        # no tokens configured: reads are open (loopback), these POSTs too
        assert (await c.post("/analytics/stress", json={"scenario": "market -10%"})).status_code == 200


async def test_unknown_scenarios_and_bad_bodies_are_422_naming_them(tmp_path):
    async with small(tmp_path) as (_, server), client(server, "viewer") as c:

        async def refused(body: Any, *words: str) -> None:
            r = await c.post("/analytics/stress", json=body)
            assert r.status_code == 422, (body, r.text)
            for w in words:
                assert w in r.json()["detail"], (body, r.json()["detail"])

        await refused({"scenario": "meteor strike"}, "unknown scenario 'meteor strike'", "market -10%")
        await refused({"moves": {"*": -1.5}}, "body.moves")
        await refused({"moves": {"BTCUSD": -0.1}}, "scenario.moves", "'BTCUSD'")
        await refused({"scenario": "market -10%", "moves": {"*": 0.1}}, "not both")
        await refused({}, "give scenario")
        await refused({"scenario": "market -10%", "top": -1}, "body.top")
        await refused({"shocks": {"*": 0.1}}, "body.shocks: unknown field")


async def test_grid_of_one_account(tmp_path):
    async with small(tmp_path) as (g, server):
        a = g.book.account_index["solo"]
        async with client(server, "viewer") as c:
            r = await c.get("/analytics/grid/solo", params={"price_moves": "-0.1,0,0.1", "vol_shocks": "0,1"})
            grid = r.json()
            assert r.status_code == 200 and grid == g.scenario_grid("solo", [-0.1, 0.0, 0.1], [0.0, 1.0])
            assert grid["price_moves"] == [-0.1, 0.0, 0.1] and grid["vol_shocks"] == [0.0, 1.0]
            assert grid["ratio"][1][0] == pytest.approx(float(g.book.ratio[a]), rel=1e-12)  # no move, no shock
            assert grid["pnl"][0][0] == pytest.approx(-0.05 * btc(g), rel=1e-12)
            default = (await c.get("/analytics/grid/solo")).json()
            assert len(default["ratio"]) == 9 and len(default["ratio"][0]) == 3
            assert (await c.get("/analytics/grid/nope")).status_code == 404
            r = await c.get("/analytics/grid/solo", params={"price_moves": "-0.1,abc"})
            assert r.status_code == 422 and r.json()["detail"] == "price_moves: 'abc' is not a number"
            r = await c.get("/analytics/grid/solo", params={"vol_shocks": "-2"})
            assert r.status_code == 422 and r.json()["detail"].startswith("vol_shocks:")


async def test_what_if_closing_half_and_bad_input(tmp_path):
    async with small(tmp_path) as (g, server):
        m = btc(g)
        equity = 10_000 + 0.5 * (m - 60_000)
        async with client(server, "viewer") as c:
            r = await c.post("/analytics/what-if/solo", json={"symbol": "BTCUSDT", "side": "sell", "qty": 0.25})
            out = r.json()
            assert r.status_code == 200 and out == g.what_if("solo", "BTCUSDT", "sell", 0.25)
            assert out["price"] == m and out["qty_after"] == 0.25
            assert out["equity_after"] == pytest.approx(equity, rel=1e-12)
            assert out["ratio_after"] == pytest.approx(equity / (0.25 * m * 0.004), rel=1e-12)
            body = {"symbol": "BTCUSDT", "side": "buy", "qty": 0.1, "price": 65_000}
            out = (await c.post("/analytics/what-if/solo", json=body)).json()
            assert out["price"] == 65_000 and out["equity_after"] == pytest.approx(equity + 0.1 * (m - 65_000))
            r = await c.post("/analytics/what-if/nope", json={"symbol": "BTCUSDT", "side": "buy", "qty": 1})
            assert r.status_code == 404 and "nope" in r.json()["detail"]
            for body, word in (
                ({"symbol": "DOGE", "side": "buy", "qty": 1}, "symbol"),
                ({"symbol": "BTCUSDT", "side": "long", "qty": 1}, "body.side"),
                ({"symbol": "BTCUSDT", "side": "buy", "qty": 0}, "body.qty"),
                ({"symbol": "BTCUSDT", "side": "buy", "qty": 1, "price": -1}, "body.price"),
                ({"symbol": "BTCUSDT", "side": "buy"}, "body.qty"),
            ):
                r = await c.post("/analytics/what-if/solo", json=body)
                assert r.status_code == 422 and word in r.json()["detail"], (body, r.text)


async def test_risk_endpoint_carries_the_account_analytics(tmp_path):
    async with small(tmp_path) as (g, server):
        async with client(server, "viewer") as c:
            risk = (await c.get("/risk/solo")).json()
        assert risk["analytics"] == account_risk(g, g.book.account_index["solo"])
        assert risk["analytics"]["var_parametric"] > 0 and risk["analytics"]["confidence"] == 0.99


async def test_remote_view_returns_the_embedded_guards_dicts(tmp_path):
    async with small(tmp_path) as (g, server):
        remote = RemoteGuardView(server.url, TOKENS["viewer"])
        try:
            # synchronous reads (as the console makes them); the server shares this loop: a thread
            def call(name: str, *args: Any) -> Any:
                return asyncio.to_thread(getattr(remote, name), *args)

            assert await call("book_risk") == g.book_risk()
            assert await call("stress", "crypto crash", 2) == g.stress("crypto crash", 2)
            ad_hoc = {"name": "x", "moves": {"majors": -0.2, "*": 0.05}, "vol_shocks": {"*": 0.5}}
            assert await call("stress", ad_hoc) == g.stress(ad_hoc)
            moves, shocks = [-0.123456789, 0.0, 1 / 3], [0.0, 0.25]
            assert await call("scenario_grid", "solo", moves, shocks) == g.scenario_grid("solo", moves, shocks)
            assert await call("scenario_grid", "bear") == g.scenario_grid("bear", None, None)
            assert await call("what_if", "solo", "BTCUSDT", "sell", 0.25) == g.what_if("solo", "BTCUSDT", "sell", 0.25)
            assert await call("what_if", "sol", "SOLUSDT", "buy", 3, 151.5) == g.what_if(
                "sol", "SOLUSDT", "buy", 3, 151.5
            )
            with pytest.raises(KeyError):
                await call("scenario_grid", "nope")
            with pytest.raises(KeyError):
                await call("what_if", "nope", "BTCUSDT", "buy", 1.0)
            with pytest.raises(InputError, match="unknown scenario 'meteor'"):
                await call("stress", "meteor")
            with pytest.raises(InputError, match="price_moves"):
                await call("scenario_grid", "solo", [-1.5])
            with pytest.raises(InputError, match="symbol"):
                await call("what_if", "solo", "NOPE", "buy", 1.0)
        finally:
            await remote.aclose()
