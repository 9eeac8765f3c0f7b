"""A user's own CSV dataset through the whole workflow like a built-in one: curation (rejects with
reasons), QM samples, cross-validation, a final model, and a prediction from two SMILES."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from workflow_helpers import FREESOLV_TXT, REPO_ROOT, run_snakemake, smoke_evaluate, write_config

# how `_user_csv`'s file is read as the dataset "mine"
MINE = {
    "path": "mine.csv",
    "solute_column": "Molecule",
    "solvent_column": "Medium",
    "targets": [{"column": "dG (kcal/mol)", "name": "dg_solv_kcal_mol", "unit": "kcal/mol"}],
}


def _user_csv(path: Path, n_rows: int) -> int:
    """FreeSolv's first rows as a user would hand them in (own column names, solvent column),
    plus two rows curation must reject; returns the number of rows."""
    rows = []
    for line in FREESOLV_TXT.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        fields = [f.strip() for f in line.split(";")]
        rows.append({"Molecule": fields[1], "Medium": "O", "dG (kcal/mol)": fields[3]})
        if len(rows) == n_rows:
            break
    rows.append({"Molecule": "c1ccccc1[Fe]", "Medium": "O", "dG (kcal/mol)": "-1.0"})
    rows.append({"Molecule": "CCO", "Medium": "O", "dG (kcal/mol)": "n/a"})
    pd.DataFrame(rows).to_csv(path, index=False)
    return len(rows)


def test_a_csv_dataset_runs_like_a_built_in_one(tmp_path: Path) -> None:
    n_rows = _user_csv(tmp_path / "mine.csv", 40)
    config = {
        "seed": 0,
        "datasets": ["mine"],
        "csv_datasets": {"mine": MINE},
        "qm": {"datasets": {"mine": {"max_systems": 2, "max_heavy_atoms": 3}}, "threads": 1},
        "samples": {"per_system": 1},
        "shards": {"systems_per_shard": 2, "samples_per_shard": 1},
        "engine": {"name": "xtb", "xtb": {"timeout_s": 60}},
        "evaluate": smoke_evaluate(["mine/dg_solv_kcal_mol"], ["cigin"]),
        "final_models": [{"table": "mine/dg_solv_kcal_mol", "model": "probpair_2d"}],
        "report": {"enabled": False},
    }
    write_config(tmp_path, config)
    profile = ["--profile", str(REPO_ROOT / "profiles" / "local")]
    run_snakemake(tmp_path, *profile, timeout=500).check()

    pairs = tmp_path / "results" / "pairs" / "mine"
    table = pd.read_parquet(pairs / "dg_solv_kcal_mol.parquet")
    rejects = pd.read_parquet(pairs / "rejects.parquet")
    assert len(table) + len(rejects) == n_rows  # in = kept + rejected
    assert sorted(rejects["reason"]) == ["missing_value", "unsupported_element"]
    assert list((tmp_path / "results" / "shards" / "mine").glob("*/s*.parquet"))
    for fold in (0, 1):
        fold_dir = tmp_path / "results" / "evaluate" / "mine" / "dg_solv_kcal_mol" / "cigin"
        metrics = json.loads((fold_dir / "random" / f"r0-f{fold}" / "metrics.json").read_text())
        assert metrics["unit"] == "kcal/mol" and metrics["n_test"] > 0
    model_dir = tmp_path / "results" / "models" / "mine" / "dg_solv_kcal_mol" / "probpair_2d"
    from pairfactory.ml.predictor import load_model

    row = load_model(model_dir).predict(["CCCO"], ["O"]).iloc[0]
    assert row["status"] == "ok" and row["unit"] == "kcal/mol"
    assert row["dg_solv_kcal_mol_sigma"] > 0

    # a wrong target in a table is named before any job runs
    config["evaluate"]["tables"] = ["mine/dg_hydration_kcal_mol"]
    write_config(tmp_path, config)
    run = run_snakemake(tmp_path, "-n", "--cores", "1")
    assert run.returncode != 0 and "mine has the target(s) dg_solv_kcal_mol" in run.output


def test_a_fold_trains_on_another_tables_pairs_through_the_workflow(tmp_path: Path) -> None:
    """evaluate.extra_pairs: the user's table is cross-validated, FreeSolv's water pairs join the
    training pairs (minus the fold's held-out solutes); a changed holdout re-runs the folds."""
    _user_csv(tmp_path / "mine.csv", 30)
    evaluate = smoke_evaluate(["mine/dg_solv_kcal_mol"], ["cigin"])
    evaluate["extra_pairs"] = {"table": "freesolv/dg_hydration_kcal_mol", "solvents": ["O"]}
    config = {
        "seed": 0,
        "data": {"freesolv_txt": str(FREESOLV_TXT)},
        "datasets": ["mine", "freesolv"],
        "csv_datasets": {"mine": MINE},
        "evaluate": evaluate,
        "report": {"enabled": False},
    }
    write_config(tmp_path, config)
    run_snakemake(tmp_path, "--profile", str(REPO_ROOT / "profiles" / "local"), timeout=300).check()
    folds = tmp_path / "results" / "evaluate" / "mine" / "dg_solv_kcal_mol" / "cigin" / "random"
    for fold in (0, 1):
        metrics = json.loads((folds / f"r0-f{fold}" / "metrics.json").read_text())
        extra = metrics["extra_pairs"]
        assert extra["dataset"] == "freesolv" and extra["n_in"] == 642
        # the user's 30 molecules are FreeSolv's first 30: a fold's held-out ones never train
        assert extra["not_used"]["held_out_solute"] == metrics["n_valid"] + metrics["n_test"]
        assert metrics["n_train"] == 30 - metrics["n_valid"] - metrics["n_test"] + extra["n_used"]

    evaluate["extra_pairs"]["holdout"] = "pair"
    write_config(tmp_path, config)
    planned = run_snakemake(tmp_path, "-n", "--cores", "1").check()
    assert planned.job_counts().get("evaluate") == 2, planned.output[-2000:]

    # an extra table whose dataset is not curated is named before any job runs
    evaluate["extra_pairs"]["table"] = "mnsol/dg_solv_kcal_mol"
    write_config(tmp_path, config)
    run = run_snakemake(tmp_path, "-n", "--cores", "1")
    assert run.returncode != 0 and "evaluate.extra_pairs.table" in run.output


def test_a_model_reading_alpb_gets_the_extra_datasets_descriptor_table(
    tmp_path: Path, xtb_program: str
) -> None:
    """A model that reads ALPB, with extra pairs: the workflow builds the extra dataset's
    descriptor table with the same rule and engine as the fold's own and passes it to its folds
    and final model, so every extra pair they train on has its value (real xtb program). A model
    that learns ALPB only as an auxiliary target is left as it was."""
    from workflow_helpers import freesolv_subset

    _user_csv(tmp_path / "mine.csv", 16)
    raw = freesolv_subset(tmp_path / "raw" / "freesolv.txt", 28)  # 12 pairs mine lacks
    hparams = {"probpair_2d": {"alpb_input": True}}
    evaluate = smoke_evaluate(["mine/dg_solv_kcal_mol"], ["probpair_2d"])
    evaluate |= {
        "model_hparams": hparams,
        "extra_pairs": {"table": "freesolv/dg_hydration_kcal_mol"},
    }
    config = {
        "seed": 0,
        "data": {"freesolv_txt": str(raw)},
        "datasets": ["mine", "freesolv"],
        "csv_datasets": {"mine": MINE},
        "evaluate": evaluate,
        "final_models": [{"table": "mine/dg_solv_kcal_mol", "model": "probpair_2d"}],
        "report": {"enabled": False},
    }
    write_config(tmp_path, config)
    run_snakemake(tmp_path, "--profile", str(REPO_ROOT / "profiles" / "local"), timeout=400).check()
    descriptors = tmp_path / "results" / "descriptors"
    assert len(list((descriptors / "mine").glob("*/alpb.parquet"))) == 1
    extra_table = str(next((descriptors / "freesolv").glob("*/alpb.parquet")).relative_to(tmp_path))
    folds = tmp_path / "results" / "evaluate" / "mine" / "dg_solv_kcal_mol" / "probpair_2d"
    for fold in (0, 1):
        metrics = json.loads((folds / "random" / f"r0-f{fold}" / "metrics.json").read_text())
        extra = metrics["extra_pairs"]
        assert extra["n_used"] >= 12 and extra["n_in"] == 28
        assert metrics["inputs"]["extra_descriptors"] == extra_table
        assert metrics["inputs"]["missing"]["train"] == 0
    model_dir = tmp_path / "results" / "models" / "mine" / "dg_solv_kcal_mol" / "probpair_2d"
    card = json.loads((model_dir / "model.json").read_text())
    assert card["training_table"]["extra_pairs"]["descriptors"] == extra_table
    assert card["inputs"]["missing"] == {"dg_solv_alpb_kcal_mol": 0}

    # extra pairs narrowed to one solvent: the extra dataset's table holds only its systems
    evaluate["extra_pairs"]["solvents"] = ["[H]O[H]"]
    write_config(tmp_path, config)
    planned = run_snakemake(tmp_path, "-n", "--cores", "1", "--printshellcmds").check()
    built = {
        line.split("--dataset ")[1].split()[0]: line
        for line in planned.output.splitlines()
        if "pairfactory solvation" in line
    }
    assert "--solvent '[H]O[H]'" in built["freesolv"], built
    # a config change that leaves the user's CSV entry alone re-curates nothing
    assert "mine" not in built and "pairs" not in planned.job_counts(), planned.output[-3000:]
    forced = run_snakemake(
        tmp_path, "-n", "--cores", "1", "--printshellcmds", "--forcerun", "solvation"
    ).check()
    (own,) = [
        line
        for line in forced.output.splitlines()
        if "pairfactory solvation" in line and "--dataset mine" in line
    ]
    assert "--solvent" not in own  # the folds' own table: every system
    del evaluate["extra_pairs"]["solvents"]

    # probpair learning from samples, ALPB an auxiliary target: no extra descriptor table
    evaluate |= {"models": ["probpair"], "descriptors": ["alpb"], "model_hparams": {}}
    config |= {"final_models": [], "qm": {"datasets": {"mine": {"max_systems": 2}}}}
    write_config(tmp_path, config)
    planned = run_snakemake(tmp_path, "-n", "--cores", "1", "--printshellcmds").check()
    commands = [line for line in planned.output.splitlines() if "pairfactory evaluate" in line]
    assert commands and all("--descriptors results/descriptors/mine/" in c for c in commands)
    assert not any("--extra-descriptors" in c for c in commands)
