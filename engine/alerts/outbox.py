"""The alert outbox: one SQLite file (WAL) that every alert enters before anything is sent.

Two tables:

- `alerts`: one row per alert the notifier has seen (delivered, or held back as a duplicate or
  over the rate limit), with its escalation state: the tier reached, the next escalation time,
  and the acknowledgement that stops it.
- `outbox`: one row per (alert, step, channel) to deliver, with its status (pending, sent,
  failed, or cancelled when an acknowledgement made a pending escalation pointless), attempts,
  next attempt time, last error (secrets removed) and delivery time. Step 0 is the alert's
  first delivery; each escalation or reminder is the next step.

A row is marked sent only after the channel confirmed delivery, so a restart (a new Notifier
on the same file) delivers exactly what is still pending, once. A process killed in the
middle of a send may repeat that one message (at least once, never lost). One notifier at a
time per file.

Writes are small and grouped in transactions (`batch()`); times are the injected clock's
epoch seconds and are shown as ISO-8601 UTC by `status()`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.clock import iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id     TEXT PRIMARY KEY,
    account      TEXT,
    category     TEXT NOT NULL,
    severity     TEXT NOT NULL,
    message      TEXT NOT NULL,
    ts           TEXT,
    event        TEXT NOT NULL,
    mode         TEXT NOT NULL,
    suppressed   TEXT,
    dup_of       TEXT,
    tier         INTEGER NOT NULL DEFAULT 0,
    step         INTEGER NOT NULL DEFAULT 0,
    escalate_at  REAL,
    acked_at     REAL,
    acked_by     TEXT,
    created_at   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_escalate ON alerts (escalate_at) WHERE escalate_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS outbox (
    id               INTEGER PRIMARY KEY,
    alert_id         TEXT NOT NULL,
    step             INTEGER NOT NULL,
    tier             INTEGER NOT NULL,
    tier_name        TEXT,
    channel          TEXT NOT NULL,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending',
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL NOT NULL,
    last_error       TEXT,
    delivered_at     REAL,
    service          TEXT,
    created_at       REAL NOT NULL,
    UNIQUE (alert_id, step, channel)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS outbox_alert ON outbox (alert_id);
"""

STATUSES = ("pending", "sent", "failed", "cancelled")


@dataclass(frozen=True)
class OutboxRow:
    id: int
    alert_id: str
    account: str | None
    step: int
    tier: int
    tier_name: str | None
    channel: str
    title: str
    body: str
    notify_type: str
    status: str
    attempts: int
    next_attempt_at: float


@dataclass(frozen=True)
class AlertState:
    alert_id: str
    account: str | None
    category: str
    severity: str
    message: str
    ts: str | None
    mode: str
    tier: int
    step: int
    escalate_at: float | None
    acked_at: float | None
    created_at: float


def _iso(ts: float | None) -> str | None:
    return None if ts is None else iso(ts)


class Outbox:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._depth = 0
        self._conn = sqlite3.connect(str(self.path), timeout=10.0, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(SCHEMA)

    # ------------------------------------------------------------------ transactions
    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group writes in one transaction (nested calls join the outer one)."""
        with self._lock:
            outer = self._depth == 0
            if outer:
                self._conn.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if outer and self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outer:
                self._conn.execute("COMMIT")

    def _exec(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        with self.batch():
            return self._conn.execute(sql, tuple(params))

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._conn.execute(sql, tuple(params))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    # ------------------------------------------------------------------ alerts
    def has_alert(self, alert_id: str) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM alerts WHERE alert_id = ?", (alert_id,)).fetchone() is not None

    def add_alert(
        self,
        event: Mapping[str, Any],
        now: float,
        *,
        mode: str,
        tier: int = 0,
        escalate_at: float | None = None,
        suppressed: str | None = None,
        dup_of: str | None = None,
    ) -> bool:
        """Record an alert; False when this alert id is already known (nothing is changed)."""
        cur = self._exec(
            "INSERT OR IGNORE INTO alerts (alert_id, account, category, severity, message, ts, event, mode,"
            " suppressed, dup_of, tier, step, escalate_at, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,0,?,?)",
            (
                str(event["alert_id"]),
                event.get("account"),
                str(event.get("category") or ""),
                str(event.get("severity") or ""),
                str(event.get("message") or ""),
                event.get("ts"),
                json.dumps(dict(event), default=str, sort_keys=True),
                mode,
                suppressed,
                dup_of,
                tier,
                escalate_at,
                now,
            ),
        )
        return cur.rowcount == 1

    def alert(self, alert_id: str) -> AlertState | None:
        rows = self._query(
            "SELECT alert_id, account, category, severity, message, ts, mode, tier, step, escalate_at, acked_at,"
            " created_at FROM alerts WHERE alert_id = ?",
            (alert_id,),
        )
        return AlertState(**rows[0]) if rows else None

    def dup_of(self, alert_id: str) -> str | None:
        rows = self._query("SELECT dup_of FROM alerts WHERE alert_id = ?", (alert_id,))
        return rows[0]["dup_of"] if rows else None

    def escalations_due(self, now: float) -> list[AlertState]:
        rows = self._query(
            "SELECT alert_id, account, category, severity, message, ts, mode, tier, step, escalate_at, acked_at,"
            " created_at FROM alerts WHERE escalate_at IS NOT NULL AND escalate_at <= ? AND acked_at IS NULL"
            " ORDER BY escalate_at",
            (now,),
        )
        return [AlertState(**r) for r in rows]

    def next_escalation_at(self) -> float | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT MIN(escalate_at) FROM alerts WHERE escalate_at IS NOT NULL AND acked_at IS NULL"
            ).fetchone()
        return row[0]

    def set_escalation(self, alert_id: str, *, tier: int, step: int, escalate_at: float | None) -> None:
        sql = "UPDATE alerts SET tier = ?, step = ?, escalate_at = ? WHERE alert_id = ?"
        self._exec(sql, (tier, step, escalate_at, alert_id))

    def acknowledge(self, alert_id: str, now: float, by: str | None) -> int:
        """Stop the alert's escalation and cancel its pending escalation steps. Returns the
        number of cancelled outbox rows, or -1 when the alert is unknown."""
        with self.batch():
            cur = self._conn.execute(
                "UPDATE alerts SET acked_at = COALESCE(acked_at, ?), acked_by = COALESCE(acked_by, ?),"
                " escalate_at = NULL WHERE alert_id = ?",
                (now, by, alert_id),
            )
            if cur.rowcount == 0:
                return -1
            cur = self._conn.execute(
                "UPDATE outbox SET status = 'cancelled', last_error = 'acknowledged before delivery'"
                " WHERE alert_id = ? AND step > 0 AND status = 'pending'",
                (alert_id,),
            )
            return cur.rowcount

    def notified_channels(self, alert_id: str) -> set[str]:
        return {r["channel"] for r in self._query("SELECT channel FROM outbox WHERE alert_id = ?", (alert_id,))}

    # ------------------------------------------------------------------ outbox rows
    def enqueue(
        self,
        alert_id: str,
        step: int,
        tier: int,
        tier_name: str | None,
        channels: Iterable[str],
        *,
        title: str,
        body: str,
        notify_type: str,
        now: float,
    ) -> int:
        payload = json.dumps({"title": title, "body": body, "notify_type": notify_type}, sort_keys=True)
        n = 0
        with self.batch():
            for ch in channels:
                cur = self._conn.execute(
                    "INSERT OR IGNORE INTO outbox (alert_id, step, tier, tier_name, channel, payload,"
                    " next_attempt_at, created_at) VALUES (?,?,?,?,?,?,?,?)",
                    (alert_id, step, tier, tier_name, ch, payload, now, now),
                )
                n += cur.rowcount
        return n

    def due(self, now: float, exclude: Iterable[int] = (), limit: int = 200) -> list[OutboxRow]:
        skip = set(exclude)
        rows = self._query(
            "SELECT o.id, o.alert_id, a.account, o.step, o.tier, o.tier_name, o.channel, o.payload, o.status,"
            " o.attempts, o.next_attempt_at FROM outbox o LEFT JOIN alerts a ON a.alert_id = o.alert_id"
            " WHERE o.status = 'pending' AND o.next_attempt_at <= ? ORDER BY o.next_attempt_at, o.id LIMIT ?",
            (now, limit + len(skip)),
        )
        out = []
        for r in rows:
            if r["id"] in skip:
                continue
            p = json.loads(r.pop("payload"))
            out.append(OutboxRow(**r, title=p["title"], body=p["body"], notify_type=p["notify_type"]))
        return out[:limit]

    def next_attempt_at(self, exclude: Iterable[int] = ()) -> float | None:
        skip = list(exclude)
        marks = ",".join("?" * len(skip))
        where = f" AND id NOT IN ({marks})" if skip else ""
        with self._lock:
            row = self._conn.execute(
                f"SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'pending'{where}", skip
            ).fetchone()
        return row[0]

    def mark_sent(self, row_id: int, now: float, service: str | None) -> None:
        # A row cancelled by an acknowledgement while its send was in flight was still delivered.
        self._exec(
            "UPDATE outbox SET status = 'sent', attempts = attempts + 1, delivered_at = ?, service = ?,"
            " last_error = NULL WHERE id = ? AND status IN ('pending', 'cancelled')",
            (now, service, row_id),
        )

    def mark_retry(self, row_id: int, next_attempt_at: float, error: str, service: str | None) -> int:
        self._exec(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?,"
            " service = COALESCE(?, service) WHERE id = ? AND status = 'pending'",
            (next_attempt_at, error, service, row_id),
        )
        return self.attempts(row_id)

    def mark_failed(self, row_id: int, error: str, service: str | None) -> None:
        self._exec(
            "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = ?,"
            " service = COALESCE(?, service) WHERE id = ? AND status = 'pending'",
            (error, service, row_id),
        )

    def attempts(self, row_id: int) -> int:
        rows = self._query("SELECT attempts FROM outbox WHERE id = ?", (row_id,))
        return int(rows[0]["attempts"]) if rows else 0

    # ------------------------------------------------------------------ reading (console, API)
    def status(self, alert_id: str | None = None, channel: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Delivery status per channel, newest first: one dict per outbox row."""
        clauses, params = [], []
        if alert_id is not None:
            clauses.append("o.alert_id = ?")
            params.append(alert_id)
        if channel is not None:
            clauses.append("o.channel = ?")
            params.append(channel)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self._query(
            "SELECT o.id, o.alert_id, a.account, a.category, a.severity, o.step, o.tier, o.tier_name, o.channel,"
            " o.status, o.attempts, o.next_attempt_at, o.last_error, o.delivered_at, o.service, o.created_at,"
            f" a.acked_at FROM outbox o LEFT JOIN alerts a ON a.alert_id = o.alert_id{where}"
            " ORDER BY o.id DESC LIMIT ?",
            [*params, max(0, int(limit))],
        )
        for r in rows:
            r["next_attempt_at"] = _iso(r["next_attempt_at"]) if r["status"] == "pending" else None
            r["delivered_at"] = _iso(r["delivered_at"])
            r["created_at"] = _iso(r["created_at"])
            r["acknowledged"] = r.pop("acked_at") is not None
        return rows

    def alerts(self, limit: int = 200) -> list[dict[str, Any]]:
        """The alerts seen, newest first, with their escalation and suppression state."""
        rows = self._query(
            "SELECT alert_id, account, category, severity, message, ts, mode, suppressed, dup_of, tier, step,"
            " escalate_at, acked_at, acked_by, created_at FROM alerts ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (max(0, int(limit)),),
        )
        for r in rows:
            for k in ("escalate_at", "acked_at", "created_at"):
                r[k] = _iso(r[k])
        return rows

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._conn.execute("SELECT status, COUNT(*) FROM outbox GROUP BY status").fetchall()
        out = dict.fromkeys(STATUSES, 0)
        out.update({s: int(n) for s, n in rows})
        return out

    def prune(self, before: float) -> int:
        """Forget what is settled and older than `before` (epoch seconds): rows sent, failed or
        cancelled, and alerts no longer escalating with nothing pending. Returns rows deleted."""
        with self.batch():
            n = self._conn.execute(
                "DELETE FROM outbox WHERE status != 'pending' AND created_at < ?", (before,)
            ).rowcount
            self._conn.execute(
                "DELETE FROM alerts WHERE created_at < ? AND (escalate_at IS NULL OR acked_at IS NOT NULL)"
                " AND alert_id NOT IN (SELECT alert_id FROM outbox)",
                (before,),
            )
        return n

    def close(self) -> None:
        with self._lock:
            self._conn.close()
