"""A real guard in a crash: its alerts reach an HTTP sink through the notifier."""

from __future__ import annotations

import asyncio

import pytest
import tomlkit

from engine.alerts.config import AlertsConfig, ChannelConfig, EscalationConfig
from engine.alerts.notifier import Notifier
from engine.config import Config, bundled_config_path, parse_config
from tests.engine.alerts.sinks import HttpSink, settle, wait_until
from tests.engine.guard.support import RISK, drive, make_guard


def guard_config() -> Config:
    """The bundled default (without [alerts] while Config does not know that section yet)."""
    doc = tomlkit.parse(bundled_config_path().read_text(encoding="utf-8"))
    if "alerts" not in Config.model_fields and "alerts" in doc:
        del doc["alerts"]
    return parse_config(tomlkit.dumps(doc))[0]


@pytest.fixture
def sink():
    s = HttpSink()
    yield s
    s.close()


async def test_a_crash_sends_its_alerts_through_the_notifier(tmp_path, sink):
    g = make_guard(tmp_path, "crash", cfg=guard_config())
    cfg = AlertsConfig(
        channels=[
            ChannelConfig(name="desk-hook", url=sink.url("desk"), tags=["desk"]),
            ChannelConfig(name="risk-hook", url=sink.url("risk"), tags=["risk"]),
            ChannelConfig(name="mgmt-hook", url=sink.url("mgmt"), tags=["management"]),
        ],
        escalation=EscalationConfig(critical_delay=30.0),
    )
    n = Notifier(cfg, g.clock, g.journal, tmp_path / "outbox.sqlite3", extra_urls=[sink.url("cli")])
    task = asyncio.get_running_loop().create_task(n.run(g.subscribe(maxsize=10_000, kinds={"alert", "ack"})))
    try:
        await drive(g, 10)
        journaled = {r["alert_id"]: r for r in g.journal.records(kind="alert")}
        assert any(r["severity"] in ("critical", "emergency") for r in journaled.values())
        await wait_until(lambda: {a["alert_id"] for a in n.alerts()} >= set(journaled), what="the notifier")
        sent = [a["alert_id"] for a in n.alerts() if not a["suppressed"]]
        await wait_until(lambda: len(sink.at("cli")) >= len(sent), what="every alert at the --notify URL")
        cli = [b["message"] for b in sink.at("cli")]
        for alert_id in sent:  # each exactly once at the --notify URL, with the guard's own text
            assert sum(f"alert {alert_id} |" in m for m in cli) == 1, alert_id
            assert any(journaled[alert_id]["message"] in m for m in cli)
        assert any("CRITICAL" in m or "LIQUIDATION" in m for m in (b["message"] for b in sink.at("desk")))
        # unacknowledged CRITICAL alerts go on to the risk officer after critical_delay
        # (held-back duplicates are not escalated themselves: their original is)
        critical = [
            a["alert_id"] for a in n.alerts() if a["mode"] == "timed" and not a["suppressed"] and not a["dup_of"]
        ]
        assert critical
        g.clock.advance(30)
        await wait_until(lambda: all(any(f"alert {a} |" in b["message"] for b in sink.at("risk")) for a in critical))
        # acknowledging through the guard's own command stops them before management
        for alert_id in critical:
            assert (await g.command("acknowledge", RISK, alert_id=alert_id)).ok
        await settle(0.2)
        g.clock.advance(60)
        await settle()
        assert not any(any(f"alert {a} |" in b["message"] for b in sink.at("mgmt")) for a in critical)
        await wait_until(lambda: not [r for r in n.status() if r["status"] == "pending"], what="the digest")
        assert all(r["status"] == "sent" for r in n.status())
        assert not [r for r in g.journal.records(kind="system") if r.get("event") == "alert_delivery_failed"]
    finally:
        n.stop()
        await asyncio.wait_for(task, 10)
        n.close()
        await g.stop(grace=0.1)
        g.journal.close()
