"""A guard process for the SIGKILL test: `start` liquidates the biggest account and is killed
by the venue's fault hook in the middle; `resume` restarts on the same journal and venue."""

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np

from engine.clock import SimClock
from engine.config import load_config
from engine.guard import Guard
from engine.operators import Operator, Role

T0 = 1_780_000_000.0


def build(d: Path) -> Guard:
    return Guard(
        load_config().config,
        clock=SimClock(start=T0, paused=True),
        journal_path=d / "journal.sqlite3",
        venue_state=d / "venue.sqlite3",
        scenario="calm",
        paused=True,
    )


async def start(d: Path, kill_at: int) -> None:
    g = build(d)
    a = int(np.argmax(g.book.acct_notional))
    sent = 0

    def hook(order) -> None:
        nonlocal sent
        sent += 1
        if sent == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    g.broker.on_send = hook
    acct = g.book.info[a].id
    await g.command("liquidate", Operator("rita", Role.RISK, "test"), account=acct, confirm=acct, mode="immediate")
    while g.protection.active:
        g.clock.advance(0.25)
        await asyncio.sleep(0.01)
    print("not killed", file=sys.stderr)
    sys.exit(3)


async def resume(d: Path) -> None:
    g = build(d)
    await g.protection.reconcile()
    while g.protection.active:  # resumed actions run as tasks
        g.clock.advance(0.25)
        await asyncio.sleep(0.01)
    a = int(np.argmax([len(g.journal.records(kind="order_intent", account=i.id)) for i in g.book.info]))
    acct = g.book.info[a].id
    cids = [o["client_order_id"] for o in g.broker.orders()]
    print(
        json.dumps(
            {
                "account": acct,
                "position_qty": g.book.pos_qty[g.book.account_positions(a)].tolist(),
                "client_ids": cids,
                "arrivals": {c: g.broker.arrivals(c) for c in cids},
                "unfinished": len(g.journal.unfinished_actions()),
                "ends": [r.get("complete") for r in g.journal.records(kind="action_end", account=acct)],
                "verify": g.journal.verify().ok,
            }
        )
    )


if __name__ == "__main__":
    d = Path(sys.argv[2])
    if sys.argv[1] == "start":
        asyncio.run(start(d, int(sys.argv[3])))
    else:
        asyncio.run(resume(d))
