"""Who is calling: bearer tokens with roles, compared in constant time; Host and Origin checks.

Every configured token is hashed once at start. A presented token is hashed and compared with
`hmac.compare_digest` against every configured digest (no early exit), so timing says nothing
about which token, or which prefix, matched. Tokens are never logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from engine.api.config import ApiConfig
from engine.operators import Operator, Role

NO_TOKEN = (
    "no API token configured: changes through the API are disabled; add a token to [api] tokens "
    "(name, role, token_env) and send it as 'Authorization: Bearer <token>'"
)


class StartupRefused(RuntimeError):
    """The API cannot start as configured (the message says why and what to change)."""


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role

    def operator(self, client: str | None) -> Operator:
        return Operator(self.name, self.role, f"api:{client or 'unknown'}")


def is_loopback(host: str) -> bool:
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, config: ApiConfig, tokens: TokenTable) -> None:
    if not tokens.configured and not is_loopback(host):
        raise StartupRefused(
            f"refusing to serve the API on {host}: no API token is configured, so it may only bind to "
            "loopback (127.0.0.1, ::1, localhost); add [api] tokens or bind to 127.0.0.1"
        )


class TokenTable:
    def __init__(self, config: ApiConfig) -> None:
        self._entries: list[tuple[bytes, Principal]] = []
        for entry in config.tokens:
            digest = hashlib.sha256(entry.secret().encode("utf-8")).digest()
            self._entries.append((digest, Principal(entry.name, Role[entry.role.upper()])))
        digests = [d for d, _ in self._entries]
        if len(set(digests)) != len(digests):
            raise StartupRefused("api.tokens: two entries share the same token")

    @property
    def configured(self) -> bool:
        return bool(self._entries)

    def lookup(self, presented: str | None) -> Principal | None:
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode("utf-8")).digest()
        found: Principal | None = None
        for known, principal in self._entries:  # always every entry: constant time over the table
            if hmac.compare_digest(known, digest):
                found = principal
        return found


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def host_name(host_header: str) -> str:
    """The name part of a Host header ('[::1]:8700' -> '::1', 'localhost:8700' -> 'localhost')."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1 : h.find("]")] if "]" in h else h
    if h.count(":") == 1:
        return h.split(":", 1)[0]
    return h


def host_allowed(host_header: str | None, config: ApiConfig) -> bool:
    if "*" in config.allowed_hosts:
        return True
    if not host_header:
        return False
    name = host_name(host_header)
    return name in {h.strip("[]").lower() for h in config.allowed_hosts}


def origin_allowed(origin: str | None, config: ApiConfig) -> bool:
    """A missing Origin (a non-browser client) is allowed; a browser's must be listed."""
    if origin is None or "*" in config.allowed_origins:
        return True
    origin = origin.strip().lower()
    if origin == "null":
        return False
    parts = urlsplit(origin)
    name = (parts.hostname or "").lower()
    for allowed in config.allowed_origins:
        a = allowed.strip().lower()
        if "://" in a:
            if a.rstrip("/") == origin.rstrip("/"):
                return True
        elif a.strip("[]") == name:
            return True
    return False
