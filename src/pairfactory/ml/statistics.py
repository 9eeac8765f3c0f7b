"""Paired comparisons of two models over the same cross-validation folds."""

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
