"""Uncertainty metrics and calibration (pairfactory.ml.uncertainty) on known cases, and a
probabilistic model through `evaluate` and `report`."""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pairfactory.ml.applicability import nearest_training_similarity
from pairfactory.ml.uncertainty import (
    MIN_SCALE_FRACTION,
    SigmaCalibration,
    calibrate_predictions,
    calibration_kind,
    coverage,
    coverage_curve,
    fit_sigma_calibration,
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
            "novelty_sigma": 0.0,  # no solute_similarity column: the one-factor calibration
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
        "novelty_sigma",
    }
    with pytest.raises(ValueError, match="'valid'"):
        calibrate_predictions(frame[frame["role"] != "valid"])


def novel_sample(seed: int = 0, n: int = 20_000, scale: float = 1.5, novelty_sigma: float = 2.0):
    """Predictions whose σ is too small by ``scale`` everywhere and misses a term that grows with
    the solute's novelty (1 − similarity), as the folds showed for unfamiliar solutes."""
    rng = np.random.default_rng(seed)
    y_pred = rng.normal(size=n)
    y_std = rng.uniform(0.2, 1.0, size=n)
    similarity = rng.uniform(0.0, 1.0, size=n)
    noise = np.sqrt((scale * y_std) ** 2 + (novelty_sigma * (1.0 - similarity)) ** 2)
    return y_pred + rng.normal(size=n) * noise, y_pred, y_std, similarity


def test_novelty_calibration_recovers_both_terms_and_is_a_likelihood_maximum():
    y_true, y_pred, y_std, similarity = novel_sample()
    fitted = fit_sigma_calibration(y_true, y_pred, y_std, similarity)
    assert fitted.scale == pytest.approx(1.5, rel=0.05)
    assert fitted.novelty_sigma == pytest.approx(2.0, rel=0.05)
    sigma = fitted.apply(y_std, similarity)
    expected = np.sqrt((fitted.scale * y_std) ** 2 + (fitted.novelty_sigma * (1 - similarity)) ** 2)
    np.testing.assert_allclose(sigma, expected)
    best = gaussian_nll(y_true, y_pred, sigma)
    for scale, novelty_sigma in ((1.02, 1.0), (0.98, 1.0), (1.0, 1.02), (1.0, 0.98)):
        moved = SigmaCalibration(fitted.scale * scale, fitted.novelty_sigma * novelty_sigma)
        assert gaussian_nll(y_true, y_pred, moved.apply(y_std, similarity)) > best
    # better than the one factor alone, above all for the least familiar solutes
    one_factor = SigmaCalibration(fit_sigma_scale(y_true, y_pred, y_std))
    assert best < gaussian_nll(y_true, y_pred, one_factor.apply(y_std)) - 0.05
    novel = similarity < 0.3
    for calibration, low, high in ((fitted, 0.93, 0.97), (one_factor, 0.0, 0.9)):
        covered = coverage(
            y_true[novel], y_pred[novel], calibration.apply(y_std, similarity)[novel], 0.95
        )
        assert low < covered < high


def test_novelty_calibration_finds_a_weak_term_at_the_likelihoods_maximum_in_any_units():
    """A novelty term as small as the model's own σ (a fit in c itself stalls near c = 0 there):
    the fit matches a grid search, and scaling targets and σ by k scales novelty_sigma by k."""
    rng = np.random.default_rng(3)
    y_pred, y_std, similarity = rng.normal(size=2000), np.ones(2000), rng.uniform(0, 1, 2000)
    y_true = y_pred + rng.normal(size=2000) * np.sqrt(1.0 + (0.5 * (1.0 - similarity)) ** 2)
    fitted = fit_sigma_calibration(y_true, y_pred, y_std, similarity)
    grid = [
        (gaussian_nll(y_true, y_pred, SigmaCalibration(s, c).apply(y_std, similarity)), s, c)
        for s in np.linspace(0.8, 1.2, 41)
        for c in np.linspace(0.0, 1.5, 151)
    ]
    _, grid_scale, grid_novelty = min(grid)
    assert fitted.novelty_sigma == pytest.approx(grid_novelty, abs=0.02)
    assert fitted.scale == pytest.approx(grid_scale, abs=0.02)
    assert 0.2 < fitted.novelty_sigma < 0.9
    for k in (0.1, 8.0):
        scaled = fit_sigma_calibration(k * y_true, k * y_pred, k * y_std, similarity)
        assert scaled.scale == pytest.approx(fitted.scale, rel=1e-4)
        assert scaled.novelty_sigma == pytest.approx(k * fitted.novelty_sigma, rel=1e-4)


def test_novelty_calibration_leaves_the_models_own_sigma_a_floor():
    """Errors that grow with novelty alone, every calibration solute new: the fit may not put
    all variance in the novelty term, which would give a training solute σ ≈ 0."""
    rng = np.random.default_rng(1)
    similarity = rng.uniform(0.0, 0.9, 64)
    y_pred, y_std = np.zeros(64), np.ones(64)
    y_true = rng.normal(size=64) * 2.0 * (1.0 - similarity)
    scale = fit_sigma_scale(y_true, y_pred, y_std)
    fitted = fit_sigma_calibration(y_true, y_pred, y_std, similarity)
    assert fitted.scale == pytest.approx(MIN_SCALE_FRACTION * scale)  # at the floor
    assert fitted.novelty_sigma > 1.0
    assert fitted.apply(np.ones(1), np.ones(1))[0] >= MIN_SCALE_FRACTION * scale


def test_calibration_kind_reads_a_folds_metrics():
    assert calibration_kind({"sigma_scale": None}) is None  # a point-prediction fold
    assert calibration_kind({"sigma_scale": 1.2}) == "scale"  # before the novelty term
    assert calibration_kind({"sigma_scale": 1.2, "novelty_sigma": float("nan")}) == "scale"
    assert calibration_kind({"sigma_scale": 1.2, "novelty_sigma": 0.0}) == "novelty"
    assert calibration_kind({"sigma_scale": float("nan"), "novelty_sigma": 0.3}) is None


def test_novelty_calibration_falls_back_to_the_one_factor():
    y_true, y_pred, y_std, similarity = novel_sample(novelty_sigma=0.0)
    scale = fit_sigma_scale(y_true, y_pred, y_std)
    # without similarities, or where every solute is a training solute: the closed form
    assert fit_sigma_calibration(y_true, y_pred, y_std) == SigmaCalibration(scale)
    assert fit_sigma_calibration(y_true, y_pred, y_std, np.ones_like(y_std)) == SigmaCalibration(
        scale
    )
    # novelty that explains nothing adds (almost) nothing
    fitted = fit_sigma_calibration(y_true, y_pred, y_std, similarity)
    assert fitted.scale == pytest.approx(scale, rel=0.02) and fitted.novelty_sigma < 0.1
    with pytest.raises(ValueError, match="solute similarity"):
        SigmaCalibration(1.0, 0.5).apply(y_std)
    np.testing.assert_allclose(SigmaCalibration(2.0).apply(y_std), 2.0 * y_std)
    with pytest.raises(ValueError, match="one value per prediction"):
        fit_sigma_calibration(y_true, y_pred, y_std, similarity[:-1])


def test_calibrate_predictions_grows_sigma_with_the_solute_similarity_column():
    y_true, y_pred, y_std, similarity = novel_sample(n=9000)
    roles = np.array(["train", "valid", "test"])[np.arange(9000) % 3]
    frame = pd.DataFrame(
        {
            "role": roles,
            "y_true": y_true,
            "y_pred": y_pred,
            "y_std": y_std,
            "solute_similarity": similarity,
        }
    )
    out, metrics = calibrate_predictions(frame)
    valid = frame[frame["role"] == "valid"]
    fitted = fit_sigma_calibration(
        valid["y_true"], valid["y_pred"], valid["y_std"], valid["solute_similarity"]
    )
    assert metrics["sigma_scale"] == pytest.approx(fitted.scale)
    assert metrics["novelty_sigma"] == pytest.approx(fitted.novelty_sigma)
    assert metrics["novelty_sigma"] > 1.0
    np.testing.assert_allclose(out["y_std"], fitted.apply(frame["y_std"], similarity))
    assert metrics["coverage_95"] == pytest.approx(0.95, abs=0.02)


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
        "solute_similarity",
        "y_std_uncalibrated",
    ]
    metrics = json.loads((fold / "metrics.json").read_text())
    assert metrics["sigma_scale"] > 0 and metrics["novelty_sigma"] >= 0
    calibration = SigmaCalibration(metrics["sigma_scale"], metrics["novelty_sigma"])
    np.testing.assert_allclose(
        preds["y_std"], calibration.apply(preds["y_std_uncalibrated"], preds["solute_similarity"])
    )
    # each row's similarity is its own solute's, to the fold's training solutes
    pairs = pd.read_parquet(table).set_index("pair_id")
    train = preds[preds["role"] == "train"]
    assert (train["solute_similarity"] == 1.0).all()
    expected = nearest_training_similarity(
        list(pairs.loc[preds["pair_id"], "solute_smiles"]),
        pairs.loc[train["pair_id"], "solute_smiles"],
    )
    np.testing.assert_allclose(preds["solute_similarity"], expected)
    assert (preds["solute_similarity"] < 1.0).any()  # some held-out solute is new
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
    new_keys |= {"spearman_abs_error_std", "sigma_scale", "novelty_sigma"}
    old = {k: v for k, v in cigin_metrics.items() if k not in new_keys}
    assert FoldMetrics(**old).nll is None
    assert {f.name for f in fields(FoldMetrics)} >= new_keys
    assert "y_std" not in pd.read_parquet(cigin / "predictions.parquet").columns

    out = tmp_path / "report"
    write_report(root, out)
    assert set(collect_metrics(root)["base_model"]) == {"probpair_2d", "cigin"}
    assert (out / "results.csv").is_file()
