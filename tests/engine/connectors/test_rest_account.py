"""The REST account source against a loopback HTTP server speaking the documented contract."""

from __future__ import annotations

import asyncio
import copy
import logging

import pytest

from engine.connectors import RestAccountsConfig
from engine.connectors.base import Refused
from engine.connectors.rest_account import RestAccountSource
from engine.ladder import DataState
from tests.engine.connectors.support import HttpServer, Request, Response

PAYLOAD = {
    "version": 1,
    "as_of": "2026-11-25T15:47:32.120Z",
    "accounts": [
        {
            "id": "acct-01",
            "desk": "delta-one",
            "strategy": "trend",
            "risk_class": "standard",
            "wallet_balance": 250000.0,
            "margin_mode": "cross",
            "positions": [
                {"symbol": "BTCUSDT", "qty": 1.5, "entry_price": 64000.0},
                {"symbol": "ETHUSDT", "qty": -20.0, "entry_price": 3400.0},
            ],
            "open_orders": [{"symbol": "ETHUSDT", "side": "buy", "qty": 5.0, "price": 3300.0, "reduce_only": True}],
        },
        {"id": "acct-02", "wallet_balance": 50000.0},
    ],
}


class AccountService:
    """ETag-aware: answers 304 when If-None-Match matches the current version."""

    def __init__(self) -> None:
        self.payload = copy.deepcopy(PAYLOAD)
        self.version = 1
        self.script: list[Response] = []  # answers to give first, in order
        self.delay = 0.0

    @property
    def etag(self) -> str:
        return f'"v{self.version}"'

    async def __call__(self, req: Request) -> Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.script:
            return self.script.pop(0)
        if req.headers.get("if-none-match") == self.etag:
            return Response(304, headers={"ETag": self.etag})
        return Response(200, self.payload, headers={"ETag": self.etag})


def make(url: str, insts, clock, **kw) -> RestAccountSource:
    kw.setdefault("backoff", {"initial": 0.01, "maximum": 0.05})
    return RestAccountSource(RestAccountsConfig(url=url, **kw), insts, clock)


async def test_poll_applies_then_uses_conditional_requests(insts, sim_clock):
    svc = AccountService()
    async with HttpServer(svc) as http:
        src = make(f"{http.url}/accounts", insts, sim_clock)
        assert src.data_state(sim_clock.now()) == DataState.STALE  # nothing yet
        assert await src.refresh()
        snap = src.snapshot
        assert snap.seq == 1 and snap.etag == '"v1"' and snap.as_of == "2026-11-25T15:47:32.120Z"
        a = snap.accounts[0]
        assert a.id == "acct-01" and a.wallet_balance == 250000.0
        assert [(p.symbol, p.qty) for p in a.positions] == [("BTCUSDT", 1.5), ("ETHUSDT", -20.0)]
        assert a.open_orders[0].reduce_only and snap.accounts[1].positions == []
        assert src.data_state(sim_clock.now()) == DataState.OK
        sim_clock.advance(3)
        assert await src.refresh()  # 304: unchanged, confirmed
        assert http.requests[1].headers["if-none-match"] == '"v1"'
        assert src.snapshot is snap and src.last_ok == sim_clock.now()
        assert src.counters["unchanged"] == 1
        svc.version = 2
        svc.payload["accounts"][1]["wallet_balance"] = 60000.0
        assert await src.refresh()
        assert src.snapshot.seq == 2 and src.snapshot.accounts[1].wallet_balance == 60000.0
        await src.stop()


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda p: p["accounts"][0]["positions"][0].update(entry_price=-1), "entry_price"),
        (lambda p: p["accounts"][0].update(colour="red"), "unknown key"),
        (lambda p: p["accounts"][0]["positions"][0].update(symbol="XRPUSDT"), "not a configured instrument"),
        (lambda p: p["accounts"].append({"id": "acct-01", "wallet_balance": 1.0}), "listed twice"),
        (lambda p: p.update(version=2), "version"),
        (lambda p: p.update(as_of="2026-11-25T15:47:32"), "as_of"),
        (lambda p: p["accounts"][0].update(wallet_balance="lots"), "wallet_balance"),
    ],
)
async def test_malformed_payload_is_refused_whole(insts, sim_clock, caplog, mutate, reason):
    caplog.set_level(logging.WARNING, logger="capguard.connectors")
    svc = AccountService()
    async with HttpServer(svc) as http:
        src = make(http.url, insts, sim_clock)
        assert await src.refresh()
        before = src.snapshot
        svc.version = 2
        mutate(svc.payload)
        sim_clock.advance(1)
        assert not await src.refresh()
        assert src.snapshot is before  # nothing applied
        assert src.last_ok == before.received  # and the data was not confirmed either
        assert reason in src.last_error and reason in caplog.text
        assert src.counters["refused"] == 1


async def test_not_json_is_refused(insts, sim_clock):
    svc = AccountService()
    svc.script = [Response(200, b"<html>oops</html>")]
    async with HttpServer(svc) as http:
        src = make(http.url, insts, sim_clock)
        assert not await src.refresh()
        assert "not valid JSON" in src.last_error and src.snapshot is None


async def test_retries_server_errors_with_backoff(insts, sim_clock):
    svc = AccountService()
    svc.script = [Response(503, b"busy"), Response(500, b"boom"), Response(drop=True)]
    async with HttpServer(svc) as http:
        src = make(http.url, insts, sim_clock, retries=3)
        assert await src.refresh()
        assert len(http.requests) == 4 and src.snapshot is not None
        svc.script = [Response(502)] * 3
        src2 = make(http.url, insts, sim_clock, retries=2)
        assert not await src2.refresh()
        assert "HTTP 502 after 3 attempt(s)" in src2.last_error
        svc.script = [Response(404, b"gone")]
        assert not await src.refresh()  # a 4xx is not retried
        assert "HTTP 404" in src.last_error


async def test_timeout_fails_the_poll_and_the_source_goes_stale(insts, sim_clock):
    svc = AccountService()
    async with HttpServer(svc) as http:
        src = make(http.url, insts, sim_clock, timeout=0.2, retries=1, max_age=10)
        assert await src.refresh()
        svc.delay = 1.0
        sim_clock.advance(6)
        assert not await src.refresh()
        assert "timeout" in src.last_error
        assert src.data_state(sim_clock.now()) == DataState.OK  # 6 s old: still within max_age
        sim_clock.advance(5)
        assert src.data_state(sim_clock.now()) == DataState.STALE
        svc.delay = 0.0


async def test_polling_loop_runs_and_stops(insts, wall):
    svc = AccountService()
    async with HttpServer(svc) as http:
        src = make(http.url, insts, wall, interval=0.05)
        seen = []
        src.listeners.append(seen.append)
        await src.start()
        await asyncio.sleep(0.4)
        await src.stop()
        n = len(http.requests)
        assert n >= 3 and len(seen) == 1  # applied once, then 304s
        await asyncio.sleep(0.15)
        assert len(http.requests) == n  # stopped


def big_payload(n: int) -> dict:
    one = PAYLOAD["accounts"][0]
    return {**PAYLOAD, "accounts": [{**copy.deepcopy(one), "id": f"big-{k:05d}"} for k in range(n)]}


async def test_a_large_payload_is_validated_in_chunks_with_the_loop_let_in(insts, sim_clock):
    import json

    from engine.connectors.rest_account import PARSE_CHUNK

    src = make("http://127.0.0.1:9/accounts", insts, sim_clock)
    body = json.dumps(big_payload(4 * PARSE_CHUNK + 7)).encode()
    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.get_running_loop().create_task(ticker())
    await asyncio.sleep(0)
    before = turns
    accounts, as_of = await src.parse_async(body)
    task.cancel()
    assert turns - before >= 4  # the loop ran between the chunks
    assert (accounts, as_of) == src.parse(body)  # the same result as in one go
    assert len(accounts) == 4 * PARSE_CHUNK + 7

    bad = big_payload(3 * PARSE_CHUNK)
    bad["accounts"][1234]["positions"][0]["qty"] = "lots"
    bad["accounts"][7]["wallet_balance"] = None
    text = json.dumps(bad).encode()
    with pytest.raises(Refused) as whole:
        src.parse(text)
    with pytest.raises(Refused) as chunked:
        await src.parse_async(text)
    assert str(chunked.value) == str(whole.value)  # refused whole, the same locations named
    assert "accounts[1234].positions[0].qty" in str(chunked.value) and "accounts[7].wallet_balance" in str(
        chunked.value
    )
