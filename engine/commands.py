"""Operator commands. A console key and an API call land here alike: the same role checks,
the same journal record (written first), the same path to the broker.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from engine.actions.deleverage import plan_deleverage
from engine.actions.liquidate import plan_liquidation
from engine.clock import iso
from engine.ladder import REDUCE_BREAKER, REDUCE_KILL, DataState
from engine.levels import Thresholds
from engine.operators import CommandError, Operator, check
from engine.protection import liquidation_params
from engine.view import CommandResult

if TYPE_CHECKING:
    from engine.protection import Protection

STRATEGIES = ("proportional", "risk", "time", "market")
METHODS = ("market", "limit", "stop", "twap")


def _reason(params: dict[str, Any]) -> str:
    reason = str(params.get("reason") or "").strip()
    if not reason:
        raise CommandError("a reason is required")
    return reason


def _account(p: Protection, params: dict[str, Any]) -> int:
    if "account" not in params:
        raise CommandError("account is required")
    return p.g.account_index(str(params["account"]))


def _positive(params: dict[str, Any], key: str) -> float | None:
    value = params.get(key)
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise CommandError(f"{key} must be a number, got {value!r}") from None
    if not (math.isfinite(x) and x > 0):
        raise CommandError(f"{key} must be a positive number, got {value!r}")
    return x


def _data_ok(p: Protection, a: int) -> None:
    state = DataState(int(p.g.ladder.data_state[a]))
    if state != DataState.OK:
        raise CommandError(f"{p._id(a)} has {state.name} prices: no order is sent on a bad price")


def _same_plan(book: Any, plan: Any, confirm: list[dict[str, Any]]) -> bool:
    """The recomputed plan is the one the operator saw: same orders, each within one lot
    (or 1%) of the quantity shown. Anything more and the plan is shown again."""
    if [o["symbol"] for o in confirm] != [o.symbol for o in plan.orders]:
        return False
    for shown, now in zip(confirm, plan.orders, strict=True):
        lot = book.instruments[book.symbol_index[now.symbol]].lot_size
        if abs(float(shown["qty"]) - now.qty) > max(lot, 0.01 * now.qty) + 1e-12:
            return False
    return True


async def run_command(p: Protection, name: str, op: Operator, **params: Any) -> CommandResult:
    handler = HANDLERS.get(name)
    if handler is None:
        raise CommandError(f"unknown command {name!r} (known: {', '.join(sorted(HANDLERS))})")
    return await handler(p, op, params)


async def _deleverage(p: Protection, op: Operator, params: dict[str, Any]) -> CommandResult:
    a = _account(p, params)
    dry = bool(params.get("dry_run", False))
    check(op, "dry_run" if dry else "deleverage")
    cfg = p.g.config.deleverage
    strategy = params.get("strategy") or cfg.strategy
    method = params.get("method") or cfg.method
    if strategy not in STRATEGIES:
        raise CommandError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if method not in METHODS:
        raise CommandError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    target, fraction = _positive(params, "target_ratio"), _positive(params, "fraction")
    if target is not None and fraction is not None:
        raise CommandError("give target_ratio or fraction, not both")
    if target is None and fraction is None:
        target = p._target(a)
    if fraction is not None and fraction > 1:
        raise CommandError(f"fraction must be at most 1, got {fraction}")
    plan = plan_deleverage(p.g.book, a, target_ratio=target, fraction=fraction, strategy=strategy, method=method)
    acct = p._id(a)
    if dry:
        p.g.journal.append("plan", acct, dry_run=True, plan=plan.to_dict(), **op.fields())
        return CommandResult(True, f"dry run: {len(plan.orders)} orders", plan=plan.to_dict())
    _data_ok(p, a)
    confirm = params.get("confirm_plan")
    if confirm is not None and not _same_plan(p.g.book, plan, confirm):
        return CommandResult(False, "the plan moved since it was shown: review it again", plan=plan.to_dict())
    p.g.journal.append("operator", acct, command="deleverage", params=_jsonable(params), **op.fields())
    action_id = p._start(a, plan, "manual deleverage", p.g.clock.now(), operator=op)
    return CommandResult(True, f"deleverage {acct}: {len(plan.orders)} orders", action_id, plan.to_dict())


async def _liquidate(p: Protection, op: Operator, params: dict[str, Any]) -> CommandResult:
    check(op, "liquidate")
    a = _account(p, params)
    acct = p._id(a)
    if params.get("confirm") != acct:
        raise CommandError(f"liquidation needs confirm equal to the account id ({acct!r})")
    mode = params.get("mode") or p.g.config.liquidation.mode
    if mode not in ("immediate", "orderly"):
        raise CommandError(f"mode must be immediate or orderly, got {mode!r}")
    _data_ok(p, a)
    p.g.journal.append("operator", acct, command="liquidate", params=_jsonable(params), **op.fields())
    p.g.ladder.halted[a] = True
    plan = plan_liquidation(
        p.g.book, a, mode=mode, priority=p.g.config.liquidation.priority, params=liquidation_params(p.g.config)
    )
    action_id = p._start(a, plan, "manual liquidation", p.g.clock.now(), operator=op)
    return CommandResult(True, f"liquidating {acct} ({mode})", action_id, plan.to_dict())


async def _thresholds(p: Protection, op: Operator, params: dict[str, Any]) -> CommandResult:
    a = _account(p, params)
    acct = p._id(a)
    book = p.g.book
    try:
        new = Thresholds(
            warning=params.get("warning", book.warning[a]),
            critical=params.get("critical", book.critical[a]),
            liquidation=params.get("liquidation", book.liquidation[a]),
        )
    except ValidationError as exc:
        raise CommandError("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None
    floor = 1.0 + p.g.config.dynamic_thresholds.venue_margin
    if new.liquidation < floor:
        raise CommandError(f"liquidation threshold {new.liquidation} is below the venue floor {floor:g}")
    tighten = (
        new.warning >= book.warning[a] and new.critical >= book.critical[a] and new.liquidation >= book.liquidation[a]
    )
    check(op, "tighten_thresholds" if tighten else "loosen_thresholds")
    before = {
        "warning": float(book.warning[a]),
        "critical": float(book.critical[a]),
        "liquidation": float(book.liquidation[a]),
    }
    p.g.journal.append(
        "threshold",
        acct,
        before=before,
        after=new.model_dump(),
        reason=params.get("reason", ""),
        **op.fields(),
    )
    writer = getattr(p.g, "config_writer", None)
    if writer is not None:
        writer.set_value(f"overrides.{acct}", new.model_dump())
    p.overrides[acct] = new
    p.g.refresh_thresholds(p.g.clock.now())
    publish = getattr(p.g, "publish_threshold_change", None)
    if publish is not None:  # out to NATS and the risk center's webhook (never back to its source)
        publish(acct, before, new.model_dump(), op, str(params.get("reason", "")))
    return CommandResult(True, f"{acct} thresholds {new.warning:g} / {new.critical:g} / {new.liquidation:g}")


async def _hold(p: Protection, op: Operator, params: dict[str, Any]) -> CommandResult:
    check(op, "hold")
    a = _account(p, params)
    duration = _positive(params, "duration")
    if duration is None or duration > 24 * 3600:
        raise CommandError("duration must be a positive number of seconds, at most 24 h")
    reason = _reason(params)
    until = p.g.clock.now() + duration
    p.g.journal.append("operator", p._id(a), command="hold", until=iso(until), reason=reason, **op.fields())
    p.g.ladder.held_until[a] = until
    return CommandResult(True, f"automatic action on {p._id(a)} held until {iso(until)}")


async def _resume(p: Protection, op: Operator, params: dict[str, Any]) -> CommandResult:
    check(op, "resume")
    a = _account(p, params)
    p.g.journal.append("operator", p._id(a), command="resume", reason=params.get("reason", ""), **op.fields())
    p.g.ladder.held_until[a] = np.nan
    return CommandResult(True, f"automatic protection of {p._id(a)} resumed")


async def _reset(p: Protection, op: Operator, params: dict[str, Any]) -> CommandResult:
    check(op, "reset")
    a = _account(p, params)
    reason = _reason(params)
    if not p.g.ladder.halted[a]:
        raise CommandError(f"{p._id(a)} is not halted")
    p.g.journal.append("operator", p._id(a), command="reset", reason=reason, **op.fields())
    p.g.ladder.halted[a] = False
    p.rounds[a] = 0
    p.escalated[a] = False
    return CommandResult(True, f"{p._id(a)} reset: trading re-enabled")


async def _schedule(p: Protection, op: Operator, params: dict[str, Any]) -> CommandResult:
    a = _account(p, params)
    action = params.get("action", "deleverage")
    if action not in ("deleverage", "liquidate"):
        raise CommandError(f"action must be deleverage or liquidate, got {action!r}")
    check(op, f"schedule_{action}")
    at = params.get("at")
    if isinstance(at, str):
        try:
            at = datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise CommandError(f"at must be an ISO-8601 time, got {params['at']!r}") from None
    elif at is None and params.get("in_seconds") is not None:
        at = p.g.clock.now() + (_positive(params, "in_seconds") or 0.0)
    if not isinstance(at, int | float) or at < p.g.clock.now():
        raise CommandError("at must be a time in the future")
    inner = {k: v for k, v in (params.get("params") or {}).items() if k != "account"}
    p._schedule_seq += 1
    sid = f"s{p._schedule_seq}"
    p.schedule[sid] = {"account": p._id(a), "action": action, "at": float(at), "operator": op, "params": inner}
    p.g.journal.append(
        "schedule", p._id(a), event="scheduled", schedule_id=sid, action=action, at=iso(at), **op.fields()
    )
    return CommandResult(True, f"{action} of {p._id(a)} scheduled for {iso(at)} as {sid}", sid)


async def _cancel_schedule(p: Protection, op: Operator, params: dict[str, Any]) -> CommandResult:
    check(op, "cancel_schedule")
    sid = str(params.get("schedule_id", ""))
    item = p.schedule.pop(sid, None)
    if item is None:
        raise CommandError(f"no scheduled action {sid!r}")
    p.g.journal.append("schedule", item["account"], event="cancelled", schedule_id=sid, **op.fields())
    return CommandResult(True, f"scheduled {item['action']} {sid} cancelled")


async def _kill_switch(p: Protection, op: Operator, params: dict[str, Any]) -> CommandResult:
    check(op, "kill_switch")
    engage = bool(params.get("engage", True))
    reason = _reason(params)
    p.g.journal.append("operator", None, command="kill_switch", engage=engage, reason=reason, **op.fields())
    lad = p.g.ladder
    if engage:
        p.kill_switch = True
        lad.reduce_flags[:] |= REDUCE_KILL
        for a in np.unique(p.g.book.ord_account).tolist():
            p._cancel_increasing_orders(a)
        p.alert("system", "emergency", None, f"kill switch engaged by {op.name}: {reason}")
        return CommandResult(True, "kill switch engaged: every account REDUCING, working orders cancelled")
    p.kill_switch = False
    lad.reduce_flags[:] &= ~REDUCE_KILL
    p.alert("system", "warning", None, f"kill switch released by {op.name}: {reason}")
    return CommandResult(True, "kill switch released")


async def _release_breaker(p: Protection, op: Operator, params: dict[str, Any]) -> CommandResult:
    check(op, "release_breaker")
    reason = _reason(params)
    if not p.breaker_tripped:
        raise CommandError("the circuit breaker is not tripped")
    p.g.journal.append("operator", None, command="release_breaker", reason=reason, **op.fields())
    p.breaker_tripped = False
    p._breaches.clear()
    p.g.ladder.reduce_flags[:] &= ~REDUCE_BREAKER
    p.alert("system", "warning", None, f"circuit breaker released by {op.name}: {reason}")
    return CommandResult(True, "circuit breaker released")


async def _acknowledge(p: Protection, op: Operator, params: dict[str, Any]) -> CommandResult:
    """Acknowledge an alert: its escalation stops (the notifier listens for this record)."""
    check(op, "acknowledge")
    alert_id = str(params.get("alert_id", ""))
    found = [r for r in p.g.journal.records(kind="alert") if r.get("alert_id") == alert_id]
    if not found:
        raise CommandError(f"no alert {alert_id!r}")
    p.g.journal.append("operator", found[0].get("account"), command="acknowledge", alert_id=alert_id, **op.fields())
    p.acknowledged.add(alert_id)
    p._publish("ack", alert_id=alert_id, account=found[0].get("account"), **op.fields())
    return CommandResult(True, f"alert {alert_id} acknowledged")


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if isinstance(v, str | int | float | bool | list | dict | type(None))}


HANDLERS = {
    "deleverage": _deleverage,
    "liquidate": _liquidate,
    "set_thresholds": _thresholds,
    "hold": _hold,
    "resume": _resume,
    "reset": _reset,
    "schedule": _schedule,
    "cancel_schedule": _cancel_schedule,
    "kill_switch": _kill_switch,
    "release_breaker": _release_breaker,
    "acknowledge": _acknowledge,
}
