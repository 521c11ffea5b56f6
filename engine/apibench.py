"""API benchmark: `python -m engine.apibench [--accounts N] [--seconds S]`.

Starts a headless guard (simulated market, a synthetic book of 10,000 accounts built from the
demo account templates, calm scenario, real time) with the API on 127.0.0.1 (any free port),
then, from two SEPARATE processes:

- 50 WebSocket clients on /ws/capital/risk-status (the guard publishes at 4 Hz);
- REST calls at 200 requests per second, open loop (each request is sent at its scheduled
  time whatever the earlier ones did), over a mix of GET /status, /risk/{id}, /margin/{id},
  /accounts?level=..., /history/{id};

and measures, in the guard's process, the event loop's latency (how late a 10 ms sleep wakes
up) while idle and while serving. Everything runs on loopback, in bounded loops, and finishes
in about a minute. Prints the figures; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TOKEN_ENV = "CAPGUARD_APIBENCH_TOKEN"
WS_CLIENTS = 50
REST_RPS = 200
PUBLISH_HZ = 4.0
WARMUP_MAX_S = 60.0
SETTLED_P99_MS = 250.0
LEVERAGE_SCALE = 0.5
_SEQ = re.compile(rb'"seq":(\d+)')


def pct(values: list[float], q: float) -> float:
    return float(np.quantile(np.asarray(values), q)) if values else float("nan")


# ---------------------------------------------------------------------------- client processes
async def ws_clients(url: str, n: int, seconds: float) -> dict[str, Any]:
    import websockets

    token = os.environ.get(TOKEN_ENV, "")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    uri = url.replace("http://", "ws://") + "/ws/capital/risk-status"
    stats = {"messages": 0, "bytes": 0, "snapshots": 0, "deltas": 0, "heartbeats": 0, "gaps": 0, "errors": 0}
    first_ms: list[float] = []
    stop_at = time.monotonic() + seconds

    async def one() -> None:
        started = time.perf_counter()
        try:
            async with websockets.connect(uri, additional_headers=headers, max_size=None, compression=None) as ws:
                last = None
                while True:
                    left = stop_at - time.monotonic()
                    if left <= 0:
                        return
                    try:
                        raw = await asyncio.wait_for(ws.recv(decode=False), timeout=left)
                    except TimeoutError:
                        return
                    head = raw[:120]
                    stats["messages"] += 1
                    stats["bytes"] += len(raw)
                    m = _SEQ.search(head)
                    seq = int(m.group(1)) if m else -1
                    if b'"type":"snapshot"' in head:
                        stats["snapshots"] += 1
                        if not first_ms:
                            pass
                        if last is None:
                            first_ms.append((time.perf_counter() - started) * 1000)
                        last = seq
                    elif b'"type":"delta"' in head:
                        stats["deltas"] += 1
                        if last is not None and seq != last + 1:
                            stats["gaps"] += 1
                        last = seq
                    else:
                        stats["heartbeats"] += 1
        except Exception:
            stats["errors"] += 1

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(n)))
    elapsed = time.monotonic() - t0
    return {
        **stats,
        "clients": n,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(stats["messages"] / elapsed, 2),
        "deltas_per_client_per_s": round(stats["deltas"] / elapsed / n, 3),
        "mbytes_per_s": round(stats["bytes"] / elapsed / 1e6, 3),
        "first_snapshot_ms_p50": round(pct(first_ms, 0.5), 1),
        "first_snapshot_ms_max": round(max(first_ms), 1) if first_ms else None,
    }


class _Conn:
    """A minimal HTTP/1.1 keep-alive GET client (the bench measures the server, not a client library)."""

    def __init__(self, host: str, port: int, headers: str) -> None:
        self.host, self.port, self.headers = host, port, headers
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.headers}\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def rest_client(url: str, rps: float, seconds: float, connections: int = 32) -> dict[str, Any]:
    token = os.environ.get(TOKEN_ENV, "")
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    prefix = "/api/v1/capital"
    pool: asyncio.Queue[_Conn] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(_Conn(host, int(port), auth))
    conn = await pool.get()
    _, body = await conn.get(prefix + "/accounts?limit=500")
    pool.put_nowait(conn)
    ids = [a["id"] for a in json.loads(body)["accounts"]]
    rng = np.random.default_rng(1)
    paths = []
    for k in range(int(rps * seconds)):
        a = ids[int(rng.integers(len(ids)))]
        paths.append(
            prefix
            + (
                "/status",
                f"/risk/{a}",
                f"/margin/{a}",
                "/accounts?level=CRITICAL,LIQUIDATION&limit=50",
                f"/history/{a}",
            )[k % 5]
        )
    lat: list[float] = []
    by_path: dict[str, list[float]] = {}
    statuses: dict[int, int] = {}
    errors = 0

    async def call(path: str, scheduled: float) -> None:
        nonlocal errors
        c = await pool.get()
        try:
            status, _ = await c.get(path)
        except Exception:
            errors += 1
            c.close()
            pool.put_nowait(_Conn(host, int(port), auth))
            return
        pool.put_nowait(c)
        statuses[status] = statuses.get(status, 0) + 1
        if status != 200:
            errors += 1
        ms = (time.perf_counter() - scheduled) * 1000  # from the scheduled time: queueing counts
        lat.append(ms)
        by_path.setdefault(path[len(prefix) :].split("/")[1].split("?")[0], []).append(ms)

    tasks = []
    start = time.perf_counter()
    for k, path in enumerate(paths):
        at = start + k / rps
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(call(path, at)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait().close()
    return {
        "requests": len(paths),
        "seconds": round(elapsed, 3),
        "achieved_rps": round(len(paths) / elapsed, 1),
        "errors": errors,
        "statuses": statuses,
        "p50_ms": round(pct(lat, 0.5), 2),
        "p99_ms": round(pct(lat, 0.99), 2),
        "max_ms": round(max(lat), 2) if lat else None,
        "p99_ms_by_endpoint": {k: round(pct(v, 0.99), 2) for k, v in sorted(by_path.items())},
    }


# ---------------------------------------------------------------------------- the guard side
def bench_config() -> Any:
    """The bundled configuration; sections this engine does not know yet are left out (and named)."""
    import tomlkit

    from engine.config import Config, bundled_config_path, parse_config

    doc = tomlkit.parse(bundled_config_path().read_text(encoding="utf-8"))
    unknown = [k for k in list(doc.keys()) if k not in Config.model_fields]
    for k in unknown:
        del doc[k]
    if unknown:
        print(f"note: config sections not known to this engine left out: {', '.join(unknown)}")
    return parse_config(tomlkit.dumps(doc), "bundled config")[0]


def build_guard(n_accounts: int, journal_dir: Path) -> Any:
    from engine.guard import Guard

    base = bench_config()
    templates = base.simulator.accounts
    # Half the demo leverage: the demo book is built to show every level at once, which at 10k
    # accounts makes the engine itself journal thousands of transitions, alerts and WARNING
    # samples a second; a desk's book is mostly SAFE.
    accounts = [
        t.model_copy(update={"id": f"{t.id}-{k:05d}", "name": None, "leverage": t.leverage * LEVERAGE_SCALE})
        for k in range(n_accounts // len(templates) + 1)
        for t in templates
    ][:n_accounts]
    sim = base.simulator.model_copy(update={"accounts": accounts, "scenario": "calm"})
    cfg = base.model_copy(update={"simulator": sim})
    return Guard(cfg, journal_path=journal_dir / "journal.sqlite3", scenario="calm")


async def probe(samples: list[float], stop: asyncio.Event, period: float = 0.01) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(period)
        samples.append(max(0.0, loop.time() - t - period) * 1000)


async def child(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine.apibench", *args, stdout=asyncio.subprocess.PIPE, env=env
    )
    out, _ = await proc.communicate()
    lines = out.decode().strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"child {args[0]} exited {proc.returncode}"}
    return json.loads(lines[-1])


async def bench(n_accounts: int, seconds: float) -> dict[str, Any]:
    import secrets

    from engine.api import ApiConfig, ApiServer

    token = secrets.token_urlsafe(24)
    env = {**os.environ, TOKEN_ENV: token}
    os.environ[TOKEN_ENV] = token
    with tempfile.TemporaryDirectory(prefix="capguard-apibench-") as tmp:
        t = time.perf_counter()
        guard = build_guard(n_accounts, Path(tmp))
        build_s = time.perf_counter() - t
        print(f"guard: {guard.book.n_accounts} accounts, {guard.book.pos_qty.size} positions, built in {build_s:.1f} s")
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (other work shares them)")
        cfg = ApiConfig(
            port=0, publish_hz=PUBLISH_HZ, tokens=[{"name": "bench", "role": "viewer", "token_env": TOKEN_ENV}]
        )
        server = ApiServer(guard, cfg)
        await server.start()
        runner = asyncio.get_running_loop().create_task(guard.run())
        print(f"api: {server.url}, publishing at {PUBLISH_HZ:g} Hz")

        # A fresh 10k book first goes through a storm of level changes (each journaled and
        # alerted, fsync'd): wait until the engine settles, then take the idle baseline.
        t = time.perf_counter()
        while time.perf_counter() - t < WARMUP_MAX_S:
            window: list[float] = []
            stop = asyncio.Event()
            task = asyncio.get_running_loop().create_task(probe(window, stop))
            await asyncio.sleep(2.0)
            stop.set()
            await task
            if pct(window, 0.99) < SETTLED_P99_MS:
                break
        print(f"warm-up: {time.perf_counter() - t:.0f} s until the guard's own loop latency settled")
        stop = asyncio.Event()
        idle: list[float] = []
        task = asyncio.get_running_loop().create_task(probe(idle, stop))
        await asyncio.sleep(5.0)
        stop.set()
        await task
        print(
            f"idle (guard running, no client, 5 s): loop latency p50 {pct(idle, 0.5):.2f} ms, "
            f"p99 {pct(idle, 0.99):.2f} ms, max {max(idle):.2f} ms"
        )

        stop = asyncio.Event()
        busy: list[float] = []
        task = asyncio.get_running_loop().create_task(probe(busy, stop))
        ws_task = asyncio.get_running_loop().create_task(
            child(["--ws-clients", server.url, str(WS_CLIENTS), str(seconds + 4)], env)
        )
        await asyncio.sleep(3.0)  # the 50 clients connect and take their first snapshot
        v0 = guard.version
        rest = await child(["--rest", server.url, str(REST_RPS), str(seconds)], env)
        ws = await ws_task
        stop.set()
        await task
        evaluations = guard.version - v0
        ch = server.app.state.api.channels["risk-status"]
        rows = list(ch.rows_sent)
        publish_ms = [s * 1000 for s in ch.publish_seconds]
        coalesced = ch.coalesced_total()
        await server.stop()
        await guard.stop(grace=1.0)
        runner.cancel()
        guard.journal.close()

    loop_p99 = pct(busy, 0.99)
    print()
    print(
        f"websocket: {ws.get('clients')} clients on risk-status, {ws.get('msgs_per_s')} msgs/s received in total "
        f"({ws.get('deltas_per_client_per_s')} deltas per client per s, {ws.get('mbytes_per_s')} MB/s), "
        f"{ws.get('heartbeats')} heartbeats, {ws.get('gaps')} gaps, {ws.get('errors')} errors; "
        f"first snapshot p50 {ws.get('first_snapshot_ms_p50')} ms, max {ws.get('first_snapshot_ms_max')} ms"
    )
    print(
        f"publishing: {statistics.mean(rows) if rows else 0:.0f} accounts per delta on average (of {n_accounts}); "
        f"compute+serialise p50 {pct(publish_ms, 0.5):.1f} ms, p99 {pct(publish_ms, 0.99):.1f} ms; "
        f"{coalesced} slow-client coalescings"
    )
    print(
        f"rest: {rest.get('requests')} GETs at {rest.get('achieved_rps')} req/s, {rest.get('errors')} errors, "
        f"p50 {rest.get('p50_ms')} ms, p99 {rest.get('p99_ms')} ms, max {rest.get('max_ms')} ms; "
        f"p99 by endpoint {rest.get('p99_ms_by_endpoint')}"
    )
    print(
        f"guard loop while serving: latency p50 {pct(busy, 0.5):.2f} ms, p99 {loop_p99:.2f} ms, "
        f"max {max(busy) if busy else float('nan'):.2f} ms; {evaluations} evaluations"
    )
    return {
        "accounts": n_accounts,
        "ws_clients": ws.get("clients"),
        "ws_msgs_per_s": ws.get("msgs_per_s"),
        "ws_mbytes_per_s": ws.get("mbytes_per_s"),
        "ws_gaps": ws.get("gaps"),
        "rest_rps": rest.get("achieved_rps"),
        "rest_errors": rest.get("errors"),
        "rest_p50_ms": rest.get("p50_ms"),
        "rest_p99_ms": rest.get("p99_ms"),
        "loop_p99_ms": round(loop_p99, 2),
        "loop_p99_idle_ms": round(pct(idle, 0.99), 2),
        "load_average": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--ws-clients"]:
        print(json.dumps(asyncio.run(ws_clients(argv[1], int(argv[2]), float(argv[3])))))
        return 0
    if argv[:1] == ["--rest"]:
        print(json.dumps(asyncio.run(rest_client(argv[1], float(argv[2]), float(argv[3])))))
        return 0
    parser = argparse.ArgumentParser(prog="python -m engine.apibench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window (default 20)")
    args = parser.parse_args(argv)
    result = asyncio.run(bench(args.accounts, args.seconds))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
