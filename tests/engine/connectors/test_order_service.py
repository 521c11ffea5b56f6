"""The order-service broker against a loopback order service speaking the documented contract."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from engine.connectors import OrderServiceConfig
from engine.connectors.order_service import RestBroker
from engine.orders import BrokerTimeout, OrderRequest, OrderStatus, OrderType
from tests.engine.connectors.support import HttpServer, Request, Response, assert_broker_shape


class OrderService:
    """Remembers orders by client order id; a resend returns the original and creates nothing."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.arrivals: dict[str, int] = {}
        self.post_delay: list[float] = []  # per POST, in order: answer late (after recording)
        self.drop_posts = 0  # POSTs lost before the service sees them
        self.get_delay = 0.0
        self.reject: str | None = None

    async def __call__(self, req: Request) -> Response:
        if req.method == "POST" and req.path == "/orders":
            if self.drop_posts:
                self.drop_posts -= 1
                return Response(drop=True)
            body = req.json()
            cid = body["client_order_id"]
            assert req.headers["idempotency-key"] == cid
            self.arrivals[cid] = self.arrivals.get(cid, 0) + 1
            if self.reject:
                return Response(422, {"reason": self.reject})
            if cid not in self.orders:
                price = 64000.0 if body["side"] == "sell" else 64010.0
                half = body["qty"] / 2
                self.orders[cid] = {
                    "client_order_id": cid,
                    "status": "filled",
                    "filled_qty": body["qty"],
                    "avg_price": price,
                    "fee": 0.0004 * body["qty"] * price,
                    "reason": "",
                    "venue_order_id": f"OS-{len(self.orders) + 1}",
                    "fills": [{"qty": half, "price": price}, {"qty": body["qty"] - half, "price": price}],
                }
                status = 201
            else:
                status = 200
            if self.post_delay:
                await asyncio.sleep(self.post_delay.pop(0))
            return Response(status, self.orders[cid])
        if req.method == "GET" and req.path.startswith("/orders/"):
            if self.get_delay:
                await asyncio.sleep(self.get_delay)
            cid = req.path.removeprefix("/orders/")
            return Response(200, self.orders[cid]) if cid in self.orders else Response(404, {"reason": "unknown"})
        if req.method == "POST" and req.path.endswith("/cancel"):
            only = req.json()["exposure_increasing_only"]
            return Response(200, {"cancelled": ["o-1"] if only else ["o-1", "o-2"]})
        return Response(404)


def order(cid: str = "cg42-1", **kw: Any) -> OrderRequest:
    return OrderRequest(cid, kw.pop("account", "acct-01"), "BTCUSDT", kw.pop("side", -1), kw.pop("qty", 0.5), **kw)


@pytest.fixture
async def service():
    svc = OrderService()
    async with HttpServer(svc) as http:
        yield svc, http


def broker(http: HttpServer, clock, **kw: Any) -> RestBroker:
    return RestBroker(OrderServiceConfig(url=http.url, **kw), clock)


async def test_send_reports_fills_and_is_idempotent(service, wall):
    svc, http = service
    b = broker(http, wall)
    assert_broker_shape(b)
    r = await b.send(order(order_type=OrderType.IOC, price=63900.0))
    assert r.status == OrderStatus.FILLED and r.filled_qty == 0.5 and r.avg_price == 64000.0
    assert r.fills == [(0.25, 64000.0), (0.25, 64000.0)] and r.venue_order_id == "OS-1"
    body = json.loads(http.requests[0].body)
    assert body == {
        "client_order_id": "cg42-1",
        "account": "acct-01",
        "symbol": "BTCUSDT",
        "side": "sell",
        "qty": 0.5,
        "type": "ioc",
        "price": 63900.0,
        "reduce_only": True,
    }
    again = await b.send(order())
    assert again == r and len(svc.orders) == 1 and svc.arrivals["cg42-1"] == 2
    assert await b.lookup("cg42-1") == r
    assert await b.lookup("never-sent") is None
    await b.aclose()


async def test_timeout_after_the_service_recorded_is_looked_up_not_resent(service, wall):
    svc, http = service
    svc.post_delay = [1.0]
    b = broker(http, wall, timeout=0.2)
    r = await b.send(order())
    assert r.status == OrderStatus.FILLED
    assert svc.arrivals == {"cg42-1": 1} and len(svc.orders) == 1  # never sent twice
    assert b.lookups == 1 and b.sends == 1
    await b.aclose()


async def test_send_lost_before_the_service_is_resent_after_lookup(service, wall):
    svc, http = service
    svc.drop_posts = 1
    b = broker(http, wall, timeout=0.5, resends=1)
    r = await b.send(order("cg43-1"))
    assert r.status == OrderStatus.FILLED and svc.arrivals == {"cg43-1": 1}
    assert [q.method for q in http.requests] == ["POST", "GET", "POST"]  # lookup came before the resend
    await b.aclose()


async def test_unknown_outcome_raises_and_the_next_send_looks_up_first(service, wall):
    svc, http = service
    svc.post_delay = [1.0]
    svc.get_delay = 1.0
    b = broker(http, wall, timeout=0.2)
    with pytest.raises(BrokerTimeout, match="lookup failed"):
        await b.send(order("cg44-1"))
    assert "cg44-1" in b.unknown
    svc.get_delay = 0.0
    posts_before = svc.arrivals["cg44-1"]
    r = await b.send(order("cg44-1"))  # the executor retries: looked up first, found, not resent
    assert r.status == OrderStatus.FILLED
    assert svc.arrivals["cg44-1"] == posts_before == 1 and "cg44-1" not in b.unknown
    await b.aclose()


async def test_no_record_after_resends_raises_broker_timeout(service, wall):
    svc, http = service
    svc.drop_posts = 5
    b = broker(http, wall, timeout=0.3, resends=1)
    with pytest.raises(BrokerTimeout, match="no record"):
        await b.send(order("cg45-1"))
    assert svc.arrivals == {}
    await b.aclose()


async def test_refusal_is_a_rejection_with_the_reason(service, wall):
    svc, http = service
    svc.reject = "account acct-01 is not allowed to trade BTCUSDT"
    b = broker(http, wall)
    r = await b.send(order("cg46-1"))
    assert r.status == OrderStatus.REJECTED and r.reason == svc.reject
    await b.aclose()


async def test_malformed_answer_is_an_unknown_outcome(wall):
    async with HttpServer(lambda req: Response(200, {"client_order_id": "cg47-1", "status": "done"})) as http:
        b = broker(http, wall)
        with pytest.raises(BrokerTimeout, match="malformed"):
            await b.send(order("cg47-1"))
        assert "cg47-1" in b.unknown  # looked up before any resend
        await b.aclose()


async def test_cancel_orders(service, wall):
    _, http = service
    b = broker(http, wall)
    assert await b.cancel_orders("acct-01") == ["o-1"]
    assert await b.cancel_orders("acct-01", exposure_increasing_only=False) == ["o-1", "o-2"]
    assert http.requests[0].path == "/accounts/acct-01/cancel"
    await b.aclose()
