"""Typed scenario shocks for the console: `BTCUSDT -15%, majors -10%, * -5%` becomes
{"BTCUSDT": -0.15, "majors": -0.10, "*": -0.05} (fractions, as the engine's stress tests take
them). This only reads what the operator typed; whether a key exists or a shock is possible is
the engine's to say. Errors are ValueError naming the token that is wrong."""

from __future__ import annotations

import math
import re

# "KEY SHOCK", "KEY=SHOCK" or "KEY: SHOCK"; a shock is a signed number, percent with "%".
_ITEM = re.compile(r"^(?P<key>[^\s=:]+)\s*(?:[=:]\s*|\s+)(?P<shock>\S+)$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(%?)$")


def parse_shock(token: str) -> float:
    """'-15%' -> -0.15; '+0.5' -> 0.5 (a number without % is already a fraction)."""
    m = _NUMBER.match(token)
    if not m:
        raise ValueError(f"{token!r} is not a shock (e.g. -15% or -0.15)")
    value = float(token.rstrip("%"))
    value = value / 100.0 if m.group(3) else value
    if not math.isfinite(value):
        raise ValueError(f"{token!r} is not a finite shock")
    return value


def parse_shocks(text: str, what: str = "moves") -> dict[str, float]:
    """Comma- (or semicolon-) separated `KEY SHOCK` items; keys are a symbol, an underlying,
    a group or `*` (everything). Empty text gives {}."""
    out: dict[str, float] = {}
    for raw in re.split(r"[,;]", text):
        item = raw.strip()
        if not item:
            continue
        m = _ITEM.match(item)
        if not m:
            if len(item.split()) == 1 and not _NUMBER.match(item):
                raise ValueError(f"{what}: {item!r} has no shock (e.g. {item} -15%)")
            raise ValueError(f"{what}: {item!r} is not KEY SHOCK (e.g. BTCUSDT -15%, * -5%)")
        key, shock = m.group("key"), m.group("shock")
        try:
            value = parse_shock(shock)
        except ValueError as exc:
            raise ValueError(f"{what}: {key}: {exc}") from None
        if key in out:
            raise ValueError(f"{what}: {key!r} is given twice")
        out[key] = value
    return out


def ad_hoc_scenario(moves_text: str, vol_text: str) -> dict[str, object]:
    """The ad-hoc scenario for `GuardView.stress`, or ValueError naming the bad token."""
    moves = parse_shocks(moves_text, "price moves")
    vol_shocks = parse_shocks(vol_text, "vol shocks")
    if not moves and not vol_shocks:
        raise ValueError("give at least one price move or volatility shock (e.g. BTCUSDT -15%, * -5%)")
    return {"name": "ad-hoc", "moves": moves, "vol_shocks": vol_shocks}


def shocks_text(shocks: dict[str, float]) -> str:
    """The reverse, for display: {"*": -0.05} -> '* -5%'."""
    return ", ".join(f"{key} {value * 100:+g}%" for key, value in shocks.items()) or "none"
