"""Risk analytics as markup: book VaR/ES and the named scenarios (GuardView.book_risk), a
stress test's accounts, an account's scenario grid and a what-if. Every figure is the
engine's; levels are the engine's words, coloured as in the accounts table."""

from __future__ import annotations

from typing import Any

from textual.markup import escape

from capguard_tui import fmt
from capguard_tui.scenario_text import shocks_text
from capguard_tui.widgets.panels import RISK_VARS

E = escape
SHORT_LEVEL = {"SAFE": "SAFE", "WARNING": "WARN", "CRITICAL": "CRIT", "LIQUIDATION": "LIQ"}
METHODS = (("parametric", "parametric"), ("historical", "historical"), ("monte_carlo", "Monte Carlo"))


def level_code(word: Any) -> int:
    return fmt.LEVEL_WORDS.index(word) if word in fmt.LEVEL_WORDS else -1


def level_cell(word: Any, width: int, text: str | None = None) -> str:
    """`text` (the level word by default) padded to `width` in the level's colour: SAFE in
    green, the others on their colour, as the accounts table shows them."""
    code = level_code(word)
    shown = E(f"{text if text is not None else str(word or '-'):^{width}}")
    if code == 0:
        return f"[{RISK_VARS[0]}]{shown}[/]"
    if code > 0:
        return f"[bold $risk-text on {RISK_VARS[code]}]{shown}[/]"
    return shown


def level_word(word: Any, short: bool) -> str:
    return SHORT_LEVEL.get(str(word), str(word or "-")) if short else str(word or "-")


def pct_move(x: Any) -> str:
    """A shock fraction as a signed percent: -0.15 -> -15%."""
    return f"{x * 100:+.0f}%" if fmt.finite(x) else "-"


def signed_money(x: Any) -> str:
    return ("+" if fmt.finite(x) and x > 0.5 else "") + fmt.money(x)


def value_at_risk(r: dict[str, Any] | None, error: str | None = None) -> str:
    """VaR and ES by method, at the configured confidence and horizon."""
    if r is None:
        return "[b]Book VaR / ES[/]\n" + (f"[$risk-liquidation]{E(error)}[/]" if error else "[dim]computing...[/]")
    conf = f"{(r.get('confidence') or 0) * 100:g}%"
    days = r.get("horizon_days") or 0
    var, es = r.get("var") or {}, r.get("es") or {}
    lines = [
        f"[b]Book VaR / ES[/] [dim]{conf}, {days:g} day{'s' if days != 1 else ''}, "
        f"as of {fmt.iso_hms(r.get('time'))}[/]",
        f"[dim]{'method':<12} {'VaR':>10} {'ES':>10}[/]",
    ]
    for key, title in METHODS:
        lines.append(f"{title:<12} {fmt.money(var.get(key)):>10} {fmt.money(es.get(key)):>10}")
    why = (r.get("method_notes") or {}).get("historical")
    if var.get("historical") is None and why:  # e.g. too few marks seen yet
        lines.append(f"[dim]historical: {E(str(why))}[/]")
    methods = (r.get("margin") or {}).get("methods") or {}
    if methods:
        lines.append("[dim]IM by method[/] " + "  ".join(f"{E(str(k))} {fmt.money(v)}" for k, v in methods.items()))
    addons = {k: v for k, v in ((r.get("margin") or {}).get("maintenance_addons") or {}).items() if v is not None}
    if addons:
        lines.append("[dim]MM add-ons[/] " + "  ".join(f"{E(str(k))} {fmt.money(v)}" for k, v in addons.items()))
    if error:
        lines.append(f"[$risk-liquidation]last refresh failed: {E(error)}[/]")
    return "\n".join(lines)


def scenarios(r: dict[str, Any] | None, width: int) -> str:
    """The configured named scenarios: total PnL, the worst account and its ratio, accounts
    per level after."""
    items = (r or {}).get("scenarios") or []
    name_w = max(12, min(22, width - 64))
    head = (
        f"{'scenario':<{name_w}} {'total PnL':>9} {'worst account':<17} {'ratio':>7}  "
        + " ".join(level_cell(w, 4, SHORT_LEVEL[w]) for w in fmt.LEVEL_WORDS)
        + " [dim]after[/]"
    )
    lines = ["[b]Stress scenarios[/] [dim](configured; x: run one or an ad-hoc)[/]", f"[dim]{head}[/]"]
    for s in items:
        after = s.get("levels_after") or {}
        lines.append(
            f"{E(str(s.get('name')))[:name_w]:<{name_w}} {signed_money(s.get('total_pnl')):>9} "
            f"{E(str(s.get('worst_account') or '-'))[:17]:<17} {fmt.ratio(s.get('worst_ratio')):>7}  "
            + " ".join(f"{after.get(w, 0):>4}" for w in fmt.LEVEL_WORDS)
        )
    if not items:
        lines.append("[dim]none configured[/]" if r is not None else "[dim]computing...[/]")
    return "\n".join(lines)


def stress_title(result: dict[str, Any]) -> str:
    s = result.get("scenario") or {}
    after = result.get("levels_after") or {}
    counts = "  ".join(f"{level_cell(w, 0, SHORT_LEVEL[w])} {after.get(w, 0)}" for w in fmt.LEVEL_WORDS)
    desc = f" [dim]{E(str(s['description']))}[/]" if s.get("description") else ""
    return "\n".join(
        [
            f"[b]Stress test[/] [b]{E(str(s.get('name') or 'ad-hoc'))}[/]{desc}",
            f"[dim]moves[/] {E(shocks_text(s.get('moves') or {}))}  "
            f"[dim]vol shocks[/] {E(shocks_text(s.get('vol_shocks') or {}))}",
            f"[dim]total PnL[/] {signed_money(result.get('total_pnl'))}   [dim]accounts after:[/] {counts}",
        ]
    )


def stress_columns(width: int) -> tuple[bool, int]:
    """(short level words, width left for the drivers) for a terminal this wide."""
    short = width < 120
    fixed = 17 + 1 + 9 + 1 + 16 + 1 + (11 if short else 25) + 1
    return short, max(width - fixed - 2, 8)


def stress_header(width: int) -> str:
    short, drivers_w = stress_columns(width)
    levels = "level before -> after" if not short else "level"
    return (
        f"{'account':<17} {'PnL':>9} {'ratio before->after':>16} "
        f"{levels:<{11 if short else 25}} {'drivers'[:drivers_w]}"
    )


def stress_row(a: dict[str, Any], width: int) -> str:
    """One account after the scenario (the rows are the engine's order: worst first)."""
    short, drivers_w = stress_columns(width)
    lw = 4 if short else 11
    before, after = a.get("level_before"), a.get("level_after")
    pnl = (a.get("equity_after") or 0.0) - (a.get("equity_before") or 0.0)
    ratios = f"{fmt.ratio(a.get('ratio_before'))}->{fmt.ratio(a.get('ratio_after'))}"
    drivers = ",".join(str(d) for d in a.get("drivers") or [])
    return (
        f"{E(str(a.get('account')))[:17]:<17} {signed_money(pnl):>9} {ratios:>16} "
        f"{level_cell(before, lw, level_word(before, short))}->{level_cell(after, lw, level_word(after, short))} "
        f"{E(drivers[:drivers_w])}"
    )


def grid(g: dict[str, Any], wide: bool) -> str:
    """Price moves (rows) x volatility shocks (columns): the ratio coloured by its level, and
    the PnL beside it on a wide terminal."""
    moves, shocks = g.get("price_moves") or [], g.get("vol_shocks") or []
    ratio, level, pnl = g.get("ratio") or [], g.get("level") or [], g.get("pnl") or []
    cell_w = 19 if wide else 10
    head = f"{'move':>6} " + "".join(f"{'vol ' + pct_move(v):>{cell_w}}" for v in shocks)
    lines = [f"[dim]{head}[/]"]
    for i, move in enumerate(moves):
        cells = []
        for j in range(len(shocks)):
            text = f"{fmt.ratio(ratio[i][j]):>7} "  # right-aligned inside its coloured cell
            if wide:
                cells.append(f" {signed_money(pnl[i][j]):>9} " + level_cell(level[i][j], 8, text))
            else:
                cells.append("  " + level_cell(level[i][j], 8, text))
        lines.append(f"{pct_move(move):>6} " + "".join(cells))
    return "\n".join(lines)


def what_if(r: dict[str, Any]) -> str:
    """Before and after a hypothetical fill."""
    side = str(r.get("side", ""))
    lb, la = r.get("level_before"), r.get("level_after")
    d_eq = _diff(r.get("equity_after"), r.get("equity_before"))
    d_mm = _diff(r.get("maintenance_margin_after"), r.get("maintenance_margin_before"))
    return "\n".join(
        [
            f"[b]{E(side)} {fmt.qty(r.get('qty'))} {E(str(r.get('symbol')))} @ {fmt.price(r.get('price'))}[/]"
            f"  [dim]position[/] {fmt.qty(r.get('qty_before'))} -> {fmt.qty(r.get('qty_after'))}",
            f"[dim]{'':<14} {'before':>11}    {'after':>11}  {'change':>9}[/]",
            f"{'ratio':<14} {fmt.ratio(r.get('ratio_before')):>11} -> {fmt.ratio(r.get('ratio_after')):>11}",
            f"{'level':<14} {level_cell(lb, 11)} -> {level_cell(la, 11)}",
            f"{'equity':<14} {fmt.money(r.get('equity_before')):>11} -> {fmt.money(r.get('equity_after')):>11}"
            f"  {signed_money(d_eq):>9}",
            f"{'maint. margin':<14} {fmt.money(r.get('maintenance_margin_before')):>11} -> "
            f"{fmt.money(r.get('maintenance_margin_after')):>11}  {signed_money(d_mm):>9}",
            f"{'realized PnL':<14} {signed_money(r.get('realized_pnl')):>11}",
        ]
    )


def _diff(after: Any, before: Any) -> float | None:
    return after - before if fmt.finite(after) and fmt.finite(before) else None
