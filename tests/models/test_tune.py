"""Hyper-parameter selection: the grid, the choice on validation only, and the bench runner end
to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

pytest.importorskip("dgl")

from curated_tables import REPO, freesolv_rows, write_pair_table  # noqa: E402

from pairfactory.errors import UserError  # noqa: E402
from pairfactory.ml.tune import (  # noqa: E402
    grid_points,
    parse_grid,
    select_setting,
    setting_label,
    summarize_settings,
    summary_table,
)


def test_grid_points_and_labels_are_stable():
    grid = parse_grid('{"tau": [1], "beta": [1, 0.01]}')
    points = grid_points(grid)
    assert points == [{"beta": 1, "tau": 1}, {"beta": 0.01, "tau": 1}]
    assert [setting_label("cgib", p) for p in points] == [
        "cgib@beta=1,tau=1",
        "cgib@beta=0.01,tau=1",
    ]
    assert setting_label("cigin", {}) == "cigin"
    assert setting_label("cgib", {"contrast_target": "solvent"}) == "cgib@contrast_target=solvent"


@pytest.mark.parametrize("text", ["{beta: [1]}", "[1, 2]", "{}", '{"beta": 1}', '{"beta": []}'])
def test_bad_grids_are_refused_with_an_example(text):
    with pytest.raises(UserError, match="beta"):
        parse_grid(text)


def _fold(setting, fold, valid, test):
    return {"setting": setting, "fold": fold, "valid_rmse": valid, "rmse": test, "best_epoch": 10}


def test_choice_uses_validation_only_and_complete_settings_only():
    labels = {"m@b=1": {"b": 1}, "m@b=2": {"b": 2}, "m@b=3": {"b": 3}, "m@b=4": {"b": 4}}
    metrics = [
        _fold("m@b=1", 0, 1.0, 0.5),
        _fold("m@b=1", 1, 1.2, 0.5),  # best test, worse validation
        _fold("m@b=2", 0, 0.9, 0.9),
        _fold("m@b=2", 1, 1.1, 0.9),  # best validation
        _fold("m@b=3", 0, 0.1, 0.1),  # one fold missing: not comparable, not a candidate
    ]
    summaries = summarize_settings(metrics, labels)
    assert [s.folds for s in summaries] == [2, 2, 1, 0]
    chosen = select_setting(summaries, folds_required=2)
    assert chosen.label == "m@b=2" and chosen.test_rmse == pytest.approx(0.9)
    assert math.isclose(summaries[0].valid_rmse, 1.1)
    table = summary_table(summaries, chosen, "kcal/mol")
    assert "| `m@b=2` | 2 | 1.000 | 0.900 (0.000) | 10 | **yes** |" in table
    assert "| `m@b=4` | 0 | – | – | – | |" in table  # not run yet
    with pytest.raises(UserError, match="rerun the same command"):
        select_setting(summaries, folds_required=3)


@pytest.mark.slow
def test_select_hparams_runs_the_grid_resumes_and_writes_the_choice(tmp_path):
    pairs = tmp_path / "freesolv.parquet"
    write_pair_table(freesolv_rows(40), pairs)
    cmd = [
        sys.executable,
        str(REPO / "bench" / "select_hparams.py"),
        "--pairs",
        str(pairs),
        "--model",
        "cgib",
        "--grid",
        '{"beta": [1, 0], "hidden_dim": [8], "batch_size": [8]}',
        "--folds",
        "2",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--jobs",
        "2",
        "--results",
        str(tmp_path / "tune"),
        "--graph-cache",
        str(tmp_path / "graphs.pt"),
    ]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    root = tmp_path / "tune" / "freesolv" / "dg_hydration_kcal_mol"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [
        "cgib@batch_size=8,beta=0,hidden_dim=8",
        "cgib@batch_size=8,beta=1,hidden_dim=8",
    ]
    folds = [json.loads(p.read_text()) for p in root.glob("*/random/r0-f*/metrics.json")]
    assert len(folds) == 4
    # a training setting of the grid trains with it and is not passed to the model
    assert all(f["settings"]["batch_size"] == 8 and "batch_size" not in f["hparams"] for f in folds)
    assert "**yes**" in (root / "cgib-random-selection.md").read_text()
    assert "4 to run" in first.stderr
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "0 to run" in again.stderr
    bad = subprocess.run(
        cmd[:-6] + ["--grid", '{"beta": 1}'], capture_output=True, text=True, timeout=600
    )
    assert bad.returncode == 2 and "select_hparams: error: --grid" in bad.stderr
