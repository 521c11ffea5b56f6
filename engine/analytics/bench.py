"""Benchmark of the risk analytics: `python -m engine.analytics.bench`.

Prints figures, it is not a test. Each figure is the median of several runs:

- hvar_10k_s: historical VaR and ES (250 daily returns) for 10k accounts on 50 instruments,
  from the book (exposure matrix included), target <= 1 s;
- mcvar_ms: Monte Carlo VaR with 10k correlated normal paths for one account holding all 50
  instruments (factorisation, draws, quantile), target <= 200 ms;
- span_50k_ms: the 16-scenario risk arrays and scanning risk for 50k accounts (about 250k
  positions on 50 instruments), target <= 500 ms.

The last line printed is one JSON object with those keys.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from engine.analytics.inputs import account_exposures, correlation_from_groups, covariance
from engine.analytics.span import scan_ranges, scenario_margin
from engine.analytics.var import historical_var, monte_carlo_var
from engine.book import Book
from engine.model import Bracket, Instrument

N_INSTRUMENTS = 50
DAYS = 250
SEED = 20240601
RUNS = 7


def make_instruments() -> list[Instrument]:
    """50 instruments in 10 groups of 5, each with a 4-tier bracket table."""
    tiers = [
        Bracket(floor=0, mmr=0.01, max_leverage=50),
        Bracket(floor=50_000, mmr=0.025, max_leverage=20),
        Bracket(floor=250_000, mmr=0.05, max_leverage=10),
        Bracket(floor=1_000_000, mmr=0.1, max_leverage=5),
    ]
    return [Instrument(symbol=f"I{i:02d}USDT", group=f"g{i // 5}", brackets=tiers) for i in range(N_INSTRUMENTS)]


def make_book(n_accounts: int, per_account: int, rng: np.random.Generator) -> Book:
    """A priced, valued book: `per_account` distinct instruments per account on average (1 to 2x)."""
    instruments = make_instruments()
    counts = rng.integers(1, 2 * per_account, n_accounts)
    pos_account = np.repeat(np.arange(n_accounts), counts)
    start = np.cumsum(counts) - counts
    rank = np.arange(pos_account.size) - start[pos_account]
    offset = rng.integers(0, N_INSTRUMENTS, n_accounts)
    pos_instrument = (offset[pos_account] + rank) % N_INSTRUMENTS  # distinct within an account
    price = np.exp(rng.uniform(math.log(0.1), math.log(50_000.0), N_INSTRUMENTS))
    qty = (
        rng.choice([-1.0, 1.0], pos_account.size) * rng.uniform(1_000, 50_000, pos_account.size) / price[pos_instrument]
    )
    book = Book.from_arrays(
        instruments,
        [f"acct-{a}" for a in range(n_accounts)],
        rng.uniform(10_000, 200_000, n_accounts),
        np.zeros(n_accounts, dtype=bool),
        pos_account,
        pos_instrument,
        qty,
        price[pos_instrument] * rng.uniform(0.97, 1.03, pos_account.size),
    )
    book.set_marks(np.arange(N_INSTRUMENTS), price, received=0.0)
    book.revalue()
    return book


def median_seconds(fn: Callable[[], object], runs: int = RUNS) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run() -> dict[str, float]:
    """Measure and print the analytics figures; returns the keys for the engine benchmark's JSON."""
    rng = np.random.default_rng(SEED)
    instruments = make_instruments()
    vol = rng.uniform(0.02, 0.06, N_INSTRUMENTS)
    cov = covariance(vol, correlation_from_groups(instruments))
    returns = rng.multivariate_normal(np.zeros(N_INSTRUMENTS), cov, DAYS)

    book_10k = make_book(10_000, 5, rng)
    hvar_s = median_seconds(lambda: historical_var(account_exposures(book_10k), returns, 0.99))
    print(f"historical VaR, {DAYS} days, 10k accounts x {N_INSTRUMENTS} instruments "
          f"({book_10k.pos_qty.size} positions): {hvar_s * 1e3:8.1f} ms")  # fmt: skip

    one = rng.uniform(-100_000, 100_000, (1, N_INSTRUMENTS))
    mc_s = median_seconds(lambda: monte_carlo_var(one, cov, 0.99, paths=10_000, seed=1))
    print(f"Monte Carlo VaR, 10k paths, one account on {N_INSTRUMENTS} instruments: {mc_s * 1e3:8.1f} ms")

    book_50k = make_book(50_000, 5, rng)
    ranges = scan_ranges(book_50k.mark, vol, 0.99, 1.0)
    span_s = median_seconds(lambda: scenario_margin(book_50k, ranges))
    print(f"16-scenario risk arrays, 50k accounts ({book_50k.pos_qty.size} positions): {span_s * 1e3:8.1f} ms")

    return {
        "hvar_10k_s": round(hvar_s, 4),
        "mcvar_ms": round(mc_s * 1e3, 2),
        "span_50k_ms": round(span_s * 1e3, 2),
    }


def main() -> int:
    print(json.dumps(run()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
