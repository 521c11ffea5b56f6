"""Helpers for the console tests: a real Guard on a frozen simulated clock, its journal and
config in a temporary directory, the console app over it, and ways to drive and read them."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from capguard_tui.app import CapguardApp
from engine.clock import SimClock
from engine.config import ConfigWriter, LoadedConfig, bundled_config_path, load_config
from engine.guard import Guard
from engine.operators import Operator, Role

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z: every journal time in these tests is fixed
ROOT = Path(__file__).resolve().parents[2]


def copy_config(tmp_path: Path, edit: Callable[[str], str] | None = None) -> LoadedConfig:
    """A temporary copy of the bundled config.toml (optionally edited), loaded."""
    path = tmp_path / "config.toml"
    text = bundled_config_path().read_text(encoding="utf-8")
    path.write_text(edit(text) if edit else text, encoding="utf-8")
    return load_config(path)


def make_guard(tmp_path: Path, loaded: LoadedConfig) -> Guard:
    guard = Guard(
        loaded.config,
        clock=SimClock(start=START, paused=True),
        journal_path=tmp_path / "j.sqlite3",
        paused=True,
    )
    guard.config_writer = ConfigWriter(loaded)
    return guard


def make_app(guard: Guard, role: Role = Role.RISK, **kwargs: object) -> CapguardApp:
    cfg = guard.config
    return CapguardApp(
        guard,
        Operator("tester", role),
        guard=guard,
        run_guard=kwargs.pop("run_guard", False),  # type: ignore[arg-type]
        defaults={"strategy": cfg.deleverage.strategy, "method": cfg.deleverage.method, "mode": cfg.liquidation.mode},
        **kwargs,  # type: ignore[arg-type]
    )


async def settle(guard: Guard) -> None:
    """Let every action the guard started run to its end (the sim broker answers at once)."""
    for _ in range(20):
        tasks = list(guard.protection.active.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)


async def drive(guard: Guard, seconds: float, step: float | None = None) -> None:
    """Run simulated time forward by hand: prices move, the ladder steps, actions run."""
    step = step or guard.feed.tick_interval
    guard.feed.paused = False
    t = 0.0
    while t < seconds:
        guard.clock.advance(step)
        t += step
        now = guard.clock.now()
        guard.evaluate(now)
        guard.protection.maybe_act(now)
        await settle(guard)
    guard.feed.paused = True


def screen_text(app: CapguardApp) -> str:
    """What the terminal shows, as plain text."""
    width, height = app.size
    console = Console(
        width=width, height=height, file=io.StringIO(), force_terminal=True, color_system=None, record=True
    )
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def journal_kinds(guard: Guard, kind: str, account: str | None = None) -> list[dict]:
    return guard.journal.records(kind=kind, account=account)
