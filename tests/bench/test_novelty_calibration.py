"""bench/novelty_calibration.py: both σ calibrations refitted on each fold's validation set and
scored on its test set."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest


def test_novelty_calibration_refits_both_calibrations_on_each_folds_validation_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bench_script: Callable[[str], ModuleType]
) -> None:
    """Folds whose errors grow with the solute's novelty: the refitted novelty term lowers the
    test NLL and lifts the novel pairs' coverage; folds without a σ are refused."""
    rng = np.random.default_rng(0)
    root = tmp_path / "evaluate" / "ds" / "y" / "m" / "random"
    for fold in range(3):
        n = 600
        similarity = rng.uniform(0.0, 1.0, n)
        roles = np.array(["train", "valid", "test"])[np.arange(n) % 3]
        similarity[roles == "train"] = 1.0
        y_std = np.full(n, 0.5)
        noise = np.sqrt(y_std**2 + (2.0 * (1.0 - similarity)) ** 2)
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
