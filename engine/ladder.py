"""The protection ladder: a per-account state machine SAFE -> WARNING -> CRITICAL -> LIQUIDATION,
vectorised over all accounts.

- Entering a more severe level happens on the crossing; a gap goes straight to the level the
  ratio is in (one transition) and that level's actions run.
- Returning to a less severe level needs the ratio above the threshold by a hysteresis band
  AND held there for a dwell time.
- Accounts whose data is not OK (stale, missing or invalid price) do not move: the ladder
  never acts on a bad price. Their level is frozen until the data is good again.

Its output is transitions (who moved, from, to, why), never orders.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from engine.levels import LEVEL_NAMES, Level, classify


class DataState(IntEnum):
    OK = 0
    STALE = 1
    INVALID = 2


class TradingState(IntEnum):
    ACTIVE = 0
    REDUCING = 1  # only exposure-reducing orders
    HALTED = 2


# Why an account is REDUCING (bit flags; any set flag means at least REDUCING).
REDUCE_CRITICAL = 1
REDUCE_LEVERAGE = 2
REDUCE_DRAWDOWN = 4
REDUCE_BREAKER = 8
REDUCE_KILL = 16
REDUCE_REASONS = {
    REDUCE_CRITICAL: "critical",
    REDUCE_LEVERAGE: "max leverage",
    REDUCE_DRAWDOWN: "max drawdown",
    REDUCE_BREAKER: "circuit breaker",
    REDUCE_KILL: "kill switch",
}


class LadderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    hysteresis: float = Field(default=0.05, ge=0, le=1, description="ratio band above a threshold to step back")
    dwell: float = Field(default=10.0, ge=0, le=3600, description="seconds the ratio must hold before stepping back")


@dataclass(frozen=True)
class Transition:
    account: int
    from_level: Level
    to_level: Level
    ratio: float
    warning: float
    critical: float
    liquidation: float
    reason: str

    def fields(self) -> dict[str, object]:
        return {
            "from_level": self.from_level.name,
            "to_level": self.to_level.name,
            "ratio": self.ratio,
            "thresholds": {"warning": self.warning, "critical": self.critical, "liquidation": self.liquidation},
            "reason": self.reason,
        }


class Ladder:
    """Ladder state for n accounts (arrays), advanced by `step()` once per evaluation."""

    def __init__(self, n_accounts: int, config: LadderConfig) -> None:
        self.config = config
        self.level = np.zeros(n_accounts, dtype=np.int8)
        self.relief_since = np.full(n_accounts, np.nan)  # when the ratio first qualified to step back
        self.entered_at = np.full(n_accounts, np.nan)  # time of the last transition
        self.reduce_flags = np.zeros(n_accounts, dtype=np.int16)
        self.halted = np.zeros(n_accounts, dtype=bool)
        self.held_until = np.full(n_accounts, np.nan)
        self.data_state = np.zeros(n_accounts, dtype=np.int8)

    def grow(self, n_accounts: int) -> None:
        """Make room for accounts appended to the book (a later account snapshot brought them).

        They start SAFE, ACTIVE, unheld, with OK data: the next `step` classifies them (a
        transition, journaled and acted on like any other). The arrays are replaced, so read
        them from the ladder each time rather than keeping references.
        """
        extra = n_accounts - self.level.size
        if extra <= 0:
            return
        for name, fill in (
            ("level", 0),
            ("relief_since", np.nan),
            ("entered_at", np.nan),
            ("reduce_flags", 0),
            ("halted", False),
            ("held_until", np.nan),
            ("data_state", 0),
        ):
            old = getattr(self, name)
            setattr(self, name, np.concatenate([old, np.full(extra, fill, dtype=old.dtype)]))

    @property
    def trading_state(self) -> np.ndarray:
        return np.where(self.halted, TradingState.HALTED, np.where(self.reduce_flags != 0, TradingState.REDUCING, 0))

    def held(self, now: float) -> np.ndarray:
        return self.held_until > now

    def step(
        self,
        now: float,
        ratio: np.ndarray,
        ratio_level: np.ndarray,
        warning: np.ndarray,
        critical: np.ndarray,
        liquidation: np.ndarray,
    ) -> list[Transition]:
        """Advance every account; returns the transitions that happened, most severe first."""
        valid = (self.data_state == DataState.OK) & (ratio_level >= 0)
        up = valid & (ratio_level > self.level)
        h = self.config.hysteresis
        relief = classify(ratio, warning + h, critical + h, liquidation + h)
        down_candidate = valid & ~up & (relief < self.level)
        starting = down_candidate & np.isnan(self.relief_since)
        self.relief_since[starting] = now
        self.relief_since[~down_candidate] = np.nan
        down = down_candidate & (now - self.relief_since >= self.config.dwell)
        moved = np.flatnonzero(up | down)
        if not moved.size:
            return []
        new_level = np.where(up[moved], ratio_level[moved], relief[moved]).astype(np.int8)
        old_level = self.level[moved].copy()
        self.level[moved] = new_level
        self.entered_at[moved] = now
        self.relief_since[moved] = np.nan
        out = []
        for a, old, new in zip(moved.tolist(), old_level.tolist(), new_level.tolist(), strict=True):
            r = float(ratio[a])
            if new > old:
                skipped = " (gap)" if new - old > 1 else ""
                reason = f"ratio {r:.4f} crossed {LEVEL_NAMES[new]} threshold{skipped}"
            else:
                reason = f"ratio {r:.4f} held above {LEVEL_NAMES[old]} threshold + {h:g} for {self.config.dwell:g}s"
            out.append(
                Transition(
                    a, Level(old), Level(new), r, float(warning[a]), float(critical[a]), float(liquidation[a]), reason
                )
            )
        out.sort(key=lambda t: -int(t.to_level))
        return out
