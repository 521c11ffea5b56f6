"""Distribution helpers without scipy: the standard normal CDF, density and quantile, empirical
tail figures (VaR, ES) of a sample, and correlated normal / Student-t draws.

All functions are vectorised over numpy arrays.
"""

from __future__ import annotations

import math

import numpy as np

_SQRT_2PI = math.sqrt(2.0 * math.pi)

# Hart (1968) double-precision rational approximation of the normal tail, as given by G. West,
# "Better approximations to cumulative normal functions" (2005), used below |x| = 3.
_HART_P = (0.0352624965998911, 0.700383064443688, 6.37396220353165, 33.912866078383, 112.079291497871,
           221.213596169931, 220.206867912376)  # fmt: skip
_HART_Q = (0.0883883476483184, 1.75566716318264, 16.064177579207, 86.7807322029461, 296.564248779674,
           637.333633378831, 793.826512519948, 440.413735824752)  # fmt: skip

# Acklam's rational approximation of the normal quantile (relative error < 1.2e-9), refined
# below with one Halley step on the CDF above.
_ACKLAM_A = (-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.3577518672690, -30.66479806614716,
             2.506628277459239)  # fmt: skip
_ACKLAM_B = (-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572)
_ACKLAM_C = (-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968,
             2.938163982698783)  # fmt: skip
_ACKLAM_D = (0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416)
_ACKLAM_LOW = 0.02425


def _poly(coefs: tuple[float, ...], x: np.ndarray) -> np.ndarray:
    out = np.full_like(x, coefs[0])
    for c in coefs[1:]:
        out = out * x + c
    return out


def normal_pdf(x: np.ndarray | float) -> np.ndarray:
    """Standard normal density."""
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-0.5 * x * x) / _SQRT_2PI


def normal_cdf(x: np.ndarray | float) -> np.ndarray:
    """Standard normal CDF N(x) to double precision, relative accuracy kept in the lower tail.

    N(-|x|) is Hart's rational approximation below |x| = 3 (relative error < 2e-14) and
    Laplace's continued fraction for the Mills ratio, N(-a) = pdf(a) / (a + 1/(a + 2/(a + ...))),
    with 40 terms from 3 on (relative error < 2e-14).
    """
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    tail = np.empty_like(a)  # N(-|x|)
    near = a < 3.0
    an = a[near]
    tail[near] = np.exp(-0.5 * an * an) * _poly(_HART_P, an) / _poly(_HART_Q, an)
    far = ~near  # includes inf and NaN
    af = a[far]
    with np.errstate(over="ignore", invalid="ignore"):
        cf = af.copy()
        for k in range(40, 0, -1):
            cf = af + k / cf
        tail[far] = np.exp(-0.5 * af * af) / cf / _SQRT_2PI
    return np.where(x > 0, 1.0 - tail, tail)


def normal_ppf(p: np.ndarray | float) -> np.ndarray:
    """Standard normal quantile N^-1(p) for p in (0, 1); -inf at 0, +inf at 1, NaN outside.

    Acklam's approximation, then one Halley step x -= u / (1 + x u / 2) with
    u = (N(x) - p) * sqrt(2 pi) * exp(x^2 / 2), computed in the lower tail (q = min(p, 1 - p),
    exact for p >= 0.5) so the upper tail keeps its precision.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.minimum(p, 1.0 - p)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        t = np.sqrt(-2.0 * np.log(q))
        tail = _poly(_ACKLAM_C, t) / (_poly(_ACKLAM_D, t) * t + 1.0)
        r = (q - 0.5) ** 2
        central = (q - 0.5) * _poly(_ACKLAM_A, r) / (_poly(_ACKLAM_B, r) * r + 1.0)
        x = np.where(q < _ACKLAM_LOW, tail, central)
        u = (normal_cdf(x) - q) * _SQRT_2PI * np.exp(0.5 * x * x)
        refined = x - u / (1.0 + 0.5 * x * u)
        x = np.where(np.isfinite(refined), refined, x)
    x = np.where(p > 0.5, -x, x)
    x = np.where(p == 0.0, -np.inf, np.where(p == 1.0, np.inf, x))
    return np.where((p >= 0.0) & (p <= 1.0), x, np.nan)


def tail_rank(n: int, confidence: float) -> int:
    """1-based rank k (ascending) of the VaR loss in a sample of n: k = ceil(n * confidence).

    This is the inverted-CDF quantile (numpy `method="inverted_cdf"`): the smallest loss L with
    empirical P(loss <= L) >= confidence. n * confidence is rounded to 9 decimals first so a
    product like 100 * 0.99 = 98.99999999999999 counts as 99.
    """
    if n < 1:
        raise ValueError("a tail needs at least one observation")
    return min(n, max(1, math.ceil(round(n * confidence, 9))))


def tail_var_es(losses: np.ndarray, confidence: float, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Empirical VaR and expected shortfall of the losses along `axis` (loss positive).

    VaR is the inverted-CDF quantile (see `tail_rank`): with the losses sorted ascending
    L(1) <= ... <= L(n) and k = ceil(n * confidence), VaR = L(k). ES is the mean of L(k)..L(n),
    the n - k + 1 largest losses, so ES >= VaR. NaN along the axis gives NaN.
    """
    losses = np.asarray(losses, dtype=np.float64)
    n = losses.shape[axis]
    k = tail_rank(n, confidence) - 1
    part = np.partition(losses, k, axis=axis)
    top = np.take(part, np.arange(k, n), axis=axis)
    var = np.take(part, k, axis=axis)
    es = top.mean(axis=axis)
    bad = np.isnan(losses).any(axis=axis)
    return np.where(bad, np.nan, var), np.where(bad, np.nan, es)


def covariance_factor(cov: np.ndarray) -> np.ndarray:
    """A with A @ A.T == cov, from the eigen-decomposition (eigenvalues below 0 from rounding
    are clipped), so singular matrices (perfectly correlated instruments) are fine."""
    w, v = np.linalg.eigh(np.asarray(cov, dtype=np.float64))
    return v * np.sqrt(np.clip(w, 0.0, None))


def correlated_draws(
    factor: np.ndarray,
    n_paths: int,
    rng: np.random.Generator,
    distribution: str = "normal",
    degrees_of_freedom: float = 5.0,
) -> np.ndarray:
    """n_paths x n draws with covariance factor @ factor.T and mean 0.

    normal: Z @ factor.T with Z standard normal. student_t: a multivariate t with the same
    covariance, Z @ factor.T * sqrt((nu - 2) / W) with W ~ chi-square(nu) per path (one W per
    path: joint fat tails), needing nu > 2.
    """
    z = rng.standard_normal((n_paths, factor.shape[0]))
    x = z @ factor.T
    if distribution == "normal":
        return x
    if distribution != "student_t":
        raise ValueError(f"distribution must be 'normal' or 'student_t', got {distribution!r}")
    nu = float(degrees_of_freedom)
    if not (math.isfinite(nu) and nu > 2.0):
        raise ValueError(f"student_t needs degrees_of_freedom > 2, got {degrees_of_freedom!r}")
    w = rng.chisquare(nu, n_paths)
    x *= np.sqrt((nu - 2.0) / w)[:, None]
    return x
