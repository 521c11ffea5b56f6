"""systemd's notify protocol, by hand (one datagram; no dependency): READY=1 once the guard
runs, WATCHDOG=1 from the guard loop so a stalled loop is restarted (WatchdogSec=), STOPPING=1.
Does nothing when not started by systemd (no $NOTIFY_SOCKET)."""

from __future__ import annotations

import os
import socket
import time


class SystemdNotifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + path[1:] if path.startswith("@") else path  # abstract namespace
        usec = env.get("WATCHDOG_USEC", "")
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, state: str) -> bool:
        if not self.address:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto(state.encode(), self.address)
            except OSError:
                return False
        return True

    def ping(self) -> None:
        """Called every loop pass; sends WATCHDOG=1 at half the configured watchdog period."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.send("WATCHDOG=1")
