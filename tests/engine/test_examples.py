"""The example configurations in examples/ are valid when merged into the bundled default,
and each one really selects the sources it documents."""

from pathlib import Path

import pytest
import tomlkit

from engine.config import ConfigError, bundled_config_path, parse_config

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.toml"))


def merged(example: Path) -> str:
    base = tomlkit.parse(bundled_config_path().read_text())
    for key, table in tomlkit.parse(example.read_text()).items():
        if key in base and isinstance(table, dict):
            base[key].update(table)
        else:
            base[key] = table
    return tomlkit.dumps(base)


def test_there_are_examples() -> None:
    assert {p.name for p in EXAMPLES} >= {"rest-service.toml", "binance-testnet.toml", "risk-center-nats.toml"}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_and_selects_sources(example: Path) -> None:
    config, _ = parse_config(merged(example), str(example))
    chosen = {name for name in type(config.sources).model_fields if getattr(config.sources, name) is not None}
    wanted = {name for name in tomlkit.parse(example.read_text()).get("sources", {})}
    assert chosen == wanted
    if config.broker.kind != "sim":  # an example that can send orders starts its accounts in shadow mode
        assert config.guard.protection_mode == "shadow" or config.guard.shadow_accounts


def test_a_typo_in_an_example_would_be_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    text = (EXAMPLES[0].parent / "rest-service.toml").read_text()
    assert "interval = 2.0" in text
    bad.write_text(text.replace("interval = 2.0", "intervall = 2.0"))
    with pytest.raises(ConfigError, match="intervall"):
        parse_config(merged(bad), str(bad))
