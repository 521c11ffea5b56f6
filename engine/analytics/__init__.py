"""Risk analytics over the book: margin methods, VaR / ES, stress tests, scenario arrays,
barrier probabilities, projections and look-ahead. Pure functions over numpy arrays (and a
valued `Book`, never modified); no I/O, no clocks. See docs/analytics.md.

Modules: stats (normal CDF / quantile, empirical tails, correlated draws), inputs (histories,
returns, volatilities, correlations, exposures), var, span, margin_methods, maintenance,
revalue, stress, history, barrier, lookahead, report (the `capguard eval` block), bench.
"""

from engine.analytics.barrier import liquidation_touch_probability, threshold_prices, touch_probability
from engine.analytics.history import downsample, drawdown, funding_drain, project_ratio
from engine.analytics.inputs import account_exposures, book_exposure, correlation_from_groups, covariance
from engine.analytics.lookahead import LookAhead, look_ahead
from engine.analytics.maintenance import MaintenanceAdjustments, VolatilityAdjustment, adjusted_maintenance
from engine.analytics.margin_methods import InitialMargin, MarginMethod, MarginMethods, initial_margin
from engine.analytics.span import ScenarioMargin, scan_ranges, scenario_margin
from engine.analytics.stress import (
    NAMED_SCENARIOS,
    StressResult,
    StressScenario,
    scenario_grid,
    stress_ratio,
    stress_test,
)
from engine.analytics.var import RiskFigures, historical_var, monte_carlo_var, parametric_var

__all__ = [
    "NAMED_SCENARIOS",
    "InitialMargin",
    "LookAhead",
    "MaintenanceAdjustments",
    "MarginMethod",
    "MarginMethods",
    "RiskFigures",
    "ScenarioMargin",
    "StressResult",
    "StressScenario",
    "VolatilityAdjustment",
    "account_exposures",
    "adjusted_maintenance",
    "book_exposure",
    "correlation_from_groups",
    "covariance",
    "downsample",
    "drawdown",
    "funding_drain",
    "historical_var",
    "initial_margin",
    "liquidation_touch_probability",
    "look_ahead",
    "monte_carlo_var",
    "parametric_var",
    "project_ratio",
    "scan_ranges",
    "scenario_grid",
    "scenario_margin",
    "stress_ratio",
    "stress_test",
    "threshold_prices",
    "touch_probability",
]
