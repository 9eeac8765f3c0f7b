"""The descriptor table (`solvation` rule, real xtb program) follows its dataset's systems: a
re-curation that adds systems rebuilds it, computing only the new ones; one that changes labels
but no system leaves it alone."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from workflow_helpers import FREESOLV_TXT, REPO_ROOT, freesolv_subset, run_snakemake, write_config

PROFILE = ["--profile", str(REPO_ROOT / "profiles" / "local"), "--cores", "1"]


def _config() -> dict:
    return {
        "seed": 0,
        "data": {"freesolv_txt": "raw/freesolv.txt"},
        "datasets": ["freesolv"],
        "engine": {"name": "xtb", "xtb": {"timeout_s": 60}},
        # a model that reads ALPB: the workflow knows the engine that makes the geometries
        "evaluate": {
            "tables": [],
            "models": ["probpair_2d"],
            "model_hparams": {"probpair_2d": {"alpb_input": True}},
        },
        "report": {"enabled": False},
    }


def _relabel(raw: Path) -> None:
    """Every label + 0.1 kcal/mol: new curated tables, the same systems."""
    lines = []
    for line in raw.read_text().splitlines(keepends=True):
        if line.startswith("#") or not line.strip():
            lines.append(line)
            continue
        fields = line.split(";")
        fields[3] = f" {float(fields[3]) + 0.1:.2f}"
        lines.append(";".join(fields))
    raw.write_text("".join(lines))


def test_the_descriptor_table_follows_the_datasets_systems(tmp_path: Path, xtb_program: str):
    from pairfactory.config import validate_config
    from pairfactory.qm.settings import QmSettings

    config = _config()
    write_config(tmp_path, config)
    tag = QmSettings.from_config(validate_config(config)).engine_tag
    target = f"results/descriptors/freesolv/{tag}/alpb.parquet"
    raw = freesolv_subset(tmp_path / "raw" / "freesolv.txt", 4)
    assert FREESOLV_TXT.is_file()

    run_snakemake(tmp_path, *PROFILE, target).check()
    table = tmp_path / target
    assert len(pd.read_parquet(table)) == 4
    assert run_snakemake(tmp_path, *PROFILE, "-n", target).check().nothing_to_do

    # new labels, same systems: curation runs again, the descriptor table stays
    _relabel(raw)
    before = table.stat().st_mtime_ns
    curated = run_snakemake(tmp_path, *PROFILE, "results/pairs/freesolv").check()
    assert curated.job_counts().get("pairs") == 1, curated.output[-3000:]
    assert run_snakemake(tmp_path, *PROFILE, "-n", target).check().nothing_to_do
    assert table.stat().st_mtime_ns == before

    # two more systems: rebuilt, only those two computed
    freesolv_subset(raw, 6)
    run_snakemake(tmp_path, *PROFILE, "results/pairs/freesolv").check()
    grown = run_snakemake(tmp_path, *PROFILE, target).check()
    assert "rule solvation" in grown.output, grown.output[-3000:]
    assert len(pd.read_parquet(table)) == 6
    log = next((tmp_path / "results" / "logs" / "solvation" / "freesolv").glob("*.log"))
    assert "xtb runs 2, cached 4" in log.read_text()


def _two_target_csv(path: Path, n_rows: int) -> None:
    """FreeSolv's first ``n_rows`` as a user's table with two targets (the same values), and one
    more molecule measured for the second target only."""
    rows = []
    for line in FREESOLV_TXT.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        fields = [f.strip() for f in line.split(";")]
        rows.append({"Molecule": fields[1], "Medium": "O", "a": fields[3], "b": fields[3]})
    table = pd.DataFrame(rows[:n_rows])
    table.loc[len(table)] = {
        "Molecule": rows[n_rows]["Molecule"],
        "Medium": "O",
        "a": "",
        "b": "-1.0",
    }
    table.to_csv(path, index=False)


def test_a_table_rebuilt_for_another_target_reruns_no_fold(tmp_path: Path, xtb_program: str):
    """The dataset gains a system in its second target only: its descriptor table is rebuilt,
    and the first target's ALPB-reading folds (same pairs) are not re-run by that."""
    units = {"unit": "kcal/mol"}
    config = _config()
    config["datasets"] = ["two"]
    config["csv_datasets"] = {
        "two": {
            "path": "two.csv",
            "solute_column": "Molecule",
            "solvent_column": "Medium",
            "targets": [
                {"column": "a", "name": "dg_solv_kcal_mol", **units},
                {"column": "b", "name": "dg_hydration_kcal_mol", **units},
            ],
        }
    }
    config["evaluate"] |= {
        "tables": ["two/dg_solv_kcal_mol"],
        "splits": ["random"],
        "folds": 2,
        "epochs": 1,
        "batch_size": 8,
        "device": "cpu",
        "threads": 1,
    }
    write_config(tmp_path, config)
    _two_target_csv(tmp_path / "two.csv", 8)
    run_snakemake(tmp_path, *PROFILE).check()
    metrics = (
        tmp_path / "results/evaluate/two/dg_solv_kcal_mol/probpair_2d/random/r0-f0/metrics.json"
    )
    before = metrics.stat().st_mtime_ns

    _two_target_csv(tmp_path / "two.csv", 8)  # unchanged: nothing to do
    assert run_snakemake(tmp_path, *PROFILE, "-n").check().nothing_to_do
    table = pd.read_csv(tmp_path / "two.csv", keep_default_na=False)
    extra = {"Molecule": "CCCCCCCCO", "Medium": "O", "a": "", "b": "-4.1"}
    pd.concat([table, pd.DataFrame([extra])]).to_csv(tmp_path / "two.csv", index=False)
    run_snakemake(tmp_path, *PROFILE, "results/pairs/two").check()
    rerun = run_snakemake(tmp_path, *PROFILE).check()
    assert "rule solvation" in rerun.output, rerun.output[-3000:]
    assert "rule evaluate" not in rerun.output, rerun.output[-3000:]
    assert metrics.stat().st_mtime_ns == before
