"""The notifier: takes alerts from the event hub and delivers them through Apprise.

    hub (alert, ack) -> suppression (dedupe, rate limit, digest) -> outbox (SQLite) -> Apprise

Every alert enters the outbox before anything is sent; delivery works from the outbox, one
row per (alert, step, channel), with retries and exponential backoff; a restarted notifier on
the same file delivers what is still pending, once. Escalation (immediate, time-based along
the ordered tiers, reminders at the last tier) is driven by the injected clock; an
acknowledgement stops it.

Nothing here blocks the event loop for long: Apprise's async path runs each service's send in
its own worker pool, every attempt is bounded by `delivery_timeout`, and the SQLite writes are
a few small rows per alert. URLs may carry secrets (`${NAME}` is expanded from the
environment): they are never logged, journaled or shown; only Apprise's masked form is.

The guard has already journaled each alert (kind "alert"); the notifier journals only a
delivery that failed for good ("system", event alert_delivery_failed, "alert delivery failed").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from engine.alerts.config import AlertsConfig
from engine.alerts.outbox import AlertState, Outbox, OutboxRow
from engine.clock import Clock, iso
from engine.events import Subscription
from engine.journal import Journal

log = logging.getLogger("capguard.alerts")

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECRET_KEYS = frozenset(
    {"pass", "password", "pwd", "secret", "token", "key", "apikey", "api_key", "access_token", "auth", "webhook"}
)
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{12,}$")
_NOTIFY_TYPES = {"info": "info", "warning": "warning", "critical": "failure", "emergency": "failure"}
_POLL = 0.25  # wall seconds between checks that the subscription is still open
_TICK = 1.0  # clock seconds between timer passes at most
_CONCURRENCY = 8  # deliveries in flight at once


@dataclass
class Channel:
    """One delivery target. `display` is Apprise's masked URL: safe to show."""

    name: str
    origin: str  # config, apprise_config, --notify
    tags: frozenset[str]
    apprise_tag: str
    display: str
    error: str | None = None
    secrets: set[str] = field(default_factory=set)

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "origin": self.origin,
            "tags": sorted(self.tags),
            "url": self.display,
            "available": self.error is None,
            "error": self.error,
        }


@dataclass
class _Held:
    """What the suppression rules held back for one (account, category)."""

    count: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    first: float = 0.0
    last: float = 0.0
    last_message: str = ""
    digest_at: float = 0.0


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "?"


def _expand(url: str) -> tuple[str, list[str], set[str]]:
    """`${NAME}` -> $NAME. Returns the URL, the names missing from the environment, and the
    values substituted (secrets to keep out of every message)."""
    missing: list[str] = []
    used: set[str] = set()

    def sub(m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1))
        if value is None:
            missing.append(m.group(1))
            return m.group(0)
        used.add(value)
        return value

    return _ENV_RE.sub(sub, url), missing, used


def _url_secrets(url: str) -> set[str]:
    """What to keep out of every message: the URL, its password, secret-named query values,
    and anything token-like in it (12+ letters/digits/-/_ with a digit: API keys, webhook ids)."""
    out = {url}
    try:
        parts = urlsplit(url)
        if parts.password:
            out.add(parts.password)
        pieces = [parts.username or "", *(parts.hostname or "").split("."), *parts.path.split("/")]
        for k, v in parse_qsl(parts.query, keep_blank_values=False):
            if k.lower() in _SECRET_KEYS:
                out.add(v)
            pieces.append(v)
        out.update(p for p in pieces if _TOKEN_RE.match(p) and any(c.isdigit() for c in p))
    except ValueError:
        pass
    return {s for s in out if len(s) >= 4}


def _outcome(row: OutboxRow, status: str, error: str | None, services: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "id": row.id,
        "alert_id": row.alert_id,
        "channel": row.channel,
        "ok": status == "sent",
        "status": status,
        "error": error,
        "services": services,
    }


class _Redactor(logging.Filter):
    def __init__(self, secrets: set[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def redact(self, text: str) -> str:
        for s in sorted(self.secrets, key=len, reverse=True):
            if s in text:
                text = text.replace(s, "****")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a broken log call is not ours to fix
            return True
        clean = self.redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


class Notifier:
    """Delivers alerts from the hub through Apprise. See the module docstring."""

    def __init__(
        self,
        config: AlertsConfig,
        clock: Clock,
        journal: Journal,
        outbox_path: str | Path,
        extra_urls: Sequence[str] = (),
    ) -> None:
        from apprise import Apprise, AppriseAsset

        self.config = config
        self.clock = clock
        self.journal = journal
        self.outbox = Outbox(outbox_path)
        self._secrets: set[str] = set()
        self._redactor = _Redactor(self._secrets)
        for name in ("apprise", log.name):
            logging.getLogger(name).addFilter(self._redactor)
        self._asset = AppriseAsset(
            app_id="capguard",
            app_desc="capguard alerts",
            storage_mode="memory",
            result_log_disk_size=0,
            service_timeout=config.delivery_timeout,
        )
        self._apprise = Apprise(asset=self._asset)
        self.channels: dict[str, Channel] = {}
        for ch in config.channels:
            url, missing, used = _expand(ch.url)
            error = f"environment variable {', '.join(missing)} not set" if missing else None
            self._add_channel(ch.name, "config", url, set(ch.tags), error, used)
        if config.apprise_config:
            self._load_apprise_config(config.apprise_config)
        self.extra: list[str] = []
        for i, url in enumerate(extra_urls, start=1):
            name = f"--notify#{i}"
            self._add_channel(name, "--notify", url, set(), None, set())
            self.extra.append(name)
        self._tiers: list[list[str]] = [self._match(t.tags) for t in config.tiers]
        # suppression state (in memory: a restart starts a fresh window)
        self._sent: dict[tuple[str | None, str], deque[float]] = {}
        self._last: dict[tuple[str | None, str], tuple[float, str]] = {}
        self._held: dict[tuple[str | None, str], _Held] = {}
        self._inflight: set[int] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._dropped = 0
        for ch in self.channels.values():
            if ch.error:
                log.error("alert channel %s unavailable: %s", ch.name, ch.error)

    # ------------------------------------------------------------------ channels
    def _add_channel(
        self, name: str, origin: str, url: str, tags: set[str], error: str | None, secrets: set[str]
    ) -> None:
        from apprise import Apprise

        secrets = set(secrets) | _url_secrets(url)
        self._secrets.update(secrets)
        tag = f"capguard-ch{len(self.channels)}"
        display = f"{_scheme(url)}://****"
        if error is None:
            try:
                svc = Apprise.instantiate(url, asset=self._asset, tag=[tag])
            except Exception:
                svc = None
            if svc is None:
                error = f"not a valid Apprise URL ({_scheme(url)}://...)"
            else:
                self._apprise.add(svc)
                display = self._redactor.redact(svc.url(privacy=True))
        self.channels[name] = Channel(name, origin, frozenset(tags | {name}), tag, display, error, secrets)

    def _load_apprise_config(self, path: str) -> None:
        from apprise import AppriseConfig, AppriseTag, NotifyBase

        cfg = AppriseConfig(paths=str(Path(path).expanduser()), asset=self._asset)
        services = [s for s in cfg.services() if isinstance(s, NotifyBase)]
        if not services:
            log.error("apprise_config %s defines no usable service", path)
        for i, svc in enumerate(services, start=1):
            name = f"apprise_config#{i}"
            tag = f"capguard-ch{len(self.channels)}"
            tags = {str(t) for t in svc.tags}
            svc.tags = {AppriseTag.parse(str(t)) for t in svc.tags} | {AppriseTag.parse(tag)}
            self._apprise.add(svc)
            self.channels[name] = Channel(name, "apprise_config", frozenset(tags | {name}), tag, svc.url(privacy=True))

    def _match(self, tags: Iterable[str]) -> list[str]:
        wanted = {t.lower() for t in tags}
        return [c.name for c in self.channels.values() if c.tags & wanted and c.origin != "--notify"]

    def channel_list(self) -> list[dict[str, Any]]:
        """The channels, their tags and availability (URLs masked)."""
        return [c.public() for c in self.channels.values()]

    @staticmethod
    def validate_url(url: str) -> str | None:
        """None when Apprise accepts the URL (after `${NAME}` expansion), else the problem
        (without the URL: it may hold a secret). For `--notify` checks before starting."""
        from apprise import Apprise

        expanded, missing, _ = _expand(url)
        if missing:
            return f"environment variable {', '.join(missing)} not set"
        try:
            ok = Apprise.instantiate(expanded) is not None
        except Exception:
            ok = False
        return None if ok else f"not a valid Apprise URL ({_scheme(url)}://...)"

    # ------------------------------------------------------------------ routing
    @staticmethod
    def _matches(words: Iterable[str], category: str, severity: str) -> bool:
        return any(w in (category, severity) for w in words)

    def _routed(self, category: str, severity: str) -> list[str]:
        tags = [*self.config.routing.get(category, ()), *self.config.routing.get(severity, ())]
        return self._match(tags) if tags else list(self._tiers[0])

    def _suppression(self, key: tuple[str | None, str], now: float) -> str | None:
        last = self._last.get(key)
        if self.config.dedupe_window > 0 and last is not None and now - last[0] < self.config.dedupe_window:
            return "duplicate"
        sent = self._sent.get(key)
        if sent is not None:
            while sent and now - sent[0] >= self.config.rate_limit.window:
                sent.popleft()
            if len(sent) >= self.config.rate_limit.count:
                return "rate_limited"
        return None

    def _hold(self, key: tuple[str | None, str], reason: str, message: str, now: float) -> None:
        held = self._held.get(key)
        if held is None:
            if reason == "duplicate":
                until = self._last[key][0] + self.config.dedupe_window
            else:
                until = self._sent[key][0] + self.config.rate_limit.window
            held = self._held[key] = _Held(first=now, digest_at=max(until, now))
        held.count += 1
        held.reasons[reason] = held.reasons.get(reason, 0) + 1
        held.last = now
        held.last_message = message

    # ------------------------------------------------------------------ messages
    def _compose(self, a: Mapping[str, Any], *, step: int, tier: int, kind: str, now: float) -> tuple[str, str, str]:
        category = str(a.get("category") or "")
        severity = str(a.get("severity") or "info")
        account = a.get("account") or "book"
        ntype = "success" if category == "recovery" else _NOTIFY_TYPES.get(severity, "info")
        head = f"capguard {severity.upper()} {category}: {account}"
        tier_name = self.config.tiers[tier].name if 0 <= tier < len(self.config.tiers) else ""
        if kind == "escalation":
            head = f"ESCALATED to {tier_name}: {head}"
        elif kind == "reminder":
            head = f"REMINDER ({tier_name}): {head}"
        lines = [str(a.get("message") or ""), ""]
        when = a.get("ts") or iso(now)
        lines.append(f"alert {a['alert_id']} | {category} | {severity} | account {account} | at {when}")
        if kind in ("escalation", "reminder"):
            created = float(a.get("created_at") or now)
            lines.append(
                f"Not acknowledged after {now - created:.0f}s: sent to {tier_name} "
                f"(tier {tier + 1} of {len(self.config.tiers)}, step {step})."
            )
        if kind != "digest" and self._matches(
            [*self.config.escalation.timed, *self.config.escalation.immediate], category, severity
        ):
            lines.append(f"Acknowledge alert {a['alert_id']} (console or API) to stop escalation.")
        return head, "\n".join(lines).strip(), ntype

    # ------------------------------------------------------------------ events
    def handle(self, event: Mapping[str, Any]) -> None:
        """Take one hub event (alert or ack); anything else is ignored."""
        kind = event.get("type")
        if kind == "alert":
            self._on_alert(event, self.clock.now())
        elif kind == "ack":
            self._on_ack(event, self.clock.now())

    def handle_many(self, events: Iterable[Mapping[str, Any]]) -> None:
        with self.outbox.batch():
            for ev in events:
                try:
                    self.handle(ev)
                except Exception:
                    log.exception("alert event %s not handled", ev.get("alert_id"))
        self._wake.set()

    def _on_alert(self, ev: Mapping[str, Any], now: float) -> None:
        alert_id = str(ev.get("alert_id") or "")
        if not alert_id or self.outbox.has_alert(alert_id):
            return
        category = str(ev.get("category") or "system")
        severity = str(ev.get("severity") or "info")
        account = ev.get("account")
        key = (account, category)
        esc = self.config.escalation
        reason = None
        if not self._matches(self.config.never_suppress, category, severity):
            reason = self._suppression(key, now)
        if reason is not None:
            dup_of = self._last[key][1] if key in self._last else None
            self.outbox.add_alert(ev, now, mode="suppressed", suppressed=reason, dup_of=dup_of)
            self._hold(key, reason, str(ev.get("message") or ""), now)
            log.info("alert %s held back (%s)", alert_id, reason)
            return
        self._last[key] = (now, alert_id)
        self._sent.setdefault(key, deque()).append(now)
        last_tier = len(self.config.tiers) - 1
        escalate_at = None
        if self._matches(esc.immediate, category, severity):
            mode, tier = "immediate", last_tier
            targets = [*self._routed(category, severity), *(n for t in self._tiers for n in t)]
            if esc.repeat > 0 and self._matches(esc.timed, category, severity):
                escalate_at = now + esc.repeat
        elif self._matches(esc.timed, category, severity):
            mode, tier = "timed", 0
            targets = self._routed(category, severity)
            escalate_at = now + esc.critical_delay
        else:
            mode, tier = "routed", 0
            targets = self._routed(category, severity)
        targets = list(dict.fromkeys([*targets, *self.extra]))
        self.outbox.add_alert(ev, now, mode=mode, tier=tier, escalate_at=escalate_at)
        title, body, ntype = self._compose(ev, step=0, tier=tier, kind="alert", now=now)
        self.outbox.enqueue(
            alert_id, 0, tier, self.config.tiers[tier].name, targets, title=title, body=body, notify_type=ntype, now=now
        )
        if not targets:
            log.debug("alert %s (%s/%s) has no channel to go to", alert_id, category, severity)

    def _on_ack(self, ev: Mapping[str, Any], now: float) -> None:
        alert_id = str(ev.get("alert_id") or "")
        by = ev.get("operator")
        ids = [alert_id]
        original = self.outbox.dup_of(alert_id)
        if original:
            ids.append(original)  # acknowledging a held-back duplicate acknowledges what was sent
        for aid in ids:
            cancelled = self.outbox.acknowledge(aid, now, str(by) if by is not None else None)
            if cancelled >= 0:
                log.info("alert %s acknowledged by %s: escalation stopped", aid, by)

    # ------------------------------------------------------------------ timers
    def tick(self, now: float | None = None) -> None:
        """Send the digests and escalations that are due (the timer calls it; so may the guard)."""
        now = self.clock.now() if now is None else now
        with self.outbox.batch():
            self._flush_digest(now)
            for a in self.outbox.escalations_due(now):
                self._escalate(a, now)
        self._wake.set()

    def _flush_digest(self, now: float) -> None:
        due = sorted((k for k, h in self._held.items() if h.digest_at <= now), key=lambda k: (k[0] or "", k[1]))
        if not due:
            return
        lines = []
        total = 0
        for key in due:
            h = self._held.pop(key)
            total += h.count
            why = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in sorted(h.reasons.items()))
            lines.append(
                f"{key[0] or 'book'} {key[1]}: {h.count} held back ({why}) between {iso(h.first)} and {iso(h.last)};"
                f" last: {h.last_message}"
            )
        alert_id = f"dg{uuid.uuid4().hex[:12]}"
        ev = {
            "type": "alert",
            "alert_id": alert_id,
            "ts": iso(now),
            "account": None,
            "category": "digest",
            "severity": "info",
            "message": f"{total} alert(s) held back by de-duplication and rate limits:\n" + "\n".join(lines),
        }
        targets = list(dict.fromkeys([*self._routed("digest", "info"), *self.extra]))
        self.outbox.add_alert(ev, now, mode="digest")
        title, body, ntype = self._compose(ev, step=0, tier=0, kind="digest", now=now)
        title = f"capguard digest: {total} alert(s) held back"
        self.outbox.enqueue(
            alert_id, 0, 0, self.config.tiers[0].name, targets, title=title, body=body, notify_type=ntype, now=now
        )

    def _escalate(self, a: AlertState, now: float) -> None:
        esc = self.config.escalation
        notified = self.outbox.notified_channels(a.alert_id)
        nxt = next((t for t in range(a.tier + 1, len(self._tiers)) if set(self._tiers[t]) - notified), None)
        event = {**a.__dict__}
        if nxt is not None:
            targets = [n for n in self._tiers[nxt] if n not in notified]
            step, tier, kind = a.step + 1, nxt, "escalation"
            more = any(set(self._tiers[t]) - notified - set(targets) for t in range(nxt + 1, len(self._tiers)))
            escalate_at = now + esc.critical_delay if more else (now + esc.repeat if esc.repeat > 0 else None)
        elif esc.repeat > 0:
            reached = a.tier if self._tiers[a.tier] else max((t for t, c in enumerate(self._tiers) if c), default=0)
            targets = list(self._tiers[reached])
            step, tier, kind = a.step + 1, reached, "reminder"
            escalate_at = now + esc.repeat
        else:
            self.outbox.set_escalation(a.alert_id, tier=a.tier, step=a.step, escalate_at=None)
            return
        title, body, ntype = self._compose(event, step=step, tier=tier, kind=kind, now=now)
        name = self.config.tiers[tier].name
        self.outbox.enqueue(a.alert_id, step, tier, name, targets, title=title, body=body, notify_type=ntype, now=now)
        self.outbox.set_escalation(a.alert_id, tier=tier, step=step, escalate_at=escalate_at)
        log.info("alert %s %s to %s (%d channel(s))", a.alert_id, kind, self.config.tiers[tier].name, len(targets))

    def _next_wakeup(self, now: float) -> float:
        times = [
            t
            for t in (
                self.outbox.next_attempt_at(self._inflight),
                self.outbox.next_escalation_at(),
                min((h.digest_at for h in self._held.values()), default=None),
            )
            if t is not None
        ]
        soonest = min(times, default=now + _TICK)
        return min(max(soonest - now, 0.0), _TICK) if soonest > now else _TICK

    # ------------------------------------------------------------------ delivery
    async def deliver_due(self, now: float | None = None) -> list[dict[str, Any]]:
        """Send every outbox row that is due (concurrently, each bounded by delivery_timeout).

        Returns one dict per row tried: id, alert_id, channel, ok, status, error, services.
        """
        now = self.clock.now() if now is None else now
        rows = self.outbox.due(now, exclude=self._inflight)
        if not rows:
            return []
        self._inflight.update(r.id for r in rows)
        gate = asyncio.Semaphore(_CONCURRENCY)

        async def one(row: OutboxRow) -> dict[str, Any]:
            try:
                async with gate:
                    return await self._deliver(row)
            finally:
                self._inflight.discard(row.id)

        try:
            return list(await asyncio.gather(*(one(r) for r in rows)))
        finally:
            self._wake.set()

    async def _deliver(self, row: OutboxRow) -> dict[str, Any]:
        from apprise import NotifyType

        ch = self.channels.get(row.channel)
        error: str | None = None
        final = False
        services: list[dict[str, str]] = []
        if ch is None:
            error, final = "channel no longer configured", True
        elif ch.error is not None:
            error, final = ch.error, True
        else:
            timeout = self.config.delivery_timeout
            try:
                result = await asyncio.wait_for(
                    self._apprise.async_notify(
                        body=row.body, title=row.title, notify_type=NotifyType(row.notify_type), tag=ch.apprise_tag
                    ),
                    timeout=timeout,
                )
            except TimeoutError:
                error = f"no answer within {timeout:g}s"
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                services = [{"service": r.name, "status": r.status.name} for r in result]
                if result.status.name == "TIMEOUT":
                    error = f"no answer within {timeout:g}s"
                elif not result:
                    problems = [e.message for e in result.logs() if e.level in ("WARNING", "ERROR", "CRITICAL")]
                    error = f"{result.status.name}: " + ("; ".join(problems[:3]) or "no detail from Apprise")
                result.close()
        service = ", ".join(s["service"] for s in services) or None
        done_at = self.clock.now()
        if error is None:
            self.outbox.mark_sent(row.id, done_at, service)
            log.info("alert %s delivered to %s", row.alert_id, row.channel)
            return _outcome(row, "sent", None, services)
        error = self._redactor.redact(error)
        attempts = row.attempts + 1
        retry = self.config.retry
        if final or attempts >= retry.attempts:
            self.outbox.mark_failed(row.id, error, service)
            status = "failed"
            log.error(
                "alert %s delivery to %s failed after %d attempt(s): %s", row.alert_id, row.channel, attempts, error
            )
            self.journal.append(
                "system",
                row.account,
                event="alert_delivery_failed",
                message="alert delivery failed",
                alert_id=row.alert_id,
                channel=row.channel,
                step=row.step,
                attempts=attempts,
                error=error,
            )
        else:
            delay = min(retry.max, retry.base * 2 ** (attempts - 1))
            self.outbox.mark_retry(row.id, done_at + delay, error, service)
            status = "pending"
            log.warning(
                "alert %s delivery to %s failed (attempt %d of %d, retry in %gs): %s",
                *(row.alert_id, row.channel, attempts, retry.attempts, delay, error),
            )
        return _outcome(row, status, error, services)

    # ------------------------------------------------------------------ running
    def _spawn_delivery(self) -> None:
        task = asyncio.get_running_loop().create_task(self.deliver_due())
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("alert delivery pass failed", exc_info=task.exception())

    async def _timer(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            self._wake.clear()
            now = self.clock.now()
            try:
                self.tick(now)
                self._wake.clear()
                self._spawn_delivery()
                wait = self._next_wakeup(now)
            except Exception:
                log.exception("alert timer pass failed")
                wait = _TICK
            waiters = [
                loop.create_task(self.clock.sleep(wait)),
                loop.create_task(self._wake.wait()),
                loop.create_task(self._stopping.wait()),
            ]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()

    async def run(self, subscription: Subscription) -> None:
        """Consume alert and ack events until the subscription closes or stop() is called.

        At the end, events still queued are taken into the outbox, one last delivery pass is
        made, and deliveries in flight get up to delivery_timeout to finish; whatever is left
        stays pending in the outbox for the next run.
        """
        loop = asyncio.get_running_loop()
        timer = loop.create_task(self._timer())
        stopper = loop.create_task(self._stopping.wait())
        getter: asyncio.Task[Any] | None = None
        try:
            while not self._stopping.is_set() and not subscription.closed:
                if getter is None:
                    getter = loop.create_task(subscription.get())
                done, _ = await asyncio.wait({getter, stopper}, timeout=_POLL, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    events = [getter.result(), *subscription.drain()]
                    getter = None
                    self.handle_many(events)
                if subscription.dropped > self._dropped:
                    lost, self._dropped = subscription.dropped - self._dropped, subscription.dropped
                    log.error("the alert subscription overflowed: %d event(s) lost", lost)
                    self.journal.append("system", event="alert_events_dropped", dropped=lost)
        finally:
            self._stopping.set()
            stopper.cancel()
            leftover = []
            if getter is not None:
                if getter.done() and not getter.cancelled() and getter.exception() is None:
                    leftover.append(getter.result())
                getter.cancel()
            leftover.extend(subscription.drain())
            if leftover:
                self.handle_many(leftover)
            with contextlib.suppress(asyncio.CancelledError):
                await timer
            self._spawn_delivery()  # the last pass: what arrived just before the stop
            if self._tasks:
                _, pending = await asyncio.wait(set(self._tasks), timeout=self.config.delivery_timeout)
                for t in pending:
                    t.cancel()
                if pending:
                    await asyncio.wait(pending)

    def stop(self) -> None:
        """Ask run() to return (deliveries in flight are given delivery_timeout to finish)."""
        self._stopping.set()

    # ------------------------------------------------------------------ reading
    def status(self, alert_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Delivery status per channel (newest first) for the console and the API."""
        return self.outbox.status(alert_id=alert_id, limit=limit)

    def alerts(self, limit: int = 200) -> list[dict[str, Any]]:
        """Alerts seen with their mode, tier reached, suppression and acknowledgement."""
        return self.outbox.alerts(limit=limit)

    def close(self) -> None:
        for name in ("apprise", log.name):
            logging.getLogger(name).removeFilter(self._redactor)
        self.outbox.close()
