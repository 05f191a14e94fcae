"""Quantile function of the Beta distribution, for the `beta` sigma schedule (no scipy needed).

ComfyUI's beta scheduler calls `scipy.stats.beta.ppf` and rounds the result to a timestep index, so
only the first ~12 digits matter: a continued fraction for the regularized incomplete beta function
and a bisection on it give the quantile to the last bit or two of a float64.
"""
from __future__ import annotations

import math

_CONTINUED_FRACTION_TERMS = 500
_RELATIVE_TOLERANCE = 1e-16
_TINY = 1e-300


def _incomplete_beta_fraction(x: float, a: float, b: float) -> float:
    """Continued fraction of I_x(a, b) (modified Lentz's method), valid for x < (a + 1) / (a + b + 2)."""
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    fraction = d
    for m in range(1, _CONTINUED_FRACTION_TERMS + 1):
        # even term d_{2m}, then odd term d_{2m+1} of the classic expansion
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            fraction *= c * d
        if abs(c * d - 1.0) < _RELATIVE_TOLERANCE:
            break
    return fraction


def regularized_incomplete_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b): the Beta(a, b) cumulative distribution function at x."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (a * math.log(x) + b * math.log1p(-x)
                 - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _incomplete_beta_fraction(x, a, b) / a
    # the fraction converges fast only below the mean: use I_x(a, b) = 1 - I_{1-x}(b, a)
    return 1.0 - math.exp(log_front) * _incomplete_beta_fraction(1.0 - x, b, a) / b


def beta_ppf(probability: float, a: float, b: float) -> float:
    """The x with I_x(a, b) = probability (inverse CDF), by bisection down to adjacent floats."""
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability {probability} is outside [0, 1]")
    if probability == 0.0:
        return 0.0
    if probability == 1.0:
        return 1.0
    if a == b and probability == 0.5:
        # the median of a symmetric Beta is exactly 1/2; bisection would stop one float short of it,
        # and the beta schedule rounds 0.5 * 999 = 499.5 (to 500, as scipy's result does)
        return 0.5
    low, high = 0.0, 1.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        if regularized_incomplete_beta(middle, a, b) < probability:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)
