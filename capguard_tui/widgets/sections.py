"""The account detail's sections as markup, each straight from `guard.account_detail(id)`."""

from __future__ import annotations

from typing import Any

from textual.markup import escape

from capguard_tui import fmt
from capguard_tui.widgets.panels import level_badge, level_text
from capguard_tui.widgets.plan import plan_markup

E = escape


def header(d: dict[str, Any]) -> str:
    level = d.get("level", "")
    code = fmt.LEVEL_WORDS.index(level) if level in fmt.LEVEL_WORDS else -1
    reducing = ", ".join(d.get("reducing_because") or [])
    name = str(d.get("name") or "") if d.get("name") != d.get("id") else ""
    flags = [
        f"data [b]{E(str(d.get('data_state')))}[/]",
        f"trading [b]{E(str(d.get('trading_state')))}[/]" + (f" [dim]({E(reducing)})[/]" if reducing else ""),
        f"protection {E(str(d.get('protection_mode')))}",
    ]
    if d.get("held_until"):
        flags.append(f"[b]held until {E(str(d['held_until']))}[/]")
    return "\n".join(
        [
            f"[b]{E(str(d.get('id')))}[/] {E(name)}  {level_badge(code)}  "
            f"ratio {level_text(code, fmt.ratio(d.get('margin_ratio')))} [dim]eq/MM[/]",
            f"[dim]desk[/] {E(str(d.get('desk')))}  [dim]strategy[/] {E(str(d.get('strategy')))}  "
            f"[dim]risk class[/] {E(str(d.get('risk_class')))}  [dim]margin[/] {E(str(d.get('margin_mode')))}",
            "  ".join(flags),
            f"[dim]wallet[/] {fmt.money(d.get('wallet_balance'))}  [dim]equity[/] {fmt.money(d.get('equity'))}  "
            f"[dim]uPnL[/] {fmt.money(d.get('unrealized_pnl'))}  [dim]IM[/] {fmt.money(d.get('initial_margin'))}  "
            f"[dim]MM[/] {fmt.money(d.get('maintenance_margin'))}  [dim]free[/] {fmt.money(d.get('free_margin'))}",
            f"[dim]util[/] {fmt.pct(d.get('utilization'))}  [dim]leverage[/] {fmt.times(d.get('leverage'))}  "
            f"[dim]drawdown[/] {fmt.pct(d.get('drawdown'), 1)} "
            f"[dim](max[/] {fmt.pct(d.get('max_drawdown'), 1)}[dim])[/]  "
            f"[dim]as of[/] {fmt.iso_hms(d.get('time'))}",
        ]
    )


# (title, width, align, value, keep priority: lower numbers stay longest on a narrow screen)
POSITION_COLUMNS: tuple[tuple[str, int, str, Any, int], ...] = (
    ("symbol", 9, "<", lambda p: str(p.get("symbol")), 0),
    ("qty", 10, ">", lambda p: fmt.qty(p.get("qty")), 0),
    ("entry", 10, ">", lambda p: fmt.price(p.get("entry_price")), 3),
    ("mark", 10, ">", lambda p: fmt.price(p.get("mark_price")), 1),
    ("uPnL", 8, ">", lambda p: fmt.money(p.get("unrealized_pnl")), 2),
    ("notional", 8, ">", lambda p: fmt.money(p.get("notional")), 1),
    ("tier/mmr", 9, ">", lambda p: f"{p.get('tier')}/{fmt.pct(p.get('mmr'), 2)}", 2),
    ("MM", 7, ">", lambda p: fmt.money(p.get("maintenance_margin")), 0),
    ("liq px", 10, ">", lambda p: fmt.price(p.get("liquidation_price")), 0),
    ("dist", 6, ">", lambda p: fmt.pct_value(p.get("liquidation_distance_pct")), 0),
)


def positions(d: dict[str, Any], width: int = 200) -> str:
    """The positions table; on a narrow screen the least needed columns are left out."""
    rows = d.get("positions") or []
    cols = list(POSITION_COLUMNS)
    while sum(c[1] + 1 for c in cols) > width and any(c[4] for c in cols):
        worst = max(c[4] for c in cols)
        cols.remove(next(c for c in reversed(cols) if c[4] == worst))
    head = " ".join(f"{t:{a}{w}}" for t, w, a, _, _ in cols)
    lines = [f"[b]Positions[/] ({len(rows)})", f"[dim]{head}[/]"]
    for p in rows:
        cells = " ".join(f"{E(get(p))[:w]:{a}{w}}" for _, w, a, get, _ in cols)
        lines.append(cells + (" [dim]last[/]" if p.get("liquidate_last") else ""))
    if not rows:
        lines.append("[dim]no positions[/]")
    return "\n".join(lines)


def orders(d: dict[str, Any]) -> str:
    rows = d.get("open_orders") or []
    lines = [f"[b]Open orders[/] ({len(rows)})"]
    for o in rows:
        ro = " reduce-only" if o.get("reduce_only") else ""
        lines.append(
            f"{E(str(o.get('side'))):<4} {E(str(o.get('symbol'))):<9} {fmt.qty(o.get('qty')):>10} "
            f"@ {fmt.price(o.get('price'))}{ro}"
        )
    if not rows:
        lines.append("[dim]none[/]")
    return "\n".join(lines)


def thresholds(d: dict[str, Any]) -> str:
    t = d.get("thresholds") or {}
    base, result = t.get("base") or {}, t.get("result") or {}
    names = ("warning", "critical", "liquidation")
    lines = [
        "[b]Effective thresholds[/]" + ("" if t.get("enabled", True) else " [dim](dynamic off)[/]"),
        f"[dim]{'':<12} {'warning':>8} {'critical':>8} {'liquid.':>8}[/]",
        f"{'seed':<12} " + " ".join(f"{fmt.ratio(base.get(n)):>8}" for n in names),
    ]
    for f in t.get("factors") or []:
        detail = f.get("regime") or _band(f.get("band")) or ""
        label = f"{f.get('name')}"
        lines.append(
            f"{E(label):<12} "
            + " ".join(f"{_signed(f.get(n)):>8}" for n in names)
            + f"  [dim]{E(_factor_input(f))} {fmt.pct(f.get('adjust'), 1)} {E(str(detail))}[/]"
        )
    if t.get("factors"):
        lines.append(
            f"[dim]adjust total {fmt.pct(t.get('total_adjust'), 1)}, applied {fmt.pct(t.get('applied_adjust'), 1)}[/]"
        )
    for c in t.get("clamped") or []:
        lines.append(f"[dim]clamp: {E(str(c))}[/]")
    if t.get("override"):
        lines.append(f"[b]override[/] {E(str(t['override']))}")
    lines.append(f"[b]{'effective':<12}[/] " + " ".join(f"[b]{fmt.ratio(result.get(n)):>8}[/]" for n in names))
    return "\n".join(lines)


def _band(band: Any) -> str:
    if not isinstance(band, dict):
        return ""
    if "min_equity" in band:
        return f"band from {fmt.money(band['min_equity'])}"
    if "min_drawdown" in band:
        return f"band from {fmt.pct(band['min_drawdown'])}"
    return ""


def _signed(x: Any) -> str:
    return f"{x:+.3f}" if fmt.finite(x) else "-"


def _factor_input(f: dict[str, Any]) -> str:
    value = f.get("input")
    name = f.get("name")
    if name == "size":
        return f"equity {fmt.money(value)}"
    if name == "volatility":
        return f"vol {fmt.pct(value)}"
    if name == "drawdown":
        return f"dd {fmt.pct(value, 1)}"
    return str(value)


def flow(d: dict[str, Any]) -> str:
    latest = d.get("latest_action") or {}
    records = latest.get("records") or []
    lines = [f"[b]Latest action[/] {E(str(latest.get('action_id') or ''))}"]
    if not records:
        return "\n".join([*lines, "[dim]no protective action yet[/]"])
    stages = ("decision", "plan", "orders", "fills", "outcome")
    counts = {s: 0 for s in stages}
    for r in records:
        k = r.get("kind")
        key = {
            "decision": "decision",
            "plan": "plan",
            "action_start": "plan",
            "order_intent": "orders",
            "order": "orders",
            "fill": "fills",
            "outcome": "outcome",
            "action_end": "outcome",
        }.get(k)
        if key:
            counts[key] += 1
    lines.append(" -> ".join(f"{s}{'' if counts[s] else ' [dim](none)[/]'}" for s in stages))
    for r in records[-12:]:
        lines.append(f"[dim]{fmt.iso_hms(r.get('ts'))}[/] {E(r.get('kind', ''))[:8]:<8} {E(fmt.record_text(r))}")
    return "\n".join(lines)


def cheapest(d: dict[str, Any]) -> str:
    step = d.get("cheapest_step")
    if not step:
        return (
            "[b]Cheapest step back to SAFE[/]\n[dim]"
            + ("none needed (SAFE)" if d.get("level") == "SAFE" else "no single position is enough")
            + "[/]"
        )
    return "[b]Cheapest step back to SAFE[/]\n" + plan_markup(step, brief=True)


def risk(d: dict[str, Any]) -> str:
    """Live risk analytics: VaR/ES, the worst stress scenario, touch probabilities, the trend."""
    r = d.get("risk") or {}
    if not r:
        return "[b]Risk[/]\n[dim]not available[/]"
    conf = f"{(r.get('confidence') or 0) * 100:g}%"
    lines = [
        f"[b]Risk[/] [dim]({conf}, {r.get('horizon_days', 1):g} day)[/]",
        f" VaR {fmt.money(r.get('var_parametric'))}  ES {fmt.money(r.get('es_parametric'))} [dim]parametric[/]"
        f"  {fmt.money(r.get('var_monte_carlo'))} / {fmt.money(r.get('es_monte_carlo'))} [dim]MC[/]"
        f"  {fmt.money(r.get('var_historical'))} / {fmt.money(r.get('es_historical'))} [dim]hist.[/]",
        f" worst stress ratio {fmt.ratio(r.get('stress_worst_ratio'))}"
        f" ({escape(str(r.get('stress_worst_scenario') or '-'))})",
        f" touch liq. price {fmt.pct(r.get('touch_liquidation_price_prob'))}"
        f"  LIQ threshold {fmt.pct(r.get('touch_liquidation_threshold_prob'))}",
    ]
    heading = {k: v for k, v in (r.get("hours_to") or {}).items() if v}
    if heading:
        lines.append(" at this rate: " + ", ".join(f"{k} in {v:.1f} h" for k, v in heading.items()))
    if r.get("funding_per_hour") is not None:  # a live feed with funding rates
        lines.append(f" funding {fmt.money(r['funding_per_hour'])}/h [dim](paid; negative: received)[/]")
    return "\n".join(lines)


def scheduled(d: dict[str, Any]) -> str:
    items = d.get("scheduled") or []
    lines = ["[b]Scheduled[/]"]
    lines += [f"{E(s['schedule_id'])}  {E(s['action'])}  at {E(s['at'])}" for s in items] or [
        "[dim]nothing scheduled[/]"
    ]
    return "\n".join(lines)


def timeline(d: dict[str, Any], rows: int = 14) -> str:
    items = d.get("timeline") or []
    lines = ["[b]Risk timeline[/]"]
    for r in items[:rows]:
        lines.append(f"[dim]{fmt.iso_hms(r.get('ts'))}[/] {E(str(r.get('kind'))):<10} {E(fmt.record_text(r))}")
    if not items:
        lines.append("[dim]nothing yet[/]")
    return "\n".join(lines)
