"""A text plot of the margin ratio over time with the thresholds drawn as lines."""

from __future__ import annotations

import math
from typing import Any

from capguard_tui import fmt

LINES = (("liquidation", "$risk-liquidation"), ("critical", "$risk-critical"), ("warning", "$risk-warning"))


def ratio_chart(history: list[tuple[str, Any]], thresholds: dict[str, float], width: int, height: int) -> str:
    """`history` is [(iso time, ratio)] oldest first; `thresholds` the effective ones."""
    points = [float(r) for _, r in history if isinstance(r, int | float) and math.isfinite(r)]
    width = max(width - 8, 10)
    height = max(height, 4)
    if not points:
        return "[dim]no ratio samples yet[/]"
    points = points[-width:]
    levels = [thresholds.get(k) for k, _ in LINES]
    known = [x for x in levels if isinstance(x, int | float)]
    lo = min([*points, *known]) * 0.97
    hi = max(min(max(points), (max(known) if known else max(points)) * 2.5), *known) * 1.03
    if hi <= lo:
        hi = lo + 1.0

    def row(x: float) -> int:
        x = min(max(x, lo), hi)
        return height - 1 - round((x - lo) / (hi - lo) * (height - 1))

    grid: list[list[str]] = [[" "] * width for _ in range(height)]
    labels = [""] * height
    for (_name, colour), value in zip(LINES, levels, strict=True):
        if not isinstance(value, int | float):
            continue
        y = row(value)
        grid[y] = [f"[{colour}]┄[/]"] * width
        labels[y] = f"[{colour}]{fmt.ratio(value):>6}[/]"
    for x, value in enumerate(points):
        mark = "^" if value > hi else "•"
        grid[row(value)][x] = f"[b]{mark}[/]"
    top, bottom = fmt.ratio(hi), fmt.ratio(lo)
    labels[0] = labels[0] or f"[dim]{top:>6}[/]"
    labels[-1] = labels[-1] or f"[dim]{bottom:>6}[/]"
    out = [f"{(labels[y] or ' ' * 6)} {''.join(grid[y])}" for y in range(height)]
    first = history[-len(points)][0] if len(points) <= len(history) else history[0][0]
    out.append(f"[dim]{'':6} {fmt.iso_hms(first)} .. {fmt.iso_hms(history[-1][0])}  ({len(points)} samples)[/]")
    return "\n".join(out)
