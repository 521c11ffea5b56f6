"""The [alerts] configuration: the shipped section, and refusals that name the key."""

import sqlite3

import pytest
import tomlkit
from pydantic import ValidationError

from engine.alerts.config import AlertsConfig
from engine.alerts.outbox import Outbox
from engine.config import bundled_config_path, describe_validation_error


def shipped_section() -> tuple[dict, str]:
    text = bundled_config_path().read_text(encoding="utf-8")
    doc = tomlkit.parse(text)
    return doc["alerts"].unwrap(), text.split("\n[alerts]\n")[1].split("\n[console]\n")[0]


def test_the_shipped_section_is_valid_documented_and_sends_nowhere():
    data, text = shipped_section()
    cfg = AlertsConfig.model_validate(data)
    assert cfg.channels == [] and cfg.apprise_config is None
    assert [t.name for t in cfg.tiers] == ["desk", "risk officer", "management", "external"]
    assert cfg == AlertsConfig()  # the file documents the defaults
    for line in text.splitlines():
        if "=" in line:
            assert "#" in line, line
        if line.lstrip().startswith("#"):
            continue
        assert "://" not in line, line  # no live endpoint


def test_unknown_keys_bad_tags_and_unknown_words_are_refused():
    with pytest.raises(ValidationError, match="escalaton"):
        AlertsConfig.model_validate({"escalaton": {}})
    with pytest.raises(ValidationError, match="lowercase letters"):
        AlertsConfig.model_validate({"channels": [{"name": "desk", "url": "json://h/x", "tags": ["2:desk"]}]})
    with pytest.raises(ValidationError, match="neither a category"):
        AlertsConfig.model_validate({"routing": {"margin_call": ["desk"]}})
    with pytest.raises(ValidationError, match="listed twice"):
        AlertsConfig.model_validate(
            {"channels": [{"name": "a", "url": "json://h/x"}, {"name": "a", "url": "json://h/y"}]}
        )


def test_a_refused_url_is_named_but_never_echoed():
    data = {"channels": [{"name": "a", "url": "hunter2-not-a-url"}]}
    with pytest.raises(ValidationError) as exc:
        AlertsConfig.model_validate(data)
    msg = describe_validation_error(exc.value, data)  # what capguard shows (ConfigError)
    assert msg == "channels[0].url: not an Apprise URL (expected scheme://...)"


def test_the_outbox_is_wal_and_enqueueing_twice_is_harmless(tmp_path):
    box = Outbox(tmp_path / "outbox.sqlite3")
    ev = {"alert_id": "al1", "category": "critical", "severity": "critical", "message": "m"}
    assert box.add_alert(ev, 1.0, mode="timed", escalate_at=61.0)
    assert not box.add_alert(ev, 2.0, mode="timed")
    for _ in range(2):
        box.enqueue("al1", 0, 0, "desk", ["a", "b"], title="t", body="b", notify_type="failure", now=1.0)
    box.enqueue("al1", 1, 1, "risk", ["c"], title="t", body="b", notify_type="failure", now=61.0)
    assert len(box.status()) == 3
    assert box.acknowledge("al1", 5.0, "tom") == 1  # only the pending escalation step is cancelled
    assert sorted(r["status"] for r in box.status()) == ["cancelled", "pending", "pending"]
    assert box.acknowledge("al404", 5.0, "tom") == -1
    assert box.prune(before=100.0) == 1  # the cancelled row; the pending ones (and their alert) stay
    assert len(box.status()) == 2 and box.has_alert("al1")
    box.close()
    with sqlite3.connect(tmp_path / "outbox.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
