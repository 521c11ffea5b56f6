"""The scripted scenarios, played through a Book of the bundled demo accounts.

The protection ladder is not involved: positions are untouched and the levels are the Book's
instantaneous classification at every tick.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.levels import Level

SAFE, WARNING, CRITICAL, LIQUIDATION = (int(v) for v in Level)


def returned_to_safe(levels: np.ndarray) -> list[int]:
    """Accounts that are SAFE at some tick after having been at WARNING or worse."""
    out = []
    for a in range(levels.shape[1]):
        lv = levels[:, a]
        bad = np.flatnonzero(lv >= WARNING)
        if bad.size and (lv[bad[0] :] == SAFE).any():
            out.append(a)
    return out


@pytest.mark.parametrize("seed", [None, 1, 2])  # None: the seed in config.toml
def test_demo_visits_every_level_within_two_minutes_and_recovers(play, seed):
    run = play("demo", 120.0, seed)
    levels = run.levels
    assert run.times[-1] == 120.0
    # the book starts (almost) all SAFE
    assert (levels[0] == SAFE).mean() >= 0.8
    visited = set(np.unique(levels).tolist())
    assert {WARNING, CRITICAL, LIQUIDATION} <= visited
    # each level is reached by an account that started SAFE
    started_safe = levels[0] == SAFE
    for level in (WARNING, CRITICAL, LIQUIDATION):
        assert ((levels == level) & started_safe).any(), Level(level).name
    back = returned_to_safe(levels)
    assert back, "no account came back to SAFE"
    # ... including one that had been in LIQUIDATION
    assert any((levels[:, a] == LIQUIDATION).any() for a in back)
    # and the slide (from t=10 s) is what does it
    first_liquidation = np.flatnonzero((levels == LIQUIDATION).any(axis=1))[0]
    assert run.times[first_liquidation] > 10.0


def test_demo_level_changes_are_gradual(play):
    """The demo slides: accounts step through the levels one at a time (a random jump may
    rarely skip one)."""
    change = np.abs(np.diff(play("demo", 120.0).levels.astype(int), axis=0))
    changes = change[change > 0]
    assert changes.size >= 20
    assert (changes == 1).mean() >= 0.95


@pytest.mark.parametrize("seed", [None, 5])
def test_crash_drops_the_main_group_20_to_30_percent_with_a_gap(play, seed):
    run = play("crash", 120.0, seed)
    sim = run.simulator
    main = np.array(sim.groups) == sim.groups[0]  # the group of the first instrument (majors)
    rel = run.prices[:, main] / run.prices[0, main] - 1.0
    trough = rel.min(axis=0)
    assert ((trough <= -0.20) & (trough >= -0.30)).all(), trough
    # every instrument of every group falls too
    assert (run.prices.min(axis=0) / run.prices[0] - 1.0 <= -0.20).all()
    # the fall begins within the first 10 s ...
    begun = np.flatnonzero((rel < -0.02).all(axis=1))
    assert begun.size and run.times[begun[0]] <= 10.0
    # ... and includes a gap: one tick moving the whole group several percent
    step = np.diff(np.log(run.prices[:, main]), axis=0)
    gap = int(np.argmin(step.max(axis=1)))
    assert step[gap].max() <= -0.05
    assert run.times[gap + 1] <= 10.0


@pytest.mark.parametrize("seed", [None, 5])
def test_crash_gap_takes_accounts_straight_to_liquidation(play, seed):
    levels = play("crash", 120.0, seed).levels
    before, after = levels[:-1], levels[1:]
    jumped = (before <= WARNING) & (after == LIQUIDATION)
    assert jumped.any(), "no account went from SAFE or WARNING to LIQUIDATION in one tick"
    assert ((before == SAFE) & (after == LIQUIDATION)).any()
