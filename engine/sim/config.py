"""The `[simulator]` section of the configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimMarket(Strict):
    """Starting mark and volatility of one simulated instrument."""

    price: float = Field(gt=0, description="starting mark price, quote currency")
    volatility: float = Field(gt=0, lt=10, description="annualised volatility, fraction (0.6 = 60%)")


class SimAccount(Strict):
    """A demo account; its positions are generated from the seed."""

    id: str = Field(min_length=1)
    name: str | None = None
    desk: str = "default"
    strategy: str = "default"
    risk_class: str = "standard"
    wallet_balance: float = Field(gt=0)
    margin_mode: Literal["cross", "isolated"] = "cross"
    leverage: float = Field(gt=0, le=100, description="gross notional / wallet at the start")
    positions: int = Field(ge=1, le=100, description="number of positions to open")
    long_bias: float = Field(default=0.6, ge=0, le=1, description="share of positions that are long")


class SimulatorConfig(Strict):
    scenario: Literal["calm", "demo", "crash"] = "demo"
    seed: int = 7
    tick_interval: float = Field(default=0.25, gt=0, le=60, description="simulated seconds between price updates")
    markets: dict[str, SimMarket] = Field(default_factory=dict)
    accounts: list[SimAccount] = Field(default_factory=list)
