"""bench/alpb_residuals.py: the out-of-fold linear correction of a model's test residuals by
ΔG_solv(ALPB), overall and for one solvent split by whether its solutes occur elsewhere."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from pairfactory.qm.plan import system_id_for


def test_a_residual_that_alpb_explains_is_corrected_out_of_fold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bench_script: Callable[[str], ModuleType]
) -> None:
    """Water pairs err by exactly 0.5 × (ALPB − ŷ): the correction fitted on the other fold
    removes it (RMSE 0). The methanol pair's solute also occurs in water; the other water
    solutes do not."""
    rng = np.random.default_rng(0)
    solutes = [f"C{'C' * i}O" for i in range(12)]
    pairs = pd.DataFrame(
        {
            "pair_id": [f"p{i}" for i in range(13)],
            "solute_smiles": [*solutes, solutes[0]],
            "solvent_smiles": ["O"] * 12 + ["CO"],
        }
    )
    alpb = rng.normal(-5, 2, size=13)
    pd.DataFrame(
        {
            "system_id": [
                system_id_for(a, b) for a, b in zip(pairs.solute_smiles, pairs.solvent_smiles)
            ],
            "dg_solv_alpb_kcal_mol": alpb,
        }
    ).to_parquet(tmp_path / "alpb.parquet")
    pairs.to_parquet(tmp_path / "pairs.parquet")
    y_pred = rng.normal(-5, 2, size=13)
    y_true = y_pred + 0.5 * (alpb - y_pred)
    for fold, index in ((0, range(0, 7)), (1, range(7, 12))):
        fold_dir = tmp_path / "eval" / "m" / "random" / f"r0-f{fold}"
        fold_dir.mkdir(parents=True)
        rows = list(index)
        pd.DataFrame(
            {
                "pair_id": [f"p{i}" for i in rows] + ["p12"],
                "role": ["test"] * len(rows) + ["train"],
                "y_true": [*y_true[rows], 0.0],
                "y_pred": [*y_pred[rows], 9.0],  # a training row never counts
            }
        ).to_parquet(fold_dir / "predictions.parquet")
    script = bench_script("alpb_residuals")
    base = ["--results", str(tmp_path / "eval"), "--model", "m",
            "--pairs", str(tmp_path / "pairs.parquet"),
            "--descriptors", str(tmp_path / "alpb.parquet")]  # fmt: skip
    script.main(base)
    all_row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("all"))
    n, folds, corr, n_corrected, rmse, corrected = all_row.split()[1:]
    residual = (y_true - y_pred)[:12]  # p12 is the methanol pair, a training row in both folds
    assert (n, folds, n_corrected) == ("12", "2", "12") and float(corr) == pytest.approx(
        1.0, abs=1e-3
    )
    assert float(rmse) == pytest.approx(np.sqrt(np.mean(residual**2)), abs=1e-3)
    assert float(corrected) == pytest.approx(0.0, abs=1e-3)

    script.main([*base, "--solvent", "O"])
    out = capsys.readouterr().out
    assert next(line for line in out.splitlines() if "also in other" in line).split()[5] == "1"
    only_here = next(line for line in out.splitlines() if "only here" in line).split()[3:]
    assert only_here[0] == "11" and float(only_here[-1]) == pytest.approx(0.0, abs=1e-3)
    also = next(line for line in out.splitlines() if "also in other" in line).split()[5:]
    assert also[3:] == ["0", "–", "–"]  # one pair: nothing to fit its correction on
    with pytest.raises(SystemExit, match="no test pair has solvent"):
        script.main([*base, "--solvent", "CCCl"])


def test_terms_correct_a_residual_that_the_total_cannot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bench_script: Callable[[str], ModuleType]
) -> None:
    """The residual is 0.7 × the hydrogen-bond term + 0.3 × the surface term: the total's
    correction leaves most of it, the one with the terms removes it (out of fold)."""
    rng = np.random.default_rng(1)
    n = 24
    solutes = [f"C{'C' * i}O" for i in range(n)]
    pairs = pd.DataFrame(
        {"pair_id": [f"p{i}" for i in range(n)], "solute_smiles": solutes, "solvent_smiles": "O"}
    )
    terms = {
        "dg_elec_alpb_kcal_mol": rng.normal(-4, 2, n),
        "dg_sasa_alpb_kcal_mol": rng.normal(0, 1, n),
        "dg_hbond_alpb_kcal_mol": rng.normal(-2, 1, n),
        "dg_shift_alpb_kcal_mol": np.full(n, 0.68),  # one constant in water
    }
    pd.DataFrame(
        {
            "system_id": [system_id_for(a, "O") for a in solutes],
            "dg_solv_alpb_kcal_mol": sum(terms.values()),
            **terms,
        }
    ).to_parquet(tmp_path / "alpb.parquet")
    pairs.to_parquet(tmp_path / "pairs.parquet")
    y_pred = rng.normal(-5, 2, n)
    y_true = y_pred + 0.7 * terms["dg_hbond_alpb_kcal_mol"] + 0.3 * terms["dg_sasa_alpb_kcal_mol"]
    for fold in (0, 1):
        rows = list(range(fold * n // 2, (fold + 1) * n // 2))
        fold_dir = tmp_path / "eval" / "m" / "random" / f"r0-f{fold}"
        fold_dir.mkdir(parents=True)
        pd.DataFrame(
            {
                "pair_id": [f"p{i}" for i in rows],
                "role": "test",
                "y_true": y_true[rows],
                "y_pred": y_pred[rows],
            }
        ).to_parquet(fold_dir / "predictions.parquet")
    bench_script("alpb_residuals").main(
        [
            "--results",
            str(tmp_path / "eval"),
            "--model",
            "m",
            "--terms",
            "--pairs",
            str(tmp_path / "pairs.parquet"),
            "--descriptors",
            str(tmp_path / "alpb.parquet"),
        ]  # fmt: skip
    )
    out = capsys.readouterr().out
    assert "corrected by ŷ and the terms (pairs)" in out.splitlines()[0]
    *_, rmse, total_only, with_terms, pairs = out.splitlines()[1].split()
    assert float(total_only) > 0.3 * float(rmse)
    assert float(with_terms) == pytest.approx(0.0, abs=1e-3) and pairs == "(24)"
