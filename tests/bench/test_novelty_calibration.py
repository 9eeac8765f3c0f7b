"""bench/novelty_calibration.py: both σ calibrations refitted on each fold's validation set and
scored on its test set."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest


def _write_folds(root: Path, power: float, seed: int = 0) -> None:
    """Three folds whose errors have variance 0.5² + (2 (1 − similarity)^power)²."""
    rng = np.random.default_rng(seed)
    for fold in range(3):
        n = 600
        similarity = rng.uniform(0.0, 1.0, n)
        roles = np.array(["train", "valid", "test"])[np.arange(n) % 3]
        similarity[roles == "train"] = 1.0
        y_std = np.full(n, 0.5)
        noise = np.sqrt(y_std**2 + (2.0 * (1.0 - similarity) ** power) ** 2)
        frame = pd.DataFrame(
            {
                "pair_id": [f"p{i}" for i in range(n)],
                "role": roles,
                "y_true": rng.normal(size=n) * noise,
                "y_pred": 0.0,
                "y_std": y_std,
                "solute_similarity": similarity,
                "y_std_uncalibrated": y_std,
            }
        )
        fold_dir = root / f"r0-f{fold}"
        fold_dir.mkdir(parents=True)
        frame.to_parquet(fold_dir / "predictions.parquet")
        (fold_dir / "metrics.json").write_text(
            json.dumps({"n_train": 200, "n_valid": 200, "n_test": 200})
        )


def test_novelty_calibration_refits_both_calibrations_on_each_folds_validation_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bench_script: Callable[[str], ModuleType]
) -> None:
    """Folds whose errors grow with the solute's novelty: the refitted novelty term lowers the
    test NLL and lifts the novel pairs' coverage; folds without a σ are refused."""
    root = tmp_path / "evaluate" / "ds" / "y" / "m" / "random"
    _write_folds(root, power=1.0)
    script = bench_script("novelty_calibration")
    base = ["--results", str(tmp_path / "evaluate"), "--dataset", "ds", "--target", "y"]
    script.main([*base, "--models", "m"])
    out = capsys.readouterr().out
    scale = next(line for line in out.splitlines() if line.startswith("scale  ")).split()
    novelty = next(line for line in out.splitlines() if line.startswith("scale + novelty")).split()
    assert float(novelty[3]) < float(scale[1]) - 0.1  # pooled test NLL
    assert float(novelty[7]) > float(scale[5])  # the novel pairs' 95 % coverage
    assert float(novelty[-1]) == pytest.approx(2.0, rel=0.25)  # c, median over folds
    assert "lower in 3 of 3 folds" in out
    for fold_dir in root.glob("r0-f*"):
        frame = pd.read_parquet(fold_dir / "predictions.parquet")
        frame.drop(columns=["y_std", "y_std_uncalibrated"]).to_parquet(
            fold_dir / "predictions.parquet"
        )
    with pytest.raises(SystemExit, match="no σ"):
        script.main([*base, "--models", "m"])


def test_a_steeper_novelty_term_is_scored_against_the_linear_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bench_script: Callable[[str], ModuleType]
) -> None:
    """Errors that grow as (1 − similarity)³: --powers 3 fits them better than the linear term,
    and the coverage table has a row per calibration and a column per similarity band."""
    _write_folds(tmp_path / "evaluate" / "ds" / "y" / "m" / "random", power=3.0)
    script = bench_script("novelty_calibration")
    base = ["--results", str(tmp_path / "evaluate"), "--dataset", "ds", "--target", "y"]
    script.main([*base, "--models", "m", "--powers", "3"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    linear = next(line for line in lines if line.startswith("scale + novelty  ")).split()
    steep = next(line for line in lines if line.startswith("scale + novelty^3")).split()
    assert float(steep[3]) < float(linear[3])  # pooled test NLL
    assert float(steep[-1]) == pytest.approx(2.0, rel=0.25)  # c of the term it was drawn with
    bands = lines[
        lines.index("95 % coverage by similarity to the nearest training solute (test pairs)") + 2
    ]
    counts = [int(cell) for cell in re.findall(r"n = (\d+)", bands)]
    assert len(counts) == 5 and sum(counts) == 3 * 200  # every test pair in one band
    assert "scale + novelty^3 − scale + novelty: -" in out
