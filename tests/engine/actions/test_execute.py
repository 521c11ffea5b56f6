"""The executor against the simulated venue: intent first, look up before resending, retries,
limits, slices, deadlines, and restart reconciliation without a doubled order."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.actions.deleverage import DeleverageParams, plan_deleverage
from engine.actions.execute import Executor, OwnOrderLimits, RetryPolicy
from engine.actions.impact import ImpactModel
from engine.actions.liquidate import LiquidationParams, plan_liquidation
from engine.book import Book
from engine.clock import SimClock
from engine.orders import OrderRequest
from engine.sim.broker import SimBroker, SimBrokerParams
from tests.engine.actions.support import (
    ClockSleep,
    JsonlJournal,
    MemoryJournal,
    ProcessDied,
    four_positions,
    make_book,
    paused_clock,
    position,
    qty_of,
)


def hand_book() -> Book:
    # See test_deleverage: 1.04 BTC (52,000) brings this account from 1.2385 to 1.5 frictionless.
    return make_book([position("BTCUSDT", 6.0), position("ETHUSDT", 100.0)], wallet=3_622.5)


def thin_book() -> Book:
    # 10,000 THIN at 10 = 100,000 notional: 10% of its 1,000,000 depth.
    return make_book([position("THINUSDT", 10_000.0)], wallet=30_000.0)


@dataclass
class Env:
    book: Book
    clock: SimClock
    broker: SimBroker
    journal: MemoryJournal
    sleep: ClockSleep
    ex: Executor
    sent: list[str]


def env(
    make: Callable[[], Book],
    *,
    sim: SimBrokerParams | None = None,
    limits: OwnOrderLimits | None = None,
    retry: RetryPolicy | None = None,
    state_path: Path | None = None,
    journal: MemoryJournal | None = None,
    clock: SimClock | None = None,
) -> Env:
    book = make()
    clock = clock or paused_clock()
    broker = SimBroker(book, clock, sim or SimBrokerParams(), state_path)
    sent: list[str] = []
    broker.on_send = lambda o: sent.append(o.client_order_id)
    journal = journal or MemoryJournal()
    sleep = ClockSleep(clock)
    ex = Executor(book, broker, journal, clock, limits, sleep=sleep, retry=retry)
    return Env(book, clock, broker, journal, sleep, ex, sent)


def one_order_plan(book: Book, action_id: str = "act"):
    return plan_deleverage(book, 0, target_ratio=1.5, action_id=action_id)


async def test_execute_journals_intent_first_books_fills_and_reports():
    e = env(hand_book)
    plan = one_order_plan(e.book)
    (o,) = plan.orders
    outcome = await e.ex.execute(plan)

    kinds = [r["kind"] for r in e.journal.records]
    assert kinds == ["action_start", "order_intent", "order", "fill", "outcome", "action_end"]
    start, intent, order, fill = e.journal.records[:4]
    assert start["plan"] == plan.to_dict() and start["action_id"] == "act" and start["account"] == "acct-1"
    assert intent["client_order_id"] == "act-1" and intent["reduce_only"] is True
    assert (intent["symbol"], intent["side"], intent["qty"], intent["order_type"]) == ("BTCUSDT", -1, o.qty, "market")
    assert order["status"] == "filled" and order["filled_qty"] == o.qty
    assert fill["qty"] == -o.qty

    assert qty_of(e.book, "BTCUSDT") == pytest.approx(6.0 - o.qty)
    assert outcome.complete and not outcome.escalated
    assert outcome.orders_sent == outcome.orders_filled == 1
    btc = outcome.closed["BTCUSDT"]
    assert btc["qty"] == pytest.approx(o.qty)
    # The venue uses the planner's impact model: the fill is where the plan said.
    assert btc["avg_price"] == pytest.approx(o.est_price)
    assert outcome.slippage == pytest.approx(o.est_slippage)
    assert outcome.slippage_bps == pytest.approx(o.est_slippage / o.notional * 1e4)
    assert outcome.fees == pytest.approx(o.qty * o.est_price * 0.0005)
    assert outcome.equity_before == pytest.approx(3_622.5)
    assert outcome.equity_after == pytest.approx(3_622.5 - outcome.slippage - outcome.fees)
    assert outcome.ratio_after >= 1.5 and outcome.ratio_after == pytest.approx(float(e.book.ratio[0]))
    d = outcome.to_dict()
    json.dumps(d, allow_nan=False)
    # The protection layer spreads the outcome into an event next to these keys.
    assert not {"account", "action_id", "stage", "kind", "type"} & set(d)
    assert e.journal.kinds("outcome")[0]["complete"] is True


async def test_orderly_liquidation_of_a_large_position_slips_less_than_immediate():
    # The venue remembers its own flow (half life 5 s): back-to-back orders pay the cumulative
    # impact, slices 10 s apart meet a book that has mostly refilled.
    sim = SimBrokerParams(impact_half_life=5.0)
    params = LiquidationParams(max_slice_slippage=0.001, slice_interval_s=10.0, deadline_s=600.0)
    fast, slow = env(thin_book, sim=sim), env(thin_book, sim=sim)
    assert fast.book.notional[0] > 0.05 * 1_000_000  # over 5% of the book depth

    immediate = await fast.ex.execute(plan_liquidation(fast.book, 0, mode="immediate", params=params))
    orderly = await slow.ex.execute(plan_liquidation(slow.book, 0, mode="orderly", params=params))

    assert immediate.complete and orderly.complete
    assert qty_of(fast.book, "THINUSDT") == 0 == qty_of(slow.book, "THINUSDT")
    assert orderly.closed["THINUSDT"]["qty"] == immediate.closed["THINUSDT"]["qty"] == 10_000.0
    assert immediate.slippage == pytest.approx(100_000 * 0.01 * 0.1**0.5)  # one order: sqrt(10%) * 1%
    assert orderly.slippage < 0.5 * immediate.slippage
    assert orderly.equity_after > immediate.equity_after
    assert slow.sleep.waits == [10.0] * 9


async def test_timeout_is_looked_up_not_resent_and_the_fill_is_booked_once():
    e = env(hand_book)
    plan = one_order_plan(e.book)
    e.broker.timeout_next(1)
    outcome = await e.ex.execute(plan)
    assert e.sent == ["act-1"]
    assert e.broker.arrivals("act-1") == 1
    assert len(e.broker.fills_since_start()) == 1
    assert len(e.journal.kinds("fill")) == 1
    assert qty_of(e.book, "BTCUSDT") == pytest.approx(6.0 - plan.orders[0].qty)
    assert any(r.get("action") == "lookup" for r in e.journal.kinds("decision"))
    assert outcome.complete


async def test_a_dropped_order_is_resent_once_under_the_same_id():
    e = env(hand_book)
    plan = one_order_plan(e.book)
    e.broker.drop_next(1)
    outcome = await e.ex.execute(plan)
    assert e.sent == ["act-1", "act-1"]
    assert e.broker.arrivals("act-1") == 1
    assert len(e.journal.kinds("order_intent")) == 1  # one intent, two sends of it
    assert outcome.complete and outcome.orders_sent == 2 and outcome.orders_filled == 1


async def test_a_reject_is_retried_with_backoff_under_a_new_sub_id():
    e = env(hand_book, retry=RetryPolicy(max_attempts=4, backoff_s=0.5, backoff_factor=2.0))
    e.broker.reject_next(1, "venue busy")
    outcome = await e.ex.execute(one_order_plan(e.book))
    assert e.sent == ["act-1", "act-1r1"]
    assert e.sleep.waits == [0.5]
    assert outcome.complete and outcome.orders_rejected == 1 and outcome.orders_filled == 1


async def test_repeated_rejects_back_off_exponentially_then_escalate():
    e = env(hand_book, retry=RetryPolicy(max_attempts=4, backoff_s=0.5, backoff_factor=2.0))
    e.broker.reject_next(10, "venue busy")
    outcome = await e.ex.execute(one_order_plan(e.book))
    assert e.sent == ["act-1", "act-1r1", "act-1r2", "act-1r3"]
    assert e.sleep.waits == [0.5, 1.0, 2.0]
    assert not outcome.complete and outcome.escalated
    assert any("escalated" in n and "venue busy" in n for n in outcome.notes)
    assert qty_of(e.book, "BTCUSDT") == 6.0


async def test_a_partial_ioc_fill_is_retried_for_the_remainder():
    # The venue is twice as thin as the planner thinks (k = 2 against 1): the IOC limit is
    # reached after a third of the quantity; the remainder is retried until it fills.
    e = env(thin_book, sim=SimBrokerParams(impact=ImpactModel(k=2.0)))
    params = LiquidationParams(max_slices=1)
    plan = plan_liquidation(e.book, 0, mode="orderly", params=params, action_id="liq")
    (o,) = plan.orders
    assert o.order_type == "ioc" and o.qty == 10_000.0
    outcome = await e.ex.execute(plan)
    assert e.sent == ["liq-1", "liq-1r1", "liq-1r2"]
    assert outcome.orders_partial == 2 and outcome.orders_filled == 1
    orders = e.broker.orders()
    assert [r["status"] for r in orders] == ["partial", "partial", "filled"]
    assert sum(r["filled_qty"] for r in orders) == pytest.approx(10_000.0)
    assert all(r["order_type"] == "ioc" and r["price"] < 10.0 for r in orders)
    assert outcome.complete and qty_of(e.book, "THINUSDT") == 0


async def test_block_after_leaves_the_action_incomplete_and_escalated():
    e = env(four_positions, retry=RetryPolicy(max_attempts=3, backoff_s=0.1))
    plan = plan_liquidation(e.book, 0, action_id="liq")
    e.broker.block_after(1)
    outcome = await e.ex.execute(plan)
    assert not outcome.complete and outcome.escalated
    assert outcome.orders_filled == 1
    assert sum(1 for n in outcome.notes if n.startswith("escalated")) == 3
    assert any(n.startswith("not flat") for n in outcome.notes)
    # Blocked orders never reached the venue; each was resent under its own id only.
    venue = {r["client_order_id"]: r["arrivals"] for r in e.broker.orders()}
    assert venue == {"liq-1": 1}
    assert Counter(e.sent) == {"liq-1": 1, "liq-2": 3, "liq-3": 3, "liq-4": 3}
    assert e.journal.records[-1]["kind"] == "action_end" and e.journal.records[-1]["complete"] is False


async def test_orders_above_the_notional_cap_are_split():
    e = env(hand_book, limits=OwnOrderLimits(max_order_notional=20_000.0))
    plan = one_order_plan(e.book)
    (o,) = plan.orders  # about 58,000 of BTC: three parts of at most 20,000
    outcome = await e.ex.execute(plan)
    assert e.sent == ["act-1s1", "act-1s2", "act-1s3"]
    intents = e.journal.kinds("order_intent")
    assert all(r["qty"] * 50_000 <= 20_000.0 for r in intents)
    assert sum(r["qty"] for r in intents) == pytest.approx(o.qty)
    assert outcome.complete and outcome.closed["BTCUSDT"]["qty"] == pytest.approx(o.qty)


async def test_orders_per_minute_are_limited_not_exceeded():
    e = env(four_positions, limits=OwnOrderLimits(orders_per_minute=2, max_wait_s=0.0))
    outcome = await e.ex.execute(plan_liquidation(e.book, 0, action_id="liq"))
    assert e.sent == ["liq-1", "liq-2"]
    assert outcome.limited and not outcome.complete
    assert any(n.startswith("limited: 2 orders per minute") for n in outcome.notes)
    assert any(r.get("action") == "limited" for r in e.journal.kinds("decision"))


async def test_orders_per_minute_wait_for_a_slot_when_allowed():
    e = env(four_positions, limits=OwnOrderLimits(orders_per_minute=2, max_wait_s=60.0))
    outcome = await e.ex.execute(plan_liquidation(e.book, 0, action_id="liq"))
    assert outcome.complete and not outcome.limited
    assert e.sleep.waits == [60.0]
    assert all(qty_of(e.book, s) == 0 for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "THINUSDT"))


async def test_liquidations_per_minute_book_wide():
    e = env(four_positions, limits=OwnOrderLimits(liquidations_per_minute=1))
    first = await e.ex.execute(plan_liquidation(e.book, 0, params=LiquidationParams(), action_id="liq-a"))
    assert first.complete
    # Another liquidation (the account was refilled by a fresh book here) within the minute: limited.
    e.book.__dict__.update(four_positions().__dict__)
    second = await e.ex.execute(plan_liquidation(e.book, 0, action_id="liq-b"))
    assert second.limited and not second.complete and second.orders_sent == 0
    assert e.sent == ["liq-a-1", "liq-a-2", "liq-a-3", "liq-a-4"]
    e.clock.advance(61.0)
    third = await e.ex.execute(plan_liquidation(e.book, 0, action_id="liq-c"))
    assert third.complete


async def test_twap_stops_early_once_recovered():
    e = env(hand_book)
    params = DeleverageParams(slices=4, slice_interval_s=30.0)
    plan = plan_deleverage(e.book, 0, target_ratio=1.5, strategy="time", params=params, action_id="twap")
    assert plan.recheck and plan.slices == 4
    calls = []

    def recovered() -> bool:
        calls.append(e.clock.now())
        return True

    outcome = await e.ex.execute(plan, recovered=recovered)
    assert e.sent == ["twap-1"]
    assert e.sleep.waits == [30.0] and len(calls) == 1
    assert outcome.recovered_early and outcome.complete
    assert "recovered after slice 1 of 4" in outcome.notes[0]


async def test_twap_checks_the_target_itself_when_no_callback_is_given():
    e = env(hand_book)
    plan = plan_deleverage(e.book, 0, target_ratio=1.5, strategy="time", action_id="twap")

    async def rally(seconds: float) -> None:  # the market rallies 2% during each wait
        e.clock.advance(seconds)
        e.book.set_prices({"BTCUSDT": float(e.book.mark[0]) * 1.02}, received=e.clock.now())
        e.book.revalue()

    e.ex.sleep = rally
    outcome = await e.ex.execute(plan)
    assert outcome.recovered_early and len(e.sent) < len(plan.orders)
    assert e.book.ratio[0] >= 1.5


async def test_orderly_deadline_sends_the_rest_at_market():
    e = env(thin_book)
    params = LiquidationParams(max_slice_slippage=0.001, slice_interval_s=10.0, deadline_s=25.0)
    plan = plan_liquidation(e.book, 0, mode="orderly", params=params, action_id="liq")
    assert len(plan.orders) == 10
    outcome = await e.ex.execute(plan)
    assert e.sleep.waits == [10.0, 10.0, 5.0]
    types = [r["order_type"] for r in e.broker.orders()]
    assert types == ["ioc"] * 3 + ["market"] * 7
    assert outcome.deadline_reached and outcome.complete
    assert any(n.startswith("deadline reached at slice 4") for n in outcome.notes)


async def test_stop_orders_are_placed_and_rest():
    e = env(hand_book)
    plan = plan_deleverage(e.book, 0, target_ratio=1.5, method="stop", action_id="stp")
    outcome = await e.ex.execute(plan)
    assert [r["status"] for r in e.broker.orders()] == ["open"]
    assert outcome.complete and qty_of(e.book, "BTCUSDT") == 6.0


def rebuild_from_journal(journal: MemoryJournal, make: Callable[[], Book]) -> Book:
    """What a restarted guard does first: a fresh book with every journaled fill booked again."""
    book = make()
    for f in journal.kinds("fill"):
        if f.get("booked"):
            book.apply_fill(f["position"], f["qty"], f["price"], f["fee"])
    return book


@pytest.mark.parametrize("rebuild", ["journal", "venue"])
async def test_resume_after_a_crash_sends_every_client_id_exactly_once(tmp_path, rebuild):
    state = tmp_path / "venue.sqlite3"
    journal = MemoryJournal()
    clock = paused_clock()
    first = env(four_positions, state_path=state, journal=journal, clock=clock)

    def die_on_third(order: OrderRequest) -> None:
        first.sent.append(order.client_order_id)
        if len(first.sent) == 3:
            raise ProcessDied("killed while sending the third order")

    first.broker.on_send = die_on_third
    plan = plan_liquidation(first.book, 0, action_id="liq")
    assert len(plan.orders) == 4
    with pytest.raises(ProcessDied):
        await first.ex.execute(plan)
    first.broker.close()
    (unfinished,) = journal.unfinished_actions()
    assert [o["result"] is None for o in unfinished["orders"]] == [False, False, True]

    # The restart: a new process, a new book, the venue's memory from its state file.
    if rebuild == "journal":
        book = rebuild_from_journal(journal, four_positions)
    else:
        book = four_positions()
        SimBroker(book, clock, state_path=state).replay_into(book)
    venue = SimBroker(book, clock, state_path=state)
    sent: list[str] = []
    venue.on_send = lambda o: sent.append(o.client_order_id)
    ex = Executor(book, venue, journal, clock, sleep=ClockSleep(clock))
    outcome = await ex.resume(unfinished, apply_found_fills=rebuild == "journal")

    assert sent == ["liq-3", "liq-4"]  # liq-3 never reached the venue; liq-1 and liq-2 are not resent
    assert {r["client_order_id"]: r["arrivals"] for r in venue.orders()} == {f"liq-{n}": 1 for n in range(1, 5)}
    assert Counter(r["client_order_id"] for r in journal.kinds("order_intent")) == {f"liq-{n}": 1 for n in range(1, 5)}
    assert all(qty_of(book, s) == 0 for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "THINUSDT"))
    assert outcome.complete and outcome.resumed
    assert set(outcome.closed) == {"BTCUSDT", "ETHUSDT", "SOLUSDT", "THINUSDT"}
    assert journal.unfinished_actions() == []


async def test_resume_books_a_fill_the_venue_made_but_the_dead_process_never_recorded(tmp_path):
    state = tmp_path / "venue.sqlite3"
    journal = MemoryJournal(fail_on=("order", 2))  # dies right after the venue filled liq-2
    clock = paused_clock()
    first = env(four_positions, state_path=state, journal=journal, clock=clock)
    with pytest.raises(ProcessDied):
        await first.ex.execute(plan_liquidation(first.book, 0, action_id="liq"))
    journal._fail_on = None

    book = rebuild_from_journal(journal, four_positions)
    assert qty_of(book, "ETHUSDT") != 0  # liq-2's fill is not in the rebuilt book yet
    venue = SimBroker(book, clock, state_path=state)
    sent: list[str] = []
    venue.on_send = lambda o: sent.append(o.client_order_id)
    outcome = await Executor(book, venue, journal, clock, sleep=ClockSleep(clock)).resume(
        journal.unfinished_actions()[0]
    )
    assert sent == ["liq-3", "liq-4"]
    assert all(r["arrivals"] == 1 for r in venue.orders())
    assert outcome.complete
    # The book matches the venue's own record replayed from scratch.
    reference = four_positions()
    venue.replay_into(reference)
    assert book.wallet[0] == pytest.approx(reference.wallet[0])
    assert all(qty_of(book, s) == 0 for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "THINUSDT"))


async def test_resume_of_an_action_without_a_plan_or_account_ends_it():
    journal = MemoryJournal()
    e = env(hand_book, journal=journal)
    outcome = await e.ex.resume({"action_id": "act-5", "account": None, "orders": []})
    assert not outcome.complete
    assert journal.records[-1]["kind"] == "action_end"


KILLED_RUN = """
import asyncio, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from engine.actions.execute import Executor
from engine.actions.liquidate import plan_liquidation
from engine.sim.broker import SimBroker
from tests.engine.actions.support import ClockSleep, JsonlJournal, four_positions, paused_clock

async def main():
    book, clock = four_positions(), paused_clock()
    journal = JsonlJournal(Path({journal!r}), kill_on=("order", 2))
    venue = SimBroker(book, clock, state_path=Path({state!r}))
    executor = Executor(book, venue, journal, clock, sleep=ClockSleep(clock))
    await executor.execute(plan_liquidation(book, 0, action_id="liq"))

asyncio.run(main())
"""


async def test_sigkill_mid_liquidation_then_resume_sends_nothing_twice(tmp_path):
    # A real process is SIGKILLed after the venue filled liq-2 and before its answer was journaled.
    root = str(Path(__file__).resolve().parents[3])
    jpath, state = tmp_path / "journal.jsonl", tmp_path / "venue.sqlite3"
    code = KILLED_RUN.format(root=root, journal=str(jpath), state=str(state))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr

    journal = JsonlJournal(jpath)
    (unfinished,) = journal.unfinished_actions()
    assert [o["result"] is None for o in unfinished["orders"]] == [False, True]
    clock = paused_clock()
    book = rebuild_from_journal(journal, four_positions)
    venue = SimBroker(book, clock, state_path=state)
    assert [r["client_order_id"] for r in venue.orders()] == ["liq-1", "liq-2"]  # the venue remembers
    sent: list[str] = []
    venue.on_send = lambda o: sent.append(o.client_order_id)
    outcome = await Executor(book, venue, journal, clock, sleep=ClockSleep(clock)).resume(unfinished)

    assert sent == ["liq-3", "liq-4"]
    assert {r["client_order_id"]: r["arrivals"] for r in venue.orders()} == {f"liq-{n}": 1 for n in range(1, 5)}
    assert outcome.complete and all(qty_of(book, s) == 0 for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "THINUSDT"))
    reference = four_positions()
    venue.replay_into(reference)
    assert book.wallet[0] == pytest.approx(reference.wallet[0])
    assert JsonlJournal(jpath).unfinished_actions() == []


async def test_ioc_remainders_of_a_liquidation_are_swept_at_market():
    # A venue four times thinner than planned, remembering its flow: the IOC slices and their
    # retries leave remainders; the final sweep closes what is left at market.
    e = env(thin_book, sim=SimBrokerParams(impact=ImpactModel(k=4.0), impact_half_life=30.0))
    params = LiquidationParams(max_slice_slippage=0.001, slice_interval_s=10.0, deadline_s=10_000.0)
    plan = plan_liquidation(e.book, 0, mode="orderly", params=params, action_id="liq")
    outcome = await e.ex.execute(plan)
    assert e.sent[-1] == "liq-x1"
    assert [r["order_type"] for r in e.broker.orders()][-1] == "market"
    assert any(n.startswith("sweep:") for n in outcome.notes)
    assert any("left to the final sweep" in n for n in outcome.notes)
    assert outcome.complete and not outcome.escalated and qty_of(e.book, "THINUSDT") == 0
