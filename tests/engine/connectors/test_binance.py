"""The Binance USD-M adapter against loopback servers that answer with the documented examples.

The fixtures under fixtures/binance are verbatim copies of the documentation's example
payloads; the signing test reproduces the documentation's example signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import hmac
import json
import logging
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve

from engine.book import Book
from engine.connectors import BinanceConfig, ConnectorError
from engine.connectors.base import Refused, VenuePosition
from engine.connectors.binance import (
    BinanceAccountSource,
    BinanceCredentials,
    BinanceMarkPriceSource,
    BinanceRest,
    BinanceVenue,
    account_from_binance,
    brackets_from_binance,
    find_divergences,
    parse_leverage_brackets,
    parse_mark_price,
    sign,
)
from engine.ladder import DataState
from engine.model import Account, Instrument, Position
from engine.orders import BrokerTimeout, OrderRequest, OrderStatus, OrderType
from tests.engine.connectors.support import (
    HttpServer,
    Request,
    Response,
    assert_broker_shape,
    free_port,
    load_doc_json,
    wait_until,
)

# The documentation's example (SIGNED Endpoint Examples for POST /fapi/v1/order - HMAC Keys).
DOC_SECRET = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
DOC_QUERY = (
    "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC&recvWindow=5000&timestamp=1591702613943"
)
DOC_SIGNATURE = "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"

# Test credentials for the loopback venue (not real keys).
KEY = "loopback-test-api-key-0001"
SECRET = "loopback-test-secret-0001"
ENV = {"CG_BINANCE_KEY": KEY, "CG_BINANCE_SECRET": SECRET}


def test_signing_reproduces_the_documented_signature():
    assert sign(DOC_QUERY, DOC_SECRET) == DOC_SIGNATURE
    rest = BinanceRest(
        "http://127.0.0.1:9",
        BinanceCredentials(api_key="dbefbc80", secret=DOC_SECRET),
        recv_window=5000,
        time_ms=lambda: 1591702613943,
    )
    params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": 1, "price": 9000, "timeInForce": "GTC"}
    assert rest.signed_query(params) == f"{DOC_QUERY}&signature={DOC_SIGNATURE}"


def test_credentials_come_from_the_environment_and_are_masked():
    creds = BinanceCredentials.from_env("CG_BINANCE_KEY", "CG_BINANCE_SECRET", ENV)
    assert creds.api_key == KEY and creds.secret == SECRET
    assert SECRET not in repr(creds) and KEY not in repr(creds)
    with pytest.raises(ConnectorError, match="CG_BINANCE_SECRET") as exc:
        BinanceCredentials.from_env("CG_BINANCE_KEY", "CG_BINANCE_SECRET", {"CG_BINANCE_KEY": KEY})
    assert KEY not in str(exc.value)


# ---------------------------------------------------------------------------------- fake venue
class FakeBinance:
    """Answers like Binance USD-M, with the documented examples as its data; checks signatures."""

    def __init__(self) -> None:
        self.account = load_doc_json("account_v3.jsonc")
        self.positions = load_doc_json("position_risk_v3.jsonc")
        self.open_orders = load_doc_json("open_orders.jsonc")
        self.brackets = load_doc_json("leverage_bracket.jsonc")
        self.force_orders: list[dict[str, Any]] = []
        self.orders: dict[str, dict[str, Any]] = {}  # by clientOrderId
        self.posts: list[dict[str, str]] = []
        self.deleted: list[dict[str, str]] = []
        self.post_delay: list[float] = []
        self.next_post: list[Response] = []
        self.new_order_answer: Any = None  # answer POST /fapi/v1/order with this instead
        self.fill_price = 64000.0

    def _verify(self, req: Request) -> Response | None:
        if req.headers.get("x-mbx-apikey") != KEY:
            return Response(401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."})
        payload, _, sig = req.query_string.rpartition("&signature=")
        good = hmac.new(SECRET.encode(), payload.encode(), hashlib.sha256).hexdigest()
        q = req.query
        if not hmac.compare_digest(sig, good) or "timestamp" not in q or q.get("recvWindow") != "5000":
            return Response(400, {"code": -1022, "msg": "Signature for this request is not valid."})
        return None

    async def __call__(self, req: Request) -> Response:
        bad = self._verify(req)
        if bad is not None:
            return bad
        q, route = req.query, (req.method, req.path)
        if route == ("GET", "/fapi/v3/account"):
            return Response(200, self.account)
        if route == ("GET", "/fapi/v3/positionRisk"):
            return Response(200, self.positions)
        if route == ("GET", "/fapi/v1/openOrders"):
            return Response(200, self.open_orders)
        if route == ("GET", "/fapi/v1/leverageBracket"):
            if "symbol" in q:
                return Response(200, next(b for b in self.brackets if b["symbol"] == q["symbol"]))
            return Response(200, self.brackets)
        if route == ("GET", "/fapi/v1/forceOrders"):
            return Response(200, self.force_orders)
        if route == ("POST", "/fapi/v1/order"):
            return await self._new_order(q)
        if route == ("GET", "/fapi/v1/order"):
            o = self.orders.get(q.get("origClientOrderId", ""))
            if o is None or o["symbol"] != q.get("symbol"):
                return Response(400, {"code": -2013, "msg": "Order does not exist."})
            return Response(200, o)
        if route == ("GET", "/fapi/v1/userTrades"):
            o = next((o for o in self.orders.values() if str(o["orderId"]) == q.get("orderId")), None)
            if o is None:
                return Response(200, [])
            qty = float(o["executedQty"])
            return Response(
                200,
                [
                    {"symbol": o["symbol"], "orderId": o["orderId"], "price": str(self.fill_price), "qty": str(qty / 2),
                     "commission": "0.01", "commissionAsset": "USDT"},
                    {"symbol": o["symbol"], "orderId": o["orderId"], "price": str(self.fill_price - 10),
                     "qty": str(qty / 2), "commission": "0.01", "commissionAsset": "USDT"},
                ],
            )  # fmt: skip
        if route == ("DELETE", "/fapi/v1/order"):
            self.deleted.append(q)
            return Response(200, {**self.open_orders[0], "status": "CANCELED"})
        return Response(404, {"code": -1, "msg": f"no route {route}"})

    async def _new_order(self, q: dict[str, str]) -> Response:
        self.posts.append(q)
        if self.next_post:
            return self.next_post.pop(0)
        cid = q["newClientOrderId"]
        if cid not in self.orders:
            qty = float(q["quantity"])
            avg = self.fill_price - 5
            self.orders[cid] = {
                "clientOrderId": cid, "orderId": 1000 + len(self.orders), "symbol": q["symbol"], "side": q["side"],
                "type": q["type"], "status": "FILLED", "origQty": q["quantity"], "executedQty": q["quantity"],
                "avgPrice": str(avg), "cumQuote": str(qty * avg), "reduceOnly": q.get("reduceOnly") == "true",
                "positionSide": "BOTH", "price": q.get("price", "0"), "updateTime": 1,
            }  # fmt: skip
        if self.post_delay:
            await asyncio.sleep(self.post_delay.pop(0))
        if self.new_order_answer is not None:
            return Response(200, self.new_order_answer)
        return Response(200, self.orders[cid])


@pytest.fixture
async def venue():
    fake = FakeBinance()
    async with HttpServer(fake) as http:
        yield fake, http


def config(http: HttpServer, **kw: Any) -> BinanceConfig:
    return BinanceConfig(
        rest_url=http.url,
        ws_url="ws://127.0.0.1:9/market",
        accounts=[{"id": "bn-main", "api_key_env": "CG_BINANCE_KEY", "api_secret_env": "CG_BINANCE_SECRET"}],
        **kw,
    )


def make_venue(http: HttpServer, insts, clock, **kw: Any) -> BinanceVenue:
    return BinanceVenue(config(http, **kw), insts, clock, env=ENV)


# ---------------------------------------------------------------------------------- brackets
def test_documented_leverage_brackets_become_capguard_brackets():
    (eth,) = parse_leverage_brackets(load_doc_json("leverage_bracket.jsonc"))["ETHUSDT"]
    assert (eth.floor, eth.cap, eth.mmr, eth.max_leverage, eth.maintenance_amount) == (0, 10000, 0.0065, 75, 0)
    assert parse_leverage_brackets(load_doc_json("leverage_bracket_symbol.jsonc"))["ETHUSDT"] == [eth]
    bad = load_doc_json("leverage_bracket_symbol.jsonc")
    bad["brackets"][0]["maintMarginRatio"] = "lots"
    with pytest.raises(Refused, match="maintMarginRatio"):
        brackets_from_binance(bad)


async def test_brackets_pulled_from_the_venue(venue, insts, wall):
    _, http = venue
    v = make_venue(http, insts, wall)
    got = await v.accounts.load_brackets()
    assert list(got) == ["ETHUSDT"] and got["ETHUSDT"][0].mmr == 0.0065
    await v.close()


# ---------------------------------------------------------------------------------- accounts
async def test_account_snapshot_from_the_documented_answers(venue, insts, wall):
    _, http = venue
    v = make_venue(http, insts, wall)
    assert await v.accounts.refresh()
    snap = v.accounts.snapshot
    (acct,) = snap.accounts
    assert acct.id == "bn-main" and acct.wallet_balance == 23.72469206 and acct.margin_mode == "cross"
    assert [(p.symbol, p.qty, p.entry_price) for p in acct.positions] == [("ADAUSDT", 30.0, 0.385)]
    (o,) = acct.open_orders
    assert (o.symbol, o.side.value, o.qty, o.price, o.reduce_only) == ("BTCUSDT", "buy", 0.4, 9300.0, False)
    (vp,) = snap.venue
    assert vp.maintenance_margin == 0.0800428 and vp.liquidation_price is None and vp.mark_price == 0.4104759
    assert v.accounts.data_state(wall.now()) == DataState.OK
    await v.close()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda f: f.positions.append({**f.positions[0], "positionSide": "SHORT", "positionAmt": "-5"}), "hedge mode"),
        (lambda f: f.positions[0].update(symbol="COMPUSDT"), "not a configured instrument"),
        (lambda f: f.open_orders[0].update(symbol="COMPUSDT"), "not a configured instrument"),
        (
            lambda f: f.positions.append({**f.positions[0], "symbol": "BTCUSDT", "isolatedWallet": "12.5"}),
            "mix of cross and isolated",
        ),
        (lambda f: f.positions[0].update(entryPrice="0"), "entryPrice"),
        (lambda f: f.account.update(assets=[], totalWalletBalance="NaN"), "not finite"),
    ],
)
async def test_account_data_that_capguard_cannot_represent_is_refused(venue, insts, wall, caplog, change, reason):
    caplog.set_level(logging.WARNING, logger="capguard.connectors")
    fake, http = venue
    v = make_venue(http, insts, wall)
    assert await v.accounts.refresh()
    before = v.accounts.snapshot
    change(fake)
    assert not await v.accounts.refresh()
    assert v.accounts.snapshot is before and reason in v.accounts.last_error and reason in caplog.text
    await v.close()


async def test_signature_refusal_fails_the_poll_and_never_logs_keys(venue, insts, wall, caplog):
    caplog.set_level(logging.DEBUG)
    _, http = venue
    v = BinanceVenue(config(http), insts, wall, env={"CG_BINANCE_KEY": KEY, "CG_BINANCE_SECRET": "wrong-secret"})
    assert not await v.accounts.refresh()
    assert "-1022" in v.accounts.last_error
    assert KEY not in caplog.text and "wrong-secret" not in caplog.text and SECRET not in caplog.text
    assert v.accounts.data_state(wall.now()) == DataState.STALE
    await v.close()


# ---------------------------------------------------------------------------------- broker
def order(cid: str = "cg7-1", **kw: Any) -> OrderRequest:
    return OrderRequest(
        cid, kw.pop("account", "bn-main"), kw.pop("symbol", "BTCUSDT"), kw.pop("side", -1), kw.pop("qty", 0.5), **kw
    )


async def test_reduce_only_order_with_client_id_and_fills(venue, insts, wall):
    fake, http = venue
    v = make_venue(http, insts, wall)
    assert_broker_shape(v.broker)
    r = await v.broker.send(order())
    (q,) = fake.posts
    assert q["symbol"] == "BTCUSDT" and q["side"] == "SELL" and q["type"] == "MARKET" and q["quantity"] == "0.5"
    assert q["reduceOnly"] == "true" and q["newClientOrderId"] == "cg7-1" and q["newOrderRespType"] == "RESULT"
    assert r.status == OrderStatus.FILLED and r.filled_qty == 0.5 and r.avg_price == 63995.0
    assert r.fills == [(0.25, 64000.0), (0.25, 63990.0)] and r.fee == pytest.approx(0.02)
    r2 = await v.broker.send(order("cg7-2", order_type=OrderType.IOC, price=63000.5, side=1, qty=0.001))
    q2 = fake.posts[1]
    assert (q2["type"], q2["timeInForce"], q2["price"], q2["quantity"], q2["side"]) == (
        "LIMIT",
        "IOC",
        "63000.5",
        "0.001",
        "BUY",
    )
    assert r2.status == OrderStatus.FILLED
    stop = await v.broker.send(order("cg7-3", order_type=OrderType.STOP, price=60000.0))
    assert stop.status == OrderStatus.REJECTED and "not supported" in stop.reason
    bad_id = await v.broker.send(order("cg 7 4"))
    assert bad_id.status == OrderStatus.REJECTED and len(fake.posts) == 2
    await v.close()


async def test_documented_new_order_answer_is_mapped(venue, insts, wall):
    fake, http = venue
    fake.new_order_answer = load_doc_json("new_order.jsonc")
    v = make_venue(http, insts, wall)
    r = await v.broker.send(order("testOrder"))
    assert r.status == OrderStatus.OPEN and r.venue_order_id == "22542179" and r.filled_qty == 0 and r.fills == []
    await v.close()


async def test_lookup_by_orig_client_order_id(venue, insts, wall):
    fake, http = venue
    fake.orders["abc"] = load_doc_json("query_order.jsonc")  # the documented Query Order answer
    v = make_venue(http, insts, wall, symbols=["BTCUSDT", "ETHUSDT"])
    r = await v.broker.lookup("abc")
    assert r.status == OrderStatus.OPEN and r.venue_order_id == "1917641" and r.client_order_id == "abc"
    assert http.requests[-1].query["origClientOrderId"] == "abc"
    assert await v.broker.lookup("never-sent") is None  # -2013 for every configured symbol
    await v.close()


async def test_timeout_is_unknown_then_looked_up_and_never_doubled(venue, insts, wall):
    fake, http = venue
    fake.post_delay = [1.0]  # the venue executes the order but the answer comes too late
    v = make_venue(http, insts, wall, timeout=0.2)
    with pytest.raises(BrokerTimeout, match="timeout"):
        await v.broker.send(order("cg9-1"))
    assert "cg9-1" in v.broker.unknown
    found = await v.broker.lookup("cg9-1")  # what the executor does next
    assert found.status == OrderStatus.FILLED and found.filled_qty == 0.5 and len(found.fills) == 2
    again = await v.broker.send(order("cg9-1"))  # a retry of the same step: no second order
    assert again.status == OrderStatus.FILLED and len(fake.posts) == 1 and len(fake.orders) == 1
    await v.close()


@pytest.mark.parametrize(
    "answer",
    [
        Response(503, {"code": -1000, "msg": "Unknown error, please check your request or try again later."}),
        Response(400, {"code": -1007, "msg": "Timeout waiting for response from backend server."}),
        Response(drop=True),
    ],
)
async def test_unknown_execution_status_raises_broker_timeout(venue, insts, wall, answer):
    fake, http = venue
    fake.next_post = [answer]
    v = make_venue(http, insts, wall)
    with pytest.raises(BrokerTimeout):
        await v.broker.send(order("cg10-1"))
    assert await v.broker.lookup("cg10-1") is None  # it never reached the book here
    r = await v.broker.send(order("cg10-1"))  # looked up first, then sent once
    assert r.status == OrderStatus.FILLED and len(fake.orders) == 1
    await v.close()


async def test_refusal_becomes_a_rejection_with_the_code(venue, insts, wall):
    fake, http = venue
    fake.next_post = [Response(400, {"code": -2022, "msg": "ReduceOnly Order is rejected."})]
    v = make_venue(http, insts, wall)
    r = await v.broker.send(order("cg11-1"))
    assert r.status == OrderStatus.REJECTED and r.reason == "binance -2022: ReduceOnly Order is rejected."
    err = load_doc_json("error.jsonc")
    fake.next_post = [Response(400, err)]
    r = await v.broker.send(order("cg11-2", symbol="ETHUSDT"))
    assert r.reason == "binance -1121: Invalid symbol."
    await v.close()


async def test_cancel_exposure_increasing_orders(venue, insts, wall):
    fake, http = venue
    v = make_venue(http, insts, wall)
    # the documented open order buys 0.40 BTCUSDT with no BTCUSDT position: it adds exposure
    assert await v.broker.cancel_orders("bn-main") == ["abc"]
    assert fake.deleted == [fake.deleted[0]] and fake.deleted[0]["orderId"] == "1917641"
    fake.positions = [{**fake.positions[0], "symbol": "BTCUSDT", "positionAmt": "-1.000", "entryPrice": "9500"}]
    assert await v.broker.cancel_orders("bn-main") == []  # now it reduces a short
    assert await v.broker.cancel_orders("bn-main", exposure_increasing_only=False) == ["abc"]
    assert await v.broker.cancel_orders("someone-else") == []
    await v.close()


# ---------------------------------------------------------------------------------- mark prices
class MarkPriceServer:
    """Combined-stream endpoint: records each connection's path, pushes documented payloads."""

    def __init__(self) -> None:
        self.port = free_port()
        self.paths: list[str] = []
        self.conns: list[ServerConnection] = []

    async def start(self) -> None:
        self._server = await serve(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        self.paths.append(ws.request.path)
        self.conns.append(ws)
        await ws.wait_closed()

    async def push(self, obj: Any) -> None:
        await self.conns[-1].send(obj if isinstance(obj, str) else json.dumps(obj))


async def test_mark_price_stream_documented_payload_reconnect_and_refusals(insts, wall, caplog):
    caplog.set_level(logging.WARNING, logger="capguard.connectors")
    srv = MarkPriceServer()
    await srv.start()
    cfg = BinanceConfig(
        ws_url=f"ws://127.0.0.1:{srv.port}/market",
        symbols=["BTCUSDT", "ETHUSDT"],
        backoff={"initial": 0.05, "maximum": 0.2},
    )
    src = BinanceMarkPriceSource(cfg, insts, wall)
    await src.start()
    try:
        assert await wait_until(lambda: src.connected)
        assert srv.paths == ["/market/stream?streams=btcusdt@markPrice@1s/ethusdt@markPrice@1s"]
        doc = load_doc_json("mark_price_stream.jsonc")
        assert parse_mark_price(doc) == ("BTCUSDT", 11794.15, 1562305380000)
        await srv.push({"stream": "btcusdt@markPrice@1s", "data": doc})  # combined-stream wrapper
        await srv.push(doc)  # a raw stream payload too
        assert await wait_until(lambda: src.counters["accepted"] == 2)
        ids, prices, _ = src.poll(wall.now())
        assert ids.tolist() == [src.index["BTCUSDT"]] * 2 and prices.tolist() == [11794.15, 11794.15]
        # the documented funding rate is kept per instrument; an odd one never refuses the mark
        assert src.funding_rate[src.index["BTCUSDT"]] == 0.00038167 and np.isnan(src.funding_rate[src.index["ETHUSDT"]])
        await srv.push({**doc, "r": "n/a", "p": "11800.0"})
        assert await wait_until(lambda: src.counters["accepted"] == 3)
        assert src.funding_rate[src.index["BTCUSDT"]] == 0.00038167
        src.poll(wall.now())
        # malformed: refused, logged, nothing applied
        await srv.push({**doc, "p": "abc"})
        await srv.push({**doc, "e": "aggTrade"})
        await srv.push({**doc, "E": "soon"})
        await srv.push("[1,")
        assert await wait_until(lambda: src.counters["refused"] == 4)
        assert src.poll(wall.now())[0].size == 0
        assert "p (mark price)" in caplog.text and "aggTrade" in caplog.text and "event time" in caplog.text
        # a dropped connection (as Binance does every 24 h) reconnects to the same streams
        await srv.conns[-1].close()
        assert await wait_until(lambda: len(srv.paths) == 2 and src.connected)
        assert srv.paths[1] == srv.paths[0]
        await srv.push({"stream": "ethusdt@markPrice@1s", "data": {**doc, "s": "ETHUSDT", "p": "3400.5"}})
        assert await wait_until(lambda: src.counters["accepted"] == 4)
        assert src.poll(wall.now())[1].tolist() == [3400.5]
        stale = src.stale(wall.now() + 10, 5.0)
        assert stale[src.index["BTCUSDT"]] and stale[src.index["ETHUSDT"]]
    finally:
        await src.stop()
        await srv.stop()


# ---------------------------------------------------------------------------------- resync
def _with_brackets(insts: list[Instrument], symbol: str, brackets: list) -> list[Instrument]:
    return [i.model_copy(update={"brackets": brackets}) if i.symbol == symbol else i for i in insts]


def _book(insts, accounts, marks: dict[str, float]) -> Book:
    book = Book(insts, accounts)
    idx = np.array([book.symbol_index[s] for s in marks])
    book.set_marks(idx, np.array(list(marks.values())), 0.0)
    book.revalue()
    return book


async def test_resync_reports_margin_divergence_only_beyond_tolerance(venue, insts, wall):
    _, http = venue
    v = make_venue(http, insts, wall)
    assert await v.accounts.refresh()
    snap = v.accounts.snapshot
    mark = {"ADAUSDT": 0.4104759}
    # capguard's configured ADA table (1% mmr) against the venue's 0.65%: a real divergence
    found = find_divergences(_book(insts, snap.accounts, mark), snap.venue, accounts=["bn-main"])
    (d,) = found
    assert d.kind == "maintenance_margin" and d.venue == 0.0800428 and d.capguard == pytest.approx(0.12314277)
    # with the venue's own bracket (the documented 0.65% tier) capguard agrees to the cent
    (venue_tier,) = parse_leverage_brackets(load_doc_json("leverage_bracket.jsonc"))["ETHUSDT"]
    aligned = _with_brackets(insts, "ADAUSDT", [venue_tier])
    assert find_divergences(_book(aligned, snap.accounts, mark), snap.venue, accounts=["bn-main"]) == []
    await v.close()


def test_resync_liquidation_price_tolerance(insts):
    acct = Account(
        id="bn-main", wallet_balance=1000.0, positions=[Position(symbol="BTCUSDT", qty=0.5, entry_price=60000)]
    )
    book = _book(insts, [acct], {"BTCUSDT": 60000.0})
    ours = float(book.liquidation_prices()[0])
    mm = float(book.maintenance_margin[0])
    assert np.isfinite(ours) and ours > 0

    def venue_at(lp: float | None) -> list[VenuePosition]:
        return [VenuePosition("bn-main", "BTCUSDT", 0.5, 60000.0, maintenance_margin=mm, liquidation_price=lp)]

    assert find_divergences(book, venue_at(ours * 1.004), accounts=["bn-main"]) == []
    (d,) = find_divergences(book, venue_at(ours * 1.01), accounts=["bn-main"])
    assert d.kind == "liquidation_price" and d.capguard == pytest.approx(ours)
    (d,) = find_divergences(book, venue_at(None), accounts=["bn-main"])
    assert d.kind == "liquidation_price" and d.venue is None and "vs venue none" in d.message
    assert find_divergences(book, venue_at(ours * 1.01), accounts=["other"]) == []  # not the venue's account


async def test_resync_recognises_venue_liquidation_and_adl(venue, insts, wall):
    fake, http = venue
    v = make_venue(http, insts, wall)
    held = Account(
        id="bn-main", wallet_balance=23.72469206, positions=[Position(symbol="BTCUSDT", qty=0.002, entry_price=10900)]
    )
    book = _book(insts, [held], {"BTCUSDT": 10913.21})
    fake.positions = [
        {**load_doc_json("position_risk_v3.jsonc")[0], "symbol": "BTCUSDT", "positionAmt": "0.001",
         "entryPrice": "10900", "markPrice": "10913.21", "liquidationPrice": "0"}
    ]  # fmt: skip
    documented = load_doc_json("force_orders.jsonc")  # row 0: autoclose-..., row 1: adl_autoclose
    fake.force_orders = [documented[0]]
    (d,) = await v.accounts.resync(book)
    assert (d.kind, d.capguard, d.venue) == ("venue_liquidation", 0.002, 0.001)
    fake.force_orders = [documented[1]]
    (d,) = await v.accounts.resync(book)
    assert d.kind == "adl" and "ADL" in d.message
    fake.force_orders = []
    (d,) = await v.accounts.resync(book)
    assert d.kind == "position_changed"
    assert await v.accounts.resync(book, skip=[("bn-main", "BTCUSDT")]) == []  # capguard's own order in flight
    fake.positions = "not a list"
    (d,) = await v.accounts.resync(book)
    assert d.kind == "resync_failed"
    await v.close()


def test_account_mapping_rejects_garbage_shapes():
    cfg = BinanceConfig(accounts=[{"id": "x"}]).accounts[0]
    with pytest.raises(Refused):
        account_from_binance(cfg, {}, "nope", [], ["BTCUSDT"])  # type: ignore[arg-type]
    acct, venue_positions = account_from_binance(
        cfg, copy.deepcopy(load_doc_json("account_v3.jsonc")), [], [], ["BTCUSDT"]
    )
    assert acct.positions == [] and venue_positions == [] and acct.wallet_balance == 23.72469206


async def test_account_source_polls_in_the_background(venue, insts, wall):
    _, http = venue
    v = make_venue(http, insts, wall, account_interval=0.05)
    assert isinstance(v.accounts, BinanceAccountSource)
    await v.accounts.start()
    with contextlib.suppress(Exception):
        assert await wait_until(lambda: v.accounts.counters["polls"] >= 3)
    await v.accounts.stop()
    assert v.accounts.snapshot is not None
    await v.close()
