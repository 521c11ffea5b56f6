"""The journal: intent-first, append-only, hash-chained, durable, and honest about tampering."""

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine.clock import SimClock
from engine.journal import GENESIS_HASH, KINDS, Journal, JournalError, default_journal_path

T0 = 1_795_000_000.0  # 2026-11-18T11:06:40Z
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def clock():
    return SimClock(start=T0, paused=True)


@pytest.fixture
def path(tmp_path):
    return tmp_path / "state" / "journal.sqlite3"


@pytest.fixture
def journal(path, clock):
    j = Journal(path, clock)
    yield j
    j.close()


def tamper(path, *statements):
    """What someone with the file and the sqlite3 shell could do: drop the guards and edit."""
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER IF EXISTS journal_no_update")
    conn.execute("DROP TRIGGER IF EXISTS journal_no_delete")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def fill_some(journal, clock, n=5):
    seqs = []
    for i in range(n):
        seqs.append(journal.append("sample", account="acct-1", ratio=2.0 + i))
        clock.advance(1)
    return seqs


def test_a_fresh_journal_is_created_with_its_parent_dirs_in_wal_mode(path, clock):
    with Journal(path, clock) as j:
        assert path.exists()
        assert j.head() == (0, GENESIS_HASH)
        assert j.verify().ok
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "1"
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"journal_account_ts", "journal_kind", "journal_action_id"} <= indexes


def test_the_default_path_lives_in_the_state_dir(tmp_path, monkeypatch, clock):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    assert default_journal_path() == tmp_path / "xdg-state" / "capguard" / "journal.sqlite3"
    with Journal(clock=clock) as j:
        j.append("system", event="start")
    assert (tmp_path / "xdg-state" / "capguard" / "journal.sqlite3").exists()


def test_append_returns_consecutive_seqs_and_records_round_trip(journal, clock):
    s1 = journal.append("transition", account="acct-7", from_level="normal", to_level="warning", ratio=1.9)
    clock.advance(2.5)
    s2 = journal.append("operator", command="pause", user="ana")
    assert (s1, s2) == (1, 2)
    first, second = journal.records()
    assert first == {
        "seq": 1,
        "ts": "2026-11-18T11:06:40.000Z",
        "kind": "transition",
        "account": "acct-7",
        "action_id": None,
        "from_level": "normal",
        "ratio": 1.9,
        "to_level": "warning",
    }
    assert second["ts"] == "2026-11-18T11:06:42.500Z"
    assert (second["account"], second["command"], second["user"]) == (None, "pause", "ana")


def test_the_body_is_stored_as_json_with_sorted_keys_and_the_time_comes_from_the_injected_clock(journal, path, clock):
    clock.advance(100)
    journal.append("decision", account="a", zeta=1, alpha={"y": 2, "x": [1, 2]})
    ts, body = sqlite3.connect(path).execute("SELECT ts, body FROM journal").fetchone()
    assert ts == T0 + 100
    assert body == '{"alpha":{"x":[1,2],"y":2},"zeta":1}'


def test_records_filter_by_account_kind_time_window_action_and_seq(journal, clock):
    journal.append("sample", account="a", ratio=3.0)  # T0
    clock.advance(60)
    journal.append("transition", account="b", from_level="normal", to_level="warning")  # T0+60
    clock.advance(60)
    journal.append("action_start", account="a", action_id="act-1", plan="reduce")  # T0+120
    clock.advance(60)
    journal.append("order_intent", account="a", action_id="act-1", client_order_id="c1")  # T0+180
    clock.advance(60)
    journal.append("alert", account="b", message="critical")  # T0+240

    assert [r["seq"] for r in journal.records(account="a")] == [1, 3, 4]
    assert [r["seq"] for r in journal.records(kind="alert")] == [5]
    assert [r["seq"] for r in journal.records(kind=["sample", "alert"])] == [1, 5]
    assert [r["seq"] for r in journal.records(since=T0 + 60, until=T0 + 180)] == [2, 3, 4]
    assert [r["seq"] for r in journal.records(since=T0 + 61)] == [3, 4, 5]
    assert [r["seq"] for r in journal.records(action_id="act-1")] == [3, 4]
    assert [r["seq"] for r in journal.records(account="a", since=T0 + 100, kind="order_intent")] == [4]
    assert [r["seq"] for r in journal.records(after_seq=3)] == [4, 5]
    assert [r["seq"] for r in journal.records(limit=2)] == [1, 2]
    assert [r["seq"] for r in journal.records(limit=2, newest_first=True)] == [5, 4]
    assert [r["seq"] for r in journal.records(account="a", newest_first=True)] == [4, 3, 1]
    assert journal.records(account="nobody") == []
    assert [r["seq"] for r in journal.iter_records(account="b")] == [2, 5]


def test_last_returns_the_most_recent_record_of_a_kind(journal, clock):
    assert journal.last("transition") is None
    journal.append("transition", account="a", to_level="warning")
    journal.append("transition", account="b", to_level="critical")
    journal.append("sample", account="a", ratio=1.0)
    assert journal.last("transition")["to_level"] == "critical"
    assert journal.last("transition", account="a")["to_level"] == "warning"


def test_an_unknown_kind_is_refused_naming_it(journal):
    with pytest.raises(ValueError, match="'teleport'"):
        journal.append("teleport", account="a")
    with pytest.raises(ValueError, match="'bogus'"):
        journal.records(kind=["sample", "bogus"])
    assert journal.records() == []


def test_every_documented_kind_is_accepted(journal):
    for kind in KINDS:
        journal.append(kind, action_id="x" if kind in ("action_start", "action_end", "order_intent") else None)
    assert [r["kind"] for r in journal.records()] == list(KINDS)


def test_nan_and_infinities_are_stored_as_null(journal, path):
    journal.append("sample", account="a", ratio=math.nan, equity=math.inf, legs=[1.0, -math.inf], m={"x": math.nan})
    record = journal.records()[0]
    assert (record["ratio"], record["equity"], record["legs"], record["m"]) == (None, None, [1.0, None], {"x": None})
    body = sqlite3.connect(path).execute("SELECT body FROM journal").fetchone()[0]
    assert "NaN" not in body and "Infinity" not in body
    assert journal.verify().ok


def test_values_that_are_not_json_are_refused_and_nothing_is_written(journal):
    with pytest.raises(TypeError, match="when"):
        journal.append("decision", account="a", when=object())
    with pytest.raises(TypeError, match="not a string"):
        journal.append("decision", account="a", m={1: "x"})
    with pytest.raises(ValueError, match="reserved"):
        journal.append("decision", account="a", seq=3)
    assert journal.records() == []


def test_action_records_need_an_action_id(journal):
    with pytest.raises(ValueError, match="action_id"):
        journal.append("action_start", account="a")
    with pytest.raises(ValueError, match="action_id"):
        journal.append("order_intent", account="a", client_order_id="c1")


def test_append_many_writes_all_records_in_one_transaction_or_none(journal):
    seqs = journal.append_many(
        [
            {"kind": "plan", "account": "a", "action_id": "act-9", "steps": 2},
            {"kind": "order_intent", "account": "a", "action_id": "act-9", "client_order_id": "c1", "qty": 1.5},
        ]
    )
    assert seqs == [1, 2]
    with pytest.raises(ValueError, match="'nope'"):
        journal.append_many([{"kind": "alert", "message": "ok"}, {"kind": "nope"}])
    assert [r["seq"] for r in journal.records()] == [1, 2]
    assert journal.append_many([]) == []
    assert journal.verify().ok


def test_the_hash_chain_of_an_untouched_journal_verifies(journal, clock):
    fill_some(journal, clock, 20)
    result = journal.verify()
    assert (result.ok, result.records, result.first_bad_seq, result.problem) == (True, 20, None, "")
    assert journal.head()[0] == 20


def test_the_table_is_append_only_through_sqlite_too(journal, path, clock):
    fill_some(journal, clock, 2)
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE journal SET body = '{}' WHERE seq = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM journal WHERE seq = 2")
    conn.close()
    assert not hasattr(journal, "update") and not hasattr(journal, "delete")


def test_editing_a_body_with_raw_sqlite_is_detected_at_that_seq(journal, path, clock):
    fill_some(journal, clock, 6)
    tamper(path, """UPDATE journal SET body = '{"ratio":9.0}' WHERE seq = 4""")
    result = journal.verify()
    assert not result.ok and not result.truncated
    assert result.first_bad_seq == 4
    assert "hash" in result.problem
    assert result.records == 6


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE journal SET ts = ts + 1 WHERE seq = 3",
        "UPDATE journal SET account = 'acct-2' WHERE seq = 3",
        "UPDATE journal SET kind = 'alert' WHERE seq = 3",
        "UPDATE journal SET action_id = 'x' WHERE seq = 3",
    ],
)
def test_editing_any_column_is_detected_at_that_seq(journal, path, clock, edit):
    fill_some(journal, clock, 5)
    tamper(path, edit)
    assert journal.verify().first_bad_seq == 3


def test_a_rehashed_edit_still_breaks_the_chain_at_the_next_record(journal, path, clock):
    fill_some(journal, clock, 5)
    from engine.journal import record_hash

    seq, ts, kind, account, action_id, prev = (
        sqlite3.connect(path)
        .execute("SELECT seq, ts, kind, account, action_id, prev_hash FROM journal WHERE seq = 2")
        .fetchone()
    )
    forged = record_hash(prev, seq, ts, kind, account, action_id, '{"ratio":99.0}')
    tamper(path, f"""UPDATE journal SET body = '{{"ratio":99.0}}', hash = '{forged}' WHERE seq = 2""")
    result = journal.verify()
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert "chain" in result.problem


def test_deleting_a_middle_row_is_detected(journal, path, clock):
    fill_some(journal, clock, 6)
    tamper(path, "DELETE FROM journal WHERE seq = 3")
    result = journal.verify()
    assert not result.ok and not result.truncated
    assert result.first_bad_seq == 3
    assert "deleted" in result.problem


def test_deleting_the_first_row_is_detected(journal, path, clock):
    fill_some(journal, clock, 3)
    tamper(path, "DELETE FROM journal WHERE seq = 1")
    assert journal.verify().first_bad_seq == 1


def test_deleting_the_last_rows_is_detected_as_truncation(journal, path, clock):
    fill_some(journal, clock, 6)
    tamper(path, "DELETE FROM journal WHERE seq >= 5")
    result = journal.verify()
    assert not result.ok and result.truncated
    assert result.first_bad_seq == 5
    assert "truncated" in result.problem and "6" in result.problem
    assert result.records == 4


def test_deleting_every_row_is_truncation_too(journal, path, clock):
    fill_some(journal, clock, 2)
    tamper(path, "DELETE FROM journal")
    result = journal.verify()
    assert (result.ok, result.truncated, result.first_bad_seq) == (False, True, 1)


def test_appending_after_a_truncation_keeps_the_hole_visible(journal, path, clock):
    fill_some(journal, clock, 4)
    tamper(path, "DELETE FROM journal WHERE seq = 4")
    assert journal.append("alert", message="after") == 5
    result = journal.verify()
    assert (result.ok, result.first_bad_seq) == (False, 4)


def test_rows_inserted_behind_the_guards_back_are_detected(journal, path, clock):
    fill_some(journal, clock, 2)
    tamper(
        path,
        "INSERT INTO journal (seq, ts, kind, account, action_id, body, prev_hash, hash)"
        " SELECT 3, ts, kind, account, action_id, body, hash, hash FROM journal WHERE seq = 2",
    )
    result = journal.verify()
    assert (result.ok, result.first_bad_seq) == (False, 3)


def test_unfinished_actions_lists_started_actions_without_an_end_and_which_intents_have_results(journal):
    # act-1 finished; act-2 was interrupted after the broker answered c2 but before c3's answer
    journal.append("action_start", account="a", action_id="act-1", plan="reduce")
    journal.append("order_intent", account="a", action_id="act-1", client_order_id="c1", side="sell", qty=1.0)
    journal.append("order", account="a", action_id="act-1", client_order_id="c1", status="filled")
    journal.append("action_end", account="a", action_id="act-1", outcome="done")
    journal.append("action_start", account="b", action_id="act-2", plan="liquidate")
    journal.append("order_intent", account="b", action_id="act-2", client_order_id="c2", side="sell", qty=2.0)
    journal.append("order_intent", account="b", action_id="act-2", client_order_id="c3", side="buy", qty=0.5)
    journal.append("order", account="b", action_id="act-2", client_order_id="c2", status="accepted")
    journal.append("fill", account="b", client_order_id="c2", qty=2.0, price=100.0)

    (action,) = journal.unfinished_actions()
    assert (action["action_id"], action["account"], action["plan"]) == ("act-2", "b", "liquidate")
    orders = {o["client_order_id"]: o for o in action["orders"]}
    assert list(orders) == ["c2", "c3"]
    assert orders["c2"]["result"]["status"] == "accepted"
    assert orders["c2"]["intent"]["qty"] == 2.0
    assert [f["qty"] for f in orders["c2"]["fills"]] == [2.0]
    assert orders["c3"]["result"] is None and orders["c3"]["fills"] == []

    journal.append("action_end", account="b", action_id="act-2", outcome="reconciled")
    assert journal.unfinished_actions() == []


def test_an_unfinished_action_without_orders_is_still_reported(journal):
    journal.append("action_start", account="a", action_id="act-5")
    (action,) = journal.unfinished_actions()
    assert action["orders"] == []


def test_a_record_appended_by_a_process_killed_right_after_append_returns_survives(path, clock):
    code = (
        "import os, signal, sys\n"
        "from engine.clock import SimClock\n"
        "from engine.journal import Journal\n"
        f"j = Journal({str(path)!r}, SimClock(start={T0}, paused=True))\n"
        "for i in range(3):\n"
        "    j.append('order_intent', account='a', action_id='act-k', client_order_id=f'k{i}')\n"
        "seq = j.append('alert', account='a', message='last words')\n"
        "print(seq, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.strip() == "4"
    with Journal(path, clock) as fresh:
        assert fresh.last("alert")["message"] == "last words"
        assert fresh.verify().ok
        assert fresh.append("system", event="restart") == 5


def test_two_journal_handles_on_one_file_keep_one_chain(path, clock):
    a = Journal(path, clock)
    b = Journal(path, clock)
    try:
        for i in range(5):
            a.append("sample", account="a", i=i)
            b.append("sample", account="b", i=i)
        assert [r["seq"] for r in a.records()] == list(range(1, 11))
        assert b.verify().ok
    finally:
        a.close()
        b.close()


def test_appends_from_several_threads_keep_the_chain_whole(journal):
    def worker(n):
        for i in range(25):
            journal.append("sample", account=f"t{n}", i=i)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = journal.verify()
    assert (result.ok, result.records) == (True, 100)


def test_read_only_never_creates_the_file_and_refuses_appends(tmp_path, journal, path):
    missing = tmp_path / "nowhere" / "journal.sqlite3"
    with pytest.raises(FileNotFoundError):
        Journal(missing, readonly=True)
    assert not missing.exists() and not missing.parent.exists()
    journal.append("system", event="start")
    with Journal(path, readonly=True) as ro:
        assert ro.records()[0]["event"] == "start"
        with pytest.raises(JournalError, match="read-only"):
            ro.append("system", event="nope")


def test_a_file_that_is_not_a_journal_is_refused(tmp_path):
    junk = tmp_path / "junk.sqlite3"
    junk.write_text("hello, not a database")
    with pytest.raises(JournalError):
        Journal(junk, readonly=True)
    other = tmp_path / "other.sqlite3"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(JournalError, match="not a capguard journal"):
        Journal(other, readonly=True)


def test_a_newer_schema_is_refused(path, clock):
    Journal(path, clock).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(JournalError, match="newer"):
        Journal(path, clock)


def test_a_closed_journal_refuses_use(path, clock):
    j = Journal(path, clock)
    j.close()
    j.close()
    with pytest.raises(JournalError, match="closed"):
        j.append("system", event="x")


def test_a_tampered_body_that_is_not_json_is_still_listed(journal, path, clock):
    fill_some(journal, clock, 2)
    tamper(path, "UPDATE journal SET body = 'garbage' WHERE seq = 2")
    assert journal.records()[1]["unreadable_body"] == "garbage"
    assert journal.verify().first_bad_seq == 2
    assert json.dumps(journal.records())
