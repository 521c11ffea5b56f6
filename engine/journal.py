"""The journal: an append-only, hash-chained record of everything the guard does.

Every level change, decision, plan, order, fill, alert and operator command is appended
here BEFORE it takes effect (intent first). After a crash the guard reads back the actions
that were started but never ended (`unfinished_actions`) and reconciles them with the broker
instead of repeating them; a compliance officer exports an incident with `capguard journal`.

Storage is one SQLite file in WAL mode with `synchronous=FULL`: `append` returns only once the
record is durable. Each record carries the SHA-256 of the previous one, and the metadata table
keeps the head (last seq and hash), written in the same transaction as each append, so
`verify()` detects an edited record, a broken chain, a deleted record and a truncated tail.
It cannot detect a rewrite of the whole chain including the head: anchor the head hash
elsewhere (`head()`) when that matters.

Record times come from the injected clock, never the OS.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.clock import Clock, WallClock, iso

SCHEMA_VERSION = 1
GENESIS_HASH = "0" * 64

KINDS: tuple[str, ...] = (
    "transition",
    "decision",
    "plan",
    "order_intent",
    "order",
    "fill",
    "outcome",
    "alert",
    "operator",
    "sample",
    "schedule",
    "threshold",
    "config",
    "action_start",
    "action_end",
    "data_state",
    "system",
    "assessment",
    "recovery",
)
_KIND_SET = frozenset(KINDS)
# These kinds are linked by action_id (reconciliation after a restart), so they must carry one.
_NEEDS_ACTION_ID = frozenset({"action_start", "action_end", "order_intent"})
# Top-level keys of a record as returned by `records()`; a field may not shadow them.
_RESERVED_FIELDS = frozenset({"seq", "ts", "kind", "account", "action_id"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    seq       INTEGER PRIMARY KEY,
    ts        REAL NOT NULL,
    kind      TEXT NOT NULL,
    account   TEXT,
    action_id TEXT,
    body      TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_account_ts ON journal (account, ts);
CREATE INDEX IF NOT EXISTS journal_kind ON journal (kind);
CREATE INDEX IF NOT EXISTS journal_action_id ON journal (action_id);
CREATE TRIGGER IF NOT EXISTS journal_no_update BEFORE UPDATE ON journal
BEGIN SELECT RAISE(ABORT, 'the capguard journal is append-only'); END;
CREATE TRIGGER IF NOT EXISTS journal_no_delete BEFORE DELETE ON journal
BEGIN SELECT RAISE(ABORT, 'the capguard journal is append-only'); END;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_COLUMNS = "seq, ts, kind, account, action_id, body"


class JournalError(Exception):
    """The journal cannot be used: not a capguard journal, a newer schema, read-only, closed."""


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    first_bad_seq: int | None = None
    problem: str = ""
    truncated: bool = False  # the tail was cut off (the head in the metadata is ahead of the last record)


def default_journal_path() -> Path:
    from engine.config import state_dir  # imported late: the journal itself needs no configuration

    return state_dir() / "journal.sqlite3"


def record_hash(
    prev_hash: str, seq: int, ts: float, kind: str, account: str | None, action_id: str | None, body: str
) -> str:
    """SHA-256 over prev_hash + the canonical JSON of the record (body is the stored JSON text)."""
    canonical = json.dumps(
        {"seq": seq, "ts": ts, "kind": kind, "account": account, "action_id": action_id, "body": body},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


def _clean(value: Any, where: str) -> Any:
    """A JSON-ready copy of `value`: NaN and infinities become None; anything else non-JSON is refused."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)  # plain str, also for str enums
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"field {where}: key {key!r} is not a string")
            out[str.__str__(key)] = _clean(item, f"{where}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_clean(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):  # numpy scalars/arrays, numpy not imported
        return _clean(value.tolist(), where)
    raise TypeError(f"field {where}: {type(value).__name__} is not JSON-serialisable")


def _check_kind(kind: object) -> str:
    if not isinstance(kind, str) or kind not in _KIND_SET:
        raise ValueError(f"unknown journal kind {kind!r}; known kinds: {', '.join(KINDS)}")
    return kind


def _row_to_record(row: tuple[Any, ...]) -> dict[str, Any]:
    seq, ts, kind, account, action_id, body = row
    record: dict[str, Any] = {"seq": seq, "ts": iso(ts), "kind": kind, "account": account, "action_id": action_id}
    try:
        fields = json.loads(body)
    except (TypeError, ValueError):  # a tampered body: show it, verify() says what is wrong
        fields = {"unreadable_body": body}
    if isinstance(fields, dict):
        for key, value in fields.items():
            record.setdefault(key, value)
    return record


@dataclass(frozen=True)
class _Prepared:
    kind: str
    account: str | None
    action_id: str | None
    body: str


class Journal:
    """The guard's append-only journal.

    `Journal(path, clock)` opens (creating it and its parent directories when needed) the
    journal at `path`, by default `state_dir() / "journal.sqlite3"`. With `readonly=True` the
    file is opened through a `mode=ro` URI: it is never created (FileNotFoundError when
    missing) and `append` is refused.

    One connection guarded by a lock: safe for one asyncio loop plus occasional reads from
    other threads. `verify()` reads through its own connection so it never blocks appends.
    """

    def __init__(self, path: str | Path | None = None, clock: Clock | None = None, *, readonly: bool = False) -> None:
        self.path = Path(path) if path is not None else default_journal_path()
        self.clock: Clock = clock if clock is not None else WallClock()
        self.readonly = readonly
        self._lock = threading.RLock()
        if readonly:
            if not self.path.is_file():
                raise FileNotFoundError(f"no journal at {self.path}")
            self._conn = self._connect_readonly()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            if readonly:
                self._check_schema(self._conn)
            else:
                self._create_schema()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise JournalError(f"{self.path}: not a capguard journal ({exc})") from None
        except BaseException:
            self._conn.close()
            raise
        self._closed = False

    # -- opening ---------------------------------------------------------------------------

    def _connect_readonly(self) -> sqlite3.Connection:
        uri = self.path.resolve().as_uri() + "?mode=ro"
        return sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None, check_same_thread=False)

    def _create_schema(self) -> None:
        conn = self._conn
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "journal" in tables and "meta" not in tables:
                raise JournalError(f"{self.path}: journal table without metadata; not a capguard journal")
            for statement in _SCHEMA.split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            for key, value in (("schema_version", str(SCHEMA_VERSION)), ("head_seq", "0"), ("head_hash", GENESIS_HASH)):
                conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
            self._check_schema(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            conn.execute("SELECT seq FROM journal LIMIT 0")
        except sqlite3.OperationalError as exc:
            raise JournalError(f"{self.path}: not a capguard journal ({exc})") from None
        if row is None:
            raise JournalError(f"{self.path}: not a capguard journal (no schema version)")
        try:
            version = int(row[0])
        except ValueError:
            raise JournalError(f"{self.path}: unreadable schema version {row[0]!r}") from None
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"{self.path}: journal schema {version} is newer than this capguard understands ({SCHEMA_VERSION})"
            )

    def _live(self) -> sqlite3.Connection:
        if self._closed:
            raise JournalError("the journal is closed")
        return self._conn

    # -- writing ---------------------------------------------------------------------------

    @staticmethod
    def _prepare(kind: str, account: str | None, action_id: str | None, fields: Mapping[str, Any]) -> _Prepared:
        _check_kind(kind)
        if account is not None and not isinstance(account, str):
            raise TypeError(f"account must be a string or None, got {type(account).__name__}")
        if action_id is not None and not isinstance(action_id, str):
            raise TypeError(f"action_id must be a string or None, got {type(action_id).__name__}")
        if kind in _NEEDS_ACTION_ID and not action_id:
            raise ValueError(f"a {kind} record needs an action_id")
        shadowing = sorted(_RESERVED_FIELDS & set(fields))
        if shadowing:
            raise ValueError(f"field name(s) {', '.join(shadowing)} are reserved for the record itself")
        body = {}
        for name, value in fields.items():
            if not isinstance(name, str):
                raise TypeError(f"field name {name!r} is not a string")
            body[str.__str__(name)] = _clean(value, name)
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return _Prepared(
            kind=kind,
            account=None if account is None else str.__str__(account),
            action_id=None if action_id is None else str.__str__(action_id),
            body=text,
        )

    def append(self, kind: str, account: str | None = None, action_id: str | None = None, **fields: Any) -> int:
        """Append one record and return its seq once it is durable on disk.

        `kind` must be one of KINDS (ValueError otherwise). The fields are stored as JSON with
        sorted keys; NaN and infinities become null; a value that is not JSON raises TypeError.
        """
        return self._write([self._prepare(kind, account, action_id, fields)])[0]

    def append_many(self, records: Iterable[Mapping[str, Any]]) -> list[int]:
        """Append several records in one transaction: all of them or none.

        Each record is a mapping with `kind`, optionally `account` and `action_id`, and its fields.
        Returns their seqs in order.
        """
        prepared = []
        for record in records:
            fields = dict(record)
            if "kind" not in fields:
                raise ValueError(f"record without a kind: {record!r}")
            kind = fields.pop("kind")
            account = fields.pop("account", None)
            action_id = fields.pop("action_id", None)
            prepared.append(self._prepare(kind, account, action_id, fields))
        return self._write(prepared) if prepared else []

    def _write(self, prepared: list[_Prepared]) -> list[int]:
        if self.readonly:
            raise JournalError(f"{self.path}: opened read-only")
        with self._lock:
            conn = self._live()
            conn.execute("BEGIN IMMEDIATE")
            try:
                # The head comes from the metadata, not from the last row: a truncated tail
                # stays visible as a gap instead of being papered over by new records.
                head_seq, head_hash = self._read_head(conn)
                if head_seq is None or head_hash is None:
                    raise JournalError(f"{self.path}: the journal head is missing from the metadata")
                seqs = []
                for p in prepared:
                    ts = float(self.clock.now())
                    if not math.isfinite(ts):
                        raise ValueError(f"the clock returned {ts}")
                    seq = head_seq + 1
                    digest = record_hash(head_hash, seq, ts, p.kind, p.account, p.action_id, p.body)
                    conn.execute(
                        "INSERT INTO journal (seq, ts, kind, account, action_id, body, prev_hash, hash)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (seq, ts, p.kind, p.account, p.action_id, p.body, head_hash, digest),
                    )
                    head_seq, head_hash = seq, digest
                    seqs.append(seq)
                conn.execute("UPDATE meta SET value = ? WHERE key = 'head_seq'", (str(head_seq),))
                conn.execute("UPDATE meta SET value = ? WHERE key = 'head_hash'", (head_hash,))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return seqs

    @staticmethod
    def _read_head(conn: sqlite3.Connection) -> tuple[int | None, str | None]:
        meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('head_seq', 'head_hash')").fetchall())
        try:
            seq = int(meta["head_seq"]) if "head_seq" in meta else None
        except ValueError:
            seq = None
        return seq, meta.get("head_hash")

    # -- reading ---------------------------------------------------------------------------

    def head(self) -> tuple[int, str]:
        """The last seq and its hash as recorded in the metadata (0 and the genesis hash when empty)."""
        with self._lock:
            seq, digest = self._read_head(self._live())
        if seq is None or digest is None:
            raise JournalError(f"{self.path}: the journal head is missing from the metadata")
        return seq, digest

    @staticmethod
    def _where(
        account: str | None,
        kind: str | Iterable[str] | None,
        since: float | None,
        until: float | None,
        action_id: str | None,
        after_seq: int | None,
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if account is not None:
            clauses.append("account = ?")
            params.append(account)
        if kind is not None:
            kinds = [kind] if isinstance(kind, str) else list(kind)
            for k in kinds:
                _check_kind(k)
            clauses.append(f"kind IN ({', '.join('?' * len(kinds))})" if kinds else "0")
            params.extend(kinds)
        if since is not None:
            clauses.append("ts >= ?")
            params.append(float(since))
        if until is not None:
            clauses.append("ts <= ?")
            params.append(float(until))
        if action_id is not None:
            clauses.append("action_id = ?")
            params.append(action_id)
        if after_seq is not None:
            clauses.append("seq > ?")
            params.append(int(after_seq))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def records(
        self,
        account: str | None = None,
        kind: str | Iterable[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        action_id: str | None = None,
        limit: int | None = None,
        after_seq: int | None = None,
        newest_first: bool = False,
    ) -> list[dict[str, Any]]:
        """Records in seq order matching every filter given.

        `kind` is one kind or several; `since` and `until` are epoch seconds, both inclusive;
        `after_seq` keeps records with a greater seq (tailing); `limit` keeps the first ones, or
        the latest ones with `newest_first` (which also returns them newest first).
        Each record: seq, ts (ISO-8601 UTC), kind, account, action_id, then its fields.
        """
        where, params = self._where(account, kind, since, until, action_id, after_seq)
        sql = f"SELECT {_COLUMNS} FROM journal{where} ORDER BY seq{' DESC' if newest_first else ''}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(0, int(limit)))
        with self._lock:
            rows = self._live().execute(sql, params).fetchall()
        return [_row_to_record(row) for row in rows]

    def iter_records(
        self,
        account: str | None = None,
        kind: str | Iterable[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        action_id: str | None = None,
        after_seq: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Like `records()` but streamed through a separate read connection (large exports)."""
        where, params = self._where(account, kind, since, until, action_id, after_seq)
        with self._snapshot() as conn:
            for row in conn.execute(f"SELECT {_COLUMNS} FROM journal{where} ORDER BY seq", params):
                yield _row_to_record(row)

    def last(self, kind: str, account: str | None = None) -> dict[str, Any] | None:
        """The most recent record of `kind` (for `account` when given), or None."""
        where, params = self._where(account, kind, None, None, None, None)
        with self._lock:
            row = self._live().execute(f"SELECT {_COLUMNS} FROM journal{where} ORDER BY seq DESC LIMIT 1", params)
            found = row.fetchone()
        return None if found is None else _row_to_record(found)

    def unfinished_actions(self) -> list[dict[str, Any]]:
        """The actions started and never ended, oldest first, for reconciliation at start.

        Each is the `action_start` record plus `orders`: one entry per `order_intent` of that
        action, `{"client_order_id", "intent", "result", "fills"}`, where `result` is the last
        `order` record with the same client_order_id (None when the broker's answer was never
        journaled) and `fills` the `fill` records with that client_order_id.
        """
        with self._lock:
            conn = self._live()
            conn.execute("BEGIN")
            try:
                starts = conn.execute(
                    f"SELECT {_COLUMNS} FROM journal WHERE kind = 'action_start' AND action_id IS NOT NULL"
                    " AND action_id NOT IN"
                    " (SELECT action_id FROM journal WHERE kind = 'action_end' AND action_id IS NOT NULL)"
                    " ORDER BY seq"
                ).fetchall()
                out = []
                seen: set[str] = set()
                for row in starts:
                    action = _row_to_record(row)
                    if action["action_id"] in seen:
                        continue
                    seen.add(action["action_id"])
                    intents = [
                        _row_to_record(r)
                        for r in conn.execute(
                            f"SELECT {_COLUMNS} FROM journal WHERE action_id = ? AND kind = 'order_intent'"
                            " ORDER BY seq",
                            (action["action_id"],),
                        )
                    ]
                    action["orders"] = [self._order_status(conn, intent) for intent in intents]
                    out.append(action)
            finally:
                conn.execute("COMMIT")
        return out

    @staticmethod
    def _order_status(conn: sqlite3.Connection, intent: dict[str, Any]) -> dict[str, Any]:
        coid = intent.get("client_order_id")
        result = None
        fills: list[dict[str, Any]] = []
        if isinstance(coid, str):
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM journal WHERE kind IN ('order', 'fill')"
                " AND json_extract(body, '$.client_order_id') = ? ORDER BY seq",
                (coid,),
            ).fetchall()
            for row in rows:
                record = _row_to_record(row)
                if record["kind"] == "order":
                    result = record
                else:
                    fills.append(record)
        return {"client_order_id": coid, "intent": intent, "result": result, "fills": fills}

    # -- verification ----------------------------------------------------------------------

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A separate read connection holding one consistent snapshot (WAL readers never block the writer)."""
        self._live()
        conn = self._connect_readonly()
        try:
            conn.execute("BEGIN")
            yield conn
        finally:
            conn.close()

    def verify(self) -> VerifyResult:
        """Walk the whole chain: edited records, broken links, missing records and a cut tail."""
        with self._snapshot() as conn:
            return _verify(conn)

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if not getattr(self, "_closed", True):
                self._closed = True
                self._conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _verify(conn: sqlite3.Connection) -> VerifyResult:
    count = 0
    first_bad: int | None = None
    problem = ""
    expected_seq = 1
    prev_hash = GENESIS_HASH
    last_seq = 0
    rows = conn.execute("SELECT seq, ts, kind, account, action_id, body, prev_hash, hash FROM journal ORDER BY seq")
    for seq, ts, kind, account, action_id, body, stored_prev, stored_hash in rows:
        count += 1
        last_seq = seq
        if first_bad is not None:
            continue
        if seq != expected_seq:
            first_bad = expected_seq
            missing = f"record {expected_seq}" if seq == expected_seq + 1 else f"records {expected_seq}..{seq - 1}"
            problem = f"{missing} deleted (seq jumps from {expected_seq - 1} to {seq})"
            continue
        if stored_prev != prev_hash:
            first_bad = seq
            problem = "chain broken: prev_hash is not the hash of the previous record"
            continue
        try:
            digest = record_hash(prev_hash, seq, ts, kind, account, action_id, body)
        except (TypeError, ValueError):
            digest = None
        if digest != stored_hash:
            first_bad = seq
            problem = "record altered: its hash does not match its contents"
            continue
        prev_hash = stored_hash
        expected_seq = seq + 1
    if first_bad is not None:
        return VerifyResult(ok=False, records=count, first_bad_seq=first_bad, problem=problem)
    head_seq, head_hash = Journal._read_head(conn)
    if head_seq is None or head_hash is None:
        return VerifyResult(False, count, None, "the journal head is missing from the metadata")
    if last_seq < head_seq:
        return VerifyResult(
            ok=False,
            records=count,
            first_bad_seq=last_seq + 1,
            problem=f"truncated: the last record is seq {last_seq} but the journal head is seq {head_seq}",
            truncated=True,
        )
    if last_seq > head_seq:
        return VerifyResult(
            False, count, head_seq + 1, f"records after the journal head (seq {head_seq}) were added outside capguard"
        )
    if head_hash != prev_hash:
        return VerifyResult(False, count, last_seq or None, "the last record's hash does not match the journal head")
    return VerifyResult(ok=True, records=count)
