"""Every REST endpoint against a real server: reads, commands through the engine, roles,
bad input named, unknown accounts, and the journal's record of who did what from where."""

from __future__ import annotations

import math

import numpy as np

from engine.levels import Level
from tests.engine.api.support import NAMES, client, serving
from tests.engine.guard.support import drive


def biggest(g):
    a = int(np.argmax(g.book.acct_notional))
    return a, g.book.info[a].id


async def test_every_read_endpoint_answers(tmp_path):
    async with serving(tmp_path, "crash", writer=True) as (g, server):
        await drive(g, 11)
        _, acct = biggest(g)
        async with client(server, "viewer") as c:
            status = (await c.get("/status")).json()
            assert status["accounts"] == g.book.n_accounts
            assert set(status["levels"]) == {"SAFE", "WARNING", "CRITICAL", "LIQUIDATION"}
            assert {"circuit_breaker", "kill_switch", "feeds", "loop_latency_ms"} <= set(status)
            assert status["feeds"]["instruments"] == len(g.book.instruments)

            who = (await c.get("/whoami")).json()
            assert who == {"name": "vic", "role": "viewer", "origin": "api:127.0.0.1", "writes": True}

            listing = (await c.get("/accounts")).json()
            assert listing["total"] == g.book.n_accounts and len(listing["accounts"]) == g.book.n_accounts
            row = listing["accounts"][0]
            assert {"id", "desk", "strategy", "level", "margin_ratio", "data_state", "trading_state"} <= set(row)
            desk = g.book.info[0].desk
            by_desk = (await c.get("/accounts", params={"desk": desk})).json()
            assert by_desk["total"] == sum(i.desk == desk for i in g.book.info)
            assert all(r["desk"] == desk for r in by_desk["accounts"])
            strat = g.book.info[0].strategy
            by_strat = (await c.get("/accounts", params={"strategy": strat})).json()
            assert all(r["strategy"] == strat for r in by_strat["accounts"]) and by_strat["total"] >= 1
            found = (await c.get("/accounts", params={"q": acct[2:].upper()})).json()
            assert acct in [r["id"] for r in found["accounts"]]
            at_risk = (await c.get("/accounts", params={"level": "warning,critical,liquidation"})).json()
            assert at_risk["total"] == int((g.ladder.level >= Level.WARNING).sum())
            ranked = (await c.get("/accounts", params={"sort": "margin_ratio", "limit": 3})).json()["accounts"]
            assert [r["margin_ratio"] for r in ranked] == sorted(r["margin_ratio"] for r in ranked)
            assert ranked[0]["margin_ratio"] == min(r["margin_ratio"] for r in listing["accounts"])

            detail = (await c.get(f"/accounts/{acct}")).json()
            assert detail["id"] == acct and "positions" in detail and "timeline" in detail

            risk = (await c.get(f"/risk/{acct}")).json()
            a = g.book.account_index[acct]
            assert risk["level"] == ("SAFE", "WARNING", "CRITICAL", "LIQUIDATION")[g.ladder.level[a]]
            assert risk["thresholds"]["warning"] == float(g.book.warning[a])
            assert 1 <= len(risk["top_contributors"]) <= 5
            mms = [p["maintenance_margin"] for p in risk["top_contributors"]]
            assert mms == sorted(mms, reverse=True)

            margin = (await c.get(f"/margin/{acct}")).json()
            assert margin["equity"] == float(g.book.equity[a])
            assert margin["maintenance_margin"] == float(g.book.acct_mm[a])
            assert abs(margin["free_margin"] - (margin["equity"] - margin["initial_margin"])) < 1e-6
            assert len(margin["positions"]) == g.book.acct_pos_count[a]
            assert {"initial_margin", "available_margin", "utilization"} <= set(margin)

            th = (await c.get(f"/thresholds/{acct}")).json()
            assert th["result"]["warning"] == float(g.book.warning[a])
            assert [f["name"] for f in th["factors"]] == ["size", "risk_class", "volatility", "drawdown"]

            hist = (await c.get(f"/history/{acct}")).json()
            assert hist["points"] and all(p["margin_ratio"] is not None for p in hist["points"])
            few = (await c.get(f"/history/{acct}", params={"limit": 2, "since": "1h"})).json()
            assert len(few["points"]) == 2 and few["points"] == hist["points"][-2:]
            # Downsampled: 2 buckets, each the last value with its low and high (on the longest history:
            # accounts at WARNING or worse are sampled every second).
            finite = [a for a in range(g.book.n_accounts) if all(math.isfinite(r) for _, r in g.history[a])]
            longest = g.book.info[max(finite, key=lambda a: len(g.history[a]))].id
            ratios = [p["margin_ratio"] for p in (await c.get(f"/history/{longest}")).json()["points"]]
            assert len(ratios) >= 4
            two = (await c.get(f"/history/{longest}", params={"points": 2})).json()["points"]
            assert len(two) == 2 and two[-1]["margin_ratio"] == ratios[-1]
            assert min(p["low"] for p in two) == min(ratios) and max(p["high"] for p in two) == max(ratios)

            journal = (await c.get("/journal", params={"kind": "system", "limit": 5})).json()
            assert journal["records"][0]["event"] == "guard_start"
            latest = (await c.get("/journal", params={"order": "desc", "limit": 3})).json()["records"]
            assert latest[0]["seq"] == g.journal.head()[0] and len(latest) == 3
            jsonl = await c.get(
                "/journal", params={"format": "jsonl", "kind": "system", "since": "2026-01-01T00:00:00Z"}
            )
            assert jsonl.headers["content-type"].startswith("application/x-ndjson")
            assert jsonl.text.count("\n") == len(g.journal.records(kind="system"))

            alerts = (await c.get("/alerts")).json()
            assert "config" in alerts and isinstance(alerts["alerts"], list)
            assert (await c.get("/schedule")).json() == {"schedule": []}
            cfg = (await c.get("/config")).json()
            assert cfg["writable"] and cfg["config"]["thresholds"]["warning"] == 2.0
            schemas = (await c.get("/schemas")).json()
            assert set(schemas["schemas"]) == {"risk-status", "margin-updates", "alerts", "actions"}
            spec = (await c.get("/openapi.json")).json()
            assert f"{'/api/v1/capital'}/deleverage/{{account_id}}" in spec["paths"]


async def test_unknown_account_is_404_naming_it_everywhere(tmp_path):
    async with serving(tmp_path) as (g, server), client(server, "risk") as c:
        for path in ("/risk/nope", "/margin/nope", "/thresholds/nope", "/history/nope", "/accounts/nope"):
            r = await c.get(path)
            assert r.status_code == 404 and r.json()["detail"] == "no account 'nope'", path
        for path, body in (
            ("/deleverage/nope", {"dry_run": True}),
            ("/liquidate/nope", {"confirm": "nope"}),
            ("/thresholds/nope", {"warning": 3}),
            ("/hold/nope", {"duration": 60, "reason": "x"}),
            ("/resume/nope", {}),
            ("/reset/nope", {"reason": "x"}),
            ("/schedule", {"account": "nope", "in_seconds": 60}),
        ):
            r = await c.post(path, json=body)
            assert r.status_code == 404 and "nope" in r.json()["detail"], path
        # the refused attempt is on the record, with who and from where
        refused = g.journal.records(kind="operator", account="nope")
        assert refused and all(x["operator"] == "rita" and x["origin"] == "api:127.0.0.1" for x in refused)


async def test_bad_input_is_refused_whole_naming_the_field(tmp_path):
    async with serving(tmp_path) as (g, server), client(server, "risk") as c:
        _, acct = biggest(g)
        before = g.journal.head()[0]
        cases = [
            (f"/deleverage/{acct}", {"fraction": 5}, "body.fraction"),
            (f"/deleverage/{acct}", {"target_ratio": -1}, "body.target_ratio"),
            (f"/deleverage/{acct}", {"target_ratio": 3, "fraction": 0.5}, "target_ratio or fraction"),
            (f"/deleverage/{acct}", {"strategy": "yolo"}, "body.strategy"),
            (f"/deleverage/{acct}", {"bogus": 1}, "body.bogus: unknown field"),
            (f"/liquidate/{acct}", {}, "body.confirm"),
            (f"/liquidate/{acct}", {"confirm": acct, "mode": "slow"}, "body.mode"),
            (f"/thresholds/{acct}", {}, "at least one of warning"),
            (f"/thresholds/{acct}", {"warning": "high"}, "body.warning"),
            (f"/hold/{acct}", {"duration": 60}, "body.reason"),
            (f"/hold/{acct}", {"duration": 90_000, "reason": "x"}, "body.duration"),
            (f"/reset/{acct}", {"reason": ""}, "body.reason"),
            ("/kill-switch", {"reason": "x"}, "body.engage"),
            ("/schedule", {"account": acct}, "exactly one of at or in_seconds"),
            ("/schedule", {"account": acct, "in_seconds": 60, "params": {"fraction": 2}}, "params.fraction"),
            ("/schedule", {"account": acct, "action": "liquidate", "in_seconds": 60}, "params.confirm"),
        ]
        for path, body, named in cases:
            r = await c.post(path, json=body)
            assert r.status_code == 422, (path, body, r.text)
            assert named in r.json()["detail"], (path, body, r.json()["detail"])
        r = await c.post(f"/hold/{acct}", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422 and "body" in r.json()["detail"]
        for params, named in (
            ({"kind": "gossip"}, "kind: unknown kind 'gossip'"),
            ({"since": "yesterday"}, "since: 'yesterday'"),
            ({"limit": 0}, "query.limit"),
        ):
            r = await c.get("/journal", params=params)
            assert r.status_code == 422 and named in r.json()["detail"], (params, r.text)
        r = await c.get("/accounts", params={"level": "DOOMED"})
        assert r.status_code == 422 and r.json()["detail"].startswith("level: unknown level 'DOOMED'")
        assert g.journal.head()[0] == before  # nothing reached the engine, nothing was applied
        assert not g.protection.schedule and np.isnan(g.ladder.held_until).all()


async def test_roles_are_the_engines_with_its_messages_and_journal(tmp_path):
    async with serving(tmp_path) as (g, server):
        a, acct = biggest(g)
        await drive(g, 1)
        async with (
            client(server, "viewer") as viewer,
            client(server, "trader") as trader,
            client(server, "risk") as risk,
        ):
            r = await viewer.post(f"/deleverage/{acct}", json={"dry_run": True, "fraction": 0.5})
            assert r.status_code == 200 and r.json()["ok"] and r.json()["plan"]["orders"]
            assert g.broker.orders() == []
            r = await viewer.post(f"/deleverage/{acct}", json={"fraction": 0.5})
            assert r.status_code == 403 and r.json()["detail"] == "deleverage needs the trader role; vic is viewer"
            r = await trader.post(f"/liquidate/{acct}", json={"confirm": acct})
            assert r.status_code == 403 and r.json()["detail"] == "liquidate needs the risk role; tom is trader"
            r = await risk.post(f"/liquidate/{acct}", json={"confirm": "someone-else"})
            assert r.status_code == 422 and "confirm equal to the account id" in r.json()["detail"]
            # trader may tighten, not loosen
            w = float(g.book.warning[a])
            r = await trader.post(f"/thresholds/{acct}", json={"warning": w + 0.5, "reason": "tighter"})
            assert r.status_code == 200, r.text
            assert float(g.book.warning[a]) == w + 0.5
            r = await trader.post(f"/thresholds/{acct}", json={"warning": w})
            assert r.status_code == 403 and "loosen thresholds needs the risk role" in r.json()["detail"]
            r = await risk.post(f"/thresholds/{acct}", json={"liquidation": 0.5})
            assert r.status_code == 409 and "venue floor" in r.json()["detail"]
            # hold / resume
            r = await trader.post(f"/hold/{acct}", json={"duration": 600, "reason": "call with PM"})
            assert r.status_code == 403
            r = await risk.post(f"/hold/{acct}", json={"duration": 600, "reason": "call with PM"})
            assert r.status_code == 200 and g.ladder.held_until[a] > g.clock.now()
            assert (await risk.post(f"/resume/{acct}")).status_code == 200
            assert np.isnan(g.ladder.held_until[a])
            # reset needs a halted account: a conflict with the state, not bad input
            r = await risk.post(f"/reset/{acct}", json={"reason": "review done"})
            assert r.status_code == 409 and r.json()["detail"] == f"{acct} is not halted"
            # kill switch and breaker
            r = await trader.post("/kill-switch", json={"engage": True, "reason": "fat finger"})
            assert r.status_code == 403
            r = await risk.post("/kill-switch", json={"engage": True, "reason": "venue incident"})
            assert r.status_code == 200 and g.protection.kill_switch
            r = await risk.post("/kill-switch", json={"engage": False, "reason": "venue back"})
            assert r.status_code == 200 and not g.protection.kill_switch
            r = await risk.post("/breaker/release", json={"reason": "x"})
            assert r.status_code == 409 and "not tripped" in r.json()["detail"]
            # schedule, list, cancel
            r = await trader.post("/schedule", json={"account": acct, "in_seconds": 300, "params": {"fraction": 0.2}})
            assert r.status_code == 200, r.text
            sid = r.json()["action_id"]
            listed = (await viewer.get("/schedule")).json()["schedule"]
            assert listed[0]["schedule_id"] == sid and listed[0]["params"] == {"fraction": 0.2}
            assert listed[0]["operator"] == "tom"
            at = "2099-01-01T00:00:00Z"
            r = await risk.post(
                "/schedule", json={"account": acct, "action": "liquidate", "at": at, "params": {"confirm": acct}}
            )
            assert r.status_code == 200, r.text
            assert (await trader.delete(f"/schedule/{sid}")).status_code == 200
            r = await trader.delete(f"/schedule/{sid}")
            assert r.status_code == 404 and sid in r.json()["detail"]
            assert (await trader.post("/alerts/al999999/ack")).status_code == 404
            # a real manual deleverage by the trader: started, with an action id from the engine
            r = await trader.post(f"/deleverage/{acct}", json={"fraction": 0.25, "method": "market"})
            assert r.status_code == 200 and r.json()["action_id"].startswith("cg")
        ops = g.journal.records(kind="operator")
        hold = next(x for x in ops if x.get("command") == "hold" and "refused" not in x)
        assert (hold["operator"], hold["role"], hold["origin"]) == ("rita", "risk", "api:127.0.0.1")
        refused = next(x for x in ops if x.get("refused", "").startswith("liquidate needs"))
        assert refused["operator"] == "tom" and refused["origin"] == "api:127.0.0.1"
        decision = g.journal.records(kind="decision", account=acct)[-1]
        assert decision["operator"] == NAMES["trader"] and decision["reason"] == "manual deleverage"


async def test_acknowledging_a_real_alert(tmp_path):
    async with serving(tmp_path, "crash") as (g, server):
        for _ in range(30):
            await drive(g, 1)
            alerts = g.journal.records(kind="alert")
            if alerts:
                break
        assert alerts
        alert_id = alerts[0]["alert_id"]
        async with client(server, "viewer") as viewer, client(server, "trader") as trader:
            r = await viewer.post(f"/alerts/{alert_id}/ack")
            assert r.status_code == 403
            r = await trader.post(f"/alerts/{alert_id}/ack")
            assert r.status_code == 200 and r.json()["ok"]
            listed = (await viewer.get("/alerts", params={"limit": 10_000})).json()["alerts"]
            assert next(x for x in listed if x["alert_id"] == alert_id)["acknowledged"] is True
            open_only = (await viewer.get("/alerts", params={"unacknowledged": True, "limit": 10_000})).json()
            assert alert_id not in [x["alert_id"] for x in open_only["alerts"]]
