"""The REST and WebSocket API of a guard: `create_app(guard, api_config) -> FastAPI`.

Every endpoint lives under /api/v1/capital (live channels under /ws/capital, metrics at
/metrics). Reads come straight from the guard (one shared snapshot per engine step); every
change goes through `guard.command(...)` with an Operator built from the caller's token
(name and role from [api] tokens, origin "api:<client ip>"), so the engine checks the role
and journals the command exactly as it does for a console key (ARCHITECTURE rule 8).

Status codes: 401 no/invalid token (and every change when no token is configured), 403 the
role does not allow it (the engine's message), 404 unknown account, alert or schedule, 409
the engine refused it in the current state (its message says why), 422 a bad request field
(named in `detail`), 400 a Host header that is not allowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import tomlkit
from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import engine
from engine.analytics.history import downsample
from engine.api.channels import (
    ACTION_TYPES,
    ALERT_TYPES,
    RISK_COLUMNS,
    Channel,
    Client,
    EventsChannel,
    MarginChannel,
    RiskStatusChannel,
    Source,
    clean,
    dumps,
    encode_columns,
)
from engine.api.config import ApiConfig
from engine.api.metrics import Monitor, render
from engine.api.models import (
    CommandResponse,
    DeleverageRequest,
    HoldRequest,
    KillSwitchRequest,
    LiquidateRequest,
    OptionalReasonRequest,
    ReasonRequest,
    ScheduleRequest,
    StressRequest,
    ThresholdsRequest,
    WhatIfRequest,
    message_schemas,
)
from engine.api.security import (
    NO_TOKEN,
    Principal,
    TokenTable,
    bearer,
    host_allowed,
    origin_allowed,
)
from engine.clock import iso
from engine.config import ConfigError, ConfigWriter
from engine.journal import KINDS
from engine.journal_cli import parse_time
from engine.ladder import REDUCE_REASONS, DataState, TradingState
from engine.levels import LEVEL_NAMES
from engine.margin import liquidation_distance_pct
from engine.model import InputError
from engine.operators import Operator, Role
from engine.risk_view import account_risk

if TYPE_CHECKING:
    from engine.guard import Guard

PREFIX = "/api/v1/capital"
WS_PREFIX = "/ws/capital"
CHANNELS = ("risk-status", "margin-updates", "alerts", "actions")
PERMISSION = re.compile(r"\bneeds the (viewer|trader|risk) role\b")


class Json(Response):
    """JSON without NaN (as null) and with numpy scalars converted; never through jsonable_encoder."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        try:
            return dumps(content).encode("utf-8")
        except (TypeError, ValueError):  # a NaN or a numpy scalar somewhere: clean a copy
            return dumps(clean(content)).encode("utf-8")


class ApiState:
    def __init__(self, guard: Guard, config: ApiConfig, writer: ConfigWriter | None) -> None:
        self.guard = guard
        self.config = config
        self.writer = writer if writer is not None else getattr(guard, "config_writer", None)
        self.tokens = TokenTable(config)
        self.source = Source(guard)
        self.monitor = Monitor(guard)
        hz, q = config.publish_hz, config.ws_queue
        self.channels: dict[str, Channel] = {
            "risk-status": RiskStatusChannel(self.source, hz=hz, queue=q, ratio_step=config.ratio_step),
            "margin-updates": MarginChannel(self.source, hz=hz, queue=q),
            "alerts": EventsChannel(self.source, "alerts", ALERT_TYPES, hz=hz, queue=q),
            "actions": EventsChannel(self.source, "actions", ACTION_TYPES, hz=hz, queue=q),
        }
        self.requests: Counter[tuple[str, str]] = Counter()
        self.started = time.time()

    async def close(self) -> None:
        for ch in self.channels.values():
            await ch.stop()
        await self.monitor.stop()


# ---------------------------------------------------------------------------- middleware
class Gate:
    """Host header check (both HTTP and WebSocket) and request counting."""

    def __init__(self, app: ASGIApp, state: ApiState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = ""
        for k, v in scope.get("headers") or ():
            if k == b"host":
                host = v.decode("latin-1")
                break
        if not host_allowed(host, self.state.config):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": "host not allowed"})
                return
            detail = f"host {host!r} is not allowed: add its name to [api] allowed_hosts"
            await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "")

        async def counting(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.state.requests[(method, f"{message['status'] // 100}xx")] += 1
            await send(message)

        await self.app(scope, receive, counting)


# ---------------------------------------------------------------------------- auth
bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="bearer", description="an API token from [api] tokens (roles viewer/trader/risk)"
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def api_state(request: Request) -> ApiState:
    return request.app.state.api  # type: ignore[no-any-return]


async def reader(request: Request, creds: Credentials) -> Principal | None:
    st = api_state(request)
    if not st.tokens.configured:
        return None  # loopback only: reads are open
    principal = st.tokens.lookup(creds.credentials if creds else None)
    if principal is None:
        raise HTTPException(401, "a valid bearer token is required (Authorization: Bearer <token>)", UNAUTHORIZED)
    return principal


async def operator(request: Request, creds: Credentials) -> Operator:
    st = api_state(request)
    if not st.tokens.configured:
        raise HTTPException(401, NO_TOKEN, UNAUTHORIZED)
    principal = st.tokens.lookup(creds.credentials if creds else None)
    if principal is None:
        raise HTTPException(401, "a valid bearer token is required (Authorization: Bearer <token>)", UNAUTHORIZED)
    return principal.operator(request.client.host if request.client else None)


Reader = Annotated[Principal | None, Depends(reader)]
Op = Annotated[Operator, Depends(operator)]
State = Annotated[ApiState, Depends(api_state)]


# ---------------------------------------------------------------------------- helpers
def account(st: ApiState, account_id: str) -> int:
    try:
        return st.guard.account_index(account_id)
    except KeyError:
        raise HTTPException(404, f"no account {account_id!r}") from None


def _f(x: Any) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def _time(st: ApiState, field: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_time(text, st.guard.clock.now())
    except ValueError as exc:
        raise HTTPException(422, f"{field}: {exc}") from None


def _fractions(field: str, text: str | None) -> list[float] | None:
    """A comma-separated list of fractions from a query parameter (None when not given)."""
    if text is None:
        return None
    out = []
    for part in text.split(","):
        try:
            out.append(float(part.strip()))
        except ValueError:
            raise HTTPException(422, f"{field}: {part.strip()!r} is not a number") from None
    return out


def _analytics(compute: Callable[[], dict[str, Any]]) -> Response:
    """A risk-analytics read; the engine's InputError (naming the field) is a 422."""
    try:
        return Json(compute())
    except InputError as exc:
        raise HTTPException(422, str(exc)) from None


def _levels(text: str | None) -> list[int] | None:
    if not text:
        return None
    out = []
    for part in text.split(","):
        name = part.strip().upper()
        if name not in LEVEL_NAMES:
            raise HTTPException(422, f"level: unknown level {part.strip()!r} (known: {', '.join(LEVEL_NAMES)})")
        out.append(LEVEL_NAMES.index(name))
    return out


async def run_command(
    st: ApiState,
    name: str,
    op: Operator,
    *,
    account_id: str | None = None,
    not_found: Callable[[], bool] | None = None,
    invalid: Callable[[], bool] | None = None,
    **params: Any,
) -> Response:
    """One operator command through the engine; the refusal's status is chosen from what failed."""
    if account_id is not None:
        params["account"] = account_id
    result = await st.guard.command(name, op, **params)
    st.source.invalidate()
    body = CommandResponse(ok=result.ok, message=result.message, action_id=result.action_id, plan=result.plan)
    content = body.model_dump()
    if result.ok:
        return Json(content)
    if PERMISSION.search(result.message):
        status = 403
    elif (account_id is not None and account_id not in st.guard.book.account_index) or (
        not_found is not None and not_found()
    ):
        status = 404
    elif invalid is not None and invalid():
        status = 422
    else:
        status = 409
    return Json({**content, "detail": result.message}, status_code=status)


def _require_risk(st: ApiState, op: Operator, what: str) -> None:
    if op.role < Role.RISK:
        msg = f"{what} needs the risk role; {op.name} is {op.role.name.lower()}"
        st.guard.journal.append("config", None, refused=msg, section=what, **op.fields())
        raise HTTPException(403, msg)


def _merge(node: Any, patch: dict[str, Any], where: str, changed: list[str]) -> None:
    """JSON merge patch (RFC 7386) onto a tomlkit container: null deletes, objects merge."""
    for key, value in patch.items():
        dotted = f"{where}.{key}" if where else key
        if value is None:
            if key in node:
                del node[key]
                changed.append(dotted)
            continue
        current = node.get(key) if hasattr(node, "get") else None
        if isinstance(value, dict) and isinstance(current, dict):
            _merge(current, value, dotted, changed)
        else:
            node[key] = value
            changed.append(dotted)


def _write_config(st: ApiState, op: Operator, patch: dict[str, Any], section: str | None) -> Response:
    _require_risk(st, op, "changing the configuration")
    writer = st.writer
    if writer is None:
        raise HTTPException(409, "this guard has no configuration file to write (started without a config writer)")
    if section is None and "api" in patch:
        msg = "api: the API's own section (tokens, binding) cannot be changed through the API; edit the file"
        st.guard.journal.append("config", None, refused=msg, **op.fields())
        raise HTTPException(422, msg)
    changed: list[str] = []

    def edit(doc: Any) -> None:
        if section is None:
            _merge(doc, patch, "", changed)
        else:
            if section not in doc:
                doc[section] = tomlkit.table()
            _merge(doc[section], patch, section, changed)

    try:
        keys = sorted(set(changed_keys(patch, section)))
        st.guard.journal.append("config", None, event="write", keys=keys, **op.fields())
        config = writer.update(edit)
    except ConfigError as exc:
        st.guard.journal.append("config", None, refused=str(exc), **op.fields())
        raise HTTPException(422, str(exc)) from None
    except (ValueError, TypeError, OverflowError) as exc:
        msg = f"the change cannot be written as TOML: {exc}"
        st.guard.journal.append("config", None, refused=msg, **op.fields())
        raise HTTPException(422, msg) from None
    except OSError as exc:
        msg = f"cannot write {writer.loaded.path}: {exc.strerror or exc}"
        st.guard.journal.append("config", None, refused=msg, **op.fields())
        raise HTTPException(503, msg) from None
    st.guard.journal.append("config", None, event="written", path=str(writer.loaded.path), keys=changed, **op.fields())
    # Applied now, as SIGHUP would: what needs a restart (instruments, sources, ...) is named.
    needs_restart = st.guard.reload(config)
    return Json({"ok": True, "path": str(writer.loaded.path), "changed": changed, "needs_restart": needs_restart})


def changed_keys(patch: dict[str, Any], section: str | None) -> list[str]:
    out: list[str] = []

    def walk(node: dict[str, Any], where: str) -> None:
        for k, v in node.items():
            dotted = f"{where}.{k}" if where else str(k)
            if isinstance(v, dict) and v:
                walk(v, dotted)
            else:
                out.append(dotted)

    walk(patch, section or "")
    return out


def _rows(st: ApiState, idx: np.ndarray) -> list[dict[str, Any]]:
    snap = st.source.snapshot()
    cols = encode_columns({k: snap.columns[k][idx] for k in RISK_COLUMNS}, RISK_COLUMNS, st.guard.clock.now())
    ids, names, desks, strategies = snap.ids, snap.names, snap.desks, snap.strategies
    out = []
    for j, i in enumerate(idx.tolist()):
        row: dict[str, Any] = {"id": ids[i], "name": names[i], "desk": desks[i], "strategy": strategies[i]}
        for k in RISK_COLUMNS:
            row[k] = cols[k][j]
        out.append(row)
    return out


# ---------------------------------------------------------------------------- the app
def create_app(guard: Guard, api_config: ApiConfig | None = None, config_writer: ConfigWriter | None = None) -> FastAPI:
    """The FastAPI application over `guard` (build it inside the loop that runs the guard)."""
    state = ApiState(guard, api_config or ApiConfig(), config_writer)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.monitor.start()
        try:
            yield
        finally:
            await state.close()

    app = FastAPI(
        title="capguard API",
        version=engine.__version__,
        description="Capital protection guard: risk, margin, thresholds, history, protective commands. "
        "Live channels (WebSocket) are described at GET /api/v1/capital/schemas.",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
        default_response_class=Json,
    )
    app.state.api = state
    app.add_middleware(Gate, state=state)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        errors = []
        parts = []
        for e in exc.errors():
            loc = [str(x) for x in e.get("loc", ())]
            where = ".".join(loc)
            msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
            if e.get("type") == "extra_forbidden":
                msg = "unknown field"
            parts.append(f"{where}: {msg}" if where else msg)
            errors.append({"loc": loc, "msg": msg, "type": e.get("type")})
        return Json({"detail": "; ".join(parts), "errors": errors}, status_code=422)

    r = APIRouter(prefix=PREFIX)

    # ------------------------------------------------------------------ reads
    @r.get("/status", summary="Guard health, feeds, breaker, kill switch, accounts per level")
    async def status(st: State, _: Reader) -> Response:
        g = st.guard
        now = g.clock.now()
        book = g.book
        inst_state = g.gate.instrument_state(now, book.mark, book.mark_time)
        last = float(np.nanmax(book.mark_time)) if np.isfinite(book.mark_time).any() else float("nan")
        lag = st.monitor.lag_quantiles()
        return Json(
            {
                **g.status(),
                "engine_version": engine.__version__,
                "feeds": {
                    "paused": bool(g.feed.paused),
                    "instruments": len(book.instruments),
                    "stale_instruments": int(np.sum(inst_state == DataState.STALE)),
                    "invalid_instruments": int(np.sum(inst_state == DataState.INVALID)),
                    "last_price_at": iso(last) if np.isfinite(last) else None,
                    "age_s": _f(now - last) if np.isfinite(last) else None,
                },
                "schedule_pending": len(g.protection.schedule),
                "loop_latency_ms": {k: round(v * 1000, 3) for k, v in lag.items()},
                "api": {
                    "auth": "tokens" if st.tokens.configured else "none (loopback, read-only)",
                    "uptime_s": round(time.time() - st.started, 3),
                    "ws_clients": {n: ch.client_count for n, ch in st.channels.items()},
                },
            }
        )

    @r.get("/whoami", summary="The caller's identity and role as the API sees it")
    async def whoami(request: Request, st: State, who: Reader) -> Response:
        client = request.client.host if request.client else None
        if who is None:
            return Json({"name": None, "role": "viewer", "origin": f"api:{client}", "writes": False, "auth": "none"})
        return Json({"name": who.name, "role": who.role.name.lower(), "origin": f"api:{client}", "writes": True})

    @r.get("/accounts", summary="Accounts, filtered by level, desk, strategy or a search string")
    async def accounts(
        st: State,
        _: Reader,
        level: Annotated[str | None, Query(description="comma-separated levels, e.g. CRITICAL,LIQUIDATION")] = None,
        desk: Annotated[str | None, Query(max_length=200)] = None,
        strategy: Annotated[str | None, Query(max_length=200)] = None,
        q: Annotated[str | None, Query(max_length=200, description="substring of the id or name")] = None,
        sort: Annotated[Literal["id", "margin_ratio"], Query()] = "id",
        limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> Response:
        snap = st.source.snapshot()
        mask = np.ones(len(snap), dtype=bool)
        levels = _levels(level)
        if levels is not None:
            mask &= np.isin(snap.columns["level"], levels)
        if desk is not None:
            mask &= np.array([d == desk for d in snap.desks], dtype=bool)
        if strategy is not None:
            mask &= np.array([s == strategy for s in snap.strategies], dtype=bool)
        if q:
            needle = q.lower()
            mask &= np.array(
                [needle in i.lower() or needle in n.lower() for i, n in zip(snap.ids, snap.names, strict=True)],
                dtype=bool,
            )
        idx = np.flatnonzero(mask)
        if sort == "margin_ratio":
            idx = idx[np.argsort(np.nan_to_num(snap.columns["margin_ratio"][idx], nan=np.inf), kind="stable")]
        page = idx[offset : offset + limit]
        return Json(
            {
                "time": iso(snap.time),
                "version": snap.version,
                "total": int(idx.size),
                "offset": offset,
                "accounts": _rows(st, page),
            }
        )

    @r.get("/accounts/{account_id}", summary="Everything the guard knows about one account (the console's detail)")
    async def account_detail(account_id: str, st: State, _: Reader) -> Response:
        account(st, account_id)
        return Json(st.guard.account_detail(account_id))

    @r.get("/risk/{account_id}", summary="Level, ratio, thresholds, data/trading state, hold, top risk contributors")
    async def risk(
        account_id: str,
        st: State,
        _: Reader,
        top: Annotated[int, Query(ge=1, le=100, description="how many contributors")] = 5,
    ) -> Response:
        a = account(st, account_id)
        g = st.guard
        book, lad, info = g.book, g.ladder, g.book.info[a]
        now = g.clock.now()
        pos = book.account_positions(a)
        liq = st.source.liquidation_prices()[pos]
        mm = book.maintenance_margin[pos]
        total = float(book.acct_mm[a])
        order = np.argsort(-np.nan_to_num(mm, nan=-np.inf), kind="stable")[:top]
        contributors = []
        for k in order.tolist():
            p = int(pos[k])
            i = int(book.pos_instrument[p])
            mark = float(book.mark[i])
            lp = float(liq[k])
            contributors.append(
                {
                    "symbol": book.instruments[i].symbol,
                    "qty": float(book.pos_qty[p]),
                    "notional": _f(book.notional[p]),
                    "maintenance_margin": _f(mm[k]),
                    "share_of_maintenance_margin": _f(mm[k] / total) if total > 0 else None,
                    "liquidation_price": _f(lp),
                    "liquidation_distance_pct": _f(liquidation_distance_pct(book.pos_qty[p], mark, lp)),
                }
            )
        flags = int(lad.reduce_flags[a])
        held = float(lad.held_until[a])
        return Json(
            {
                "id": info.id,
                "time": iso(now),
                "level": LEVEL_NAMES[int(lad.level[a])],
                "ratio_level": LEVEL_NAMES[int(book.level[a])] if book.level[a] >= 0 else None,
                "margin_ratio": _f(book.ratio[a]),
                "equity": _f(book.equity[a]),
                "maintenance_margin": _f(total),
                "thresholds": {
                    "warning": _f(book.warning[a]),
                    "critical": _f(book.critical[a]),
                    "liquidation": _f(book.liquidation[a]),
                    "override": info.id in g.protection.overrides,
                },
                "data_state": DataState(int(lad.data_state[a])).name,
                "trading_state": TradingState(int(lad.trading_state[a])).name,
                "reducing_because": [n for bit, n in REDUCE_REASONS.items() if flags & bit],
                "held_until": iso(held) if held > now else None,
                "protection_mode": "shadow" if g.protection.shadow[a] else "active",
                "action_in_flight": a in g.protection.active,
                "top_contributors": contributors,
                "analytics": account_risk(g, a),
            }
        )

    @r.get("/margin/{account_id}", summary="Equity, initial/maintenance/free/available margin, utilisation")
    async def margin(account_id: str, st: State, _: Reader) -> Response:
        a = account(st, account_id)
        g = st.guard
        book = g.book
        pos = book.account_positions(a)
        liq = st.source.liquidation_prices()[pos]
        im_pos = book.initial_margin[pos]
        equity = float(book.equity[a])
        # IM by the configured methods ([risk.margin], as of the guard's last 1 Hz refresh), else the venue's.
        methods = g.im_methods
        venue_im = float(book.acct_im[a])
        im = venue_im if methods is None else float(methods.total[a])
        method = ["position"] * pos.size if methods is None else [str(m) for m in methods.position_method[pos].tolist()]
        reserved = float(st.source.reserved_initial_margin()[a])
        positions = []
        for k, p in enumerate(pos.tolist()):
            i = int(book.pos_instrument[p])
            b = int(book.pos_bracket[p])
            positions.append(
                {
                    "symbol": book.instruments[i].symbol,
                    "qty": float(book.pos_qty[p]),
                    "entry_price": _f(book.pos_entry[p]),
                    "mark_price": _f(book.mark[i]),
                    "notional": _f(book.notional[p]),
                    "unrealized_pnl": _f(book.unrealized_pnl[p]),
                    "initial_margin": _f(im_pos[k]),
                    "margin_method": method[k],
                    "maintenance_margin": _f(book.maintenance_margin[p]),
                    "mmr": _f(book.table.mmr[b]),
                    "tier": b - int(book.table.start[i]) + 1,
                    "liquidation_price": _f(liq[k]),
                    "isolated_margin": _f(book.pos_isolated_margin[p]),
                }
            )
        return Json(
            {
                "id": book.info[a].id,
                "time": iso(g.clock.now()),
                "margin_mode": book.info[a].margin_mode,
                "wallet_balance": _f(book.wallet[a]),
                "equity": _f(equity),
                "unrealized_pnl": _f(book.acct_upnl[a]),
                "initial_margin": _f(im),
                "venue_initial_margin": _f(venue_im),
                "maintenance_margin": _f(book.acct_mm[a]),
                "free_margin": _f(equity - im),
                "reserved_by_orders": _f(reserved),
                "available_margin": _f(max(0.0, equity - im - reserved)),
                "utilization": _f(im / equity) if equity > 0 else None,
                "margin_ratio": _f(book.ratio[a]),
                "leverage": _f(book.acct_notional[a] / equity) if equity > 0 else None,
                "positions": positions,
            }
        )

    @r.get("/thresholds/{account_id}", summary="Effective thresholds with the dynamic breakdown")
    async def thresholds(account_id: str, st: State, _: Reader) -> Response:
        account(st, account_id)
        d = st.guard.account_detail(account_id)
        return Json({"id": account_id, "time": d["time"], **d["thresholds"]})

    @r.get("/history/{account_id}", summary="Ratio history and level transitions")
    async def history(
        account_id: str,
        st: State,
        _: Reader,
        since: Annotated[str | None, Query(description="ISO-8601 or a duration before now (15m, 2h)")] = None,
        until: Annotated[str | None, Query(description="ISO-8601 or a duration before now")] = None,
        limit: Annotated[int, Query(ge=1, le=100_000, description="latest points and transitions kept")] = 720,
        points: Annotated[
            int | None,
            Query(ge=1, le=10_000, description="downsample to at most this many time buckets (last, low, high)"),
        ] = None,
    ) -> Response:
        a = account(st, account_id)
        t0, t1 = _time(st, "since", since), _time(st, "until", until)
        pts = [(t, r) for t, r in st.guard.history[a] if (t0 is None or t >= t0) and (t1 is None or t <= t1)][-limit:]
        transitions = st.guard.journal.records(
            account=account_id, kind="transition", since=t0, until=t1, limit=limit, newest_first=True
        )
        if points is None:
            series = [{"ts": iso(t), "margin_ratio": _f(r)} for t, r in pts]
        else:  # each bucket keeps its low and high, so a dip between kept samples is never lost
            d = downsample(np.array([t for t, _ in pts]), np.array([r for _, r in pts]), points)
            series = [
                {"ts": iso(t), "margin_ratio": _f(v), "low": _f(lo), "high": _f(hi)}
                for t, v, lo, hi in zip(d.time.tolist(), d.last.tolist(), d.low.tolist(), d.high.tolist(), strict=True)
            ]
        return Json({"id": account_id, "points": series, "transitions": list(reversed(transitions))})

    @r.get("/journal", summary="Journal records (the same filters as `capguard journal`)")
    async def journal(
        st: State,
        _: Reader,
        account: Annotated[str | None, Query(max_length=200)] = None,
        kind: Annotated[str | None, Query(description=f"comma-separated kinds: {', '.join(KINDS)}")] = None,
        action_id: Annotated[str | None, Query(max_length=200)] = None,
        since: Annotated[str | None, Query(description="ISO-8601 or a duration before now (15m, 2h)")] = None,
        until: Annotated[str | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
        order: Annotated[Literal["asc", "desc"], Query(description="desc: the latest `limit`, newest first")] = "asc",
        format: Annotated[Literal["json", "jsonl"], Query()] = "json",
    ) -> Response:
        kinds = None
        if kind:
            kinds = [k.strip() for k in kind.split(",") if k.strip()]
            unknown = [k for k in kinds if k not in KINDS]
            if unknown:
                raise HTTPException(422, f"kind: unknown kind {unknown[0]!r} (known: {', '.join(KINDS)})")
        t0, t1 = _time(st, "since", since), _time(st, "until", until)
        records = st.guard.journal.records(
            account=account,
            kind=kinds,
            since=t0,
            until=t1,
            action_id=action_id,
            limit=limit,
            newest_first=order == "desc",
        )
        if format == "jsonl":
            text = "".join(dumps(clean(rec)) + "\n" for rec in records)
            return Response(text, media_type="application/x-ndjson")
        return Json({"count": len(records), "records": records})

    @r.get("/alerts", summary="Alert configuration and recent alerts (acknowledged or not)")
    async def alerts(
        st: State,
        _: Reader,
        account: Annotated[str | None, Query(max_length=200)] = None,
        unacknowledged: Annotated[bool, Query()] = False,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> Response:
        g = st.guard
        acked = g.protection.acknowledged
        recs = g.journal.records(account=account, kind="alert", limit=limit, newest_first=True)
        out = [{**rec, "acknowledged": rec.get("alert_id") in acked} for rec in recs]
        if unacknowledged:
            out = [rec for rec in out if not rec["acknowledged"]]
        section = getattr(g.config, "alerts", None)
        return Json(
            {
                "config": section.model_dump(mode="json") if hasattr(section, "model_dump") else section,
                "alerts": out,
            }
        )

    @r.get("/schedule", summary="Scheduled actions not yet due")
    async def schedule_list(st: State, _: Reader) -> Response:
        items = [
            {
                "schedule_id": sid,
                "account": s["account"],
                "action": s["action"],
                "at": iso(s["at"]),
                "operator": s["operator"].name,
                "params": s["params"],
            }
            for sid, s in st.guard.protection.schedule.items()
        ]
        return Json({"schedule": items})

    @r.get("/config", summary="The configuration in force (tokens hidden)")
    async def config_get(st: State, _: Reader) -> Response:
        w = st.writer
        running = st.guard.config.model_dump(mode="json")
        file_cfg = w.loaded.config.model_dump(mode="json") if w is not None else None
        return Json(
            {
                "path": str(w.loaded.path) if w is not None else None,
                "source": w.loaded.source if w is not None else None,
                "writable": w is not None,
                "file_differs": file_cfg is not None and file_cfg != running,
                "config": running,
            }
        )

    @r.get("/schemas", summary="JSON Schemas of the WebSocket messages, by channel")
    async def schemas(_: Reader) -> Response:
        return Json({"channels": {name: f"{WS_PREFIX}/{name}" for name in CHANNELS}, "schemas": message_schemas()})

    # ------------------------------------------------------------------ risk analytics (reads)
    @r.get("/analytics/book", summary="Book VaR/ES (parametric, historical, Monte Carlo), named scenarios, margin")
    async def analytics_book(st: State, _: Reader) -> Response:
        return _analytics(st.guard.book_risk)

    @r.get("/analytics/scenarios", summary="The configured named stress scenarios ([risk] scenarios)")
    async def analytics_scenarios(st: State, _: Reader) -> Response:
        return Json({"scenarios": [s.model_dump(mode="json") for s in st.guard.config.risk.scenarios]})

    @r.post("/analytics/stress", summary="Apply a named or ad-hoc stress scenario to the book (nothing changes)")
    async def analytics_stress(body: StressRequest, st: State, _: Reader) -> Response:
        scenario: dict[str, Any] | str
        if body.scenario is not None:
            scenario = body.scenario
        else:
            scenario = body.model_dump(exclude_none=True, include={"name", "description", "moves", "vol_shocks"})
        return _analytics(lambda: st.guard.stress(scenario, body.top))

    @r.get("/analytics/grid/{account_id}", summary="One account under price moves x volatility shocks")
    async def analytics_grid(
        account_id: str,
        st: State,
        _: Reader,
        price_moves: Annotated[
            str | None, Query(max_length=4000, description="comma-separated fractions, e.g. -0.2,-0.1,0,0.1")
        ] = None,
        vol_shocks: Annotated[
            str | None, Query(max_length=4000, description="comma-separated relative shocks, e.g. 0,0.5,1")
        ] = None,
    ) -> Response:
        account(st, account_id)
        moves, shocks = _fractions("price_moves", price_moves), _fractions("vol_shocks", vol_shocks)
        return _analytics(lambda: st.guard.scenario_grid(account_id, moves, shocks))

    @r.post("/analytics/what-if/{account_id}", summary="The account after a hypothetical fill (nothing is sent)")
    async def analytics_what_if(account_id: str, body: WhatIfRequest, st: State, _: Reader) -> Response:
        account(st, account_id)
        return _analytics(lambda: st.guard.what_if(account_id, body.symbol, body.side, body.qty, body.price))

    # ------------------------------------------------------------------ changes
    @r.post("/deleverage/{account_id}", response_model=CommandResponse, summary="Deleverage (or plan: dry_run)")
    async def deleverage(account_id: str, body: DeleverageRequest, op: Op, st: State) -> Response:
        params = body.model_dump(exclude_none=True)
        if body.confirm_plan is not None:
            params["confirm_plan"] = [o.model_dump() for o in body.confirm_plan]
        return await run_command(st, "deleverage", op, account_id=account_id, **params)

    @r.post("/liquidate/{account_id}", response_model=CommandResponse, summary="Force liquidation (confirm = id)")
    async def liquidate(account_id: str, body: LiquidateRequest, op: Op, st: State) -> Response:
        return await run_command(
            st,
            "liquidate",
            op,
            account_id=account_id,
            invalid=lambda: body.confirm != account_id,
            **body.model_dump(exclude_none=True),
        )

    @r.post("/thresholds/{account_id}", response_model=CommandResponse, summary="Set the account's thresholds")
    async def thresholds_set(account_id: str, body: ThresholdsRequest, op: Op, st: State) -> Response:
        return await run_command(st, "set_thresholds", op, account_id=account_id, **body.model_dump(exclude_none=True))

    @r.post("/hold/{account_id}", response_model=CommandResponse, summary="Hold automatic action for a while")
    async def hold(account_id: str, body: HoldRequest, op: Op, st: State) -> Response:
        return await run_command(st, "hold", op, account_id=account_id, **body.model_dump())

    @r.post("/resume/{account_id}", response_model=CommandResponse, summary="End a hold")
    async def resume(
        account_id: str, op: Op, st: State, body: Annotated[OptionalReasonRequest | None, Body()] = None
    ) -> Response:
        return await run_command(st, "resume", op, account_id=account_id, reason=body.reason if body else "")

    @r.post("/reset/{account_id}", response_model=CommandResponse, summary="Re-enable trading on a halted account")
    async def reset(account_id: str, body: ReasonRequest, op: Op, st: State) -> Response:
        return await run_command(st, "reset", op, account_id=account_id, reason=body.reason)

    @r.post("/kill-switch", response_model=CommandResponse, summary="Engage or release the kill switch")
    async def kill_switch(body: KillSwitchRequest, op: Op, st: State) -> Response:
        return await run_command(st, "kill_switch", op, engage=body.engage, reason=body.reason)

    @r.post("/breaker/release", response_model=CommandResponse, summary="Release the tripped circuit breaker")
    async def release_breaker(body: ReasonRequest, op: Op, st: State) -> Response:
        return await run_command(st, "release_breaker", op, reason=body.reason)

    @r.post("/schedule", response_model=CommandResponse, summary="Schedule a deleverage or liquidation")
    async def schedule_add(body: ScheduleRequest, op: Op, st: State) -> Response:
        inner = dict(body.params)
        model = DeleverageRequest if body.action == "deleverage" else LiquidateRequest
        try:
            checked = model.model_validate(inner)
        except Exception as exc:
            errors = getattr(exc, "errors", lambda: [])()
            text = "; ".join(
                f"params.{'.'.join(str(x) for x in e['loc'])}: "
                + ("unknown field" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, "))
                for e in errors
            )
            raise HTTPException(422, text or f"params: {exc}") from None
        params = checked.model_dump(exclude_none=True, exclude_unset=True)
        if "confirm_plan" in params:
            params["confirm_plan"] = [dict(o) for o in params["confirm_plan"]]
        when: dict[str, Any] = {}
        if body.at is not None:
            at = body.at if body.at.tzinfo else body.at.replace(tzinfo=UTC)
            when["at"] = at.isoformat()
        else:
            when["in_seconds"] = body.in_seconds
        return await run_command(st, "schedule", op, account_id=body.account, action=body.action, params=params, **when)

    @r.delete("/schedule/{schedule_id}", response_model=CommandResponse, summary="Cancel a scheduled action")
    async def schedule_cancel(schedule_id: str, op: Op, st: State) -> Response:
        return await run_command(
            st,
            "cancel_schedule",
            op,
            schedule_id=schedule_id,
            not_found=lambda: schedule_id not in st.guard.protection.schedule,
        )

    @r.post("/alerts/{alert_id}/ack", response_model=CommandResponse, summary="Acknowledge an alert")
    async def acknowledge(alert_id: str, op: Op, st: State) -> Response:
        def missing() -> bool:
            return not any(rec.get("alert_id") == alert_id for rec in st.guard.journal.records(kind="alert"))

        return await run_command(st, "acknowledge", op, alert_id=alert_id, not_found=missing)

    @r.put("/alerts", summary="Change the [alerts] section (merge; null deletes a key)")
    async def alerts_put(body: Annotated[dict[str, Any], Body()], op: Op, st: State) -> Response:
        return _write_config(st, op, body, "alerts")

    @r.put("/config", summary="Change the configuration file (merge; validated whole; comments kept)")
    async def config_put(body: Annotated[dict[str, Any], Body()], op: Op, st: State) -> Response:
        return _write_config(st, op, body, None)

    app.include_router(r)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics(st: State, _: Reader) -> Response:
        return Response(render(st), media_type="text/plain; version=0.0.4; charset=utf-8")

    # ------------------------------------------------------------------ live channels
    @app.websocket(WS_PREFIX + "/{channel}")
    async def live(websocket: WebSocket, channel: str) -> None:
        st: ApiState = websocket.app.state.api
        ch = st.channels.get(channel)
        if ch is None or not origin_allowed(websocket.headers.get("origin"), st.config):
            await websocket.close(code=1008)
            return
        if st.tokens.configured and st.tokens.lookup(bearer(websocket.headers.get("authorization"))) is None:
            await websocket.close(code=1008)
            return
        await websocket.accept()
        client = ch.join()
        sender = asyncio.get_running_loop().create_task(_pump(websocket, client, ch))
        receiver = asyncio.get_running_loop().create_task(_drain(websocket))
        try:
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ch.leave(client)
            for t in (sender, receiver):
                t.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)
            with contextlib.suppress(Exception):
                await websocket.close()

    return app


async def _pump(websocket: WebSocket, client: Client, ch: Channel) -> None:
    from engine.api.channels import SEND_TIMEOUT

    while True:
        text = await client.next(ch)
        try:
            await asyncio.wait_for(websocket.send_text(text), timeout=SEND_TIMEOUT)
        except TimeoutError:
            ch.dropped_clients += 1
            return
        client.sent += 1


async def _drain(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, until it goes away."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
