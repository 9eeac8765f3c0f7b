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
