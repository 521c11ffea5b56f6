"""The `[api]` section: where the REST/WebSocket API listens and who may use it.

Tokens come from the file (`token`) or, better, from the environment (`token_env` names the
variable). They are SecretStr: never printed by a repr, a log line or `GET /config`.
With no token configured the API is loopback-only and read-only (every change answers 401).
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


class ApiToken(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="who this token is: recorded as the operator in the journal")
    role: Literal["viewer", "trader", "risk"]
    token: SecretStr | None = Field(default=None, description="the token itself (prefer token_env)")
    token_env: str | None = Field(default=None, min_length=1, description="environment variable holding the token")

    @model_validator(mode="after")
    def _one_source(self) -> ApiToken:
        if (self.token is None) == (self.token_env is None):
            raise ValueError(f"token {self.name!r}: give exactly one of token or token_env")
        if self.token is not None and len(self.token.get_secret_value()) < 16:
            raise ValueError(f"token {self.name!r}: a token must be at least 16 characters")
        return self

    def secret(self) -> str:
        """The token value; raises ValueError naming the variable when the environment lacks it."""
        if self.token is not None:
            return self.token.get_secret_value()
        value = os.environ.get(self.token_env or "", "")
        if not value:
            raise ValueError(f"api.tokens ({self.name}): environment variable {self.token_env} is not set")
        if len(value) < 16:
            raise ValueError(f"api.tokens ({self.name}): the token in {self.token_env} is shorter than 16 characters")
        return value


class ApiConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(default="127.0.0.1", min_length=1, description="bind address")
    port: int = Field(default=8700, ge=0, le=65535, description="TCP port (0: any free port)")
    tokens: list[ApiToken] = Field(default_factory=list)
    allowed_hosts: list[str] = Field(
        default_factory=lambda: list(LOOPBACK_NAMES),
        description="accepted Host header names (port ignored); '*' accepts any",
    )
    allowed_origins: list[str] = Field(
        default_factory=lambda: list(LOOPBACK_NAMES),
        description="accepted WebSocket Origin: a host name (any scheme and port) or a full origin; '*' any",
    )
    ws_queue: int = Field(default=64, ge=2, le=10_000, description="messages queued per WebSocket client")
    publish_hz: float = Field(default=4.0, gt=0, le=30, description="WebSocket publishes per second")
    ratio_step: float = Field(
        default=0.001,
        ge=0,
        le=0.1,
        description="risk-status: a ratio move smaller than this fraction of the ratio last published for an "
        "account does not republish it (level, threshold and state changes always do); 0: every change",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> ApiConfig:
        names = [t.name for t in self.tokens]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"tokens: duplicate name(s) {', '.join(dup)}")
        return self
