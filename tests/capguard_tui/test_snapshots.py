"""The main screens pinned as SVG snapshots (simulator paused, clock frozen, book driven by
hand to a fixed point). Update after an intended change with `pytest --snapshot-update`
and look at the report before committing."""

import asyncio

import pytest

from tests.capguard_tui.helpers import copy_config, drive, make_app, make_guard

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]


@pytest.fixture(scope="module")
def guard(tmp_path_factory):
    """One guard for every snapshot, after a fixed minute of the demo scenario: levels change,
    actions run, alerts fire. Each snapshot only looks (a dry run at most)."""
    tmp = tmp_path_factory.mktemp("snapshots")
    g = make_guard(tmp, copy_config(tmp))
    asyncio.run(drive(g, 60.0, step=0.5))
    yield g
    g.journal.close()


def _then(*keys):
    async def run(pilot):
        pilot.app.refresh_now()
        await pilot.pause()
        if keys:
            await pilot.press(*keys)
            await pilot.app.workers.wait_for_complete()
            await pilot.pause()

    return run


@pytest.mark.parametrize("size", SIZES)
def test_overview(snap_compare, guard, size):
    assert snap_compare(make_app(guard), terminal_size=size, run_before=_then())


@pytest.mark.parametrize("size", SIZES)
def test_account_detail(snap_compare, guard, size):
    assert snap_compare(make_app(guard), terminal_size=size, run_before=_then("enter"))


@pytest.mark.parametrize("size", SIZES)
def test_liquidate_dialog(snap_compare, guard, size):
    assert snap_compare(make_app(guard), terminal_size=size, run_before=_then("L"))


def test_deleverage_dry_run(snap_compare, guard):
    assert snap_compare(make_app(guard), terminal_size=(160, 48), run_before=_then("d"))


def test_help(snap_compare, guard):
    assert snap_compare(make_app(guard), terminal_size=(80, 24), run_before=_then("question_mark"))


@pytest.mark.parametrize("key", ["2", "4", "5"], ids=["alerts", "heatmap", "analytics"])
def test_other_screens(snap_compare, guard, key):
    assert snap_compare(make_app(guard), terminal_size=(160, 48), run_before=_then(key))
