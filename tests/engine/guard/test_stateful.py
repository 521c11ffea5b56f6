"""A hypothesis state machine drives a real guard with price shocks, silences and bad prints:
no protective order ever increases exposure, every transition is journaled, and no order is
ever sent for an account whose prices are not OK."""

import asyncio
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from engine.ladder import DataState
from tests.engine.guard.support import make_guard


class GuardMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.TemporaryDirectory()
        self.g = make_guard(Path(self.tmp.name), "calm")
        self.g.feed.paused = True  # prices come only from the rules below
        self.sub = self.g.subscribe(maxsize=1_000_000, kinds={"transition"})
        self.transitions = 0
        self.violations: list[str] = []
        self.g.broker.on_send = self.check_order
        append = self.g.journal.append

        def journal_append(kind, account=None, action_id=None, **fields):
            if kind == "order_intent":  # the moment the guard decides to send
                a = self.g.book.account_index[account]
                state = DataState(int(self.g.ladder.data_state[a]))
                if state != DataState.OK:
                    self.violations.append(f"{fields['client_order_id']} decided on {state.name} data")
            return append(kind, account, action_id, **fields)

        self.g.journal.append = journal_append

    def check_order(self, order) -> None:
        g = self.g
        a = g.book.account_index[order.account]
        p = g.book.find_positions(np.array([a]), np.array([g.book.symbol_index[order.symbol]]))[0]
        held = float(g.book.pos_qty[p]) if p >= 0 else 0.0
        if not order.reduce_only:
            self.violations.append(f"{order.client_order_id} not reduce-only")
        if held == 0 or np.sign(held) == order.side or order.qty > abs(held) * (1 + 1e-9):
            self.violations.append(
                f"{order.client_order_id} would increase exposure: {order.side}x{order.qty} on {held}"
            )

    def step(self, seconds: float) -> None:
        g = self.g

        async def run() -> None:
            for _ in range(max(1, round(seconds / 0.25))):
                g.clock.advance(0.25)
                g.evaluate(g.clock.now())
                g.protection.maybe_act(g.clock.now())
                for _ in range(20):  # deterministic: let actions run, no wall-clock waits
                    await asyncio.sleep(0)

        self.loop.run_until_complete(run())
        self.transitions += len(self.sub.drain())

    @rule(group=st.sampled_from(["majors", "l1", "defi", "meme"]), move=st.floats(-0.2, 0.1), wait=st.floats(0.25, 3))
    def shock(self, group: str, move: float, wait: float) -> None:
        g = self.g
        ids = np.array([i for i, inst in enumerate(g.book.instruments) if inst.group == group])
        others = np.array([i for i, inst in enumerate(g.book.instruments) if inst.group != group])
        g.ingest(ids, g.book.mark[ids] * (1 + move), g.clock.now())
        g.ingest(others, g.book.mark[others], g.clock.now())
        self.step(wait)

    @rule(seconds=st.floats(1, 12))
    def silence(self, seconds: float) -> None:
        self.step(seconds)  # no prices at all: STALE after max_age

    @rule(instrument=st.integers(0, 9), factor=st.sampled_from([0.01, 0.3, 5.0]))
    def bad_print(self, instrument: int, factor: float) -> None:
        g = self.g
        g.ingest(np.array([instrument]), np.array([g.book.mark[instrument] * factor]), g.clock.now())
        self.step(0.25)

    @invariant()
    def no_order_increases_exposure_or_uses_bad_prices(self) -> None:
        assert not self.violations, self.violations

    @invariant()
    def every_transition_is_journaled(self) -> None:
        assert len(self.g.journal.records(kind="transition")) == self.transitions

    def teardown(self) -> None:
        async def finish() -> None:
            for t in list(self.g.protection.active.values()):
                t.cancel()
            await asyncio.sleep(0)

        self.loop.run_until_complete(finish())
        self.g.journal.close()
        self.loop.close()
        self.tmp.cleanup()


GuardMachine.TestCase.settings = settings(max_examples=12, stateful_step_count=15, deadline=None)
test_guard_state_machine = GuardMachine.TestCase
