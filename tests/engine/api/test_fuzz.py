"""Schemathesis over the OpenAPI document: generated requests (valid and invalid, a few per
operation, with a risk token) against a real server; no answer may be a 5xx."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from engine.api import ApiServer  # noqa: E402
from tests.engine.api.support import PREFIX, api_config, auth, base_config, writer_for  # noqa: E402
from tests.engine.guard.support import make_guard  # noqa: E402

EXAMPLES = 5


class Background:
    """The guard and its API in their own thread and loop (schemathesis calls are blocking)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.ready = threading.Event()
        self.url = ""
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def __enter__(self) -> Background:
        self._thread.start()
        assert self.ready.wait(30), self.error
        if self.error:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            guard = make_guard(self.tmp_path, "calm", cfg=base_config())
            server = ApiServer(guard, api_config(), config_writer=writer_for(self.tmp_path))
            await server.start()
            self.url = server.url
        except BaseException as exc:
            self.error = exc
            self.ready.set()
            raise
        self.ready.set()
        await self._stop.wait()
        await server.stop()
        guard.journal.close()


def test_no_generated_request_gets_a_server_error(tmp_path):
    with Background(tmp_path) as bg:
        schema = schemathesis.openapi.from_url(bg.url + PREFIX + "/openapi.json")
        headers = auth("risk")
        failures: list[str] = []
        calls: list[int] = []
        operations = 0
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                fuzz(operation, mode, bg.url, headers, failures, calls)
        assert operations >= 25 and len(calls) >= 2 * operations
        assert any(c < 300 for c in calls) and any(400 <= c < 500 for c in calls)
        assert not failures, "\n".join(failures)
        assert (tmp_path / "config.toml").exists()


def fuzz(operation, mode, url: str, headers: dict[str, str], failures: list[str], calls: list[int]) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        response = case.call(base_url=url, headers=headers, timeout=10)
        calls.append(response.status_code)
        if response.status_code >= 500:
            failures.append(
                f"{operation.label} [{mode.value}] -> {response.status_code}: {response.text[:200]}\n"
                f"  {case.as_curl_command(headers=headers)}"
            )

    run()
