"""The executor: turns a plan into reduce-only orders, safely, and says what happened.

For every order, in plan order:

1. journal `order_intent` (client order id, symbol, side, qty, reduce_only, order type) BEFORE
   sending; ids are `f"{action_id}-{n}"` (`-{n}s{j}` for the j-th part of an order split by the
   own-order notional cap, then `r{k}` for the k-th retry of a remainder): deterministic, so a
   retry or a restart reuses them and the venue's idempotency prevents a double order;
2. send; on BrokerTimeout (or an UNKNOWN answer) look the id up BEFORE anything is resent, and
   resend the SAME id only when the venue never saw it;
3. journal `order` and each `fill`, and book each fill with `book.apply_fill` (the one path
   that changes positions);
4. rejects, cancelled IOCs and partial fills: the remainder is retried with exponential backoff
   under a new sub-id, up to `RetryPolicy.max_attempts` sends; then the step is escalated.

Between slices the executor waits the planned delay, then (when the plan asks for it)
re-checks the account and stops once it has recovered. An orderly liquidation has a deadline
after which whatever is left goes at market, without waiting. Own-order limits: a maximum
notional per order (larger orders are split), a number of orders per minute per account and of
liquidations per minute book-wide (waiting up to `max_wait_s` for a slot, otherwise the action
stops and is recorded "limited" rather than exceeding a limit).

After execution the result is validated (every step filled or its position flat, a liquidated
account flat) and summarised in an `Outcome`. `resume()` finishes an action a previous process
started: intents without an answer are looked up and their fills booked, and only orders the
venue never saw are sent, so no client order id ever reaches the venue twice.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from engine.actions.plan import Plan, PlannedOrder, split_qty
from engine.book import Book
from engine.clock import Clock
from engine.model import InputError
from engine.orders import Broker, BrokerTimeout, OrderRequest, OrderResult, OrderStatus, OrderType

__all__ = ["Executor", "JournalSink", "Outcome", "OwnOrderLimits", "RetryPolicy"]


class JournalSink(Protocol):
    def append(self, kind: str, account: str | None = None, action_id: str | None = None, **fields: Any) -> int: ...


@dataclass(frozen=True)
class OwnOrderLimits:
    max_order_notional: float = 5_000_000.0  # quote currency per protective order (larger ones are split)
    orders_per_minute: int = 120  # per account
    liquidations_per_minute: int = 20  # book-wide
    max_wait_s: float = 60.0  # wait at most this long for an order slot, then stop as "limited"

    def __post_init__(self) -> None:
        if not self.max_order_notional > 0:
            raise ValueError(f"max_order_notional must be positive, got {self.max_order_notional}")
        if self.orders_per_minute < 1 or self.liquidations_per_minute < 1:
            raise ValueError("orders_per_minute and liquidations_per_minute must be at least 1")
        if not self.max_wait_s >= 0:
            raise ValueError(f"max_wait_s must be >= 0, got {self.max_wait_s}")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4  # sends per step (first one included) before escalating
    backoff_s: float = 0.5
    backoff_factor: float = 2.0
    max_backoff_s: float = 10.0

    def delay(self, attempt: int) -> float:
        """Wait before attempt number `attempt` (2 = the first retry)."""
        return min(self.max_backoff_s, self.backoff_s * self.backoff_factor ** max(0, attempt - 2))


def _num(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class Outcome:
    """What an action did. `closed` per symbol: qty (contracts), avg_price, notional, slippage
    (quote currency vs the mark when sent, positive = cost), slippage_bps, fees."""

    action_id: str
    account: str
    kind: str
    closed: dict[str, dict[str, float | None]]
    slippage: float
    slippage_bps: float | None
    fees: float
    equity_before: float
    equity_after: float
    ratio_before: float
    ratio_after: float
    orders_sent: int
    orders_filled: int
    orders_partial: int
    orders_rejected: int
    orders_unknown: int
    complete: bool
    escalated: bool = False
    limited: bool = False
    frozen: bool = False
    recovered_early: bool = False
    deadline_reached: bool = False
    resumed: bool = False
    target: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready. The identity (action id, account, kind) is left to the record or event that
        carries the outcome, so these keys never clash with its envelope; kind is `plan_kind`."""
        return {
            "plan_kind": self.kind,
            "closed": self.closed,
            "slippage": self.slippage,
            "slippage_bps": self.slippage_bps,
            "fees": self.fees,
            "equity_before": _num(self.equity_before),
            "equity_after": _num(self.equity_after),
            "ratio_before": _num(self.ratio_before),
            "ratio_after": _num(self.ratio_after),
            "orders_sent": self.orders_sent,
            "orders_filled": self.orders_filled,
            "orders_partial": self.orders_partial,
            "orders_rejected": self.orders_rejected,
            "orders_unknown": self.orders_unknown,
            "complete": self.complete,
            "escalated": self.escalated,
            "limited": self.limited,
            "frozen": self.frozen,
            "recovered_early": self.recovered_early,
            "deadline_reached": self.deadline_reached,
            "resumed": self.resumed,
            "target": self.target,
            "notes": list(self.notes),
        }


@dataclass
class _Step:
    cid: str
    order: PlannedOrder
    qty: float
    first: bool  # the first part of its planned order (carries the order's delay)


@dataclass
class _Known:
    result: OrderResult
    booked: bool = True


@dataclass
class _SymbolStats:
    qty: float = 0.0
    notional: float = 0.0
    mark_notional: float = 0.0
    slippage: float = 0.0
    fees: float = 0.0


@dataclass
class _Run:
    plan: Plan
    a: int
    account_id: str
    started_at: float
    equity_before: float
    ratio_before: float
    resumed: bool = False
    stats: dict[str, _SymbolStats] = field(default_factory=dict)
    sent: int = 0
    filled: int = 0
    partial: int = 0
    rejected: int = 0
    unknown: int = 0
    escalated: bool = False
    limited: bool = False
    frozen: bool = False
    may_send: Callable[[], bool] | None = None
    recovered_early: bool = False
    deadline_reached: bool = False
    unfinished_steps: int = 0
    escalated_symbols: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


_UNKNOWN = object()


class Executor:
    def __init__(
        self,
        book: Book,
        broker: Broker,
        journal: JournalSink,
        clock: Clock,
        limits: OwnOrderLimits | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.book = book
        self.broker = broker
        self.journal = journal
        self.clock = clock
        self.limits = limits or OwnOrderLimits()
        self.sleep = sleep
        self.retry = retry or RetryPolicy()
        self._order_times: dict[str, deque[float]] = {}
        self._liquidation_times: deque[float] = deque()

    # ------------------------------------------------------------------ public
    async def execute(
        self,
        plan: Plan,
        recovered: Callable[[], bool] | None = None,
        may_send: Callable[[], bool] | None = None,
    ) -> Outcome:
        """Carry out `plan` (see the module docstring) and return what happened.

        `may_send` is asked before every order; when it says no (the account's prices went
        stale or invalid) the action stops there, incomplete, and nothing more is sent.
        """
        a = self._account(plan)
        run = self._new_run(plan, a, resumed=False)
        run.may_send = may_send
        self.journal.append(
            "action_start",
            run.account_id,
            plan.action_id,
            plan_kind=plan.kind,
            plan=plan.to_dict(),
            started_at=run.started_at,
        )
        if plan.kind == "liquidate" and plan.orders and not self._liquidation_slot():
            run.limited = True
            self._note(
                run,
                f"limited: {self.limits.liquidations_per_minute} liquidations per minute book-wide reached; "
                "nothing sent",
                decision="limited",
            )
        else:
            await self._loop(run, recovered, {}, set(), may_send)
        return self._finish(run)

    async def resume(self, unfinished: dict[str, Any], apply_found_fills: bool = True) -> Outcome:
        """Finish an action a previous process started and never ended.

        `unfinished` is the journal's view of it (Journal.unfinished_actions): the `action_start`
        fields (`action_id`, `account`, `plan` as Plan.to_dict(), `started_at`) and `orders`, one
        entry per `order_intent`: `{"client_order_id", "intent", "result", "fills"}` with `result`
        the journaled `order` record or None. Intents with a result are taken as booked in the
        Book already. Intents without one are looked up: fills found are journaled and booked
        (unless `apply_found_fills` is False, for a Book rebuilt from the venue's record with
        `SimBroker.replay_into`), ids the venue never saw are sent again under the same id, and
        the plan's other orders are sent as usual, each id at most once at the venue.
        """
        raw = unfinished.get("plan")
        action_id = str(unfinished.get("action_id") or (raw or {}).get("action_id") or "")
        if isinstance(raw, dict):
            plan = Plan.from_dict(raw)
            plan.action_id = action_id or plan.action_id
        else:
            plan = self._stub_plan(action_id, unfinished)
        if plan.account_id not in self.book.account_index:
            account = unfinished.get("account")
            self.journal.append(
                "action_end",
                account if isinstance(account, str) else None,
                plan.action_id or None,
                complete=False,
                escalated=True,
                note=f"cannot resume: unknown account {plan.account_id!r}",
            )
            nan = math.nan
            return Outcome(
                plan.action_id,
                plan.account_id,
                plan.kind,
                {},
                0.0,
                None,
                0.0,
                nan,
                nan,
                nan,
                nan,
                0,
                0,
                0,
                0,
                0,
                complete=False,
                escalated=True,
                resumed=True,
                notes=[f"cannot resume: unknown account {plan.account_id!r}"],
            )
        a = self._account(plan)
        run = self._new_run(plan, a, resumed=True)
        started = unfinished.get("started_at")
        if isinstance(started, int | float):
            run.started_at = float(started)
        self.journal.append("decision", run.account_id, plan.action_id, action="resume", plan_kind=plan.kind)
        known: dict[str, _Known] = {}
        journaled: set[str] = set()
        entries = unfinished.get("orders") or unfinished.get("intents") or []
        for entry in entries:
            cid = entry.get("client_order_id") or (entry.get("intent") or {}).get("client_order_id")
            if not isinstance(cid, str):
                continue
            journaled.add(cid)
            intent = entry.get("intent") or entry
            record = entry.get("result")
            if record is not None:
                result = _result_from_record(cid, record, entry.get("fills") or [])
                known[cid] = _Known(result, booked=True)
                run.sent += 1  # sent by the previous process
                self._count(run, result)
                self._add_stats(run, intent.get("symbol"), intent.get("side"), intent.get("mark"), result)
                continue
            found = await self._lookup(cid)
            if found is _UNKNOWN:
                known[cid] = _Known(OrderResult(cid, OrderStatus.UNKNOWN, reason="lookup timed out"))
                continue
            if found is None:
                continue  # never reached the venue: the loop sends it under the same id
            assert isinstance(found, OrderResult)
            run.sent += 1
            symbol = str(intent.get("symbol"))
            side = int(intent.get("side") or 0)
            mark = intent.get("mark")
            pos = self._position(a, symbol)
            self._record(run, found, symbol, side, float(intent.get("qty") or 0), pos, mark, apply=apply_found_fills)
            known[cid] = _Known(found, booked=True)
        if isinstance(raw, dict):
            chains = {s.cid for s in self.steps(plan)}
            chains |= {f"{plan.action_id}-x{m}" for m in range(1, len(plan.orders) + 1)}
            strays = sorted(c for c in journaled if c not in chains and re.sub(r"r\d+$", "", c) not in chains)
            if strays:
                self._note(run, f"journaled orders outside the plan's current order ids: {', '.join(strays)}")
            await self._loop(run, None, known, journaled)
        else:
            self._note(run, "no plan recorded: looked up the journaled orders only")
            run.unfinished_steps += 1
        self._note(run, "resumed after a restart")
        return self._finish(run)

    def steps(self, plan: Plan) -> list[_Step]:
        """The plan's orders as sent: each split into parts under the own-order notional cap."""
        out: list[_Step] = []
        for o in plan.orders:
            base = f"{plan.action_id}-{o.n}"
            parts = max(1, math.ceil(o.notional / self.limits.max_order_notional - 1e-9))
            if parts == 1:
                out.append(_Step(base, o, o.qty, True))
                continue
            i = self.book.symbol_index.get(o.symbol)
            lot = self.book.instruments[i].lot_size if i is not None else 0.0
            unit = o.notional / o.qty if o.qty > 0 else 0.0
            qtys = split_qty(o.qty, parts, lot, unit, 0.0)
            out.extend(_Step(f"{base}s{j}", o, q, j == 1) for j, q in enumerate(qtys, start=1))
        return out

    # ------------------------------------------------------------------ the loop
    async def _loop(
        self,
        run: _Run,
        recovered: Callable[[], bool] | None,
        known: dict[str, _Known],
        journaled: set[str],
        may_send: Callable[[], bool] | None = None,
    ) -> None:
        plan = run.plan
        steps = self.steps(plan)
        if len(steps) > len(plan.orders):
            self._note(run, f"{len(steps) - len(plan.orders)} extra order(s) from splitting at the notional cap")
        deadline = None if plan.deadline_s is None else run.started_at + plan.deadline_s
        immediate = False
        current = steps[0].order.slice if steps else 0
        for idx, step in enumerate(steps):
            o = step.order
            if o.slice != current:
                done = current
                current = o.slice
                if step.first and o.delay_s > 0 and not immediate and step.cid not in known:
                    wait = o.delay_s
                    if deadline is not None and self.clock.now() + wait >= deadline:
                        await self.sleep(max(0.0, deadline - self.clock.now()))
                    else:
                        await self.sleep(wait)
                if plan.recheck and self._recovered(run, recovered):
                    run.recovered_early = True
                    self._note(
                        run,
                        f"recovered after slice {done + 1} of {plan.slices}: {len(steps) - idx} order(s) not needed",
                        decision="recovered",
                    )
                    break
            if deadline is not None and not immediate and self.clock.now() >= deadline:
                immediate = True
                run.deadline_reached = True
                left = sum(1 for s in steps[idx:] if s.cid not in known)
                self._note(
                    run, f"deadline reached at slice {o.slice + 1}: {left} order(s) sent at market now", "deadline"
                )
            if may_send is not None and step.cid not in known and not may_send():
                run.frozen = True
                left = sum(1 for s in steps[idx:] if s.cid not in known)
                self._note(run, f"frozen: prices not OK, {left} order(s) not sent", decision="frozen")
                break
            await self._step(run, step, immediate, known, journaled, carry=plan.kind == "liquidate")
            if run.limited or run.frozen:
                break
        if plan.kind == "liquidate" and not run.limited and not run.frozen:
            await self._sweep(run, known, journaled)

    async def _sweep(self, run: _Run, known: dict[str, _Known], journaled: set[str]) -> None:
        """A liquidation ends flat: whatever the slices left open (IOC remainders, rounding) goes at
        market now, one order per position under the id `f"{action_id}-x{m}"` (m: the position's
        rank in the plan). Positions already escalated after their retries are left to a person."""
        plan = run.plan
        symbols = list(dict.fromkeys(o.symbol for o in plan.orders))
        for m, symbol in enumerate(symbols, start=1):
            pos = self._position(run.a, symbol)
            held = float(self.book.pos_qty[pos]) if pos >= 0 else 0.0
            cid = f"{plan.action_id}-x{m}"
            if (held == 0 or symbol in run.escalated_symbols) and cid not in known:
                continue  # flat, or already escalated to a person after its retries
            i = self.book.symbol_index[symbol]
            mark = float(self.book.mark[i])
            unit = float(self.book.contract_size[i]) * mark
            order = PlannedOrder(
                n=0,
                symbol=symbol,
                position=pos,
                side=-int(np.sign(held)) if held else next(o.side for o in plan.orders if o.symbol == symbol),
                qty=abs(held),
                mark=mark,
                notional=abs(held) * unit,
                est_price=mark,
                est_slippage=0.0,
                est_fee=0.0,
            )
            if held:
                self._note(run, f"sweep: {abs(held):g} {symbol} left after the slices, sent at market", "sweep")
            await self._step(run, _Step(cid, order, abs(held), True), True, known, journaled)
            if run.limited:
                return

    async def _step(
        self,
        run: _Run,
        step: _Step,
        immediate: bool,
        known: dict[str, _Known],
        journaled: set[str],
        carry: bool = False,
    ) -> None:
        """Send one step until filled, retrying the remainder. With `carry`, a remainder the venue
        answered but did not fill (partial, cancelled, rejected) is left to the liquidation's final
        sweep instead of being escalated here."""
        o = step.order
        pos = self._position(run.a, o.symbol)
        lot = self._lot(o.symbol)
        eps = max(lot * 1e-6, step.qty * 1e-9)
        remaining = step.qty
        cid = step.cid
        retry = 0
        attempts = 0
        last = ""
        answered = False  # the last attempt got an answer from the venue
        while True:
            held = abs(float(self.book.pos_qty[pos])) if pos >= 0 else 0.0
            if remaining <= eps or held <= 0:
                return
            qty = _snap(remaining, lot)
            qty = held if held - qty <= eps else min(qty, held)
            entry = known.get(cid)
            if entry is None and attempts >= self.retry.max_attempts:
                break
            if entry is None and attempts > 0:
                await self.sleep(self.retry.delay(attempts + 1))
            attempts += 1
            if entry is not None:
                result = entry.result
                if result.status == OrderStatus.UNKNOWN:
                    run.unknown += 1
                    last = f"{cid}: outcome unknown, not resent"
                    answered = False
                    break
            else:
                order_type, price = self._price(o, immediate, run.a)
                request = OrderRequest(cid, run.account_id, o.symbol, o.side, qty, order_type, price, True)
                if not await self._order_slot(run):
                    run.unfinished_steps += 1
                    return
                if run.may_send is not None and not run.may_send():
                    run.frozen = True
                    run.unfinished_steps += 1
                    self._note(run, f"frozen: prices not OK, {cid} not sent", decision="frozen")
                    return
                if cid not in journaled:
                    mark = float(self.book.mark[self.book.symbol_index[o.symbol]])
                    self.journal.append(
                        "order_intent",
                        run.account_id,
                        run.plan.action_id,
                        client_order_id=cid,
                        n=o.n,
                        symbol=o.symbol,
                        side=o.side,
                        qty=qty,
                        reduce_only=True,
                        order_type=order_type.value,
                        price=price,
                        mark=mark,
                        position=pos,
                        slice=o.slice,
                    )
                    journaled.add(cid)
                got = await self._send(run, request)
                if got is None:  # never reached the venue: resend the same id
                    last = f"{cid}: no answer and unknown to the venue"
                    answered = False
                    continue
                if got is _UNKNOWN:
                    run.unknown += 1
                    last = f"{cid}: no answer and the lookup failed too; not resent"
                    answered = False
                    break
                assert isinstance(got, OrderResult)
                result = got
                mark = float(self.book.mark[self.book.symbol_index[o.symbol]])
                self._record(run, result, o.symbol, o.side, qty, pos, mark, apply=True)
            answered = True
            remaining -= result.filled_qty
            if result.status == OrderStatus.OPEN:
                return  # a resting stop: placed as planned
            if remaining <= eps:
                return
            if result.status == OrderStatus.REJECTED:
                last = f"{cid} rejected: {result.reason}"
            elif result.status in (OrderStatus.PARTIAL, OrderStatus.CANCELLED):
                last = f"{cid} {result.status.value}: {result.reason}"
            retry += 1
            cid = f"{step.cid}r{retry}"
        if carry and answered:
            self._note(run, f"{remaining:g} {o.symbol} of order {step.cid} left to the final sweep ({last})")
            return
        run.escalated = True
        run.escalated_symbols.add(o.symbol)
        run.unfinished_steps += 1
        self._note(
            run,
            f"escalated: {remaining:g} {o.symbol} of order {step.cid} unfilled after {attempts} attempt(s) ({last})",
            decision="escalate",
        )

    async def _send(self, run: _Run, request: OrderRequest) -> OrderResult | object | None:
        """Send once; on a timeout or an UNKNOWN answer, look the id up. None: the venue never saw
        it; _UNKNOWN: the lookup failed as well."""
        run.sent += 1
        try:
            result = await self.broker.send(request)
        except BrokerTimeout as exc:
            self.journal.append(
                "decision",
                run.account_id,
                run.plan.action_id,
                action="lookup",
                client_order_id=request.client_order_id,
                reason=f"timeout: {exc}",
            )
            return await self._lookup(request.client_order_id)
        if result.status == OrderStatus.UNKNOWN:
            return await self._lookup(request.client_order_id)
        return result

    async def _lookup(self, cid: str) -> OrderResult | object | None:
        for attempt in range(1, self.retry.max_attempts + 1):
            if attempt > 1:
                await self.sleep(self.retry.delay(attempt))
            try:
                found = await self.broker.lookup(cid)
            except BrokerTimeout:
                continue
            if found is not None and found.status == OrderStatus.UNKNOWN:
                continue
            return found
        return _UNKNOWN

    # ------------------------------------------------------------------ booking
    def _record(
        self,
        run: _Run,
        result: OrderResult,
        symbol: str,
        side: int,
        qty: float,
        pos: int,
        mark: float | None,
        apply: bool,
    ) -> None:
        aid = run.plan.action_id
        fills = list(result.fills)
        if not fills and result.filled_qty > 0 and result.avg_price:
            fills = [(result.filled_qty, result.avg_price)]
        self.journal.append(
            "order",
            run.account_id,
            aid,
            client_order_id=result.client_order_id,
            symbol=symbol,
            status=result.status.value,
            filled_qty=result.filled_qty,
            avg_price=result.avg_price,
            fee=result.fee,
            side=side,
            qty=qty,
            reduce_only=True,
            reason=result.reason,
            venue_order_id=result.venue_order_id,
            fills=[[q, p] for q, p in fills],
        )
        self._count(run, result)
        total = sum(q * p for q, p in fills)
        for q, p in fills:
            fee = result.fee * (q * p / total) if total > 0 else 0.0
            booked = False
            if apply:
                try:
                    if pos < 0:
                        raise InputError(f"no {symbol} position in {run.account_id}")
                    self.book.apply_fill(pos, side * q, p, fee)
                    booked = True
                except InputError as exc:
                    run.escalated = True
                    self._note(run, f"fill of {q:g} {symbol} @ {p:g} not booked: {exc}", decision="escalate")
            self.journal.append(
                "fill",
                run.account_id,
                aid,
                client_order_id=result.client_order_id,
                symbol=symbol,
                qty=side * q,
                price=p,
                fee=fee,
                position=pos,
                booked=booked,
            )
        self._add_stats(run, symbol, side, mark, result, fills)

    @staticmethod
    def _count(run: _Run, result: OrderResult) -> None:
        if result.status == OrderStatus.FILLED:
            run.filled += 1
        elif result.status == OrderStatus.PARTIAL:
            run.partial += 1
        elif result.status == OrderStatus.REJECTED:
            run.rejected += 1

    def _add_stats(
        self,
        run: _Run,
        symbol: Any,
        side: Any,
        mark: Any,
        result: OrderResult,
        fills: list[tuple[float, float]] | None = None,
    ) -> None:
        if not isinstance(symbol, str) or symbol not in self.book.symbol_index:
            return
        fills = list(result.fills) if fills is None else fills
        if not fills:
            return
        i = self.book.symbol_index[symbol]
        cs = float(self.book.contract_size[i])
        m = float(mark) if isinstance(mark, int | float) and math.isfinite(mark) else float(self.book.mark[i])
        s = run.stats.setdefault(symbol, _SymbolStats())
        sgn = int(side) if side in (1, -1) else 0
        for q, p in fills:
            s.qty += q
            s.notional += q * cs * p
            s.mark_notional += q * cs * m
            s.slippage += sgn * (p - m) * q * cs
        s.fees += result.fee

    # ------------------------------------------------------------------ limits
    def _liquidation_slot(self) -> bool:
        now = self.clock.now()
        dq = self._liquidation_times
        while dq and now - dq[0] >= 60.0:
            dq.popleft()
        if len(dq) >= self.limits.liquidations_per_minute:
            return False
        dq.append(now)
        return True

    async def _order_slot(self, run: _Run) -> bool:
        dq = self._order_times.setdefault(run.account_id, deque())
        for waited in (False, True):
            now = self.clock.now()
            while dq and now - dq[0] >= 60.0:
                dq.popleft()
            if len(dq) < self.limits.orders_per_minute:
                dq.append(now)
                return True
            wait = dq[0] + 60.0 - now
            if waited or wait > self.limits.max_wait_s:
                break
            await self.sleep(wait)
        run.limited = True
        self._note(
            run,
            f"limited: {self.limits.orders_per_minute} orders per minute for {run.account_id} reached; "
            "the rest was not sent",
            decision="limited",
        )
        return False

    # ------------------------------------------------------------------ helpers
    def _new_run(self, plan: Plan, a: int, resumed: bool) -> _Run:
        return _Run(
            plan=plan,
            a=a,
            account_id=self.book.info[a].id,
            started_at=self.clock.now(),
            equity_before=float(self.book.equity[a]),
            ratio_before=float(self.book.ratio[a]),
            resumed=resumed,
        )

    def _account(self, plan: Plan) -> int:
        a = self.book.account_index.get(plan.account_id)
        if a is None:
            raise InputError(f"plan {plan.action_id}: unknown account {plan.account_id!r}")
        return a

    @staticmethod
    def _stub_plan(action_id: str, unfinished: dict[str, Any]) -> Plan:
        nan = math.nan
        return Plan(action_id, -1, str(unfinished.get("account")), "unknown", "", "", [], nan, nan, nan, nan, nan, nan)

    def _position(self, a: int, symbol: str) -> int:
        i = self.book.symbol_index.get(symbol)
        if i is None:
            return -1
        return int(self.book.find_positions(np.array([a]), np.array([i]))[0])

    def _lot(self, symbol: str) -> float:
        i = self.book.symbol_index.get(symbol)
        return float(self.book.instruments[i].lot_size) if i is not None else 0.0

    def _price(self, o: PlannedOrder, immediate: bool, a: int) -> tuple[OrderType, float | None]:
        """Order type and price to send now: limits are repriced at the current mark."""
        if immediate:
            return OrderType.MARKET, None
        order_type = OrderType(o.order_type)
        if order_type == OrderType.STOP:
            return order_type, o.stop_price
        if order_type in (OrderType.LIMIT, OrderType.IOC):
            mark = float(self.book.mark[self.book.symbol_index[o.symbol]])
            if o.limit_offset is not None and math.isfinite(mark):
                return order_type, mark * (1 + o.side * o.limit_offset)
            return order_type, o.limit_price
        return order_type, None

    def _recovered(self, run: _Run, recovered: Callable[[], bool] | None) -> bool:
        if recovered is not None:
            return bool(recovered())
        target = run.plan.target
        return target is not None and float(self.book.ratio[run.a]) >= target

    def _note(self, run: _Run, text: str, decision: str | None = None) -> None:
        run.notes.append(text)
        if decision is not None:
            self.journal.append(
                "decision", run.account_id, run.plan.action_id, action=decision, plan_kind=run.plan.kind, note=text
            )

    def _finish(self, run: _Run) -> Outcome:
        book, a, plan = self.book, run.a, run.plan
        book.revalue_accounts(np.array([a]))
        if plan.kind == "liquidate" and not run.limited:
            left = [
                book.instruments[book.pos_instrument[p]].symbol
                for p in book.account_positions(a).tolist()
                if book.pos_qty[p] != 0
                and book.instruments[book.pos_instrument[p]].symbol in {o.symbol for o in plan.orders}
            ]
            if left:
                run.unfinished_steps += 1
                self._note(run, f"not flat: {', '.join(left)} still open")
        ratio_after = float(book.ratio[a])
        if plan.kind == "deleverage" and plan.target is not None and ratio_after < plan.target:
            run.notes.append(f"ratio {ratio_after:.4f} below the target {plan.target:g} after execution")
        complete = (run.recovered_early or run.unfinished_steps == 0) and not (
            run.limited or run.frozen or run.escalated or run.unknown
        )
        closed: dict[str, dict[str, float | None]] = {}
        slippage = fees = mark_notional = 0.0
        for sym, s in run.stats.items():
            cs = float(book.contract_size[book.symbol_index[sym]])
            closed[sym] = {
                "qty": s.qty,
                "avg_price": s.notional / (s.qty * cs) if s.qty > 0 else None,
                "notional": s.notional,
                "slippage": s.slippage,
                "slippage_bps": s.slippage / s.mark_notional * 1e4 if s.mark_notional > 0 else None,
                "fees": s.fees,
            }
            slippage += s.slippage
            fees += s.fees
            mark_notional += s.mark_notional
        outcome = Outcome(
            action_id=plan.action_id,
            account=run.account_id,
            kind=plan.kind,
            closed=closed,
            slippage=slippage,
            slippage_bps=slippage / mark_notional * 1e4 if mark_notional > 0 else None,
            fees=fees,
            equity_before=run.equity_before,
            equity_after=float(book.equity[a]),
            ratio_before=run.ratio_before,
            ratio_after=ratio_after,
            orders_sent=run.sent,
            orders_filled=run.filled,
            orders_partial=run.partial,
            orders_rejected=run.rejected,
            orders_unknown=run.unknown,
            complete=complete,
            escalated=run.escalated or run.unknown > 0,
            limited=run.limited,
            frozen=run.frozen,
            recovered_early=run.recovered_early,
            deadline_reached=run.deadline_reached,
            resumed=run.resumed,
            target=plan.target,
            notes=run.notes,
        )
        self.journal.append("outcome", run.account_id, plan.action_id, **outcome.to_dict())
        self.journal.append(
            "action_end", run.account_id, plan.action_id, complete=outcome.complete, escalated=outcome.escalated
        )
        return outcome


def _snap(qty: float, lot: float) -> float:
    """qty with float noise around a lot multiple removed (0.30000000000000004 -> 0.3)."""
    if lot <= 0:
        return qty
    k = round(qty / lot)
    return k * lot if abs(qty / lot - k) < 1e-6 else qty


def _result_from_record(cid: str, record: dict[str, Any], fill_records: list[dict[str, Any]]) -> OrderResult:
    """An OrderResult rebuilt from a journaled `order` record (and its `fill` records)."""
    try:
        status = OrderStatus(record.get("status"))
    except ValueError:
        status = OrderStatus.UNKNOWN
    fills = record.get("fills")
    if not isinstance(fills, list):
        fills = [[abs(float(f.get("qty", 0))), float(f.get("price", 0))] for f in fill_records]
    return OrderResult(
        client_order_id=cid,
        status=status,
        filled_qty=float(record.get("filled_qty") or 0.0),
        avg_price=record.get("avg_price"),
        fee=float(record.get("fee") or 0.0),
        reason=str(record.get("reason") or ""),
        venue_order_id=record.get("venue_order_id"),
        fills=[(float(q), float(p)) for q, p in fills],
    )
