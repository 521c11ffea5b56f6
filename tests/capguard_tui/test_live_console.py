"""`capguard --config` with [sources]: the console's guard runs on them (not the simulator),
and accounts that appear later join the table."""

from __future__ import annotations

import argparse
import copy

from capguard_tui.app import build_app
from engine.config import bundled_config_path, load_config
from tests.engine.connectors.support import HttpServer, Response
from tests.engine.connectors.test_rest_account import PAYLOAD


async def test_the_console_watches_the_configured_account_service(tmp_path):
    payload = copy.deepcopy(PAYLOAD)
    version = {"n": 1}

    def answer(req):
        return Response(200, payload, headers={"ETag": f'"v{version["n"]}"'})

    async with HttpServer(answer) as http:
        path = tmp_path / "config.toml"
        path.write_text(
            bundled_config_path().read_text()
            + f'\n[sources.rest_accounts]\nurl = "{http.url}/accounts"\ninterval = 0.1\n'
        )
        loaded = load_config(path)
        args = argparse.Namespace(journal=str(tmp_path / "journal.sqlite3"), scenario=None, speed=None, theme=None)
        app = build_app(loaded, args)
        assert app.guard.book.n_accounts == 0  # never the demo accounts
        async with app.run_test(size=(100, 30)) as pilot:
            for _ in range(100):
                await pilot.pause(0.05)
                if app.guard.book.n_accounts == 2:
                    break
            assert [i.id for i in app.guard.book.info] == ["acct-01", "acct-02"]
            payload["accounts"].append({**copy.deepcopy(payload["accounts"][1]), "id": "acct-03"})
            version["n"] += 1
            for _ in range(100):  # the next poll, the next guard step, the next 4 Hz refresh
                await pilot.pause(0.05)
                snap = app.state.snapshot
                if snap is not None and "acct-03" in snap.ids:
                    break
            assert list(app.state.snapshot.ids) == ["acct-01", "acct-02", "acct-03"]
