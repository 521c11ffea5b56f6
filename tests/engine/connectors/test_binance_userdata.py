"""The Binance user data stream and the server time offset, against loopback servers.

The venue answers with the documented examples (fixtures/binance, verbatim): POST/PUT/DELETE
/fapi/v1/listenKey, GET /fapi/v1/time, and the ACCOUNT_UPDATE, ORDER_TRADE_UPDATE and
listenKeyExpired events. Where a test needs an event the documentation does not print (a
one-way-mode account, a liquidation), it derives it from the documented one and says how.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from engine.connectors import BinanceConfig
from engine.connectors.base import Refused, VenuePosition
from engine.connectors.binance import BinanceVenue, parse_account_update, parse_order_update
from engine.ladder import DataState
from tests.engine.connectors.support import (
    HttpServer,
    Request,
    Response,
    free_port,
    load_doc_example,
    load_doc_json,
    wait_until,
)
from tests.engine.connectors.test_binance import ENV, KEY, SECRET, FakeBinance

DOC_KEY = "pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a65a1"  # Start User Data Stream
TIMESTAMP_ERROR = {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."}  # Error Codes


class UserDataVenue(FakeBinance):
    """FakeBinance plus the listen key endpoints, a server clock (local + skew) that signed
    requests must fall within (Binance's rule: timestamp < server + 1000 and server -
    timestamp <= recvWindow, else -1021), and GET /fapi/v1/time."""

    def __init__(self, local_ms: Callable[[], int] | None = None, skew_ms: int = 0) -> None:
        super().__init__()
        self.local_ms = local_ms or (lambda: int(time.time() * 1000))
        self.skew_ms = skew_ms
        self.time_answer: Any = None  # answer GET /fapi/v1/time with this (default: the server clock)
        self.refuse_timestamps = False  # answer every signed request with -1021
        self.active: str | None = None  # the account's live listen key
        self.created: list[str] = []
        self.key_calls: list[str] = []  # methods of the /fapi/v1/listenKey calls, in order
        self.fail_posts = 0  # answer this many listen key POSTs with a 503
        self.timestamps: list[tuple[str, int]] = []  # (path, timestamp) of every signed request

    def server_ms(self) -> int:
        return self.local_ms() + self.skew_ms

    async def __call__(self, req: Request) -> Response:
        if req.path == "/fapi/v1/time":
            return Response(200, self.time_answer if self.time_answer is not None else {"serverTime": self.server_ms()})
        if req.path == "/fapi/v1/listenKey":
            return self._listen_key(req)
        if "signature" in req.query:
            ts = int(req.query.get("timestamp", "0"))
            self.timestamps.append((req.path, ts))
            server = self.server_ms()
            if self.refuse_timestamps or not (ts < server + 1000 and server - ts <= int(req.query["recvWindow"])):
                return Response(400, TIMESTAMP_ERROR)
        return await super().__call__(req)

    def _listen_key(self, req: Request) -> Response:
        if req.headers.get("x-mbx-apikey") != KEY:
            return Response(401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."})
        assert "signature" not in req.query  # USER_STREAM: the API key only
        self.key_calls.append(req.method)
        if req.method == "POST" and self.fail_posts:
            self.fail_posts -= 1
            return Response(503, {"code": -1000, "msg": "Unknown error, please check your request or try again later."})
        if req.method == "POST":  # an active key is returned (and extended); else a new one
            if self.active is None:
                self.active = DOC_KEY if not self.created else f"loopback-listen-key-{len(self.created) + 1}"
                self.created.append(self.active)
            return Response(200, {"listenKey": self.active})
        if self.active is None:
            return Response(400, {"code": -1125, "msg": "This listenKey does not exist."})
        if req.method == "PUT":
            return Response(200, load_doc_json("listen_key_keepalive.jsonc"))
        self.active = None  # DELETE
        return Response(200, load_doc_json("listen_key_close.jsonc"))


class UserStreamServer:
    """`<base>/ws/<listenKey>`: records each connection's path; with a venue, a handshake for a
    key that is not the venue's live one is refused (HTTP 400)."""

    def __init__(self, venue: UserDataVenue | None = None) -> None:
        self.port = free_port()
        self.venue = venue
        self.paths: list[str] = []
        self.conns: list[ServerConnection] = []
        self.refused = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/private"

    async def start(self) -> None:
        self._server = await serve(self._handle, "127.0.0.1", self.port, process_request=self._check)

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    def _check(self, connection: ServerConnection, request: Any) -> Any:
        if self.venue is not None and request.path.rsplit("/", 1)[-1] != self.venue.active:
            self.refused += 1
            return connection.respond(HTTPStatus.BAD_REQUEST, "This listenKey does not exist.\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        self.paths.append(ws.request.path)
        self.conns.append(ws)
        await ws.wait_closed()

    async def push(self, obj: Any) -> None:
        await self.conns[-1].send(obj if isinstance(obj, str) else json.dumps(obj))


def binance_config(http: HttpServer, ws: UserStreamServer | None = None, **kw: Any) -> BinanceConfig:
    return BinanceConfig(
        rest_url=http.url,
        ws_url="ws://127.0.0.1:9/market",
        user_ws_url=ws.url if ws is not None else "ws://127.0.0.1:9/private",
        accounts=[{"id": "bn-main", "api_key_env": "CG_BINANCE_KEY", "api_secret_env": "CG_BINANCE_SECRET"}],
        backoff={"initial": 0.02, "maximum": 0.05},
        **kw,
    )


def one_way_update() -> dict[str, Any]:
    """The documented ACCOUNT_UPDATE made one-way: its BOTH entry closes ADAUSDT (the account's
    documented position) and its LONG entry becomes the BOTH position it would be in one-way
    mode (BTCUSDT 20 @ 6563.665, isolated, wallet 13200.70726908); balances as documented."""
    event = load_doc_example("account_update.jsonc")
    closed, long, _short = event["a"]["P"]
    event["a"]["P"] = [{**closed, "s": "ADAUSDT"}, {**long, "ps": "BOTH"}]
    return event


@pytest.fixture
async def venue():
    fake = UserDataVenue()
    async with HttpServer(fake) as http:
        ws = UserStreamServer(fake)
        await ws.start()
        try:
            yield fake, http, ws
        finally:
            await ws.stop()


async def started(
    http: HttpServer, ws: UserStreamServer, insts, clock, keepalive: float | None = None, **kw: Any
) -> BinanceVenue:
    v = BinanceVenue(binance_config(http, ws, **kw), insts, clock, env=ENV)
    stream = v.user_streams["bn-main"]
    stream.check_interval = 0.02
    stream.keepalive = keepalive or stream.keepalive
    await v.accounts.start()
    assert await wait_until(lambda: v.accounts.snapshot is not None and stream.connected)
    return v


# ---------------------------------------------------------------------------------- listen key
async def test_listen_key_created_kept_alive_and_deleted_on_stop(venue, insts, wall, caplog):
    caplog.set_level(logging.DEBUG)
    fake, http, ws = venue
    v = BinanceVenue(binance_config(http, ws), insts, wall, env=ENV)
    stream = v.user_streams["bn-main"]
    stream.keepalive, stream.check_interval = 0.15, 0.02
    await v.accounts.start()
    try:
        assert await wait_until(lambda: stream.connected)
        assert stream.listen_key == DOC_KEY and fake.key_calls[0] == "POST"
        assert ws.paths == [f"/private/ws/{DOC_KEY}"]
        post = next(r for r in http.requests if r.path == "/fapi/v1/listenKey")
        assert post.method == "POST" and post.headers["x-mbx-apikey"] == KEY and post.query_string == ""
        assert await wait_until(lambda: stream.counters["keepalives"] >= 2)
        assert fake.key_calls[1:3] == ["PUT", "PUT"] and len(ws.paths) == 1  # kept alive, not reconnected
    finally:
        await v.accounts.stop()
    assert fake.key_calls[-1] == "DELETE" and fake.active is None and stream.listen_key is None
    assert not stream.connected
    assert KEY not in caplog.text and SECRET not in caplog.text  # keys never reach the logs
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("capguard")]
    assert any("connected to" in m for m in ours) and not any(DOC_KEY in m for m in ours)  # nor the listen key
    await v.close()


def test_user_stream_configuration():
    cfg = BinanceConfig(accounts=[{"id": "a"}])
    assert cfg.user_stream and cfg.listen_key_keepalive == 1800 and cfg.time_sync_interval == 300
    assert cfg.user_ws_url == "wss://fstream.binancefuture.com/private"
    with pytest.raises(ValueError, match="user_ws_url must be a ws:// or wss:// URL"):
        BinanceConfig(user_ws_url="https://fstream.binance.com/private")
    with pytest.raises(ValueError, match="less than 3600"):
        BinanceConfig(listen_key_keepalive=3600)


async def test_user_stream_off_opens_no_stream(venue, insts, wall):
    fake, http, ws = venue
    v = BinanceVenue(binance_config(http, ws, user_stream=False), insts, wall, env=ENV)
    assert v.user_streams == {} and v.accounts.streams == []
    await v.accounts.start()
    assert await wait_until(lambda: v.accounts.snapshot is not None)
    await v.accounts.stop()
    assert fake.key_calls == [] and ws.paths == []
    await v.close()


# ---------------------------------------------------------------------------------- ACCOUNT_UPDATE
async def test_account_update_is_merged_into_a_new_snapshot(venue, insts, wall):
    _, http, ws = venue
    v = await started(http, ws, insts, wall)
    src, stream = v.accounts, v.user_streams["bn-main"]
    try:
        before = src.snapshot
        (acct,) = before.accounts
        assert [(p.symbol, p.qty) for p in acct.positions] == [("ADAUSDT", 30.0)] and acct.margin_mode == "cross"
        last_ok = src.last_ok
        await ws.push(one_way_update())
        assert await wait_until(lambda: src.snapshot is not before)
        snap = src.snapshot
        (acct,) = snap.accounts
        # hand-checked against the documented payload
        assert snap.seq == before.seq + 1 and snap.as_of == "2019-08-02T11:36:38.938Z"
        assert acct.wallet_balance == 122624.12345678  # a.B[USDT].wb (BUSD is not the collateral)
        assert acct.margin_mode == "isolated"  # mt "isolated"; ADAUSDT (cross) closed by pa "0"
        (pos,) = acct.positions
        assert (pos.symbol, pos.qty, pos.entry_price, pos.isolated_margin) == (
            "BTCUSDT",
            20.0,
            6563.665,
            13200.70726908,
        )
        assert acct.open_orders == before.accounts[0].open_orders  # not in the event: unchanged
        assert snap.venue == (
            VenuePosition(
                "bn-main", "BTCUSDT", 20.0, 6563.665, isolated_margin=13200.70726908, update_time=1564745798.938
            ),
        )
        # only a REST poll confirms the whole account
        assert src.last_ok == last_ok and src.counters["stream_applied"] == 1 and stream.counters["accepted"] == 1
        # a funding fee: the balance alone
        fee = {
            **one_way_update(),
            "T": 1564745798999,
            "a": {"m": "FUNDING_FEE", "B": [{"a": "USDT", "wb": "122620.5"}]},
        }
        await ws.push(fee)
        assert await wait_until(lambda: src.snapshot.seq == snap.seq + 1)
        (after,) = src.snapshot.accounts
        assert after.wallet_balance == 122620.5 and after.positions == acct.positions
        # an older event (transaction time before one applied) changes nothing
        await ws.push(one_way_update())
        assert await wait_until(lambda: src.counters["stream_ignored"] == 1)
        assert src.snapshot.seq == snap.seq + 1
    finally:
        await v.accounts.stop()
        await v.close()


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (lambda: load_doc_example("account_update.jsonc"), "hedge mode is not supported"),  # LONG and SHORT sides
        (lambda: {**one_way_update(), "a": "nothing"}, "a (update data) must be an object"),
        (lambda: _edit(one_way_update(), lambda a: a["B"][0].update(wb="lots")), "wallet balance"),
        (lambda: _edit(one_way_update(), lambda a: a["P"][1].update(pa="NaN")), "pa (position amount)"),
        (lambda: _edit(one_way_update(), lambda a: a["P"][1].update(s="COMPUSDT")), "not a configured instrument"),
        (lambda: _edit(one_way_update(), lambda a: a["P"][1].update(ep="0")), "entry price"),
        (lambda: _edit(one_way_update(), lambda a: a["P"][1].update(mt="portfolio")), "mt (margin type)"),
        (lambda: _edit(one_way_update(), lambda a: a["P"].pop(0)), "mix of cross and isolated"),
        (lambda: {k: v for k, v in one_way_update().items() if k != "E"}, "E (event time)"),
        (lambda: {"E": 1564745798939}, "e (event type) missing"),
        (lambda: "[1,", "not valid JSON"),
    ],
)
async def test_malformed_account_update_is_refused_and_nothing_applied(venue, insts, wall, caplog, event, reason):
    caplog.set_level(logging.WARNING, logger="capguard.connectors")
    _, http, ws = venue
    v = await started(http, ws, insts, wall)
    stream = v.user_streams["bn-main"]
    try:
        before = v.accounts.snapshot
        await ws.push(event())
        assert await wait_until(lambda: stream.counters["refused"] == 1)
        assert v.accounts.snapshot is before and v.accounts.counters["stream_applied"] == 0
        assert reason in stream.last_refusal and reason in caplog.text
        assert stream.connected  # a bad message is refused, the stream goes on
    finally:
        await v.accounts.stop()
        await v.close()


def _edit(event: dict[str, Any], change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    change(event["a"])
    return event


async def test_events_before_the_first_poll_create_no_snapshot(venue, insts, wall):
    fake, http, ws = venue
    fake.account = {"assets": "none"}  # every REST poll is refused: no snapshot
    v = BinanceVenue(binance_config(http, ws), insts, wall, env=ENV)
    stream = v.user_streams["bn-main"]
    await v.accounts.start()
    try:
        assert await wait_until(lambda: stream.connected and v.accounts.counters["polls"] >= 1)
        await ws.push(one_way_update())
        assert await wait_until(lambda: v.accounts.counters["stream_ignored"] == 1)
        assert v.accounts.snapshot is None and v.accounts.data_state(wall.now()) == DataState.STALE
        with pytest.raises(Refused, match="not a configured Binance account"):
            v.accounts.apply_account_update("someone-else", one_way_update())
    finally:
        await v.accounts.stop()
        await v.close()


def test_documented_events_parse():
    # ORDER_TRADE_UPDATE, verbatim: a journal-friendly record
    rec = parse_order_update(load_doc_json("order_trade_update.jsonc"), "bn-main")
    assert rec == {
        "account": "bn-main", "symbol": "BTCUSDT", "client_order_id": "TEST", "order_id": 8886774, "side": "SELL",
        "order_type": "TRAILING_STOP_MARKET", "execution": "NEW", "status": "NEW", "qty": 0.001, "filled_qty": 0.0,
        "avg_price": 0.0, "last_qty": 0.0, "last_price": 0.0, "reduce_only": False, "time": 1568879465650,
        "origin": None,
    }  # fmt: skip
    # ACCOUNT_UPDATE, verbatim, with only its BOTH entry (pa 0 in a symbol the account may not hold)
    doc = load_doc_example("account_update.jsonc")
    doc["a"]["P"] = doc["a"]["P"][:1]
    upd = parse_account_update(doc, "USDT", ["BTCUSDT"])
    assert (upd.event_time, upd.transaction_time, upd.reason, upd.wallet) == (
        1564745798939,
        1564745798938,
        "ORDER",
        122624.12345678,
    )
    assert [(p.symbol, p.qty, p.isolated) for p in upd.positions] == [("BTCUSDT", 0.0, True)]
    assert (
        parse_account_update(doc, "USDC", []).wallet is None and parse_account_update(doc, "USDC", []).positions == ()
    )


async def test_order_trade_update_is_logged_and_handed_on(venue, insts, wall, caplog):
    caplog.set_level(logging.INFO, logger="capguard.connectors")
    _, http, ws = venue
    v = await started(http, ws, insts, wall)
    stream = v.user_streams["bn-main"]
    seen: list[dict[str, Any]] = []
    stream.order_listeners.append(seen.append)
    try:
        doc = load_doc_json("order_trade_update.jsonc")
        await ws.push(doc)
        # a venue liquidation as the documentation describes it: c "autoclose-XXX", X "NEW"
        liq = copy.deepcopy(doc)
        liq["o"].update(c="autoclose-1591", o="LIQUIDATION", ps="BOTH")
        await ws.push(liq)
        await ws.push({**doc, "o": {**doc["o"], "S": "SIDEWAYS"}})
        assert await wait_until(lambda: len(seen) == 2 and stream.counters["refused"] == 1)
        assert [r["client_order_id"] for r in stream.order_updates] == ["TEST", "autoclose-1591"]
        assert seen[1]["origin"] == "venue_liquidation" and seen[0]["origin"] is None
        liq_log = next(r for r in caplog.records if "autoclose-1591" in r.getMessage())
        assert liq_log.levelno == logging.WARNING and liq_log.event["event"] == "venue_order_update"
        assert "o.S (side)" in stream.last_refusal
    finally:
        await v.accounts.stop()
        await v.close()


# ---------------------------------------------------------------------------------- key renewal
async def test_listen_key_expired_creates_a_new_key_and_resubscribes(venue, insts, wall):
    fake, http, ws = venue
    v = await started(http, ws, insts, wall)
    stream = v.user_streams["bn-main"]
    try:
        expired = load_doc_json("listen_key_expired.jsonc")
        await ws.push(expired)  # verbatim: about another key ("WsCMN0a4..."), not this stream's
        assert await wait_until(lambda: stream.counters["ignored"] == 1)
        assert stream.listen_key == DOC_KEY and len(ws.paths) == 1
        fake.active = None  # Binance let the key lapse ...
        await ws.push({**expired, "listenKey": DOC_KEY})  # ... and says so
        assert await wait_until(lambda: len(ws.paths) == 2 and stream.connected)
        assert stream.listen_key == "loopback-listen-key-2" == fake.active
        assert ws.paths[1] == "/private/ws/loopback-listen-key-2"
        # events flow on the new subscription
        before = v.accounts.snapshot
        await ws.push(one_way_update())
        assert await wait_until(lambda: v.accounts.snapshot is not before)
    finally:
        await v.accounts.stop()
        await v.close()


async def test_keepalive_on_a_vanished_key_creates_a_new_one(venue, insts, wall):
    fake, http, ws = venue
    v = await started(http, ws, insts, wall, keepalive=0.05)
    stream = v.user_streams["bn-main"]
    try:
        assert await wait_until(lambda: stream.counters["keepalives"] >= 1)
        fake.active = None  # the key is gone without an event: the keepalive hears -1125
        assert await wait_until(lambda: stream.listen_key == "loopback-listen-key-2" and len(ws.paths) == 2)
        assert await wait_until(lambda: stream.connected)
        assert ws.paths[1].endswith("/loopback-listen-key-2")
        n = fake.key_calls.index("POST", 1)
        assert fake.key_calls[0] == "POST" and fake.key_calls[n - 1 : n + 1] == ["PUT", "POST"]
    finally:
        await v.accounts.stop()
        await v.close()


async def test_disconnect_reconnects_and_resubscribes(venue, insts, wall):
    fake, http, ws = venue
    v = await started(http, ws, insts, wall)
    stream = v.user_streams["bn-main"]
    try:
        await ws.conns[-1].close()  # the venue drops the link (as it does every 24 h)
        assert await wait_until(lambda: len(ws.paths) == 2 and stream.connected)
        assert ws.paths == [f"/private/ws/{DOC_KEY}"] * 2 and fake.key_calls == ["POST"]  # same key: no new one
        before = v.accounts.snapshot
        await ws.push(one_way_update())
        assert await wait_until(lambda: v.accounts.snapshot is not before)
        # the link drops while the key lapses: handshakes are refused until a new key is made
        fake.active = None
        await ws.conns[-1].close()
        assert await wait_until(lambda: len(ws.paths) == 3 and stream.connected)
        assert ws.refused >= 1 and ws.paths[2] == "/private/ws/loopback-listen-key-2"
    finally:
        await v.accounts.stop()
        await v.close()


async def test_a_listen_key_that_cannot_be_created_at_start_is_retried(venue, insts, wall, caplog):
    caplog.set_level(logging.WARNING, logger="capguard.connectors")
    fake, http, ws = venue
    fake.fail_posts = 3
    v = BinanceVenue(binance_config(http, ws), insts, wall, env=ENV)
    stream = v.user_streams["bn-main"]
    stream.check_interval = 0.02
    await v.accounts.start()
    try:
        assert stream.listen_key is None and not stream.connected and ws.paths == []
        assert await wait_until(lambda: stream.connected)
        assert fake.key_calls[:4] == ["POST"] * 4 and stream.counters["key_failures"] == 3
        assert ws.paths == [f"/private/ws/{DOC_KEY}"] and "listen key create failed" in caplog.text
    finally:
        await v.accounts.stop()
        await v.close()


# ---------------------------------------------------------------------------------- server time
LOCAL_MS = 1499827314559  # the local clock, 5 s behind the documented serverTime 1499827319559
SKEW = 7000  # a venue clock 7 s ahead: beyond the 5 s recvWindow, so unsynced requests get -1021


async def test_signed_timestamps_use_the_server_time_offset(insts, wall):
    fake = UserDataVenue(local_ms=lambda: LOCAL_MS, skew_ms=5000)
    fake.time_answer = load_doc_json("server_time.jsonc")  # {"serverTime": 1499827319559}
    async with HttpServer(fake) as http:
        v = BinanceVenue(
            binance_config(http, user_stream=False, time_sync_interval=0.05),
            insts,
            wall,
            env=ENV,
            time_ms=lambda: LOCAL_MS,
        )
        await v.accounts.start()
        try:
            assert await wait_until(lambda: v.accounts.snapshot is not None)
            assert http.requests[0].path == "/fapi/v1/time"  # before the first signed request
            assert v.server_time.offset_ms == 5000 and v.clients["bn-main"].server_time is v.server_time
            signed = [ts for _, ts in fake.timestamps]
            assert signed and set(signed) == {LOCAL_MS + 5000}  # local clock + offset, never refused
            assert await wait_until(lambda: v.server_time.syncs >= 3)  # and again every time_sync_interval
        finally:
            await v.accounts.stop()
            await v.close()


async def test_minus_1021_resyncs_the_offset_and_retries_once(insts, wall, caplog):
    caplog.set_level(logging.WARNING, logger="capguard.connectors")
    fake = UserDataVenue(local_ms=lambda: LOCAL_MS, skew_ms=SKEW)
    async with HttpServer(fake) as http:
        v = BinanceVenue(binance_config(http, user_stream=False), insts, wall, env=ENV, time_ms=lambda: LOCAL_MS)
        assert v.server_time.offset_ms == 0  # never synced: 5 s behind the venue
        assert await v.accounts.refresh()
        paths = [r.path for r in http.requests]
        assert paths[:3] == ["/fapi/v3/account", "/fapi/v1/time", "/fapi/v3/account"]
        assert fake.timestamps[0] == ("/fapi/v3/account", LOCAL_MS)  # refused with -1021 ...
        assert fake.timestamps[1] == ("/fapi/v3/account", LOCAL_MS + SKEW)  # ... re-signed and accepted
        assert "-1021" in caplog.text and v.server_time.offset_ms == SKEW
        # a venue that keeps refusing: one retry only, then the poll fails with the code
        fake.refuse_timestamps = True
        n = len(http.requests)
        assert not await v.accounts.refresh()
        assert [r.path for r in http.requests[n:]] == ["/fapi/v3/account", "/fapi/v1/time", "/fapi/v3/account"]
        assert "-1021" in v.accounts.last_error
        # an unsigned request is never retried that way
        fake.time_answer = {"serverTime": "soon"}
        with pytest.raises(Refused, match="serverTime"):
            await v.clients["bn-main"].sync_time()
        await v.close()


async def test_orders_are_resent_once_after_minus_1021(insts, wall):
    fake = UserDataVenue(local_ms=lambda: LOCAL_MS, skew_ms=SKEW)
    async with HttpServer(fake) as http:
        v = BinanceVenue(binance_config(http, user_stream=False), insts, wall, env=ENV, time_ms=lambda: LOCAL_MS)
        from engine.orders import OrderRequest, OrderStatus

        r = await v.broker.send(OrderRequest("cg21-1", "bn-main", "BTCUSDT", -1, 0.5))
        assert r.status == OrderStatus.FILLED and len(fake.posts) == 1 and len(fake.orders) == 1
        assert [p for p, _ in fake.timestamps[:2]] == ["/fapi/v1/order", "/fapi/v1/order"]
        await v.close()


async def test_time_sync_failure_is_logged_not_fatal(insts, wall, caplog):
    caplog.set_level(logging.WARNING, logger="capguard.connectors")
    fake = UserDataVenue()
    fake.time_answer = {"code": -1000, "msg": "nope"}
    async with HttpServer(fake) as http:
        v = BinanceVenue(binance_config(http, user_stream=False), insts, wall, env=ENV)
        assert await v.accounts.sync_time() is None and "server time sync failed" in caplog.text
        assert await v.accounts.refresh()  # the local clock is close enough here
        await v.close()
    await asyncio.sleep(0)
