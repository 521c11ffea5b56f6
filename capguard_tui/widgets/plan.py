"""An order plan (the engine's Plan.to_dict()) as text: the orders and the projected ratio."""

from __future__ import annotations

from typing import Any

from textual.markup import escape

from capguard_tui import fmt

MAX_ORDERS_SHOWN = 12


def side_word(side: Any) -> str:
    return "buy" if side in (1, "buy") else "sell" if side in (-1, "sell") else str(side)


def plan_markup(plan: dict[str, Any] | None, brief: bool = False) -> str:
    if not plan:
        return "[dim]no plan[/]"
    orders = plan.get("orders") or []
    target = plan.get("target")
    aim = f"target {fmt.ratio(target)}" if target is not None else f"fraction {fmt.pct(plan.get('fraction'))}"
    lines = [
        f"[b]{escape(str(plan.get('kind', '')))}[/] {escape(str(plan.get('strategy', '')))} / "
        f"{escape(str(plan.get('method', '')))}   ratio [b]{fmt.ratio(plan.get('ratio'))}[/] -> "
        f"projected [b]{fmt.ratio(plan.get('projected_ratio'))}[/]  ({aim})",
    ]
    if orders:
        lines.append(
            f"[dim]{'#':>2} {'side':<4} {'symbol':<10} {'qty':>10} {'notional':>9} {'est price':>11} {'cost':>8}[/]"
        )
        for o in orders[: MAX_ORDERS_SHOWN if not brief else 6]:
            cost = (o.get("est_slippage") or 0.0) + (o.get("est_fee") or 0.0)
            lines.append(
                f"{o.get('n', ''):>2} {side_word(o.get('side')):<4} {escape(str(o.get('symbol', ''))):<10} "
                f"{fmt.qty(o.get('qty')):>10} {fmt.money(o.get('notional')):>9} {fmt.price(o.get('est_price')):>11} "
                f"{fmt.amount(cost):>8}"
            )
        shown = MAX_ORDERS_SHOWN if not brief else 6
        if len(orders) > shown:
            lines.append(f"[dim]... and {len(orders) - shown} more[/]")
    else:
        lines.append("[dim]no orders[/]")
    lines.append(
        f"reduces {fmt.money(plan.get('reduced_notional'))} notional, est. cost {fmt.amount(plan.get('est_cost'))}"
    )
    if not brief:
        lines.extend(f"[dim]{escape(str(n))}[/]" for n in plan.get("notes") or [])
    return "\n".join(lines)
