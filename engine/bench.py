"""Benchmark of the book's hot paths: `python -m engine.bench`.

Prints figures, it is not a test. For books of 10k, 100k and 1M positions over 50k accounts
(positions grouped by account, 100 instruments with 5-10-tier bracket tables):

- ns per position of a full vectorised `Book.revalue()` (median of several runs, marks moved
  between runs so brackets really are re-walked);
- ns per position of a straightforward per-position Python loop computing the same outputs
  (checked against the vectorised result to 1e-9 first); above LOOP_MAX_POSITIONS the loop
  runs on a prefix of the accounts and is extrapolated per position (the output says so);
- ns per position of the first read of the initial-margin figures after a revalue (position
  IM and the account notional and IM sums are computed on first read, not by revalue);
- ns per position of `Book.liquidation_prices()`;
- median and p99 latency of `Book.apply_tick` on the instrument that holds 1,000 positions in
  the 1M book (random-walk prices with jumps that cross brackets).

The last line printed is one JSON object with the headline figures.
"""

from __future__ import annotations

import json
import math
import sys
import time
from bisect import bisect_right
from typing import Any

import numpy as np

from engine.book import Book
from engine.levels import Thresholds, classify_one
from engine.model import Bracket, Instrument

N_ACCOUNTS = 50_000
N_INSTRUMENTS = 100
SIZES = (10_000, 100_000, 1_000_000)
TICK_INSTRUMENT_POSITIONS = 1_000
LOOP_MAX_POSITIONS = 1_000_000  # the Python loop runs on at most this many positions (a prefix of accounts)
SEED = 20240601


# ---------------------------------------------------------------------------- data
def make_instruments(rng: np.random.Generator) -> list[Instrument]:
    """Exchange-like tables: first cap 5k-50k, caps growing 2-5x a tier, mmr rising to <= 0.5."""
    out = []
    for i in range(N_INSTRUMENTS):
        tiers = int(rng.integers(5, 11))
        floor = 0.0
        cap = float(rng.choice([5_000.0, 10_000.0, 25_000.0, 50_000.0]))
        mmr = float(rng.choice([0.004, 0.005, 0.0065, 0.01, 0.02]))
        brackets = []
        for _ in range(tiers):
            brackets.append(Bracket(floor=floor, mmr=mmr, max_leverage=float(max(1, math.floor(0.5 / mmr)))))
            floor = cap
            cap = cap * float(rng.choice([2.0, 2.5, 4.0, 5.0]))
            mmr = min(0.5, round(mmr * float(rng.uniform(1.4, 2.5)), 5))
            if brackets[-1].mmr >= 0.5:
                break
        out.append(Instrument(symbol=f"I{i:03d}USDT", brackets=brackets))
    return out


def make_book(n_positions: int, instruments: list[Instrument], rng: np.random.Generator) -> tuple[Book, np.ndarray]:
    """A book of `n_positions` over N_ACCOUNTS accounts; instrument 0 holds ~1,000 positions.

    Returns the book (not yet priced) and the reference marks.
    """
    n_inst = len(instruments)
    price = np.exp(rng.uniform(math.log(0.05), math.log(60_000.0), n_inst))
    pos_account = np.sort(rng.integers(0, N_ACCOUNTS, n_positions))
    counts = np.bincount(pos_account, minlength=N_ACCOUNTS)
    assert counts.max() < n_inst - 1
    start = np.cumsum(counts) - counts
    rank = np.arange(n_positions) - start[pos_account]
    # Distinct instruments within an account: 1 + (offset + rank * step) mod 99, step a unit mod 99.
    units = np.array([k for k in range(1, n_inst - 1) if math.gcd(k, n_inst - 1) == 1])
    offset = rng.integers(0, n_inst - 1, N_ACCOUNTS)
    step = rng.choice(units, N_ACCOUNTS)
    pos_instrument = 1 + (offset[pos_account] + rank * step[pos_account]) % (n_inst - 1)
    # Instrument 0: the first position of TICK_INSTRUMENT_POSITIONS distinct accounts.
    holders = np.flatnonzero(counts > 0)
    k0 = min(TICK_INSTRUMENT_POSITIONS, n_positions // n_inst, holders.size)
    pos_instrument[start[rng.choice(holders, k0, replace=False)]] = 0

    notional = np.exp(rng.uniform(math.log(50.0), math.log(3e6), n_positions))
    side = np.where(rng.random(n_positions) < 0.55, 1.0, -1.0)
    p = price[pos_instrument]
    qty = side * notional / p
    entry = p * np.exp(rng.normal(0.0, 0.04, n_positions))
    isolated = rng.random(N_ACCOUNTS) < 0.1
    lev = np.exp(rng.uniform(math.log(1.5), math.log(25.0), n_positions))
    iso_margin = np.where(isolated[pos_account], notional / lev, np.nan)
    acct_notional = np.bincount(pos_account, weights=notional, minlength=N_ACCOUNTS)
    acct_iso = np.bincount(pos_account, weights=np.nan_to_num(iso_margin), minlength=N_ACCOUNTS)
    wallet = np.where(isolated, acct_iso * 1.2, acct_notional / np.exp(rng.uniform(0.0, math.log(20.0), N_ACCOUNTS)))
    wallet = wallet + 100.0
    book = Book.from_arrays(
        instruments,
        [f"acct-{a:05d}" for a in range(N_ACCOUNTS)],
        wallet,
        isolated,
        pos_account,
        pos_instrument,
        qty,
        entry,
        iso_margin,
    )
    return book, price


# ---------------------------------------------------------------------------- the Python loop
class LoopInputs:
    """Plain Python lists of the book's inputs, as a loop-based implementation would hold them."""

    def __init__(self, book: Book, n_positions: int) -> None:
        n_acct = int(book.pos_account[n_positions - 1]) + 1 if n_positions else 0
        self.n_positions, self.n_accounts = n_positions, n_acct
        sl = slice(0, n_positions)
        self.account = book.pos_account[sl].tolist()
        self.instrument = book.pos_instrument[sl].tolist()
        self.qty = book.pos_qty[sl].tolist()
        self.entry = book.pos_entry[sl].tolist()
        self.iso_margin = book.pos_isolated_margin[sl].tolist()
        self.wallet = book.wallet[:n_acct].tolist()
        self.isolated = book.isolated[:n_acct].tolist()
        self.contract_size = [i.contract_size for i in book.instruments]
        self.floors = [[b.floor for b in i.brackets] for i in book.instruments]
        self.mmr = [[b.mmr for b in i.brackets] for i in book.instruments]
        self.cum = [[b.maintenance_amount or 0.0 for b in i.brackets] for i in book.instruments]
        self.im_rate = [
            [math.nan if b.max_leverage is None else 1.0 / b.max_leverage for b in i.brackets] for i in book.instruments
        ]
        self.thresholds = Thresholds()


def loop_revalue(inp: LoopInputs, mark: list[float]) -> dict[str, list]:
    """Per-position Python loop: notional, PnL, bracket, MM, IM; per-account sums, equity, ratio, level."""
    n_acct = inp.n_accounts
    upnl_sum = [0.0] * n_acct
    mm_sum = [0.0] * n_acct
    im_sum = [0.0] * n_acct
    notional_sum = [0.0] * n_acct
    iso_ratio = [math.inf] * n_acct
    bracket_out = [0] * inp.n_positions
    mm_out = [0.0] * inp.n_positions
    for k in range(inp.n_positions):
        i = inp.instrument[k]
        a = inp.account[k]
        m = mark[i]
        units = inp.qty[k] * inp.contract_size[i]
        notional = abs(units) * m
        upnl = units * (m - inp.entry[k])
        b = bisect_right(inp.floors[i], notional) - 1
        mm = notional * inp.mmr[i][b] - inp.cum[i][b]
        im = notional * inp.im_rate[i][b]
        upnl_sum[a] += upnl
        mm_sum[a] += mm
        im_sum[a] += im
        notional_sum[a] += notional
        bracket_out[k] = b
        mm_out[k] = mm
        if inp.isolated[a]:
            r = (inp.iso_margin[k] + upnl) / mm if mm > 0 else math.inf
            if r < iso_ratio[a]:
                iso_ratio[a] = r
    equity = [0.0] * n_acct
    ratio = [0.0] * n_acct
    level = [0] * n_acct
    t = inp.thresholds
    for a in range(n_acct):
        equity[a] = inp.wallet[a] + upnl_sum[a]
        if inp.isolated[a]:
            ratio[a] = iso_ratio[a]
        else:
            ratio[a] = equity[a] / mm_sum[a] if mm_sum[a] > 0 else math.inf
        level[a] = int(classify_one(ratio[a], t))
    return {
        "bracket": bracket_out,
        "mm": mm_out,
        "equity": equity,
        "acct_mm": mm_sum,
        "ratio": ratio,
        "level": level,
        "im": im_sum,
        "notional": notional_sum,
    }


def check_agreement(book: Book, inp: LoopInputs, out: dict[str, list]) -> None:
    """The loop and the vectorised book agree to 1e-9 (relative to the magnitudes summed)."""
    n, na = inp.n_positions, inp.n_accounts
    local_bracket = book.pos_bracket[:n] - book.table.start[book.pos_instrument[:n]]
    if not np.array_equal(local_bracket, np.asarray(out["bracket"])):
        raise AssertionError("loop and book disagree on brackets")

    def close(name: str, got: np.ndarray, want: np.ndarray, scale: np.ndarray) -> None:
        both_inf = np.isinf(got) & np.isinf(want) & (np.sign(got) == np.sign(want))
        with np.errstate(invalid="ignore"):
            ok = both_inf | (np.abs(got - want) <= 1e-9 * np.maximum(np.abs(want), scale))
        if not ok.all():
            k = int(np.flatnonzero(~ok)[0])
            raise AssertionError(f"loop and book disagree on {name}[{k}]: {got[k]!r} vs {want[k]!r}")

    close("position mm", book.maintenance_margin[:n], np.asarray(out["mm"]), np.zeros(n))
    scale = np.abs(book.wallet[:na]) + np.bincount(
        book.pos_account[:n], weights=np.abs(book.unrealized_pnl[:n]), minlength=na
    )
    close("equity", book.equity[:na], np.asarray(out["equity"]), scale)
    close("account mm", book.acct_mm[:na], np.asarray(out["acct_mm"]), np.zeros(na))
    ratio_scale = np.where(book.acct_mm[:na] > 0, scale / np.where(book.acct_mm[:na] > 0, book.acct_mm[:na], 1), 0)
    close("ratio", book.ratio[:na], np.asarray(out["ratio"]), ratio_scale)
    near = np.zeros(na, dtype=bool)
    for thr in (2.0, 1.5, 1.2):
        near |= np.abs(book.ratio[:na] - thr) <= 1e-9 * np.maximum(1.0, ratio_scale)
    if not np.array_equal(book.level[:na][~near], np.asarray(out["level"])[~near]):
        raise AssertionError("loop and book disagree on levels")


# ---------------------------------------------------------------------------- timing
def median_ns(fn, runs: int, before=None) -> float:
    times = []
    for _ in range(runs):
        if before is not None:
            before()
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return float(np.median(times))


def say(line: str) -> None:
    print(line, flush=True)


def bench_ladder(say: Any) -> float:
    """Median milliseconds of one ladder pass (classification, hysteresis, dwell) over 50k
    accounts whose ratios drift, with a few hundred transitions per pass."""
    from engine.ladder import Ladder, LadderConfig
    from engine.levels import classify

    n = 50_000
    rng = np.random.default_rng(5)
    ladder = Ladder(n, LadderConfig(hysteresis=0.05, dwell=10.0))
    warning, critical, liquidation = np.full(n, 2.0), np.full(n, 1.5), np.full(n, 1.2)
    ratio = rng.uniform(1.0, 6.0, n)
    times, moved = [], 0
    for k in range(200):
        ratio *= rng.normal(1.0, 0.01, n)
        level = classify(ratio, warning, critical, liquidation)
        t0 = time.perf_counter()
        moved += len(ladder.step(float(k), ratio, level, warning, critical, liquidation))
        times.append(time.perf_counter() - t0)
    ms = float(np.median(times) * 1e3)
    say(f"ladder pass over {n:,} accounts: median {ms:.3f} ms, p99 {np.percentile(times, 99) * 1e3:.3f} ms "
        f"({moved / 200:.0f} transitions per pass)")  # fmt: skip
    return ms


def main() -> int:
    t_start = time.perf_counter()
    rng = np.random.default_rng(SEED)
    instruments = make_instruments(rng)
    tiers = [len(i.brackets) for i in instruments]
    say(
        f"capguard engine benchmark: {N_INSTRUMENTS} instruments ({min(tiers)}-{max(tiers)} tiers, "
        f"mean {np.mean(tiers):.1f}), {N_ACCOUNTS:,} accounts, numpy {np.__version__}, python {sys.version.split()[0]}"
    )
    say(
        f"{'positions':>10} {'build s':>8} {'revalue ns/pos':>15} {'loop ns/pos':>12} {'loop on':>9} "
        f"{'speed-up':>9} {'liq ns/pos':>11} {'IM-on-read ns/pos':>18}"
    )
    results = {}
    big_book: Book | None = None
    big_price: np.ndarray | None = None
    for n in SIZES:
        t0 = time.perf_counter()
        book, price = make_book(n, instruments, rng)
        build_s = time.perf_counter() - t0
        all_inst = np.arange(len(instruments))
        book.set_marks(all_inst, price, 0.0)
        book.revalue()

        def jiggle(book=book, price=price, all_inst=all_inst) -> None:
            book.set_marks(all_inst, price * np.exp(rng.normal(0.0, 0.01, price.size)), 0.0)

        revalue_ns = median_ns(book.revalue, 15, before=jiggle)
        lazy_ns = median_ns(lambda book=book: book.acct_im, 7, before=book.revalue)

        # The Python loop, checked first, at the marks the book now holds.
        n_loop = min(n, LOOP_MAX_POSITIONS)
        if n_loop < n:  # whole accounts only
            last_acct = book.pos_account[n_loop - 1]
            n_loop = int(book.acct_pos_start[last_acct])
        inp = LoopInputs(book, n_loop)
        marks = book.mark.tolist()
        check_agreement(book, inp, loop_revalue(inp, marks))
        loop_ns = median_ns(lambda inp=inp, marks=marks: loop_revalue(inp, marks), 3)
        loop_per = loop_ns / n_loop
        liq_ns = median_ns(book.liquidation_prices, 7)
        per = revalue_ns / n
        results[n] = {
            "revalue_ns_per_position": per,
            "loop_ns_per_position": loop_per,
            "loop_positions": n_loop,
            "speedup": loop_per / per,
            "liq_ns_per_position": liq_ns / n,
            "im_on_read_ns_per_position": lazy_ns / n,
            "build_s": build_s,
        }
        note = "all" if n_loop == n else f"{n_loop:,}*"
        say(
            f"{n:>10,} {build_s:>8.2f} {per:>15.2f} {loop_per:>12.1f} {note:>9} {loop_per / per:>8.1f}x "
            f"{liq_ns / n:>11.2f} {lazy_ns / n:>18.2f}"
        )
        if n == SIZES[-1]:
            big_book, big_price = book, price
        else:
            del book
    n_big = SIZES[-1]
    if results[n_big]["loop_positions"] < n_big:
        say(
            f"* at {n_big:,} positions the Python loop ran on the first {results[n_big]['loop_positions']:,} "
            "positions (whole accounts); its figure is per position, extrapolated to the full book"
        )

    # ------------------------------------------------------------ ticks on a 1,000-position instrument
    assert big_book is not None and big_price is not None
    book = big_book
    inst = 0
    pos = book.inst_positions[book.inst_pos_start[inst] : book.inst_pos_start[inst + 1]]
    n_ticks = 20_000
    p = float(big_price[inst])
    book.set_marks(np.arange(len(instruments)), big_price, 0.0)
    book.revalue()
    steps = rng.normal(0.0, 0.002, n_ticks)
    jumps = np.zeros(n_ticks)
    jumps[::200] = rng.choice([-1.0, 1.0], n_ticks // 200 + (n_ticks % 200 > 0)) * 0.25
    walk = p * np.exp(np.cumsum(steps) + jumps)
    lat = np.empty(n_ticks, dtype=np.int64)
    moved = np.zeros(n_ticks, dtype=bool)
    before = book.pos_bracket[pos].copy()
    for k in range(n_ticks):
        price_k = float(walk[k])
        t0 = time.perf_counter_ns()
        book.apply_tick(inst, price_k, 1.0)
        lat[k] = time.perf_counter_ns() - t0
        after = book.pos_bracket[pos]
        if not np.array_equal(after, before):
            moved[k] = True
            before = after.copy()
    crossed = int(moved.sum())
    p50 = float(np.percentile(lat, 50)) / 1e3
    p99 = float(np.percentile(lat, 99)) / 1e3
    split = {
        name: (float(np.percentile(lat[m], 50)) / 1e3, float(np.percentile(lat[m], 99)) / 1e3)
        for name, m in (("crossing", moved), ("not crossing", ~moved))
        if m.any()
    }
    # What one small numpy call costs on this machine (the tick makes about 40 of them).
    a, b = np.ones(1_000), np.empty(1_000)
    call_ns = median_ns(lambda: np.multiply(a, 2.0, out=b), 2_001)
    # The incremental state still equals a full recompute.
    eq, mm = book.equity.copy(), book.acct_mm.copy()
    book.revalue()
    drift = float(np.max(np.abs(eq - book.equity) / np.maximum(np.abs(book.equity), 1.0)))
    drift = max(drift, float(np.max(np.abs(mm - book.acct_mm) / np.maximum(book.acct_mm, 1.0))))
    say(
        f"apply_tick on {book.instruments[inst].symbol} ({pos.size:,} positions, "
        f"{book.inst_accounts[inst].size:,} accounts) in the {n_big:,}-position book: {n_ticks:,} ticks, "
        f"{crossed:,} moved some position across a bracket; p50 {p50:.1f} us, p99 {p99:.1f} us, "
        f"max {lat.max() / 1e3:.1f} us; max relative drift vs full revalue {drift:.1e}"
    )
    say(
        "  p50 / p99 by tick: "
        + "; ".join(f"{name} {a:.1f} / {b:.1f} us" for name, (a, b) in split.items())
        + f"; one 1,000-element numpy multiply here: {call_ns / 1e3:.2f} us"
    )

    ladder_ms = bench_ladder(say)
    from engine.analytics.bench import run as bench_analytics

    analytics = bench_analytics()
    total = time.perf_counter() - t_start
    big = results[n_big]
    targets = [
        ("revalue <= 15 ns/position", big["revalue_ns_per_position"] <= 15),
        ("loop speed-up >= 30x", big["speedup"] >= 30),
        ("liquidation <= 60 ns/position", big["liq_ns_per_position"] <= 60),
        ("tick p99 <= 200 us", p99 <= 200),
        ("ladder pass over 50k accounts <= 5 ms", ladder_ms <= 5),
        ("total < 150 s", total < 150),
    ]
    say("targets: " + "; ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in targets))
    summary = {
        "ns_per_position": round(big["revalue_ns_per_position"], 3),
        "loop_ns_per_position": round(big["loop_ns_per_position"], 1),
        "loop_positions": big["loop_positions"],
        "speedup": round(big["speedup"], 1),
        "liq_ns_per_position": round(big["liq_ns_per_position"], 3),
        "tick_p50_us": round(p50, 2),
        "tick_p99_us": round(p99, 2),
        "tick_positions": int(pos.size),
        "tick_bracket_crossings": crossed,
        "tick_p50_p99_us_by_crossing": {k: [round(a, 2), round(b, 2)] for k, (a, b) in split.items()},
        "numpy_call_us": round(call_ns / 1e3, 3),
        "im_on_read_ns_per_position": round(big["im_on_read_ns_per_position"], 3),
        "by_size": {str(k): {kk: round(vv, 3) for kk, vv in v.items()} for k, v in results.items()},
        "ladder_ms_50k": round(ladder_ms, 3),
        **analytics,
        "total_s": round(total, 1),
    }
    say(f"total runtime {total:.1f} s")
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
