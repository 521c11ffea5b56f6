"""PUT /config and PUT /alerts write through ConfigWriter (validated whole, comments kept);
GET /metrics is valid Prometheus text."""

from __future__ import annotations

import re

import tomlkit

from tests.engine.api.support import client, serving
from tests.engine.guard.support import drive

SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?P<labels>([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*)\})?'
    r" (?P<value>NaN|[+-]Inf|-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?)$"
)


async def test_put_config_writes_the_file_with_its_comments_and_refuses_bad_values_whole(tmp_path):
    async with serving(tmp_path, writer=True) as (g, server):
        path = tmp_path / "config.toml"
        original = path.read_text()
        assert "# seconds between automatic rounds" in original
        async with client(server, "risk") as risk, client(server, "trader") as trader:
            r = await trader.put("/config", json={"deleverage": {"cooldown": 7.5}})
            assert r.status_code == 403 and "needs the risk role; tom is trader" in r.json()["detail"]
            assert path.read_text() == original

            r = await risk.put("/config", json={"deleverage": {"cooldown": -1}})
            assert r.status_code == 422 and "deleverage.cooldown" in r.json()["detail"]
            r = await risk.put("/config", json={"deleverage": {"cooldown": 7.5, "bogus": 1}})
            assert r.status_code == 422 and "deleverage.bogus: unknown key" in r.json()["detail"]
            r = await risk.put("/config", json={"api": {"host": "0.0.0.0"}})
            assert r.status_code == 422 and r.json()["detail"].startswith("api: ")
            r = await risk.put("/config", json=[1, 2])
            assert r.status_code == 422 and "body" in r.json()["detail"]
            assert path.read_text() == original  # nothing half-applied

            r = await risk.put("/config", json={"deleverage": {"cooldown": 7.5}, "limits": {"max_drawdown": None}})
            assert r.status_code == 200, r.text
            assert set(r.json()["changed"]) == {"deleverage.cooldown", "limits.max_drawdown"}
            assert r.json()["needs_restart"] == []
            text = path.read_text()
            doc = tomlkit.parse(text)
            assert doc["deleverage"]["cooldown"] == 7.5 and "max_drawdown" not in doc["limits"]
            assert "# seconds between automatic rounds" in text  # the comments are kept
            assert text.count("\n") >= original.count("\n") - 2
            cfg = (await risk.get("/config")).json()
            assert cfg["file_differs"] is False and cfg["config"]["deleverage"]["cooldown"] == 7.5  # applied now
            assert g.config.deleverage.cooldown == 7.5

            r = await risk.put("/config", json={"simulator": {"seed": 99}})  # written; the book needs a restart
            assert r.status_code == 200 and r.json()["needs_restart"] == ["simulator"], r.text
            assert (await risk.get("/config")).json()["file_differs"] is True

            r = await risk.put("/alerts", json={"channels": []})
            if "alerts" in type(g.config).model_fields:  # the notifier's section has landed
                assert r.status_code == 200, r.text
            else:
                assert r.status_code == 422 and "alerts: unknown key" in r.json()["detail"]
        records = g.journal.records(kind="config")
        assert any(x.get("refused") and x["operator"] == "tom" for x in records)
        written = [x for x in records if x.get("event") == "written"]
        assert written[0]["origin"] == "api:127.0.0.1" and "deleverage.cooldown" in written[0]["keys"]
        intents = [x for x in records if x.get("event") == "write"]  # journaled before the file is touched
        assert len(intents) >= len(written) and intents[0]["seq"] < written[0]["seq"]


async def test_put_config_without_a_writable_file_is_a_conflict(tmp_path):
    async with serving(tmp_path) as (_g, server), client(server, "risk") as c:
        r = await c.put("/config", json={"deleverage": {"cooldown": 7.5}})
        assert r.status_code == 409 and "no configuration file" in r.json()["detail"]


async def test_metrics_are_valid_prometheus_text(tmp_path):
    async with serving(tmp_path, "crash") as (g, server):
        await drive(g, 4)
        async with client(server, "viewer") as c:
            await c.get("/status")
            r = await c.get(server.url + "/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
        typed: dict[str, str] = {}
        values: dict[str, float] = {}
        for line in r.text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ")
                assert kind in ("gauge", "counter", "summary") and name not in typed
                typed[name] = kind
                continue
            if line.startswith("# HELP ") or not line:
                continue
            m = SAMPLE.match(line)
            assert m, line
            name = m["name"]
            family = re.sub(r"_(count|sum)$", "", name) if name not in typed else name
            assert family in typed, f"{name} has no TYPE"
            values[line.rsplit(" ", 1)[0]] = float(m["value"])
        levels = sum(v for k, v in values.items() if k.startswith("capguard_accounts{level="))
        assert levels == g.book.n_accounts
        for name in (
            "capguard_margin_ratio",
            "capguard_feed_age_seconds",
            "capguard_loop_latency_seconds",
            "capguard_kill_switch",
            "capguard_actions_active",
            "capguard_alerts_total",
            "capguard_ws_clients",
            "capguard_api_requests_total",
        ):
            assert name in typed
        assert values['capguard_margin_ratio{quantile="0.5"}'] > 0
        assert values['capguard_api_requests_total{method="GET",status="2xx"}'] >= 1
