"""Statistics of model comparisons: paired differences over the same cross-validation folds, and
what a quantity adds to a model's prediction (partial correlation)."""

from __future__ import annotations

import math

import numpy as np


def corrected_resampled_t(
    differences: np.ndarray, n_train: float, n_test: float
) -> tuple[float, float, float]:
    """(half-width of the 95 % interval, t, two-sided p) of the mean of the per-fold
    ``differences``, by the corrected resampled t-test (Nadeau & Bengio 2003): the variance of the
    mean is inflated by ``n_test / n_train`` because the training sets of the folds overlap. NaN
    with fewer than two folds or no spread."""
    from scipy import stats

    differences = np.asarray(differences, dtype=np.float64)
    k = len(differences)
    if k < 2:
        return math.nan, math.nan, math.nan
    variance = np.var(differences, ddof=1) * (1.0 / k + n_test / n_train)
    if variance <= 0:
        return math.nan, math.nan, math.nan
    t = float(np.mean(differences) / math.sqrt(variance))
    p = float(2 * stats.t.sf(abs(t), df=k - 1))
    return float(stats.t.ppf(0.975, df=k - 1) * math.sqrt(variance)), t, p


def partial_correlation(
    x: np.ndarray, y: np.ndarray, given: list[np.ndarray]
) -> tuple[float, float, float, int]:
    """(r, 95 % interval low, high, n): Pearson r of ``x`` and ``y`` after a least-squares fit of
    each on a constant and the ``given`` columns, over the entries where all are finite. With a
    model's prediction as ``given`` it asks what ``x`` knows of ``y`` that the model does not. The
    interval is Fisher's z with n − 3 − len(given) degrees of freedom; NaN where n is too small or
    a residual is constant."""
    from scipy import stats

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    for column in given:
        ok &= np.isfinite(np.asarray(column, dtype=np.float64))
    n = int(ok.sum())
    dof = n - 3 - len(given)
    if dof <= 0:
        return math.nan, math.nan, math.nan, n
    design = np.column_stack([np.ones(n), *(np.asarray(g, dtype=np.float64)[ok] for g in given)])
    rx = x[ok] - design @ np.linalg.lstsq(design, x[ok], rcond=None)[0]
    ry = y[ok] - design @ np.linalg.lstsq(design, y[ok], rcond=None)[0]
    if np.std(rx) == 0 or np.std(ry) == 0:
        return math.nan, math.nan, math.nan, n
    r = float(stats.pearsonr(rx, ry)[0])
    z, half = math.atanh(min(max(r, -0.999999), 0.999999)), 1.96 / math.sqrt(dof)
    return r, math.tanh(z - half), math.tanh(z + half), n
