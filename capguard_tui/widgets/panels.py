"""Side panels of the overview as Textual markup: gauges for the selected account, the book
summary, open alerts and the action log. Every value comes from the snapshot or the events;
the only arithmetic is where to draw a mark on a bar.
"""

from __future__ import annotations

import math

from textual.markup import escape

from capguard_tui import fmt
from capguard_tui.state import Alert, LogLine
from engine.view import AccountsSnapshot

RISK_VARS = ("$risk-safe", "$risk-warning", "$risk-critical", "$risk-liquidation")
SEVERITY_LEVEL = {"info": 0, "warning": 1, "critical": 2, "emergency": 3}


def level_badge(code: int | str) -> str:
    """The level as a word on its colour (the word alone carries it under NO_COLOR)."""
    if isinstance(code, str):
        code = fmt.LEVEL_WORDS.index(code) if code in fmt.LEVEL_WORDS else -1
    if not 0 <= code < 4:
        return "-"
    return f"[bold $risk-text on {RISK_VARS[code]}] {fmt.LEVEL_WORDS[code]} [/]"


def level_text(code: int, text: str) -> str:
    return f"[{RISK_VARS[code]}]{escape(text)}[/]" if 0 <= code < 4 else escape(text)


def ratio_bar(ratio: float, warning: float, critical: float, liquidation: float, level: int, width: int) -> str:
    """Margin ratio on a scale from 1.0 (the venue liquidates) to 1.6 x warning, thresholds marked."""
    width = max(width, 10)
    lo, hi = 1.0, max(warning * 1.6, 1.5)

    def at(x: float) -> int:
        if not math.isfinite(x):
            return width - 1
        return min(max(round((x - lo) / (hi - lo) * (width - 1)), 0), width - 1)

    fill = at(ratio) if math.isfinite(ratio) else -1  # unknown ratio: no bar at all
    marks = {at(liquidation): 3, at(critical): 2, at(warning): 1}
    colour = RISK_VARS[level] if 0 <= level < 4 else "$foreground"
    cells = []
    for i in range(width):
        if i in marks:
            cells.append(f"[bold {RISK_VARS[marks[i]]}]|[/]")
        elif i <= fill:
            cells.append(f"[{colour}]█[/]")
        else:
            cells.append("[$gauge-track]░[/]")
    return "".join(cells)


def util_bar(util: float, width: int) -> str:
    width = max(width, 5)
    n = 0 if not math.isfinite(util) else min(max(round(util * width), 0), width)
    colour = "$risk-safe" if util < 0.6 else "$risk-warning" if util < 0.85 else "$risk-liquidation"
    return f"[{colour}]{'█' * n}[/][$gauge-track]{'░' * (width - n)}[/]"


def gauges(snap: AccountsSnapshot | None, index: int | None, width: int) -> str:
    if snap is None or index is None:
        return "[dim]no account selected[/]"
    c = snap.columns
    level = int(c["level"][index])
    r, w, cr, lq = (float(c[k][index]) for k in ("margin_ratio", "warning", "critical", "liquidation"))
    util = float(c["utilization"][index])
    bar_w = max(width - 8, 10)
    lines = [
        f"[b]{escape(snap.ids[index])}[/] {level_badge(level)}",
        f"[dim]{escape(snap.desks[index])} / {escape(snap.strategies[index])}[/]",
        f"ratio {level_text(level, fmt.ratio(r))}  [dim]eq/MM[/]",
        f"      {ratio_bar(r, w, cr, lq, level, bar_w)}",
        f"      [dim]liq[/] {fmt.ratio(lq)} [dim]crit[/] {fmt.ratio(cr)} [dim]warn[/] {fmt.ratio(w)}",
        f"util  {util_bar(util, bar_w - 5)} {fmt.pct(util):>4}",
    ]
    return "\n".join(lines)


def gauge_line(snap: AccountsSnapshot | None, index: int | None, width: int) -> str:
    """The same in one line (narrow terminals)."""
    if snap is None or index is None:
        return "[dim]no account selected[/]"
    c = snap.columns
    level = int(c["level"][index])
    r, w, cr, lq = (float(c[k][index]) for k in ("margin_ratio", "warning", "critical", "liquidation"))
    head = f"[b]{escape(snap.ids[index])}[/] {level_badge(level)} {level_text(level, fmt.ratio(r))} "
    util = fmt.pct(c["utilization"][index])
    tail = f" [dim]L[/]{fmt.ratio(lq)} [dim]C[/]{fmt.ratio(cr)} [dim]W[/]{fmt.ratio(w)} util {util}"
    used = len(snap.ids[index]) + len(fmt.LEVEL_WORDS[level]) + len(fmt.ratio(r)) + 5 + 32
    return head + ratio_bar(r, w, cr, lq, level, max(width - used, 8)) + tail


def _flag(on: bool, on_text: str, off_text: str) -> str:
    return f"[bold $risk-text on $risk-liquidation] {on_text} [/]" if on else f"[dim]{off_text}[/]"


def book(summary: dict, width: int) -> str:
    levels = summary.get("levels", {})
    pairs = [f"{level_text(i, name)} {levels.get(name, 0)}" for i, name in enumerate(fmt.LEVEL_WORDS)]
    counts = "  ".join(pairs[:2]) + "\n" + "  ".join(pairs[2:])
    feed = "paused" if summary.get("feed_paused") else "running"
    return "\n".join(
        [
            f"[b]Book[/] {summary.get('accounts', 0)} accounts  "
            f"[dim]{escape(str(summary.get('scenario', '')))}, feed {feed}[/]",
            counts,
            f"equity {fmt.money(summary.get('total_equity'))}  MM {fmt.money(summary.get('total_maintenance_margin'))}"
            f"  mode {summary.get('protection_mode', '-')}",
            f"{_flag(bool(summary.get('circuit_breaker')), 'BREAKER TRIPPED', 'breaker ok')}  "
            f"{_flag(bool(summary.get('kill_switch')), 'KILL SWITCH ON', 'kill switch off')}",
            f"[dim]stale[/] {summary.get('stale_accounts', 0)}  [dim]halted[/] {summary.get('halted', 0)}"
            f"  [dim]acting[/] {summary.get('active_actions', 0)}",
        ]
    )


def book_line(summary: dict) -> str:
    levels = summary.get("levels", {})
    short = ("SAFE", "WARN", "CRIT", "LIQ")
    counts = " ".join(f"{level_text(i, short[i])} {levels.get(name, 0)}" for i, name in enumerate(fmt.LEVEL_WORDS))
    return (
        f"{counts}  eq {fmt.money(summary.get('total_equity'))} "
        f"MM {fmt.money(summary.get('total_maintenance_margin'))}  "
        f"{_flag(bool(summary.get('circuit_breaker')), 'BREAKER', 'brk ok')} "
        f"{_flag(bool(summary.get('kill_switch')), 'KILL', 'kill off')} {summary.get('protection_mode', '')}"
    )


def alert_line(a: Alert, width: int | None = None) -> str:
    """One alert; cut to `width` when given (one-line strip), else left to wrap."""
    sev = SEVERITY_LEVEL.get(a.severity, 0)
    who = f"{a.account} " if a.account and a.account not in a.message else ""
    text = f"{fmt.iso_hms(a.ts)} {a.severity.upper()[:4]} {who}{a.message}"
    return level_text(sev, text[:width] if width else text)


def alerts(items: list[Alert], rows: int, width: int) -> str:
    head = f"[b]Alerts[/] {len(items)} open" + ("  [dim]a: acknowledge newest[/]" if items else "")
    lines = [alert_line(a) for a in items[:rows]]
    return "\n".join([head, *lines] if lines else [head, "[dim]none[/]"])


def log_text(line: LogLine, width: int | None = None) -> str:
    who = f"{line.account} " if line.account and line.account not in line.text else ""
    text = f"{fmt.iso_hms(line.ts)} {who}{line.text}"
    text = text[:width] if width else text
    return escape(text) if line.ok else f"[$risk-liquidation]{escape(text)}[/]"


def action_log(lines: list[LogLine], rows: int, width: int) -> str:
    body = [log_text(line) for line in lines[:rows]]
    return "\n".join(["[b]Action log[/]", *body] if body else ["[b]Action log[/]", "[dim]nothing yet[/]"])
