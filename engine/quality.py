"""Price data quality: which instruments may be acted on.

An instrument is STALE when its last mark is older than the maximum age, INVALID when it has
no mark or the last update jumped beyond the sanity band. A jump is not applied to the book:
it is held as pending and accepted only when the next updates confirm it (a real gap is
confirmed by the prices after it; a bad print is not). Accounts take the worst state of the
instruments they hold, and the ladder never acts on an account whose data is not OK.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from engine.ladder import DataState


class DataQualityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_age: float = Field(default=5.0, gt=0, description="seconds after which a mark is STALE")
    sanity_band: float = Field(default=0.25, gt=0, lt=10, description="largest accepted move per update, fraction")
    confirmations: int = Field(default=2, ge=1, le=20, description="updates that must confirm a jump")


class PriceGate:
    """Screens incoming marks per instrument before they reach the book."""

    def __init__(self, n_instruments: int, config: DataQualityConfig) -> None:
        self.config = config
        self.pending = np.full(n_instruments, np.nan)  # a jumped price awaiting confirmation
        self.confirmed = np.zeros(n_instruments, dtype=np.int64)
        self.jumped = np.zeros(n_instruments, dtype=bool)
        self.rejected = np.zeros(n_instruments, dtype=np.int64)  # non-finite or non-positive prints

    def screen(self, instruments: np.ndarray, prices: np.ndarray, current: np.ndarray) -> np.ndarray:
        """Return a mask of the updates that may be applied; the others are held or refused."""
        prices = np.asarray(prices, dtype=np.float64)
        sane = np.isfinite(prices) & (prices > 0)
        np.add.at(self.rejected, instruments[~sane], 1)
        ref = current[instruments]
        first = np.isnan(ref)
        band = self.config.sanity_band
        with np.errstate(invalid="ignore", divide="ignore"):
            within = first | (np.abs(prices / ref - 1.0) <= band)
            pend = self.pending[instruments]
            confirms = ~np.isnan(pend) & (np.abs(prices / pend - 1.0) <= band)
        ok = sane & within
        jump = sane & ~within
        # A jump confirmed by the following prints is accepted; an unconfirmed one is dropped
        # once prices come back within the band.
        self.confirmed[instruments[jump & confirms]] += 1
        new_jump = jump & ~confirms
        self.pending[instruments[new_jump]] = prices[new_jump]
        self.confirmed[instruments[new_jump]] = 0
        accept_jump = jump & confirms & (self.confirmed[instruments] >= self.config.confirmations)
        ok |= accept_jump
        settled = instruments[ok]
        self.pending[settled] = np.nan
        self.confirmed[settled] = 0
        self.jumped[:] = ~np.isnan(self.pending)
        return ok

    def instrument_state(self, now: float, mark: np.ndarray, mark_time: np.ndarray) -> np.ndarray:
        state = np.zeros(mark.size, dtype=np.int8)
        state[now - mark_time > self.config.max_age] = DataState.STALE
        state[np.isnan(mark) | self.jumped] = DataState.INVALID
        return state


def account_state(
    inst_state: np.ndarray, pos_instrument: np.ndarray, seg_starts: np.ndarray, nonempty: np.ndarray, n_accounts: int
) -> np.ndarray:
    """Worst data state of the instruments each account holds (OK for accounts with none)."""
    out = np.zeros(n_accounts, dtype=np.int8)
    if seg_starts.size:
        out[nonempty] = np.maximum.reduceat(inst_state[pos_instrument], seg_starts)
    return out
