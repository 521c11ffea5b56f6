"""The `[simulator]` section of the configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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
    market_correlation: float = Field(
        default=0.5, ge=0, lt=1, description="correlation of returns between instruments of different groups"
    )
    group_correlation: float = Field(
        default=0.85, ge=0, lt=1, description="correlation of returns between instruments of the same group"
    )
    markets: dict[str, SimMarket] = Field(default_factory=dict)
    accounts: list[SimAccount] = Field(default_factory=list)

    @model_validator(mode="after")
    def _correlations_ordered(self) -> SimulatorConfig:
        if self.group_correlation < self.market_correlation:
            raise ValueError(
                f"group_correlation ({self.group_correlation}) must be at least "
                f"market_correlation ({self.market_correlation})"
            )
        ids = [a.id for a in self.accounts]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"accounts: duplicate id(s) {', '.join(dup)}")
        return self
