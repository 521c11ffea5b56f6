"""Dynamic thresholds: the configured base thresholds adjusted per account.

Four factors each give a fraction `a` (0.10 = +10%):

* size        - the equity band the account falls in (bigger accounts are harder to unwind);
* risk class  - the account's strategy risk class (unknown classes adjust by 0 and are reported);
* volatility  - the regime (calm / elevated / stressed) of the notional-weighted annualised
                realised volatility of the instruments the account holds;
* drawdown    - the band of the account's drawdown from its equity peak.

Combination rule (one rule, applied to all three thresholds alike):

    A      = clip(a_size + a_risk + a_volatility + a_drawdown, -max_adjust, +max_adjust)
    raw_t  = base_t * (1 + A)                    for t in warning, critical, liquidation

so each factor moves every threshold by `base_t * a` (before the cap). The invariants are
then enforced by construction, bottom up, each step only ever raising a value:

    liquidation = max(raw_liquidation, floors.liquidation, 1.0 + venue_margin)
    critical    = max(raw_critical,    floors.critical,    liquidation + min_gap)
    warning     = max(raw_warning,     floors.warning,     critical + min_gap)

hence liquidation < critical < warning (at least min_gap apart), each at or above its floor,
and liquidation at or above 1.0 + venue_margin (venues liquidate at a ratio of 1.0),
whatever the configuration and the inputs.

Size, volatility and drawdown adjustments are non-negative and non-decreasing (validated),
so a bigger account, a more volatile book or a deeper drawdown never lowers a threshold.
Risk-class adjustments are signed. A missing input (NaN) contributes no adjustment.

Per-account overrides (explicit `Thresholds`) take precedence over the dynamic result; they
are not subject to the floors (an override is a deliberate decision) but are still clamped
to the venue invariant, liquidation >= 1.0 + venue_margin, and critical / warning are pushed
up where needed to keep min_gap spacing above it (the same bottom-up steps, floors left out),
so the ordering invariants hold for every account. `explain` reports every clamp.

With `enabled = false` the dynamic layer is off: every account gets the base thresholds
exactly. Overrides still take precedence and are still held to the venue invariant and min_gap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.levels import Thresholds

SECONDS_PER_YEAR = 365.0 * 86400.0  # crypto venues trade around the clock
VOL_REGIMES: tuple[str, ...] = ("calm", "elevated", "stressed")

# A threshold-gap smaller than this could vanish in float rounding next to a ratio of ~1.
MIN_GAP_LOWER_BOUND = 0.001


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SizeBand(Strict):
    """Accounts with equity at or above `min_equity` (up to the next band) adjust by `adjust`."""

    min_equity: float = Field(allow_inf_nan=False, description="quote currency")
    adjust: float = Field(ge=0, le=1, description="fraction added to the total adjustment")


class DrawdownBand(Strict):
    """Accounts whose drawdown is at or above `min_drawdown` (up to the next band) adjust by `adjust`."""

    min_drawdown: float = Field(ge=0, lt=1, description="fraction of the equity peak (0.1 = 10% below the peak)")
    adjust: float = Field(ge=0, le=1, description="fraction added to the total adjustment")


class VolatilityRegimes(Strict):
    """Calm at or below `elevated_above`; elevated up to and including `stressed_above`; stressed above."""

    elevated_above: float = Field(default=0.8, gt=0, le=10, description="annualised realised vol, fraction")
    stressed_above: float = Field(default=1.5, gt=0, le=10, description="annualised realised vol, fraction")
    elevated: float = Field(default=0.0, ge=0, le=1, description="adjustment in the elevated regime")
    stressed: float = Field(default=0.0, ge=0, le=1, description="adjustment in the stressed regime")

    @model_validator(mode="after")
    def _ordered(self) -> VolatilityRegimes:
        if not self.elevated_above < self.stressed_above:
            raise ValueError(
                f"volatility.stressed_above ({self.stressed_above}) must be above "
                f"volatility.elevated_above ({self.elevated_above})"
            )
        if self.stressed < self.elevated:
            raise ValueError(
                f"volatility.stressed ({self.stressed}) must be at least volatility.elevated ({self.elevated}): "
                "higher volatility may not lower thresholds"
            )
        return self


class Floors(Strict):
    """Minimum values of the dynamic thresholds."""

    warning: float = Field(default=1.3, gt=0, le=100)
    critical: float = Field(default=1.15, gt=0, le=100)
    liquidation: float = Field(default=1.05, gt=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> Floors:
        if not (self.liquidation < self.critical < self.warning):
            raise ValueError(
                "floors must satisfy liquidation < critical < warning, got "
                f"liquidation={self.liquidation}, critical={self.critical}, warning={self.warning}"
            )
        return self


RiskAdjust = Annotated[float, Field(ge=-1, le=1)]
RiskClassName = Annotated[str, Field(min_length=1)]


def _check_bands(bands: list[Any], name: str, key: str, what: str) -> list[Any]:
    """Bands sorted strictly by their lower edge `key`, adjusts never decreasing along them."""
    for n in range(1, len(bands)):
        prev, cur = bands[n - 1], bands[n]
        if getattr(cur, key) <= getattr(prev, key):
            raise ValueError(
                f"{name} must be sorted by {key}: {name}[{n}] {key} {getattr(cur, key)} "
                f"is not above {name}[{n - 1}] {key} {getattr(prev, key)}"
            )
        if cur.adjust < prev.adjust:
            raise ValueError(
                f"{name} adjusts must not decrease with {what}: {name}[{n}] adjust {cur.adjust} "
                f"is below {name}[{n - 1}] adjust {prev.adjust}"
            )
    return bands


class DynamicThresholdsConfig(Strict):
    """The `[dynamic_thresholds]` section. The defaults are neutral and switched off."""

    enabled: bool = False
    size_bands: list[SizeBand] = Field(default_factory=list)
    risk_classes: dict[RiskClassName, RiskAdjust] = Field(default_factory=dict)
    volatility: VolatilityRegimes = Field(default_factory=VolatilityRegimes)
    drawdown_bands: list[DrawdownBand] = Field(default_factory=list)
    floors: Floors = Field(default_factory=Floors)
    venue_margin: float = Field(default=0.05, ge=0, le=1, description="liquidation >= 1.0 + venue_margin")
    min_gap: float = Field(
        default=0.05, ge=MIN_GAP_LOWER_BOUND, le=1, description="minimum spacing between consecutive thresholds"
    )
    max_adjust: float = Field(default=0.5, ge=0, lt=1, description="cap on |total adjustment|")

    @field_validator("size_bands")
    @classmethod
    def _size_bands_sorted(cls, bands: list[SizeBand]) -> list[SizeBand]:
        return _check_bands(bands, "size_bands", "min_equity", "equity")

    @field_validator("drawdown_bands")
    @classmethod
    def _drawdown_bands_sorted(cls, bands: list[DrawdownBand]) -> list[DrawdownBand]:
        return _check_bands(bands, "drawdown_bands", "min_drawdown", "drawdown")


# ---------------------------------------------------------------------------------------
# Inputs: realised volatility, account volatility, drawdown
# ---------------------------------------------------------------------------------------


def realised_volatility(prices: np.ndarray, dt_seconds: float) -> np.ndarray:
    """Annualised realised volatility of each column of a T x N history of marks (oldest first).

    From log returns r between consecutive rows: sqrt(mean(r^2) * seconds_per_year / dt_seconds)
    (zero-mean realised variance, 365-day year). Returns that are not finite (a missing or
    non-positive mark) are left out; a column with no usable return gives NaN.
    """
    p = np.asarray(prices, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"prices must be a T x N array, got shape {p.shape}")
    if not (math.isfinite(dt_seconds) and dt_seconds > 0):
        raise ValueError(f"dt_seconds must be a positive finite number, got {dt_seconds!r}")
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.diff(np.log(np.where(p > 0, p, np.nan)), axis=0)
    ok = np.isfinite(r)
    count = ok.sum(axis=0)
    sq = np.where(ok, r, 0.0) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.where(count > 0, sq.sum(axis=0) / np.maximum(count, 1), np.nan)
    return np.sqrt(var * (SECONDS_PER_YEAR / dt_seconds))


def account_volatility(
    pos_account: np.ndarray,
    pos_instrument: np.ndarray,
    notional: np.ndarray,
    inst_vol: np.ndarray,
    n_accounts: int,
) -> np.ndarray:
    """Notional-weighted volatility of the instruments each account holds.

    vol[a] = sum(|notional_p| * inst_vol[instrument_p]) / sum(|notional_p|) over the positions p
    of account a. Positions on an instrument with unknown (NaN) volatility are left out; an
    account with no weighted position gets 0 (nothing held, nothing volatile).
    """
    acct = np.asarray(pos_account, dtype=np.int64)
    inst = np.asarray(pos_instrument, dtype=np.int64)
    w = np.abs(np.asarray(notional, dtype=np.float64))
    vol = np.asarray(inst_vol, dtype=np.float64)
    if not (acct.shape == inst.shape == w.shape) or acct.ndim != 1:
        raise ValueError("pos_account, pos_instrument and notional must be 1-D arrays of one length")
    v = vol[inst]
    ok = np.isfinite(v) & np.isfinite(w)
    w = np.where(ok, w, 0.0)
    total_w = np.bincount(acct, weights=w, minlength=n_accounts)
    total_wv = np.bincount(acct, weights=w * np.where(ok, v, 0.0), minlength=n_accounts)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total_w > 0, total_wv / total_w, 0.0)


def drawdown(equity: np.ndarray, peak: np.ndarray) -> np.ndarray:
    """Drawdown from the equity peak: max(0, 1 - equity / peak), 0 where peak <= 0."""
    e = np.asarray(equity, dtype=np.float64)
    pk = np.asarray(peak, dtype=np.float64)
    positive = pk > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = 1.0 - e / np.where(positive, pk, 1.0)
    return np.where(positive, np.maximum(dd, 0.0), 0.0)


# ---------------------------------------------------------------------------------------
# The computation, shared by effective_thresholds and explain
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Factors:
    size: np.ndarray
    size_band: np.ndarray  # index into size_bands, -1 below the first band (or NaN equity)
    risk: np.ndarray
    risk_known: np.ndarray
    vol: np.ndarray
    vol_regime: np.ndarray  # 0 calm, 1 elevated, 2 stressed
    dd: np.ndarray
    dd_band: np.ndarray  # index into drawdown_bands, -1 below the first band (or NaN drawdown)
    total: np.ndarray
    applied: np.ndarray  # total clipped to [-max_adjust, +max_adjust]


@dataclass(frozen=True)
class _Ladder:
    """Each stage of the enforcement, (warning, critical, liquidation) arrays."""

    raw: tuple[np.ndarray, np.ndarray, np.ndarray]
    floored: tuple[np.ndarray, np.ndarray, np.ndarray]
    result: tuple[np.ndarray, np.ndarray, np.ndarray]


def _band_index(edges: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Index of the last edge <= x, -1 below the first edge or for NaN."""
    idx = np.searchsorted(edges, x, side="right") - 1
    return np.where(np.isnan(x), -1, idx)


def _factors(
    cfg: DynamicThresholdsConfig,
    equity: np.ndarray,
    risk_class: np.ndarray,
    realised_vol: np.ndarray,
    dd: np.ndarray,
) -> _Factors:
    size_edges = np.array([b.min_equity for b in cfg.size_bands], dtype=np.float64)
    size_adj = np.array([0.0] + [b.adjust for b in cfg.size_bands])
    size_band = _band_index(size_edges, equity)

    dd_edges = np.array([b.min_drawdown for b in cfg.drawdown_bands], dtype=np.float64)
    dd_adj = np.array([0.0] + [b.adjust for b in cfg.drawdown_bands])
    dd_band = _band_index(dd_edges, dd)

    v = cfg.volatility
    regime = (realised_vol > v.elevated_above).astype(np.int64) + (realised_vol > v.stressed_above)
    vol_adj = np.array([0.0, v.elevated, v.stressed])

    names, inverse = np.unique(risk_class, return_inverse=True)
    inverse = inverse.reshape(-1)
    known_u = np.array([str(n) in cfg.risk_classes for n in names], dtype=bool)
    risk_u = np.array([cfg.risk_classes.get(str(n), 0.0) for n in names], dtype=np.float64)

    size = size_adj[size_band + 1]
    risk = risk_u[inverse]
    vol = vol_adj[regime]
    ddf = dd_adj[dd_band + 1]
    total = size + risk + vol + ddf
    return _Factors(
        size=size,
        size_band=size_band,
        risk=risk,
        risk_known=known_u[inverse],
        vol=vol,
        vol_regime=regime,
        dd=ddf,
        dd_band=dd_band,
        total=total,
        applied=np.clip(total, -cfg.max_adjust, cfg.max_adjust),
    )


def _ladder(
    cfg: DynamicThresholdsConfig,
    warning: np.ndarray,
    critical: np.ndarray,
    liquidation: np.ndarray,
    floors: bool,
) -> _Ladder:
    """Enforce the invariants bottom up on (raw) thresholds; floors are skipped for overrides."""
    if floors:
        fw = np.maximum(warning, cfg.floors.warning)
        fc = np.maximum(critical, cfg.floors.critical)
        fl = np.maximum(liquidation, cfg.floors.liquidation)
    else:
        fw, fc, fl = warning, critical, liquidation
    lq = np.maximum(fl, 1.0 + cfg.venue_margin)
    cr = np.maximum(fc, lq + cfg.min_gap)
    wa = np.maximum(fw, cr + cfg.min_gap)
    return _Ladder(raw=(warning, critical, liquidation), floored=(fw, fc, fl), result=(wa, cr, lq))


def _as_inputs(
    equity: Any, risk_class: Any, realised_vol: Any, dd: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    e = np.asarray(equity, dtype=np.float64).reshape(-1)
    v = np.asarray(realised_vol, dtype=np.float64).reshape(-1)
    d = np.asarray(dd, dtype=np.float64).reshape(-1)
    rc = np.asarray(risk_class, dtype=object).reshape(-1).astype(str)
    n = e.size
    for name, arr in (("risk_class", rc), ("realised_vol", v), ("drawdown", d)):
        if arr.size != n:
            raise ValueError(f"{name} must hold one value per account ({n}), got {arr.size}")
    return e, rc, v, d


def effective_thresholds(
    base: Thresholds,
    cfg: DynamicThresholdsConfig,
    equity: np.ndarray,
    risk_class: np.ndarray,
    realised_vol: np.ndarray,
    drawdown: np.ndarray,
    overrides: dict[int, Thresholds] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-account (warning, critical, liquidation) arrays; see the module docstring for the rule.

    `overrides` maps an account index to its explicit thresholds, which take precedence; they
    are clamped to the venue invariant and the min_gap spacing, not to the floors.
    """
    e, rc, v, d = _as_inputs(equity, risk_class, realised_vol, drawdown)
    n = e.size
    if cfg.enabled:
        f = _factors(cfg, e, rc, v, d)
        scale = 1.0 + f.applied
        lad = _ladder(cfg, base.warning * scale, base.critical * scale, base.liquidation * scale, floors=True)
        warning, critical, liquidation = (np.array(x, dtype=np.float64, copy=True) for x in lad.result)
    else:
        warning = np.full(n, base.warning, dtype=np.float64)
        critical = np.full(n, base.critical, dtype=np.float64)
        liquidation = np.full(n, base.liquidation, dtype=np.float64)
    if overrides:
        idx = np.fromiter(overrides.keys(), dtype=np.int64, count=len(overrides))
        bad = idx[(idx < 0) | (idx >= n)]
        if bad.size:
            raise ValueError(f"overrides: account index {int(bad[0])} is out of range (0..{n - 1})")
        o = list(overrides.values())
        lad = _ladder(
            cfg,
            np.array([t.warning for t in o], dtype=np.float64),
            np.array([t.critical for t in o], dtype=np.float64),
            np.array([t.liquidation for t in o], dtype=np.float64),
            floors=False,
        )
        warning[idx], critical[idx], liquidation[idx] = lad.result
    return warning, critical, liquidation


def unknown_risk_classes(cfg: DynamicThresholdsConfig, risk_class: np.ndarray) -> list[str]:
    """The risk classes in use that the configuration does not list (they adjust by 0), sorted."""
    names = np.unique(np.asarray(risk_class, dtype=object).reshape(-1).astype(str))
    return [str(n) for n in names if str(n) not in cfg.risk_classes]


# ---------------------------------------------------------------------------------------
# explain
# ---------------------------------------------------------------------------------------

_NAMES = ("warning", "critical", "liquidation")


def _triple(values: tuple[Any, Any, Any]) -> dict[str, float]:
    return {name: float(np.asarray(x).reshape(-1)[0]) for name, x in zip(_NAMES, values, strict=True)}


def _clamp_reasons(cfg: DynamicThresholdsConfig, lad: _Ladder, who: str, floors: bool) -> list[str]:
    raw, floored, result = _triple(lad.raw), _triple(lad.floored), _triple(lad.result)
    reasons: list[str] = []
    if floors:
        for name in reversed(_NAMES):
            limit = getattr(cfg.floors, name)
            if floored[name] != raw[name]:
                reasons.append(f"{who}{name} {raw[name]:.6g} is below its floor: raised to floors.{name} {limit:.6g}")
    venue = 1.0 + cfg.venue_margin
    if result["liquidation"] != floored["liquidation"]:
        reasons.append(
            f"{who}liquidation {floored['liquidation']:.6g} is below the venue floor "
            f"1.0 + venue_margin = {venue:.6g}: raised to {result['liquidation']:.6g}"
        )
    for name, below in (("critical", "liquidation"), ("warning", "critical")):
        if result[name] != floored[name]:
            reasons.append(
                f"{who}{name} {floored[name]:.6g} is less than min_gap {cfg.min_gap:.6g} above {below} "
                f"{result[below]:.6g}: raised to {result[name]:.6g}"
            )
    return reasons


def explain(
    base: Thresholds,
    cfg: DynamicThresholdsConfig,
    equity: float,
    risk_class: str,
    realised_vol: float,
    drawdown: float,
    override: Thresholds | None = None,
) -> dict[str, Any]:
    """How one account's thresholds were reached; `result` equals effective_thresholds for it.

    Each factor reports its input, the band or regime it fell in, its adjustment and the delta
    it makes to each threshold (base * adjust, before the max_adjust cap). `clamped` lists
    every cap and clamp applied, in order; `override` the override used (None without one).
    With an override, `clamped` lists the clamps applied to the override, and `superseded`
    holds the dynamic result it replaced with that result's own clamps.
    """
    e, rc, v, d = _as_inputs([equity], [risk_class], [realised_vol], [drawdown])
    w, c, lq = effective_thresholds(base, cfg, e, rc, v, d, {0: override} if override is not None else None)
    base_d = base.model_dump()
    out: dict[str, Any] = {
        "base": base_d,
        "enabled": cfg.enabled,
        "factors": [],
        "total_adjust": 0.0,
        "applied_adjust": 0.0,
        "adjusted": dict(base_d),
        "clamped": [],
        "override": None,
        "result": {"warning": float(w[0]), "critical": float(c[0]), "liquidation": float(lq[0])},
    }
    if cfg.enabled:
        f = _factors(cfg, e, rc, v, d)

        def factor(name: str, value: Any, adjust: float, **detail: Any) -> dict[str, Any]:
            entry = {"name": name, "input": value, "adjust": adjust, **detail}
            entry.update({t: base_d[t] * adjust for t in _NAMES})
            return entry

        sb, db = int(f.size_band[0]), int(f.dd_band[0])
        known = bool(f.risk_known[0])
        risk_detail: dict[str, Any] = {"known": known}
        if not known:
            risk_detail["note"] = f"unknown risk class {str(rc[0])!r}: not in risk_classes, adjusts by 0"
        out["factors"] = [
            factor("size", float(e[0]), float(f.size[0]), band=cfg.size_bands[sb].model_dump() if sb >= 0 else None),
            factor("risk_class", str(rc[0]), float(f.risk[0]), **risk_detail),
            factor("volatility", float(v[0]), float(f.vol[0]), regime=VOL_REGIMES[int(f.vol_regime[0])]),
            factor(
                "drawdown",
                float(d[0]),
                float(f.dd[0]),
                band=cfg.drawdown_bands[db].model_dump() if db >= 0 else None,
            ),
        ]
        total, applied = float(f.total[0]), float(f.applied[0])
        out["total_adjust"], out["applied_adjust"] = total, applied
        scale = 1.0 + f.applied
        lad = _ladder(cfg, base.warning * scale, base.critical * scale, base.liquidation * scale, floors=True)
        out["adjusted"] = _triple(lad.raw)
        if applied != total:
            out["clamped"].append(
                f"total adjustment {total:+.6g} capped at {applied:+.6g} (max_adjust {cfg.max_adjust:.6g})"
            )
        out["clamped"].extend(_clamp_reasons(cfg, lad, "", floors=True))
        dynamic_result = _triple(lad.result)
    else:
        dynamic_result = dict(base_d)
    if override is not None:
        # The override replaces the dynamic result: what the factors gave is kept for reference,
        # and `clamped` lists only what was done to the override.
        out["superseded"] = {"result": dynamic_result, "clamped": out["clamped"]}
        out["override"] = override.model_dump()
        lad = _ladder(
            cfg,
            np.array([override.warning]),
            np.array([override.critical]),
            np.array([override.liquidation]),
            floors=False,
        )
        out["clamped"] = _clamp_reasons(cfg, lad, "override ", floors=False)
    return out
