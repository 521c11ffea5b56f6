"""capguard's JSON tick format, shared by the WebSocket and NATS price sources.

One tick:        {"symbol": "BTCUSDT", "mark": 64012.5, "ts": "2026-11-25T15:47:32.120Z"}
A batch:         {"ticks": [<tick>, <tick>, ...]}

`mark` is a JSON number (or a decimal string), strictly positive and finite; `ts` is the
publisher's ISO-8601 UTC time of the mark (informational: freshness is judged on the time
capguard received it). Unknown keys are refused. A message is accepted or refused whole:
one bad tick in a batch refuses the batch. Ticks for symbols that are not configured
instruments are ignored and counted (a shared feed may carry more than capguard watches).

Control messages carry an `op`: the client sends {"op": "subscribe", "symbols": [...]} after
each connect; a server may answer {"op": "subscribed", "symbols": [...]} or report
{"op": "error", "message": "..."}.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from engine.connectors.base import Refused, finite_positive

TICK_KEYS = frozenset({"symbol", "mark", "ts"})


def _ts(value: Any) -> datetime:
    if not isinstance(value, str):
        raise Refused(f"ts must be an ISO-8601 UTC string, got {value!r}")
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Refused(f"ts is not ISO-8601: {value!r}") from None
    if ts.tzinfo is None:
        raise Refused(f"ts must carry a time zone (UTC), got {value!r}")
    return ts


def parse_tick(obj: Any, where: str = "tick") -> tuple[str, float, datetime]:
    if not isinstance(obj, dict):
        raise Refused(f"{where}: not a JSON object")
    extra = set(obj) - TICK_KEYS
    if extra:
        raise Refused(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
    missing = TICK_KEYS - set(obj)
    if missing:
        raise Refused(f"{where}: missing {', '.join(sorted(missing))}")
    symbol = obj["symbol"]
    if not isinstance(symbol, str) or not symbol:
        raise Refused(f"{where}: symbol must be a non-empty string")
    try:
        mark = finite_positive(obj["mark"])
    except Refused as exc:
        raise Refused(f"{where} ({symbol}): mark {exc}") from None
    try:
        ts = _ts(obj["ts"])
    except Refused as exc:
        raise Refused(f"{where} ({symbol}): {exc}") from None
    return symbol, mark, ts


def decode(raw: str | bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(f"not valid JSON ({exc})") from None


def parse_ticks(obj: Any, index: dict[str, int]) -> tuple[list[tuple[int, float]], int]:
    """The (instrument index, mark) pairs of a tick or batch message, and how many ticks were
    for unknown symbols (ignored). Raises Refused for anything malformed."""
    if isinstance(obj, dict) and "ticks" in obj:
        if set(obj) != {"ticks"}:
            raise Refused(f"batch: unknown key(s) {', '.join(sorted(set(obj) - {'ticks'}))}")
        ticks = obj["ticks"]
        if not isinstance(ticks, list) or not ticks:
            raise Refused("batch: ticks must be a non-empty list")
        parsed = [parse_tick(t, f"ticks[{n}]") for n, t in enumerate(ticks)]
    else:
        parsed = [parse_tick(obj)]
    out: list[tuple[int, float]] = []
    ignored = 0
    for symbol, mark, _ in parsed:
        i = index.get(symbol)
        if i is None:
            ignored += 1
        else:
            out.append((i, mark))
    return out, ignored


def tick(symbol: str, mark: float, ts: str) -> dict[str, Any]:
    """A tick in the documented format (publishers and tests)."""
    return {"symbol": symbol, "mark": mark, "ts": ts}
