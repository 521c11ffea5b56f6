"""Tokens and roles, the no-token loopback mode, Host and Origin checks, refusing to start."""

from __future__ import annotations

import logging
import socket

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from engine.api import ApiConfig, ApiServer, StartupRefused, parse_bind
from engine.api.security import TokenTable
from tests.engine.api.support import TOKENS, base_config, client, connect, receive, serving
from tests.engine.guard.support import make_guard


async def test_without_a_token_reads_are_open_on_loopback_and_every_change_is_401(tmp_path):
    async with serving(tmp_path, tokens=False, writer=True) as (g, server):
        acct = g.book.info[0].id
        async with client(server, None) as c:
            assert (await c.get("/status")).status_code == 200
            assert (await c.get(f"/risk/{acct}")).status_code == 200
            who = (await c.get("/whoami")).json()
            assert who["role"] == "viewer" and who["writes"] is False
            before = g.journal.head()[0]
            for method, path, body in (
                ("POST", f"/deleverage/{acct}", {"dry_run": True}),
                ("POST", f"/liquidate/{acct}", {"confirm": acct}),
                ("POST", f"/hold/{acct}", {"duration": 1, "reason": "x"}),
                ("POST", "/kill-switch", {"engage": True, "reason": "x"}),
                ("POST", "/alerts/al1/ack", None),
                ("DELETE", "/schedule/s1", None),
                ("PUT", "/config", {"deleverage": {"cooldown": 1.0}}),
                ("PUT", "/alerts", {}),
                ("POST", f"/deleverage/{acct}", {"fraction": 99}),  # 401 before the body is even looked at
            ):
                r = await c.request(method, path, json=body)
                assert r.status_code == 401, (method, path)
                assert r.json()["detail"].startswith("no API token configured: "), r.text
                assert r.headers["www-authenticate"] == "Bearer"
            assert g.journal.head()[0] == before
        async with connect(server, "risk-status", None) as ws:
            assert (await receive(ws))["type"] == "snapshot"


async def test_with_tokens_every_call_needs_a_valid_one(tmp_path):
    async with serving(tmp_path) as (_g, server):
        async with httpx.AsyncClient(base_url=server.url) as c:
            r = await c.get("/api/v1/capital/status")
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            r = await c.get("/api/v1/capital/status", headers={"Authorization": "Bearer " + TOKENS["risk"][:-1]})
            assert r.status_code == 401
            r = await c.get("/api/v1/capital/status", headers={"Authorization": "Basic " + TOKENS["risk"]})
            assert r.status_code == 401
            assert (await c.get("/metrics")).status_code == 401
            assert (await c.get("/api/v1/capital/openapi.json")).status_code == 200  # the contract is public
        with pytest.raises(InvalidStatus) as refused:
            async with connect(server, "risk-status", None):
                pass
        assert refused.value.response.status_code == 403
        async with connect(server, "alerts", "viewer") as ws:
            assert (await receive(ws))["type"] == "snapshot"


async def test_host_header_and_websocket_origin_are_checked(tmp_path):
    async with serving(tmp_path, allowed_origins=["localhost", "https://desk.example.com"]) as (_g, server):
        async with client(server, "viewer") as c:
            r = await c.get("/status", headers={"Host": "evil.example:80"})
            assert r.status_code == 400 and "evil.example" in r.json()["detail"]
            assert (await c.get("/status", headers={"Host": f"localhost:{server.port}"})).status_code == 200
        with pytest.raises(InvalidStatus):
            async with connect(server, "risk-status", "viewer", additional_headers={"Host": "evil.example"}):
                pass
        for origin in ("http://evil.example", "null", "https://desk.example.com.evil.example"):
            with pytest.raises(InvalidStatus):
                async with connect(server, "risk-status", "viewer", origin=origin):
                    pass
        for origin in ("http://localhost:5173", "https://desk.example.com"):
            async with connect(server, "risk-status", "viewer", origin=origin) as ws:
                assert (await receive(ws))["type"] == "snapshot"
        with pytest.raises(InvalidStatus):
            async with connect(server, "no-such-channel", "viewer"):
                pass


async def test_refusing_to_start(tmp_path, monkeypatch):
    g = make_guard(tmp_path, "calm", cfg=base_config())
    with pytest.raises(StartupRefused, match="no API token is configured, so it may only bind to loopback"):
        ApiServer(g, ApiConfig(host="0.0.0.0"))
    ApiServer(g, ApiConfig(host="0.0.0.0", tokens=[{"name": "a", "role": "risk", "token": "x" * 20}]))  # fine
    with pytest.raises(ValueError, match="environment variable CAPGUARD_TEST_TOKEN is not set"):
        ApiServer(g, ApiConfig(tokens=[{"name": "a", "role": "risk", "token_env": "CAPGUARD_TEST_TOKEN"}]))
    monkeypatch.setenv("CAPGUARD_TEST_TOKEN", "y" * 20)
    table = TokenTable(ApiConfig(tokens=[{"name": "a", "role": "risk", "token_env": "CAPGUARD_TEST_TOKEN"}]))
    assert table.lookup("y" * 20).name == "a" and table.lookup("y" * 19) is None and table.lookup(None) is None
    with pytest.raises(ValueError, match="at least 16 characters"):
        ApiConfig(tokens=[{"name": "a", "role": "risk", "token": "short"}])
    with pytest.raises(ValueError, match="exactly one of token or token_env"):
        ApiConfig(tokens=[{"name": "a", "role": "risk"}])
    with pytest.raises(ValueError, match=r"unknown|extra"):
        ApiConfig(tokens=[], bogus=1)
    with pytest.raises(StartupRefused, match="share the same token"):
        TokenTable(ApiConfig(tokens=[{"name": n, "role": "risk", "token": "z" * 20} for n in ("a", "b")]))
    # a port already taken is a clear error, not an exit
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = ApiServer(g, ApiConfig(port=taken.getsockname()[1]))
        with pytest.raises(StartupRefused, match=r"could not start|unavailable"):
            await server.start()
    g.journal.close()


def test_parse_bind():
    assert parse_bind("127.0.0.1:8700") == ("127.0.0.1", 8700)
    assert parse_bind("0.0.0.0:0") == ("0.0.0.0", 0)
    assert parse_bind(":9000") == ("127.0.0.1", 9000)
    assert parse_bind("9000") == ("127.0.0.1", 9000)
    assert parse_bind("[::1]:8700") == ("::1", 8700)
    assert parse_bind("localhost:8700") == ("localhost", 8700)
    for bad in ("", "host", "host:port", "1.2.3.4:70000", "::1:8700", "[::1]8700"):
        with pytest.raises(ValueError):
            parse_bind(bad)


async def test_tokens_are_never_logged_or_shown(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    async with serving(tmp_path, writer=True) as (g, server):
        async with client(server, "risk") as c:
            await c.get("/status")
            await c.post("/hold/nope", json={"duration": 1, "reason": "x"})
            cfg = (await c.get("/config")).text
        async with httpx.AsyncClient(base_url=server.url) as anon:
            await anon.get("/api/v1/capital/status", headers={"Authorization": "Bearer not-a-real-token-12345"})
        async with connect(server, "risk-status", "risk") as ws:
            await receive(ws)
        records = g.journal.records()
    text = caplog.text + cfg + repr(server.config) + str(records)
    for token in (*TOKENS.values(), "not-a-real-token-12345"):
        assert token not in text
    assert "**********" in repr(server.config)
