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
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
from websockets.asyncio.client import ClientConnection

from engine.clock import Clock
from engine.connectors.base import (
    AccountSnapshot,
    AccountSourceBase,
    BinanceAccountConfig,
    BinanceConfig,
    ConnectorError,
    Refused,
    VenuePosition,
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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self.recv_window = recv_window
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout))
        self._time_ms = time_ms or (lambda: int(time.time() * 1000))

    async def aclose(self) -> None:
        await self._client.aclose()

    def signed_query(self, params: Mapping[str, Any]) -> str:
        if self.credentials is None:
            raise ConnectorError("a signed Binance request needs API credentials")
        items = [(k, _param(v)) for k, v in params.items() if v is not None]
        items += [("recvWindow", str(self.recv_window)), ("timestamp", str(self._time_ms()))]
        query = urlencode(items)
        return f"{query}&signature={sign(query, self.credentials.secret)}"

    async def request(
        self, method: str, path: str, params: Mapping[str, Any] | None = None, signed: bool = True
    ) -> Any:
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

    async def start(self) -> None:
        await self._start_loop(self.config.account_interval)

    async def stop(self) -> None:
        await self._stop_loop()

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
        poll returns a single `resync_failed` divergence so the gap is visible."""
        ok = await self.refresh()
        snap: AccountSnapshot | None = self.snapshot
        if not ok or snap is None:
            return [Divergence("*", "*", "resync_failed", None, None, None, f"resync failed: {self.last_error}")]
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
        self.clients = {
            a.id: BinanceRest(
                config.rest_url,
                BinanceCredentials.from_env(a.api_key_env, a.api_secret_env, env),
                recv_window=config.recv_window,
                timeout=config.timeout,
                time_ms=time_ms,
            )
            for a in config.accounts
        }
        self.prices = BinanceMarkPriceSource(config, instruments, clock, rng=rng)
        self.accounts = BinanceAccountSource(config, instruments, clock, self.clients)
        self.broker = BinanceBroker(config, self.clients, config.symbols or symbols)

    async def close(self) -> None:
        for c in self.clients.values():
            await c.aclose()
