"""The QM part of the workflow end to end with the local profile, and what a later run re-does.

One real run (FreeSolv's first 110 rows: 4 water-size systems x 2 samples, shards of 3 systems x 1
sample = 4 shard jobs, GFN2-xTB) is shared by the module; every incremental check then works on a
copy of that working directory (Snakemake's metadata included), so the checks do not depend on
their order.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import (
    REPO_ROOT,
    freesolv_subset,
    run_snakemake,
    small_qm_config,
    write_config,
)

PROFILE = ["--profile", str(REPO_ROOT / "profiles" / "local"), "--cores", "2"]
# FreeSolv data rows 37, 77, 88, 100 are CO, S, CC, C=O: the only solutes with <= 2 heavy atoms
# among the first 110 rows; rows 268, 272 (CI, CCl) and 329, 360, 388 (CS, N, C=C) come later.
FIRST_ROWS = 110
SYSTEMS = ["CO", "S", "CC", "C=O"]


@pytest.fixture(scope="module")
def qm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("qm_run")
    freesolv_subset(workdir / "raw" / "freesolv.txt", FIRST_ROWS)
    write_config(workdir, small_qm_config())
    run_snakemake(workdir, *PROFILE).check()
    return workdir


@pytest.fixture()
def copy_of_run(qm_run: Path, tmp_path: Path) -> Path:
    workdir = tmp_path / "work"
    shutil.copytree(qm_run, workdir, symlinks=True)
    return workdir


def _tag(workdir: Path) -> str:
    (tag,) = [p.name for p in (workdir / "results" / "shards" / "freesolv").iterdir()]
    return tag


def _update_config(workdir: Path, section: str, values: dict) -> None:
    path = workdir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config[section] = {**config.get(section, {}), **values}
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def test_local_run_writes_every_shard_and_the_manifest(qm_run: Path) -> None:
    tag = _tag(qm_run)
    shard_dir = qm_run / "results" / "shards" / "freesolv" / tag
    assert sorted(p.stem for p in shard_dir.glob("*.parquet")) == [
        "s00000-k000",
        "s00000-k001",
        "s00001-k000",
        "s00001-k001",
    ]
    samples = pd.concat(
        [pd.read_parquet(p) for p in sorted(shard_dir.glob("*.parquet"))], ignore_index=True
    )
    # every system x sample exactly once, across the shards
    assert len(samples) == len(SYSTEMS) * 2
    assert not samples.duplicated(["system_id", "k"]).any()
    assert sorted(samples["solute_smiles"].unique()) == sorted(SYSTEMS)
    assert set(samples["k"]) == {0, 1}
    assert (samples["engine_tag"] == tag).all()

    summary = json.loads(
        (qm_run / "results" / "manifest" / "freesolv" / tag / "summary.json").read_text()
    )
    assert summary["n_systems"] == len(SYSTEMS)
    assert summary["n_samples"] == len(SYSTEMS) * 2
    assert summary["ok"] + summary["failed"] == summary["n_samples"]
    manifest = pd.read_parquet(
        qm_run / "results" / "manifest" / "freesolv" / tag / "manifest.parquet"
    )
    assert sorted(manifest["shard_id"]) == sorted(p.stem for p in shard_dir.glob("*.parquet"))

    # a log per job; the shard logs say where they ran (no SLURM here)
    log = (
        qm_run / "results" / "logs" / "optimize" / "freesolv" / tag / "s00000-k000.log"
    ).read_text()
    assert log.startswith("optimize freesolv/s00000-k000 on ") and "SLURM job none" in log
    assert (qm_run / "results" / "logs" / "pairs" / "freesolv.log").is_file()
    assert (qm_run / "results" / "logs" / "collect" / "freesolv" / f"{tag}.log").is_file()


def test_unchanged_config_has_nothing_to_do(qm_run: Path) -> None:
    dry = run_snakemake(qm_run, *PROFILE, "-n").check()
    assert dry.nothing_to_do, dry.output[-3000:]


def test_recuration_with_the_same_rows_reruns_no_shard(copy_of_run: Path) -> None:
    # rewrite the pair tables (new files, new mtimes, same content for every shard)
    forced = run_snakemake(copy_of_run, *PROFILE, "--forcerun", "pairs").check()
    assert forced.job_counts().get("pairs") == 1
    assert "optimize" not in forced.job_counts(), forced.output[-3000:]
    assert run_snakemake(copy_of_run, *PROFILE, "-n").check().nothing_to_do


def test_appending_pairs_creates_work_only_for_new_systems(copy_of_run: Path) -> None:
    tag = _tag(copy_of_run)
    # rows up to 400 add CI, CCl (filling the partial block s00001) and CS, N, C=C (a new block)
    freesolv_subset(copy_of_run / "raw" / "freesolv.txt", 400)
    run_snakemake(copy_of_run, *PROFILE, "results/pairs/freesolv").check()
    dry = run_snakemake(copy_of_run, *PROFILE, "-n").check()
    assert dry.shards() == {
        ("freesolv", tag, "s00001-k000"),
        ("freesolv", tag, "s00001-k001"),
        ("freesolv", tag, "s00002-k000"),
        ("freesolv", tag, "s00002-k001"),
    }, dry.output[-3000:]
    assert dry.job_counts() == {"optimize": 4, "collect": 1, "all": 1}


def test_more_samples_add_only_new_sample_blocks(copy_of_run: Path) -> None:
    tag = _tag(copy_of_run)
    _update_config(copy_of_run, "samples", {"per_system": 3})
    dry = run_snakemake(copy_of_run, *PROFILE, "-n").check()
    assert dry.shards() == {("freesolv", tag, "s00000-k002"), ("freesolv", tag, "s00001-k002")}
    assert dry.job_counts() == {"optimize": 2, "collect": 1, "all": 1}


def test_engine_change_reruns_only_that_engines_shards(copy_of_run: Path) -> None:
    old_tag = _tag(copy_of_run)
    _update_config(copy_of_run, "engine", {"xtb": {"timeout_s": 60, "fmax_ev_per_angstrom": 0.1}})
    dry = run_snakemake(copy_of_run, *PROFILE, "-n").check()
    tags = {tag for _, tag, _ in dry.shards()}
    assert len(tags) == 1 and old_tag not in tags
    assert {shard for _, _, shard in dry.shards()} == {
        "s00000-k000",
        "s00000-k001",
        "s00001-k000",
        "s00001-k001",
    }
    # the first engine's shards are still there and still up to date
    _update_config(copy_of_run, "engine", {"xtb": {"timeout_s": 60}})
    assert run_snakemake(copy_of_run, *PROFILE, "-n").check().nothing_to_do


def test_engine_budget_change_is_not_an_engine_change(copy_of_run: Path) -> None:
    # the per-sample wall-clock budget is not part of the engine tag nor of a shard's params
    _update_config(copy_of_run, "engine", {"xtb": {"timeout_s": 90}})
    assert run_snakemake(copy_of_run, *PROFILE, "-n").check().nothing_to_do


def test_sampling_change_reruns_the_shards(copy_of_run: Path) -> None:
    _update_config(copy_of_run, "samples", {"clash_distance_angstrom": 1.5})
    dry = run_snakemake(copy_of_run, *PROFILE, "-n").check()
    assert len(dry.shards()) == 4
    assert "Params have changed" in dry.output
