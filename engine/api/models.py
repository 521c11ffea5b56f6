"""Request bodies (refused whole on any unknown or bad field) and the WebSocket messages.

The WebSocket message models are documentation and contract: the broadcaster builds plain
dicts for speed, and the tests validate what it sends against these models. Their JSON Schemas
are served at GET /api/v1/capital/schemas and reproduced in docs/api.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

LevelName = Literal["SAFE", "WARNING", "CRITICAL", "LIQUIDATION"]
DataStateName = Literal["OK", "STALE", "INVALID"]
TradingStateName = Literal["ACTIVE", "REDUCING", "HALTED"]
Strategy = Literal["proportional", "risk", "time", "market"]
Method = Literal["market", "limit", "stop", "twap"]
Ratio = Annotated[float, Field(gt=0, le=1e6)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------- requests
class PlannedOrder(Body):
    symbol: str = Field(min_length=1, max_length=64)
    qty: float = Field(allow_inf_nan=False)


class DeleverageRequest(Body):
    strategy: Strategy | None = Field(default=None, description="default: [deleverage] strategy")
    target_ratio: Ratio | None = Field(default=None, description="margin ratio to reach (not with fraction)")
    fraction: float | None = Field(default=None, gt=0, le=1, description="share of exposure to cut (not with target)")
    method: Method | None = Field(default=None, description="default: [deleverage] method")
    dry_run: bool = Field(default=False, description="plan only: nothing is sent (viewer role suffices)")
    confirm_plan: list[PlannedOrder] | None = Field(
        default=None, max_length=1000, description="the orders shown in a dry run: refused (409) if the plan moved"
    )

    @model_validator(mode="after")
    def _target_or_fraction(self) -> DeleverageRequest:
        if self.target_ratio is not None and self.fraction is not None:
            raise ValueError("give target_ratio or fraction, not both")
        return self


class LiquidateRequest(Body):
    confirm: str = Field(min_length=1, max_length=200, description="the account id typed back")
    mode: Literal["immediate", "orderly"] | None = Field(default=None, description="default: [liquidation] mode")


class ThresholdsRequest(Body):
    warning: Ratio | None = None
    critical: Ratio | None = None
    liquidation: Ratio | None = None
    reason: str = Field(default="", max_length=500)

    @model_validator(mode="after")
    def _something(self) -> ThresholdsRequest:
        if self.warning is None and self.critical is None and self.liquidation is None:
            raise ValueError("give at least one of warning, critical, liquidation")
        return self


class HoldRequest(Body):
    duration: float = Field(gt=0, le=86_400, description="seconds automatic action stays held (at most 24 h)")
    reason: str = Field(min_length=1, max_length=500)


class ReasonRequest(Body):
    reason: str = Field(min_length=1, max_length=500)


class OptionalReasonRequest(Body):
    reason: str = Field(default="", max_length=500)


class KillSwitchRequest(Body):
    engage: bool
    reason: str = Field(min_length=1, max_length=500)


class ScheduleRequest(Body):
    account: str = Field(min_length=1, max_length=200)
    action: Literal["deleverage", "liquidate"] = "deleverage"
    at: datetime | None = Field(default=None, description="ISO-8601 time (not with in_seconds)")
    in_seconds: float | None = Field(default=None, gt=0, le=7 * 86_400, description="seconds from now (not with at)")
    params: dict[str, Any] = Field(default_factory=dict, description="the action's own parameters")

    @model_validator(mode="after")
    def _when(self) -> ScheduleRequest:
        if (self.at is None) == (self.in_seconds is None):
            raise ValueError("give exactly one of at or in_seconds")
        return self


ShockKey = Annotated[str, Field(min_length=1, max_length=64)]
Shock = Annotated[float, Field(gt=-1, le=1e6, allow_inf_nan=False)]
Shocks = Annotated[dict[ShockKey, Shock], Field(max_length=1000)]


class StressRequest(Body):
    """A configured scenario by name, or an ad-hoc one (moves and/or vol_shocks)."""

    scenario: str | None = Field(default=None, min_length=1, max_length=200, description="a configured scenario")
    name: str | None = Field(default=None, min_length=1, max_length=200, description="ad hoc: its name")
    description: str | None = Field(default=None, max_length=500, description="ad hoc: its description")
    moves: Shocks | None = Field(default=None, description='ad hoc: price moves by symbol/underlying/group/"*"')
    vol_shocks: Shocks | None = Field(default=None, description="ad hoc: relative volatility shocks, same keys")
    top: int = Field(default=20, ge=0, le=100_000, description="accounts listed, worst ratio after first")

    @model_validator(mode="after")
    def _named_or_ad_hoc(self) -> StressRequest:
        ad_hoc = self.moves is not None or self.vol_shocks is not None
        if self.scenario is not None and (ad_hoc or self.name is not None or self.description is not None):
            raise ValueError("give scenario (a configured name) or moves/vol_shocks, not both")
        if self.scenario is None and not ad_hoc:
            raise ValueError("give scenario (a configured name) or moves and/or vol_shocks")
        return self


class WhatIfRequest(Body):
    symbol: str = Field(min_length=1, max_length=64)
    side: Literal["buy", "sell"]
    qty: float = Field(gt=0, le=1e15, allow_inf_nan=False, description="contracts")
    price: float | None = Field(default=None, gt=0, le=1e15, allow_inf_nan=False, description="default: the mark")


class CommandResponse(BaseModel):
    ok: bool
    message: str
    action_id: str | None = None
    plan: dict[str, Any] | None = None


# ---------------------------------------------------------------------------- WebSocket messages
Num = float | None
Time = str | None  # ISO-8601 UTC, null when unknown


class RiskColumns(BaseModel):
    """One list per column, one entry per account of `ids` (same order)."""

    model_config = ConfigDict(extra="forbid")
    equity: list[Num]
    maintenance_margin: list[Num]
    margin_ratio: list[Num]
    level: list[LevelName]
    ratio_level: list[LevelName | None]
    utilization: list[Num]
    leverage: list[Num]
    worst_liq_distance_pct: list[Num]
    data_state: list[DataStateName]
    trading_state: list[TradingStateName]
    held_until: list[Time]
    updated_at: list[Time]
    warning: list[Num]
    critical: list[Num]
    liquidation: list[Num]


class MarginColumns(BaseModel):
    model_config = ConfigDict(extra="forbid")
    equity: list[Num]
    maintenance_margin: list[Num]
    initial_margin: list[Num]
    free_margin: list[Num]
    margin_ratio: list[Num]
    utilization: list[Num]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seq: int = Field(description="per channel, +1 at every message published on it")
    time: str = Field(description="engine time of the state, ISO-8601 UTC")


class RiskStatusSnapshot(_Message):
    type: Literal["snapshot"]
    channel: Literal["risk-status"]
    version: int
    ids: list[str]
    names: list[str]
    desks: list[str]
    strategies: list[str]
    columns: RiskColumns
    summary: dict[str, Any] = Field(description="GET /status's guard part")


class RiskStatusDelta(_Message):
    type: Literal["delta"]
    channel: Literal["risk-status"]
    version: int
    ids: list[str] = Field(description="only the accounts whose level, ratio or states changed")
    columns: RiskColumns
    summary: dict[str, Any]


class MarginSnapshot(_Message):
    type: Literal["snapshot"]
    channel: Literal["margin-updates"]
    version: int
    ids: list[str]
    columns: MarginColumns


class MarginDelta(_Message):
    type: Literal["delta"]
    channel: Literal["margin-updates"]
    version: int
    ids: list[str] = Field(description="only the accounts whose equity, margin or ratio changed")
    columns: MarginColumns


class EventRecord(BaseModel):
    """An engine event (guard.subscribe) or, in a snapshot, the journal record it came from."""

    model_config = ConfigDict(extra="allow")
    type: Literal["alert", "ack", "action", "transition", "data"]
    ts: str
    account: str | None = None


class EventsSnapshot(_Message):
    type: Literal["snapshot"]
    channel: Literal["alerts", "actions"]
    events: list[EventRecord] = Field(description="recent events from the journal, oldest first")


class EventsBatch(_Message):
    type: Literal["events"]
    channel: Literal["alerts", "actions"]
    events: list[EventRecord] = Field(description="events since the last publish, oldest first")


class Heartbeat(_Message):
    type: Literal["heartbeat"]
    channel: Literal["risk-status", "margin-updates", "alerts", "actions"]


RiskStatusMessage = Annotated[RiskStatusSnapshot | RiskStatusDelta | Heartbeat, Field(discriminator="type")]
MarginMessage = Annotated[MarginSnapshot | MarginDelta | Heartbeat, Field(discriminator="type")]
EventsMessage = Annotated[EventsSnapshot | EventsBatch | Heartbeat, Field(discriminator="type")]

CHANNEL_MESSAGES: dict[str, Any] = {
    "risk-status": RiskStatusMessage,
    "margin-updates": MarginMessage,
    "alerts": EventsMessage,
    "actions": EventsMessage,
}
ADAPTERS: dict[str, TypeAdapter[Any]] = {name: TypeAdapter(t) for name, t in CHANNEL_MESSAGES.items()}


def message_schemas() -> dict[str, Any]:
    """The JSON Schema of every channel's messages, by channel name."""
    return {name: adapter.json_schema(mode="serialization") for name, adapter in ADAPTERS.items()}
