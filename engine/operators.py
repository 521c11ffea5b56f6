"""Who may do what. Every operator command, from a console key or the API, is checked here
and journaled with the operator's identity, role and origin.

Roles: viewer (reads only); trader (may tighten thresholds and request a deleverage);
risk (every override: liquidate, loosen thresholds, hold, reset, kill switch, breaker).
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from enum import IntEnum


class Role(IntEnum):
    VIEWER = 0
    TRADER = 1
    RISK = 2


class PermissionDenied(Exception):
    """The operator's role does not allow the command; the message says which role does."""


class CommandError(ValueError):
    """A command was refused whole (bad argument, wrong state); nothing was applied."""


# The least role allowed to run each command.
REQUIRED_ROLE: dict[str, Role] = {
    "deleverage": Role.TRADER,
    "dry_run": Role.VIEWER,
    "tighten_thresholds": Role.TRADER,
    "loosen_thresholds": Role.RISK,
    "liquidate": Role.RISK,
    "hold": Role.RISK,
    "resume": Role.RISK,
    "reset": Role.RISK,
    "schedule_deleverage": Role.TRADER,
    "schedule_liquidate": Role.RISK,
    "cancel_schedule": Role.TRADER,
    "kill_switch": Role.RISK,
    "release_breaker": Role.RISK,
    "acknowledge": Role.TRADER,
}


@dataclass(frozen=True)
class Operator:
    name: str
    role: Role
    origin: str = "console"

    def fields(self) -> dict[str, str]:
        return {"operator": self.name, "role": self.role.name.lower(), "origin": self.origin}


def check(operator: Operator, command: str) -> None:
    need = REQUIRED_ROLE[command]
    if operator.role < need:
        raise PermissionDenied(
            f"{command.replace('_', ' ')} needs the {need.name.lower()} role; "
            f"{operator.name} is {operator.role.name.lower()}"
        )


def allowed(role: Role, command: str) -> bool:
    return role >= REQUIRED_ROLE[command]


def local_operator(roles: dict[str, str], default: str = "viewer", origin: str = "console") -> Operator:
    """The OS user at this terminal, mapped to a role by the config's [roles] table."""
    try:
        user = getpass.getuser()
    except Exception:  # no user database (containers): still journal something honest
        user = "unknown"
    return Operator(user, Role[roles.get(user, default).upper()], origin)
