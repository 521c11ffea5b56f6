"""The shared pieces: backoff, tick buffer and freshness, configuration models, the factory."""

from __future__ import annotations

import random

import numpy as np
import pytest
from pydantic import ValidationError

from engine.connectors import (
    Backoff,
    BackoffConfig,
    BrokerConfig,
    ConnectorError,
    MergedPriceSource,
    PriceSource,
    PriceSourceBase,
    SourcesConfig,
    build_broker,
    build_sources,
)
from engine.connectors.base import Refused, TickBuffer, secret_from_env
from engine.connectors.ticks import decode, parse_ticks
from tests.engine.connectors.support import T0


def test_backoff_grows_exponentially_is_capped_and_jittered():
    b = Backoff(BackoffConfig(initial=0.1, maximum=1.0, factor=2.0, jitter=0.5), random.Random(1))
    waits = [b.next() for _ in range(8)]
    bases = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    for w, base in zip(waits, bases, strict=True):
        assert base * 0.5 <= w <= base
    assert len({round(w, 6) for w in waits[4:]}) > 1  # jitter spreads the capped waits
    b.reset()
    assert b.next() <= 0.1


def test_backoff_without_jitter_is_deterministic():
    b = Backoff(BackoffConfig(initial=0.5, maximum=4, factor=3, jitter=0))
    assert [b.next() for _ in range(4)] == [0.5, 1.5, 4.0, 4.0]


def test_backoff_config_refuses_maximum_below_initial():
    with pytest.raises(ValidationError, match="maximum"):
        BackoffConfig(initial=5, maximum=1)


def test_tick_buffer_drains_in_arrival_order_or_coalesced():
    buf = TickBuffer(3)
    buf.add([(0, 10.0), (2, 30.0)], T0)
    buf.add([(0, 11.0)], T0 + 1)
    ids, prices, times = buf.drain()
    assert ids.tolist() == [0, 2, 0] and prices.tolist() == [10.0, 30.0, 11.0]
    assert times.tolist() == [T0, T0, T0 + 1]
    assert buf.drain()[0].size == 0  # drained
    buf.add([(2, 31.0), (0, 12.0), (2, 32.0)], T0 + 2)
    ids, prices, times = buf.drain(coalesce=True)
    assert ids.tolist() == [0, 2] and prices.tolist() == [12.0, 32.0]
    assert buf.last_received.tolist()[1] != buf.last_received.tolist()[1]  # NaN: never received


def test_tick_buffer_never_grows_without_bound():
    buf = TickBuffer(2, max_pending=10)
    for k in range(25):
        buf.add([(k % 2, float(k))], T0 + k)
    assert buf.compactions >= 1 and len(buf.drain()[0]) <= 11
    buf.add([(0, 1.0)], T0)
    ids, prices, _ = buf.drain(coalesce=True)
    assert ids.tolist() == [0] and prices.tolist() == [1.0]


def test_freshness_is_per_instrument(sim_clock):
    src = PriceSourceBase("t", ["A", "B", "C"], sim_clock)
    src.accept([(0, 1.0), (1, 2.0)])
    sim_clock.advance(4.0)
    src.accept([(0, 1.1)])
    now = sim_clock.now()
    assert src.stale(now, 5.0).tolist() == [False, False, True]  # C never arrived
    assert src.stale(now + 2.0, 5.0).tolist() == [False, True, True]  # B went silent
    assert isinstance(src, PriceSource)


def test_merged_source_orders_by_receive_time_and_coalesces(sim_clock):
    a = PriceSourceBase("a", ["X", "Y"], sim_clock)
    b = PriceSourceBase("b", ["X", "Y"], sim_clock)
    a.accept([(0, 1.0)])
    sim_clock.advance(1)
    b.accept([(0, 2.0), (1, 5.0)])
    merged = MergedPriceSource([a, b], 2)
    ids, prices, times = merged.poll(sim_clock.now(), coalesce=True)
    assert ids.tolist() == [0, 1] and prices.tolist() == [2.0, 5.0]
    assert times.tolist() == [T0 + 1, T0 + 1]
    assert merged.last_received.tolist() == [T0 + 1, T0 + 1]


def test_tick_format_single_batch_and_refusals():
    index = {"BTCUSDT": 0, "ETHUSDT": 1}
    ok = {"symbol": "BTCUSDT", "mark": 64000.5, "ts": "2026-11-25T15:47:32.120Z"}
    assert parse_ticks(ok, index) == ([(0, 64000.5)], 0)
    batch = {"ticks": [ok, {"symbol": "ETHUSDT", "mark": "3400.1", "ts": "2026-11-25T15:47:32Z"}]}
    assert parse_ticks(batch, index) == ([(0, 64000.5), (1, 3400.1)], 0)
    assert parse_ticks({**ok, "symbol": "XRPUSDT"}, index) == ([], 1)  # unknown symbol: ignored
    bad = [
        ({**ok, "mark": -1}, "positive"),
        ({**ok, "mark": float("nan")}, "positive"),
        ({**ok, "mark": True}, "not a number"),
        ({**ok, "ts": "yesterday"}, "ISO-8601"),
        ({**ok, "ts": "2026-11-25T15:47:32"}, "time zone"),
        ({**ok, "extra": 1}, "unknown key"),
        ({"symbol": "BTCUSDT", "mark": 1.0}, "missing ts"),
        ({"ticks": [ok, {**ok, "mark": 0}]}, r"ticks\[1\]"),
        ({"ticks": []}, "non-empty"),
        ([ok], "not a JSON object"),
    ]
    for msg, reason in bad:
        with pytest.raises(Refused, match=reason):
            parse_ticks(msg, index)
    with pytest.raises(Refused, match="not valid JSON"):
        decode("{nope")


def test_config_models_refuse_unknown_keys_and_keep_secrets_out():
    with pytest.raises(ValidationError, match="extra"):
        SourcesConfig.model_validate({"websocket": {"url": "ws://127.0.0.1:1/x", "colour": "red"}})
    with pytest.raises(ValidationError, match="ws://"):
        SourcesConfig.model_validate({"websocket": {"url": "http://127.0.0.1:1/x"}})
    # an API key is never a config key: only the name of the variable that holds it
    with pytest.raises(ValidationError, match="extra"):
        SourcesConfig.model_validate({"binance": {"accounts": [{"id": "b1", "api_key": "abc"}]}})
    with pytest.raises(ValidationError, match="order service"):
        BrokerConfig.model_validate({"kind": "rest"})
    cfg = SourcesConfig.model_validate({"binance": {"accounts": [{"id": "b1"}]}})
    assert cfg.binance.rest_url == "https://demo-fapi.binance.com"  # testnet by default
    assert cfg.binance.ws_url == "wss://fstream.binancefuture.com/market"
    with pytest.raises(ConnectorError, match="MY_KEY") as exc:
        secret_from_env("MY_KEY", {})
    assert "environment variable MY_KEY" in str(exc.value)


def test_factory_builds_the_configured_sources(insts, wall):
    empty = build_sources(None, insts, wall)
    assert empty.prices == [] and empty.accounts == [] and empty.publisher is None
    assert build_broker(None, empty, insts, wall) is None  # the simulator stays
    env = {"K": "key", "S": "secret"}
    srcs = build_sources(
        {
            "websocket": {"url": "ws://127.0.0.1:9/ticks", "symbols": ["BTCUSDT"]},
            "rest_accounts": {"url": "http://127.0.0.1:9/accounts"},
            "binance": {"accounts": [{"id": "b1", "api_key_env": "K", "api_secret_env": "S"}], "symbols": ["ETHUSDT"]},
            "risk_center": {"url": "http://127.0.0.1:9/risk"},
        },
        insts,
        wall,
        env=env,
    )
    assert [p.name for p in srcs.prices] == ["websocket", "binance_mark"]
    assert [a.name for a in srcs.accounts] == ["rest_accounts", "binance_accounts"]
    assert srcs.risk_center is not None
    assert build_broker({"kind": "binance"}, srcs, insts, wall) is srcs.binance.broker
    rest = build_broker({"kind": "rest", "rest": {"url": "http://127.0.0.1:9"}}, srcs, insts, wall)
    assert type(rest).__name__ == "RestBroker"
    with pytest.raises(ConnectorError, match="BINANCE_API_KEY"):
        build_sources({"binance": {"accounts": [{"id": "b1"}]}}, insts, wall, env={})
    with pytest.raises(ConnectorError, match=r"sources\.binance"):
        build_broker({"kind": "binance"}, empty, insts, wall)
    assert np.all(srcs.price_feed.stale(0.0, 5.0))
