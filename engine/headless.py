"""`capguard --headless`: the guard with no screen. JSON log lines on stderr; SIGTERM or
SIGINT lets in-flight actions finish (or journals them as interrupted) and exits 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.clock import iso
from engine.config import ConfigError, ConfigWriter, LoadedConfig, load_config
from engine.jsonsafe import clean


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"ts": iso(record.created), "level": record.levelname, "logger": record.name}
        event = getattr(record, "event", None)
        if event is not None:
            line.update(event)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(clean(line), default=str, allow_nan=False)  # Infinity is not JSON


def setup_logging() -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)  # a Python warning becomes a JSON line too
    return logging.getLogger("capguard")


async def run_headless(
    loaded: LoadedConfig,
    scenario: str | None,
    speed: float,
    journal: str | None,
    grace: float = 10.0,
    notify: Sequence[str] = (),
    api: str | None = None,
    no_api: bool = False,
) -> int:
    from engine.alerts.notifier import Notifier
    from engine.guard import Guard

    log = setup_logging()
    for i, url in enumerate(notify, start=1):
        if (problem := Notifier.validate_url(url)) is not None:
            log.error("bad --notify", extra={"event": {"event": "config_error", "notify": i, "problem": problem}})
            return 78  # EX_CONFIG
    guard = await Guard.connect(
        loaded.config,
        scenario=scenario,
        speed=speed,
        journal_path=Path(journal) if journal else None,
        config_writer=ConfigWriter(loaded),
    )
    api_server = None
    if not no_api:
        from engine.api import ApiServer, StartupRefused, parse_bind

        try:
            host, port = parse_bind(api) if api else (loaded.config.api.host, loaded.config.api.port)
            api_server = ApiServer(guard, loaded.config.api, host, port, guard.config_writer)
            await api_server.start()
        except (StartupRefused, ValueError, OSError) as exc:
            log.error("api refused", extra={"event": {"event": "config_error", "api": str(exc)}})
            guard.journal.close()
            return 78  # EX_CONFIG
    notifier = Notifier(
        loaded.config.alerts,
        guard.clock,
        guard.journal,
        guard.journal.path.with_name(guard.journal.path.stem + "-alerts-outbox.sqlite3"),
        extra_urls=list(notify),
    )
    loop = asyncio.get_running_loop()
    alerts_sub = guard.subscribe(maxsize=10_000, kinds={"alert", "ack"})
    notifier_task = loop.create_task(notifier.run(alerts_sub))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def reload() -> None:
        """SIGHUP: re-read the configuration file; an invalid one is refused and the old stays."""
        try:
            new = load_config(loaded.path)
        except ConfigError as exc:
            log.error("reload refused", extra={"event": {"event": "reload_refused", "error": str(exc)}})
            guard.journal.append("config", event="reload_refused", error=str(exc))
            return
        pending = guard.reload(new.config)
        notifier.config = new.config.alerts
        log.info("reloaded", extra={"event": {"event": "reload", "config": str(new.path), "needs_restart": pending}})

    loop.add_signal_handler(signal.SIGHUP, reload)
    log.info(
        "guard started",
        extra={
            "event": {
                "event": "start",
                "config": str(loaded.path),
                "journal": str(guard.journal.path),
                "accounts": guard.book.n_accounts,
                "scenario": guard.simulator.scenario.name,
                "speed": speed,
                "api": api_server.url if api_server is not None else None,
            }
        },
    )
    sub = guard.subscribe(maxsize=10_000, kinds={"transition", "alert", "action", "data"})

    async def echo() -> None:
        async for event in sub:
            fields = {k: v for k, v in event.items() if k != "type"}  # events are shared: never mutate
            log.info(event["type"], extra={"event": {"event": event["type"], **fields}})

    echo_task = loop.create_task(echo())
    runner = loop.create_task(guard.run())
    waiter = loop.create_task(stop.wait())
    started = time.monotonic()
    done, _ = await asyncio.wait({runner, waiter}, return_when=asyncio.FIRST_COMPLETED)
    failed = runner in done and runner.exception() is not None
    if failed:
        log.error("guard loop failed", exc_info=runner.exception())
    if api_server is not None:
        await api_server.stop()
    guard.systemd.send("STOPPING=1")
    await guard.stop(grace)
    notifier.stop()
    await notifier_task
    alerts_sub.close()
    notifier.close()
    runner.cancel()
    await asyncio.sleep(0)  # let the echo task log what stop() published
    echo_task.cancel()
    sub.close()
    log.info("guard stopped", extra={"event": {"event": "stop", "uptime_s": round(time.monotonic() - started, 3)}})
    guard.journal.close()
    return 70 if failed else 0  # EX_SOFTWARE when the loop itself failed
