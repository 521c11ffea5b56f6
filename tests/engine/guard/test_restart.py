"""Killed in the middle of a liquidation, restarted: nothing is sent twice and it completes."""

import json
import signal
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("crash_midway.py")
ROOT = Path(__file__).resolve().parents[3]


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_sigkill_mid_liquidation_then_restart_sends_no_order_twice_and_completes(tmp_path):
    killed = run("start", str(tmp_path), "4")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = run("resume", str(tmp_path))
    assert resumed.returncode == 0, resumed.stderr
    out = json.loads(resumed.stdout)
    assert len(out["client_ids"]) >= 4
    assert all(n == 1 for n in out["arrivals"].values()), out["arrivals"]
    assert len(set(out["client_ids"])) == len(out["client_ids"])
    assert all(q == 0 for q in out["position_qty"]), out["position_qty"]
    assert out["unfinished"] == 0
    assert out["ends"] and out["ends"][-1] is True
    assert out["verify"]
