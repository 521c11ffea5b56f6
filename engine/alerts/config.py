"""The `[alerts]` section: where alerts go, how they escalate, and how noise is held back.

Vocabulary (the same words as Protection.alert):

- categories: approaching, warning, critical, liquidation, recovery (risk levels);
  deleverage, liquidate, manual, limit, system (actions); `digest` is the notifier's own
  summary of what it held back.
- severities: info, warning, critical, emergency.

Routing keys and the escalation lists name a category or a severity; an alert matches an
entry when either its category or its severity equals it.

Escalation modes:

- immediate: an alert matching `escalation.immediate` (by default liquidation, system and
  every emergency) goes to every tier at once;
- time-based: an alert matching `escalation.timed` (by default CRITICAL) that nobody has
  acknowledged goes to the next tier after `critical_delay` seconds, and again, tier by tier;
  once at the last tier it is repeated there every `repeat` seconds (0: never);
- hierarchy: `tiers` are ordered (desk, risk officer, management, external); a tier with no
  channel is skipped;
- external: the last tier, for whoever is outside the firm's own chain.

Acknowledging an alert stops its escalation.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CATEGORIES: tuple[str, ...] = (
    "approaching",
    "warning",
    "critical",
    "liquidation",
    "recovery",
    "deleverage",
    "liquidate",
    "manual",
    "limit",
    "system",
    "digest",
)
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical", "emergency")
_WORDS = frozenset(CATEGORIES) | frozenset(SEVERITIES)

# Apprise tag syntax: a colon would be read as a priority or a retry count.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def _check_names(values: list[str], what: str) -> list[str]:
    out = []
    for v in values:
        name = v.strip().lower()
        if not NAME_RE.match(name):
            raise ValueError(f"{what} {v!r}: lowercase letters, digits, '-' and '_', starting with a letter or digit")
        out.append(name)
    return out


def _check_words(values: list[str], what: str) -> list[str]:
    bad = [v for v in values if v not in _WORDS]
    if bad:
        raise ValueError(
            f"{what}: {', '.join(map(repr, bad))} is neither a category ({', '.join(CATEGORIES)}) "
            f"nor a severity ({', '.join(SEVERITIES)})"
        )
    return values


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChannelConfig(_Strict):
    """One Apprise URL. `${NAME}` in the URL is replaced by the environment variable NAME when
    the notifier starts; the URL itself is never logged nor shown (only Apprise's masked form)."""

    name: str = Field(description="unique channel name, also usable as a routing tag")
    url: str = Field(min_length=1, description="Apprise URL, e.g. mailtos://user:${SMTP_PASSWORD}@example.com")
    tags: list[str] = Field(default_factory=list, description="routing tags this channel answers to")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_names([v], "channel name")[0]

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        return _check_names(v, "tag")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if "://" not in v:
            # Never echo the value back: it may hold a secret.
            raise ValueError("not an Apprise URL (expected scheme://...)")
        return v


class TierConfig(_Strict):
    name: str
    tags: list[str] = Field(default_factory=list)

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        return _check_names(v, "tag")


def _default_tiers() -> list[TierConfig]:
    return [
        TierConfig(name="desk", tags=["desk"]),
        TierConfig(name="risk officer", tags=["risk"]),
        TierConfig(name="management", tags=["management"]),
        TierConfig(name="external", tags=["external"]),
    ]


class EscalationConfig(_Strict):
    critical_delay: float = Field(
        default=300.0, gt=0, description="seconds before an unacknowledged timed alert goes to the next tier"
    )
    repeat: float = Field(default=0.0, ge=0, description="seconds between reminders at the last tier; 0: none")
    immediate: list[str] = Field(default_factory=lambda: ["liquidation", "system", "emergency"])
    timed: list[str] = Field(default_factory=lambda: ["critical"])

    @field_validator("immediate", "timed")
    @classmethod
    def _words(cls, v: list[str]) -> list[str]:
        return _check_words(v, "escalation")


class RateLimitConfig(_Strict):
    count: int = Field(default=5, ge=1, description="alerts delivered per account and category within the window")
    window: float = Field(default=300.0, gt=0, description="seconds")


class ApproachingConfig(_Strict):
    band: float = Field(default=0.1, ge=0, description="ratio units above the next more severe threshold")
    horizon_s: float = Field(default=60.0, ge=0, description="seconds the ratio's trend is projected ahead")


class RetryConfig(_Strict):
    base: float = Field(default=2.0, gt=0, description="seconds before the first retry; doubles each time")
    max: float = Field(default=300.0, gt=0, description="longest wait between retries")
    attempts: int = Field(default=8, ge=1, le=100, description="attempts per channel before giving up")


class AlertsConfig(_Strict):
    channels: list[ChannelConfig] = Field(default_factory=list)
    apprise_config: str | None = Field(default=None, description="an Apprise YAML/TEXT configuration file")
    routing: dict[str, list[str]] = Field(default_factory=dict)
    tiers: list[TierConfig] = Field(default_factory=_default_tiers, min_length=1)
    escalation: EscalationConfig = Field(default_factory=EscalationConfig)
    dedupe_window: float = Field(default=60.0, ge=0, description="seconds; 0: no de-duplication")
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    never_suppress: list[str] = Field(default_factory=lambda: ["liquidation", "emergency"])
    approaching: ApproachingConfig = Field(default_factory=ApproachingConfig)
    delivery_timeout: float = Field(default=10.0, gt=0, le=600, description="seconds per channel per attempt")
    retry: RetryConfig = Field(default_factory=RetryConfig)

    @field_validator("routing")
    @classmethod
    def _routing(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        _check_words(list(v), "routing")
        return {k: _check_names(tags, f"routing.{k} tag") for k, tags in v.items()}

    @field_validator("never_suppress")
    @classmethod
    def _never(cls, v: list[str]) -> list[str]:
        return _check_words(v, "never_suppress")

    @model_validator(mode="after")
    def _unique(self) -> AlertsConfig:
        seen: set[str] = set()
        for ch in self.channels:
            if ch.name in seen:
                raise ValueError(f"channel {ch.name} is listed twice")
            seen.add(ch.name)
        if self.retry.max < self.retry.base:
            raise ValueError(f"retry.max ({self.retry.max}) is below retry.base ({self.retry.base})")
        return self
