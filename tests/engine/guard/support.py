"""Build a real Guard on the bundled demo config with a hand-driven clock."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from engine.clock import SimClock
from engine.config import Config, load_config
from engine.guard import Guard
from engine.operators import Operator, Role

T0 = 1_780_000_000.0
RISK = Operator("rita", Role.RISK, "test")
TRADER = Operator("tom", Role.TRADER, "test")
VIEWER = Operator("vic", Role.VIEWER, "test")


def config(**sections: dict[str, Any]) -> Config:
    base = load_config().config
    update = {name: getattr(base, name).model_copy(update=values) for name, values in sections.items()}
    return base.model_copy(update=update)


def make_guard(tmp_path: Path, scenario: str = "crash", cfg: Config | None = None, **kw: Any) -> Guard:
    clock = SimClock(start=T0, paused=True)
    return Guard(cfg or config(), clock=clock, journal_path=tmp_path / "journal.sqlite3", scenario=scenario, **kw)


async def drive(g: Guard, seconds: float, dt: float = 0.25) -> None:
    """Advance simulated time in steps, evaluating and letting actions run between steps."""
    for _ in range(round(seconds / dt)):
        g.clock.advance(dt)
        g.evaluate(g.clock.now())
        g.protection.maybe_act(g.clock.now())
        for _ in range(3):
            await asyncio.sleep(0.002)


async def settle(g: Guard, limit: float = 120.0, dt: float = 0.25) -> None:
    """Keep time moving (prices frozen) until no action is in flight."""
    g.feed.paused = True
    waited = 0.0
    while g.protection.active and waited < limit:
        g.clock.advance(dt)
        waited += dt
        g.protection.maybe_act(g.clock.now())
        await asyncio.sleep(0.005)
    g.feed.paused = False
