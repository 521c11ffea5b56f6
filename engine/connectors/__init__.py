"""Connectors: real price, account, risk-center and order sources in the shapes the guard uses.

See docs/connectors.md for the wire formats and the configuration. The simulator
(engine/sim) remains the default; nothing here runs unless a `[sources]` or `[broker]` table
asks for it.
"""

from engine.connectors.base import (
    AccountSnapshot,
    AccountSource,
    AccountSourceBase,
    Backoff,
    BackoffConfig,
    BinanceAccountConfig,
    BinanceConfig,
    BrokerConfig,
    ConnectorError,
    MergedPriceSource,
    NatsConfig,
    OrderServiceConfig,
    PriceSource,
    PriceSourceBase,
    Refused,
    RestAccountsConfig,
    RiskCenterConfig,
    Sources,
    SourcesConfig,
    VenuePosition,
    WebSocketPricesConfig,
    build_broker,
    build_sources,
)

__all__ = [
    "AccountSnapshot",
    "AccountSource",
    "AccountSourceBase",
    "Backoff",
    "BackoffConfig",
    "BinanceAccountConfig",
    "BinanceConfig",
    "BrokerConfig",
    "ConnectorError",
    "MergedPriceSource",
    "NatsConfig",
    "OrderServiceConfig",
    "PriceSource",
    "PriceSourceBase",
    "Refused",
    "RestAccountsConfig",
    "RiskCenterConfig",
    "Sources",
    "SourcesConfig",
    "VenuePosition",
    "WebSocketPricesConfig",
    "build_broker",
    "build_sources",
]
