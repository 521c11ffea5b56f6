"""The action log describes a finished action from the event the guard really publishes."""

import numpy as np

from capguard_tui.fmt import record_text
from tests.engine.guard.support import RISK, drive, make_guard, settle


async def test_a_finished_liquidation_reads_with_its_fills_and_ratio(tmp_path):
    g = make_guard(tmp_path, "calm")
    sub = g.subscribe(kinds={"action"})
    await drive(g, 1)
    a = int(np.argmax(g.book.acct_notional))
    acct = g.book.info[a].id
    assert (await g.command("liquidate", RISK, account=acct, confirm=acct, mode="immediate")).ok
    await settle(g)
    events = sub.drain()
    assert record_text(next(e for e in events if e.get("stage") == "started")).startswith("liquidate started")
    finished = [e for e in events if e.get("stage") == "finished"]
    assert finished
    text = record_text(finished[0])
    sent = finished[0]["outcome"]["orders_sent"]
    assert sent > 0
    assert text.startswith("liquidate finished")
    assert f"{finished[0]['outcome']['orders_filled']}/{sent} filled" in text
    assert "complete" in text and "incomplete" not in text


def test_the_risk_section_reads_the_engine_figures():
    from capguard_tui.widgets.sections import risk

    text = risk(
        {
            "risk": {
                "confidence": 0.99,
                "horizon_days": 1.0,
                "var_parametric": 12345.0,
                "es_parametric": 14000.0,
                "stress_worst_ratio": 0.8,
                "stress_worst_scenario": "crypto crash",
                "touch_liquidation_price_prob": 0.25,
                "touch_liquidation_threshold_prob": 0.4,
                "hours_to": {"WARNING": 0.0, "CRITICAL": 3.14, "LIQUIDATION": None},
            }
        }
    )
    assert "99%, 1 day" in text and "crypto crash" in text
    assert "25%" in text and "40%" in text
    assert "CRITICAL in 3.1 h" in text and "LIQUIDATION" not in text
