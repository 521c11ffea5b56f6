"""Typed scenario shocks: what a trader types becomes the engine's fractions, and a typing
mistake is refused whole, naming the token."""

import pytest

from capguard_tui.scenario_text import ad_hoc_scenario, parse_shocks, shocks_text


def test_percent_and_fraction_forms_and_every_separator():
    assert parse_shocks("BTCUSDT -15%, majors=-0.1; *: +5%") == {"BTCUSDT": -0.15, "majors": -0.1, "*": 0.05}
    assert parse_shocks("  ") == {}
    assert shocks_text({"BTCUSDT": -0.15, "*": 0.5}) == "BTCUSDT -15%, * +50%"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("BTCUSDT -1x%", "'-1x%'"),
        ("BTCUSDT", "'BTCUSDT' has no shock"),
        ("-15%", "'-15%' is not KEY SHOCK"),
        ("BTC USDT -15%", "'BTC USDT -15%'"),
        ("BTCUSDT -15%, BTCUSDT -10%", "'BTCUSDT' is given twice"),
    ],
)
def test_a_bad_token_is_named(text, named):
    with pytest.raises(ValueError, match="price moves") as info:
        ad_hoc_scenario(text, "")
    assert named in str(info.value)


def test_nothing_typed_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        ad_hoc_scenario("", " ")
    assert ad_hoc_scenario("", "* +50%") == {"name": "ad-hoc", "moves": {}, "vol_shocks": {"*": 0.5}}
