"""Quality of predictive uncertainties (Gaussian ``y_pred`` ± ``y_std``) and their post-hoc
calibration.

Metrics, all in target units where they have units:

- ``gaussian_nll``: mean negative log-likelihood of the targets under N(y_pred, y_std²), with the
  constant (nats per point; lower is better);
- ``coverage``: the fraction of targets inside the central interval of probability ``level``
  (y_pred ± z y_std, z = Φ⁻¹((1 + level) / 2)); a calibrated model covers ``level``;
- ``miscalibration_area``: the area between the observed and the expected coverage over levels
  0..1 (Tran et al. 2020, "Methods for comparing uncertainty quantifications for material property
  predictions"; the ``MiscalibrationAreaEvaluator`` of chemprop v2): 0 for a calibrated model, at
  most 0.5;
- ``spearman``: rank correlation, here between |error| and y_std (does a larger σ flag a larger
  error?).

Calibration (``SigmaCalibration``): a factor ``s`` on every σ and, where the predictions know how
far each solute lies from the training solutes, a σ that grows with that distance,

    σ_calibrated² = (s σ)² + (c (1 − similarity))²,

``similarity`` the Tanimoto similarity of the solute to its nearest training solute (Morgan r2,
``pairfactory.ml.applicability``) and ``c`` in target units. Both are fitted on the validation
predictions by maximum likelihood; the test set is never used to fit them. Why the second term: on
the cross-validation folds of FreeSolv-560 and MNSol, the model's own σ (after ``s``) grew less than
the error for solutes unlike any training solute, so 95 % intervals held only 63–84 % of those
errors (``docs/results.md``, "Does the extrapolation flag mean what it says?"). With ``c = 0``
(no similarity given, or none that helps) it is the one-factor calibration, whose NLL is minimized
in closed form by ``s² = mean(((y − μ)/σ)²)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

COVERAGE_LEVELS: dict[str, float] = {"coverage_68": 0.68, "coverage_95": 0.95}
# the least fraction of the one-factor scale that the novelty calibration leaves on the model's σ
MIN_SCALE_FRACTION = 0.25
_LOG_2PI = float(np.log(2.0 * np.pi))


def _arrays(
    y_true: np.ndarray, y_pred: np.ndarray, y_std: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y_true, y_pred, y_std = (
        np.asarray(a, dtype=np.float64).reshape(-1) for a in (y_true, y_pred, y_std)
    )
    if not (y_true.shape == y_pred.shape == y_std.shape) or y_true.size == 0:
        raise ValueError(
            "uncertainty metrics need three equal, non-empty arrays (got "
            f"{y_true.shape}, {y_pred.shape}, {y_std.shape})"
        )
    if not np.all(np.isfinite(y_std) & (y_std > 0)):
        raise ValueError("y_std must be finite and > 0 everywhere")
    return y_true, y_pred, y_std


def gaussian_nll(y_true: np.ndarray, y_pred: np.ndarray, y_std: np.ndarray) -> float:
    """Mean of −log N(y_true | y_pred, y_std²) (with the 0.5 log 2π constant)."""
    y_true, y_pred, y_std = _arrays(y_true, y_pred, y_std)
    z2 = ((y_true - y_pred) / y_std) ** 2
    return float(np.mean(0.5 * (_LOG_2PI + z2) + np.log(y_std)))


def _half_widths(levels: np.ndarray) -> np.ndarray:
    """z such that N(0, 1) puts probability ``level`` in [−z, z] (inf for level 1)."""
    normal = NormalDist()
    return np.array(
        [normal.inv_cdf(0.5 + 0.5 * p) if p < 1.0 else np.inf for p in levels.tolist()],
        dtype=np.float64,
    )


def coverage(y_true: np.ndarray, y_pred: np.ndarray, y_std: np.ndarray, level: float) -> float:
    """Fraction of targets within the central interval of probability ``level`` (0 < level < 1)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), not {level}")
    y_true, y_pred, y_std = _arrays(y_true, y_pred, y_std)
    z = _half_widths(np.array([level]))[0]
    return float(np.mean(np.abs(y_true - y_pred) <= z * y_std))


def coverage_curve(
    y_true: np.ndarray, y_pred: np.ndarray, y_std: np.ndarray, n_levels: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """(expected levels 0, 1/n, ..., 1; observed coverage of each central interval)."""
    y_true, y_pred, y_std = _arrays(y_true, y_pred, y_std)
    expected = np.linspace(0.0, 1.0, n_levels + 1)
    scaled_error = np.sort(np.abs(y_true - y_pred) / y_std)
    # fraction of |error|/σ <= z for every z at once
    observed = np.searchsorted(scaled_error, _half_widths(expected), side="right") / y_true.size
    return expected, observed


def miscalibration_area(
    y_true: np.ndarray, y_pred: np.ndarray, y_std: np.ndarray, n_levels: int = 100
) -> float:
    """Area between the observed and the expected coverage curves (trapezoids over
    ``n_levels`` equal steps of the level)."""
    expected, observed = coverage_curve(y_true, y_pred, y_std, n_levels)
    gap = np.abs(observed - expected)
    return float(np.sum(0.5 * (gap[1:] + gap[:-1]) * np.diff(expected)))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    a = pd.Series(np.asarray(a, dtype=np.float64).reshape(-1)).rank().to_numpy()
    b = pd.Series(np.asarray(b, dtype=np.float64).reshape(-1)).rank().to_numpy()
    if a.shape != b.shape or a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def fit_sigma_scale(y_true: np.ndarray, y_pred: np.ndarray, y_std: np.ndarray) -> float:
    """The factor s minimizing the Gaussian NLL of N(y_pred, (s y_std)²): sqrt(mean(z²)),
    floored at 1e-12 (exact predictions would otherwise give σ = 0, which no metric accepts)."""
    y_true, y_pred, y_std = _arrays(y_true, y_pred, y_std)
    return max(float(np.sqrt(np.mean(((y_true - y_pred) / y_std) ** 2))), 1e-12)


@dataclass(frozen=True)
class SigmaCalibration:
    """σ_calibrated = sqrt((scale σ)² + (novelty_sigma (1 − similarity))²) (module docstring)."""

    scale: float
    novelty_sigma: float = 0.0

    def apply(self, y_std: np.ndarray, similarity: np.ndarray | None = None) -> np.ndarray:
        """The calibrated σ of predictions with model σ ``y_std`` whose solutes have
        ``similarity`` to their nearest training solute (needed when ``novelty_sigma`` > 0)."""
        sigma = np.asarray(y_std, dtype=np.float64) * self.scale
        if self.novelty_sigma == 0.0:
            return sigma
        if similarity is None:
            raise ValueError("this calibration grows σ with novelty: give the solute similarity")
        novelty = 1.0 - np.asarray(similarity, dtype=np.float64)
        return np.sqrt(sigma**2 + (self.novelty_sigma * novelty) ** 2)


def fit_sigma_calibration(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    y_std: np.ndarray,
    similarity: np.ndarray | None = None,
) -> SigmaCalibration:
    """The ``SigmaCalibration`` of maximum likelihood on these predictions: ``scale`` alone
    (closed form) without ``similarity`` or where every solute is a training solute, else
    ``scale`` and ``novelty_sigma`` ≥ 0 together.

    The fit runs in the variance terms a = s² and b = c², in which the variance is linear (so the
    gradient in b does not vanish at b = 0, as it does in c), on errors in units of their root
    mean square (so the result does not depend on the target's units), from several starts (the
    NLL is not convex in the variance); it is never worse on these data than ``scale`` alone."""
    y_true, y_pred, y_std = _arrays(y_true, y_pred, y_std)
    scale = fit_sigma_scale(y_true, y_pred, y_std)
    if similarity is None:
        return SigmaCalibration(scale)
    novelty = 1.0 - np.asarray(similarity, dtype=np.float64).reshape(-1)
    if novelty.shape != y_std.shape or not np.all(np.isfinite(novelty)):
        raise ValueError("similarity must be finite, one value per prediction")
    rms_error = float(np.sqrt(np.mean((y_true - y_pred) ** 2)))
    if not np.any(novelty > 0) or rms_error == 0.0:
        return SigmaCalibration(scale)
    from scipy.optimize import minimize

    squared_error = ((y_true - y_pred) / rms_error) ** 2
    sigma2, novelty2 = (y_std / rms_error) ** 2, novelty**2

    def nll_and_gradient(params: np.ndarray) -> tuple[float, np.ndarray]:
        variance = np.maximum(params[0] * sigma2 + params[1] * novelty2, 1e-300)
        # d(mean NLL)/d(variance) per point; the variance is linear in a and b
        slope = 0.5 / variance - 0.5 * squared_error / variance**2
        value = float(np.mean(0.5 * np.log(variance) + 0.5 * squared_error / variance))
        return value, np.array([np.mean(slope * sigma2), np.mean(slope * novelty2)])

    # The model's own σ keeps at least a quarter of its one-factor weight. Where every
    # calibration solute is new (a solute split's validation set, or FreeSolv's one-pair
    # solutes), the fit can otherwise move nearly all variance into the novelty term and leave
    # a training solute's σ near 0 (on two of the folds of docs/results.md it did).
    floor = (MIN_SCALE_FRACTION * scale) ** 2
    one_factor = np.array([scale**2, 0.0])
    # from the one factor alone, and from splitting the errors' variance between the two terms
    # (the errors are of unit mean square here)
    a_full, b_full = scale**2, 1.0 / float(np.mean(novelty2))
    starts = [one_factor] + [np.array([a_full * (1 - w), b_full * w]) for w in (0.25, 0.5, 0.75)]
    best, best_value = one_factor, nll_and_gradient(one_factor)[0]
    for start in starts:
        result = minimize(
            nll_and_gradient, start, jac=True, method="L-BFGS-B", bounds=[(floor, None), (0, None)]
        )
        value = nll_and_gradient(result.x)[0]
        if value < best_value:
            best, best_value = result.x, value
    return SigmaCalibration(float(np.sqrt(best[0])), float(np.sqrt(best[1])) * rms_error)


def calibration_kind(metrics: Mapping[str, Any]) -> str | None:
    """How a fold's σ was calibrated, from its metrics: "scale" (one factor: folds from before σ
    grew with novelty, which record no ``novelty_sigma``), "novelty", or None (no σ). A value
    missing or NaN (a DataFrame of folds of several versions) counts as unrecorded."""

    def recorded(name: str) -> bool:
        value = metrics.get(name)
        return value is not None and not (isinstance(value, float) and math.isnan(value))

    if not recorded("sigma_scale"):
        return None
    return "novelty" if recorded("novelty_sigma") else "scale"


def uncertainty_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, y_std: np.ndarray
) -> dict[str, float]:
    """nll, miscalibration_area, coverage_68, coverage_95 and spearman_abs_error_std."""
    metrics = {
        "nll": gaussian_nll(y_true, y_pred, y_std),
        "miscalibration_area": miscalibration_area(y_true, y_pred, y_std),
    }
    for name, level in COVERAGE_LEVELS.items():
        metrics[name] = coverage(y_true, y_pred, y_std, level)
    error = np.abs(np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64))
    metrics["spearman_abs_error_std"] = spearman(error, y_std)
    return metrics


def calibrate_predictions(
    predictions: pd.DataFrame, fit_role: str = "valid", report_role: str = "test"
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Calibrate ``y_std`` of every role with the ``SigmaCalibration`` fitted on the ``fit_role``
    rows, growing σ with the solute's novelty where the predictions have ``solute_similarity``.

    ``predictions`` has ``role``, ``y_true``, ``y_pred`` and ``y_std``. Returns a copy whose
    ``y_std`` is calibrated and whose ``y_std_uncalibrated`` holds the model's own σ, and the
    ``report_role`` rows' ``uncertainty_metrics`` (with calibrated σ) plus ``sigma_scale`` and
    ``novelty_sigma``.
    """
    missing = [c for c in ("role", "y_true", "y_pred", "y_std") if c not in predictions]
    if missing:
        raise ValueError(f"predictions lack column(s) {missing}")
    fit = predictions[predictions["role"] == fit_role]
    report = predictions[predictions["role"] == report_role]
    if fit.empty or report.empty:
        raise ValueError(
            f"calibration needs {fit_role!r} and {report_role!r} rows "
            f"(got {len(fit)} and {len(report)})"
        )
    has_similarity = "solute_similarity" in predictions
    calibration = fit_sigma_calibration(
        fit["y_true"],
        fit["y_pred"],
        fit["y_std"],
        fit["solute_similarity"] if has_similarity else None,
    )
    out = predictions.copy()
    out["y_std_uncalibrated"] = out["y_std"].to_numpy(dtype=np.float64)
    out["y_std"] = calibration.apply(
        out["y_std_uncalibrated"], out["solute_similarity"] if has_similarity else None
    )
    calibrated = out[out["role"] == report_role]
    metrics = uncertainty_metrics(calibrated["y_true"], calibrated["y_pred"], calibrated["y_std"])
    metrics["sigma_scale"] = calibration.scale
    metrics["novelty_sigma"] = calibration.novelty_sigma
    return out, metrics
