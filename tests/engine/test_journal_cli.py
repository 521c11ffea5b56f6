"""`capguard journal`: table, jsonl and csv exports, time filters, verification and exit codes."""

import argparse
import csv
import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from engine.clock import SimClock
from engine.journal import Journal
from engine.journal_cli import add_journal_arguments, parse_time, run_journal

T0 = 1_795_000_000.0  # 2026-11-18T11:06:40Z
REPO = Path(__file__).resolve().parents[2]


def parse(*argv):
    parser = argparse.ArgumentParser(prog="capguard journal")
    add_journal_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def clock():
    return SimClock(start=T0, paused=True)


@pytest.fixture
def jpath(tmp_path, clock):
    """A journal with an incident: a level change, an action with one order, and an alert an hour later."""
    path = tmp_path / "journal.sqlite3"
    with Journal(path, clock) as j:
        j.append("sample", account="acct-1", ratio=3.2)
        clock.advance(60)
        j.append("transition", account="acct-7", from_level="warning", to_level="critical", ratio=1.48)
        clock.advance(1)
        j.append("action_start", account="acct-7", action_id="act-1", plan="reduce")
        j.append(
            "order",
            account="acct-7",
            action_id="act-1",
            client_order_id="cg-1",
            side="sell",
            qty=2.5,
            reduce_only=True,
            note="a note, with a comma",
        )
        clock.advance(3600)
        j.append("alert", account="acct-7", message="margin critical", channel="desk")
    return path


def run(capsys, *argv, clock=None):
    code = run_journal(parse(*argv), clock=clock)
    out, err = capsys.readouterr()
    return code, out, err


def test_table_shows_aligned_columns_and_a_compact_field_summary(capsys, jpath):
    code, out, _ = run(capsys, "--journal", str(jpath))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ts", "kind", "account", "action_id", "fields"]
    assert len(lines) == 6
    # aligned: every column starts at the same offset on every line
    kind_col = lines[0].index("kind")
    assert all(line[kind_col - 2 : kind_col] == "  " for line in lines)
    assert {line.index("transition") for line in lines if "transition" in line} == {kind_col}
    transition = next(line for line in lines if "transition" in line)
    assert transition.startswith("2026-11-18T11:07:40.000Z")
    assert "acct-7" in transition
    assert "from_level=warning ratio=1.48 to_level=critical" in transition
    sample = next(line for line in lines if " sample " in line)
    assert " - " in sample  # no action id
    alert = next(line for line in lines if " alert " in line)
    assert 'message="margin critical"' in alert


def test_jsonl_has_one_object_per_record_with_the_fields_at_top_level(capsys, jpath):
    code, out, _ = run(capsys, "--journal", str(jpath), "--format", "jsonl")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["kind"] for r in records] == ["sample", "transition", "action_start", "order", "alert"]
    transition = records[1]
    assert (transition["ts"], transition["account"]) == ("2026-11-18T11:07:40.000Z", "acct-7")
    assert (transition["from_level"], transition["to_level"], transition["ratio"]) == ("warning", "critical", 1.48)
    order = records[3]
    assert (order["client_order_id"], order["side"], order["qty"], order["reduce_only"]) == ("cg-1", "sell", 2.5, True)
    assert order["action_id"] == "act-1" and order["seq"] == 4


def test_csv_has_the_documented_header_and_the_fields_as_json(capsys, jpath):
    code, out, _ = run(capsys, "--journal", str(jpath), "--format", "csv")
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["ts", "kind", "account", "action_id", "seq", "fields"]
    order = rows[4]
    assert order[:5] == ["2026-11-18T11:07:41.000Z", "order", "acct-7", "act-1", "4"]
    assert json.loads(order[5]) == {
        "client_order_id": "cg-1",
        "note": "a note, with a comma",
        "qty": 2.5,
        "reduce_only": True,
        "side": "sell",
    }
    assert rows[1][3] == ""  # no action id


def test_filters_by_account_and_kind_repeated_or_comma_separated(capsys, jpath):
    _, out, _ = run(capsys, "--journal", str(jpath), "--format", "jsonl", "--account", "acct-7")
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [2, 3, 4, 5]
    _, out, _ = run(capsys, "--journal", str(jpath), "--format", "jsonl", "--kind", "alert,sample")
    assert [json.loads(line)["kind"] for line in out.splitlines()] == ["sample", "alert"]
    _, out, _ = run(capsys, "--journal", str(jpath), "--format", "jsonl", "--kind", "order", "--kind", "alert")
    assert [json.loads(line)["kind"] for line in out.splitlines()] == ["order", "alert"]
    _, out, _ = run(capsys, "--journal", str(jpath), "--format", "jsonl", "--action-id", "act-1")
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [3, 4]


def test_since_15m_keeps_only_the_last_quarter_hour_of_the_injected_clock(capsys, jpath, clock):
    # the journal's clock now stands at the alert; 15 minutes back excludes the incident's start
    code, out, _ = run(capsys, "--journal", str(jpath), "--format", "jsonl", "--since", "15m", clock=clock)
    assert code == 0
    assert [json.loads(line)["kind"] for line in out.splitlines()] == ["alert"]
    clock.advance(-3600 + 30)  # 30 seconds after the order: a minute back reaches the transition
    _, out, _ = run(capsys, "--journal", str(jpath), "--format", "jsonl", "--since", "1m", clock=clock)
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [2, 3, 4, 5]


def test_since_and_until_accept_iso_times_with_z_offsets_or_naive_utc(capsys, jpath, clock):
    argv = ["--journal", str(jpath), "--format", "jsonl"]
    _, out, _ = run(capsys, *argv, "--since", "2026-11-18T11:07:00Z", "--until", "2026-11-18T11:08:00", clock=clock)
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [2, 3, 4]
    _, out, _ = run(capsys, *argv, "--until", "2026-11-18T12:08:00+01:00", clock=clock)
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [1, 2, 3, 4]


def test_parse_time_forms():
    now = T0
    assert parse_time("30s", now) == now - 30
    assert parse_time("15m", now) == now - 900
    assert parse_time("2h", now) == now - 7200
    assert parse_time("1d", now) == now - 86400
    assert parse_time("1h30m", now) == now - 5400
    assert parse_time("2026-11-18T11:06:40Z", now) == T0
    assert parse_time("2026-11-18T11:06:40", now) == T0
    assert parse_time("2026-11-18T12:06:40+01:00", now) == T0
    with pytest.raises(ValueError, match="yesterday"):
        parse_time("yesterday", now)


@pytest.mark.parametrize("flag", ["--since", "--until"])
def test_a_bad_time_is_a_usage_error_naming_the_flag_and_value(capsys, jpath, flag):
    code, out, err = run(capsys, "--journal", str(jpath), flag, "last tuesday")
    assert code == 64
    assert flag in err and "last tuesday" in err
    assert out == ""


def test_an_unknown_kind_is_a_usage_error(capsys, jpath):
    code, _, err = run(capsys, "--journal", str(jpath), "--kind", "sample,teleport")
    assert code == 64
    assert "teleport" in err


def test_a_missing_journal_exits_66_without_creating_it(capsys, tmp_path):
    missing = tmp_path / "no" / "journal.sqlite3"
    for extra in ([], ["--verify"], ["--format", "csv"]):
        code, _, err = run(capsys, "--journal", str(missing), *extra)
        assert code == 66
        assert str(missing) in err and "Traceback" not in err
    assert not missing.exists() and not missing.parent.exists()


def test_the_default_journal_is_the_state_dirs(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    code, _, err = run(capsys)
    assert code == 66
    assert str(tmp_path / "state" / "capguard" / "journal.sqlite3") in err


def test_a_file_that_is_not_a_journal_exits_65(capsys, tmp_path):
    junk = tmp_path / "junk.sqlite3"
    junk.write_text("not sqlite")
    code, _, err = run(capsys, "--journal", str(junk))
    assert code == 65
    assert "Traceback" not in err


def test_verify_on_an_intact_journal_says_ok(capsys, jpath):
    code, out, _ = run(capsys, "--journal", str(jpath), "--verify")
    assert (code, out) == (0, "journal OK: 5 records\n")


def test_verify_on_a_tampered_journal_exits_65_naming_the_seq(capsys, jpath):
    conn = sqlite3.connect(jpath)
    conn.execute("DROP TRIGGER journal_no_update")
    conn.execute("""UPDATE journal SET body = json_set(body, '$.qty', 0.1) WHERE seq = 4""")
    conn.commit()
    conn.close()
    code, out, _ = run(capsys, "--journal", str(jpath), "--verify")
    assert code == 65
    assert out.startswith("journal TAMPERED at seq 4: ")


def test_verify_on_a_truncated_journal_exits_65(capsys, jpath):
    conn = sqlite3.connect(jpath)
    conn.execute("DROP TRIGGER journal_no_delete")
    conn.execute("DELETE FROM journal WHERE seq = 5")
    conn.commit()
    conn.close()
    code, out, _ = run(capsys, "--journal", str(jpath), "--verify")
    assert code == 65
    assert out.startswith("journal TRUNCATED at seq 5: ")


def test_an_empty_selection_prints_the_header_and_says_so(capsys, jpath):
    code, out, err = run(capsys, "--journal", str(jpath), "--account", "nobody")
    assert code == 0
    assert out.split() == ["ts", "kind", "account", "action_id", "fields"]
    assert "no matching records" in err


def test_the_module_runs_in_a_fresh_interpreter(jpath):
    code = (
        "import sys\n"
        "from engine.journal_cli import main\n"
        f"sys.exit(main(['--journal', {str(jpath)!r}, '--format', 'jsonl', '--kind', 'order']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    assert json.loads(line)["client_order_id"] == "cg-1"
