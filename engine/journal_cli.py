"""`capguard journal`: read, filter, export and verify the journal from the command line.

    capguard journal [--journal PATH] [--account ID] [--kind KIND[,KIND]] [--action-id ID]
                     [--since TIME] [--until TIME] [--format table|jsonl|csv] [--verify]

TIME is ISO-8601 (`2026-11-25T15:47:32Z`, an offset, or naive meaning UTC) or a duration
before now: `30s`, `15m`, `2h`, `1d`, `1w`, combined as `1h30m`.

The journal is only ever opened read-only (a `mode=ro` URI): reading never creates it.
Exit codes follow sysexits: 64 bad arguments, 65 tampered/truncated or unreadable journal,
66 no journal at the path.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sqlite3
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from engine.clock import Clock, WallClock
from engine.journal import KINDS, Journal, JournalError, default_journal_path

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66

FORMATS = ("table", "jsonl", "csv")
PROG = "capguard journal"
_BASE = ("seq", "ts", "kind", "account", "action_id")
_SUMMARY_WIDTH = 200
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def add_journal_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the journal reader's options to `parser` (a subcommand's parser, typically)."""
    parser.add_argument("--journal", metavar="PATH", help="journal file (default: the state dir's journal.sqlite3)")
    parser.add_argument("--account", metavar="ID", help="only this account's records")
    parser.add_argument(
        "--kind",
        metavar="KIND",
        action="append",
        help=f"only these kinds (repeatable or comma-separated): {', '.join(KINDS)}",
    )
    parser.add_argument("--action-id", metavar="ID", help="only the records of this action")
    parser.add_argument(
        "--since", metavar="TIME", help="from TIME: ISO-8601 (naive = UTC) or a duration before now (15m, 2h, 1d)"
    )
    parser.add_argument("--until", metavar="TIME", help="up to TIME (same forms as --since)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    parser.add_argument(
        "--verify", action="store_true", help="check the hash chain and the head; exit 65 when tampered or truncated"
    )


def parse_time(text: str, now: float) -> float:
    """Epoch seconds for an ISO-8601 time (naive = UTC) or a duration before `now` ("15m", "1h30m")."""
    value = text.strip()
    if value.lower() == "now":
        return now
    if _DURATION.fullmatch(value):
        return now - sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(value))
    iso_text = value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value
    try:
        moment = datetime.fromisoformat(iso_text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO-8601 time (2026-11-25T15:47:32Z) nor a duration (30s, 15m, 2h, 1d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _kinds(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    kinds = [k.strip() for v in values for k in v.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"--kind: unknown kind {unknown[0]!r} (known: {', '.join(KINDS)})")
    return kinds or None


def _fields(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in _BASE}


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value if value and not any(c.isspace() or c in '="' for c in value) else json.dumps(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _summary(fields: dict[str, Any]) -> str:
    text = " ".join(f"{k}={_compact(v)}" for k, v in sorted(fields.items()))
    return text if len(text) <= _SUMMARY_WIDTH else text[: _SUMMARY_WIDTH - 3] + "..."


def _write_table(records: Iterable[dict[str, Any]], out: TextIO) -> int:
    header = ("ts", "kind", "account", "action_id", "fields")
    rows = [(r["ts"], r["kind"], r["account"] or "-", r["action_id"] or "-", _summary(_fields(r))) for r in records]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(header[:-1])]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        out.write("  ".join([*cells, row[-1]]).rstrip() + "\n")
    return len(rows)


def _write_jsonl(records: Iterable[dict[str, Any]], out: TextIO) -> int:
    n = 0
    for record in records:
        out.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        n += 1
    return n


def _write_csv(records: Iterable[dict[str, Any]], out: TextIO) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["ts", "kind", "account", "action_id", "seq", "fields"])
    n = 0
    for r in records:
        fields = json.dumps(_fields(r), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        writer.writerow([r["ts"], r["kind"], r["account"] or "", r["action_id"] or "", r["seq"], fields])
        n += 1
    return n


_WRITERS = {"table": _write_table, "jsonl": _write_jsonl, "csv": _write_csv}


def _open(path: Path) -> Journal | int:
    try:
        return Journal(path, readonly=True)
    except FileNotFoundError:
        print(f"{PROG}: no journal at {path}", file=sys.stderr)
        return EX_NOINPUT
    except (JournalError, sqlite3.DatabaseError) as exc:
        print(f"{PROG}: cannot read {path}: {exc}", file=sys.stderr)
        return EX_DATAERR
    except OSError as exc:
        print(f"{PROG}: cannot open {path}: {exc.strerror or exc}", file=sys.stderr)
        return EX_NOINPUT


def _verify(journal: Journal) -> int:
    result = journal.verify()
    if result.ok:
        print(f"journal OK: {result.records} records")
        return EX_OK
    verdict = "TRUNCATED" if result.truncated else "TAMPERED"
    where = f" at seq {result.first_bad_seq}" if result.first_bad_seq is not None else ""
    print(f"journal {verdict}{where}: {result.problem}")
    return EX_DATAERR


def run_journal(args: argparse.Namespace, clock: Clock | None = None) -> int:
    """Run `capguard journal` with parsed arguments; returns the exit code."""
    clock = clock if clock is not None else WallClock()
    path = Path(args.journal) if getattr(args, "journal", None) else default_journal_path()
    verify = bool(getattr(args, "verify", False))
    since = until = None
    kinds = None
    if not verify:
        now = clock.now()
        try:
            kinds = _kinds(getattr(args, "kind", None))
            for flag in ("since", "until"):
                text = getattr(args, flag, None)
                if text is not None:
                    try:
                        value = parse_time(text, now)
                    except ValueError as exc:
                        raise ValueError(f"--{flag}: {exc}") from None
                    since, until = (value, until) if flag == "since" else (since, value)
        except ValueError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return EX_USAGE
    opened = _open(path)
    if isinstance(opened, int):
        return opened
    with opened as journal:
        try:
            if verify:
                return _verify(journal)
            records = journal.iter_records(
                account=getattr(args, "account", None),
                kind=kinds,
                since=since,
                until=until,
                action_id=getattr(args, "action_id", None),
            )
            n = _WRITERS[getattr(args, "format", None) or "table"](records, sys.stdout)
            sys.stdout.flush()
        except BrokenPipeError:  # `capguard journal | head` is fine
            sys.stderr.close()
            return EX_OK
        except (JournalError, sqlite3.DatabaseError) as exc:
            print(f"{PROG}: cannot read {path}: {exc}", file=sys.stderr)
            return EX_DATAERR
    if n == 0:
        print(f"{PROG}: no matching records", file=sys.stderr)
    return EX_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Read, export and verify the capguard journal.")
    add_journal_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_journal(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
