"""`capguard --headless` as an operator runs it: JSON logs, actions in the journal, SIGTERM exits 0."""

import json
import os
import signal
import subprocess
import sys
import time

from engine.journal import Journal
from tests.engine.alerts.sinks import HttpSink


def test_headless_crash_run_acts_journals_alerts_and_exits_cleanly_on_sigterm(tmp_path):
    sink = HttpSink()
    journal = tmp_path / "journal.sqlite3"
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "cfg"), XDG_STATE_HOME=str(tmp_path / "state"))
    env.pop("CAPGUARD_CONFIG", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "capguard_tui.cli",
            "--headless",
            "--scenario",
            "crash",
            "--speed",
            "10",
            "--journal",
            str(journal),
            "--notify",
            sink.url("desk"),
            "--api",
            "127.0.0.1:0",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        outcomes = []
        while time.monotonic() < deadline and not outcomes:
            time.sleep(0.5)
            if journal.exists():
                try:
                    with Journal(journal, readonly=True) as j:
                        outcomes = j.records(kind="outcome")
                except Exception:
                    pass
            assert proc.poll() is None, proc.stderr.read()
        assert outcomes, "no protective action completed within 60 s"
        while time.monotonic() < deadline and not sink.at("desk"):
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        sink.close()
    assert proc.returncode == 0, err[-2000:]
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    events = {line.get("event") for line in lines}
    assert {"start", "transition", "alert", "stop"} <= events
    assert any(line.get("event") == "action" and line.get("stage") == "started" for line in lines)
    delivered = sink.at("desk")
    assert delivered, "alerts must reach the --notify sink"
    assert any("LIQUIDATION" in (d.get("message") or d.get("body") or "") for d in delivered), delivered[:3]
    with Journal(journal, readonly=True) as j:
        assert j.verify().ok
        stops = [r for r in j.records(kind="system") if r.get("event") == "guard_stop"]
        assert stops

    # The compliance export of the same run.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "capguard_tui.cli",
            "journal",
            "--journal",
            str(journal),
            "--format",
            "jsonl",
            "--kind",
            "transition,order_intent",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    transitions = [r for r in rows if r["kind"] == "transition"]
    intents = [r for r in rows if r["kind"] == "order_intent"]
    assert transitions and intents
    assert all({"ts", "account", "from_level", "to_level", "ratio"} <= r.keys() for r in transitions)
    assert all({"client_order_id", "side", "qty", "reduce_only"} <= r.keys() and r["reduce_only"] for r in intents)
    verify = subprocess.run(
        [sys.executable, "-m", "capguard_tui.cli", "journal", "--journal", str(journal), "--verify"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert verify.returncode == 0 and "journal OK" in verify.stdout


def test_json_logs_stay_json_with_infinite_and_unknown_numbers():
    import json
    import logging

    from engine.headless import JsonFormatter

    record = logging.LogRecord("capguard", logging.INFO, __file__, 1, "m", None, None)
    record.event = {"event": "transition", "ratio": float("inf"), "spread": [float("nan"), 1.5]}
    line = JsonFormatter().format(record)
    assert "Infinity" not in line and "NaN" not in line
    assert json.loads(line)["ratio"] is None and json.loads(line)["spread"] == [None, 1.5]
