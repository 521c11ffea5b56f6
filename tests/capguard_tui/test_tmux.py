"""The real `capguard` command in a real terminal (tmux): it draws, answers keys and quits
cleanly, leaving `guard_stop` in its journal."""

import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.capguard_tui.helpers import copy_config

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (CI installs it)")


def capguard_command() -> str:
    beside = Path(sys.executable).with_name("capguard")
    return str(beside) if beside.exists() else (shutil.which("capguard") or "capguard")


class Terminal:
    def __init__(self, tmp_path: Path, command: str, width: int, height: int) -> None:
        self.socket = f"capguard-test-{os.getpid()}-{width}"
        self.tmux = [TMUX, "-L", self.socket, "-f", "/dev/null"]
        subprocess.run([*self.tmux, "new", "-d", "-s", "t", "-x", str(width), "-y", str(height), command], check=True)

    def screen(self) -> str:
        out = subprocess.run([*self.tmux, "capture-pane", "-p", "-t", "t"], capture_output=True, text=True)
        return out.stdout

    def keys(self, *keys: str) -> None:
        for key in keys:
            subprocess.run([*self.tmux, "send-keys", "-t", "t", key], check=True)
            time.sleep(0.15)

    def wait_for(self, text: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared; the screen shows:\n{self.screen()}")

    def alive(self) -> bool:
        return subprocess.run([*self.tmux, "has-session", "-t", "t"], capture_output=True).returncode == 0

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True)


def test_capguard_runs_in_a_real_terminal_and_quits_cleanly(tmp_path):
    loaded = copy_config(tmp_path)
    env = {
        "XDG_CONFIG_HOME": tmp_path / "config",
        "XDG_STATE_HOME": tmp_path / "state",
        "XDG_DATA_HOME": tmp_path / "data",
        "TERM": "xterm-256color",
    }
    journal = tmp_path / "journal.sqlite3"
    exports = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in env.items())
    command = (
        f"env {exports} {shlex.quote(capguard_command())} --config {shlex.quote(str(loaded.path))} "
        f"--journal {shlex.quote(str(journal))} --scenario calm"
    )
    term = Terminal(tmp_path, command, 80, 24)
    try:
        screen = term.wait_for("ratio eq/MM")
        assert "account" in screen and "level" in screen
        term.keys("L")
        term.wait_for("Type the account id")
        term.keys("Escape")
        time.sleep(0.3)
        assert "Type the account id" not in term.screen()
        term.keys("?")
        term.wait_for("capguard keys")
        term.keys("Escape", "q")
        deadline = time.monotonic() + 15
        while term.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not term.alive(), term.screen()
    finally:
        term.close()
    rows = sqlite3.connect(journal).execute("SELECT body FROM journal WHERE kind = 'system' ORDER BY seq").fetchall()
    assert '"guard_stop"' in rows[-1][0]
    assert not list((tmp_path / "state").glob("**/journal.sqlite3"))  # --journal was honoured
