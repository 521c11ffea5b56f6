"""Binance USD-M futures (httpx + websockets): mark prices, brackets, accounts, orders, resync.

- Mark prices: the `<symbol>@markPrice` (or `@markPrice@1s`) stream, combined-stream URL
  `<ws_url>/stream?streams=btcusdt@markPrice@1s/...`; payload fields e, E, s, p, i, P, r, T.
  Reconnects forever with backoff and jitter; the stream list is in the URL, so every
  reconnect resubscribes. Binance closes each connection after 24 h: that is a reconnect too.
- Brackets: GET /fapi/v1/leverageBracket -> engine.model.Bracket (notionalFloor -> floor,
  notionalCap -> cap, maintMarginRatio -> mmr, initialLeverage -> max_leverage,
  cum -> maintenance_amount).
- Accounts: GET /fapi/v3/account (wallet balance of the collateral asset), GET
  /fapi/v3/positionRisk (positions with the venue's maintMargin and liquidationPrice), GET
  /fapi/v1/openOrders -> engine.model.Account records. One-way mode; an account holding both
  sides of a symbol (hedge mode), a mix of cross and isolated positions, or a symbol that is
  not a configured instrument is refused whole.
- Orders: POST /fapi/v1/order with newClientOrderId and reduceOnly, newOrderRespType=RESULT;
  GET /fapi/v1/order by origClientOrderId; fills from GET /fapi/v1/userTrades. An unanswered
  send (timeout, transport error, HTTP 5xx, -1006/-1007) is UNKNOWN: BrokerTimeout, and the
  id is looked up before it is ever sent again.
- Signing: HMAC-SHA256 of the exact query string with the secret key, appended as
  `signature`, with `timestamp` and `recvWindow`, and the key in the X-MBX-APIKEY header. Keys
  come from environment variables only (named in the config), never from the config file,
  and are never logged (`BinanceCredentials` masks its repr).
- Resync: `find_divergences` compares capguard's maintenance margin and liquidation price per
  position with the venue's, and reports positions that changed on the venue without a
  capguard order (a venue liquidation or ADL, recognised from GET /fapi/v1/forceOrders).
- Server time: GET /fapi/v1/time at start and every `time_sync_interval`; signed requests are
  stamped local clock + offset. An answer -1021 (timestamp outside recvWindow) resyncs the
  offset and retries that request once (the venue refused it unexecuted, so it is safe).
- User data stream (one per account, `user_stream = true`): POST /fapi/v1/listenKey, a PUT
  keepalive every `listen_key_keepalive` seconds (-1125 "listenKey does not exist" creates a new
  one), DELETE on stop; the socket `<user_ws_url>/ws/<listenKey>` reconnects forever with the
  WebSocket source's backoff. ACCOUNT_UPDATE (a.B[].wb of the collateral asset; a.P[]: s, pa,
  ep, mt, iw, ps) is merged into the current REST snapshot and applied as a new snapshot;
  nothing is created before the first REST poll succeeded, and only a REST poll confirms the
  account as fresh (`last_ok`). ORDER_TRADE_UPDATE is logged as a `venue_order_update` event
  (venue liquidations `autoclose-*` and ADL `adl_autoclose` at WARNING) and handed to
  `order_listeners`. listenKeyExpired creates a new key and resubscribes. Anything malformed
  is refused whole with a logged reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import random
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection

from engine.clock import Clock, iso
from engine.connectors.base import (
    AccountSnapshot,
    AccountSourceBase,
    Backoff,
    BinanceAccountConfig,
    BinanceConfig,
    ConnectorError,
    Refused,
    VenuePosition,
    describe_errors,
    finite_positive,
    secret_from_env,
)
from engine.connectors.ticks import decode
from engine.connectors.ws_prices import WebSocketSource
from engine.model import Account, Bracket, InputError, Instrument, OpenOrder, Position, Side, resolve_brackets
from engine.orders import BrokerTimeout, OrderRequest, OrderResult, OrderStatus, OrderType

if TYPE_CHECKING:
    from engine.book import Book

log = logging.getLogger("capguard.connectors.binance")

CLIENT_ORDER_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
UNKNOWN_CODES = frozenset({-1006, -1007})  # "execution status unknown"
NO_SUCH_ORDER = -2013
UNKNOWN_ORDER = -2011
INVALID_TIMESTAMP = -1021  # "Timestamp for this request is outside of the recvWindow."
NO_SUCH_LISTEN_KEY = -1125  # "This listenKey does not exist."


# ---------------------------------------------------------------------------------- signing
def sign(payload: str, secret: str) -> str:
    """HMAC-SHA256 of `payload` (the query string, then the body) with the secret key, hex."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class BinanceCredentials:
    api_key: str = field(repr=False)
    secret: str = field(repr=False)

    @classmethod
    def from_env(cls, key_env: str, secret_env: str, env: Mapping[str, str] | None = None) -> BinanceCredentials:
        return cls(
            api_key=secret_from_env(key_env, env, "Binance API key"),
            secret=secret_from_env(secret_env, env, "Binance API secret"),
        )

    def __repr__(self) -> str:
        return f"BinanceCredentials(api_key={self.api_key[:4]}…, secret=***)"


class BinanceError(Exception):
    """An answer from Binance that says no: HTTP status, Binance error code and message."""

    def __init__(self, status: int, code: int | None, msg: str) -> None:
        super().__init__(f"HTTP {status}, code {code}: {msg}")
        self.status = status
        self.code = code
        self.msg = msg


class BinanceUnknown(Exception):
    """No usable answer: the request may or may not have been executed."""


def _number(value: Any, what: str, *, positive: bool = False, allow_zero: bool = True) -> float:
    if isinstance(value, bool):
        raise Refused(f"{what}: not a number ({value!r})")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise Refused(f"{what}: not a number ({value!r})") from None
    if not math.isfinite(x):
        raise Refused(f"{what}: not finite ({value!r})")
    if positive and (x < 0 or (x == 0 and not allow_zero)):
        raise Refused(f"{what}: must be {'positive' if not allow_zero else 'non-negative'}, got {value!r}")
    return x


def fmt_decimal(x: float) -> str:
    """A float as a plain decimal string (no exponent), as Binance expects quantities and prices."""
    d = Decimal(repr(float(x)))
    text = format(d, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


@dataclass
class ServerTime:
    """Binance's clock relative to ours, shared by every client of one venue: a signed request
    is stamped local time + `offset_ms`, the offset measured by GET /fapi/v1/time."""

    offset_ms: int = 0
    syncs: int = 0
    rtt_ms: int | None = None  # round trip of the last sync


class BinanceRest:
    """Signed and public requests for one API key."""

    def __init__(
        self,
        base_url: str,
        credentials: BinanceCredentials | None,
        *,
        recv_window: int = 5000,
        timeout: float = 5.0,
        client: httpx.AsyncClient | None = None,
        time_ms: Callable[[], int] | None = None,
        server_time: ServerTime | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self.recv_window = recv_window
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout))
        self._time_ms = time_ms or (lambda: int(time.time() * 1000))
        self.server_time = server_time if server_time is not None else ServerTime()

    def timestamp_ms(self) -> int:
        """The `timestamp` of a signed request: the local clock plus the measured server offset."""
        return self._time_ms() + self.server_time.offset_ms

    async def aclose(self) -> None:
        await self._client.aclose()

    def signed_query(self, params: Mapping[str, Any]) -> str:
        if self.credentials is None:
            raise ConnectorError("a signed Binance request needs API credentials")
        items = [(k, _param(v)) for k, v in params.items() if v is not None]
        items += [("recvWindow", str(self.recv_window)), ("timestamp", str(self.timestamp_ms()))]
        query = urlencode(items)
        return f"{query}&signature={sign(query, self.credentials.secret)}"

    async def request(
        self, method: str, path: str, params: Mapping[str, Any] | None = None, signed: bool = True
    ) -> Any:
        """One request; a signed one refused with -1021 (timestamp outside recvWindow) is retried
        once, re-signed, after the server time offset has been measured again."""
        try:
            return await self._request(method, path, params, signed)
        except BinanceError as exc:
            if not signed or exc.code != INVALID_TIMESTAMP:
                raise
            log.warning(
                "%s %s: %s (-1021); resyncing the server time and retrying once",
                method,
                path,
                exc.msg,
                extra={"event": {"event": "time_resync", "path": path, "offset_ms": self.server_time.offset_ms}},
            )
            try:
                await self.sync_time()
            except (BinanceError, BinanceUnknown, Refused) as sync_exc:
                log.warning("server time resync failed: %s", sync_exc)
                raise exc from None
            return await self._request(method, path, params, signed)

    async def sync_time(self) -> int:
        """GET /fapi/v1/time: set the offset to server time minus the local midpoint of the trip."""
        before = self._time_ms()
        data = await self._request("GET", "/fapi/v1/time", None, False)
        after = self._time_ms()
        server = data.get("serverTime") if isinstance(data, dict) else None
        if not isinstance(server, int) or isinstance(server, bool) or server <= 0:
            raise Refused(f"GET /fapi/v1/time: serverTime must be a positive integer, got {server!r}")
        st = self.server_time
        st.offset_ms = round(server - (before + after) / 2)
        st.syncs += 1
        st.rtt_ms = after - before
        log.info(
            "binance server time offset %+d ms (round trip %d ms)",
            st.offset_ms,
            st.rtt_ms,
            extra={"event": {"event": "time_sync", "offset_ms": st.offset_ms, "rtt_ms": st.rtt_ms}},
        )
        return st.offset_ms

    async def _request(self, method: str, path: str, params: Mapping[str, Any] | None, signed: bool) -> Any:
        params = params or {}
        if signed:
            query = self.signed_query(params)
        else:
            query = urlencode([(k, _param(v)) for k, v in params.items() if v is not None])
        url = f"{self.base_url}{path}" + (f"?{query}" if query else "")
        headers = {"X-MBX-APIKEY": self.credentials.api_key} if self.credentials is not None else {}
        try:
            resp = await self._client.request(method, url, headers=headers)
        except httpx.TimeoutException as exc:
            raise BinanceUnknown(f"{method} {path}: timeout ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise BinanceUnknown(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        try:
            data = resp.json()
        except ValueError:
            data = None
        code = data.get("code") if isinstance(data, dict) else None
        msg = data.get("msg") if isinstance(data, dict) else None
        if resp.status_code >= 500 or code in UNKNOWN_CODES:
            raise BinanceUnknown(f"{method} {path}: HTTP {resp.status_code} {msg or resp.text[:120]}")
        if resp.status_code >= 400:
            raise BinanceError(resp.status_code, code if isinstance(code, int) else None, str(msg or resp.text[:200]))
        if data is None:
            raise BinanceUnknown(f"{method} {path}: HTTP {resp.status_code} with a body that is not JSON")
        return data


def _param(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return fmt_decimal(v)
    return str(v)


# ---------------------------------------------------------------------------------- prices
def parse_mark_price(obj: Any) -> tuple[str, float, int]:
    """(symbol, mark price, event time ms) from a documented markPriceUpdate payload."""
    if not isinstance(obj, dict):
        raise Refused("markPrice payload is not a JSON object")
    if obj.get("e") != "markPriceUpdate":
        raise Refused(f"unexpected event type e={obj.get('e')!r}")
    symbol = obj.get("s")
    if not isinstance(symbol, str) or not symbol:
        raise Refused("s (symbol) missing")
    try:
        price = finite_positive(obj.get("p"))
    except Refused as exc:
        raise Refused(f"{symbol}: p (mark price) {exc}") from None
    event_time = obj.get("E")
    if not isinstance(event_time, int) or isinstance(event_time, bool) or event_time <= 0:
        raise Refused(f"{symbol}: E (event time) must be a positive integer, got {event_time!r}")
    return symbol, price, event_time


def _funding_rate(obj: dict[str, Any]) -> float | None:
    """The payload's `r` (funding rate per interval) when it is a finite number, else None: an
    absent or odd rate leaves the last one known and never refuses the mark price."""
    try:
        rate = float(obj.get("r"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return rate if math.isfinite(rate) and abs(rate) < 1.0 else None


class BinanceMarkPriceSource(WebSocketSource):
    def __init__(
        self,
        config: BinanceConfig,
        instruments: Sequence[Instrument] | Sequence[str],
        clock: Clock,
        *,
        rng: random.Random | None = None,
        name: str = "binance_mark",
    ) -> None:
        super().__init__(name, instruments, clock, backoff=config.backoff, ping_interval=config.ping_interval, rng=rng)
        self.config = config
        wanted = config.symbols or list(self.symbols)
        unknown = [s for s in wanted if s not in self.index]
        if unknown:
            raise ConnectorError(f"binance symbols not configured as instruments: {', '.join(unknown)}")
        suffix = "@markPrice@1s" if config.mark_price_speed == "1s" else "@markPrice"
        self.streams = [f"{s.lower()}{suffix}" for s in wanted]
        self.event_lag_ms: float | None = None

    def url(self) -> str:
        return f"{self.config.ws_url}/stream?streams={'/'.join(self.streams)}"

    async def on_open(self, ws: ClientConnection) -> None:
        """The streams are in the URL: connecting again is subscribing again."""

    def on_message(self, raw: str | bytes) -> None:
        obj = decode(raw)
        if isinstance(obj, dict) and "data" in obj and "stream" in obj:
            obj = obj["data"]
        elif isinstance(obj, dict) and "result" in obj and "id" in obj:
            return  # an answer to a SUBSCRIBE request
        payloads = obj if isinstance(obj, list) else [obj]
        items: list[tuple[int, float]] = []
        ignored = 0
        for p in payloads:
            symbol, price, event_ms = parse_mark_price(p)
            i = self.index.get(symbol)
            if i is None:
                ignored += 1
                continue
            items.append((i, price))
            self.event_lag_ms = self.clock.now() * 1000.0 - event_ms
            rate = _funding_rate(p)
            if rate is not None:
                self.funding_rate[i] = rate
        self.counters["ignored"] += ignored
        if items:
            self.accept(items)


# ---------------------------------------------------------------------------------- brackets
def brackets_from_binance(entry: Mapping[str, Any]) -> list[Bracket]:
    """One leverageBracket entry ({"symbol", "brackets": [...]}) as capguard brackets."""
    symbol = entry.get("symbol")
    rows = entry.get("brackets")
    if not isinstance(symbol, str) or not isinstance(rows, list) or not rows:
        raise Refused("leverageBracket entry needs a symbol and a non-empty brackets list")
    out = []
    for n, b in enumerate(rows):
        if not isinstance(b, dict):
            raise Refused(f"{symbol} bracket {n}: not an object")
        try:
            out.append(
                Bracket(
                    floor=_number(b.get("notionalFloor"), "notionalFloor", positive=True),
                    cap=_number(b.get("notionalCap"), "notionalCap", positive=True),
                    mmr=_number(b.get("maintMarginRatio"), "maintMarginRatio", positive=True),
                    max_leverage=_number(b.get("initialLeverage"), "initialLeverage", positive=True, allow_zero=False),
                    maintenance_amount=_number(b.get("cum"), "cum"),
                )
            )
        except (ValueError, Refused) as exc:
            raise Refused(f"{symbol} bracket {n}: {exc}") from None
    out.sort(key=lambda b: b.floor)
    try:
        return resolve_brackets(symbol, out)
    except InputError as exc:
        raise Refused(str(exc)) from None


def parse_leverage_brackets(data: Any) -> dict[str, list[Bracket]]:
    entries = data if isinstance(data, list) else [data]
    return {e["symbol"]: brackets_from_binance(e) for e in entries if isinstance(e, dict)}


# ---------------------------------------------------------------------------------- accounts
def _side(value: Any) -> int:
    if value == "BUY":
        return 1
    if value == "SELL":
        return -1
    raise Refused(f"side must be BUY or SELL, got {value!r}")


def account_from_binance(
    cfg: BinanceAccountConfig,
    account: Mapping[str, Any],
    positions: Sequence[Mapping[str, Any]],
    open_orders: Sequence[Mapping[str, Any]],
    symbols: Iterable[str],
) -> tuple[Account, list[VenuePosition]]:
    """An engine.model.Account and the venue's figures from the three documented answers."""
    symbols = set(symbols)
    if not isinstance(account, dict) or not isinstance(positions, list) or not isinstance(open_orders, list):
        raise Refused("account, positionRisk and openOrders must be an object and two lists")
    wallet = None
    for a in account.get("assets") or []:
        if isinstance(a, dict) and a.get("asset") == cfg.collateral:
            wallet = _number(a.get("walletBalance"), f"{cfg.collateral} walletBalance")
    if wallet is None:
        if "totalWalletBalance" not in account:
            raise Refused(f"no {cfg.collateral} wallet balance in the account answer")
        wallet = _number(account.get("totalWalletBalance"), "totalWalletBalance")
    held: dict[str, tuple[Position, VenuePosition, bool]] = {}
    for n, p in enumerate(positions):
        if not isinstance(p, dict):
            raise Refused(f"positionRisk[{n}]: not an object")
        symbol = p.get("symbol")
        qty = _number(p.get("positionAmt"), f"positionRisk[{n}].positionAmt")
        if qty == 0:
            continue
        if symbol not in symbols:
            raise Refused(f"position in {symbol}, which is not a configured instrument")
        if symbol in held:
            raise Refused(f"{symbol}: both sides open (hedge mode) is not supported; use one-way mode")
        entry = _number(p.get("entryPrice"), f"{symbol} entryPrice", positive=True, allow_zero=False)
        iso_wallet = _number(p.get("isolatedWallet", 0), f"{symbol} isolatedWallet", positive=True)
        isolated = iso_wallet > 0
        liq = _number(p.get("liquidationPrice", 0), f"{symbol} liquidationPrice", positive=True)
        mm = p.get("maintMargin")
        mark = p.get("markPrice")
        position = Position(symbol=symbol, qty=qty, entry_price=entry, isolated_margin=iso_wallet if isolated else None)
        venue = VenuePosition(
            account=cfg.id,
            symbol=symbol,
            qty=qty,
            entry_price=entry,
            maintenance_margin=None if mm is None else _number(mm, f"{symbol} maintMargin", positive=True),
            liquidation_price=liq if liq > 0 else None,
            mark_price=None if mark is None else _number(mark, f"{symbol} markPrice", positive=True),
            isolated_margin=iso_wallet if isolated else None,
            update_time=_number(p.get("updateTime", 0), f"{symbol} updateTime") / 1000.0,
        )
        held[symbol] = (position, venue, isolated)
    modes = {iso for _, _, iso in held.values()}
    if len(modes) > 1:
        raise Refused("a mix of cross and isolated positions in one account is not supported")
    orders = []
    for n, o in enumerate(open_orders):
        if not isinstance(o, dict):
            raise Refused(f"openOrders[{n}]: not an object")
        symbol = o.get("symbol")
        if symbol not in symbols:
            raise Refused(f"open order in {symbol}, which is not a configured instrument")
        side = _side(o.get("side"))
        left = _number(o.get("origQty"), f"{symbol} origQty", positive=True) - _number(
            o.get("executedQty", 0), f"{symbol} executedQty", positive=True
        )
        price = 0.0
        for key in ("price", "stopPrice", "activatePrice"):
            if o.get(key) not in (None, ""):
                price = _number(o.get(key), f"{symbol} {key}", positive=True)
                if price > 0:
                    break
        if left <= 0 or price <= 0:
            continue  # nothing left to fill, or no price to value it at
        orders.append(
            OpenOrder(
                symbol=symbol,
                side=Side.BUY if side > 0 else Side.SELL,
                qty=left,
                price=price,
                reduce_only=bool(o.get("reduceOnly")) or bool(o.get("closePosition")),
            )
        )
    try:
        acct = Account(
            id=cfg.id,
            name=cfg.name,
            desk=cfg.desk,
            strategy=cfg.strategy,
            risk_class=cfg.risk_class,
            wallet_balance=wallet,
            margin_mode="isolated" if modes == {True} else "cross",
            positions=[h[0] for h in held.values()],
            open_orders=orders,
        )
    except ValueError as exc:
        raise Refused(f"account {cfg.id}: {exc}") from None
    return acct, [h[1] for h in held.values()]


# ---------------------------------------------------------------------------------- user data
def _millis(value: Any, what: str) -> int:
    """An event time in ms: a JSON integer, or a string of digits (listenKeyExpired sends one)."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise Refused(f"{what} must be a positive integer (ms), got {value!r}")
    return value


@dataclass(frozen=True)
class PositionUpdate:
    symbol: str
    qty: float
    entry_price: float
    isolated: bool
    isolated_wallet: float


@dataclass(frozen=True)
class AccountUpdate:
    """One ACCOUNT_UPDATE, checked: the collateral's wallet balance (None: not in this event)
    and the positions that changed (only those are sent; amount 0 means closed)."""

    event_time: int
    transaction_time: int
    reason: str | None
    wallet: float | None
    positions: tuple[PositionUpdate, ...]


def parse_account_update(obj: Any, collateral: str, symbols: Iterable[str]) -> AccountUpdate:
    """Check a documented ACCOUNT_UPDATE payload whole; Refused names the first thing wrong."""
    symbols = set(symbols)
    if not isinstance(obj, dict) or obj.get("e") != "ACCOUNT_UPDATE":
        raise Refused("not an ACCOUNT_UPDATE event")
    event_time = _millis(obj.get("E"), "E (event time)")
    transaction_time = _millis(obj.get("T", event_time), "T (transaction time)")
    data = obj.get("a")
    if not isinstance(data, dict):
        raise Refused("a (update data) must be an object")
    balances, positions = data.get("B", []), data.get("P", [])
    if not isinstance(balances, list) or not isinstance(positions, list):
        raise Refused("a.B (balances) and a.P (positions) must be lists")
    wallet = None
    for n, b in enumerate(balances):
        if not isinstance(b, dict) or not isinstance(b.get("a"), str) or not b.get("a"):
            raise Refused(f"a.B[{n}]: an object with an asset a is needed")
        wb = _number(b.get("wb"), f"a.B[{n}].wb ({b['a']} wallet balance)")
        if b["a"] == collateral:
            if wallet is not None:
                raise Refused(f"a.B: {collateral} is listed twice")
            wallet = wb
    out: list[PositionUpdate] = []
    seen: set[str] = set()
    for n, p in enumerate(positions):
        if not isinstance(p, dict):
            raise Refused(f"a.P[{n}]: not an object")
        symbol = p.get("s")
        if not isinstance(symbol, str) or not symbol:
            raise Refused(f"a.P[{n}]: s (symbol) missing")
        where = f"a.P[{n}] {symbol}"
        if p.get("ps") != "BOTH":
            raise Refused(
                f"{where}: position side ps={p.get('ps')!r}: hedge mode is not supported, use one-way mode (BOTH)"
            )
        if symbol in seen:
            raise Refused(f"{where}: listed twice")
        seen.add(symbol)
        qty = _number(p.get("pa"), f"{where} pa (position amount)")
        entry = _number(p.get("ep"), f"{where} ep (entry price)", positive=True)
        mt = p.get("mt")
        if not isinstance(mt, str) or mt.lower() not in ("isolated", "cross", "crossed"):
            raise Refused(f"{where}: mt (margin type) must be isolated or cross, got {mt!r}")
        iw = _number(p.get("iw", 0), f"{where} iw (isolated wallet)", positive=True)
        if qty == 0 and symbol not in symbols:
            continue  # closed, and never ours to value
        if symbol not in symbols:
            raise Refused(f"{where}: position in {symbol}, which is not a configured instrument")
        if qty != 0 and entry <= 0:
            raise Refused(f"{where}: ep (entry price) of an open position must be positive, got {p.get('ep')!r}")
        out.append(PositionUpdate(symbol, qty, entry, mt.lower() == "isolated", iw))
    reason = data.get("m")
    return AccountUpdate(event_time, transaction_time, reason if isinstance(reason, str) else None, wallet, tuple(out))


def parse_order_update(obj: Any, account: str) -> dict[str, Any]:
    """A documented ORDER_TRADE_UPDATE as a flat, journal-friendly record."""
    if not isinstance(obj, dict) or obj.get("e") != "ORDER_TRADE_UPDATE":
        raise Refused("not an ORDER_TRADE_UPDATE event")
    o = obj.get("o")
    if not isinstance(o, dict):
        raise Refused("o (order) must be an object")
    for key, what in (("s", "symbol"), ("c", "client order id"), ("x", "execution type"), ("X", "order status")):
        if not isinstance(o.get(key), str) or not o.get(key):
            raise Refused(f"o.{key} ({what}) missing")
    if o.get("S") not in ("BUY", "SELL"):
        raise Refused(f"o.S (side) must be BUY or SELL, got {o.get('S')!r}")
    cid = o["c"]
    origin = None
    if cid.startswith("autoclose-"):
        origin = "venue_liquidation"
    elif cid.startswith("adl_autoclose"):
        origin = "adl"
    elif cid.startswith("settlement_autoclose"):
        origin = "settlement"
    return {
        "account": account,
        "symbol": o["s"],
        "client_order_id": cid,
        "order_id": o.get("i"),
        "side": o["S"],
        "order_type": o.get("o"),
        "execution": o["x"],
        "status": o["X"],
        "qty": _number(o.get("q", 0), "o.q (quantity)", positive=True),
        "filled_qty": _number(o.get("z", 0), "o.z (filled quantity)", positive=True),
        "avg_price": _number(o.get("ap", 0), "o.ap (average price)", positive=True),
        "last_qty": _number(o.get("l", 0), "o.l (last filled quantity)", positive=True),
        "last_price": _number(o.get("L", 0), "o.L (last filled price)", positive=True),
        "reduce_only": o.get("R") is True,
        "time": _millis(obj.get("T", obj.get("E")), "T (transaction time)"),
        "origin": origin,
    }


@dataclass(frozen=True)
class Divergence:
    """capguard and the venue disagree about a position (the lead turns these into alerts)."""

    account: str
    symbol: str
    kind: str  # maintenance_margin | liquidation_price | position_changed | venue_liquidation | adl
    capguard: float | None
    venue: float | None
    tolerance: float | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def find_divergences(
    book: Book,
    venue: Sequence[VenuePosition],
    *,
    accounts: Iterable[str],
    mm_tolerance: float = 0.02,
    liq_tolerance: float = 0.005,
    qty_tolerance: float = 1e-9,
    force_orders: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]] | None = None,
    skip: Iterable[tuple[str, str]] = (),
) -> list[Divergence]:
    """Compare the book with the venue's positions for `accounts` (ids the venue reported).

    A quantity that differs means the position changed on the venue without capguard's order:
    a venue liquidation (force order `autoclose-*`), an ADL (`adl_autoclose`) or another trade.
    Otherwise maintenance margin beyond `mm_tolerance` (relative) and liquidation price beyond
    `liq_tolerance` (relative; a venue 0 means none, as NaN does for capguard) are reported.
    `skip` lists (account, symbol) pairs with capguard orders in flight.
    """
    accounts = set(accounts)
    skip = set(skip)
    force_orders = force_orders or {}
    liq = book.liquidation_prices()
    ours: dict[tuple[str, str], tuple[float, float, float]] = {}
    for p in range(book.pos_qty.size):
        acct = book.info[int(book.pos_account[p])].id
        if acct not in accounts or book.pos_qty[p] == 0:
            continue
        sym = book.instruments[int(book.pos_instrument[p])].symbol
        ours[(acct, sym)] = (float(book.pos_qty[p]), float(book.maintenance_margin[p]), float(liq[p]))
    theirs = {(v.account, v.symbol): v for v in venue if v.account in accounts and v.qty != 0}
    out: list[Divergence] = []
    for key in sorted(set(ours) | set(theirs)):
        if key in skip:
            continue
        acct, sym = key
        mine = ours.get(key)
        v = theirs.get(key)
        q_ours = mine[0] if mine else 0.0
        q_venue = v.qty if v else 0.0
        if abs(q_ours - q_venue) > qty_tolerance:
            kind, how = "position_changed", "changed on the venue without a capguard order"
            for fo in force_orders.get(key, ()):
                cid = str(fo.get("clientOrderId", ""))
                if cid.startswith("adl_autoclose"):
                    kind, how = "adl", "auto-deleveraged by the venue (ADL)"
                    break
                if cid.startswith("autoclose-"):
                    kind, how = "venue_liquidation", "liquidated by the venue"
                    break
            out.append(
                Divergence(
                    acct, sym, kind, q_ours, q_venue, qty_tolerance, f"{acct} {sym}: {how}: {q_ours:g} -> {q_venue:g}"
                )
            )
            continue
        assert mine is not None and v is not None
        _, mm, lp = mine
        if v.maintenance_margin is not None and _rel(mm, v.maintenance_margin) > mm_tolerance:
            out.append(
                Divergence(
                    acct,
                    sym,
                    "maintenance_margin",
                    mm,
                    v.maintenance_margin,
                    mm_tolerance,
                    f"{acct} {sym}: maintenance margin {mm:.8g} vs venue {v.maintenance_margin:.8g}",
                )
            )
        ours_none = not (math.isfinite(lp) and lp > 0)
        if ours_none and v.liquidation_price is None:
            continue
        if ours_none or v.liquidation_price is None or _rel(lp, v.liquidation_price) > liq_tolerance:
            out.append(
                Divergence(
                    acct,
                    sym,
                    "liquidation_price",
                    None if ours_none else lp,
                    v.liquidation_price,
                    liq_tolerance,
                    f"{acct} {sym}: liquidation price {'none' if ours_none else f'{lp:.8g}'} vs venue "
                    f"{'none' if v.liquidation_price is None else f'{v.liquidation_price:.8g}'}",
                )
            )
    return out


class BinanceAccountSource(AccountSourceBase):
    def __init__(
        self,
        config: BinanceConfig,
        instruments: Sequence[Instrument] | Sequence[str],
        clock: Clock,
        clients: Mapping[str, BinanceRest],
        name: str = "binance_accounts",
    ) -> None:
        super().__init__(name, instruments, clock, config.max_age)
        self.config = config
        self.clients = dict(clients)
        self.brackets: dict[str, list[Bracket]] = {}
        self._force_since_ms: int | None = None
        self._configs = {a.id: a for a in config.accounts}
        self._stream_time: dict[str, int] = {}  # last ACCOUNT_UPDATE transaction time applied
        self.streams: list[BinanceUserStream] = []  # user data streams (BinanceVenue adds them)
        self._time_task: asyncio.Task[None] | None = None
        self.counters.update(stream_applied=0, stream_ignored=0)

    async def start(self) -> None:
        await self.sync_time()
        await self._start_loop(self.config.account_interval)
        if self._time_task is None and self.clients:
            self._time_task = asyncio.get_running_loop().create_task(self._time_loop(), name=f"time:{self.name}")
        for stream in self.streams:
            await stream.start()

    async def stop(self) -> None:
        for stream in self.streams:
            await stream.stop()
        await self._stop_loop()
        if self._time_task is not None:
            self._time_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._time_task
            self._time_task = None

    async def sync_time(self) -> int | None:
        """Measure the server clock offset (the clients share it); None when that failed."""
        if not self.clients:
            return None
        try:
            return await next(iter(self.clients.values())).sync_time()
        except (BinanceError, BinanceUnknown, Refused) as exc:
            log.warning("%s: server time sync failed: %s", self.name, exc)
            return None

    async def _time_loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.config.time_sync_interval)
            if not self._stopping.is_set():
                await self.sync_time()

    def apply_account_update(self, account_id: str, event: Any) -> AccountSnapshot | None:
        """Merge one ACCOUNT_UPDATE of `account_id` into the current snapshot and apply the result
        as a new snapshot. Malformed input raises Refused and nothing is applied. Returns None
        (nothing applied) before the first successful REST poll, for an account the snapshot
        does not hold, or for an event older than one already applied.

        Only a REST poll confirms the whole account (open orders are not in these events), so
        applying an update keeps `last_ok` where the last poll left it."""
        cfg = self._configs.get(account_id)
        if cfg is None:
            raise Refused(f"ACCOUNT_UPDATE for {account_id!r}, which is not a configured Binance account")
        update = parse_account_update(event, cfg.collateral, self.symbols)
        snap = self.snapshot
        current = None if snap is None else next((a for a in snap.accounts if a.id == account_id), None)
        if snap is None or current is None:
            self.counters["stream_ignored"] += 1
            log.info("%s: %s ACCOUNT_UPDATE before the first account poll: ignored", self.name, account_id)
            return None
        last = self._stream_time.get(account_id)
        if last is not None and update.transaction_time < last:
            self.counters["stream_ignored"] += 1
            log.info("%s: %s ACCOUNT_UPDATE older than one applied: ignored", self.name, account_id)
            return None
        positions = {p.symbol: p for p in current.positions}
        isolated = {p.symbol: p.isolated_margin is not None for p in current.positions}
        venue = {(v.account, v.symbol): v for v in snap.venue}
        for u in update.positions:
            key = (account_id, u.symbol)
            if u.qty == 0:
                positions.pop(u.symbol, None)
                isolated.pop(u.symbol, None)
                venue.pop(key, None)
                continue
            old = positions.get(u.symbol)
            fields = old.model_dump() if old is not None else {"symbol": u.symbol}
            margin = u.isolated_wallet if u.isolated else None
            try:
                positions[u.symbol] = Position.model_validate(
                    {**fields, "qty": u.qty, "entry_price": u.entry_price, "isolated_margin": margin}
                )
            except ValidationError as exc:
                raise Refused(f"{account_id} {u.symbol}: {describe_errors(exc)}") from None
            isolated[u.symbol] = u.isolated
            # The event carries no maintenance margin, liquidation or mark price: unknown until
            # the next REST poll (a resync always polls first).
            venue[key] = VenuePosition(
                account_id,
                u.symbol,
                u.qty,
                u.entry_price,
                isolated_margin=margin,
                update_time=update.transaction_time / 1000.0,
            )
        modes = set(isolated.values())
        if len(modes) > 1:
            raise Refused(f"{account_id}: a mix of cross and isolated positions in one account is not supported")
        mode = current.margin_mode if not modes else ("isolated" if modes == {True} else "cross")
        try:
            account = Account.model_validate(
                {
                    **current.model_dump(),
                    "wallet_balance": current.wallet_balance if update.wallet is None else update.wallet,
                    "margin_mode": mode,
                    "positions": [p.model_dump() for p in positions.values()],
                }
            )
        except ValidationError as exc:
            raise Refused(f"account {account_id}: {describe_errors(exc)}") from None
        checked = self.check_accounts(account if a.id == account_id else a for a in snap.accounts)
        last_ok, last_error = self._last_ok, self.last_error
        applied = self.apply(
            checked, venue=tuple(venue.values()), etag=snap.etag, as_of=iso(update.transaction_time / 1000.0)
        )
        self._last_ok, self.last_error = last_ok, last_error
        self._stream_time[account_id] = update.transaction_time
        self.counters["stream_applied"] += 1
        log.info(
            "%s: %s ACCOUNT_UPDATE (%s) applied as snapshot %d",
            self.name,
            account_id,
            update.reason,
            applied.seq,
            extra={"event": {"event": "account_update", "account": account_id, "reason": update.reason}},
        )
        return applied

    async def refresh(self) -> bool:
        self.counters["polls"] += 1
        accounts: list[Account] = []
        venue: list[VenuePosition] = []
        for cfg in self.config.accounts:
            rest = self.clients[cfg.id]
            try:
                acct = await rest.request("GET", "/fapi/v3/account")
                pos = await rest.request("GET", "/fapi/v3/positionRisk")
                orders = await rest.request("GET", "/fapi/v1/openOrders")
            except (BinanceUnknown, BinanceError) as exc:
                self.failed(f"{cfg.id}: {exc}")
                return False
            try:
                a, v = account_from_binance(cfg, acct, pos, orders, self.symbols)
            except Refused as exc:
                self.refused(f"{cfg.id} account data", str(exc))
                return False
            accounts.append(a)
            venue.extend(v)
        try:
            checked = self.check_accounts(accounts)
        except Refused as exc:
            self.refused("account data", str(exc))
            return False
        self.apply(checked, venue=tuple(venue))
        return True

    async def load_brackets(self, symbols: Iterable[str] | None = None) -> dict[str, list[Bracket]]:
        """GET /fapi/v1/leverageBracket (the first account's key) for the configured symbols."""
        if not self.clients:
            raise ConnectorError("leverage brackets need at least one Binance account (an API key)")
        rest = next(iter(self.clients.values()))
        data = await rest.request("GET", "/fapi/v1/leverageBracket")
        parsed = parse_leverage_brackets(data)
        wanted = set(symbols) if symbols is not None else set(self.symbols)
        self.brackets = {s: b for s, b in parsed.items() if s in wanted}
        return self.brackets

    async def force_orders(self, account: str, since_ms: int | None = None) -> list[dict[str, Any]]:
        params = {"startTime": since_ms} if since_ms else {}
        data = await self.clients[account].request("GET", "/fapi/v1/forceOrders", params)
        if not isinstance(data, list):
            raise Refused("forceOrders answer is not a list")
        return [d for d in data if isinstance(d, dict)]

    async def resync(self, book: Book, skip: Iterable[tuple[str, str]] = ()) -> list[Divergence]:
        """Poll the venue now and compare it with the book (see find_divergences). A failed
        poll returns a single `resync_failed` divergence so the gap is visible.

        The force orders are fetched first and the comparison follows the poll without yielding,
        so the book is compared with the venue as it was polled (a guard taking that snapshot
        into the book in between would hide a change)."""
        force: dict[tuple[str, str], list[dict[str, Any]]] = {}
        now_ms = int(self.clock.now() * 1000)
        for cfg in self.config.accounts:
            try:
                rows = await self.force_orders(cfg.id, self._force_since_ms)
            except (BinanceUnknown, BinanceError, Refused) as exc:
                log.warning("%s: forceOrders failed: %s", cfg.id, exc)
                rows = []
            for r in rows:
                force.setdefault((cfg.id, str(r.get("symbol"))), []).append(r)
        ok = await self.refresh()
        snap: AccountSnapshot | None = self.snapshot
        if not ok or snap is None:
            return [Divergence("*", "*", "resync_failed", None, None, None, f"resync failed: {self.last_error}")]
        self._force_since_ms = now_ms
        found = find_divergences(
            book,
            snap.venue,
            accounts=[a.id for a in self.config.accounts],
            mm_tolerance=self.config.mm_tolerance,
            liq_tolerance=self.config.liq_tolerance,
            qty_tolerance=self.config.qty_tolerance,
            force_orders=force,
            skip=skip,
        )
        for d in found:
            log.warning("resync: %s", d.message, extra={"event": {"event": "divergence", **d.to_dict()}})
        return found


class BinanceUserStream(WebSocketSource):
    """One account's user data stream: the listen key's life and the reconnecting socket.

    The socket loop is `WebSocketSource`'s (reconnect forever with backoff and jitter); the
    listen key is in the URL, so every reconnect resubscribes. A keeper task PUTs the key every
    `keepalive` seconds and replaces it (POST, then reconnect) when Binance says it expired
    (listenKeyExpired, or -1125 on a keepalive) or when connecting keeps failing.
    """

    def __init__(
        self,
        config: BinanceConfig,
        account: BinanceAccountConfig,
        rest: BinanceRest,
        target: BinanceAccountSource,
        clock: Clock,
        *,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            f"binance_user:{account.id}",
            sorted(target.symbols),
            clock,
            backoff=config.backoff,
            ping_interval=config.ping_interval,
            rng=rng,
        )
        self.config = config
        self.account = account
        self.rest = rest
        self.target = target
        self.keepalive = config.listen_key_keepalive
        self.check_interval = 5.0  # seconds between the keeper's looks at the connection
        self.listen_key: str | None = None
        self.counters.update(keys=0, keepalives=0, key_failures=0)
        self.order_updates: deque[dict[str, Any]] = deque(maxlen=256)
        self.order_listeners: list[Callable[[dict[str, Any]], Any]] = []
        self._keeper: asyncio.Task[None] | None = None
        self._renew = asyncio.Event()
        self._renew_reason = ""
        self._posted_at = 0  # reconnect attempts counted when the key was last created

    def url(self) -> str:
        return f"{self.config.user_ws_url}/ws/{self.listen_key}"

    def display_url(self) -> str:
        return f"{self.config.user_ws_url}/ws/<listen key>"  # the key reads the account's stream

    # lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if self._keeper is not None:
            return
        self._stopping.clear()
        try:
            await self._new_key()
        except (BinanceError, BinanceUnknown, Refused) as exc:
            self._key_failed("create", exc)  # the keeper keeps trying
        if self.listen_key is not None:
            await super().start()
        self._keeper = asyncio.get_running_loop().create_task(self._keep(), name=f"keepalive:{self.name}")

    async def stop(self) -> None:
        self._stopping.set()
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._keeper
            self._keeper = None
        await super().stop()
        if self.listen_key is not None:
            self.listen_key = None
            try:
                await self.rest.request("DELETE", "/fapi/v1/listenKey", signed=False)
            except (BinanceError, BinanceUnknown) as exc:
                log.warning("%s: closing the listen key failed: %s", self.name, exc)

    # the listen key --------------------------------------------------------------------
    async def _new_key(self) -> None:
        data = await self.rest.request("POST", "/fapi/v1/listenKey", signed=False)
        key = data.get("listenKey") if isinstance(data, dict) else None
        if not isinstance(key, str) or not key:
            raise Refused("POST /fapi/v1/listenKey: the answer has no listenKey")
        self.listen_key = key
        self.counters["keys"] += 1
        self._posted_at = self.backoff.attempt

    async def _replace_key(self, reason: str, *, reconnect: bool) -> None:
        old = self.listen_key
        await self._new_key()
        log.info(  # the key itself is never logged
            "%s: listen key %s (%s)",
            self.name,
            "renewed" if self.listen_key != old else "confirmed",
            reason,
            extra={"event": {"event": "listen_key", "source": self.name, "reason": reason}},
        )
        if self._task is None:
            await WebSocketSource.start(self)
        elif reconnect or self.listen_key != old:
            ws = self._ws
            if ws is not None:  # the read loop ends, and connects again with the new key
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), timeout=2.0)

    async def _keepalive_once(self) -> None:
        try:
            await self.rest.request("PUT", "/fapi/v1/listenKey", signed=False)
        except BinanceError as exc:
            if exc.code != NO_SUCH_LISTEN_KEY:
                raise
            await self._replace_key("the listen key no longer exists (-1125)", reconnect=True)
            return
        self.counters["keepalives"] += 1

    def _key_failed(self, what: str, exc: Exception) -> None:
        self.counters["key_failures"] += 1
        self.last_error = f"listen key {what}: {exc}"
        log.warning(
            "%s: listen key %s failed: %s",
            self.name,
            what,
            exc,
            extra={"event": {"event": "listen_key_failed", "source": self.name, "reason": str(exc)}},
        )

    async def _keep(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + self.keepalive
        not_before = 0.0
        pending: str | None = None
        retry = Backoff(self.config.backoff, self.backoff.rng)
        while not self._stopping.is_set():
            now = loop.time()
            wait = min(due - now, self.check_interval)
            if not_before > now:  # backing off after a failure: nothing is tried before then
                wait = max(wait, not_before - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._renew.wait(), timeout=max(0.0, wait))
            if self._stopping.is_set():
                break
            if self._renew.is_set():
                self._renew.clear()
                pending = self._renew_reason or "renew"
            now = loop.time()
            if now < not_before:
                continue
            try:
                if pending is not None or self.listen_key is None:
                    await self._replace_key(pending or "no listen key yet", reconnect=pending is not None)
                    pending, due = None, loop.time() + self.keepalive
                elif not self.connected and self.backoff.attempt >= self._posted_at + 3:
                    # connecting keeps failing: the key may have lapsed while the link was down
                    await self._replace_key("reconnects keep failing", reconnect=False)
                elif now >= due:
                    await self._keepalive_once()
                    due = loop.time() + self.keepalive
                retry.reset()
            except (BinanceError, BinanceUnknown, Refused) as exc:
                self._key_failed("keepalive" if pending is None and self.listen_key else "create", exc)
                not_before = loop.time() + retry.next()

    # messages ---------------------------------------------------------------------------
    def on_message(self, raw: str | bytes) -> None:
        obj = decode(raw)
        if isinstance(obj, dict) and "stream" in obj and "data" in obj:
            obj = obj["data"]
        if not isinstance(obj, dict):
            raise Refused("a user data event must be a JSON object")
        kind = obj.get("e")
        if kind == "ACCOUNT_UPDATE":
            applied = self.target.apply_account_update(self.account.id, obj)
            self.counters["accepted" if applied is not None else "ignored"] += 1
        elif kind == "ORDER_TRADE_UPDATE":
            self._order_update(parse_order_update(obj, self.account.id))
        elif kind == "listenKeyExpired":
            _millis(obj.get("E"), "E (event time)")
            key = obj.get("listenKey")
            if key is not None and key != self.listen_key:
                self.counters["ignored"] += 1  # about a key this stream no longer uses
                return
            log.warning(
                "%s: listen key expired; creating a new one and resubscribing",
                self.name,
                extra={"event": {"event": "listen_key_expired", "source": self.name}},
            )
            self._renew_reason = "listenKeyExpired"
            self._renew.set()
        elif isinstance(kind, str) and kind:
            if kind == "MARGIN_CALL":
                log.warning(
                    "%s: MARGIN_CALL from the venue", self.name, extra={"event": {"event": "margin_call", **obj}}
                )
            self.counters["ignored"] += 1
        else:
            raise Refused(f"e (event type) missing: {kind!r}")

    def _order_update(self, record: dict[str, Any]) -> None:
        self.counters["accepted"] += 1
        self.order_updates.append(record)
        level = logging.WARNING if record["origin"] in ("venue_liquidation", "adl") else logging.INFO
        log.log(
            level,
            "%s %s %s %s %s: %s %s, filled %g",
            record["account"],
            record["symbol"],
            record["side"],
            record["client_order_id"],
            record["origin"] or "order",
            record["execution"],
            record["status"],
            record["filled_qty"],
            extra={"event": {"event": "venue_order_update", **record}},
        )
        for listener in list(self.order_listeners):
            try:
                listener(record)
            except Exception:  # a listener must never break the stream
                log.exception("%s: order update listener failed", self.name)

    def status(self) -> dict[str, Any]:
        return {**super().status(), "listen_key": self.listen_key is not None}


# ---------------------------------------------------------------------------------- broker
_STATUS = {
    "NEW": OrderStatus.OPEN,
    "PARTIALLY_FILLED": OrderStatus.PARTIAL,
    "FILLED": OrderStatus.FILLED,
    "REJECTED": OrderStatus.REJECTED,
}


class BinanceBroker:
    """engine.orders.Broker for Binance USD-M (one-way mode, reduce-only protective orders)."""

    def __init__(self, config: BinanceConfig, clients: Mapping[str, BinanceRest], symbols: Sequence[str]) -> None:
        self.config = config
        self.clients = dict(clients)
        self.symbols = list(symbols)
        self.collateral = {a.id: a.collateral for a in config.accounts}
        self.where: dict[str, tuple[str, str]] = {}  # client order id -> (account, symbol)
        self.unknown: set[str] = set()

    async def send(self, order: OrderRequest) -> OrderResult:
        cid = order.client_order_id
        rest = self.clients.get(order.account)
        if rest is None:
            return OrderResult(cid, OrderStatus.REJECTED, reason=f"no Binance account {order.account!r} configured")
        if not CLIENT_ORDER_ID.match(cid):
            return OrderResult(cid, OrderStatus.REJECTED, reason=f"client order id {cid!r} is not valid for Binance")
        params: dict[str, Any] = {
            "symbol": order.symbol,
            "side": "BUY" if order.side > 0 else "SELL",
            "quantity": fmt_decimal(order.qty),
            "newClientOrderId": cid,
            "newOrderRespType": "RESULT",
        }
        if order.reduce_only:
            params["reduceOnly"] = "true"
        if order.order_type == OrderType.MARKET:
            params["type"] = "MARKET"
        elif order.order_type in (OrderType.LIMIT, OrderType.IOC):
            if order.price is None:
                return OrderResult(cid, OrderStatus.REJECTED, reason="a limit order needs a price")
            params.update(type="LIMIT", price=fmt_decimal(order.price))
            params["timeInForce"] = "IOC" if order.order_type == OrderType.IOC else "GTC"
        else:
            return OrderResult(
                cid, OrderStatus.REJECTED, reason=f"{order.order_type} orders are not supported on Binance"
            )
        # move the keys into Binance's documented order
        ordered = {k: params[k] for k in ("symbol", "side", "type", "timeInForce", "quantity", "price") if k in params}
        ordered.update({k: v for k, v in params.items() if k not in ordered})
        # Binance keeps a client order id unique only among open orders: a resend of an id
        # whose order already filled would trade again. So any id this broker has met before
        # is looked up first, and sent only if the venue has no record of it.
        if cid in self.where or cid in self.unknown:
            found = await self.lookup(cid)
            if found is not None:
                return found
        self.where[cid] = (order.account, order.symbol)
        try:
            data = await rest.request("POST", "/fapi/v1/order", ordered)
        except BinanceUnknown as exc:
            self.unknown.add(cid)
            raise BrokerTimeout(f"order {cid}: {exc}") from None
        except BinanceError as exc:
            if "duplicat" in exc.msg.lower():
                found = await self.lookup(cid)
                if found is not None:
                    return found
            return OrderResult(cid, OrderStatus.REJECTED, reason=f"binance {exc.code}: {exc.msg}")
        self.unknown.discard(cid)
        return await self._result(order.account, data, cid)

    async def lookup(self, client_order_id: str) -> OrderResult | None:
        known = self.where.get(client_order_id)
        candidates = [known] if known else [(a, s) for a in self.clients for s in self.symbols]
        for account, symbol in candidates:
            try:
                data = await self.clients[account].request(
                    "GET", "/fapi/v1/order", {"symbol": symbol, "origClientOrderId": client_order_id}
                )
            except BinanceUnknown as exc:
                raise BrokerTimeout(f"lookup {client_order_id}: {exc}") from None
            except BinanceError as exc:
                if exc.code == NO_SUCH_ORDER:
                    continue
                raise BrokerTimeout(f"lookup {client_order_id}: binance {exc.code}: {exc.msg}") from None
            self.where[client_order_id] = (account, symbol)
            self.unknown.discard(client_order_id)
            return await self._result(account, data, client_order_id)
        return None

    async def cancel_orders(self, account: str, exposure_increasing_only: bool = True) -> list[str]:
        rest = self.clients.get(account)
        if rest is None:
            return []
        try:
            orders = await rest.request("GET", "/fapi/v1/openOrders")
            positions = await rest.request("GET", "/fapi/v3/positionRisk") if exposure_increasing_only else []
        except (BinanceUnknown, BinanceError) as exc:
            raise BrokerTimeout(f"cancel orders of {account}: {exc}") from None
        held: dict[str, float] = {}
        for p in positions if isinstance(positions, list) else []:
            with contextlib.suppress(Refused):
                held[str(p.get("symbol"))] = held.get(str(p.get("symbol")), 0.0) + _number(p.get("positionAmt"), "qty")
        cancelled: list[str] = []
        for o in orders if isinstance(orders, list) else []:
            try:
                side = _side(o.get("side"))
                left = _number(o.get("origQty"), "origQty") - _number(o.get("executedQty", 0), "executedQty")
            except Refused:
                continue
            reduce = bool(o.get("reduceOnly")) or bool(o.get("closePosition"))
            h = held.get(str(o.get("symbol")), 0.0)
            increasing = not reduce and (h * side >= 0 or left > abs(h))
            if exposure_increasing_only and not increasing:
                continue
            try:
                await rest.request("DELETE", "/fapi/v1/order", {"symbol": o.get("symbol"), "orderId": o.get("orderId")})
            except BinanceError as exc:
                if exc.code in (UNKNOWN_ORDER, NO_SUCH_ORDER):
                    continue  # already gone
                raise BrokerTimeout(f"cancel {o.get('clientOrderId')}: {exc}") from None
            except BinanceUnknown as exc:
                raise BrokerTimeout(f"cancel {o.get('clientOrderId')}: {exc}") from None
            cancelled.append(str(o.get("clientOrderId") or o.get("orderId")))
        return cancelled

    async def _result(self, account: str, data: Any, cid: str) -> OrderResult:
        if not isinstance(data, dict):
            raise BrokerTimeout(f"order {cid}: malformed answer")
        try:
            executed = _number(data.get("executedQty", 0), "executedQty", positive=True)
            avg = _number(data.get("avgPrice", 0), "avgPrice", positive=True)
        except Refused as exc:
            raise BrokerTimeout(f"order {cid}: malformed answer ({exc})") from None
        raw = str(data.get("status"))
        status = _STATUS.get(raw)
        if status is None:  # CANCELED, EXPIRED, EXPIRED_IN_MATCH
            status = OrderStatus.PARTIAL if executed > 0 else OrderStatus.CANCELLED
        fills: list[tuple[float, float]] = []
        fee = 0.0
        if executed > 0:
            fills, fee = await self._fills(account, data, executed, avg)
        return OrderResult(
            client_order_id=cid,
            status=status,
            filled_qty=executed,
            avg_price=avg if avg > 0 else None,
            fee=fee,
            reason="" if status != OrderStatus.CANCELLED else f"binance status {raw}",
            venue_order_id=str(data.get("orderId")) if data.get("orderId") is not None else None,
            fills=fills,
        )

    async def _fills(
        self, account: str, data: Mapping[str, Any], executed: float, avg: float
    ) -> tuple[list[tuple[float, float]], float]:
        """Fills and fee from GET /fapi/v1/userTrades; the order's aggregate if that fails."""
        try:
            trades = await self.clients[account].request(
                "GET", "/fapi/v1/userTrades", {"symbol": data.get("symbol"), "orderId": data.get("orderId")}
            )
            fills = [
                (_number(t["qty"], "qty", positive=True), _number(t["price"], "price", positive=True)) for t in trades
            ]
            fee = sum(
                _number(t.get("commission", 0), "commission")
                for t in trades
                if t.get("commissionAsset", self.collateral.get(account)) == self.collateral.get(account)
            )
            if fills and abs(sum(q for q, _ in fills) - executed) <= 1e-9 * max(1.0, executed):
                return fills, fee
        except (BinanceUnknown, BinanceError, Refused, KeyError, TypeError) as exc:
            log.warning("userTrades for %s failed (%s); using the order's average price", data.get("orderId"), exc)
        return ([(executed, avg)] if avg > 0 else []), 0.0


# ---------------------------------------------------------------------------------- bundle
class BinanceVenue:
    """The Binance connectors built from one [sources.binance] table."""

    def __init__(
        self,
        config: BinanceConfig,
        instruments: Sequence[Instrument],
        clock: Clock,
        *,
        env: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
        time_ms: Callable[[], int] | None = None,
    ) -> None:
        self.config = config
        symbols = [i.symbol for i in instruments]
        self.server_time = ServerTime()  # one venue, one clock: every client shares the offset
        self.clients = {
            a.id: BinanceRest(
                config.rest_url,
                BinanceCredentials.from_env(a.api_key_env, a.api_secret_env, env),
                recv_window=config.recv_window,
                timeout=config.timeout,
                time_ms=time_ms,
                server_time=self.server_time,
            )
            for a in config.accounts
        }
        self.prices = BinanceMarkPriceSource(config, instruments, clock, rng=rng)
        self.accounts = BinanceAccountSource(config, instruments, clock, self.clients)
        self.user_streams: dict[str, BinanceUserStream] = {}
        if config.user_stream:
            self.user_streams = {
                a.id: BinanceUserStream(config, a, self.clients[a.id], self.accounts, clock, rng=rng)
                for a in config.accounts
            }
            self.accounts.streams = list(self.user_streams.values())
        self.broker = BinanceBroker(config, self.clients, config.symbols or symbols)

    async def close(self) -> None:
        for c in self.clients.values():
            await c.aclose()
