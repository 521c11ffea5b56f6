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
