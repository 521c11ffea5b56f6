"""What the guard does about each account: the ladder's decisions turned into actions, and
the operator commands that go through the very same path.

WARNING      alert; assessment record; the dry-run cheapest step back to SAFE
CRITICAL     cancel exposure-increasing orders; REDUCING; deleverage rounds toward the
             target, separated by a cooldown, up to max_rounds, then escalate
LIQUIDATION  force liquidation; HALTED until an operator resets it; recovery record
SAFE again   recovery alert (alerts re-arm only after recovery)

Automatic action is frozen while an account's data is not OK, while an operator holds it,
and for shadow accounts (plans are made, journaled and alerted; nothing is sent).
Every intent is journaled before it is acted on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.actions.deleverage import cheapest_step, plan_deleverage
from engine.actions.execute import Executor
from engine.actions.liquidate import LiquidationParams, plan_liquidation
from engine.clock import iso
from engine.ladder import (
    REDUCE_BREAKER,
    REDUCE_CRITICAL,
    REDUCE_DRAWDOWN,
    REDUCE_KILL,
    REDUCE_LEVERAGE,
    DataState,
    Transition,
)
from engine.levels import LEVEL_NAMES, Level, Thresholds
from engine.operators import CommandError, Operator, PermissionDenied
from engine.view import CommandResult

if TYPE_CHECKING:
    from engine.actions.deleverage import Plan
    from engine.config import Config
    from engine.guard import Guard

log = logging.getLogger("capguard.protection")


def liquidation_params(cfg: Config) -> LiquidationParams:
    return LiquidationParams(slice_interval_s=cfg.liquidation.slice_interval, deadline_s=cfg.liquidation.deadline)


class Protection:
    def __init__(self, guard: Guard) -> None:
        self.g = guard
        cfg = guard.config
        self.executor = Executor(guard.book, guard.broker, guard.journal, guard.clock, sleep=guard.clock.sleep)
        self.active: dict[int, asyncio.Task[Any]] = {}
        n = guard.book.n_accounts
        self.rounds = np.zeros(n, dtype=np.int64)
        self.next_round = np.full(n, -np.inf)
        self.escalated = np.zeros(n, dtype=bool)
        self.alert_armed = np.ones(n, dtype=bool)  # re-armed only by a recovery to SAFE
        self.shadow = np.zeros(n, dtype=bool)
        if cfg.guard.protection_mode == "shadow":
            self.shadow[:] = True
        for acct in cfg.guard.shadow_accounts:
            if acct in guard.book.account_index:
                self.shadow[guard.book.account_index[acct]] = True
        self.overrides: dict[str, Thresholds] = dict(cfg.overrides)
        self.breaker_tripped = False
        self.kill_switch = False
        self._breaches: deque[float] = deque()
        self.schedule: dict[str, dict[str, Any]] = {}
        self.acknowledged: set[str] = set()
        self._schedule_seq = 0

    def on_book_swapped(self, old_n: int) -> None:
        """The guard swapped in a new book (accounts appended, see Guard.sync_accounts): point the
        executor at it and give the new accounts their per-account state. The ladder must have
        grown already (the circuit breaker and kill switch reach the new accounts too)."""
        g = self.g
        self.executor.book = g.book
        n = g.book.n_accounts
        extra = n - old_n
        if extra <= 0:
            return
        shadow = np.full(extra, g.config.guard.protection_mode == "shadow")
        listed = set(g.config.guard.shadow_accounts)
        shadow |= np.array([i.id in listed for i in g.book.info[old_n:]], dtype=bool)
        self.rounds = np.concatenate([self.rounds, np.zeros(extra, dtype=self.rounds.dtype)])
        self.next_round = np.concatenate([self.next_round, np.full(extra, -np.inf)])
        self.escalated = np.concatenate([self.escalated, np.zeros(extra, dtype=bool)])
        self.alert_armed = np.concatenate([self.alert_armed, np.ones(extra, dtype=bool)])
        self.shadow = np.concatenate([self.shadow, shadow])
        if self.breaker_tripped:
            g.ladder.reduce_flags[old_n:] |= REDUCE_BREAKER
        if self.kill_switch:
            g.ladder.reduce_flags[old_n:] |= REDUCE_KILL

    # ------------------------------------------------------------------ helpers
    def _id(self, a: int) -> str:
        return self.g.book.info[a].id

    def _publish(self, type_: str, **fields: Any) -> None:
        self.g.hub.publish({"type": type_, "ts": iso(self.g.clock.now()), **fields})

    def alert(self, category: str, severity: str, a: int | None, message: str, **fields: Any) -> str:
        """Journal an alert, then publish it (the notifier and every viewer take it from the hub).

        Categories: approaching, warning, critical, liquidation, recovery (risk levels);
        deleverage, liquidate, manual, limit, system (actions). Severities: info, warning,
        critical, emergency. Returns the alert id (`al<journal seq>`).
        """
        account = self._id(a) if a is not None else None
        alert_id = f"al{self.g.journal.head()[0] + 1}"
        self.g.journal.append(
            "alert", account, alert_id=alert_id, category=category, severity=severity, message=message, **fields
        )
        self._publish(
            "alert", alert_id=alert_id, account=account, category=category, severity=severity, message=message, **fields
        )
        log.info("alert %s %s %s", severity, account or "book", message)
        return alert_id

    def threshold_overrides(self) -> dict[int, Thresholds]:
        idx = self.g.book.account_index
        return {idx[k]: v for k, v in self.overrides.items() if k in idx}

    def _target(self, a: int) -> float:
        return float(self.g.book.warning[a]) + self.g.config.deleverage.target_buffer

    def _can_act(self, a: int, now: float) -> bool:
        lad = self.g.ladder
        return lad.data_state[a] == DataState.OK and not lad.held_until[a] > now and a not in self.active

    # ------------------------------------------------------------------ ladder events
    def on_transition(self, t: Transition, now: float) -> None:
        a, g = t.account, self.g
        acct = self._id(a)
        g.journal.append("transition", acct, **t.fields())
        self._publish("transition", account=acct, **t.fields())
        if t.to_level > t.from_level and t.to_level >= Level.CRITICAL:
            self._note_breach(now)
        if t.to_level == Level.WARNING and t.from_level == Level.SAFE:
            if self.alert_armed[a]:
                self.alert("warning", "warning", a, f"{acct} margin ratio {t.ratio:.3f}: WARNING", ratio=t.ratio)
            self._assess(a)
        elif t.to_level == Level.CRITICAL and t.to_level > t.from_level:
            self.alert("critical", "critical", a, f"{acct} margin ratio {t.ratio:.3f}: CRITICAL", ratio=t.ratio)
            g.ladder.reduce_flags[a] |= REDUCE_CRITICAL
            self.rounds[a] = 0
            self.escalated[a] = False
            self._cancel_increasing_orders(a)
        elif t.to_level == Level.LIQUIDATION:
            self.alert("liquidation", "emergency", a, f"{acct} margin ratio {t.ratio:.3f}: LIQUIDATION", ratio=t.ratio)
            g.ladder.halted[a] = True
            self._cancel_increasing_orders(a)
        if t.to_level < Level.CRITICAL:
            g.ladder.reduce_flags[a] &= ~REDUCE_CRITICAL
        if t.to_level == Level.SAFE:
            self.alert("recovery", "info", a, f"{acct} back to SAFE at ratio {t.ratio:.3f}", ratio=t.ratio)
            self.alert_armed[a] = True
        elif t.to_level > t.from_level:
            self.alert_armed[a] = False

    def on_data_state(self, a: int, state: DataState, inst_state: np.ndarray, now: float) -> None:
        book = self.g.book
        pos = book.account_positions(a)
        bad = sorted({book.instruments[i].symbol for i in book.pos_instrument[pos] if inst_state[i] != 0})
        acct = self._id(a)
        self.g.journal.append("data_state", acct, data_state=state.name, instruments=bad)
        self._publish("data", account=acct, data_state=state.name, instruments=bad)
        if state != DataState.OK and self.g.ladder.level[a] >= Level.WARNING:
            # Never act on a bad price: automatic action is frozen, so a person must look.
            self.alert(
                "system",
                "critical",
                a,
                f"{acct} at {LEVEL_NAMES[self.g.ladder.level[a]]} with {state.name} prices ({', '.join(bad)}): "
                "automatic action frozen",
            )

    def _note_breach(self, now: float) -> None:
        cb = self.g.config.circuit_breaker
        self._breaches.append(now)
        while self._breaches and now - self._breaches[0] > cb.window:
            self._breaches.popleft()
        n = len(self._breaches)
        if cb.enabled and not self.breaker_tripped and (n >= cb.count or n >= cb.share * self.g.book.n_accounts):
            self.breaker_tripped = True
            self.g.ladder.reduce_flags[:] |= REDUCE_BREAKER
            self.g.journal.append("system", event="circuit_breaker", breaches=n, window=cb.window)
            self.alert("system", "emergency", None, f"circuit breaker: {n} accounts breached within {cb.window:g}s")

    def check_limits(self, now: float) -> None:
        lim, g = self.g.config.limits, self.g
        book = g.book
        with np.errstate(divide="ignore", invalid="ignore"):
            lev = np.where(book.equity > 0, book.acct_notional / book.equity, np.inf)
            dd = np.where(g.equity_peak > 0, 1.0 - book.equity / g.equity_peak, 0.0)
        for flag, breached, what in (
            (REDUCE_LEVERAGE, lev > (lim.max_leverage or np.inf), "max leverage"),
            (REDUCE_DRAWDOWN, dd > (lim.max_drawdown or np.inf), "max drawdown"),
        ):
            has = (g.ladder.reduce_flags & flag) != 0
            for a in np.flatnonzero(breached & ~has).tolist():
                g.ladder.reduce_flags[a] |= flag
                self.alert("limit", "warning", a, f"{self._id(a)} breached {what}: REDUCING", leverage=float(lev[a]))
            g.ladder.reduce_flags[~breached & has] &= ~flag

    def _assess(self, a: int) -> None:
        """WARNING: who contributes, how far each position is from liquidation, and the cheapest way back."""
        book = self.g.book
        pos = book.account_positions(a)
        liq = book.liquidation_prices(pos)
        mark = book.mark[book.pos_instrument[pos]]
        top = pos[np.argsort(-book.maintenance_margin[pos])][:5]
        contributors = [
            {
                "symbol": book.instruments[book.pos_instrument[p]].symbol,
                "maintenance_margin": float(book.maintenance_margin[p]),
            }
            for p in top.tolist()
        ]
        distances = {
            book.instruments[book.pos_instrument[p]].symbol: (float(abs(m - lp) / m * 100) if np.isfinite(lp) else None)
            for p, lp, m in zip(pos.tolist(), liq.tolist(), mark.tolist(), strict=True)
        }
        step = cheapest_step(book, a, self.g.config.thresholds.warning + self.g.config.deleverage.target_buffer)
        self.g.journal.append(
            "assessment",
            self._id(a),
            contributors=contributors,
            liquidation_distance_pct=distances,
            cheapest_step=step.to_dict() if step else None,
        )

    def _cancel_increasing_orders(self, a: int) -> None:
        """CRITICAL and worse: cancel the account's exposure-increasing open orders first."""
        book = self.g.book
        mask = book.exposure_increasing_orders(a)
        if not mask.any():
            return
        acct = self._id(a)
        shadow = bool(self.shadow[a])
        self.g.journal.append("decision", acct, action="cancel_orders", orders=int(mask.sum()), shadow=shadow)
        if shadow:
            return

        async def cancel() -> None:
            ids = await self.g.broker.cancel_orders(acct, exposure_increasing_only=True)
            book = self.g.book  # the guard may have swapped in a new book meanwhile (accounts keep their index)
            book.remove_orders(book.exposure_increasing_orders(a))
            self.g.journal.append("order", acct, action="cancel_orders", cancelled=ids)
            self._publish("action", account=acct, stage="orders_cancelled", cancelled=ids)

        asyncio.get_running_loop().create_task(cancel())

    # ------------------------------------------------------------------ automatic actions
    def maybe_act(self, now: float) -> None:
        """Start the automatic actions that are due (called once per evaluation)."""
        g, lad = self.g, self.g.ladder
        cfg = g.config
        for a in np.flatnonzero(lad.level == Level.LIQUIDATION).tolist():
            if self._can_act(a, now) and self._has_exposure(a) and now >= self.next_round[a]:
                self.next_round[a] = now + cfg.liquidation.retry_after
                plan = plan_liquidation(
                    g.book,
                    a,
                    mode=cfg.liquidation.mode,
                    priority=cfg.liquidation.priority,
                    params=liquidation_params(cfg),
                )
                self._start(a, plan, "automatic liquidation", now)
        for a in np.flatnonzero(lad.level == Level.CRITICAL).tolist():
            if not (self._can_act(a, now) and self._has_exposure(a) and now >= self.next_round[a]):
                continue
            if self.rounds[a] >= cfg.deleverage.max_rounds:
                if not self.escalated[a]:
                    self.escalated[a] = True
                    self.alert(
                        "deleverage",
                        "emergency",
                        a,
                        f"{self._id(a)} still CRITICAL after {self.rounds[a]} deleverage rounds: escalated",
                    )
                continue
            self.rounds[a] += 1
            self.next_round[a] = now + cfg.deleverage.cooldown
            plan = plan_deleverage(
                g.book, a, target_ratio=self._target(a), strategy=cfg.deleverage.strategy, method=cfg.deleverage.method
            )
            self._start(a, plan, f"automatic deleverage round {self.rounds[a]}", now)
        self._run_schedule(now)

    def _has_exposure(self, a: int) -> bool:
        return bool(np.any(self.g.book.pos_qty[self.g.book.account_positions(a)] != 0))

    def _start(self, a: int, plan: Plan, reason: str, now: float, operator: Operator | None = None) -> str:
        acct = self._id(a)
        who = operator.fields() if operator else {"operator": "guard"}
        # The action id is the decision record's own sequence number: unique in this journal,
        # and every client order id derives from it.
        plan.action_id = f"cg{self.g.journal.head()[0] + 1}"
        self.g.journal.append(
            "decision", acct, plan.action_id, action=plan.kind, reason=reason, ratio=float(self.g.book.ratio[a]), **who
        )
        if not plan.orders:
            self.g.journal.append("plan", acct, plan.action_id, note="nothing to send", plan=plan.to_dict())
            return plan.action_id
        if self.shadow[a]:
            self.g.journal.append("plan", acct, plan.action_id, shadow=True, plan=plan.to_dict())
            self.alert(plan.kind, "warning", a, f"shadow: would {plan.kind} {acct} ({len(plan.orders)} orders)")
            return plan.action_id
        self.alert(plan.kind, "critical", a, f"{reason}: {acct}, {len(plan.orders)} orders", action_id=plan.action_id)
        target = plan.target if plan.target is not None else np.inf
        self._publish("action", account=acct, action_id=plan.action_id, stage="started", plan_kind=plan.kind)

        async def run() -> None:
            try:
                outcome = await self.executor.execute(
                    plan,
                    recovered=lambda: self.g.book.ratio[a] >= target,
                    may_send=lambda: self.g.ladder.data_state[a] == DataState.OK,
                )
                result = {k: v for k, v in outcome.to_dict().items() if k not in ("account", "action_id")}
                self._publish("action", account=acct, action_id=plan.action_id, stage="finished", outcome=result)
                if plan.kind == "liquidate":
                    self.g.journal.append("recovery", acct, plan.action_id, **self._recovery_record(a, outcome))
            except Exception as exc:  # an action must never take the guard down with it
                log.exception("action %s failed", plan.action_id)
                self.alert("system", "emergency", a, f"action {plan.action_id} failed: {exc}")
            finally:
                self.active.pop(a, None)

        self.active[a] = asyncio.get_running_loop().create_task(run())
        return plan.action_id

    def _recovery_record(self, a: int, outcome: Any) -> dict[str, Any]:
        o = outcome.to_dict()
        return {
            "closed": o.get("closed"),
            "cost": o.get("fees", 0.0) + o.get("slippage", 0.0),
            "equity_left": float(self.g.book.equity[a]),
            "before_re_enabling": "review the cause, then reset the account (risk role) with a reason",
        }

    async def reconcile(self) -> None:
        """On start: finish what a previous run began, without repeating any order.

        The venue's own record of fills rebuilds the positions first (a restarted process has
        only the configured book); then each unfinished action is resumed as an action task
        (so the loop is not held up): intents without a result are looked up at the venue, and
        only orders that never arrived are sent.
        """
        unfinished = self.g.journal.unfinished_actions()
        if not unfinished:
            return
        # The simulated venue's record rebuilds the positions; a real venue's account source
        # already reports them.
        replay = getattr(self.g.broker, "replay_into", None)
        replayed = replay(self.g.book) if replay is not None else 0
        self.g.journal.append("system", event="reconcile", actions=len(unfinished), venue_fills_replayed=replayed)
        loop = asyncio.get_running_loop()
        for item in unfinished:
            a = self.g.book.account_index.get(item.get("account") or "")
            if a is not None and item.get("plan", {}).get("kind") == "liquidate":
                self.g.ladder.halted[a] = True

            async def resume(item: dict[str, Any] = item, a: int | None = a) -> None:
                try:
                    outcome = await self.executor.resume(item, apply_found_fills=False)
                    result = {k: v for k, v in outcome.to_dict().items() if k not in ("account", "action_id")}
                    self._publish(
                        "action",
                        account=item.get("account"),
                        action_id=item["action_id"],
                        stage="resumed",
                        outcome=result,
                    )
                except Exception as exc:
                    log.exception("resuming %s failed", item["action_id"])
                    self.alert("system", "emergency", a, f"resuming action {item['action_id']} failed: {exc}")
                finally:
                    if a is not None:
                        self.active.pop(a, None)

            task = loop.create_task(resume())
            if a is not None:
                self.active[a] = task

    async def drain(self, grace: float) -> None:
        tasks = list(self.active.values())
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=grace)
        for t in pending:
            t.cancel()
            self.g.journal.append("system", event="action_interrupted_at_stop")

    def _run_schedule(self, now: float) -> None:
        for sid, item in list(self.schedule.items()):
            if item["at"] <= now:
                del self.schedule[sid]
                self.g.journal.append("schedule", item["account"], event="due", schedule_id=sid)
                asyncio.get_running_loop().create_task(
                    self.command(item["action"], item["operator"], account=item["account"], **item["params"])
                )

    # ------------------------------------------------------------------ operator commands
    async def command(self, name: str, operator: Operator, **params: Any) -> CommandResult:
        from engine.commands import run_command

        try:
            return await run_command(self, name, operator, **params)
        except (PermissionDenied, CommandError, KeyError) as exc:
            msg = str(exc.args[0]) if isinstance(exc, KeyError) else str(exc)
            self.g.journal.append("operator", params.get("account"), command=name, refused=msg, **operator.fields())
            return CommandResult(False, msg)
