"""The full-scale configuration (config/full.yaml) on the real datasets: every pair table is curated
once through the workflow, then a dry-run schedules the whole QM + evaluation plan."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from workflow_helpers import REPO_ROOT, run_snakemake

from pairfactory.config import load_config
from pairfactory.qm.plan import load_systems

DATASETS = ["chromophore", "freesolv", "freesolv_cgib", "mnsol", "combisolv"]


@pytest.fixture(scope="module")
def full_scale(
    tmp_path_factory: pytest.TempPathFactory, mnsol_csv: Path, combisolv_csv: Path
) -> Path:
    workdir = tmp_path_factory.mktemp("full_scale")
    config = yaml.safe_load((REPO_ROOT / "config" / "full.yaml").read_text())
    config["data"] = {
        "chromophore_csv": str(REPO_ROOT / config["data"]["chromophore_csv"]),
        "freesolv_txt": str(REPO_ROOT / config["data"]["freesolv_txt"]),
        "mnsol_csv": str(mnsol_csv),
        "combisolv_csv": str(combisolv_csv),
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    targets = [f"results/pairs/{dataset}" for dataset in DATASETS]
    run_snakemake(workdir, "--cores", "2", *targets, timeout=600).check()
    return workdir


def test_full_scale_dry_run_schedules_the_whole_plan(full_scale: Path) -> None:
    config = load_config(full_scale / "config.yaml")
    dry = run_snakemake(full_scale, "--cores", "2", "-n", "--quiet", "rules").check()
    counts = dry.job_counts()

    shards = config["shards"]
    expected_optimize = 0
    for dataset in config["qm"]["datasets"]:
        n_systems = len(load_systems(full_scale / "results" / "pairs", dataset))
        blocks = math.ceil(n_systems / shards["systems_per_shard"])
        sample_blocks = math.ceil(config["samples"]["per_system"] / shards["samples_per_shard"])
        expected_optimize += blocks * sample_blocks
    ev = config["evaluate"]
    expected_evaluate = (
        len(ev["tables"]) * len(ev["models"]) * len(ev["splits"]) * ev["folds"] * ev["repeats"]
    )

    assert counts == {
        "optimize": expected_optimize,
        "collect": len(config["qm"]["datasets"]),
        "evaluate": expected_evaluate,
        "final_model": len(config["final_models"]),
        "report": 1,
        "all": 1,
    }
    # the real sizes: ~20,000 Chromophore systems x 8 samples in shards of 32 x 8, and 3,150 folds
    # (7 tables, 4 baselines + our model and its twin, 3 split kinds, 5 x 5)
    assert 900 <= expected_optimize <= 1100
    assert expected_evaluate == 7 * 6 * 3 * 5 * 5


def test_freesolv_560_learns_from_freesolvs_samples(full_scale: Path) -> None:
    """FreeSolv-560 gets no QM of its own (its molecules are FreeSolv's): our model's folds on
    it read FreeSolv's shards and wait for their manifest; the twin's read none."""
    fold = "results/evaluate/freesolv_cgib/dg_hydration_kcal_mol/{}/random/r0-f0/metrics.json"
    dry = run_snakemake(
        full_scale,
        "--cores",
        "2",
        "-n",
        "--printshellcmds",
        fold.format("probpair"),
        fold.format("probpair_2d"),
    ).check()
    commands = [line for line in dry.output.splitlines() if "pairfactory evaluate" in line]
    (ours,) = [c for c in commands if "--model probpair " in c]
    (twin,) = [c for c in commands if "--model probpair_2d " in c]
    assert "--shards-dir results/shards/freesolv/xtb-" in ours
    assert "--shards-dir" not in twin
    assert dry.job_counts()["collect"] == 1  # FreeSolv's manifest
