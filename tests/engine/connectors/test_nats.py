"""NATS against a real nats-server (JetStream, file storage in a temp dir) on a loopback port.

Skipped where nats-server is absent, except under CI=true, where that fails (see conftest).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

import numpy as np
import pytest

from engine.connectors import NatsConfig, RiskCenterConfig
from engine.connectors.nats_bus import NatsAccountSource, NatsPriceSource, NatsPublisher, route, token
from engine.connectors.risk_center import ThresholdPublisher
from engine.connectors.ticks import tick
from engine.events import EventHub
from engine.ladder import DataState
from engine.levels import LEVEL_NAMES
from tests.engine.connectors.support import wait_until

if os.environ.get("CI") == "true":
    import nats  # CI installs nats-py: its absence must fail, not skip
else:
    nats = pytest.importorskip("nats", reason="nats-py is not installed")

TS = "2026-11-25T15:47:32.120Z"


def cfg(url: str, **kw: Any) -> NatsConfig:
    kw.setdefault("backoff", {"initial": 0.05, "maximum": 0.3})
    return NatsConfig(servers=[url], reconnect_time_wait=0.2, connect_timeout=1.0, publish_timeout=0.5, **kw)


async def stream_messages(url: str, stream: str = "CAPGUARD") -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(subject, headers, payload) of every message stored in the stream, in order."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            m = await js.get_msg(stream, seq)
            out.append((m.subject, m.headers or {}, json.loads(m.data)))
        return out
    finally:
        await nc.close()


async def until_delivered(nc: Any, subject: str, payload: Any, received: Any) -> None:
    """Publish a probe until the source has received something: under load the first messages
    after a subscriber connects were sometimes not delivered, so the messages under test are
    sent only once the subscription is seen to be live."""
    for _ in range(100):
        await nc.publish(subject, json.dumps(payload).encode())
        await nc.flush()
        if await wait_until(lambda: received() > 0, timeout=0.1):
            return
    raise AssertionError(f"nothing arrived on {subject}")


def test_routes_and_message_ids():
    assert route({"type": "transition", "account": "d1 core.01"}) == ("capguard.risk.d1_core_01", None)
    assert route({"type": "data", "account": "a"}) == ("capguard.risk.a", None)
    assert route({"type": "margin", "account": "a"}, "desk1.cg") == ("desk1.cg.margin.a", None)
    assert route({"type": "alert", "alert_id": "al12"}) == ("capguard.alerts", "al12")
    assert route({"type": "ack", "alert_id": "al12", "ts": TS}) == ("capguard.alerts", f"al12:ack:{TS}")
    assert route({"type": "action", "action_id": "cg7", "stage": "started"}) == ("capguard.actions", "cg7:started")
    assert route({"type": "action", "account": "a", "stage": "orders_cancelled", "ts": TS}) == (
        "capguard.actions",
        f"a:orders_cancelled:{TS}",
    )
    assert route({"type": "thresholds", "change_id": "th-1"}) == ("capguard.thresholds", "th-1")
    assert route({"type": "something-else"}) is None
    assert token("") == "_" and token("a>b*c") == "a_b_c"


async def test_hub_events_on_documented_subjects_with_dedup(nats_server, wall):
    seen: list[tuple[str, dict[str, Any]]] = []
    watcher = await nats.connect(nats_server.url)

    async def record(msg: Any) -> None:
        seen.append((msg.subject, json.loads(msg.data)))

    await watcher.subscribe("capguard.>", cb=record)
    await watcher.flush()
    pub = NatsPublisher(cfg(nats_server.url), wall)
    await pub.start()
    hub = EventHub()
    sub = hub.subscribe(kinds=None)
    runner = asyncio.get_running_loop().create_task(pub.run(sub))
    try:
        assert await pub.link.wait_ready(5)
        assert pub.link.nc.options["max_reconnect_attempts"] == -1  # reconnect forever
        alert = {"type": "alert", "ts": TS, "alert_id": "al5", "account": "acct-1", "category": "critical"}
        events = [
            {"type": "transition", "ts": TS, "account": "acct-1", "from": "WARNING", "to": "CRITICAL"},
            alert,
            {
                "type": "action",
                "ts": TS,
                "account": "acct-1",
                "action_id": "cg6",
                "stage": "started",
                "kind": "deleverage",
            },
            {"type": "data", "ts": TS, "account": "acct-1", "data_state": "STALE", "instruments": ["BTCUSDT"]},
            {"type": "ack", "ts": TS, "alert_id": "al5", "account": "acct-1", "operator": "rita"},
            dict(alert),  # a republish of the same alert
        ]
        for e in events:
            hub.publish(e)
        assert await wait_until(lambda: pub.counters["queued"] == 6)  # run() took them from the hub
        assert pub.publish_margin("acct-1", ratio=1.4, equity=1000.0)
        assert pub.publish_thresholds({"change_id": "th-abc", "scope": "book", "after": {"warning": 2.1}})
        assert await wait_until(lambda: pub.counters["queued"] == 8 and pub.pending == 0, timeout=10)
        assert await pub.flush(5)
        assert await wait_until(lambda: len(seen) >= 8, timeout=5)
        subjects = [s for s, _ in seen]
        assert subjects.count("capguard.risk.acct-1") == 2 and "capguard.margin.acct-1" in subjects
        assert subjects.count("capguard.alerts") == 3 and "capguard.actions" in subjects
        stored = await stream_messages(nats_server.url)
        assert [(s, h.get("Nats-Msg-Id")) for s, h, _ in stored] == [
            ("capguard.alerts", "al5"),
            ("capguard.actions", "cg6:started"),
            ("capguard.alerts", f"al5:ack:{TS}"),
            ("capguard.thresholds", "th-abc"),
        ]  # the republished alert was deduplicated by its message id
        assert pub.counters["duplicates"] == 1 and stored[0][2]["category"] == "critical"
    finally:
        runner.cancel()
        sub.close()
        await pub.stop()
        await watcher.close()


async def test_server_restart_mid_stream_loses_no_action(nats_server, wall):
    pub = NatsPublisher(cfg(nats_server.url), wall)
    await pub.start()
    try:
        assert await pub.link.wait_ready(5)
        n = 40
        for k in range(n):
            pub.enqueue({"type": "action", "ts": TS, "account": "acct-1", "action_id": f"cg{k}", "stage": "started"})
            if k == 10:
                await wait_until(lambda: pub.pending < 25, timeout=5)
                nats_server.stop()  # mid-stream
            if k == 25:
                await asyncio.sleep(0.5)
                nats_server.start()
            await asyncio.sleep(0.01)
        assert await pub.flush(20), f"{pub.pending} events still queued: {pub.counters}"
        assert pub.link.reconnects >= 1
        stored = await stream_messages(nats_server.url)
        ids = [h["Nats-Msg-Id"] for _, h, _ in stored]
        assert ids == [f"cg{k}:started" for k in range(n)]  # every one, once, in order
        assert pub.counters["retries"] >= 1
    finally:
        await pub.stop()


async def test_publisher_started_before_the_server_keeps_trying(nats_server, wall):
    nats_server.stop()
    pub = NatsPublisher(cfg(nats_server.url), wall)
    await pub.start()
    try:
        pub.enqueue({"type": "alert", "ts": TS, "alert_id": "al1", "account": "a"})
        await asyncio.sleep(0.6)
        assert not pub.connected and pub.pending == 1
        nats_server.start()
        assert await pub.flush(10)
        stored = await stream_messages(nats_server.url)
        assert [h["Nats-Msg-Id"] for _, h, _ in stored] == ["al1"]
    finally:
        await pub.stop()


async def test_threshold_changes_go_to_nats(nats_server, wall):
    pub = NatsPublisher(cfg(nats_server.url), wall)
    await pub.start()
    try:
        rc = RiskCenterConfig(url="http://127.0.0.1:9/risk")
        tp = ThresholdPublisher(rc, pub, wall)
        change = {
            "change_id": "th-1",
            "scope": "account",
            "account": "acct-7",
            "before": None,
            "after": {"warning": 2.5},
        }
        assert (await tp.publish(change)) == {"nats": True, "webhook": None}
        assert (await tp.publish(change))["nats"]  # republished: stored once
        assert await pub.flush(5)
        stored = await stream_messages(nats_server.url)
        assert len(stored) == 1 and stored[0][0] == "capguard.thresholds" and stored[0][2]["account"] == "acct-7"
    finally:
        await pub.stop()


async def test_ticks_from_nats_are_another_price_source(nats_server, insts, wall, caplog):
    caplog.set_level(logging.WARNING, logger="capguard.connectors")
    src = NatsPriceSource(cfg(nats_server.url, ticks_subject="capguard.ticks.>"), insts, wall)
    await src.start()
    nc = await nats.connect(nats_server.url)
    try:
        assert await src.link.wait_ready(5) and src.connected
        # a symbol capguard does not know: ignored
        await until_delivered(nc, "capguard.ticks.XYZUSDT", tick("XYZUSDT", 1.0, TS), lambda: src.counters["messages"])
        src.counters.update(accepted=0, refused=0)
        await nc.publish("capguard.ticks.BTCUSDT", json.dumps(tick("BTCUSDT", 64000.0, TS)).encode())
        batch = {"ticks": [tick("ETHUSDT", 3400.0, TS), tick("SOLUSDT", 150.0, TS)]}
        await nc.publish("capguard.ticks.batch", json.dumps(batch).encode())
        await nc.publish("capguard.ticks.BTCUSDT", b"{broken")
        await nc.publish("capguard.ticks.BTCUSDT", json.dumps(tick("BTCUSDT", 0, TS)).encode())
        await nc.flush()
        ok = await wait_until(lambda: src.counters["accepted"] == 3 and src.counters["refused"] == 2, timeout=15)
        assert ok, src.counters
        ids, prices, _ = src.poll(wall.now())
        assert [src.symbols[i] for i in ids] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"] and prices.tolist()[0] == 64000.0
        assert "not valid JSON" in caplog.text and "mark must be a positive" in caplog.text
        assert src.stale(wall.now(), 5.0)[src.index["ADAUSDT"]]
    finally:
        await nc.close()
        await src.stop()


async def test_account_updates_from_nats(nats_server, insts, sim_clock, caplog):
    caplog.set_level(logging.WARNING, logger="capguard.connectors")
    src = NatsAccountSource(cfg(nats_server.url, accounts_subject="capguard.accounts.>"), insts, sim_clock)
    await src.start()
    nc = await nats.connect(nats_server.url)
    try:
        assert await src.link.wait_ready(5)
        await until_delivered(nc, "capguard.accounts.probe", {"probe": True}, lambda: src.counters["polls"])
        src.counters.update(applied=0, refused=0)  # the probe was refused
        account = {
            "id": "acct-1",
            "wallet_balance": 1000.0,
            "positions": [{"symbol": "BTCUSDT", "qty": 0.1, "entry_price": 60000}],
        }
        msg = {"version": 1, "as_of": TS, "account": account}
        await nc.publish("capguard.accounts.acct-1", json.dumps(msg).encode())
        bad = {**msg, "account": {**account, "positions": [{"symbol": "XRPUSDT", "qty": 1, "entry_price": 1}]}}
        await nc.publish("capguard.accounts.acct-1", json.dumps(bad).encode())
        await nc.flush()
        assert await wait_until(lambda: src.counters["applied"] == 1 and src.counters["refused"] == 1)
        (a,) = src.snapshot.accounts
        assert a.positions[0].qty == 0.1 and "not a configured instrument" in caplog.text
        assert src.data_state(sim_clock.now()) == DataState.OK
        sim_clock.advance(31)
        assert src.data_state(sim_clock.now()) == DataState.STALE  # no heartbeat
    finally:
        await nc.close()
        await src.stop()


async def test_a_guard_publishes_threshold_changes_made_in_capguard_on_jetstream(nats_server, tmp_path):
    from engine.clock import SimClock
    from engine.connectors.base import SourcesConfig
    from engine.guard import Guard
    from engine.operators import Operator, Role
    from tests.engine.guard.support import T0, config

    sources = SourcesConfig(nats=cfg(nats_server.url))
    g = await Guard.connect(
        config().model_copy(update={"sources": sources}),
        clock=SimClock(start=T0, paused=True),
        journal_path=tmp_path / "j.sqlite3",
    )
    run = asyncio.get_running_loop().create_task(g.run())
    try:
        assert await g.sources.publisher.link.wait_ready(5)
        account = g.book.info[0].id
        result = await g.command("set_thresholds", Operator("rita", Role.RISK, "api"), account=account, warning=2.9)
        assert result.ok, result.message

        async def published() -> list[dict[str, Any]]:
            return [m for s, _, m in await stream_messages(nats_server.url) if s == "capguard.thresholds"]

        for _ in range(100):
            if await published():
                break
            await asyncio.sleep(0.05)
        (msg,) = await published()
        assert msg["source"] == "capguard" and msg["account"] == account and msg["after"]["warning"] == 2.9
        assert msg["operator"] == "rita" and msg["origin"] == "api"
    finally:
        await g.stop(grace=1.0)
        await asyncio.wait_for(run, timeout=5.0)


async def test_a_guard_publishes_margin_snapshots_when_they_change(nats_server, tmp_path):
    from engine.clock import WallClock
    from engine.connectors.base import SourcesConfig
    from engine.guard import Guard
    from tests.engine.guard.support import config

    sources = SourcesConfig(nats=cfg(nats_server.url, margin_interval=0.1))
    g = await Guard.connect(
        config().model_copy(update={"sources": sources}), clock=WallClock(), journal_path=tmp_path / "j.sqlite3"
    )
    g.feed.paused = True  # no price moves: after the first round, nothing changes
    nc = await nats.connect(nats_server.url)
    got: list[tuple[str, dict[str, Any]]] = []

    async def on_msg(msg: Any) -> None:
        got.append((msg.subject, json.loads(msg.data)))

    await nc.subscribe("capguard.margin.>", cb=on_msg)
    await nc.flush()
    run = asyncio.get_running_loop().create_task(g.run())
    try:
        assert await wait_until(lambda: len(got) >= g.book.n_accounts, timeout=10)
        first = {subject for subject, _ in got}
        assert first == {f"capguard.margin.{token(i.id)}" for i in g.book.info}  # every account once
        _, msg = got[0]
        a = g.account_index(msg["account"])
        assert msg["margin_ratio"] == pytest.approx(float(g.book.ratio[a])) and msg["level"] in LEVEL_NAMES
        await asyncio.sleep(0.5)  # five more intervals, nothing moved
        assert len(got) == g.book.n_accounts
        # one account's wallet halves: its snapshot (only) goes out again
        g.book.wallet[a] /= 2
        g.book.revalue_accounts(np.array([a]))
        assert await wait_until(lambda: len(got) == g.book.n_accounts + 1, timeout=5)
        assert got[-1][1]["account"] == msg["account"] and got[-1][1]["equity"] < msg["equity"]
    finally:
        await nc.close()
        await g.stop(grace=1.0)
        await asyncio.wait_for(run, timeout=5.0)
