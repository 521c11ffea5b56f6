"""Operating the headless guard: SIGHUP reloads (an invalid file is refused, the old one
stays), and systemd's notify protocol (READY, watchdog pings, STOPPING)."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from engine.config import bundled_config_path
from engine.journal import Journal


def start(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    e = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "cfg"), XDG_STATE_HOME=str(tmp_path / "state"))
    e.pop("CAPGUARD_CONFIG", None)
    e.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "capguard_tui.cli", "--headless", "--scenario", "calm", "--no-api",
         "--journal", str(tmp_path / "j.sqlite3"), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e,
    )  # fmt: skip


def wait_for(predicate, seconds=30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def config_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with Journal(path, readonly=True) as j:
        return j.records(kind="config")


def test_sighup_reloads_a_valid_file_and_refuses_an_invalid_one(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(bundled_config_path().read_text())
    proc = start(tmp_path, "--config", str(cfg))
    journal = tmp_path / "j.sqlite3"
    try:
        assert wait_for(journal.exists)
        time.sleep(2)  # the guard is up and looping
        cfg.write_text(cfg.read_text().replace("dwell = 10.0 ", "dwell = 20.0 "))
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: any(r.get("event") == "reload" for r in config_records(journal)))
        cfg.write_text(cfg.read_text().replace("[ladder]", "[ladder]\nbogus = 1"))
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: any(r.get("event") == "reload_refused" for r in config_records(journal)))
        assert proc.poll() is None, "an invalid reload must not stop the guard"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    refused = [r for r in config_records(journal) if r.get("event") == "reload_refused"]
    assert "ladder.bogus: unknown key" in refused[0]["error"]
    assert '"event": "reload"' in err and '"event": "reload_refused"' in err


def test_systemd_hears_ready_watchdog_pings_and_stopping(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.5)
    proc = start(tmp_path, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    heard: list[str] = []

    def listen(until: str, seconds: float = 40.0) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                heard.append(sock.recv(256).decode())
            except TimeoutError:
                continue
            if until in heard[-1]:
                return True
        return False

    try:
        assert listen("READY=1")
        assert listen("WATCHDOG=1") and listen("WATCHDOG=1")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert listen("STOPPING=1", 20)
        proc.communicate(timeout=30)
        sock.close()
    assert proc.returncode == 0
