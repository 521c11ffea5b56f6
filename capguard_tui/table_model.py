"""Row order of the overview table: the snapshot's arrays filtered and sorted, nothing more.

Sorting and filtering are presentation (which rows, in what order); every number shown comes
straight from the snapshot. Work is numpy over whole columns so 100k accounts stay cheap:
one argsort per refresh, and the text filter is recomputed only when its text or the set of
accounts changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from capguard_tui import fmt
from engine.view import AccountsSnapshot


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    width: int
    align: str  # "<" or ">"
    descending: bool  # default sort direction (most endangered first)
    sort_by: str  # snapshot column, or "ids"/"desks"/"strategies", or "age"


# Display order: the risk columns first so an 80-column terminal sees what matters;
# desk and strategy follow (scroll right, or a wide terminal).
COLUMNS: tuple[Column, ...] = (
    Column("account", "account", 17, "<", False, "ids"),
    Column("level", "level", 13, "<", True, "level"),
    Column("ratio", "ratio eq/MM", 12, ">", False, "margin_ratio"),
    Column("equity", "equity", 8, ">", True, "equity"),
    Column("mm", "maint MM", 9, ">", True, "maintenance_margin"),
    Column("util", "util", 5, ">", True, "utilization"),
    Column("lev", "lev", 6, ">", True, "leverage"),
    Column("liq", "liq dist", 9, ">", False, "worst_liq_distance_pct"),
    Column("data", "data", 8, "<", True, "data_state"),
    Column("trading", "trading", 9, "<", True, "trading_state"),
    Column("hold", "held", 6, ">", True, "held_until"),
    Column("age", "age", 5, ">", True, "age"),
    Column("desk", "desk", 10, "<", False, "desks"),
    Column("strategy", "strategy", 21, "<", False, "strategies"),
)
COLUMN_KEYS = tuple(c.key for c in COLUMNS)
FROZEN = COLUMNS[0].width  # the account column stays put when scrolling sideways
TOTAL_WIDTH = sum(c.width for c in COLUMNS)


@dataclass
class Filter:
    """`/` filter: free text (account, name, desk, strategy) plus level:, desk:, strategy: terms."""

    text: str = ""
    min_level: int = 0
    desk: str = ""
    strategy: str = ""

    @classmethod
    def parse(cls, query: str) -> Filter:
        f = cls()
        words = []
        for token in query.split():
            key, sep, value = token.partition(":")
            key = key.lower()
            if sep and key in ("level", "lvl", "l"):
                name = value.upper()
                matches = [i for i, w in enumerate(fmt.LEVEL_WORDS) if w.startswith(name)] if name else []
                f.min_level = matches[0] if matches else 0
            elif sep and key == "desk":
                f.desk = value.lower()
            elif sep and key in ("strategy", "strat"):
                f.strategy = value.lower()
            else:
                words.append(token.lower())
        f.text = " ".join(words)
        return f

    def describe(self) -> str:
        parts = []
        if self.text:
            parts.append(f'"{self.text}"')
        if self.min_level:
            parts.append(f"level>={fmt.LEVEL_WORDS[self.min_level]}")
        if self.desk:
            parts.append(f"desk:{self.desk}")
        if self.strategy:
            parts.append(f"strategy:{self.strategy}")
        return " ".join(parts)


def _contains(values: tuple[str, ...], needle: str) -> np.ndarray:
    arr = np.asarray(values, dtype=str)
    return np.char.find(np.char.lower(arr), needle) >= 0


@dataclass
class TableModel:
    """The rows to show, in order, and which account the cursor is on."""

    sort_key: str = "ratio"
    reverse: bool = False
    filter: Filter = field(default_factory=Filter)
    snapshot: AccountsSnapshot | None = None
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    cursor: int = 0
    selected: str | None = None
    _static_key: tuple[int, str, str, str] | None = None
    _static_mask: np.ndarray | None = None
    _ranks: dict[str, np.ndarray] = field(default_factory=dict)
    _ids_ref: tuple[str, ...] | None = None
    _index: dict[str, int] = field(default_factory=dict)

    @property
    def column(self) -> Column:
        return COLUMNS[COLUMN_KEYS.index(self.sort_key)]

    def update(self, snapshot: AccountsSnapshot) -> None:
        if snapshot.ids is not self._ids_ref:
            self._ids_ref = snapshot.ids
            self._index = {a: i for i, a in enumerate(snapshot.ids)}
            self._ranks.clear()
            self._static_key = None
        self.snapshot = snapshot
        self._reorder()

    def set_filter(self, query: str) -> None:
        self.filter = Filter.parse(query)
        self._reorder()

    def cycle_sort(self) -> None:
        self.sort_key = COLUMN_KEYS[(COLUMN_KEYS.index(self.sort_key) + 1) % len(COLUMN_KEYS)]
        self.reverse = False
        self._reorder()

    def invert(self) -> None:
        self.reverse = not self.reverse
        self._reorder()

    # -- cursor ------------------------------------------------------------------------
    def move(self, delta: int) -> None:
        self.set_cursor(self.cursor + delta)

    def set_cursor(self, row: int) -> None:
        n = len(self.order)
        self.cursor = min(max(row, 0), max(n - 1, 0))
        self.selected = self.snapshot.ids[int(self.order[self.cursor])] if n and self.snapshot else None

    def select(self, account_id: str) -> bool:
        index = self._index.get(account_id)
        if index is None:
            return False
        rows = np.flatnonzero(self.order == index)
        if not rows.size:
            return False
        self.set_cursor(int(rows[0]))
        return True

    @property
    def selected_index(self) -> int | None:
        n = len(self.order)
        return int(self.order[self.cursor]) if n else None

    # -- ordering ----------------------------------------------------------------------
    def _text_mask(self, snap: AccountsSnapshot) -> np.ndarray | None:
        f = self.filter
        key = (len(snap.ids), f.text, f.desk, f.strategy)
        if key != self._static_key:
            mask = np.ones(len(snap.ids), dtype=bool)
            if f.text:
                hay = tuple(
                    f"{i} {n} {d} {s}"
                    for i, n, d, s in zip(snap.ids, snap.names, snap.desks, snap.strategies, strict=True)
                )
                mask &= _contains(hay, f.text)
            if f.desk:
                mask &= _contains(snap.desks, f.desk)
            if f.strategy:
                mask &= _contains(snap.strategies, f.strategy)
            self._static_key, self._static_mask = key, mask
        return self._static_mask

    def _rank(self, snap: AccountsSnapshot, name: str) -> np.ndarray:
        """Rank of each account by a text column (computed once per set of accounts)."""
        if name not in self._ranks:
            values = np.asarray(getattr(snap, name), dtype=str)
            ranks = np.empty(len(values), dtype=np.int64)
            ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
            self._ranks[name] = ranks
        return self._ranks[name]

    def _sort_values(self, snap: AccountsSnapshot, col: Column) -> np.ndarray:
        if col.sort_by in ("ids", "desks", "strategies"):
            return self._rank(snap, col.sort_by).astype(np.float64)
        if col.sort_by == "age":
            return snap.time - snap.columns["updated_at"]
        return np.asarray(snap.columns[col.sort_by], dtype=np.float64)

    def _reorder(self) -> None:
        snap = self.snapshot
        if snap is None:
            return
        mask = self._text_mask(snap)
        if self.filter.min_level:
            mask = mask & (snap.columns["level"] >= self.filter.min_level)
        rows = np.flatnonzero(mask)
        col = self.column
        values = self._sort_values(snap, col)[rows]
        descending = col.descending != self.reverse
        if col.key == "level":
            # Most severe first, then the lowest ratio within a level.
            ratio = snap.columns["margin_ratio"][rows]
            keys = (ratio if descending else -ratio, -values if descending else values)
            order = rows[np.lexsort(keys)]
        else:
            # NaN (unknown) always sorts last, whichever the direction.
            key = np.where(np.isnan(values), np.inf, -values if descending else values)
            order = rows[np.argsort(key, kind="stable")]
        self.order = order
        if self.selected is None or not self.select(self.selected):
            self.set_cursor(self.cursor)
