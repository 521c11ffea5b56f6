"""Account snapshots that change after start reach the guard's book (issue 7).

The guard runs on live connectors over real loopback sockets: accounts from the REST account
service (tests.engine.connectors.test_rest_account.AccountService, ETag-aware), marks from the
WebSocket tick server. Each test changes what the service answers, polls the source, and
evaluates. Hand-computed figures write their arithmetic in comments.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from engine.book import Book
from engine.clock import SimClock
from engine.connectors.base import SourcesConfig
from engine.connectors.ticks import tick
from engine.guard import Guard
from engine.ladder import DataState
from engine.levels import Level
from engine.model import Account
from engine.sim.broker import SimBrokerParams
from tests.engine.connectors.support import HttpServer, wait_until
from tests.engine.connectors.test_rest_account import AccountService
from tests.engine.connectors.test_ws_prices import TickServer
from tests.engine.guard.support import T0, config

TS = "2026-11-25T15:47:32.120Z"
MARKS = {"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0}
# acct-01: 1.5 BTC @ 64_000 and -20 ETH @ 3_400, wallet 250_000; acct-02: 50_000, flat.
#   BTC notional 90_000 (tier 1: 0.005, cum 50): MM 400, PnL -6_000
#   ETH notional 60_000 (tier 1: 0.0065, cum 75): MM 315, PnL 8_000
#   equity 252_000, MM 715, ratio 352.44755244755245
ACCT_01: dict[str, Any] = {
    "id": "acct-01",
    "desk": "delta-one",
    "wallet_balance": 250_000.0,
    "positions": [
        {"symbol": "BTCUSDT", "qty": 1.5, "entry_price": 64_000.0},
        {"symbol": "ETHUSDT", "qty": -20.0, "entry_price": 3_400.0},
    ],
    "open_orders": [{"symbol": "ETHUSDT", "side": "buy", "qty": 5.0, "price": 3_300.0, "reduce_only": True}],
}
ACCT_02: dict[str, Any] = {"id": "acct-02", "wallet_balance": 50_000.0}


def position(symbol: str, qty: float, entry: float) -> dict[str, Any]:
    return {"symbol": symbol, "qty": qty, "entry_price": entry}


class Live:
    def __init__(self, g: Guard, svc: AccountService, clock: SimClock) -> None:
        self.g, self.svc, self.clock = g, svc, clock

    def serve(self, *accounts: dict[str, Any]) -> None:
        """The service answers these accounts from now on (a new version, a new ETag)."""
        self.svc.payload["accounts"] = [copy.deepcopy(a) for a in accounts]
        self.svc.version += 1

    async def poll(self) -> bool:
        """One poll of the account source over HTTP, then one evaluation."""
        self.clock.advance(0.25)
        ok = await self.g.sources.accounts[0].refresh()
        self.g.evaluate(self.clock.now())
        return ok

    def synced(self) -> list[dict[str, Any]]:
        return [r for r in self.g.journal.records(kind="system") if r.get("event") == "accounts_synced"]


@contextlib.asynccontextmanager
async def live_guard(tmp_path, *accounts: dict[str, Any], **kw: Any) -> AsyncIterator[Live]:
    ws = TickServer()
    await ws.start()
    svc = AccountService()
    svc.payload["accounts"] = [copy.deepcopy(a) for a in accounts]
    async with HttpServer(svc) as http:
        sources = SourcesConfig.model_validate(
            {"websocket": {"url": ws.url}, "rest_accounts": {"url": f"{http.url}/accounts", "interval": 3600}}
        )
        cfg = config().model_copy(update={"sources": sources})
        clock = SimClock(start=T0, paused=True)
        g = await Guard.connect(cfg, clock=clock, journal_path=tmp_path / "j.sqlite3", **kw)
        try:
            assert await wait_until(lambda: g.live_feed.connected)
            await ws.send({"ticks": [tick(s, p, TS) for s, p in MARKS.items()]})
            assert await wait_until(lambda: g.sources.prices[0].counters["accepted"] >= len(MARKS))
            clock.advance(0.25)
            g.evaluate(clock.now())
            assert g.book.mark[g.book.symbol_index["BTCUSDT"]] == 60_000.0
            yield Live(g, svc, clock)
        finally:
            await g.stop(grace=1.0)
            await ws.stop()


def expected_book(g: Guard, accounts: list[dict[str, Any]]) -> Book:
    """A fresh book from the accounts the guard should hold now, at the guard's marks."""
    book = Book(g.book.instruments, [Account.model_validate(a) for a in accounts])
    book.set_marks(np.arange(len(book.instruments)), np.nan_to_num(g.book.mark, nan=1.0), 0.0)
    book.revalue()
    return book


def assert_same_accounts(g: Guard, ref: Book) -> None:
    """Equity, MM and ratio per account to 1e-9 relative (positions may differ: closed ones stay at 0)."""
    book = g.book
    assert [i.id for i in book.info] == [i.id for i in ref.info]
    for got, want in ((book.equity, ref.equity), (book.acct_mm, ref.acct_mm), (book.ratio, ref.ratio)):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=0.0)


# ---------------------------------------------------------------------------- in place
async def test_a_new_quantity_and_balance_reach_the_book_and_the_ratio(tmp_path):
    async with live_guard(tmp_path, ACCT_01, ACCT_02) as live:
        g = live.g
        a = g.book.account_index["acct-01"]
        assert g.book.ratio[a] == pytest.approx(352.44755244755245, rel=1e-12)
        book, ratio = g.book, g.book.ratio
        # The trader doubles the BTC long and 10_000 leaves the wallet:
        #   BTC 3 @ 64_000: notional 180_000 (tier 1): MM 900 - 50 = 850, PnL -12_000
        #   ETH as before: MM 315, PnL 8_000
        #   equity 240_000 - 12_000 + 8_000 = 236_000; MM 1_165; ratio 202.57510729613733
        changed = copy.deepcopy(ACCT_01)
        changed["wallet_balance"] = 240_000.0
        changed["positions"][0]["qty"] = 3.0
        live.serve(changed, ACCT_02)
        assert await live.poll()
        assert g.book is book and g.book.ratio is ratio  # in place: same book, same columns
        assert g.book.pos_qty[g.book.account_positions(a)].tolist() == [3.0, -20.0]
        assert g.book.wallet[a] == 240_000.0
        assert g.book.equity[a] == pytest.approx(236_000.0, rel=1e-12)
        assert g.book.acct_mm[a] == pytest.approx(1_165.0, rel=1e-12)
        assert g.book.ratio[a] == pytest.approx(202.57510729613733, rel=1e-12)
        assert g.snapshot().columns["margin_ratio"][a] == pytest.approx(202.57510729613733, rel=1e-12)
        [rec] = live.synced()
        assert rec["resized"] == [["acct-01", "BTCUSDT", 1.5, 3.0]] and rec["wallet"] == ["acct-01"]
        assert rec["rebuilt"] is False and rec["source"] == "rest_accounts"
        # The same answer again (304, or 200 with the same figures) changes and journals nothing.
        assert await live.poll()
        assert len(live.synced()) == 1
        assert g.book.ratio[a] == pytest.approx(202.57510729613733, rel=1e-12)


async def test_a_closed_position_goes_to_zero_and_stays_in_place(tmp_path):
    async with live_guard(tmp_path, ACCT_01, ACCT_02) as live:
        g = live.g
        a = g.book.account_index["acct-01"]
        eth = g.book.account_positions(a)[1]
        closed = copy.deepcopy(ACCT_01)
        del closed["positions"][1]
        closed["open_orders"] = []
        live.serve(closed, ACCT_02)
        assert await live.poll()
        # BTC alone: notional 90_000: MM 400; equity 250_000 - 6_000 = 244_000; ratio 610
        assert g.book.pos_qty[eth] == 0.0 and g.book.pos_qty.size == 2
        assert g.book.ratio[a] == pytest.approx(610.0, rel=1e-12)
        assert g.book.ord_qty.size == 0  # its open order is gone too
        [rec] = live.synced()
        assert rec["closed"] == [["acct-01", "ETHUSDT"]] and rec["orders"] == ["acct-01"]


# ---------------------------------------------------------------------------- new layout
async def test_a_new_position_and_a_new_account_appear_classified_with_history(tmp_path):
    async with live_guard(tmp_path, ACCT_01, ACCT_02) as live:
        g = live.g
        old = g.book
        # acct-02 opens BTC (a symbol it held none of); acct-03 arrives with 10 ETH @ 3_000 on 200:
        #   notional 30_000 (tier 0: 0.005): MM 150; equity 200; ratio 1.3333333333333333: CRITICAL
        # acct-02: 1 BTC @ 60_000: notional 60_000 (tier 1): MM 250, PnL 0; ratio 50_000 / 250 = 200
        acct02 = {**ACCT_02, "positions": [{"symbol": "BTCUSDT", "qty": 1.0, "entry_price": 60_000.0}]}
        acct03 = {
            "id": "acct-03",
            "wallet_balance": 200.0,
            "positions": [{"symbol": "ETHUSDT", "qty": 10.0, "entry_price": 3_000.0}],
        }
        live.serve(ACCT_01, acct02, acct03)
        assert await live.poll()
        assert g.book is not old and g.book.account_index == {"acct-01": 0, "acct-02": 1, "acct-03": 2}
        assert g.book.ratio[1] == pytest.approx(200.0, rel=1e-12)
        assert g.book.ratio[2] == pytest.approx(1.3333333333333333, rel=1e-12)
        assert g.book.ratio[0] == pytest.approx(352.44755244755245, rel=1e-12)  # untouched, same index
        # Every per-account array grew; the parts hold the new book.
        n = 3
        for arr in (
            g.ladder.level,
            g.ladder.data_state,
            g.ladder.reduce_flags,
            g.ladder.held_until,
            g.protection.rounds,
            g.protection.shadow,
            g.protection.alert_armed,
            g._approaching,
            g._slope,
            g._slope_ratio,
            g.equity_peak,
            g._last_sample,
        ):
            assert arr.shape == (n,)
        assert len(g.history) == n
        assert g.broker.book is g.book and g.protection.executor.book is g.book
        # Classified through the ladder: a journaled transition, like any other.
        assert g.ladder.level[2] == Level.CRITICAL and g.book.level[2] == Level.CRITICAL
        transitions = [r for r in g.journal.records(kind="transition") if r["account"] == "acct-03"]
        assert [(t["from_level"], t["to_level"]) for t in transitions] == [("SAFE", "CRITICAL")]
        [rec] = live.synced()
        assert rec["rebuilt"] is True and rec["added"] == ["acct-03"]
        assert sorted(rec["opened"]) == [["acct-02", "BTCUSDT"], ["acct-03", "ETHUSDT"]]
        # History, snapshot and detail work for the new account; a tick re-values it.
        for _ in range(3):
            live.clock.advance(1.0)
            g.evaluate(live.clock.now())
        assert len(g.history[2]) >= 2 and g.history[2][-1][1] == pytest.approx(1.3333333333333333, rel=1e-12)
        snap = g.snapshot()
        assert snap.ids == ("acct-01", "acct-02", "acct-03")
        assert len(g.account_detail("acct-03")["history"]) >= 2
        assert_same_accounts(g, expected_book(g, [ACCT_01, acct02, acct03]))


async def test_an_account_missing_from_a_later_snapshot_is_kept_and_journaled_once(tmp_path):
    async with live_guard(tmp_path, ACCT_01, ACCT_02) as live:
        g = live.g
        ratio = g.book.ratio.copy()
        live.serve(ACCT_01)
        assert await live.poll()
        assert [i.id for i in g.book.info] == ["acct-01", "acct-02"]
        np.testing.assert_array_equal(g.book.ratio, ratio)
        live.serve({**ACCT_01, "wallet_balance": 1.0})
        assert await live.poll()
        missing = [r for r in g.journal.records(kind="system") if r.get("event") == "account_missing"]
        assert [r["account"] for r in missing] == ["acct-02"]
        # Its last figures are kept but nothing confirms them: no automatic action on them.
        g.evaluate(g.clock.now())
        assert g.ladder.data_state.tolist() == [DataState.OK, DataState.STALE]


# ---------------------------------------------------------------------------- deferral
async def test_a_new_layout_waits_while_an_action_is_in_flight_then_applies(tmp_path):
    # acct-02 holds 1 BTC @ 60_000 on 350: MM 250, ratio 1.4: CRITICAL -> a deleverage round.
    risky = {
        **ACCT_02,
        "wallet_balance": 350.0,
        "positions": [{"symbol": "BTCUSDT", "qty": 1.0, "entry_price": 60_000.0}],
    }
    async with live_guard(tmp_path, ACCT_01, risky, broker_params=SimBrokerParams(latency=0.3)) as live:
        g = live.g
        assert g.ladder.level[1] == Level.CRITICAL
        g.protection.maybe_act(live.clock.now())
        assert 1 in g.protection.active
        # Meanwhile acct-03 arrives and acct-01's wallet moves; acct-02 is reported as before.
        acct03 = {"id": "acct-03", "wallet_balance": 1_000.0}
        live.serve({**ACCT_01, "wallet_balance": 251_000.0}, risky, acct03)
        assert await live.poll()
        assert g.protection.active, "the action must still be in flight for this test to mean anything"
        assert g.book.n_accounts == 2 and g.ladder.level.size == 2  # the new layout waits
        assert g.book.wallet[0] == 251_000.0  # what fits in place (and is not busy) is taken now
        [rec] = live.synced()
        assert rec["deferred"] == ["acct-02", "acct-03"] and rec["wallet"] == ["acct-01"]
        assert await wait_until(lambda: not g.protection.active, timeout=10.0)
        left = float(g.book.pos_qty[g.book.account_positions(1)][0])
        assert 0 <= left < 1.0  # the round's fills are booked
        live.clock.advance(0.25)
        g.evaluate(live.clock.now())
        assert g.book.account_index == {"acct-01": 0, "acct-02": 1, "acct-03": 2}
        assert g.ladder.level.size == 3 and len(g.history) == 3
        # acct-02 keeps its fills: the snapshot fetched during the action is not applied to it.
        assert g.book.pos_qty[g.book.account_positions(1)].tolist() == [left]
        assert g.broker.book is g.book and g.protection.executor.book is g.book
        # Once the source confirms data after the action, its record is taken.
        after = {
            **risky,
            "wallet_balance": 300.0,
            "positions": [{"symbol": "BTCUSDT", "qty": 0.25, "entry_price": 60_000.0}],
        }
        live.serve({**ACCT_01, "wallet_balance": 251_000.0}, after, acct03)
        assert await live.poll()
        assert g.book.pos_qty[g.book.account_positions(1)].tolist() == [0.25]
        assert_same_accounts(g, expected_book(g, [{**ACCT_01, "wallet_balance": 251_000.0}, after, acct03]))


async def test_a_busy_account_takes_an_unchanged_record_once_confirmed_after_its_action(tmp_path):
    # The record of an account changed while its action ran; the service then answers 304 only:
    # the confirmation after the action is enough to take it.
    risky = {
        **ACCT_02,
        "wallet_balance": 350.0,
        "positions": [{"symbol": "BTCUSDT", "qty": 1.0, "entry_price": 60_000.0}],
    }
    async with live_guard(tmp_path, ACCT_01, risky, broker_params=SimBrokerParams(latency=0.3)) as live:
        g = live.g
        g.protection.maybe_act(live.clock.now())
        assert 1 in g.protection.active
        topped_up = {**risky, "wallet_balance": 5_000.0}
        live.serve(ACCT_01, topped_up)
        assert await live.poll()
        assert g.protection.active and g.book.wallet[1] != 5_000.0
        assert await wait_until(lambda: not g.protection.active, timeout=10.0)
        live.clock.advance(0.25)
        g.evaluate(live.clock.now())
        assert g.book.wallet[1] != 5_000.0  # fetched before the action ended: not yet
        unchanged = g.sources.accounts[0].counters["unchanged"]
        assert await live.poll()
        assert g.sources.accounts[0].counters["unchanged"] == unchanged + 1  # a 304: no new snapshot
        assert g.book.wallet[1] == 5_000.0


# ---------------------------------------------------------------------------- refusals
async def test_a_refused_snapshot_changes_nothing(tmp_path):
    async with live_guard(tmp_path, ACCT_01, ACCT_02) as live:
        g = live.g
        book = g.book
        before = (g.book.wallet.copy(), g.book.pos_qty.copy(), g.book.ratio.copy())
        # An unknown symbol: the source refuses the whole payload (nothing reaches the guard).
        bad = {**ACCT_01, "wallet_balance": 1.0, "positions": [{"symbol": "NOPEUSDT", "qty": 1.0, "entry_price": 1.0}]}
        live.serve(bad, ACCT_02)
        assert not await live.poll()
        assert "NOPEUSDT" in (g.sources.accounts[0].last_error or "")
        # Two positions in one symbol: the source passes it, the book refuses it whole.
        twice = {
            **ACCT_01,
            "wallet_balance": 1.0,
            "positions": [
                {"symbol": "BTCUSDT", "qty": 1.0, "entry_price": 60_000.0},
                {"symbol": "BTCUSDT", "qty": 2.0, "entry_price": 60_000.0},
            ],
        }
        live.serve(twice, {**ACCT_02, "wallet_balance": 7.0}, {"id": "acct-09", "wallet_balance": 1.0})
        assert await live.poll()
        assert await live.poll()  # the same refusal is alerted once
        assert g.book is book
        for got, want in zip((g.book.wallet, g.book.pos_qty, g.book.ratio), before, strict=True):
            np.testing.assert_array_equal(got, want)
        assert live.synced() == []
        alerts = [r for r in g.journal.records(kind="alert") if "account snapshot refused" in r["message"]]
        assert len(alerts) == 1 and "more than one position in BTCUSDT" in alerts[0]["message"]


async def test_a_stale_source_snapshot_is_not_applied_until_the_source_is_ok(tmp_path):
    async with live_guard(tmp_path, ACCT_01, ACCT_02) as live:
        g = live.g
        live.serve({**ACCT_01, "wallet_balance": 1_000.0}, ACCT_02)
        source = g.sources.accounts[0]
        assert await source.refresh()
        live.clock.advance(source.max_age + 1.0)  # the snapshot is there, but the source is STALE now
        g.evaluate(live.clock.now())
        assert g.book.wallet[0] == 250_000.0
        assert await live.poll()  # a 304 confirms it: OK again, and the snapshot is taken
        assert g.book.wallet[0] == 1_000.0


async def test_only_records_that_changed_since_last_applied_reach_the_book(tmp_path, monkeypatch):
    from engine.book import Book

    seen: list[list[str]] = []
    real = Book.update_accounts

    def spy(self, accounts, *args, **kw):
        accounts = list(accounts)
        seen.append([a.id for a in accounts])
        return real(self, accounts, *args, **kw)

    monkeypatch.setattr(Book, "update_accounts", spy)
    async with live_guard(tmp_path, ACCT_01, ACCT_02) as live:
        g = live.g
        live.serve(ACCT_01, ACCT_02)  # a new version, the same records: parsed anew, equal
        assert await live.poll()
        assert all(ids == [] for ids in seen)  # nothing to apply
        live.serve(ACCT_01, {**ACCT_02, "wallet_balance": 40_000.0})
        assert await live.poll()
        assert [ids for ids in seen if ids] == [["acct-02"]]
        assert g.book.wallet[g.book.account_index["acct-02"]] == 40_000.0
