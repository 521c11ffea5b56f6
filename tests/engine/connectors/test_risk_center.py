"""Thresholds and limits from a loopback risk center; changes POSTed to a loopback webhook."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest

from engine.connectors import RiskCenterConfig
from engine.connectors.risk_center import RiskCenterClient, RiskCenterPayload, ThresholdPublisher
from engine.ladder import DataState
from engine.levels import Thresholds
from tests.engine.connectors.support import HttpServer, Request, Response

RISK = {
    "version": 1,
    "as_of": "2026-11-25T15:00:00Z",
    "thresholds": {"warning": 2.0, "critical": 1.5, "liquidation": 1.2},
    "overrides": {"acct-07": {"warning": 2.5, "critical": 1.8, "liquidation": 1.3}},
    "limits": {"max_leverage": 30.0, "max_drawdown": 0.5},
}


class RiskCenter:
    def __init__(self) -> None:
        self.payload: dict[str, Any] = copy.deepcopy(RISK)
        self.version = 1
        self.hooks: list[dict[str, Any]] = []
        self.hook_status = 200

    def __call__(self, req: Request) -> Response:
        if req.method == "POST" and req.path == "/hook":
            self.hooks.append(req.json())
            return Response(self.hook_status, {"ok": self.hook_status < 300})
        etag = f'"r{self.version}"'
        if req.headers.get("if-none-match") == etag:
            return Response(304, headers={"ETag": etag})
        return Response(200, self.payload, headers={"ETag": etag})


@pytest.fixture
async def center():
    rc = RiskCenter()
    async with HttpServer(rc) as http:
        yield rc, http


def client(http: HttpServer, clock, **kw: Any) -> RiskCenterClient:
    cfg = RiskCenterConfig(
        url=f"{http.url}/risk", webhook=f"{http.url}/hook", backoff={"initial": 0.01, "maximum": 0.02}, **kw
    )
    return RiskCenterClient(cfg, clock, publisher=ThresholdPublisher(cfg, None, clock))


async def test_pull_validates_diffs_and_publishes_each_change(center, sim_clock):
    rc, http = center
    c = client(http, sim_clock)
    seen: list[tuple[RiskCenterPayload, list[dict[str, Any]]]] = []
    c.listeners.append(lambda payload, changes: seen.append((payload, changes)))
    changes = await c.refresh()
    assert [(ch["scope"], ch["account"]) for ch in changes] == [
        ("book", None),
        ("account", "acct-07"),
        ("limits", None),
    ]
    assert c.current.thresholds == Thresholds() and c.current.overrides["acct-07"].liquidation == 1.3
    assert [h["change_id"] for h in rc.hooks] == [ch["change_id"] for ch in changes]
    assert (
        rc.hooks[1]["after"] == {"warning": 2.5, "critical": 1.8, "liquidation": 1.3} and rc.hooks[1]["before"] is None
    )
    assert all(h["type"] == "thresholds" and h["source"] == "risk_center" for h in rc.hooks)
    assert c.data_state(sim_clock.now()) == DataState.OK
    assert await c.refresh() == []  # 304: nothing new
    assert http.requests[-1].headers["if-none-match"] == '"r1"'
    rc.version, rc.payload["as_of"] = 2, "2026-11-25T16:00:00Z"
    rc.payload["overrides"]["acct-07"]["warning"] = 2.6
    (change,) = await c.refresh()
    assert change["scope"] == "account" and change["before"]["warning"] == 2.5 and change["after"]["warning"] == 2.6
    assert len(rc.hooks) == 4 and len(seen) == 2
    sim_clock.advance(301)
    assert c.data_state(sim_clock.now()) == DataState.STALE
    await c.stop()


async def test_baseline_means_only_differences_are_published(center, sim_clock):
    _, http = center
    c = client(http, sim_clock)
    c.current = RiskCenterPayload.model_validate({**RISK, "overrides": {}})
    (change,) = await c.refresh()
    assert change["scope"] == "account" and change["before"] is None
    await c.stop()


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda p: p["thresholds"].update(liquidation=1.6), "liquidation < critical < warning"),
        (lambda p: p["overrides"]["acct-07"].update(critical=-1), "greater than 0"),
        (lambda p: p["limits"].update(max_drawdown=1.5), "less than 1"),
        (lambda p: p.update(margin_call=True), "unknown key"),
    ],
)
async def test_invalid_payload_is_refused_and_nothing_is_published(center, sim_clock, caplog, mutate, reason):
    caplog.set_level(logging.WARNING, logger="capguard.connectors")
    rc, http = center
    c = client(http, sim_clock)
    await c.refresh()
    before, hooks = c.current, len(rc.hooks)
    rc.version = 2
    mutate(rc.payload)
    assert await c.refresh() == []
    assert c.current is before and len(rc.hooks) == hooks
    assert reason in c.last_error and reason in caplog.text


async def test_webhook_failure_is_logged_never_raised(center, sim_clock, caplog):
    caplog.set_level(logging.WARNING, logger="capguard.connectors")
    rc, http = center
    rc.hook_status = 500
    cfg = RiskCenterConfig(
        url=f"{http.url}/risk",
        webhook=f"{http.url}/hook",
        webhook_retries=2,
        backoff={"initial": 0.01, "maximum": 0.02},
    )
    pub = ThresholdPublisher(cfg, None, sim_clock)
    result = await pub.publish({"scope": "book", "account": None, "before": None, "after": {}, "change_id": "th-x"})
    assert result == {"nats": None, "webhook": False}
    assert len(rc.hooks) == 3 and "threshold webhook failed: HTTP 500" in caplog.text
    rc.hook_status = 404
    assert (await pub.publish({"change_id": "th-y"}))["webhook"] is False
    assert len(rc.hooks) == 4  # a 4xx is not retried
    await pub.aclose()


def test_change_ids_are_deterministic():
    from engine.connectors.risk_center import diff

    a = RiskCenterPayload.model_validate(RISK)
    assert [c["change_id"] for c in diff(None, a)] == [c["change_id"] for c in diff(None, a)]
    assert diff(a, a) == []
