"""The command line as a user runs it: a real subprocess, real exit codes."""

import json
import os
import subprocess
import sys

import pytest

SNAPSHOT = {
    "instruments": [
        {
            "symbol": "BTCUSDT",
            "contract_size": 1,
            "brackets": [
                {"floor": 0, "cap": 50000, "mmr": 0.004, "max_leverage": 125},
                {"floor": 50000, "cap": 250000, "mmr": 0.005, "max_leverage": 100, "maintenance_amount": 50},
            ],
        }
    ],
    "accounts": [
        {
            "id": "acct-1",
            "wallet_balance": 10000,
            "margin_mode": "cross",
            "positions": [{"symbol": "BTCUSDT", "qty": 0.5, "entry_price": 60000, "isolated_margin": None}],
            "open_orders": [],
        }
    ],
    "prices": {"BTCUSDT": 61000},
    "thresholds": {"warning": 2.0, "critical": 1.5, "liquidation": 1.2},
}


def run(*args, stdin=None, env=None, tmp_path=None):
    e = dict(os.environ)
    e.pop("CAPGUARD_CONFIG", None)
    if tmp_path is not None:
        e["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "capguard_tui.cli", *args], input=stdin, capture_output=True, text=True, env=e
    )


def test_eval_from_stdin_prints_the_documented_numbers():
    out = run("eval", "-", stdin=json.dumps(SNAPSHOT))
    assert out.returncode == 0, out.stderr
    acct = json.loads(out.stdout)["accounts"][0]
    # equity 10000 + 0.5 * (61000 - 60000) = 10500; MM 30500 * 0.004 = 122
    assert acct["equity"] == 10500.0
    assert acct["maintenance_margin"] == 122.0
    assert acct["margin_ratio"] == pytest.approx(10500 / 122, rel=1e-12)
    assert acct["level"] == "SAFE"


def test_eval_of_a_file_with_a_nan_price_exits_65_with_nothing_on_stdout(tmp_path):
    bad = dict(SNAPSHOT, prices={"BTCUSDT": -1})
    f = tmp_path / "snap.json"
    f.write_text(json.dumps(bad))
    out = run("eval", str(f))
    assert out.returncode == 65
    assert out.stdout == ""
    assert "BTCUSDT" in out.stderr and "positive" in out.stderr
    assert "Traceback" not in out.stderr


def test_eval_names_the_bad_record(tmp_path):
    bad = json.loads(json.dumps(SNAPSHOT))
    bad["accounts"][0]["positions"][0]["qty"] = "lots"
    out = run("eval", "-", stdin=json.dumps(bad))
    assert out.returncode == 65
    assert "accounts[0] (acct-1).positions[0] (BTCUSDT).qty" in out.stderr


def test_an_invalid_config_exits_78_naming_the_key(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[thresholds]\nwarning = 2.0\ncritical = 1.5\nliquidation = 1.2\nbogus = 1\n")
    out = run("--config", str(cfg), "info", tmp_path=tmp_path)
    assert out.returncode == 78
    assert "thresholds.bogus: unknown key" in out.stdout + out.stderr
    out = run("--config", str(cfg), tmp_path=tmp_path)
    assert out.returncode == 78
    assert "thresholds.bogus: unknown key" in out.stderr
    assert "Traceback" not in out.stderr


def test_info_names_the_config_in_force(tmp_path):
    out = run("info", tmp_path=tmp_path)
    assert out.returncode == 0
    assert "bundled default" in out.stdout
    assert "journal" in out.stdout


def test_help_lists_only_built_verbs():
    out = run("--help")
    assert "eval" in out.stdout and "info" in out.stdout
