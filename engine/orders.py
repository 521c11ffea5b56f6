"""The broker interface: the one way an order leaves capguard.

Every protective order is reduce-only and carries a client order id derived from the
action id (`<action_id>-<n>`), so a retry of the same step never doubles an order. An order
whose outcome is unknown (timeout, lost connection) is looked up by that id before
anything is resent. Implementations: the simulator (engine/sim/broker.py) and, later,
venue adapters; all follow this shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"  # at a limit price, rests until filled or cancelled
    IOC = "ioc"  # immediate-or-cancel at a limit price
    STOP = "stop"  # market once the mark crosses the stop price


class OrderStatus(StrEnum):
    FILLED = "filled"
    PARTIAL = "partial"  # some filled, the rest cancelled (IOC) or still resting
    OPEN = "open"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"  # no answer: look it up before resending


@dataclass(frozen=True)
class OrderRequest:
    """An order to send. `qty` is positive contracts; `side` is +1 buy or -1 sell."""

    client_order_id: str
    account: str
    symbol: str
    side: int
    qty: float
    order_type: OrderType = OrderType.MARKET
    price: float | None = None
    reduce_only: bool = True

    def __post_init__(self) -> None:
        if self.side not in (1, -1):
            raise ValueError(f"order {self.client_order_id}: side must be +1 or -1, got {self.side}")
        if not self.qty > 0:
            raise ValueError(f"order {self.client_order_id}: qty must be positive, got {self.qty}")


@dataclass
class OrderResult:
    client_order_id: str
    status: OrderStatus
    filled_qty: float = 0.0
    avg_price: float | None = None
    fee: float = 0.0  # quote currency, positive = paid
    reason: str = ""
    venue_order_id: str | None = None
    fills: list[tuple[float, float]] = field(default_factory=list)  # (qty, price) pairs


class BrokerTimeout(Exception):
    """The send got no answer: its outcome is unknown."""


class Broker(Protocol):
    async def send(self, order: OrderRequest) -> OrderResult:
        """Send one order. Raises BrokerTimeout when the outcome is unknown."""
        ...

    async def lookup(self, client_order_id: str) -> OrderResult | None:
        """The venue's record of an order by client id; None if it never arrived."""
        ...

    async def cancel_orders(self, account: str, exposure_increasing_only: bool = True) -> list[str]:
        """Cancel an account's open orders (by default only those that increase exposure).

        Returns the ids of the cancelled orders.
        """
        ...
