"""The four live channels: a snapshot on connect, then only what changed, serialised once for
every client; slow clients are coalesced to a fresh snapshot, never slowing the engine."""

from __future__ import annotations

import asyncio
import json

from engine.api.channels import EventsChannel, RiskStatusChannel, Source
from engine.api.models import ADAPTERS
from engine.levels import LEVEL_NAMES
from tests.engine.api.support import base_config, client, connect, receive, serving, until
from tests.engine.guard.support import drive, make_guard


def apply(state: dict[str, dict], msg: dict) -> None:
    for j, acct in enumerate(msg["ids"]):
        state.setdefault(acct, {}).update({k: v[j] for k, v in msg["columns"].items()})


async def test_risk_status_snapshot_then_deltas_that_rebuild_the_engines_state(tmp_path):
    async with serving(tmp_path, "crash") as (g, server), connect(server, "risk-status") as ws:
        snap = await receive(ws)
        ADAPTERS["risk-status"].validate_python(snap)
        assert snap["type"] == "snapshot" and snap["ids"] == [i.id for i in g.book.info]
        assert set(snap["columns"]) == set(g.snapshot().columns)
        state: dict[str, dict] = {}
        apply(state, snap)
        seq = snap["seq"]
        deltas = 0
        for _ in range(12):
            await drive(g, 1)
            while True:  # everything published so far
                try:
                    msg = await receive(ws, 0.3)
                except TimeoutError:
                    break
                ADAPTERS["risk-status"].validate_python(msg)
                if msg["type"] == "heartbeat":
                    assert msg["seq"] == seq
                    continue
                assert msg["type"] == "delta" and msg["seq"] == seq + 1
                assert 0 < len(msg["ids"]) <= g.book.n_accounts
                seq = msg["seq"]
                deltas += 1
                apply(state, msg)
        assert deltas >= 3
        now = g.snapshot()
        assert any(now.columns["level"] > 0)  # the crash did something
        for i, acct in enumerate(now.ids):
            row = state[acct]
            assert row["level"] == LEVEL_NAMES[now.columns["level"][i]]
            assert row["data_state"] == ("OK", "STALE", "INVALID")[now.columns["data_state"][i]]
            assert row["trading_state"] == ("ACTIVE", "REDUCING", "HALTED")[now.columns["trading_state"][i]]
            assert row["warning"] == round(float(now.columns["warning"][i]), 6)
            r = float(now.columns["margin_ratio"][i])
            assert abs(row["margin_ratio"] - r) <= 0.001 * abs(row["margin_ratio"]) + 1e-6  # ratio_step


async def test_risk_status_sends_only_what_changed(tmp_path):
    async with serving(tmp_path, "calm") as (g, server), connect(server, "risk-status") as ws:
        snap = await receive(ws)
        g.feed.paused = True  # no new prices: nothing moves
        await drive(g, 1)
        beat = await until(ws, lambda m: True, 3)
        assert beat["type"] == "heartbeat" and beat["seq"] == snap["seq"]
        acct = g.book.info[3].id
        async with client(server, "risk") as c:
            r = await c.post(f"/hold/{acct}", json={"duration": 600, "reason": "desk call"})
            assert r.status_code == 200
        delta = await until(ws, lambda m: m["type"] == "delta", 3)
        assert delta["ids"] == [acct] and delta["columns"]["held_until"][0].endswith("Z")
        assert delta["seq"] == snap["seq"] + 1


async def test_margin_updates(tmp_path):
    async with serving(tmp_path, "crash") as (g, server), connect(server, "margin-updates") as ws:
        snap = await receive(ws)
        ADAPTERS["margin-updates"].validate_python(snap)
        assert len(snap["columns"]["equity"]) == g.book.n_accounts
        state: dict[str, dict] = {}
        apply(state, snap)
        await drive(g, 2)
        deltas = 0
        while True:
            try:
                msg = await receive(ws, 0.3)
            except TimeoutError:
                break
            ADAPTERS["margin-updates"].validate_python(msg)
            if msg["type"] == "delta":
                deltas += 1
                apply(state, msg)
        assert deltas
        for a, info in enumerate(g.book.info):
            assert state[info.id]["equity"] == round(float(g.book.equity[a]), 2)
            assert state[info.id]["maintenance_margin"] == round(float(g.book.acct_mm[a]), 2)


async def test_alerts_and_actions_channels_carry_engine_events(tmp_path):
    async with (
        serving(tmp_path, "crash") as (g, server),
        connect(server, "alerts") as alerts,
        connect(server, "actions") as actions,
    ):
        first = await receive(alerts)
        ADAPTERS["alerts"].validate_python(first)
        assert first["type"] == "snapshot" and first["events"] == []
        assert (await receive(actions))["type"] == "snapshot"
        got_alerts: list[dict] = []
        got_actions: list[dict] = []
        for _ in range(30):
            await drive(g, 1)
            for ws, sink in ((alerts, got_alerts), (actions, got_actions)):
                while True:
                    try:
                        msg = await receive(ws, 0.1)
                    except TimeoutError:
                        break
                    ADAPTERS[msg["channel"]].validate_python(msg)
                    if msg["type"] == "events":
                        sink.extend(msg["events"])
            if got_alerts and any(e["type"] == "transition" for e in got_actions):
                break
        assert got_alerts and {e["type"] for e in got_alerts} == {"alert"}
        assert {e["type"] for e in got_actions} <= {"action", "transition", "data"}
        journaled = {r["alert_id"] for r in g.journal.records(kind="alert")}
        assert {e["alert_id"] for e in got_alerts} <= journaled
        async with client(server, "trader") as c:
            alert_id = got_alerts[0]["alert_id"]
            assert (await c.post(f"/alerts/{alert_id}/ack")).status_code == 200
        msg = await until(alerts, lambda m: m["type"] == "events" and m["events"][0]["type"] == "ack", 5)
        assert msg["events"][0]["alert_id"] == alert_id and msg["events"][0]["operator"] == "tom"
        # a late joiner gets the recent alerts from the journal, acknowledged marked
        async with connect(server, "alerts") as late:
            snap = await receive(late)
            byid = {e["alert_id"]: e for e in snap["events"]}
            assert byid[alert_id]["acknowledged"] is True


async def test_each_update_is_serialised_once_and_slow_clients_are_coalesced(tmp_path):
    g = make_guard(tmp_path, "crash", cfg=base_config())
    ch = RiskStatusChannel(Source(g), hz=4, queue=3, ratio_step=0.0)
    try:
        clients = [ch.join() for _ in range(3)]
        for c in clients:
            assert json.loads(await c.next(ch))["type"] == "snapshot"
        await drive(g, 0.5)
        await ch.tick()
        texts = [c.queue[0] for c in clients]
        assert texts[0] is texts[1] is texts[2]  # one serialisation for everyone
        assert json.loads(texts[0])["type"] == "delta"
        slow = clients[0]
        for _ in range(5):  # the slow client reads nothing meanwhile; the others keep up
            await drive(g, 0.5)
            await ch.tick()
            for c in clients[1:]:
                while c.queue:
                    await c.next(ch)
        assert slow.resync and not slow.queue and slow.coalesced == 1
        msg = json.loads(await slow.next(ch))
        assert msg["type"] == "snapshot" and msg["seq"] == ch.seq  # the latest state, in one message
        assert ch.coalesced_total() == 1
        assert all(c.coalesced == 0 for c in clients[1:])
    finally:
        await ch.stop()
        g.journal.close()


async def test_events_channel_joiner_does_not_get_an_event_twice(tmp_path):
    g = make_guard(tmp_path, "crash", cfg=base_config())
    ch = EventsChannel(Source(g), "alerts", frozenset({"alert", "ack"}), hz=4, queue=10)
    try:
        first = ch.join()
        await first.next(ch)
        for _ in range(40):
            await drive(g, 0.5)
            if g.journal.records(kind="alert"):
                break
        late = ch.join()  # pending events go to `first` before `late` takes its snapshot
        snap = json.loads(await late.next(ch))
        assert snap["events"]
        assert first.queue and not late.queue
        await ch.tick()
        assert not late.queue
        await asyncio.sleep(0)
    finally:
        await ch.stop()
        g.journal.close()


async def test_a_new_account_sends_every_column_channel_a_fresh_snapshot(tmp_path):
    from engine.model import Account, Position

    async with (
        serving(tmp_path, "calm") as (g, server),
        connect(server, "risk-status") as risk,
        connect(server, "margin-updates") as margin,
    ):
        first = {ch: await receive(ws) for ch, ws in (("risk", risk), ("margin", margin))}
        assert all(m["type"] == "snapshot" for m in first.values())
        n = len(first["risk"]["ids"])
        records = [
            *g.book.account_records(),
            Account(
                id="late-1",
                wallet_balance=10_000.0,
                positions=[Position(symbol=g.book.instruments[0].symbol, qty=0.1, entry_price=float(g.book.mark[0]))],
            ),
        ]
        g.sync_accounts(records, g.clock.now())
        assert g.book.n_accounts == n + 1
        for ws in (risk, margin):
            for _ in range(50):  # heartbeats and deltas may come first; a snapshot must come
                msg = await receive(ws, 5.0)
                if msg["type"] == "snapshot":
                    break
            assert msg["ids"][-1] == "late-1" and len(msg["ids"]) == n + 1
            assert all(len(v) == n + 1 for v in msg["columns"].values())
        await drive(g, 2)  # and deltas flow again afterwards
        msg = await receive(ws, 5.0)
        assert msg["type"] in ("delta", "heartbeat")
