"""The notifier against real endpoints (SMTP and HTTP on loopback), driven by a hand-stepped clock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine.alerts.config import AlertsConfig, ChannelConfig, EscalationConfig, RateLimitConfig, RetryConfig
from engine.alerts.notifier import Notifier
from engine.clock import SimClock, iso
from engine.events import EventHub
from engine.journal import Journal
from tests.engine.alerts.sinks import BlackHole, HttpSink, SmtpSink, free_port, settle, wait_until

T0 = 1_780_000_000.0


@pytest.fixture
def clock() -> SimClock:
    return SimClock(start=T0, paused=True)


@pytest.fixture
def journal(tmp_path, clock):
    j = Journal(tmp_path / "journal.sqlite3", clock)
    yield j
    j.close()


@pytest.fixture
def sink():
    s = HttpSink()
    yield s
    s.close()


def tiered(sink: HttpSink, **kw: Any) -> AlertsConfig:
    """One JSON channel per tier, each at its own path of the sink."""
    channels = [
        ChannelConfig(name="desk-hook", url=sink.url("desk"), tags=["desk"]),
        ChannelConfig(name="risk-hook", url=sink.url("risk"), tags=["risk"]),
        ChannelConfig(name="mgmt-hook", url=sink.url("mgmt"), tags=["management"]),
        ChannelConfig(name="ext-hook", url=sink.url("ext"), tags=["external"]),
    ]
    kw.setdefault("escalation", EscalationConfig(critical_delay=60.0))
    return AlertsConfig(channels=channels, **kw)


class Bench:
    """A hub, a notifier running on it, and a way to raise alerts like Protection.alert does."""

    def __init__(self, notifier: Notifier, hub: EventHub, clock: SimClock) -> None:
        self.n, self.hub, self.clock = notifier, hub, clock
        self.seq = 0

    def alert(self, category: str, severity: str, account: str | None = "acct-1", message: str = "") -> str:
        self.seq += 1
        alert_id = f"al{self.seq}"
        self.hub.publish(
            {
                "type": "alert",
                "ts": iso(self.clock.now()),
                "alert_id": alert_id,
                "account": account,
                "category": category,
                "severity": severity,
                "message": message or f"{account} {category} #{self.seq}",
            }
        )
        return alert_id

    def ack(self, alert_id: str) -> None:
        self.hub.publish({"type": "ack", "ts": iso(self.clock.now()), "alert_id": alert_id, "operator": "tom"})

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(
    cfg: AlertsConfig, clock: SimClock, journal: Journal, path: Any, extra_urls: tuple[str, ...] = ()
) -> AsyncIterator[Bench]:
    hub = EventHub()
    n = Notifier(cfg, clock, journal, path, extra_urls=extra_urls)
    task = asyncio.get_running_loop().create_task(n.run(hub.subscribe(kinds={"alert", "ack"})))
    try:
        yield Bench(n, hub, clock)
    finally:
        n.stop()
        await asyncio.wait_for(task, 10)
        n.close()


async def test_email_and_json_deliveries_arrive_with_the_alert_text(tmp_path, clock, journal, sink):
    smtp = SmtpSink()
    try:
        cfg = AlertsConfig(
            channels=[
                ChannelConfig(name="desk-mail", url=smtp.url("pw-1234"), tags=["desk"]),
                ChannelConfig(name="desk-hook", url=sink.url("desk"), tags=["desk"]),
            ]
        )
        async with running(cfg, clock, journal, tmp_path / "outbox.sqlite3") as b:
            b.alert("warning", "warning", "d1-momo-02", "d1-momo-02 margin ratio 1.874: WARNING")
            await wait_until(lambda: smtp.messages and sink.at("desk"), what="both deliveries")
            body = sink.at("desk")[0]
            assert "d1-momo-02 margin ratio 1.874: WARNING" in body["message"]
            assert "WARNING" in body["title"] and body["type"] == "warning"
            mail = smtp.messages[0]
            assert "d1-momo-02" in mail["Subject"]
            assert "d1-momo-02 margin ratio 1.874: WARNING" in smtp.texts()[0]
            assert smtp.envelopes[0] == ("capguard@example.com", ["desk@example.com"])
            await wait_until(lambda: all(r["status"] == "sent" for r in b.n.status()) and len(b.n.status()) == 2)
            rows = {r["channel"]: r for r in b.n.status()}
            assert rows["desk-mail"]["service"] == "E-Mail" and rows["desk-hook"]["service"] == "JSON"
            assert rows["desk-mail"]["delivered_at"] == iso(T0) and rows["desk-mail"]["attempts"] == 1
    finally:
        smtp.close()


async def test_an_unacknowledged_critical_climbs_the_tiers_one_delay_at_a_time(tmp_path, clock, journal, sink):
    async with running(tiered(sink), clock, journal, tmp_path / "outbox.sqlite3") as b:
        b.alert("critical", "critical", "acct-7", "acct-7 margin ratio 1.41: CRITICAL")
        await wait_until(lambda: sink.at("desk"), what="the desk")
        await b.advance(59)
        await settle()
        assert not sink.at("risk")
        await b.advance(1)
        await wait_until(lambda: sink.at("risk"), what="the second tier")
        escalated = sink.at("risk")[0]
        assert escalated["title"].startswith("ESCALATED to risk officer")
        assert "acct-7 margin ratio 1.41: CRITICAL" in escalated["message"]
        assert not sink.at("mgmt")
        await b.advance(60)
        await wait_until(lambda: sink.at("mgmt"), what="the third tier")
        await b.advance(60)
        await wait_until(lambda: sink.at("ext"), what="the external tier")
        await b.advance(600)
        await settle()
        assert [len(sink.at(p)) for p in ("desk", "risk", "mgmt", "ext")] == [1, 1, 1, 1]
        state = b.n.alerts()[0]
        assert state["tier"] == 3 and state["escalate_at"] is None


async def test_an_acknowledgement_stops_the_escalation(tmp_path, clock, journal, sink):
    async with running(tiered(sink), clock, journal, tmp_path / "outbox.sqlite3") as b:
        first = b.alert("critical", "critical", "acct-7")
        second = b.alert("critical", "critical", "acct-8")
        await wait_until(lambda: len(sink.at("desk")) == 2, what="the desk")
        await b.advance(10)
        b.ack(second)  # acknowledged before its first escalation
        await b.advance(50)
        await wait_until(lambda: len(sink.at("risk")) == 1, what="the second tier")
        assert "acct-7" in sink.at("risk")[0]["message"]
        b.ack(first)
        await settle(0.1)
        await b.advance(60)
        await b.advance(600)
        await settle()
        assert not sink.at("mgmt") and not sink.at("ext")
        acked = {a["alert_id"]: a for a in b.n.alerts()}
        assert acked[first]["acked_by"] == "tom" and acked[second]["acked_at"] is not None


async def test_liquidation_and_system_alerts_go_to_every_tier_at_once(tmp_path, clock, journal, sink):
    async with running(tiered(sink), clock, journal, tmp_path / "outbox.sqlite3") as b:
        b.alert("liquidation", "emergency", "acct-3", "acct-3 margin ratio 1.150: LIQUIDATION")
        await wait_until(lambda: all(sink.at(p) for p in ("desk", "risk", "mgmt", "ext")), what="every tier")
        assert all("LIQUIDATION" in sink.at(p)[0]["message"] for p in ("desk", "risk", "mgmt", "ext"))
        b.alert("system", "critical", None, "circuit breaker: 8 accounts breached within 30s")
        await wait_until(lambda: all(len(sink.at(p)) == 2 for p in ("desk", "risk", "mgmt", "ext")), what="system")
        assert clock.now() == T0  # no time had to pass


async def test_duplicates_and_rate_limits_are_held_back_and_summed_up_in_a_digest(tmp_path, clock, journal, sink):
    cfg = AlertsConfig(
        channels=[ChannelConfig(name="desk-hook", url=sink.url("desk"), tags=["desk"])],
        dedupe_window=60.0,
        rate_limit=RateLimitConfig(count=2, window=600.0),
    )
    async with running(cfg, clock, journal, tmp_path / "outbox.sqlite3") as b:
        b.alert("approaching", "info", "acct-1", "acct-1 approaching WARNING (1)")
        b.alert("approaching", "info", "acct-1", "acct-1 approaching WARNING (2)")
        b.alert("approaching", "info", "acct-1", "acct-1 approaching WARNING (3)")
        b.alert("approaching", "info", "acct-2", "acct-2 approaching WARNING")  # another account: its own limits
        await wait_until(lambda: len(sink.at("desk")) == 2, what="the first two")
        await settle()
        messages = [m["message"] for m in sink.at("desk")]
        assert any("(1)" in m for m in messages) and any("acct-2" in m for m in messages)
        await b.advance(61)  # the de-duplication window is over: the digest goes out
        await wait_until(lambda: len(sink.at("desk")) == 3, what="the digest")
        digest = sink.at("desk")[2]
        assert digest["title"].startswith("capguard digest: 2 alert(s) held back")
        assert "acct-1 approaching: 2 held back (2 duplicate)" in digest["message"]
        assert "approaching WARNING (3)" in digest["message"]
        b.alert("approaching", "info", "acct-1", "acct-1 approaching WARNING (4)")  # second of two per window
        await wait_until(lambda: len(sink.at("desk")) == 4, what="the fourth")
        await b.advance(61)
        b.alert("approaching", "info", "acct-1", "acct-1 approaching WARNING (5)")  # over the rate limit
        b.alert("liquidation", "emergency", "acct-1", "acct-1 LIQUIDATION")  # never held back
        await wait_until(lambda: len(sink.at("desk")) == 5, what="the liquidation")
        await settle()
        assert "LIQUIDATION" in sink.at("desk")[4]["message"]
        await b.advance(600 - 122)  # the rate window of the first alert ends at T0 + 600
        await wait_until(lambda: len(sink.at("desk")) == 6, what="the second digest")
        assert "1 rate limited" in sink.at("desk")[5]["message"]
        held = [a for a in b.n.alerts() if a["suppressed"]]
        assert sorted(a["suppressed"] for a in held) == ["duplicate", "duplicate", "rate_limited"]


async def test_an_alert_queued_while_the_sink_is_down_is_delivered_once_after_a_restart(tmp_path, clock, journal):
    port = free_port()
    down = f"json://127.0.0.1:{port}/desk"
    cfg = AlertsConfig(
        channels=[ChannelConfig(name="desk-hook", url=down, tags=["desk"])],
        retry=RetryConfig(base=5.0, max=60.0, attempts=10),
    )
    path = tmp_path / "outbox.sqlite3"
    async with running(cfg, clock, journal, path) as b:
        alert_id = b.alert("critical", "critical", "acct-9", "acct-9 margin ratio 1.30: CRITICAL")
        await wait_until(lambda: b.n.status() and b.n.status()[0]["attempts"] == 1, what="the failed attempt")
        row = b.n.status()[0]
        assert row["status"] == "pending" and "Connection error" in row["last_error"]
        assert row["next_attempt_at"] == iso(T0 + 5)
    sink = HttpSink(port)
    try:
        async with running(cfg, clock, journal, path) as b2:
            await b2.advance(5)
            await wait_until(lambda: sink.at("desk"), what="the delivery after the restart")
            assert alert_id in sink.at("desk")[0]["message"]
            await b2.advance(30)
            await settle()
            assert len(sink.at("desk")) == 1
            assert [r["status"] for r in b2.n.status()] == ["sent"]
            assert b2.n.status()[0]["attempts"] == 2
        third = Notifier(cfg, clock, journal, path)
        assert await third.deliver_due(T0 + 10_000) == []
        third.close()
        assert len(sink.at("desk")) == 1
    finally:
        sink.close()


async def test_a_delivery_that_never_answers_does_not_block_the_event_loop(tmp_path, clock, journal):
    hole = BlackHole()
    cfg = AlertsConfig(
        channels=[ChannelConfig(name="slow", url=f"json://127.0.0.1:{hole.port}/x?rto=3", tags=["desk"])],
        delivery_timeout=0.4,
    )
    n = Notifier(cfg, clock, journal, tmp_path / "outbox.sqlite3")
    try:
        n.handle_many([{"type": "alert", "alert_id": "al1", "category": "warning", "severity": "warning",
                        "account": "acct-1", "message": "slow"}])  # fmt: skip
        gaps: list[float] = []

        async def heartbeat() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        beat = asyncio.get_running_loop().create_task(heartbeat())
        started = time.monotonic()
        results = await n.deliver_due()
        elapsed = time.monotonic() - started
        beat.cancel()
        assert 0.35 < elapsed < 2.0
        assert results[0]["status"] == "pending" and "no answer within 0.4s" in results[0]["error"]
        assert max(gaps) < 0.15, max(gaps)
        assert n.status()[0]["attempts"] == 1
    finally:
        n.close()
        hole.close()


async def test_secrets_in_urls_never_reach_logs_status_or_the_journal(tmp_path, clock, journal, monkeypatch, caplog):
    monkeypatch.setenv("HOOK_PASSWORD", "Hook-S3cret-77")
    monkeypatch.setenv("SMTP_PASSWORD", "Smtp-S3cret-42")
    caplog.set_level(logging.DEBUG)
    smtp = SmtpSink()
    port = free_port()  # nothing listens: every attempt fails
    try:
        cfg = AlertsConfig(
            channels=[
                ChannelConfig(name="mail", url=smtp.url("${SMTP_PASSWORD}"), tags=["desk"]),
                ChannelConfig(name="hook", url=f"json://bob:${{HOOK_PASSWORD}}@127.0.0.1:{port}/x", tags=["desk"]),
                ChannelConfig(name="nokey", url="json://u:${NOT_SET_ANYWHERE}@127.0.0.1/x", tags=["desk"]),
            ],
            retry=RetryConfig(base=1.0, max=1.0, attempts=2),
        )
        cli = ("json://cli:Cli-S3cret-9@127.0.0.1:1/y",)
        async with running(cfg, clock, journal, tmp_path / "outbox.sqlite3", cli) as b:
            b.alert("critical", "critical", "acct-1", "acct-1 margin ratio 1.4: CRITICAL")
            await wait_until(lambda: smtp.messages, what="the email")
            await wait_until(lambda: {r["channel"]: r["attempts"] for r in b.n.status()}.get("hook") == 1)
            await b.advance(1)
            await wait_until(
                lambda: sum(r["status"] == "failed" for r in b.n.status()) == 3, what="hook, nokey and cli failed"
            )
            failures = journal.records(kind="system")
            assert {f["channel"] for f in failures} == {"hook", "nokey", "--notify#1"}
            assert all(f["message"] == "alert delivery failed" for f in failures)
            nokey = next(f for f in failures if f["channel"] == "nokey")
            assert nokey["error"] == "environment variable NOT_SET_ANYWHERE not set" and nokey["attempts"] == 1
            shown = repr(b.n.status()) + repr(b.n.channel_list()) + repr(b.n.alerts())
            channels = {c["name"]: c for c in b.n.channel_list()}
            assert channels["mail"]["url"].startswith("mailto://capguard:****@127.0.0.1")
            assert not channels["nokey"]["available"]
        journaled = repr(journal.records())
        for secret in ("Hook-S3cret-77", "Smtp-S3cret-42", "Cli-S3cret-9"):
            assert secret not in caplog.text
            assert secret not in shown
            assert secret not in journaled
        assert "Connection error" in caplog.text  # the failures were logged, without the secrets
    finally:
        smtp.close()


async def test_channels_from_an_apprise_config_file_are_routed_by_their_tags(tmp_path, clock, journal, sink):
    conf = tmp_path / "apprise.yml"
    conf.write_text(f"urls:\n  - {sink.url('risk')}:\n      tag: risk\n", encoding="utf-8")
    cfg = AlertsConfig(
        channels=[ChannelConfig(name="desk-hook", url=sink.url("desk"), tags=["desk"])],
        apprise_config=str(conf),
        routing={"limit": ["desk", "risk"]},
    )
    async with running(cfg, clock, journal, tmp_path / "outbox.sqlite3") as b:
        assert {c["name"]: c["tags"] for c in b.n.channel_list()}["apprise_config#1"] == ["apprise_config#1", "risk"]
        b.alert("limit", "warning", "acct-4", "acct-4 breached max leverage: REDUCING")
        await wait_until(lambda: sink.at("desk") and sink.at("risk"), what="both routed channels")
        assert "max leverage" in sink.at("risk")[0]["message"]
        await wait_until(lambda: {r["channel"]: r["status"] for r in b.n.status()}.get("apprise_config#1") == "sent")


async def test_alerts_still_queued_when_the_notifier_stops_are_kept_and_sent(tmp_path, clock, journal, sink):
    cfg = AlertsConfig(channels=[ChannelConfig(name="desk-hook", url=sink.url("desk"), tags=["desk"])])
    hub = EventHub()
    n = Notifier(cfg, clock, journal, tmp_path / "outbox.sqlite3")
    task = asyncio.get_running_loop().create_task(n.run(hub.subscribe(kinds={"alert", "ack"})))
    await asyncio.sleep(0.05)
    bench = Bench(n, hub, clock)
    bench.alert("system", "emergency", None, "kill switch engaged by rita")
    n.stop()  # in the same step: the event is still queued
    await asyncio.wait_for(task, 10)
    assert [m["message"].splitlines()[0] for m in sink.at("desk")] == ["kill switch engaged by rita"]
    assert [r["status"] for r in n.status()] == ["sent"]
    n.close()
