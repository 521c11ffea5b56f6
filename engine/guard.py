"""The guard: the one object that owns the loop, the clock and the wiring.

    feed -> price gate -> book -> thresholds -> data quality -> ladder -> protection -> broker
                                                      journal and events all along

The console and the headless runner both embed it (through GuardView). Evaluation is a
plain method (`evaluate(now)`) so tests drive it step by step with an injected clock; `run()`
is the loop that calls it at the feed's pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine import margin
from engine import thresholds as dyn
from engine.alerts.approach import approaching
from engine.analytics.margin_methods import InitialMargin, MarginMethod
from engine.book import AccountSync, Book
from engine.clock import Clock, SimClock, WallClock, iso
from engine.config import Config, ConfigWriter, state_dir
from engine.connectors.base import AccountSnapshot, Sources, build_broker, build_sources
from engine.events import EventHub, Subscription
from engine.journal import Journal
from engine.ladder import DataState, Ladder, TradingState
from engine.levels import LEVEL_NAMES, Level
from engine.model import Account, InputError
from engine.operators import Operator, Role
from engine.protection import Protection
from engine.quality import PriceGate, account_state
from engine.sdnotify import SystemdNotifier
from engine.sim.broker import SimBroker, SimBrokerParams
from engine.sim.demo import demo_accounts
from engine.sim.feed import SimulatedFeed
from engine.sim.market import MarketSimulator
from engine.view import AccountsSnapshot, CommandResult

log = logging.getLogger("capguard.guard")

HISTORY_POINTS = 720  # ratio samples kept in memory per account for charts
SYNC_LIST = 20  # items of each kind named in an accounts_synced record (the count says how many in all)


@dataclass(frozen=True)
class _SourceSync:
    """Where the guard stands with one account source: the snapshot last taken, the account
    ids it listed, and the ids still to apply from it (deferred)."""

    snapshot: AccountSnapshot
    ids: frozenset[str]
    pending: frozenset[str] = frozenset()
    refused: str | None = None
    applied: dict[str, Account] = field(default_factory=dict)  # the record last applied, per account


def _has_sources(config: Config) -> bool:
    """Does `[sources]` configure any live source (else the embedded simulator runs)?"""
    section = config.sources
    return any(getattr(section, name) is not None for name in type(section).model_fields)


class Guard:
    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        journal: Journal | None = None,
        journal_path: str | Path | None = None,
        scenario: str | None = None,
        speed: float = 1.0,
        paused: bool = False,
        venue_state: Path | None = None,
        broker_params: SimBrokerParams | None = None,
        config_writer: ConfigWriter | None = None,
        sources: Sources | None = None,
        accounts: list[Account] | None = None,
    ) -> None:
        self.config = config
        self.config_writer = config_writer  # threshold edits are written back through it
        self.clock = clock or SimClock(speed=speed, paused=paused)
        self.speed = speed
        self.start_time = self.clock.now()
        if journal is None:
            path = Path(journal_path or config.guard.journal or state_dir() / "journal.sqlite3")
            journal = Journal(path, self.clock)
        self.journal = journal
        instruments = list(config.instruments)
        # Live connectors when configured (Guard.connect starts them); else the simulator.
        self.sources = sources
        self._sources_started = False  # Guard.connect starts them first; else run() does
        self._threshold_publisher = self._make_threshold_publisher(sources, self.clock)
        self.live_feed = sources.price_feed if sources is not None and sources.prices else None
        self.simulator = MarketSimulator(instruments, config.simulator, scenario=scenario)
        self.feed = SimulatedFeed(self.simulator)
        self.feed.paused = paused
        book_accounts = accounts if accounts is not None else demo_accounts(config.simulator, instruments)
        self.book = Book(instruments, book_accounts, config.thresholds)
        if self.live_feed is None:
            self.book.set_marks(np.arange(len(instruments)), self.simulator.prices, self.start_time)
        self.book.revalue()
        self.hub = EventHub()
        self.ladder = Ladder(self.book.n_accounts, config.ladder)
        self.gate = PriceGate(len(instruments), config.data_quality)
        external = build_broker(config.broker, sources, instruments, self.clock) if sources is not None else None
        self.broker = external or SimBroker(self.book, self.clock, broker_params, state_path=venue_state)
        self._tasks: list[asyncio.Task[None]] = []
        self.systemd = SystemdNotifier()
        self.protection = Protection(self)
        # Account snapshots taken so far, per account source (later ones reach the book in evaluate).
        self._account_sync: dict[int, _SourceSync] = {
            k: _SourceSync(
                s.snapshot, frozenset(a.id for a in s.snapshot.accounts), applied={a.id: a for a in s.snapshot.accounts}
            )
            for k, s in enumerate(sources.accounts if sources is not None else ())
            if s.snapshot is not None
        }
        self._busy: set[str] = set()  # accounts with an action in flight at the last evaluation
        self._busy_seen: dict[str, float] = {}  # when each was last seen busy (or seen to finish)
        self._approaching = np.zeros(self.book.n_accounts, dtype=bool)
        self._slope = np.full(self.book.n_accounts, np.nan)
        self._slope_ratio, self._slope_time = self.book.ratio.copy(), self.start_time
        self.version = 0
        self.equity_peak = self.book.equity.copy()
        self.max_drawdown = np.zeros(self.book.n_accounts)  # worst drawdown from the peak since start
        self.history: list[deque[tuple[float, float]]] = [deque(maxlen=HISTORY_POINTS) for _ in self.book.info]
        self._last_sample = np.full(self.book.n_accounts, -np.inf)
        self._inst_vol = np.zeros(len(instruments))
        self._price_window: deque[np.ndarray] = deque(maxlen=240)
        self._last_thresholds = -np.inf
        # What [risk] enables, recomputed in refresh_thresholds; None while not enabled.
        self.mm_addons: dict[str, np.ndarray | None] = {"volatility": None, "impact": None}  # per account
        self.im_methods: InitialMargin | None = None  # initial margin by method ([risk.margin])
        self._stopping = asyncio.Event()
        self.refresh_thresholds(self.start_time)
        self.ladder.level[:] = np.maximum(self.book.level, 0)
        self.journal.append(
            "system",
            event="guard_start",
            accounts=self.book.n_accounts,
            positions=int(self.book.pos_qty.size),
            scenario=self.simulator.scenario.name,
            speed=speed,
            protection_mode=config.guard.protection_mode,
        )

    @classmethod
    def build(cls, config: Config, **kw: Any) -> Guard:
        """A guard on the configured live sources, not started yet: `run()` starts them, and the
        accounts join the book as their sources first answer (Guard.sync_accounts). For a
        caller without a running event loop yet (the console builds its guard before its app
        runs). Without `[sources]`, the embedded simulator, as `Guard(config)`."""
        if not _has_sources(config):
            return cls(config, **kw)
        clock = kw.pop("clock", None) or WallClock()
        sources = build_sources(config.sources, config.instruments, clock)
        accounts = [] if sources.accounts else None  # real accounts only, once they answer
        return cls(config, clock=clock, sources=sources, accounts=accounts, **kw)

    @classmethod
    async def connect(cls, config: Config, **kw: Any) -> Guard:
        """A guard on the configured live sources (started, first account snapshot taken),
        or on the embedded simulator when `[sources]` configures none."""
        if not _has_sources(config):
            return cls(config, **kw)
        clock = kw.pop("clock", None) or WallClock()
        sources = build_sources(config.sources, config.instruments, clock)
        await sources.start()
        for source in sources.accounts:
            await source.refresh()
        accounts = [a for s in sources.accounts if s.snapshot for a in s.snapshot.accounts]
        if not sources.accounts:  # live prices only: the demo accounts, valued at real marks
            g = cls(config, clock=clock, sources=sources, accounts=accounts or None, **kw)
        else:
            # Real accounts only, never demo ones: a source whose first poll failed starts empty
            # and its accounts join the book when it answers (Guard.sync_accounts).
            g = cls(config, clock=clock, sources=sources, accounts=accounts, **kw)
        g._sources_started = True
        return g

    # ------------------------------------------------------------------ the loop
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        if self.sources is not None and not self._sources_started:  # Guard.build: started here
            await self.sources.start()
            self._sources_started = True
        if self.sources is not None:
            if self.sources.publisher is not None:
                publisher_sub = self.hub.subscribe(maxsize=10_000)
                self._tasks.append(loop.create_task(self.sources.publisher.run(publisher_sub)))
                if self.sources.publisher.config.margin_interval > 0:
                    self._tasks.append(loop.create_task(self._publish_margin()))
            rc = self.sources.risk_center
            if rc is not None:
                rc.listeners.append(self._apply_risk_center)
                if rc.current is not None:  # pulled before the loop ran: apply it now (replays are skipped)
                    from engine.connectors.risk_center import diff

                    self._apply_risk_center(rc.current, diff(None, rc.current))
            if self.sources.binance is not None and self.sources.binance.accounts is not None:
                self._tasks.append(loop.create_task(self._resync_venue()))
        await self.protection.reconcile()
        interval = self.feed.tick_interval / self.speed
        self.systemd.send("READY=1")
        while not self._stopping.is_set():
            started = asyncio.get_running_loop().time()
            self.evaluate(self.clock.now())
            self.protection.maybe_act(self.clock.now())
            self.systemd.ping()  # a stalled loop stops the pings and systemd restarts the guard
            elapsed = asyncio.get_running_loop().time() - started
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=max(0.0, interval - elapsed))

    def reload(self, config: Config) -> list[str]:
        """Apply a new, already validated configuration (SIGHUP). Thresholds, ladder, data
        quality, protection, limits, breaker, roles and overrides take effect now; the book
        (instruments, simulator, sources, broker) needs a restart. Returns what was not applied."""
        needs_restart = [
            name
            for name in ("instruments", "simulator", "sources", "broker", "api", "guard")
            if getattr(config, name) != getattr(self.config, name)
        ]
        # What needs a restart keeps its running value, so `config` says what is in force.
        config = config.model_copy(update={name: getattr(self.config, name) for name in needs_restart})
        self.config = config
        self.ladder.config = config.ladder
        self.gate.config = config.data_quality
        self.protection.overrides = dict(config.overrides)
        self.refresh_thresholds(self.clock.now())
        self.journal.append("config", event="reload", needs_restart=needs_restart)
        return needs_restart

    def _apply_risk_center(self, payload: Any, changes: list[dict[str, Any]]) -> None:
        """Account threshold changes pulled from the risk center go through the journaled command
        path (operator "risk-center", role risk). A change already in force is skipped (a replay
        or a second delivery journals nothing); an override the risk center withdrew is removed,
        intent journaled first (`clear_thresholds`), so the account returns to the book's
        thresholds. Book-wide thresholds and limits replace `[thresholds]` and `[limits]` (see
        `_apply_book_risk`)."""
        operator = Operator("risk-center", Role.RISK, "risk_center")
        loop = asyncio.get_running_loop()
        for change in changes:
            account = change.get("account")
            if change.get("scope") in ("book", "limits") and change.get("after"):
                self._apply_book_risk(change, operator)
                continue
            if change.get("scope") != "account" or not account:
                continue
            after = change.get("after")
            in_force = self.protection.overrides.get(account)
            if after:
                if in_force is not None and in_force.model_dump() == dict(after):
                    continue
                task = loop.create_task(
                    self.command(
                        "set_thresholds", operator, account=account, reason=change.get("change_id", ""), **after
                    )
                )
                self._tasks.append(task)  # held until done (a bare task may be collected)
                task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)
            elif in_force is not None:
                self.journal.append(
                    "operator",
                    account,
                    command="clear_thresholds",
                    before=in_force.model_dump(),
                    reason=change.get("change_id", ""),
                    **operator.fields(),
                )
                if self.config_writer is not None:
                    try:
                        self.config_writer.update(lambda doc, a=account: doc.get("overrides", {}).pop(a, None))
                    except Exception:  # the override is lifted in memory even if the file cannot be written
                        log.exception("could not remove overrides.%s from the configuration file", account)
                self.protection.overrides.pop(account, None)
                self.refresh_thresholds(self.clock.now())

    async def _publish_margin(self) -> None:
        """Margin snapshots on `capguard.margin.<account>` (core NATS): every `margin_interval`,
        for each account whose ratio moved by `margin_ratio_step` of its last published value,
        or whose level, data state or trading state changed (all of them the first time).
        The comparison is vectorised; only the accounts that changed are encoded."""
        pub = self.sources.publisher if self.sources is not None else None
        assert pub is not None
        cfg = pub.config
        last = np.zeros((4, 0))  # ratio, level, data state, trading state last published, per account
        while not self._stopping.is_set():
            await self.clock.sleep(cfg.margin_interval)
            book, lad = self.book, self.ladder
            n = book.n_accounts  # accounts keep their index; new ones are appended
            if last.shape[1] < n:
                last = np.concatenate([last, np.full((4, n - last.shape[1]), np.nan)], axis=1)
            now = np.vstack([book.ratio, lad.level, lad.data_state, lad.trading_state]).astype(np.float64)
            with np.errstate(invalid="ignore"):
                moved = ~(np.abs(now[0] - last[0, :n]) <= cfg.margin_ratio_step * np.abs(last[0, :n]))
            moved &= ~((now[0] == last[0, :n]) | (np.isnan(now[0]) & np.isnan(last[0, :n])))
            due = np.flatnonzero(moved | np.any(now[1:] != last[1:, :n], axis=0))
            last[:, due] = now[:, due]
            ts = iso(self.clock.now())
            for a in due.tolist():
                r = float(book.ratio[a])
                pub.publish_margin(
                    book.info[a].id,
                    ts=ts,
                    equity=float(book.equity[a]),
                    maintenance_margin=float(book.acct_mm[a]),
                    margin_ratio=r if np.isfinite(r) else None,
                    level=LEVEL_NAMES[int(lad.level[a])],
                    data_state=DataState(int(lad.data_state[a])).name,
                    trading_state=TradingState(int(lad.trading_state[a])).name,
                )

    @staticmethod
    def _make_threshold_publisher(sources: Sources | None, clock: Clock) -> Any:
        """Where threshold changes made in capguard go: the risk center's publisher (NATS and its
        webhook) when there is one, else NATS alone when configured, else nowhere."""
        if sources is None:
            return None
        if sources.risk_center is not None and sources.risk_center.publisher is not None:
            return sources.risk_center.publisher
        if sources.publisher is not None:
            from engine.connectors.risk_center import ThresholdPublisher

            return ThresholdPublisher(None, sources.publisher, clock)
        return None

    def publish_threshold_change(
        self, account: str, before: dict[str, float], after: dict[str, float], operator: Operator, reason: str
    ) -> None:
        """A threshold change made in capguard (console, API) goes out on `capguard.thresholds`
        (JetStream, deduplicated by change id) and to the risk center's webhook, in the risk
        center's change format with `"source": "capguard"`. Changes that came from the risk
        center are not sent back. Never blocks or fails the command: a failure is logged."""
        pub = self._threshold_publisher
        if pub is None or operator.origin == "risk_center":
            return
        from engine.connectors.risk_center import change_id

        ts = iso(self.clock.now())
        record = {
            "source": "capguard",
            "change_id": change_id(account, before, after, operator.name, ts),
            "scope": "account",
            "account": account,
            "before": before,
            "after": after,
            "as_of": ts,
            "reason": reason,
            **operator.fields(),
        }
        task = asyncio.get_running_loop().create_task(pub.publish(record))
        self._tasks.append(task)  # held until done
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    def _apply_book_risk(self, change: dict[str, Any], operator: Operator) -> None:
        """The risk center's book-wide thresholds (scope "book") or limits (scope "limits"):
        journaled (`set_thresholds` / `set_limits`, before and after), in force at once, and
        written to the configuration file when there is one, so a restart without the risk
        center starts from them. A change already in force journals nothing."""
        section = "thresholds" if change["scope"] == "book" else "limits"
        current = getattr(self.config, section)
        try:
            new = type(current).model_validate(change["after"])
        except ValueError as exc:  # the risk center's payload is validated already: this is a mismatch
            log.error("risk center %s not applied: %s", section, exc)
            return
        if new == current:
            return
        self.journal.append(
            "operator",
            None,
            command=f"set_{section}",
            before=current.model_dump(),
            after=new.model_dump(),
            reason=change.get("change_id", ""),
            **operator.fields(),
        )
        self.config = self.config.model_copy(update={section: new})
        if self.config_writer is not None:

            def edit(doc: Any) -> None:
                table = doc.setdefault(section, {})
                for key, value in new.model_dump().items():
                    if value is None:
                        table.pop(key, None)
                    else:
                        table[key] = value

            try:
                self.config_writer.update(edit)
            except Exception:  # in force in memory even if the file cannot be written
                log.exception("could not write the risk center's [%s] to the configuration file", section)
        self.refresh_thresholds(self.clock.now())

    async def _resync_venue(self) -> None:
        """Compare capguard's figures with the venue's own, and notice what the venue did alone.

        Every `resync_interval` the venue is polled and compared with the book (maintenance
        margin, liquidation price, quantities). Every new account snapshot (a poll or the user
        stream) is also checked, before the book takes it, for positions the venue changed
        without a capguard order: once the book has taken it the two agree and the change would
        go unseen. Each divergence is raised once as a critical alert (event and journal) until
        a resync no longer finds it; a changed position once per venue quantity. A failing
        resync is raised the same way and never ends the loop."""
        from engine.connectors.binance import Divergence, find_divergences

        venue = self.sources.binance if self.sources is not None else None
        assert venue is not None
        source, cfg = venue.accounts, venue.config
        moved_kinds = ("position_changed", "venue_liquidation", "adl")
        raised: dict[tuple[str, str, str], float | None] = {}

        def busy() -> set[tuple[str, str]]:  # positions with capguard orders in flight are expected to move
            book = self.book
            return {
                (book.info[a].id, book.instruments[i].symbol)
                for a in self.protection.active
                for i in book.pos_instrument[book.account_positions(a)].tolist()
            }

        def report(found: list[Any], *, clear: bool) -> None:
            seen: set[tuple[str, str, str]] = set()
            for d in found:
                key = (d.account, d.symbol, d.kind)
                value = d.venue if d.kind in moved_kinds else None
                seen.add(key)
                if key in raised and raised[key] == value:
                    continue
                raised[key] = value
                a = self.book.account_index.get(d.account)
                self.protection.alert("system", "critical", a, d.message, divergence=d.to_dict())
            if clear:
                for key in [k for k in raised if k not in seen]:
                    del raised[key]

        def on_snapshot(snap: AccountSnapshot) -> None:
            found = find_divergences(
                self.book,
                snap.venue,
                accounts=[a.id for a in cfg.accounts],
                mm_tolerance=float("inf"),
                liq_tolerance=float("inf"),
                qty_tolerance=cfg.qty_tolerance,
                skip=busy(),
            )
            report([d for d in found if d.kind in moved_kinds], clear=False)

        source.listeners.append(on_snapshot)
        try:
            while not self._stopping.is_set():
                await self.clock.sleep(cfg.resync_interval)
                try:
                    found = await source.resync(self.book, skip=busy())
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the comparison must outlive any one failure
                    log.exception("venue resync failed")
                    found = [Divergence("*", "*", "resync_failed", None, None, None, f"resync failed: {exc}")]
                report(found, clear=True)
        finally:
            with contextlib.suppress(ValueError):
                source.listeners.remove(on_snapshot)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop the loop, let in-flight actions finish (or journal them as interrupted)."""
        self._stopping.set()
        await self.protection.drain(grace)
        for task in self._tasks:
            task.cancel()
        if self.sources is not None:
            await self.sources.stop()
        self.journal.append("system", event="guard_stop")

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, now: float) -> None:
        """One pass: take account snapshots and prices, re-value, classify, step the ladder, decide."""
        self._sync_sources(now)
        book = self.book
        if self.live_feed is not None:
            ids, prices, received = self.live_feed.poll(now, coalesce=True)
            self.ingest(ids, prices, received)
        else:
            ids, prices = self.feed.poll(now - self.start_time, coalesce=True)
            self.ingest(ids, prices, now)
        if now - self._last_thresholds >= 1.0:
            self.refresh_thresholds(now)
        self._update_data_state(now)
        self.equity_peak = np.maximum(self.equity_peak, book.equity)
        np.maximum(self.max_drawdown, dyn.drawdown(book.equity, self.equity_peak), out=self.max_drawdown)
        transitions = self.ladder.step(now, book.ratio, book.level, book.warning, book.critical, book.liquidation)
        for t in transitions:
            self.protection.on_transition(t, now)
        self.protection.check_limits(now)
        self._check_approaching(now)
        self._sample(now)
        self.version += 1

    # ------------------------------------------------------------------ account snapshots
    def _sync_sources(self, now: float) -> None:
        """Apply the account snapshots the live sources took since the last evaluation.

        A snapshot counts only while its source is OK; a refused poll never replaces a source's
        snapshot, so nothing of it is applied. Records not applied yet (see `sync_accounts`) are
        retried, alone, on later evaluations until applied or superseded by a newer snapshot.

        An account that had a protective action in flight takes a record only once its source
        has confirmed the data after the action was seen to end (`last_ok` later than that):
        a snapshot fetched while capguard's own fills were being booked would undo them.

        An account a source stops listing (and no other source lists) is kept with its last
        figures and journaled once (`account_missing`).
        """
        if self.sources is None:
            return
        busy = {self.book.info[a].id for a in self.protection.active}
        for acct in busy | self._busy:  # busy now, or seen to finish now
            self._busy_seen[acct] = now
        self._busy = busy
        for k, source in enumerate(self.sources.accounts):
            snap = source.snapshot
            state = self._account_sync.get(k)
            if snap is None or (state is not None and snap is state.snapshot and not state.pending):
                continue
            if source.data_state(now) != DataState.OK:
                continue
            ids = frozenset(a.id for a in snap.accounts)
            retry = state is not None and snap is state.snapshot
            if retry:
                assert state is not None
                records = [a for a in snap.accounts if a.id in state.pending]
                missing: list[str] = []
            else:
                # A record equal to the one last applied changes nothing (a poll of an idle
                # account): skipped, unless an action of ours ran since, when the venue's word,
                # even unchanged, must replace what our fills booked.
                last = state.applied if state is not None else {}
                records = [a for a in snap.accounts if a.id in self._busy_seen or last.get(a.id) != a]
                elsewhere = {
                    a.id
                    for j, other in enumerate(self.sources.accounts)
                    if j != k and other.snapshot is not None
                    for a in other.snapshot.accounts
                }
                missing = sorted((state.ids if state else frozenset()) - ids - elsewhere)
            confirmed = source.last_ok if source.last_ok is not None else -np.inf
            hold = {a.id for a in records if self._busy_seen.get(a.id, -np.inf) >= confirmed}
            try:
                pending = self.sync_accounts(
                    records,
                    now,
                    source=source.name,
                    missing=missing,
                    hold=hold,
                    reported=state.pending if state is not None else frozenset(),
                )
            except InputError as exc:
                # Refused whole by the book (nothing applied); said once per reason, not per poll.
                if state is None or state.refused != str(exc):
                    self.protection.alert(
                        "system",
                        "critical",
                        None,
                        f"{source.name}: account snapshot refused: {exc}",
                        source=source.name,
                    )
                # The accounts last applied stay the reference for `account_missing`.
                self._account_sync[k] = _SourceSync(
                    snap, state.ids if state else ids, refused=str(exc), applied=state.applied if state else {}
                )
                continue
            applied = dict(state.applied) if state is not None else {}
            for a in records:
                if a.id not in pending:
                    self._busy_seen.pop(a.id, None)
                    applied[a.id] = a
            self._account_sync[k] = _SourceSync(snap, ids, pending, applied=applied)

    def sync_accounts(
        self,
        accounts: Iterable[Account],
        now: float,
        *,
        source: str = "",
        missing: Sequence[str] = (),
        hold: Iterable[str] = (),
        reported: frozenset[str] = frozenset(),
    ) -> frozenset[str]:
        """Bring the book to later account records (an account source's new snapshot).

        - Records of accounts with a protective action in flight, or named in `hold`, are
          deferred: their fills are being booked, and a record fetched meanwhile would undo them.
        - Changes that keep the book's layout (balances, quantities, entries, isolated margins,
          open orders, closed positions, descriptive fields) are written in place and those
          accounts revalued (Book.update_accounts).
        - A new account, a position in a symbol the account held none of, or a changed margin
          mode needs a new book (Book.rebuilt; every account keeps its index): swapped in at once
          when no action is in flight anywhere (position indices change), else deferred.
        - `missing` accounts (no longer listed) keep their last figures; journaled here, once.

        Every sync that changed something is journaled (`accounts_synced`), and so is a deferral
        of ids not in `reported`. InputError (a record the book refuses) leaves everything as it
        was. Returns the ids deferred, to be passed again later.
        """
        accounts = self.book.check_records(accounts)
        held = {self.book.info[a].id for a in self.protection.active} | set(hold)
        deferred = {a.id for a in accounts if a.id in held}
        sync = self.book.update_accounts([a for a in accounts if a.id not in held], checked=True)
        rebuilt = False
        if sync.structural:
            if self.protection.active:
                deferred |= set(sync.structural)
            else:
                wanted = set(sync.structural)
                sync = _merge(sync, self._rebuild([a for a in accounts if a.id in wanted], now))
                rebuilt = True
        for acct in missing:
            self.journal.append("system", acct, event="account_missing", source=source, kept="last figures")
        if not sync.empty or deferred - reported:
            fields: dict[str, Any] = {}
            for name in ("added", "opened", "closed", "resized", "wallet", "orders", "other"):
                items = getattr(sync, name)
                if items:
                    fields[name] = [list(x) if isinstance(x, tuple) else x for x in items[:SYNC_LIST]]
                    if len(items) > SYNC_LIST:
                        fields[f"{name}_count"] = len(items)
            if deferred:
                fields["deferred"] = sorted(deferred)[:SYNC_LIST]
            self.journal.append("system", event="accounts_synced", source=source, rebuilt=rebuilt, **fields)
        return frozenset(deferred)

    def _rebuild(self, records: list[Account], now: float) -> AccountSync:
        """Swap in a new book with `records` merged (Book.rebuilt) and grow every per-account array."""
        old = self.book
        book, sync = old.rebuilt(records, self.config.thresholds)
        old_n, extra = old.n_accounts, book.n_accounts - old.n_accounts
        self.book = book
        if getattr(self.broker, "book", None) is old:  # the simulated venue prices orders on the book
            self.broker.book = book  # type: ignore[attr-defined]
        self.ladder.grow(book.n_accounts)
        self.protection.on_book_swapped(old_n)
        self.history.extend(deque(maxlen=HISTORY_POINTS) for _ in range(extra))
        self._approaching = np.concatenate([self._approaching, np.zeros(extra, dtype=bool)])
        self._slope = np.concatenate([self._slope, np.full(extra, np.nan)])
        self._slope_ratio = np.concatenate([self._slope_ratio, book.ratio[old_n:]])
        self.equity_peak = np.concatenate([self.equity_peak, book.equity[old_n:]])
        self.max_drawdown = np.concatenate([self.max_drawdown, np.zeros(book.n_accounts - old_n)])
        self._last_sample = np.concatenate([self._last_sample, np.full(extra, -np.inf)])
        self.refresh_thresholds(now)
        return sync

    def ingest(self, instruments: np.ndarray, prices: np.ndarray, received: float | np.ndarray) -> int:
        """Take mark prices from any source through the price gate into the book.

        `received` is the receive time of each price (or one for all). Returns how many were
        applied. A refused or unconfirmed price never reaches the book.
        """
        if not instruments.size:
            return 0
        book = self.book
        ok = self.gate.screen(instruments, prices, book.mark)
        ids, values = instruments[ok], prices[ok]
        times = np.broadcast_to(np.asarray(received, dtype=np.float64), instruments.shape)[ok]
        if not ids.size:
            return 0
        if ids.size * 10 < len(book.instruments):
            for i, p, t in zip(ids.tolist(), values.tolist(), times.tolist(), strict=True):
                book.apply_tick(i, p, t)  # re-values only what holds i
        else:
            book.set_marks(ids, values, times)
            book.revalue()
        self._price_window.append(book.mark.copy())
        return int(ids.size)

    def refresh_thresholds(self, now: float) -> None:
        """Effective thresholds for every account: base + dynamic factors, overrides first.

        Runs at start, once a second (evaluate) and on reload. It also recomputes what the
        [risk] section enables, nothing by default (then at no cost, the venue's figures):
        - maintenance add-ons ([risk.maintenance]): per account, each on its own (mm_addons),
          from the instruments' annualised volatility (risk_view.daily_volatility x sqrt(365))
          and the impact model at the current marks. Their sum is set on the book
          (Book.set_mm_addon), so the ratio, and with it the level and every protective action,
          is equity / (venue MM + add-ons): the venue MM is current on every tick, the add-ons
          are those of the last refresh (at most about a second old). Isolated accounts get none.
        - initial margin by method ([risk.margin] naming a method other than `position`):
          per account (im_methods), used for the snapshot's utilisation, GET /margin and the
          account detail, as of the last refresh.
        """
        book = self.book
        self._last_thresholds = now
        if len(self._price_window) >= 3:
            window = np.array(self._price_window)
            dt = self.feed.tick_interval
            self._inst_vol = np.nan_to_num(dyn.realised_volatility(window, dt))
        vol = dyn.account_volatility(
            book.pos_account, book.pos_instrument, book.notional, self._inst_vol, book.n_accounts
        )
        dd = dyn.drawdown(book.equity, self.equity_peak)
        overrides = self.protection.threshold_overrides()
        risk_class = np.array([i.risk_class for i in book.info], dtype=object)
        w, c, liq = dyn.effective_thresholds(
            self.config.thresholds, self.config.dynamic_thresholds, book.equity, risk_class, vol, dd, overrides
        )
        book.warning[:], book.critical[:], book.liquidation[:] = w, c, liq
        risk = self.config.risk
        addons = risk.maintenance
        if addons.volatility is not None or addons.impact:
            from engine.analytics.maintenance import impact_addon, volatility_addon
            from engine.analytics.revalue import account_sums
            from engine.risk_view import daily_volatility

            by_vol = by_impact = None
            if addons.volatility is not None:
                annual = daily_volatility(self) * np.sqrt(365.0)
                by_vol = volatility_addon(book.maintenance_margin, book.pos_instrument, annual, addons.volatility)
                by_vol = account_sums(book, by_vol)
            if addons.impact:
                by_impact = account_sums(book, impact_addon(book))
            self.mm_addons = {"volatility": by_vol, "impact": by_impact}
            book.set_mm_addon(sum(x for x in (by_vol, by_impact) if x is not None), finish=False)
        elif book._mm_addon_on:  # switched off by a reload
            self.mm_addons = {"volatility": None, "impact": None}
            book.set_mm_addon(None, finish=False)
        m = risk.margin
        if any(x != MarginMethod.POSITION for x in (m.default, *m.groups.values(), *m.accounts.values())):
            from engine.analytics.margin_methods import initial_margin
            from engine.risk_view import daily_volatility

            self.im_methods = initial_margin(book, m, daily_volatility(self))
        else:
            self.im_methods = None  # every position by its brackets: the venue's IM, not recomputed
        book._finish_accounts(slice(None))

    def _update_data_state(self, now: float) -> None:
        book = self.book
        inst = self.gate.instrument_state(now, book.mark, book.mark_time)
        state = account_state(inst, book.pos_instrument, book._seg_starts, book._nonempty, book.n_accounts)
        if self.sources is not None and self.sources.accounts:
            listed = np.zeros(book.n_accounts, dtype=bool)
            for source in self.sources.accounts:
                if source.snapshot is None:
                    continue
                ids = [book.account_index[a.id] for a in source.snapshot.accounts if a.id in book.account_index]
                listed[ids] = True
                # Positions and balances from a source that stopped answering are not trusted either.
                if source.data_state(now) != DataState.OK:
                    state[ids] = np.maximum(state[ids], DataState.STALE)
            # An account no source lists any more keeps its last figures, which nothing confirms.
            state[~listed] = np.maximum(state[~listed], DataState.STALE)
        changed = np.flatnonzero(state != self.ladder.data_state)
        self.ladder.data_state[:] = state
        for a in changed.tolist():
            self.protection.on_data_state(a, DataState(int(state[a])), inst, now)

    def _check_approaching(self, now: float) -> None:
        """An early warning: the ratio within a band of the next threshold, or heading there.

        Raised only when an account starts approaching, so the journal is not flooded.
        """
        book, cfg = self.book, self.config.alerts.approaching
        if now - self._slope_time >= 1.0:
            with np.errstate(invalid="ignore"):
                inst = (book.ratio - self._slope_ratio) / (now - self._slope_time)
            self._slope = np.where(np.isfinite(self._slope), 0.7 * self._slope + 0.3 * inst, inst)
            self._slope_ratio, self._slope_time = book.ratio.copy(), now
        ok = self.ladder.data_state == DataState.OK
        mask = ok & approaching(
            book.ratio,
            self.ladder.level,
            book.warning,
            book.critical,
            book.liquidation,
            self._slope,
            cfg.band,
            cfg.horizon_s,
        )
        for a in np.flatnonzero(mask & ~self._approaching).tolist():
            nxt = LEVEL_NAMES[min(int(self.ladder.level[a]) + 1, 3)]
            self.protection.alert(
                "approaching",
                "warning",
                a,
                f"{book.info[a].id} margin ratio {book.ratio[a]:.3f} approaching {nxt}",
                ratio=float(book.ratio[a]),
                next_level=nxt,
            )
        self._approaching = mask

    def _sample(self, now: float) -> None:
        book = self.book
        enhanced = self.ladder.level >= Level.WARNING
        interval = np.where(enhanced, self.config.guard.sample_interval_warning, self.config.guard.sample_interval)
        due = np.flatnonzero(now - self._last_sample >= interval)
        if not due.size:
            return
        self._last_sample[due] = now
        for a in due.tolist():
            self.history[a].append((now, float(book.ratio[a])))
        # Enhanced monitoring: the journal keeps the ratio history of accounts at WARNING or worse.
        journaled = due[enhanced[due]]
        if journaled.size:
            self.journal.append_many(
                [
                    {
                        "kind": "sample",
                        "account": book.info[a].id,
                        "ratio": float(book.ratio[a]),
                        "equity": float(book.equity[a]),
                        "maintenance_margin": float(book.acct_mm[a]),
                        "level": LEVEL_NAMES[self.ladder.level[a]],
                    }
                    for a in journaled.tolist()
                ]
            )

    # ------------------------------------------------------------------ GuardView
    def snapshot(self) -> AccountsSnapshot:
        book, ladder = self.book, self.ladder
        with np.errstate(divide="ignore", invalid="ignore"):
            positive = book.equity > 0
            im = book.acct_im if self.im_methods is None else self.im_methods.total
            utilization = np.where(positive, im / book.equity, np.nan)
            leverage = np.where(positive, book.acct_notional / book.equity, np.nan)
        liq = book.liquidation_prices()
        mark = book.mark[book.pos_instrument]
        dist = margin.liquidation_distance_pct(book.pos_qty, mark, liq)  # negative once past it
        dist[book.pos_qty == 0] = np.nan
        worst = np.full(book.n_accounts, np.nan)
        np.fmin.at(worst, book.pos_account, dist)
        updated = np.full(book.n_accounts, np.nan)
        np.fmax.at(updated, book.pos_account, book.mark_time[book.pos_instrument])
        columns = {
            "equity": book.equity.copy(),
            "maintenance_margin": book.acct_mm.copy(),
            "margin_ratio": book.ratio.copy(),
            "level": ladder.level.copy(),
            "ratio_level": book.level.copy(),
            "utilization": utilization,
            "leverage": leverage,
            "worst_liq_distance_pct": worst,
            "data_state": ladder.data_state.copy(),
            "trading_state": ladder.trading_state.astype(np.int8),
            "held_until": ladder.held_until.copy(),
            "updated_at": updated,
            "warning": book.warning.copy(),
            "critical": book.critical.copy(),
            "liquidation": book.liquidation.copy(),
        }
        info = book.info
        return AccountsSnapshot(
            version=self.version,
            time=self.clock.now(),
            ids=tuple(i.id for i in info),
            names=tuple(i.name for i in info),
            desks=tuple(i.desk for i in info),
            strategies=tuple(i.strategy for i in info),
            columns=columns,
            summary=self.status(),
        )

    def status(self) -> dict[str, Any]:
        lv = self.ladder.level
        p = self.protection
        return {
            "time": iso(self.clock.now()),
            "version": self.version,
            "accounts": self.book.n_accounts,
            "levels": {name: int((lv == n).sum()) for n, name in enumerate(LEVEL_NAMES)},
            "total_equity": float(self.book.equity.sum()),
            "total_maintenance_margin": float(self.book.acct_mm.sum()),
            "circuit_breaker": p.breaker_tripped,
            "kill_switch": p.kill_switch,
            "protection_mode": self.config.guard.protection_mode,
            "scenario": self.simulator.scenario.name,
            "feed_paused": self.feed.paused,
            "stale_accounts": int((self.ladder.data_state != DataState.OK).sum()),
            "halted": int((self.ladder.trading_state == TradingState.HALTED).sum()),
            "active_actions": len(p.active),
        }

    def subscribe(self, maxsize: int = 1000, kinds: set[str] | None = None) -> Subscription:
        return self.hub.subscribe(maxsize, kinds)

    def account_detail(self, account_id: str) -> dict[str, Any]:
        from engine.detail import account_detail

        return account_detail(self, account_id)

    def recent_actions(self, limit: int = 100) -> list[dict[str, Any]]:
        return self.journal.records(
            kind=["decision", "order", "outcome", "operator", "alert", "transition"], limit=limit, newest_first=True
        )

    async def command(self, name: str, operator: Operator, **params: Any) -> CommandResult:
        return await self.protection.command(name, operator, **params)

    # Risk analytics (GuardView): engine.risk_view does the work.
    def book_risk(self) -> dict[str, Any]:
        from engine import risk_view

        return risk_view.book_risk(self)

    def stress(self, scenario: dict[str, Any] | str, top: int = 20) -> dict[str, Any]:
        from engine import risk_view

        return risk_view.stress(self, scenario, top)

    def scenario_grid(
        self, account_id: str, price_moves: list[float] | None = None, vol_shocks: list[float] | None = None
    ) -> dict[str, Any]:
        from engine import risk_view

        return risk_view.scenario_grid(self, account_id, price_moves, vol_shocks)

    def what_if(
        self, account_id: str, symbol: str, side: str, qty: float, price: float | None = None
    ) -> dict[str, Any]:
        from engine import risk_view

        return risk_view.what_if(self, account_id, symbol, side, qty, price)

    def account_index(self, account_id: str) -> int:
        try:
            return self.book.account_index[account_id]
        except KeyError:
            raise KeyError(f"no account {account_id!r}") from None


def _merge(a: AccountSync, b: AccountSync) -> AccountSync:
    """Two syncs of one snapshot (in place, then rebuilt) as one."""
    return AccountSync(
        added=a.added + b.added,
        opened=a.opened + b.opened,
        closed=a.closed + b.closed,
        resized=a.resized + b.resized,
        wallet=a.wallet + b.wallet,
        orders=a.orders + b.orders,
        other=a.other + b.other,
        changed=a.changed,
    )
