"""Uncertainty metrics and calibration (pairfactory.ml.uncertainty) on known cases, and a
probabilistic model through `evaluate` and `report`."""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pairfactory.ml.uncertainty import (
    calibrate_predictions,
    coverage,
    coverage_curve,
    fit_sigma_scale,
    gaussian_nll,
    miscalibration_area,
    spearman,
    uncertainty_metrics,
)

N = 200_000


def calibrated_sample(seed: int = 0, n: int = N):
    """Heteroscedastic predictions whose σ is exactly the noise's standard deviation."""
    rng = np.random.default_rng(seed)
    y_pred = rng.normal(size=n) * 3.0
    y_std = rng.uniform(0.2, 2.0, size=n)
    y_true = y_pred + rng.normal(size=n) * y_std
    return y_true, y_pred, y_std


def test_gaussian_nll_matches_scipy():
    y_true, y_pred, y_std = calibrated_sample(n=500)
    expected = -np.mean(stats.norm.logpdf(y_true, loc=y_pred, scale=y_std))
    assert gaussian_nll(y_true, y_pred, y_std) == pytest.approx(expected, rel=1e-12)


def test_calibrated_gaussian_samples_have_no_miscalibration():
    y_true, y_pred, y_std = calibrated_sample()
    assert miscalibration_area(y_true, y_pred, y_std) < 0.005
    assert coverage(y_true, y_pred, y_std, 0.68) == pytest.approx(0.68, abs=0.005)
    assert coverage(y_true, y_pred, y_std, 0.95) == pytest.approx(0.95, abs=0.003)
    expected, observed = coverage_curve(y_true, y_pred, y_std)
    assert observed[0] == 0.0 and observed[-1] == 1.0 and np.all(np.diff(observed) >= 0)
    np.testing.assert_allclose(observed, expected, atol=0.01)
    # |error| grows with σ: a clearly positive rank correlation
    assert 0.2 < spearman(np.abs(y_true - y_pred), y_std) < 0.6


def test_miscalibrated_sigma_is_detected_and_its_scale_recovered():
    y_true, y_pred, y_std = calibrated_sample()
    wide = 2.0 * y_std  # over-confident by nothing, under-confident by 2x
    assert fit_sigma_scale(y_true, y_pred, wide) == pytest.approx(0.5, rel=0.01)
    assert fit_sigma_scale(y_true, y_pred, y_std / 3) == pytest.approx(3.0, rel=0.01)
    area = miscalibration_area(y_true, y_pred, wide)
    assert area > 0.1
    assert coverage(y_true, y_pred, wide, 0.68) > 0.9
    # the largest possible area: every σ far too small (observed coverage ~0 at every level)
    assert miscalibration_area(y_true, y_pred, y_std * 1e-6) == pytest.approx(0.5, abs=0.01)
    # the NLL is minimized at the fitted scale (closed form)
    s = fit_sigma_scale(y_true, y_pred, wide)
    best = gaussian_nll(y_true, y_pred, s * wide)
    for factor in (0.9, 1.1):
        assert gaussian_nll(y_true, y_pred, factor * s * wide) > best


def test_metric_input_checks_and_edge_cases():
    with pytest.raises(ValueError, match="equal, non-empty"):
        gaussian_nll(np.zeros(3), np.zeros(2), np.ones(3))
    with pytest.raises(ValueError, match="> 0"):
        coverage(np.zeros(3), np.zeros(3), np.array([1.0, 0.0, 1.0]), 0.5)
    with pytest.raises(ValueError, match="level"):
        coverage(np.zeros(3), np.zeros(3), np.ones(3), 1.0)
    assert np.isnan(spearman(np.arange(5.0), np.ones(5)))  # constant σ: no ranking at all
    assert spearman(np.arange(5.0), np.arange(5.0) ** 3) == pytest.approx(1.0)
    assert fit_sigma_scale(np.ones(4), np.ones(4), np.ones(4)) > 0  # exact predictions


def test_calibrate_predictions_fits_on_valid_and_reports_test():
    y_true, y_pred, y_std = calibrated_sample(n=3000)
    roles = np.array(["train", "valid", "test"])[np.arange(3000) % 3]
    frame = pd.DataFrame({"role": roles, "y_true": y_true, "y_pred": y_pred, "y_std": 2.0 * y_std})
    # a test set that would want another scale must not move the fitted one
    frame.loc[frame["role"] == "test", "y_true"] += 5.0
    out, metrics = calibrate_predictions(frame)
    valid = frame[frame["role"] == "valid"]
    assert metrics["sigma_scale"] == pytest.approx(
        fit_sigma_scale(valid["y_true"], valid["y_pred"], valid["y_std"])
    )
    assert metrics["sigma_scale"] == pytest.approx(0.5, rel=0.05)
    np.testing.assert_allclose(out["y_std_uncalibrated"], frame["y_std"])
    np.testing.assert_allclose(out["y_std"], metrics["sigma_scale"] * frame["y_std"])
    test = out[out["role"] == "test"]
    assert metrics == pytest.approx(
        {
            **uncertainty_metrics(test["y_true"], test["y_pred"], test["y_std"]),
            "sigma_scale": metrics["sigma_scale"],
        },
        nan_ok=True,
    )
    assert set(metrics) == {
        "nll",
        "miscalibration_area",
        "coverage_68",
        "coverage_95",
        "spearman_abs_error_std",
        "sigma_scale",
    }
    with pytest.raises(ValueError, match="'valid'"):
        calibrate_predictions(frame[frame["role"] != "valid"])


# ------------------------------------------------------------------ evaluate and report, end to end


def test_probabilistic_fold_writes_calibrated_sigma_and_the_report_reads_it(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("dgl")
    import torch
    from curated_tables import freesolv_rows, write_pair_table

    from pairfactory.ml.evaluate import FoldMetrics, ProtocolOptions, run_protocol
    from pairfactory.ml.report import collect_metrics, write_report
    from pairfactory.ml.train import TrainSettings

    torch.set_num_threads(1)
    table = write_pair_table(freesolv_rows(30, dataset="freesolv"), tmp_path / "pairs.parquet")
    root = tmp_path / "evaluate"
    for model in ("probpair_2d", "cigin"):
        run_protocol(
            table,
            model,
            "random",
            root,
            ProtocolOptions(
                settings=TrainSettings(
                    max_epochs=2, batch_size=8, device="cpu", standardize_targets=True
                ),
                n_folds=3,
                graph_cache=tmp_path / "gc.pt",
            ),
            repeats=1,
            folds=[0],
            progress=False,
        )
    fold = root / "freesolv" / "dg_hydration_kcal_mol" / "probpair_2d" / "random" / "r0-f0"
    preds = pd.read_parquet(fold / "predictions.parquet")
    assert list(preds.columns) == [
        "pair_id",
        "role",
        "y_true",
        "y_pred",
        "y_std",
        "y_std_uncalibrated",
    ]
    metrics = json.loads((fold / "metrics.json").read_text())
    assert metrics["sigma_scale"] > 0
    np.testing.assert_allclose(preds["y_std"], metrics["sigma_scale"] * preds["y_std_uncalibrated"])
    test = preds[preds["role"] == "test"]
    assert metrics["nll"] == pytest.approx(
        gaussian_nll(test["y_true"], test["y_pred"], test["y_std"])
    )
    for key in ("coverage_68", "coverage_95", "miscalibration_area"):
        assert 0.0 <= metrics[key] <= 1.0
    # point-prediction folds carry none of it; old metrics files (without the keys) still load
    cigin = root / "freesolv" / "dg_hydration_kcal_mol" / "cigin" / "random" / "r0-f0"
    cigin_metrics = json.loads((cigin / "metrics.json").read_text())
    assert cigin_metrics["nll"] is None and cigin_metrics["sigma_scale"] is None
    new_keys = {"nll", "miscalibration_area", "coverage_68", "coverage_95"}
    new_keys |= {"spearman_abs_error_std", "sigma_scale"}
    old = {k: v for k, v in cigin_metrics.items() if k not in new_keys}
    assert FoldMetrics(**old).nll is None
    assert {f.name for f in fields(FoldMetrics)} >= new_keys
    assert "y_std" not in pd.read_parquet(cigin / "predictions.parquet").columns

    out = tmp_path / "report"
    write_report(root, out)
    assert set(collect_metrics(root)["base_model"]) == {"probpair_2d", "cigin"}
    assert (out / "results.csv").is_file()
