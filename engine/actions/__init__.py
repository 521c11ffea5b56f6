"""Protective actions: impact model, deleverage and liquidation plans, and their execution.

Plans (`plan_deleverage`, `cheapest_step`, `plan_liquidation`) are pure: they read the Book
and send nothing. The `Executor` sends a plan's reduce-only orders through a Broker, journals
every intent before acting on it, books fills into the Book, and reports an `Outcome`.
"""

from engine.actions.deleverage import DeleverageParams, cheapest_step, plan_deleverage
from engine.actions.execute import Executor, JournalSink, Outcome, OwnOrderLimits, RetryPolicy
from engine.actions.impact import ImpactModel
from engine.actions.liquidate import LiquidationParams, plan_liquidation
from engine.actions.plan import Plan, PlannedOrder

__all__ = [
    "DeleverageParams",
    "Executor",
    "ImpactModel",
    "JournalSink",
    "LiquidationParams",
    "Outcome",
    "OwnOrderLimits",
    "Plan",
    "PlannedOrder",
    "RetryPolicy",
    "cheapest_step",
    "plan_deleverage",
    "plan_liquidation",
]
