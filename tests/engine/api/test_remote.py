"""RemoteGuardView over a real server: the console's GuardView for `capguard --connect URL`."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import pytest

from engine.api import ApiServer
from engine.operators import Role
from engine.remote import RemoteGuardView
from engine.view import SNAPSHOT_COLUMNS
from tests.engine.api.support import TOKENS, api_config, serving
from tests.engine.guard.support import RISK, drive


async def settled(remote: RemoteGuardView, g, timeout: float = 3.0) -> None:
    """Wait until the remote copy has caught up with the engine's current version."""
    deadline = time.monotonic() + timeout
    while remote.snapshot().version != g.version and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)


async def test_remote_view_mirrors_the_guard_and_commands_through_the_api(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    async with serving(tmp_path, "crash") as (g, server):
        remote = RemoteGuardView(server.url, TOKENS["risk"])
        try:
            await remote.start(wait=5)
            assert remote.connected and remote.last_message_at is not None
            snap = remote.snapshot()
            here = g.snapshot()
            assert snap.ids == here.ids and snap.desks == here.desks and len(snap) == g.book.n_accounts
            assert tuple(snap.columns) == SNAPSHOT_COLUMNS
            for name in SNAPSHOT_COLUMNS:
                assert snap.columns[name].dtype.kind == here.columns[name].dtype.kind, name
            sub = remote.subscribe(maxsize=5000)
            for _ in range(30):
                await drive(g, 1)
                if g.journal.records(kind="alert"):
                    break
            await settled(remote, g)
            here = g.snapshot()
            snap = remote.snapshot()
            assert np.array_equal(snap.columns["level"], here.columns["level"])
            assert np.array_equal(snap.columns["data_state"], here.columns["data_state"])
            assert np.array_equal(snap.columns["trading_state"], here.columns["trading_state"])
            np.testing.assert_allclose(snap.columns["margin_ratio"], here.columns["margin_ratio"], rtol=2e-3)
            np.testing.assert_allclose(snap.columns["equity"], here.columns["equity"], rtol=1e-3)
            assert snap.summary["connection"]["connected"] is True and snap.summary["stale"] is False
            assert snap.summary["accounts"] == g.book.n_accounts
            events = sub.drain()
            assert any(e["type"] == "alert" for e in events)
            assert any(e["type"] == "transition" for e in events)

            # The GuardView's reads are synchronous (the console calls them from its refresh); here
            # the server shares the test's loop, so they run in a thread.
            who = await asyncio.to_thread(remote.whoami)
            assert (who.name, who.role) == ("rita", Role.RISK)
            a = int(np.argmax(g.book.acct_notional))
            acct = g.book.info[a].id
            assert (await asyncio.to_thread(remote.account_detail, acct))["id"] == acct
            with pytest.raises(KeyError):
                await asyncio.to_thread(remote.account_detail, "nope")
            recent = await asyncio.to_thread(remote.recent_actions, 20)
            assert recent and recent[0]["seq"] > recent[-1]["seq"]
            assert "connection" in remote.status()

            r = await remote.command("deleverage", RISK, account=acct, dry_run=True, fraction=0.5)
            assert r.ok and r.plan and r.plan["orders"]
            r = await remote.command("hold", RISK, account=acct, duration=60, reason="remote desk")
            assert r.ok and g.ladder.held_until[a] > g.clock.now()
            op = g.journal.records(kind="operator", account=acct)[-1]
            assert (op["command"], op["operator"], op["origin"]) == ("hold", "rita", "api:127.0.0.1")
            r = await remote.command("liquidate", RISK, account=acct, confirm="wrong")
            assert not r.ok and "confirm equal to the account id" in r.message
            r = await remote.command("teleport", RISK, account=acct)
            assert not r.ok and r.message.startswith("unknown command")
            alert_seq = g.journal.records(kind="alert")[0]["seq"]
            r = await remote.command("acknowledge", RISK, alert_seq=alert_seq, message="x", account=None)
            assert r.ok, r.message
        finally:
            await remote.aclose()
    assert TOKENS["risk"] not in caplog.text


async def test_a_viewer_token_gets_the_engines_refusal(tmp_path):
    async with serving(tmp_path) as (g, server):
        remote = RemoteGuardView(server.url, TOKENS["viewer"])
        try:
            acct = g.book.info[0].id
            r = await remote.command("liquidate", RISK, account=acct, confirm=acct)  # claims risk: the token decides
            assert not r.ok and r.message == "liquidate needs the risk role; vic is viewer"
        finally:
            await remote.aclose()


async def test_a_lost_connection_shows_within_2_seconds_and_comes_back(tmp_path):
    async with serving(tmp_path) as (g, server):
        remote = RemoteGuardView(server.url, TOKENS["viewer"], backoff_max=0.5)
        try:
            await remote.start(wait=5)
            assert remote.connected
            before = remote.snapshot()
            port = server.port
            await server.stop()
            t0 = time.monotonic()
            while remote.connected and time.monotonic() - t0 < 3:
                await asyncio.sleep(0.02)
            assert not remote.connected and time.monotonic() - t0 < 2.0
            stale = remote.snapshot()
            assert stale.summary["stale"] is True and stale.summary["connection"]["connected"] is False
            assert stale.ids == before.ids  # the last known numbers stay, marked stale
            with pytest.raises(ConnectionError):
                remote.account_detail(before.ids[0])
            again = ApiServer(g, api_config(port=port))
            await again.start()
            try:
                t1 = time.monotonic()
                while not remote.connected and time.monotonic() - t1 < 5:
                    await asyncio.sleep(0.05)
                assert remote.connected and remote.reconnects >= 1
            finally:
                await again.stop()
        finally:
            await remote.aclose()
