"""Thresholds and limits from a risk center, and the publication of threshold changes.

Pull contract (docs/connectors.md), conditional like the account service:

    GET <url>   If-None-Match: "<etag>"
    200 {"version": 1, "as_of": "<ISO-8601 UTC>",
         "thresholds": {"warning": 2.0, "critical": 1.5, "liquidation": 1.2},
         "overrides": {"<account>": {"warning": .., "critical": .., "liquidation": ..}},
         "limits": {"max_leverage": 30.0, "max_drawdown": 0.5}}
    304 not modified

Thresholds are validated by `engine.levels.Thresholds` (liquidation < critical < warning);
anything malformed refuses the whole payload (logged, nothing applied).

Each difference from what was in force becomes one change record, published to NATS
(`capguard.thresholds`, JetStream, Nats-Msg-Id = change_id) and POSTed to the optional webhook,
then handed to the listeners (the guard applies it through its own, journaled, path):

    {"type": "thresholds", "change_id": "...", "source": "risk_center",
     "scope": "book" | "account" | "limits", "account": "<id>" | null,
     "before": {...} | null, "after": {...} | null, "as_of": "...", "ts": "..."}
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import AwareDatetime, Field, ValidationError, model_validator

from engine.clock import Clock, iso
from engine.connectors.base import (
    Backoff,
    Refused,
    RiskCenterConfig,
    Sleep,
    Strict,
    bearer_headers,
    describe_errors,
    refuse,
)
from engine.connectors.rest_account import RETRYABLE, HttpFailure, get_with_retries
from engine.ladder import DataState
from engine.levels import Thresholds

if TYPE_CHECKING:
    from engine.connectors.nats_bus import NatsPublisher

log = logging.getLogger("capguard.connectors.risk_center")


class RiskLimits(Strict):
    max_leverage: float | None = Field(default=None, gt=0)
    max_drawdown: float | None = Field(default=None, gt=0, lt=1)


class RiskCenterPayload(Strict):
    version: Literal[1]
    as_of: AwareDatetime
    thresholds: Thresholds
    overrides: dict[str, Thresholds] = Field(default_factory=dict)
    limits: RiskLimits = Field(default_factory=RiskLimits)

    @model_validator(mode="after")
    def _ids(self) -> RiskCenterPayload:
        for k in self.overrides:
            if not k:
                raise ValueError("overrides: an account id must not be empty")
        return self


def _dump(model: Strict | None) -> dict[str, Any] | None:
    return None if model is None else model.model_dump()


def change_id(*content: Any) -> str:
    """A threshold change's id, derived from its content, so a republish is deduplicated."""
    key = json.dumps(list(content), sort_keys=True)
    return "th-" + hashlib.sha256(key.encode()).hexdigest()[:20]


def diff(before: RiskCenterPayload | None, after: RiskCenterPayload) -> list[dict[str, Any]]:
    """One record per scope whose values changed (book thresholds, each account override, limits)."""
    out: list[dict[str, Any]] = []
    b_thr = before.thresholds if before else None
    if b_thr != after.thresholds:
        out.append({"scope": "book", "account": None, "before": _dump(b_thr), "after": _dump(after.thresholds)})
    b_over = before.overrides if before else {}
    for acct in sorted(set(b_over) | set(after.overrides)):
        old, new = b_over.get(acct), after.overrides.get(acct)
        if old != new:
            out.append({"scope": "account", "account": acct, "before": _dump(old), "after": _dump(new)})
    b_lim = before.limits if before else None
    if b_lim != after.limits:
        out.append({"scope": "limits", "account": None, "before": _dump(b_lim), "after": _dump(after.limits)})
    as_of = after.as_of.isoformat().replace("+00:00", "Z")
    for c in out:
        c["as_of"] = as_of
        c["change_id"] = change_id(c["scope"], c["account"], c["before"], c["after"], as_of)
    return out


class ThresholdPublisher:
    """Publishes threshold changes to NATS (if configured) and POSTs them to a webhook (if any).

    Never raises: a failure is logged and reported in the returned dict.
    """

    def __init__(
        self,
        config: RiskCenterConfig | None,
        nats: NatsPublisher | None,
        clock: Clock,
        *,
        client: httpx.AsyncClient | None = None,
        env: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.webhook = config.webhook if config else None
        self.retries = config.webhook_retries if config else 0
        self.timeout = config.timeout if config else 5.0
        self.nats = nats
        self.clock = clock
        self._client = client
        self._headers = {"Content-Type": "application/json"}
        if config is not None and config.webhook_token_env:
            self._headers.update(bearer_headers(config.webhook_token_env, env))
        self._backoff = Backoff(config.backoff if config else None, rng)
        self._sleep = sleep
        self.sent: list[dict[str, Any]] = []

    async def publish(self, change: Mapping[str, Any]) -> dict[str, bool | None]:
        record = {"type": "thresholds", "source": "risk_center", "ts": iso(self.clock.now()), **change}
        result: dict[str, bool | None] = {"nats": None, "webhook": None}
        if self.nats is not None:
            result["nats"] = self.nats.publish_thresholds(record)
        if self.webhook:
            result["webhook"] = await self._post(record)
        self.sent.append(record)
        return result

    async def _post(self, record: Mapping[str, Any]) -> bool:
        assert self.webhook
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout))
        body = json.dumps(record).encode()
        self._backoff.reset()
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await self._sleep(self._backoff.next())
            try:
                resp = await self._client.post(self.webhook, content=body, headers=self._headers)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code < 300:
                return True
            last = f"HTTP {resp.status_code}"
            if resp.status_code not in RETRYABLE:
                break
        log.warning(
            "threshold webhook failed: %s",
            last,
            extra={"event": {"event": "webhook_failed", "change_id": record.get("change_id"), "reason": last}},
        )
        return False

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class RiskCenterClient:
    def __init__(
        self,
        config: RiskCenterConfig,
        clock: Clock,
        *,
        publisher: ThresholdPublisher | None = None,
        baseline: RiskCenterPayload | None = None,
        client: httpx.AsyncClient | None = None,
        env: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.name = "risk_center"
        self.config = config
        self.clock = clock
        self.publisher = publisher
        self.current: RiskCenterPayload | None = baseline
        self._client = client
        self._own_client = client is None
        self._headers = {"Accept": "application/json", **bearer_headers(config.token_env, env)}
        self._backoff = Backoff(config.backoff, rng)
        self._sleep = sleep
        self.etag: str | None = None
        self.last_ok: float | None = None
        self.last_error: str | None = None
        self.listeners: list[Callable[[RiskCenterPayload, list[dict[str, Any]]], Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._received = False

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.config.timeout))
        return self._client

    def data_state(self, now: float) -> DataState:
        if self.last_ok is None or now - self.last_ok > self.config.max_age:
            return DataState.STALE
        return DataState.OK

    async def refresh(self) -> list[dict[str, Any]]:
        """Pull once; returns the changes applied (empty when unchanged, refused or failed)."""
        headers = dict(self._headers)
        if self.etag and self._received:
            headers["If-None-Match"] = self.etag
        try:
            resp = await get_with_retries(
                self.client,
                self.config.url,
                headers=headers,
                retries=self.config.retries,
                backoff=self._backoff,
                sleep=self._sleep,
                what="GET risk center",
            )
        except HttpFailure as exc:
            self._fail(str(exc))
            return []
        if resp.status_code == 304 and self._received:
            self.last_ok = self.clock.now()
            self.last_error = None
            return []
        if resp.status_code != 200:
            self._fail(f"HTTP {resp.status_code}")
            return []
        try:
            payload = self.parse(resp.content)
        except Refused as exc:
            self.last_error = f"refused: {exc}"
            refuse(log, self.name, "risk center payload", str(exc))
            return []
        changes = diff(self.current, payload)
        self.current = payload
        self.etag = resp.headers.get("ETag")
        self._received = True
        self.last_ok = self.clock.now()
        self.last_error = None
        for change in changes:
            log.info(
                "risk center: %s %s changed",
                change["scope"],
                change["account"] or "",
                extra={"event": {"event": "threshold_change", **change}},
            )
            if self.publisher is not None:
                await self.publisher.publish(change)
        for listener in list(self.listeners):
            try:
                listener(payload, changes)
            except Exception:
                log.exception("risk center listener failed")
        return changes

    @staticmethod
    def parse(body: bytes) -> RiskCenterPayload:
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise Refused(f"not valid JSON ({exc})") from None
        try:
            return RiskCenterPayload.model_validate(data)
        except ValidationError as exc:
            raise Refused(describe_errors(exc)) from None

    def _fail(self, reason: str) -> None:
        self.last_error = reason
        log.warning("risk center: poll failed: %s", reason, extra={"event": {"event": "poll_failed", "reason": reason}})

    async def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("risk center poll crashed")
                self._fail(f"internal error: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.config.interval)

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self.publisher is not None:
            await self.publisher.aclose()
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None
