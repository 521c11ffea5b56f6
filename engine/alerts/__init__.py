"""Alerting: the notifier (hub -> outbox -> Apprise), its configuration, the outbox, and the
vectorised "approaching the next level" screen the guard loop uses."""

from engine.alerts.approach import approaching, ratio_slope
from engine.alerts.config import AlertsConfig
from engine.alerts.notifier import Notifier
from engine.alerts.outbox import Outbox

__all__ = ["AlertsConfig", "Notifier", "Outbox", "approaching", "ratio_slope"]
