"""What the console remembers between refreshes: the latest snapshot, the action log and the
alerts, all fed from the guard's events and journal. Nothing here is computed."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from capguard_tui import fmt
from engine.view import AccountsSnapshot

LOG_CAP = 300  # action log lines kept (newest first)
ALERT_CAP = 1000


@dataclass
class LogLine:
    ts: str  # ISO-8601 UTC
    account: str | None
    kind: str
    text: str
    ok: bool = True


@dataclass
class Alert:
    ts: str
    account: str | None
    severity: str
    category: str
    message: str
    alert_id: str | None = None
    acknowledged_by: str | None = None

    @property
    def key(self) -> str:
        return self.alert_id or f"{self.ts} {self.account} {self.message}"

    @property
    def needs_ack(self) -> bool:
        return self.acknowledged_by is None and self.severity != "info"


def alert_from(record: dict[str, Any]) -> Alert:
    return Alert(
        ts=str(record.get("ts", "")),
        account=record.get("account"),
        severity=str(record.get("severity", "info")),
        category=str(record.get("category", "")),
        message=str(record.get("message", "")),
        alert_id=record.get("alert_id"),
    )


@dataclass
class ConsoleState:
    snapshot: AccountsSnapshot | None = None
    log: deque[LogLine] = field(default_factory=lambda: deque(maxlen=LOG_CAP))
    alerts: deque[Alert] = field(default_factory=lambda: deque(maxlen=ALERT_CAP))  # newest first
    _alerts_by_key: dict[str, Alert] = field(default_factory=dict)
    changed: int = 0  # bumped when the log or the alerts change (panels redraw only then)
    book_risk: dict[str, Any] | None = None  # the latest GuardView.book_risk() answer

    def load_journal(self, records: list[dict[str, Any]]) -> None:
        """Seed from the journal (newest first): past alerts and the recent action log."""
        for r in reversed(records):
            self._ingest(r, r.get("kind", ""))

    def ingest(self, events: list[dict[str, Any]]) -> None:
        for e in events:
            self._ingest(e, e.get("type", ""))

    def _ingest(self, record: dict[str, Any], kind: str) -> None:
        if kind == "alert":
            alert = alert_from(record)
            if alert.key in self._alerts_by_key:
                return
            self._alerts_by_key[alert.key] = alert
            self.alerts.appendleft(alert)
        elif kind == "ack" or (
            kind == "operator" and record.get("command") == "acknowledge" and not record.get("refused")
        ):
            # An acknowledgement from any console or the API, as the engine journaled it.
            alert = self._alerts_by_key.get(str(record.get("alert_id")))
            if alert is not None and alert.acknowledged_by is None:
                alert.acknowledged_by = str(record.get("operator", "?"))
            self.changed += 1
            if kind == "ack":
                return
        elif kind == "sample":
            return
        self.log.appendleft(LogLine(str(record.get("ts", "")), record.get("account"), kind, fmt.record_text(record)))
        self.changed += 1

    def note(self, ts: str, account: str | None, text: str, ok: bool) -> None:
        """An operator command's outcome, as the engine answered it."""
        self.log.appendleft(LogLine(ts, account, "command", text, ok))
        self.changed += 1

    def open_alerts(self, account: str | None = None) -> list[Alert]:
        return [a for a in self.alerts if a.needs_ack and (account is None or a.account == account)]
