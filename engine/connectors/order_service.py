"""capguard's order service over REST: an `engine.orders.Broker` (httpx).

Contract (docs/connectors.md):

    POST /orders                    Idempotency-Key: <client_order_id>
        {"client_order_id", "account", "symbol", "side": "buy"|"sell", "qty", "type":
         "market"|"limit"|"ioc"|"stop", "price": number|null, "reduce_only": true}
        200/201 <order record>      a resend of a known client_order_id returns the
                                    original record and creates nothing (200 or 409)
    GET  /orders/<client_order_id>  200 <order record> | 404 never arrived
    POST /accounts/<account>/cancel {"exposure_increasing_only": true}
        200 {"cancelled": ["<id>", ...]}

    <order record> = {"client_order_id", "status": "filled"|"partial"|"open"|"rejected"|
                      "cancelled", "filled_qty", "avg_price", "fee", "reason",
                      "venue_order_id", "fills": [{"qty", "price"}, ...]}

An unanswered send (timeout, lost connection, 5xx) has an unknown outcome: the broker looks
the id up before it resends anything, and raises BrokerTimeout if it still cannot tell. An id
whose outcome was once unknown is always looked up before it is sent again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import Field, ValidationError

from engine.clock import Clock
from engine.connectors.base import OrderServiceConfig, Strict, bearer_headers, describe_errors
from engine.orders import BrokerTimeout, OrderRequest, OrderResult, OrderStatus

log = logging.getLogger("capguard.connectors.order_service")


class FillRecord(Strict):
    qty: float = Field(gt=0)
    price: float = Field(gt=0)


class OrderRecord(Strict):
    client_order_id: str
    status: OrderStatus
    filled_qty: float = Field(default=0.0, ge=0)
    avg_price: float | None = Field(default=None, gt=0)
    fee: float = 0.0
    reason: str = ""
    venue_order_id: str | None = None
    fills: list[FillRecord] = Field(default_factory=list)

    def result(self) -> OrderResult:
        return OrderResult(
            client_order_id=self.client_order_id,
            status=self.status,
            filled_qty=self.filled_qty,
            avg_price=self.avg_price,
            fee=self.fee if math.isfinite(self.fee) else 0.0,
            reason=self.reason,
            venue_order_id=self.venue_order_id,
            fills=[(f.qty, f.price) for f in self.fills],
        )


class _Unknown(Exception):
    pass


class RestBroker:
    def __init__(
        self,
        config: OrderServiceConfig,
        clock: Clock,
        *,
        client: httpx.AsyncClient | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self._client = client
        self._headers = {"Accept": "application/json", **bearer_headers(config.token_env, env)}
        self.unknown: set[str] = set()  # ids whose outcome was once unknown
        self.sends = 0
        self.lookups = 0

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.config.timeout))
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # Broker -----------------------------------------------------------------------------
    async def send(self, order: OrderRequest) -> OrderResult:
        cid = order.client_order_id
        if cid in self.unknown:
            found = await self._lookup_or_unknown(cid)
            if found is not None:
                return found
        for attempt in range(self.config.resends + 1):
            try:
                return await self._post(order)
            except BrokerTimeout:  # an answer capguard cannot read: the outcome is unknown
                self.unknown.add(cid)
                raise
            except _Unknown as exc:
                self.unknown.add(cid)
                log.warning("order %s: outcome unknown (%s); looking it up", cid, exc)
                found = await self._lookup_or_unknown(cid, f"{exc}")
                if found is not None:
                    return found
                if attempt == self.config.resends:
                    raise BrokerTimeout(f"order {cid}: no answer ({exc}); the service has no record of it") from None
        raise BrokerTimeout(f"order {cid}: no answer")  # pragma: no cover

    async def lookup(self, client_order_id: str) -> OrderResult | None:
        self.lookups += 1
        try:
            resp = await self.client.get(
                f"{self.config.url}/orders/{quote(client_order_id, safe='')}", headers=self._headers
            )
        except httpx.HTTPError as exc:
            raise BrokerTimeout(f"lookup {client_order_id}: {type(exc).__name__}: {exc}") from None
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise BrokerTimeout(f"lookup {client_order_id}: HTTP {resp.status_code}")
        return self._record(resp, client_order_id)

    async def cancel_orders(self, account: str, exposure_increasing_only: bool = True) -> list[str]:
        try:
            resp = await self.client.post(
                f"{self.config.url}/accounts/{quote(account, safe='')}/cancel",
                json={"exposure_increasing_only": exposure_increasing_only},
                headers=self._headers,
            )
        except httpx.HTTPError as exc:
            raise BrokerTimeout(f"cancel orders of {account}: {type(exc).__name__}: {exc}") from None
        if resp.status_code != 200:
            raise BrokerTimeout(f"cancel orders of {account}: HTTP {resp.status_code}")
        data = resp.json()
        ids = data.get("cancelled") if isinstance(data, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise BrokerTimeout(f"cancel orders of {account}: malformed answer")
        return ids

    # internals ----------------------------------------------------------------------------
    async def _lookup_or_unknown(self, cid: str, why: str = "") -> OrderResult | None:
        try:
            found = await self.lookup(cid)
        except BrokerTimeout as exc:
            raise BrokerTimeout(f"order {cid}: outcome unknown {why}; lookup failed too ({exc})") from None
        if found is not None:
            self.unknown.discard(cid)
        return found

    async def _post(self, order: OrderRequest) -> OrderResult:
        self.sends += 1
        body = {
            "client_order_id": order.client_order_id,
            "account": order.account,
            "symbol": order.symbol,
            "side": "buy" if order.side > 0 else "sell",
            "qty": order.qty,
            "type": order.order_type.value,
            "price": order.price,
            "reduce_only": order.reduce_only,
        }
        try:
            resp = await self.client.post(
                f"{self.config.url}/orders",
                json=body,
                headers={**self._headers, "Idempotency-Key": order.client_order_id},
            )
        except httpx.HTTPError as exc:
            raise _Unknown(f"{type(exc).__name__}: {exc}") from None
        if resp.status_code >= 500:
            raise _Unknown(f"HTTP {resp.status_code}")
        if resp.status_code in (200, 201, 409):
            result = self._record(resp, order.client_order_id)
            self.unknown.discard(order.client_order_id)
            return result
        # any other 4xx: the service refused the order itself
        reason = _reason(resp)
        return OrderResult(order.client_order_id, OrderStatus.REJECTED, reason=reason)

    def _record(self, resp: httpx.Response, cid: str) -> OrderResult:
        try:
            record = OrderRecord.model_validate(resp.json())
        except (ValueError, ValidationError) as exc:
            why = describe_errors(exc) if isinstance(exc, ValidationError) else str(exc)
            raise BrokerTimeout(f"order {cid}: malformed answer from the order service ({why})") from None
        if record.client_order_id != cid:
            raise BrokerTimeout(f"order {cid}: the order service answered for {record.client_order_id}")
        return record.result()


def _reason(resp: httpx.Response) -> str:
    try:
        data: Any = resp.json()
    except ValueError:
        return f"HTTP {resp.status_code}: {resp.text[:200]}"
    if isinstance(data, dict) and isinstance(data.get("reason"), str):
        return data["reason"]
    return f"HTTP {resp.status_code}: {str(data)[:200]}"
