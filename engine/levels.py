"""Risk levels and the instantaneous classification of a margin ratio.

margin ratio = equity / maintenance margin; higher is safer. A value exactly on a
threshold belongs to the more severe level: 2.0 is WARNING, 1.5 CRITICAL, 1.2 LIQUIDATION.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


class Level(IntEnum):
    SAFE = 0
    WARNING = 1
    CRITICAL = 2
    LIQUIDATION = 3


LEVEL_NAMES: tuple[str, ...] = tuple(level.name for level in Level)


class Thresholds(BaseModel):
    """Margin-ratio thresholds: at or below `warning` is WARNING, and so on down."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warning: float = Field(default=2.0, gt=0)
    critical: float = Field(default=1.5, gt=0)
    liquidation: float = Field(default=1.2, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if not (self.liquidation < self.critical < self.warning):
            raise ValueError(
                "thresholds must satisfy liquidation < critical < warning, got "
                f"liquidation={self.liquidation}, critical={self.critical}, warning={self.warning}"
            )
        return self


def classify(
    ratio: np.ndarray, warning: np.ndarray | float, critical: np.ndarray | float, liquidation: np.ndarray | float
) -> np.ndarray:
    """Level code (0..3) for each ratio; NaN ratios (never produced by the engine) count as SAFE."""
    return (
        (ratio <= warning).astype(np.int8)
        + (ratio <= critical).astype(np.int8)
        + (ratio <= liquidation).astype(np.int8)
    )


def classify_one(ratio: float, thresholds: Thresholds) -> Level:
    if ratio <= thresholds.liquidation:
        return Level.LIQUIDATION
    if ratio <= thresholds.critical:
        return Level.CRITICAL
    if ratio <= thresholds.warning:
        return Level.WARNING
    return Level.SAFE
