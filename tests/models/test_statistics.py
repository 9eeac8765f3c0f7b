"""pairfactory.ml.statistics.partial_correlation: what a quantity knows of a target beyond a
model's prediction."""

from __future__ import annotations

import math

import numpy as np

from pairfactory.ml.statistics import partial_correlation


def test_a_quantity_that_only_repeats_the_prediction_adds_nothing() -> None:
    rng = np.random.default_rng(0)
    pred = rng.normal(size=2000)
    y = pred + rng.normal(size=2000)
    echo = 2.0 * pred + 0.1 * rng.normal(size=2000)  # correlates with y, but only through pred
    r, lo, hi, n = partial_correlation(echo, y, [pred])
    assert np.corrcoef(echo, y)[0, 1] > 0.6
    assert n == 2000 and lo < 0 < hi and abs(r) < 0.05


def test_a_quantity_that_knows_the_residual_is_found_with_its_interval() -> None:
    rng = np.random.default_rng(1)
    pred, hidden = rng.normal(size=400), rng.normal(size=400)
    y = pred + hidden
    x = hidden + rng.normal(size=400)  # r(x, hidden) = 1/√2
    r, lo, hi, n = partial_correlation(x, y, [pred])
    assert lo < r < hi and lo > 0.6 and hi < 0.8
    # entries where anything is missing are left out, and counted
    x[:10] = np.nan
    assert partial_correlation(x, y, [pred])[3] == 390


def test_too_few_pairs_for_the_interval_give_nan() -> None:
    x, y, g = np.arange(5.0), np.arange(5.0) ** 2, np.sin(np.arange(5.0))
    r, lo, hi, n = partial_correlation(x, y, [g, g**2])
    assert n == 5 and all(math.isnan(v) for v in (r, lo, hi))
