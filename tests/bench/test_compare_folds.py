"""bench/compare_folds.py: paired fold tables of several models, the statistics and the fold
selection (folds every model finished; whole repeats only with --complete-repeats)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from pairfactory.ml.statistics import corrected_resampled_t

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "compare_folds.py"

# (model, repeat, fold) -> test RMSE; model c misses r1-f1, so repeat 1 is incomplete
RMSE = {
    ("a", 0, 0): 1.0, ("a", 0, 1): 1.2, ("a", 1, 0): 0.9, ("a", 1, 1): 1.1,
    ("b", 0, 0): 0.8, ("b", 0, 1): 1.3, ("b", 1, 0): 0.7, ("b", 1, 1): 1.0,
    ("c", 0, 0): 1.1, ("c", 0, 1): 1.0, ("c", 1, 0): 0.95,
}  # fmt: skip


def _write_folds(root: Path) -> Path:
    results = root / "evaluate"
    for (model, repeat, fold), rmse in RMSE.items():
        fold_dir = results / "ds" / "y" / model / "random" / f"r{repeat}-f{fold}"
        fold_dir.mkdir(parents=True)
        metrics = {
            "repeat": repeat,
            "fold": fold,
            "n_folds": 2,
            "split": "random",
            "split_seed": 0,
            "rmse": rmse,
            "r2": 1.0 - rmse,
            "valid_rmse": rmse + 0.1,
            "n_train": 80,
            "n_valid": 10,
            "n_test": 10,
            "nll": 1.5 if model == "b" else None,
        }
        (fold_dir / "metrics.json").write_text(json.dumps(metrics))
    return results


def _run(results: Path, *extra: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--results", str(results), "--dataset", "ds", "--target", "y",
         *extra],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _difference_row(out: str, label: str) -> list[str]:
    line = next(line for line in out.splitlines() if line.startswith(label))
    return line[len(label) :].split()


def test_pairs_only_folds_every_model_finished(tmp_path: Path) -> None:
    out = _run(_write_folds(tmp_path), "--models", "a", "b", "c")
    assert "3 folds finished by every model" in out and "r1-f1" not in out
    b_minus_a = np.array([0.8 - 1.0, 1.3 - 1.2, 0.7 - 0.9])
    half, t, p = corrected_resampled_t(b_minus_a, 80.0, 20.0)
    mean, low, high, t_text, p_text, won, _, total = _difference_row(out, "b − a")
    assert float(mean) == pytest.approx(b_minus_a.mean(), abs=5e-4)
    assert float(low.strip("[,")) == pytest.approx(b_minus_a.mean() - half, abs=5e-4)
    assert float(high.strip("]")) == pytest.approx(b_minus_a.mean() + half, abs=5e-4)
    assert float(p_text) == pytest.approx(p, abs=5e-4) and (won, total) == ("2", "3")
    # population std over folds, as the report writes it; σ metrics only where a model has them
    a_values = np.array([1.0, 1.2, 0.9])
    assert f"{a_values.mean():.3f} ({a_values.std():.3f})" in out
    nll_line = next(line for line in out.splitlines() if line.startswith("test NLL"))
    assert nll_line.split()[2:] == ["–", "1.500", "–"]


def test_csv_holds_the_per_fold_table(tmp_path: Path) -> None:
    _run(_write_folds(tmp_path), "--models", "a", "b", "--csv", str(tmp_path / "t" / "folds.csv"))
    table = pd.read_csv(tmp_path / "t" / "folds.csv")
    assert list(table.columns) == ["repeat", "fold", "a", "b"]
    assert table.set_index(["repeat", "fold"])["b"].to_dict() == {
        key[1:]: value for key, value in RMSE.items() if key[0] == "b"
    }


def test_complete_repeats_drops_a_repeat_with_a_missing_fold(tmp_path: Path) -> None:
    results = _write_folds(tmp_path)
    out = _run(results, "--models", "a", "b", "c", "--complete-repeats")
    assert "2 folds finished by every model" in out and "r1-f0" not in out
    # without c every repeat is whole
    out = _run(results, "--models", "a", "b", "--complete-repeats")
    assert "4 folds finished by every model" in out
    assert "1.100 / 1.000" in out  # a's repeats' means


def test_one_model_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dataset", "ds", "--target", "y", "--models", "a"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and "at least two models" in proc.stderr


def test_b_better_follows_the_metrics_direction_and_splits_must_match(tmp_path: Path) -> None:
    results = _write_folds(tmp_path)
    out = _run(results, "--models", "a", "b", "--metric", "r2")
    assert _difference_row(out, "b − a")[-3:] == ["3", "of", "4"]  # higher r2 is better
    metrics = results / "ds" / "y" / "b" / "random" / "r0-f1" / "metrics.json"
    changed = {**json.loads(metrics.read_text()), "split_seed": 7}
    metrics.write_text(json.dumps(changed))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--results", str(results), "--dataset", "ds", "--target", "y",
         "--models", "a", "b"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and "r0-f1 is not the same test set" in proc.stderr


def test_group_by_splits_the_test_pairs_by_a_column_of_the_pair_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bench_script: Callable[[str], ModuleType]
) -> None:
    """Per fold, 4 test pairs: two in water (a errs by 1, b by 2), one in each of two rarer
    solvents (both err by 0 and 3); with --top 1 the rare ones are "other"."""
    results = _write_folds(tmp_path)
    solvent = {"p0": "O", "p1": "O", "p2": "CO", "p3": "CCO", "p9": "O"}
    for model, error in (
        ("a", {"O": 1.0, "CO": 0.0, "CCO": 3.0}),
        ("b", {"O": 2.0, "CO": 0.0, "CCO": 3.0}),
    ):
        for fold_dir in (results / "ds" / "y" / model / "random").glob("r*-f*"):
            ids = ["p0", "p1", "p2", "p3", "p9"]
            roles = ["test"] * 4 + ["train"]  # a training pair never counts
            pd.DataFrame(
                {
                    "pair_id": ids,
                    "role": roles,
                    "y_true": 0.0,
                    "y_pred": [error[solvent[i]] for i in ids],
                }
            ).to_parquet(fold_dir / "predictions.parquet")
    pairs = tmp_path / "pairs.parquet"
    pd.DataFrame({"pair_id": list(solvent), "solvent_smiles": list(solvent.values())}).to_parquet(
        pairs
    )
    compare = bench_script("compare_folds")
    base = ["--results", str(results), "--dataset", "ds", "--target", "y", "--models", "a", "b"]
    compare.main([*base, "--pairs", str(pairs), "--group-by", "solvent_smiles", "--top", "1"])
    out = capsys.readouterr().out
    table = out.split("test RMSE by solvent_smiles")[1]
    water = next(line for line in table.splitlines() if line.startswith("O "))
    other = next(line for line in table.splitlines() if line.startswith("(other)"))
    # 4 folds x 2 water pairs; a's squared errors: water 1 + 1, the others 0 + 9
    assert water.split() == ["O", "8", f"{2 / 11:.3f}", "1.000", "2.000"]
    assert other.split()[:5] == [
        "(other)",
        "8",
        f"{9 / 11:.3f}",
        f"{np.sqrt(4.5):.3f}",
        f"{np.sqrt(4.5):.3f}",
    ]
    assert table.index("O ") < table.index("(other)")
    paired = out.split("per group, paired over folds")[1]
    assert next(line for line in paired.splitlines() if line.startswith("O ")).split()[1:4] == [
        "b",
        "4",
        "+1.000",
    ]

    with pytest.raises(SystemExit, match="give --pairs"):
        compare.main([*base, "--group-by", "solvent_smiles"])
    with pytest.raises(SystemExit, match="neither the predictions nor --pairs"):
        compare.main([*base, "--pairs", str(pairs), "--group-by", "model"])
    with pytest.raises(SystemExit):  # --pairs without --group-by is a usage error
        compare.main([*base, "--pairs", str(pairs)])
    assert "go with --group-by" in capsys.readouterr().err
    pd.DataFrame({"pair_id": ["p0"], "solvent_smiles": ["O"]}).to_parquet(pairs)
    with pytest.raises(SystemExit, match="have no row in --pairs"):
        compare.main([*base, "--pairs", str(pairs), "--group-by", "solvent_smiles"])


def test_a_member_of_an_ensemble_is_compared_by_its_own_rmse(tmp_path: Path) -> None:
    """'e[0]' is member 0 of ensemble e's folds (the single model of each fold); a folder that is
    no ensemble, a member it lacks and a member with --group-by are refused."""
    results = _write_folds(tmp_path)
    for (model, repeat, fold), rmse in RMSE.items():
        if model != "a":
            continue
        ensemble_dir = results / "ds" / "y" / "e" / "random" / f"r{repeat}-f{fold}"
        ensemble_dir.mkdir(parents=True)
        metrics = json.loads((results / "ds" / "y" / "a" / "random" / f"r{repeat}-f{fold}"
                              / "metrics.json").read_text())  # fmt: skip
        metrics.update(rmse=rmse - 0.2, member_rmse=[rmse + 0.1, rmse], nll=0.5)
        (ensemble_dir / "metrics.json").write_text(json.dumps(metrics))
    out = _run(results, "--models", "e[0]", "e", "a")
    a_values = np.array([1.0, 1.2, 0.9, 1.1])
    member = a_values + 0.1
    assert f"{member.mean():.3f} ({member.std():.3f})" in out
    mean, *_ = _difference_row(out, "e − e[0]")
    assert float(mean) == pytest.approx(-0.3, abs=5e-4)
    mean, *_ = _difference_row(out, "a − e[0]")
    assert float(mean) == pytest.approx(-0.1, abs=5e-4)
    valid_row = next(line for line in out.splitlines() if line.startswith("mean valid RMSE"))
    assert valid_row.split()[3] == "–", "the ensemble's validation RMSE is not member 0's"
    assert _difference_row(_run(results, "--models", "a", "e[1]"), "e[1] − a")[0] == "+0.000"
    for models, message in (
        (["a[0]", "b"], "not an ensemble fold"),
        (["e[2]", "a"], "records 2 ensemble members"),
    ):
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), "--results", str(results), "--dataset", "ds",
             "--target", "y", "--models", *models],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert proc.returncode != 0 and message in proc.stderr
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--results", str(results), "--dataset", "ds", "--target",
         "y", "--models", "e[0]", "a", "--group-by", "covered"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "--group-by reads each fold's predictions" in proc.stderr


def test_group_by_domain_checks_each_test_pair_against_its_folds_training_pairs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bench_script: Callable[[str], ModuleType]
) -> None:
    """Training solutes ethanol and propanol in water and ethanol; butanol only in validation, so
    outside the domain (as a final model's holdout is). Tests: propanol in water (inside), butanol
    in ethanol (larger than every training solute), benzene (larger and unlike any) and ethanol in
    chloromethane (an element never seen). Model a errs by 1 inside and 3 outside with σ 1; b errs
    by 2, no σ."""
    results = _write_folds(tmp_path)
    table = {
        "p0": ("CCO", "O", "train"),
        "p1": ("CCCO", "CCO", "train"),
        "p5": ("CCCCO", "O", "valid"),
        "p2": ("CCCO", "O", "test"),
        "p6": ("CCCCO", "CCO", "test"),
        "p3": ("c1ccccc1", "O", "test"),
        "p4": ("CCO", "CCl", "test"),
    }
    inside = {"p2"}
    for model in ("a", "b"):
        for fold_dir in (results / "ds" / "y" / model / "random").glob("r*-f*"):
            ids = list(table)
            frame = pd.DataFrame({"pair_id": ids, "role": [table[i][2] for i in ids]})
            frame["y_true"] = 0.0
            if model == "a":
                frame["y_pred"] = [1.0 if i in inside else 3.0 for i in ids]
                frame["y_std"] = 1.0
                frame["solute_similarity"] = 0.5  # a newer fold's own column does not interfere
            else:
                frame["y_pred"] = 2.0
            frame.to_parquet(fold_dir / "predictions.parquet")
    pairs = tmp_path / "pairs.parquet"
    pd.DataFrame(
        {
            "pair_id": list(table),
            "solute_smiles": [v[0] for v in table.values()],
            "solvent_smiles": [v[1] for v in table.values()],
        }
    ).to_parquet(pairs)
    compare = bench_script("compare_folds")
    base = ["--results", str(results), "--dataset", "ds", "--target", "y", "--models", "a", "b"]
    compare.main([*base, "--pairs", str(pairs), "--group-by", "domain"])
    out = capsys.readouterr().out.split("test RMSE by domain")[1]

    def row(label: str, text: str) -> list[str]:
        line = next(line for line in text.splitlines() if line.startswith(label + "  "))
        return line[len(label) :].split()

    rmse_table, sigma_table = out.split("σ per group")[0], out.split("σ per group")[1]
    # 4 folds × 1 pair each; a's squared errors per fold: 1 inside, 9 for each of 3 outside
    assert row("inside", rmse_table) == ["4", f"{1 / 28:.3f}", "1.000", "2.000"]
    assert row("outside: size", rmse_table) == ["4", f"{9 / 28:.3f}", "3.000", "2.000"]  # butanol
    assert row("outside: size, similarity", rmse_table)[2:] == ["3.000", "2.000"]
    assert row("outside: elements", rmse_table)[2:] == ["3.000", "2.000"]
    sigma_table = sigma_table.split("per group, paired")[0]
    assert row("inside", sigma_table) == ["1.000", "/", "1.00"]  # only a has a σ
    assert row("outside: elements", sigma_table) == ["1.000", "/", "0.00"]

    compare.main([*base, "--pairs", str(pairs), "--group-by", "extrapolation"])
    out = capsys.readouterr().out.split("test RMSE by extrapolation")[1]
    assert row("flagged", out.split("σ per group")[0]) == ["12", f"{27 / 28:.3f}", "3.000", "2.000"]

    compare.main([*base, "--pairs", str(pairs), "--group-by", "solute_similarity"])
    out = capsys.readouterr().out.split("test RMSE by solute_similarity")[1]
    assert row("≥ 0.7", out.split("σ per group")[0])[0] == "8"  # propanol, ethanol
    assert row("0.5–0.7", out.split("σ per group")[0])[0] == "4"  # butanol: 0.58 to propanol
    assert row("< 0.3", out.split("σ per group")[0])[0] == "4"
    assert out.index("< 0.3") < out.index("≥ 0.7"), "least similar first, whatever the counts"
    assert [compare._similarity_group(s) for s in (0.29, 0.3, 0.69, 0.7, 1.0)] == [
        "< 0.3",
        "0.3–0.5",
        "0.5–0.7",
        "≥ 0.7",
        "≥ 0.7",
    ]
    with pytest.raises(SystemExit, match="for the SMILES"):
        compare.main([*base, "--group-by", "domain"])
    # a model trained on other pairs (extra training pairs) cannot share the folds' domain
    for fold_dir in (results / "ds" / "y" / "b" / "random").glob("r*-f*"):
        frame = pd.read_parquet(fold_dir / "predictions.parquet")
        extra = pd.DataFrame({"pair_id": ["x0"], "role": ["train"], "y_true": 0.0, "y_pred": 0.0})
        pd.concat([frame, extra]).to_parquet(fold_dir / "predictions.parquet")
    with pytest.raises(SystemExit, match="trained on other pairs"):
        compare.main([*base, "--pairs", str(pairs), "--group-by", "domain"])


def test_sigma_metrics_of_two_calibrations_are_flagged(tmp_path: Path) -> None:
    """Folds saved before σ grew with novelty (no novelty_sigma) beside newer ones: a note."""
    results = _write_folds(tmp_path)
    for model, extra in (
        ("a", {"sigma_scale": 1.2}),
        ("b", {"sigma_scale": 1.1, "novelty_sigma": 0.4}),
    ):
        for path in (results / "ds" / "y" / model / "random").glob("r*-f*/metrics.json"):
            path.write_text(json.dumps({**json.loads(path.read_text()), **extra}))
    assert "mix calibrations" in _run(results, "--models", "a", "b")
    assert "mix calibrations" not in _run(results, "--models", "a", "c")
