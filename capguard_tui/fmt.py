"""Display formatting only: numbers become short strings. Nothing here computes risk."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

LEVEL_WORDS = ("SAFE", "WARNING", "CRITICAL", "LIQUIDATION")
DATA_WORDS = ("OK", "STALE", "INVALID")
TRADING_WORDS = ("ACTIVE", "REDUCING", "HALTED")


def finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def money(x: Any) -> str:
    """Quote-currency amount, compact: 2.35M, 812.4k, 950."""
    if not finite(x):
        return "-"
    a = abs(x)
    if a < 0.5:
        return "0"  # no "-0" for a rounding crumb
    if a >= 1e9:
        return f"{x / 1e9:.2f}B"
    if a >= 1e6:
        return f"{x / 1e6:.2f}M"
    if a >= 1e4:
        return f"{x / 1e3:.1f}k"
    return f"{x:,.0f}"


def amount(x: Any, digits: int = 2) -> str:
    return f"{x:,.{digits}f}" if finite(x) else "-"


def ratio(x: Any) -> str:
    """A margin ratio; "inf" when there is no maintenance margin at all, "-" when unknown."""
    if isinstance(x, int | float) and x == math.inf:
        return "inf"
    if not finite(x):
        return "-"
    return f"{x:.3f}" if x < 100 else (f"{x:.0f}" if x < 1e6 else ">1e6")


def pct(x: Any, digits: int = 0) -> str:
    """A fraction shown as percent (0.42 -> 42%)."""
    return f"{x * 100:.{digits}f}%" if finite(x) else "-"


def pct_value(x: Any, digits: int = 1) -> str:
    """A value already in percent."""
    return f"{x:.{digits}f}%" if finite(x) else "-"


def times(x: Any) -> str:
    return f"{x:.1f}x" if finite(x) else "-"


def price(x: Any) -> str:
    if not finite(x):
        return "-"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.1f}"
    if a >= 1:
        return f"{x:.3f}"
    if a == 0:
        return "0"
    return f"{x:.4g}"


def qty(x: Any) -> str:
    if not finite(x):
        return "-"
    return f"{x:,.4g}" if abs(x) < 1000 else f"{x:,.0f}"


def age(seconds: Any) -> str:
    """Age of an update: 0.4s, 12s, 3m, 2h."""
    if not finite(seconds):
        return "-"
    s = max(0.0, seconds)
    if s < 10:
        return f"{s:.1f}s"
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.0f}h"


def hms(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%H:%M:%S") if finite(ts) else "-"


def iso_hms(iso: str | None) -> str:
    """The time of day of an ISO-8601 UTC timestamp (the journal's), for compact lists."""
    if not iso:
        return "-"
    return iso[11:19] if len(iso) >= 19 else iso


def error_text(exc: BaseException) -> str:
    """An engine refusal in its own words (a KeyError without the quotes str() adds)."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc) or type(exc).__name__


def level_word(code: Any) -> str:
    try:
        return LEVEL_WORDS[int(code)]
    except (ValueError, IndexError, TypeError):
        return "-"


def record_text(record: dict[str, Any]) -> str:
    """One line for a journal record or an event: what happened, in the engine's own words."""
    kind = record.get("kind") or record.get("type") or "?"
    if record.get("message"):
        return str(record["message"])
    if kind == "transition":
        return f"{record.get('from_level')} -> {record.get('to_level')} at ratio {ratio(record.get('ratio'))}"
    if kind == "decision":
        return f"{record.get('action')}: {record.get('reason', '')} (ratio {ratio(record.get('ratio'))})"
    if kind == "operator":
        who = record.get("operator", "?")
        cmd = record.get("command", "?")
        if record.get("refused"):
            return f"{who}: {cmd} refused: {record['refused']}"
        extra = record.get("reason") or ""
        return f"{who}: {cmd}" + (f" ({extra})" if extra else "")
    if kind == "threshold":
        after = record.get("after") or {}
        return "thresholds -> " + " / ".join(f"{after.get(k, '-')}" for k in ("warning", "critical", "liquidation"))
    if kind in ("data", "data_state"):
        return f"data {record.get('data_state')} {', '.join(record.get('instruments') or [])}".strip()
    if kind == "action":
        stage = record.get("stage", "")
        what = (
            record.get("kind") or (record.get("outcome") or {}).get("plan_kind") or record.get("plan_kind") or "action"
        )
        parts = [f"{what} {stage}".strip()]
        if record.get("action_id"):
            parts.append(str(record["action_id"]))
        if stage in ("finished", "resumed"):
            parts.append(_outcome(record.get("outcome") or record))
        elif record.get("cancelled") is not None:
            parts.append(f"{len(record['cancelled'])} orders cancelled")
        return " ".join(parts)
    if kind == "order":
        if record.get("action") == "cancel_orders":
            return f"cancelled {len(record.get('cancelled') or [])} exposure-increasing orders"
        side = {1: "buy", -1: "sell"}.get(record.get("side"), record.get("side", ""))
        filled, status = record.get("filled_qty"), record.get("status", "")
        done = f"{status} {qty(filled)} @ {price(record.get('avg_price'))}" if filled else status
        return f"order {side} {record.get('symbol', '')} {qty(record.get('qty'))}: {done}"
    if kind == "fill":
        return f"fill {record.get('symbol', '')} {qty(record.get('qty'))} @ {price(record.get('price'))}"
    if kind == "outcome":
        return f"{record.get('plan_kind', 'action')} outcome: " + _outcome(record)
    if kind == "schedule":
        return f"schedule {record.get('event', '')} {record.get('schedule_id', '')} {record.get('action', '')}".strip()
    if kind == "system":
        return f"system {record.get('event', '')}"
    return kind


def _outcome(r: dict[str, Any]) -> str:
    state = "complete" if r.get("complete") else "incomplete"
    if r.get("escalated"):
        state += ", escalated"
    cost = (r.get("fees") or 0.0) + (r.get("slippage") or 0.0)
    return (
        f"ratio {ratio(r.get('ratio_before'))} -> {ratio(r.get('ratio_after'))}, {state}, "
        f"{r.get('orders_filled', 0)}/{r.get('orders_sent', 0)} filled, cost {amount(cost)}"
    )
