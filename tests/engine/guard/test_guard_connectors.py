"""A guard built by `Guard.connect` on live connectors, over real loopback sockets:

- a risk center's threshold change reaches the guard's effective thresholds through the
  journaled command path (operator "risk-center");
- on the Binance adapter (fake venue answering with the documented examples), a maintenance
  margin beyond tolerance, and a position the venue changed without a capguard order, each
  raise one critical alert: an event on `guard.subscribe()` and a journal record.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from engine.clock import SimClock
from engine.connectors.base import SourcesConfig
from engine.guard import Guard
from tests.engine.connectors.support import HttpServer, load_doc_example, load_doc_json, wait_until
from tests.engine.connectors.test_binance import KEY, SECRET, MarkPriceServer
from tests.engine.connectors.test_binance_userdata import UserDataVenue, UserStreamServer
from tests.engine.connectors.test_risk_center import RiskCenter
from tests.engine.guard.support import T0, config

ACCOUNT = "d1-core-01"  # a demo account (the risk center test runs on the embedded demo book)


async def connect(tmp_path: Path, sources: dict[str, Any]) -> tuple[Guard, asyncio.Task[None]]:
    cfg = config().model_copy(update={"sources": SourcesConfig.model_validate(sources)})
    g = await Guard.connect(cfg, clock=SimClock(start=T0, paused=True), journal_path=tmp_path / "journal.sqlite3")
    return g, asyncio.get_running_loop().create_task(g.run())


async def shutdown(g: Guard, run: asyncio.Task[None]) -> None:
    await g.stop(grace=1.0)
    await asyncio.wait_for(run, timeout=5.0)  # the loop ends once the guard is stopped


def thresholds(g: Guard, account: str) -> tuple[float, float, float]:
    a = g.book.account_index[account]
    return float(g.book.warning[a]), float(g.book.critical[a]), float(g.book.liquidation[a])


# ---------------------------------------------------------------------------------- risk center
@pytest.fixture
async def center():
    rc = RiskCenter()
    rc.payload["overrides"] = {}
    async with HttpServer(rc) as http:
        yield rc, http


async def test_a_risk_center_threshold_change_reaches_the_guard_through_the_command_path(tmp_path, center):
    rc, http = center
    g, run = await connect(tmp_path, {"risk_center": {"url": f"{http.url}/risk", "interval": 3600}})
    try:
        assert await wait_until(lambda: g.sources.risk_center.current is not None)
        await asyncio.sleep(0.05)
        seeded = thresholds(g, ACCOUNT)
        assert seeded != (2.6, 1.9, 1.35)
        # the risk center publishes a tighter set for one account
        rc.version, rc.payload["as_of"] = 2, "2026-11-25T16:00:00Z"
        rc.payload["overrides"] = {ACCOUNT: {"warning": 2.6, "critical": 1.9, "liquidation": 1.35}}
        (change,) = await g.sources.risk_center.refresh()
        assert change["scope"] == "account" and change["account"] == ACCOUNT
        assert await wait_until(lambda: thresholds(g, ACCOUNT) == pytest.approx((2.6, 1.9, 1.35)))
        (rec,) = [r for r in g.journal.records(kind="threshold", account=ACCOUNT) if r["operator"] == "risk-center"]
        assert rec["role"] == "risk" and rec["origin"] == "risk_center" and rec["reason"] == change["change_id"]
        assert rec["after"] == {"warning": 2.6, "critical": 1.9, "liquidation": 1.35}
        assert rec["before"]["warning"] == pytest.approx(seeded[0])
        other = next(i.id for i in g.book.info if i.id != ACCOUNT)
        assert not g.journal.records(kind="threshold", account=other)  # only that account moved
        # the same payload again (a 304, or a replay) changes and journals nothing more
        assert await g.sources.risk_center.refresh() == []
        g._apply_risk_center(g.sources.risk_center.current, [change])
        await asyncio.sleep(0.05)
        assert len(g.journal.records(kind="threshold", account=ACCOUNT)) == 1
        # the override withdrawn at the risk center: the account returns to its seeded thresholds
        rc.version, rc.payload["as_of"] = 3, "2026-11-25T17:00:00Z"
        rc.payload["overrides"] = {}
        (change,) = await g.sources.risk_center.refresh()
        assert change["after"] is None
        assert await wait_until(lambda: thresholds(g, ACCOUNT) == pytest.approx(seeded))
        assert [r["operator"] for r in g.journal.records(kind="operator", account=ACCOUNT)] == ["risk-center"]
    finally:
        await shutdown(g, run)


async def test_thresholds_pulled_before_the_guard_runs_are_applied(tmp_path, center):
    rc, http = center
    rc.payload["overrides"] = {ACCOUNT: {"warning": 2.6, "critical": 1.9, "liquidation": 1.35}}
    cfg = config().model_copy(
        update={"sources": SourcesConfig.model_validate({"risk_center": {"url": f"{http.url}/risk", "interval": 3600}})}
    )
    g = await Guard.connect(cfg, clock=SimClock(start=T0, paused=True), journal_path=tmp_path / "journal.sqlite3")
    assert await wait_until(lambda: g.sources.risk_center.current is not None)  # pulled while connecting
    run = asyncio.get_running_loop().create_task(g.run())
    try:
        assert await wait_until(lambda: thresholds(g, ACCOUNT) == pytest.approx((2.6, 1.9, 1.35)), timeout=1.0)
    finally:
        await shutdown(g, run)


# ---------------------------------------------------------------------------------- binance
@pytest.fixture
async def binance(monkeypatch):
    monkeypatch.setenv("CG_BINANCE_KEY", KEY)
    monkeypatch.setenv("CG_BINANCE_SECRET", SECRET)
    fake = UserDataVenue()
    marks, user = MarkPriceServer(), UserStreamServer(fake)
    await marks.start()
    await user.start()
    async with HttpServer(fake) as http:
        sources = {
            "binance": {
                "rest_url": http.url,
                "ws_url": f"ws://127.0.0.1:{marks.port}/market",
                "user_ws_url": user.url,
                "symbols": ["ADAUSDT", "BTCUSDT"],
                "account_interval": 3600,  # in this test only the resync and the user stream poll
                "resync_interval": 30,
                "backoff": {"initial": 0.02, "maximum": 0.05},
                "accounts": [{"id": "bn-main", "api_key_env": "CG_BINANCE_KEY", "api_secret_env": "CG_BINANCE_SECRET"}],
            }
        }
        yield fake, sources, marks, user
    await user.stop()
    await marks.stop()


def alerts(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("type") == "alert" and (e.get("divergence") or {}).get("kind") == kind]


async def resync(g: Guard, sub: Any, seen: list[dict[str, Any]], until: Any) -> None:
    """Let one resync interval pass on the guard's clock, and collect events until `until`."""
    g.clock.advance(g.sources.binance.config.resync_interval)
    assert await wait_until(lambda: (seen.extend(sub.drain()) or True) and until(seen))


async def test_venue_divergence_and_a_position_changed_without_capguard_raise_critical_alerts(tmp_path, binance):
    fake, sources, marks, user = binance
    g, run = await connect(tmp_path, sources)
    sub = g.subscribe(kinds={"alert"})
    seen: list[dict[str, Any]] = []
    try:
        assert [i.id for i in g.book.info] == ["bn-main"]  # the venue's account, not the demo book
        ada = g.book.symbol_index["ADAUSDT"]
        assert await wait_until(lambda: g.live_feed.connected)
        doc = load_doc_json("mark_price_stream.jsonc")
        await marks.push({**doc, "s": "ADAUSDT", "p": "0.41047590"})  # the venue's documented mark
        await marks.push(doc)  # BTCUSDT (the documented open order)
        assert await wait_until(lambda: g.book.mark[ada] == 0.4104759)
        # 1. capguard's configured ADA bracket (1%) against the venue's maintMargin (0.0800428)
        await resync(g, sub, seen, lambda s: alerts(s, "maintenance_margin"))
        (mm,) = alerts(seen, "maintenance_margin")
        assert mm["severity"] == "critical" and mm["category"] == "system" and mm["account"] == "bn-main"
        assert mm["divergence"]["venue"] == 0.0800428 and mm["divergence"]["capguard"] == pytest.approx(0.12314277)
        (rec,) = [r for r in g.journal.records(kind="alert") if r["alert_id"] == mm["alert_id"]]
        assert (
            rec["severity"] == "critical" and rec["account"] == "bn-main" and rec["divergence"]["symbol"] == "ADAUSDT"
        )
        # the same divergence at the next resync is not raised again
        await resync(g, sub, seen, lambda s: g.sources.binance.accounts.counters["polls"] >= 3)
        await asyncio.sleep(0.1)
        seen.extend(sub.drain())
        assert len(alerts(seen, "maintenance_margin")) == 1
        # 2. the venue cuts the position to 20 without a capguard order: pushed on the user
        #    stream (the documented ACCOUNT_UPDATE, one-way form, for ADAUSDT) and polled alike
        fake.positions[0]["positionAmt"] = "20"
        event = load_doc_example("account_update.jsonc")
        event["a"]["B"] = []
        event["a"]["P"] = [{**event["a"]["P"][0], "s": "ADAUSDT", "pa": "20", "ep": "0.385", "mt": "cross", "iw": "0"}]
        stream = g.sources.binance.user_streams["bn-main"]
        assert stream.connected
        await user.push(event)
        assert await wait_until(lambda: (seen.extend(sub.drain()) or True) and alerts(seen, "position_changed"))
        (moved,) = alerts(seen, "position_changed")
        assert moved["severity"] == "critical" and moved["account"] == "bn-main"
        assert (moved["divergence"]["capguard"], moved["divergence"]["venue"]) == (30.0, 20.0)
        assert any(r["alert_id"] == moved["alert_id"] for r in g.journal.records(kind="alert"))
        # the guard then takes the venue's figures; the next resync finds nothing new to say
        g.evaluate(g.clock.now())
        await resync(g, sub, seen, lambda s: g.sources.binance.accounts.counters["polls"] >= 4)
        await asyncio.sleep(0.1)
        seen.extend(sub.drain())
        assert len(alerts(seen, "position_changed")) == 1
    finally:
        sub.close()
        await shutdown(g, run)


async def test_book_wide_thresholds_and_limits_from_the_risk_center_are_in_force_and_written(tmp_path, center):
    import shutil

    import tomlkit

    from engine.config import ConfigWriter, bundled_config_path, load_config

    rc, http = center
    path = tmp_path / "config.toml"
    shutil.copy(bundled_config_path(), path)
    loaded = load_config(path)
    cfg = loaded.config.model_copy(
        update={
            "sources": SourcesConfig.model_validate({"risk_center": {"url": f"{http.url}/risk", "interval": 3600}}),
            "dynamic_thresholds": loaded.config.dynamic_thresholds.model_copy(update={"enabled": False}),
        }
    )
    g = await Guard.connect(
        cfg,
        clock=SimClock(start=T0, paused=True),
        journal_path=tmp_path / "journal.sqlite3",
        config_writer=ConfigWriter(loaded),
    )
    run = asyncio.get_running_loop().create_task(g.run())
    try:
        assert await wait_until(lambda: g.sources.risk_center.current is not None)
        await asyncio.sleep(0.05)
        assert not g.journal.records(kind="operator")  # the payload equals the configuration: nothing to do
        plain = next(i.id for i in g.book.info if i.id not in g.protection.overrides)
        rc.version, rc.payload["as_of"] = 2, "2026-11-25T16:00:00Z"
        rc.payload["thresholds"] = {"warning": 2.4, "critical": 1.8, "liquidation": 1.3}
        rc.payload["limits"] = {"max_leverage": 20.0, "max_drawdown": None}
        changes = await g.sources.risk_center.refresh()
        assert {c["scope"] for c in changes} == {"book", "limits"}
        assert await wait_until(lambda: thresholds(g, plain) == pytest.approx((2.4, 1.8, 1.3)))
        assert g.config.limits.max_leverage == 20.0 and g.config.limits.max_drawdown is None
        records = {r["command"]: r for r in g.journal.records(kind="operator")}
        assert set(records) == {"set_thresholds", "set_limits"}
        assert (
            records["set_thresholds"]["before"]["warning"] == 2.0
            and records["set_thresholds"]["after"]["warning"] == 2.4
        )
        assert records["set_limits"]["operator"] == "risk-center"
        doc = tomlkit.parse(path.read_text())
        assert doc["thresholds"]["warning"] == 2.4 and doc["limits"]["max_leverage"] == 20.0
        assert "max_drawdown" not in doc["limits"]
        assert "# at or below: WARNING" in path.read_text()  # the file's comments are kept
    finally:
        await shutdown(g, run)


async def test_threshold_changes_made_in_capguard_go_to_the_webhook_not_back_the_risk_centers(tmp_path, center):
    from engine.operators import Operator, Role

    rc, http = center
    g, run = await connect(
        tmp_path, {"risk_center": {"url": f"{http.url}/risk", "interval": 3600, "webhook": f"{http.url}/hook"}}
    )
    try:
        assert await wait_until(lambda: g.sources.risk_center.current is not None)
        before = thresholds(g, ACCOUNT)
        result = await g.command(
            "set_thresholds", Operator("rita", Role.RISK, "console"), account=ACCOUNT, warning=2.7, reason="desk call"
        )
        assert result.ok, result.message
        assert await wait_until(lambda: any(h.get("source") == "capguard" for h in rc.hooks))
        (hook,) = [h for h in rc.hooks if h.get("source") == "capguard"]
        assert hook["type"] == "thresholds" and hook["scope"] == "account" and hook["account"] == ACCOUNT
        assert hook["before"]["warning"] == pytest.approx(before[0]) and hook["after"]["warning"] == 2.7
        assert hook["operator"] == "rita" and hook["reason"] == "desk call" and hook["change_id"].startswith("th-")
        # a change the risk center made is published once, by the risk center's client, never echoed back
        rc.version, rc.payload["as_of"] = 2, "2026-11-25T16:00:00Z"
        rc.payload["overrides"] = {ACCOUNT: {"warning": 2.6, "critical": 1.9, "liquidation": 1.35}}
        (change,) = await g.sources.risk_center.refresh()
        assert await wait_until(lambda: thresholds(g, ACCOUNT) == pytest.approx((2.6, 1.9, 1.35)))
        await asyncio.sleep(0.1)
        mine = [h for h in rc.hooks if h.get("account") == ACCOUNT]  # (the first pull published its own too)
        assert [h["source"] for h in mine] == ["capguard", "risk_center"]
        assert mine[1]["change_id"] == change["change_id"]
    finally:
        await shutdown(g, run)
