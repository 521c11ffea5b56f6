"""Risk heatmap (desks or strategies against levels) and analytics: the book's VaR/ES and
named stress scenarios (GuardView.book_risk, fetched every few seconds in a worker), and past
actions (ratio before and after, duration, cost, and how long accounts took to recover) from
the journal."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, ClassVar

import numpy as np
from textual import work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import Footer, Static

from capguard_tui import fmt, keys
from capguard_tui.state import ConsoleState
from capguard_tui.widgets import risk
from capguard_tui.widgets.panels import RISK_VARS


class InsightScreen(Screen[None]):
    BINDINGS = keys.bindings("screen")

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static("", id="insight")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.refresh_data(self.app.state)  # type: ignore[attr-defined]

    def refresh_data(self, state: ConsoleState) -> None:
        raise NotImplementedError

    def action_back(self) -> None:
        self.app.switch_mode("overview")


class HeatmapScreen(InsightScreen):
    BINDINGS: ClassVar[list[BindingType]] = [*InsightScreen.BINDINGS, *keys.bindings("heatmap")]
    group = "desks"

    def refresh_data(self, state: ConsoleState) -> None:
        snap = state.snapshot
        if snap is None:
            return
        names, code = np.unique(np.asarray(getattr(snap, self.group), dtype=str), return_inverse=True)
        level = np.clip(snap.columns["level"].astype(np.int64), 0, 3)
        counts = np.bincount(code * 4 + level, minlength=len(names) * 4).reshape(len(names), 4)
        equity = np.bincount(code * 4 + level, weights=np.nan_to_num(snap.columns["equity"]), minlength=len(names) * 4)
        equity = equity.reshape(len(names), 4)
        label = "desk" if self.group == "desks" else "strategy"
        width = max(min(max((len(n) for n in names), default=4), 24), len(label)) + 1
        head = f"[b]{label:<{width}}[/]" + "".join(f"[b]{w:^16}[/]" for w in fmt.LEVEL_WORDS) + "[b]   accounts[/]"
        lines = [
            f"[b]Risk heatmap[/]  {label} x level: accounts (equity)   [dim]g: desks / strategies   Esc back[/]",
            "",
            head,
        ]
        for i, name in enumerate(names):
            cells = []
            for lv in range(4):
                n = int(counts[i, lv])
                text = f"{n} ({fmt.money(equity[i, lv])})" if n else "."
                cells.append(f"[bold $risk-text on {RISK_VARS[lv]}]{text:^15}[/] " if n and lv else f"{text:^15} ")
            lines.append(f"{escape(str(name))[: width - 1]:<{width}}" + "".join(cells) + f"{int(counts[i].sum()):>11}")
        totals = counts.sum(axis=0)
        lines.append(f"{'all':<{width}}" + "".join(f"{int(n):^15} " for n in totals) + f"{int(totals.sum()):>11}")
        self.query_one("#insight", Static).update("\n".join(lines))

    def action_group_by(self) -> None:
        self.group = "strategies" if self.group == "desks" else "desks"
        self.refresh_data(self.app.state)  # type: ignore[attr-defined]


def _ts(iso: str | None) -> float | None:
    if not iso:
        return None
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def action_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each finished action: its decision (who, why, ratio before) joined to its outcome."""
    decisions = {r["action_id"]: r for r in records if r.get("kind") == "decision" and r.get("action_id")}
    rows = []
    for r in records:
        if r.get("kind") != "outcome":
            continue
        d = decisions.get(r.get("action_id"), {})
        start, end = _ts(d.get("ts")), _ts(r.get("ts"))
        rows.append(
            {
                "ts": r.get("ts"),
                "account": r.get("account"),
                "action_id": r.get("action_id"),
                "kind": r.get("plan_kind"),
                "reason": d.get("reason", ""),
                "operator": d.get("operator", ""),
                "ratio_before": r.get("ratio_before"),
                "ratio_after": r.get("ratio_after"),
                "seconds": end - start if start is not None and end is not None else None,
                "cost": (r.get("fees") or 0.0) + (r.get("slippage") or 0.0),
                "complete": r.get("complete"),
            }
        )
    return rows


def recoveries(records: list[dict[str, Any]]) -> list[tuple[str, str, float | None]]:
    """(account, worst level, seconds from leaving SAFE to SAFE again; None while not back)."""
    out = []
    open_: dict[str, tuple[float, str]] = {}
    for r in sorted((r for r in records if r.get("kind") == "transition"), key=lambda r: r.get("seq", 0)):
        acct, t = r.get("account"), _ts(r.get("ts"))
        if acct is None or t is None:
            continue
        if r.get("from_level") == "SAFE" and r.get("to_level") != "SAFE":
            open_[acct] = (t, r.get("to_level", ""))
        elif acct in open_:
            start, worst = open_[acct]
            to = r.get("to_level", "")
            words = fmt.LEVEL_WORDS
            if to in words and worst in words and words.index(to) > words.index(worst):
                open_[acct] = (start, to)
            if to == "SAFE":
                out.append((acct, worst, t - start))
                del open_[acct]
    out.extend((acct, worst, None) for acct, (_, worst) in open_.items())
    return out


class AnalyticsScreen(InsightScreen):
    LIMIT = 2000
    BOOK_RISK_SECONDS = 5.0  # book_risk re-values the whole book (Monte Carlo included): not at 4 Hz
    SCOPED_CSS = False  # the rules below name this screen themselves (for its -narrow class)
    CSS = """
    AnalyticsScreen #analytics-title { margin-bottom: 1; background: $panel; }
    AnalyticsScreen #book-risk { height: auto; margin-bottom: 1; }
    AnalyticsScreen #book-var { width: 48; height: auto; }
    AnalyticsScreen #book-scenarios { width: 1fr; height: auto; }
    AnalyticsScreen.-narrow #book-risk { layout: vertical; }
    AnalyticsScreen.-narrow #book-var { width: 1fr; margin-bottom: 1; }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(
                "[b]Analytics[/]  book risk, scenarios, past actions   [dim]x stress test  Esc back[/]",
                id="analytics-title",
            )
            with Horizontal(id="book-risk"):
                yield Static(risk.value_at_risk(None), id="book-var")
                yield Static(risk.scenarios(None, 80), id="book-scenarios")
            yield Static("", id="insight")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._book_risk_due = 0.0  # monotonic time of the next fetch (set when one finishes)
        self._book_risk_busy = False
        self._book_risk_error: str | None = None
        super().on_mount()

    def refresh_data(self, state: ConsoleState) -> None:
        if not self._book_risk_busy and time.monotonic() >= self._book_risk_due:
            self._book_risk_busy = True
            self.fetch_book_risk()
        self._draw_journal(state)

    @work(exclusive=True, group="book-risk")
    async def fetch_book_risk(self) -> None:
        app = self.app
        started = time.monotonic()
        try:
            app.state.book_risk = await app.ask("book_risk")  # type: ignore[attr-defined]
            self._book_risk_error = None
        except Exception as exc:  # shown in the section; notified once per distinct message
            if fmt.error_text(exc) != self._book_risk_error:
                app.view_error("book risk", exc)  # type: ignore[attr-defined]
            self._book_risk_error = fmt.error_text(exc)
        finally:
            # The next fetch is due a while after this one finished: they never pile up.
            # On a large book the figures take long to compute (on the guard's own loop when
            # embedded): wait at least 50 times as long as they took, so they stay under 2% of it.
            took = time.monotonic() - started
            self._book_risk_busy = False
            self._book_risk_due = time.monotonic() + max(self.BOOK_RISK_SECONDS, 50.0 * took)
        self.draw_book_risk()

    def draw_book_risk(self) -> None:
        figures = self.app.state.book_risk  # type: ignore[attr-defined]
        self.query_one("#book-var", Static).update(risk.value_at_risk(figures, self._book_risk_error))
        width = self.query_one("#book-scenarios").size.width
        self.query_one("#book-scenarios", Static).update(risk.scenarios(figures, max(width, 60)))

    def on_resize(self) -> None:
        if self.app.state.book_risk is not None:  # type: ignore[attr-defined]
            self.call_after_refresh(self.draw_book_risk)

    def _draw_journal(self, state: ConsoleState) -> None:
        if getattr(self, "_drawn", None) == state.changed:
            return
        self._drawn = state.changed
        try:
            records = self.app.view.recent_actions(self.LIMIT)  # type: ignore[attr-defined]
        except Exception as exc:
            self.query_one("#insight", Static).update(f"journal unavailable: {escape(str(exc))}")
            return
        rows = action_rows(records)
        lines = [
            f"[b]Actions[/] ({len(rows)} finished, from the last {len(records)} journal records)",
            f"[dim]{'time':<8} {'account':<17} {'kind':<10} {'ratio before':>12} {'after':>8} {'took':>7} "
            f"{'cost':>10}  by / why[/]",
        ]
        for r in rows[:40]:
            state_word = "" if r["complete"] else " [b]incomplete[/]"
            lines.append(
                f"{fmt.iso_hms(r['ts']):<8} {escape(str(r['account'])):<17} {escape(str(r['kind'])):<10} "
                f"{fmt.ratio(r['ratio_before']):>12} {fmt.ratio(r['ratio_after']):>8} {fmt.age(r['seconds']):>7} "
                f"{fmt.amount(r['cost']):>10}  {escape(str(r['operator']))}: {escape(str(r['reason']))}{state_word}"
            )
        if not rows:
            lines.append("[dim]no finished action yet[/]")
        rec = recoveries(records)
        lines += ["", f"[b]Time to recover[/] (leaving SAFE to SAFE again; {len(rec)} episodes)"]
        for acct, worst, seconds in rec[:30]:
            took = fmt.age(seconds) if seconds is not None else "[b]not yet[/]"
            lines.append(f"{escape(str(acct)):<17} worst {escape(worst):<12} {took}")
        if not rec:
            lines.append("[dim]no episode yet[/]")
        self.query_one("#insight", Static).update("\n".join(lines))
