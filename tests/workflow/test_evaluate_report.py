"""The evaluation half of the workflow end to end: pair table -> per-fold evaluate jobs ->
report."""

from __future__ import annotations

import json
import re
from pathlib import Path

from workflow_helpers import (
    REPO_ROOT,
    freesolv_subset,
    run_snakemake,
    small_qm_config,
    smoke_evaluate,
    write_config,
)


def test_evaluate_and_report_run_through_the_workflow(tmp_path: Path) -> None:
    freesolv_subset(tmp_path / "raw" / "freesolv.txt", 60)
    config = small_qm_config(
        qm={"datasets": {}},
        evaluate=smoke_evaluate(["freesolv/dg_hydration_kcal_mol"], ["attentivefp"]),
    )
    write_config(tmp_path, config)
    dry = run_snakemake(tmp_path, "--profile", str(REPO_ROOT / "profiles" / "local"), "-n").check()
    assert dry.job_counts() == {"pairs": 1, "evaluate": 2, "report": 1, "all": 1}

    run_snakemake(tmp_path, "--profile", str(REPO_ROOT / "profiles" / "local"), timeout=400).check()
    for fold in (0, 1):
        fold_dir = (
            tmp_path
            / "results"
            / "evaluate"
            / "freesolv"
            / "dg_hydration_kcal_mol"
            / "attentivefp"
            / "random"
            / f"r0-f{fold}"
        )
        metrics = json.loads((fold_dir / "metrics.json").read_text())
        assert metrics["fold"] == fold and metrics["model"] == "attentivefp"
        for name in ("predictions.parquet", "history.csv", "model.pt"):
            assert (fold_dir / name).is_file()
        assert (
            tmp_path
            / "results"
            / "logs"
            / "evaluate"
            / "freesolv"
            / "dg_hydration_kcal_mol"
            / "attentivefp"
            / "random"
            / f"r0-f{fold}.log"
        ).is_file()
    report = (tmp_path / "results" / "report" / "results.md").read_text()
    assert "attentivefp" in report
    assert (tmp_path / "results" / "report" / "results.csv").is_file()
    # an unchanged config has nothing to do; a protocol change re-runs the folds (and the report)
    assert (
        run_snakemake(tmp_path, "--profile", str(REPO_ROOT / "profiles" / "local"), "-n")
        .check()
        .nothing_to_do
    )
    # a re-curation that writes the same table again (new files, new mtimes) re-runs no fold
    forced = run_snakemake(
        tmp_path, "--profile", str(REPO_ROOT / "profiles" / "local"), "--forcerun", "pairs"
    ).check()
    assert forced.finished().get("pairs") == 1 and "evaluate" not in forced.finished(), (
        forced.output[-3000:]
    )
    assert (
        run_snakemake(tmp_path, "--profile", str(REPO_ROOT / "profiles" / "local"), "-n")
        .check()
        .nothing_to_do
    )
    # a re-curation that changes the table re-runs its folds
    freesolv_subset(tmp_path / "raw" / "freesolv.txt", 62)
    changed = run_snakemake(
        tmp_path, "--profile", str(REPO_ROOT / "profiles" / "local"), timeout=400
    ).check()
    assert changed.finished().get("evaluate") == 2, changed.output[-3000:]
    config["evaluate"]["epochs"] = 2
    write_config(tmp_path, config)
    again = run_snakemake(
        tmp_path, "--profile", str(REPO_ROOT / "profiles" / "local"), "-n"
    ).check()
    assert again.job_counts() == {"evaluate": 2, "report": 1, "all": 1}
    # another model's hyper-parameters are not this model's protocol; its own are
    config["evaluate"]["epochs"] = 1
    config["evaluate"]["model_hparams"] = {"cgib": {"beta": 0.01}}
    write_config(tmp_path, config)
    assert (
        run_snakemake(tmp_path, "--profile", str(REPO_ROOT / "profiles" / "local"), "-n")
        .check()
        .nothing_to_do
    )
    config["evaluate"]["model_hparams"] = {"attentivefp": {"num_layers": 1}}
    write_config(tmp_path, config)
    again = run_snakemake(
        tmp_path, "--profile", str(REPO_ROOT / "profiles" / "local"), "-n"
    ).check()
    assert again.job_counts() == {"evaluate": 2, "report": 1, "all": 1}
    # the table's own hyper-parameters for this model re-run its folds (that they reach only
    # their table's jobs: test_config_schema.py, two tables of one dataset)
    config["evaluate"]["model_hparams"] = {}
    table = "freesolv/dg_hydration_kcal_mol"
    config["evaluate"]["table_hparams"] = {table: {"attentivefp": {"num_layers": 1}}}
    write_config(tmp_path, config)
    again = run_snakemake(
        tmp_path, "--profile", str(REPO_ROOT / "profiles" / "local"), "-n"
    ).check()
    assert again.job_counts() == {"evaluate": 2, "report": 1, "all": 1}
    config["evaluate"]["table_hparams"] = {}
    # more repeats add their folds and re-run none; run_folds runs the first folds of each
    config["evaluate"]["model_hparams"] = {}
    config["evaluate"]["repeats"] = 2
    write_config(tmp_path, config)
    dry = run_snakemake(tmp_path, "--profile", str(REPO_ROOT / "profiles" / "local"), "-n")
    assert dry.check().job_counts() == {"evaluate": 2, "report": 1, "all": 1}
    planned = re.findall(r"output: [^\n]*attentivefp/random/(r\d-f\d)/metrics.json", dry.output)
    assert set(planned) == {"r1-f0", "r1-f1"}
    config["evaluate"]["run_folds"] = 1
    write_config(tmp_path, config)
    dry = run_snakemake(tmp_path, "--profile", str(REPO_ROOT / "profiles" / "local"), "-n")
    assert dry.check().job_counts() == {"evaluate": 1, "report": 1, "all": 1}


def test_probpair_learns_from_the_workflows_samples(tmp_path: Path) -> None:
    # Our model on the workflow's own shards: its folds wait for the QM samples (the manifest) and
    # get their shard folder; a baseline of the same config does not depend on the samples.
    freesolv_subset(tmp_path / "raw" / "freesolv.txt", 60)
    config = small_qm_config(
        qm={"datasets": {"freesolv": {"max_systems": 6, "max_heavy_atoms": 6}}, "threads": 1},
        evaluate=smoke_evaluate(["freesolv/dg_hydration_kcal_mol"], ["probpair", "attentivefp"]),
        report={"enabled": False},
        final_models=[{"table": "freesolv/dg_hydration_kcal_mol", "model": "probpair"}],
    )
    write_config(tmp_path, config)
    profile = ["--profile", str(REPO_ROOT / "profiles" / "local")]
    dry = run_snakemake(tmp_path, *profile, "-n").check()
    counts = dry.job_counts()
    # the shard jobs are planned once the pairs checkpoint has run, so a dry run shows collect only
    assert counts["evaluate"] == 4 and counts["collect"] == 1 and counts["final_model"] == 1

    run_snakemake(tmp_path, *profile, timeout=500).check()
    assert list((tmp_path / "results" / "shards" / "freesolv").glob("*/s*.parquet"))
    root = tmp_path / "results" / "evaluate" / "freesolv" / "dg_hydration_kcal_mol"
    for fold in (0, 1):
        metrics = json.loads(
            (root / "probpair" / "random" / f"r0-f{fold}" / "metrics.json").read_text()
        )
        samples = metrics["samples"]
        assert samples["kept"] > 0 and samples["train_pairs_with_samples"] > 0
        assert samples["pairs"] == metrics["n_train"] + metrics["n_valid"] + metrics["n_test"]
        assert metrics["n_test_covered"] is not None and metrics["nll"] is not None
        baseline = json.loads(
            (root / "attentivefp" / "random" / f"r0-f{fold}" / "metrics.json").read_text()
        )
        assert baseline.get("samples") is None  # the baseline never saw the shards
    # the final model trained on the same samples, and answers from two SMILES
    model_dir = tmp_path / "results" / "models" / "freesolv" / "dg_hydration_kcal_mol" / "probpair"
    card = json.loads((model_dir / "model.json").read_text())
    assert card["samples"]["train_pairs_with_samples"] > 0
    assert (tmp_path / "results" / "logs" / "train" / "freesolv" / "dg_hydration_kcal_mol").is_dir()
    from pairfactory.ml.predictor import load_model

    row = load_model(model_dir).predict(["CCO"], ["O"]).iloc[0]
    assert row["status"] == "ok" and row["dg_hydration_kcal_mol_sigma"] > 0
