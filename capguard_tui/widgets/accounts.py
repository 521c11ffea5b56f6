"""The overview's accounts table: a Line API widget that renders only the visible rows,
straight from the snapshot's arrays (no per-cell copy, unlike DataTable).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from capguard_tui import fmt
from capguard_tui.keys import bindings
from capguard_tui.table_model import COLUMNS, FROZEN, TOTAL_WIDTH, TableModel
from engine.view import AccountsSnapshot

LEVEL_CLASSES = ("accounts--safe", "accounts--warning", "accounts--critical", "accounts--liquidation")
TEXT_CLASSES = ("accounts--fg-safe", "accounts--fg-warning", "accounts--fg-critical", "accounts--fg-liquidation")


class AccountsTable(ScrollView, can_focus=True):
    """Every account, one line each; the cursor follows an account, not a row number."""

    BINDINGS = bindings("table")
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "accounts--header",
        "accounts--header-sorted",
        "accounts--cursor",
        "accounts--dim",
        "accounts--alarm",
        *LEVEL_CLASSES,
        *TEXT_CLASSES,
    }

    class Selected(Message):
        """The cursor moved to another account (or the same account after a refresh)."""

        def __init__(self, account_id: str | None) -> None:
            super().__init__()
            self.account_id = account_id

    class Opened(Message):
        def __init__(self, account_id: str) -> None:
            super().__init__()
            self.account_id = account_id

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = TableModel()
        self._last_selected: str | None = None
        # Rendered lines of the current snapshot: a cursor move or a repaint re-uses them.
        self._lines: dict[tuple[int, bool, int, int], Strip] = {}
        self._style_key: tuple[object, ...] | None = None
        self._styles: dict[str, Style] = {}

    # -- data --------------------------------------------------------------------------
    def update_snapshot(self, snapshot: AccountsSnapshot) -> None:
        self.model.update(snapshot)
        self._after_change()

    def _after_change(self) -> None:
        self._lines.clear()
        self.virtual_size = Size(TOTAL_WIDTH, len(self.model.order) + 1)
        self._keep_cursor_visible()
        self.refresh()
        self._announce()

    def _announce(self) -> None:
        if self.model.selected != self._last_selected:
            self._last_selected = self.model.selected
            self.post_message(self.Selected(self.model.selected))

    def _keep_cursor_visible(self) -> bool:
        """Scroll so the cursor row is on screen; True when it had to scroll."""
        rows = max(self.scrollable_content_region.height - 1, 1)
        top = int(self.scroll_y)
        cur = self.model.cursor
        if cur < top:
            self.scroll_to(y=cur, animate=False, immediate=True)
            return True
        if cur >= top + rows:
            self.scroll_to(y=cur - rows + 1, animate=False, immediate=True)
            return True
        return False

    # -- actions -----------------------------------------------------------------------
    def action_cursor(self, delta: int) -> None:
        before = self.model.cursor
        self.model.move(delta)
        if self._keep_cursor_visible():
            self.refresh()
        else:  # only the two rows whose cursor style changed are drawn again
            self.refresh_lines(before + 1)
            self.refresh_lines(self.model.cursor + 1)
        self._announce()

    def action_page(self, direction: int) -> None:
        self.model.move(direction * max(self.scrollable_content_region.height - 2, 1))
        self._after_change()

    def action_first(self) -> None:
        self.model.set_cursor(0)
        self._after_change()

    def action_last(self) -> None:
        self.model.set_cursor(len(self.model.order) - 1)
        self._after_change()

    def action_pan(self, delta: int) -> None:
        self.scroll_to(x=max(0, self.scroll_x + delta), animate=False, immediate=True)

    def on_click(self, event) -> None:  # type: ignore[no-untyped-def]
        row = int(self.scroll_y) + event.y - 1
        if event.y >= 1 and 0 <= row < len(self.model.order):
            self.model.set_cursor(row)
            self._after_change()
            if event.chain >= 2 and self.model.selected:
                self.post_message(self.Opened(self.model.selected))

    # -- rendering ---------------------------------------------------------------------
    def style(self, name: str) -> Style:
        """The widget's style plus a component's (cached until the theme or focus changes)."""
        key = (self.app._css_update_count, self.app.theme, self.has_focus)
        if key != self._style_key:
            self._style_key = key
            self._styles = {"base": self.rich_style}
            self._lines.clear()
        if name not in self._styles:
            self._styles[name] = self._styles["base"] + self.get_component_rich_style(name)
        return self._styles[name]

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.style("base")
        if y == 0:
            return self._fit(self._header(), width, base)
        row = int(self.scroll_y) + y - 1
        if row >= len(self.model.order) or self.model.snapshot is None:
            return Strip.blank(width, base)
        cursor = row == self.model.cursor
        key = (row, cursor, int(self.scroll_x), width)
        line = self._lines.get(key)
        if line is None:
            line = self._fit(self._row(row), width, self.style("accounts--cursor") if cursor else base)
            self._lines[key] = line
        return line

    def _fit(self, segments: list[Segment], width: int, fill: Style) -> Strip:
        """The frozen account column, then the rest scrolled sideways, cut to the width."""
        frozen = Strip(segments[:1])
        rest = Strip(segments[1:]).crop(int(self.scroll_x), int(self.scroll_x) + max(width - FROZEN, 0))
        return Strip.join([frozen, rest]).extend_cell_length(width, fill).crop(0, width)

    def _header(self) -> list[Segment]:
        head = self.style("accounts--header")
        sorted_ = self.style("accounts--header-sorted")
        key = self.model.sort_key
        arrow = "v" if self.model.column.descending != self.model.reverse else "^"
        out = []
        for c in COLUMNS:
            text = _cell(c.title, c.width, c.align)
            if c.key == key:  # the sort arrow takes the separator cell
                text = text[:-1] + arrow
            out.append(Segment(text, sorted_ if c.key == key else head))
        return out

    def _row(self, row: int) -> list[Segment]:
        snap = self.model.snapshot
        assert snap is not None
        a = int(self.model.order[row])
        col = snap.columns
        cursor = row == self.model.cursor
        base = self.style("accounts--cursor") if cursor else self.style("base")

        def on_row(name: str) -> Style:
            return base + self.get_component_rich_style(name) if cursor else self.style(name)

        dim, alarm = on_row("accounts--dim"), on_row("accounts--alarm")
        level = int(col["level"][a])
        level_style = on_row(LEVEL_CLASSES[level]) if 0 <= level < 4 else base
        ratio_level = int(col["ratio_level"][a])
        ratio_style = on_row(TEXT_CLASSES[ratio_level]) if 0 <= ratio_level < 4 else base
        data = int(col["data_state"][a])
        trading = int(col["trading_state"][a])
        held = float(col["held_until"][a])
        hold = f"{fmt.age(held - snap.time)}" if math.isfinite(held) and held > snap.time else ""
        cells: list[tuple[str, Style]] = [
            (snap.ids[a], base),
            (fmt.level_word(level), level_style),
            (fmt.ratio(col["margin_ratio"][a]), ratio_style),
            (fmt.money(col["equity"][a]), base),
            (fmt.money(col["maintenance_margin"][a]), base),
            (fmt.pct(col["utilization"][a]), base),
            (fmt.times(col["leverage"][a]), base),
            (fmt.pct_value(col["worst_liq_distance_pct"][a]), base),
            (fmt.DATA_WORDS[data] if 0 <= data < 3 else "-", dim if data == 0 else alarm),
            (fmt.TRADING_WORDS[trading] if 0 <= trading < 3 else "-", dim if trading == 0 else alarm),
            (hold, alarm),
            (fmt.age(snap.time - col["updated_at"][a]), dim),
            (snap.desks[a], base),
            (snap.strategies[a], base),
        ]
        out = [Segment(_cell(text, c.width, c.align), style) for (text, style), c in zip(cells, COLUMNS, strict=True)]
        # The level word sits on its colour with a one-cell margin in the row's own style.
        width = COLUMNS[1].width
        out[1:2] = [Segment(" " + cells[1][0].ljust(width - 2), level_style), Segment(" ", base)]
        return out


def _cell(text: str, width: int, align: str) -> str:
    inner = width - 1
    if len(text) > inner:
        text = text[: inner - 1] + "~"
    return (text.ljust(inner) if align == "<" else text.rjust(inner)) + " "


def visible_rows(table: AccountsTable) -> np.ndarray:
    """Account indices currently on screen (tests and the benchmark)."""
    top = int(table.scroll_y)
    return table.model.order[top : top + max(table.size.height - 1, 0)]
