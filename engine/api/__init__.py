"""The guard's REST and WebSocket API (docs/api.md).

Light on import: `engine.api.config` (the `[api]` model, which engine/config.py uses) pulls in
neither FastAPI nor uvicorn; the rest loads on first use of a name below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.api.config import ApiConfig, ApiToken

if TYPE_CHECKING:
    from engine.api.app import create_app
    from engine.api.security import StartupRefused
    from engine.api.server import ApiServer, parse_bind, serve

__all__ = ["ApiConfig", "ApiServer", "ApiToken", "StartupRefused", "create_app", "parse_bind", "serve"]

_LAZY = {
    "create_app": "engine.api.app",
    "StartupRefused": "engine.api.security",
    "ApiServer": "engine.api.server",
    "parse_bind": "engine.api.server",
    "serve": "engine.api.server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.api' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
