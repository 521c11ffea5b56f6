"""GuardView: the one interface the console uses to see and command a guard.

The embedded guard implements it directly; a remote implementation over HTTP/WebSocket
implements the same protocol, so the console never knows which it talks to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from engine.events import Subscription
from engine.operators import Operator

# Columns of the accounts snapshot, in display order. Numbers are float64 arrays (NaN where
# unknown); codes are small ints whose names are in the vocabulary tables below.
SNAPSHOT_COLUMNS = (
    "equity",
    "maintenance_margin",
    "margin_ratio",
    "level",
    "ratio_level",
    "utilization",
    "leverage",
    "worst_liq_distance_pct",
    "data_state",
    "trading_state",
    "held_until",
    "updated_at",
    "warning",
    "critical",
    "liquidation",
)


@dataclass(frozen=True)
class AccountsSnapshot:
    """A versioned columnar copy of every account's state (safe to keep; never mutated)."""

    version: int
    time: float
    ids: tuple[str, ...]
    names: tuple[str, ...]
    desks: tuple[str, ...]
    strategies: tuple[str, ...]
    columns: dict[str, np.ndarray]
    summary: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class CommandResult:
    ok: bool
    message: str
    action_id: str | None = None
    plan: dict[str, Any] | None = None


class GuardView(Protocol):
    def snapshot(self) -> AccountsSnapshot: ...

    def account_detail(self, account_id: str) -> dict[str, Any]: ...

    def subscribe(self, maxsize: int = 1000, kinds: set[str] | None = None) -> Subscription: ...

    def status(self) -> dict[str, Any]: ...

    def recent_actions(self, limit: int = 100) -> list[dict[str, Any]]: ...

    async def command(self, name: str, operator: Operator, **params: Any) -> CommandResult: ...

    # ---- risk analytics (engine.risk_view; the API under /analytics; plain JSON-able dicts).
    # Bad input (unknown account/symbol/scenario, impossible numbers) raises KeyError for an
    # unknown account and engine.model.InputError (a ValueError) for the rest, naming what is wrong.

    def book_risk(self) -> dict[str, Any]:
        """Book-level figures: {"version", "time", "confidence", "horizon_days",
        "var": {"parametric", "historical", "monte_carlo"}, "es": {"parametric", "historical",
        "monte_carlo"} (positive amounts, quote currency, null when not computable),
        "scenarios": [{"name", "description", "total_pnl", "worst_account", "worst_ratio",
        "levels_after": {"SAFE": n, "WARNING": n, "CRITICAL": n, "LIQUIDATION": n}}] (the
        configured named scenarios), "margin": {"methods": {method: total initial margin},
        "maintenance_addons": {"volatility": total | null, "impact": total | null}}}."""
        ...

    def stress(self, scenario: dict[str, Any] | str, top: int = 20) -> dict[str, Any]:
        """Apply a named scenario (its name) or an ad-hoc one ({"name"?, "moves": {key: fraction},
        "vol_shocks": {key: fraction}}, keys symbol > underlying > group > "*"). Returns
        {"scenario": {"name", "description", "moves", "vol_shocks"}, "total_pnl",
        "levels_after": {level name: count}, "accounts": [{"account", "equity_before",
        "equity_after", "ratio_before", "ratio_after", "level_before", "level_after",
        "drivers": [symbol, ...]}]} with accounts sorted by ratio_after, worst first, at most `top`."""
        ...

    def scenario_grid(
        self, account_id: str, price_moves: list[float] | None = None, vol_shocks: list[float] | None = None
    ) -> dict[str, Any]:
        """Price moves (rows) x volatility shocks (columns) for one account: {"account",
        "price_moves", "vol_shocks", "pnl", "equity", "ratio" (lists of rows), "level" (rows of
        level names)}."""
        ...

    def what_if(
        self, account_id: str, symbol: str, side: str, qty: float, price: float | None = None
    ) -> dict[str, Any]:
        """Look-ahead for a hypothetical fill (price None: at the mark): {"account", "symbol",
        "side", "qty", "price", "qty_before", "qty_after", "equity_before", "equity_after",
        "maintenance_margin_before", "maintenance_margin_after", "ratio_before", "ratio_after",
        "level_before", "level_after", "realized_pnl"}."""
        ...
