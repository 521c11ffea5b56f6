"""Balances, positions and open orders from a REST account service (httpx).

The contract (docs/connectors.md):

    GET <url>                       Accept: application/json
                                    If-None-Match: "<etag>"     (after the first answer)
    200 {"version": 1, "as_of": "<ISO-8601 UTC>", "accounts": [<Account>, ...]}  + ETag
    304 (not modified)              the data capguard holds is still current

Each <Account> is an `engine.model.Account` record (id, desk, strategy, risk_class,
wallet_balance, margin_mode, positions[], open_orders[]). Unknown keys, impossible values,
duplicate account ids and symbols that are not configured instruments refuse the whole
payload: the reason is logged and nothing is applied (the previous snapshot stays, and ages).

Each poll makes one request, retried on transport errors, timeouts, 429 and 5xx with
exponential backoff and jitter, at most `retries` times. The source is STALE once no poll
has confirmed the data for `max_age` seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import httpx
from pydantic import AwareDatetime, TypeAdapter, ValidationError

from engine.clock import Clock, iso
from engine.connectors.base import (
    AccountSourceBase,
    Backoff,
    BackoffConfig,
    Refused,
    RestAccountsConfig,
    Sleep,
    Strict,
    bearer_headers,
    describe_errors,
)
from engine.model import Account, Instrument

log = logging.getLogger("capguard.connectors.rest")

RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})


class AccountsPayload(Strict):
    version: Literal[1]
    as_of: AwareDatetime
    accounts: list[Account]


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise Refused(f"not valid JSON ({exc})") from None


PARSE_CHUNK = 500  # accounts validated between two turns of the event loop
_ACCOUNTS = TypeAdapter(list[Account])


class HttpFailure(Exception):
    """A request that failed after its retries (the message says how)."""


async def get_with_retries(
    client: httpx.AsyncClient,
    url: str,
    *,
    headers: Mapping[str, str],
    retries: int,
    backoff: Backoff,
    sleep: Sleep,
    what: str,
) -> httpx.Response:
    """GET with retries on transport errors, timeouts, 408/425/429/5xx. Returns the response
    (any other status included); raises HttpFailure when every attempt failed."""
    backoff.reset()
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            await sleep(backoff.next())
        try:
            resp = await client.get(url, headers=dict(headers))
        except httpx.TimeoutException as exc:
            last = f"timeout ({type(exc).__name__})"
            continue
        except httpx.TransportError as exc:
            last = f"transport error ({type(exc).__name__}: {exc})"
            continue
        if resp.status_code in RETRYABLE:
            last = f"HTTP {resp.status_code}"
            continue
        return resp
    raise HttpFailure(f"{what}: {last} after {retries + 1} attempt(s)")


class RestAccountSource(AccountSourceBase):
    def __init__(
        self,
        config: RestAccountsConfig,
        instruments: Sequence[Instrument] | Sequence[str],
        clock: Clock,
        *,
        client: httpx.AsyncClient | None = None,
        env: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        name: str = "rest_accounts",
    ) -> None:
        super().__init__(name, instruments, clock, config.max_age)
        self.config = config
        self._client = client
        self._own_client = client is None
        self._headers = {"Accept": "application/json", **bearer_headers(config.token_env, env)}
        self._backoff = Backoff(config.backoff or BackoffConfig(), rng)
        self._sleep = sleep
        self.etag: str | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.config.timeout))
        return self._client

    async def start(self) -> None:
        await self._start_loop(self.config.interval)

    async def stop(self) -> None:
        await self._stop_loop()
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def refresh(self) -> bool:
        self.counters["polls"] += 1
        headers = dict(self._headers)
        if self.etag and self.snapshot is not None:
            headers["If-None-Match"] = self.etag
        try:
            resp = await get_with_retries(
                self.client,
                self.config.url,
                headers=headers,
                retries=self.config.retries,
                backoff=self._backoff,
                sleep=self._sleep,
                what="GET accounts",
            )
        except HttpFailure as exc:
            self.failed(str(exc))
            return False
        if resp.status_code == 304:
            if self.snapshot is None:
                self.failed("304 Not Modified before any data was received")
                return False
            self.confirm()
            return True
        if resp.status_code != 200:
            self.failed(f"HTTP {resp.status_code}: {resp.text[:200]}")
            return False
        try:
            accounts, as_of = await self.parse_async(resp.content)
        except Refused as exc:
            self.refused("accounts payload", str(exc))
            return False
        self.etag = resp.headers.get("ETag")
        self.apply(accounts, etag=self.etag, as_of=as_of)
        return True

    async def parse_async(self, body: bytes) -> tuple[tuple[Account, ...], str]:
        """`parse`, validating a large payload PARSE_CHUNK accounts at a time with the event loop
        let in between, so a 10k-account poll does not stall the guard's loop for half a second.
        Still refused whole, with the same error locations."""
        data = _decode(body)
        accounts = data.get("accounts") if isinstance(data, dict) else None
        if not isinstance(accounts, list) or len(accounts) <= PARSE_CHUNK:
            return self.parse_data(data)
        try:
            payload = AccountsPayload.model_validate({**data, "accounts": []})
        except ValidationError as exc:
            raise Refused(describe_errors(exc)) from None
        out: list[Account] = []
        errors: list[Any] = []
        for start in range(0, len(accounts), PARSE_CHUNK):
            await asyncio.sleep(0)
            try:
                out.extend(_ACCOUNTS.validate_python(accounts[start : start + PARSE_CHUNK]))
            except ValidationError as exc:
                errors += [{**e, "loc": ("accounts", start + e["loc"][0], *e["loc"][1:])} for e in exc.errors()]
        if errors:
            raise Refused(describe_errors(errors))
        return self.check_accounts(out), iso(payload.as_of.timestamp())

    def parse(self, body: bytes) -> tuple[tuple[Account, ...], str]:
        """Validate a payload whole; Refused names the first problems."""
        return self.parse_data(_decode(body))

    def parse_data(self, data: Any) -> tuple[tuple[Account, ...], str]:
        try:
            payload = AccountsPayload.model_validate(data)
        except ValidationError as exc:
            raise Refused(describe_errors(exc)) from None
        return self.check_accounts(payload.accounts), iso(payload.as_of.timestamp())
