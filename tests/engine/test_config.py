"""Configuration: lookup order, validation that names the key, and the writer that keeps comments."""

from pathlib import Path

import pytest
import tomlkit

from engine.config import (
    ConfigError,
    ConfigWriter,
    bundled_config_path,
    find_config,
    load_config,
    parse_config,
    user_config_path,
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("CAPGUARD_CONFIG", raising=False)


def test_the_bundled_default_is_valid_and_documents_every_seed_threshold():
    loaded = load_config()
    assert loaded.source == "bundled default"
    t = loaded.config.thresholds
    assert (t.warning, t.critical, t.liquidation) == (2.0, 1.5, 1.2)
    assert len(loaded.config.instruments) >= 8
    text = bundled_config_path().read_text()
    # every key in the seed sections carries a comment on its line
    for line in text.split("[thresholds]")[1].split("[console]")[0].splitlines():
        if "=" in line:
            assert "#" in line, line


def test_lookup_order_explicit_then_env_then_xdg_then_bundled(tmp_path, monkeypatch):
    assert find_config()[1] == "bundled default"
    user = user_config_path()
    user.parent.mkdir(parents=True)
    user.write_text(bundled_config_path().read_text())
    assert find_config() == (user, "user config")
    env = tmp_path / "env.toml"
    monkeypatch.setenv("CAPGUARD_CONFIG", str(env))
    assert find_config() == (env, "$CAPGUARD_CONFIG")
    assert find_config("/x/y.toml") == (Path("/x/y.toml"), "--config")


def test_an_unknown_key_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match=r"thresholds\.warnig: unknown key"):
        parse_config("[thresholds]\nwarnig = 2.0\n")


def test_misordered_thresholds_are_refused_naming_the_values():
    with pytest.raises(ConfigError, match="liquidation < critical < warning"):
        parse_config("[thresholds]\nwarning = 1.4\ncritical = 1.5\nliquidation = 1.2\n")


def test_a_bad_bracket_table_names_the_instrument():
    text = """
[[instruments]]
symbol = "XUSDT"
brackets = [{ floor = 0, cap = 100, mmr = 0.01 }, { floor = 50, mmr = 0.02 }]
"""
    with pytest.raises(ConfigError, match=r"instruments\[0\] \(XUSDT\).*overlaps"):
        parse_config(text)


def test_invalid_toml_is_a_config_error():
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config("[thresholds\n")


def test_writer_keeps_comments_and_writes_atomically(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(bundled_config_path().read_text())
    loaded = load_config(path)
    new = ConfigWriter(loaded).set_value("thresholds.warning", 2.5)
    assert new.thresholds.warning == 2.5
    text = path.read_text()
    assert "# at or below: WARNING (alert, enhanced monitoring)" in text
    assert tomlkit.parse(text)["thresholds"]["warning"] == 2.5
    assert [p.name for p in tmp_path.iterdir()] == ["c.toml"]  # no temp file left behind


def test_writer_refuses_an_invalid_edit_and_leaves_the_file_alone(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(bundled_config_path().read_text())
    before = path.read_text()
    writer = ConfigWriter(load_config(path))
    with pytest.raises(ConfigError, match="liquidation < critical < warning"):
        writer.set_value("thresholds.critical", 3.0)
    assert path.read_text() == before


def test_editing_the_bundled_default_writes_the_user_copy_instead():
    loaded = load_config()
    before = bundled_config_path().read_text()
    ConfigWriter(loaded).set_value("console.refresh_hz", 2.0)
    assert bundled_config_path().read_text() == before
    user = user_config_path()
    assert "# screen refreshes per second" in user.read_text()
    assert load_config().config.console.refresh_hz == 2.0
    assert find_config()[1] == "user config"
